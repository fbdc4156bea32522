"""GraphClient against aioresponses: Meta's documented error shapes, classification, retries, backoff, proof."""

from __future__ import annotations

import json
import random
import re

import aiohttp
import pytest
from aioresponses import aioresponses

from engine.messenger.client import PAGE_INBOX_APP_ID, GraphClient, GraphSettings, ThreadControl
from engine.messenger.errors import Outcome
from engine.messenger.signature import appsecret_proof

URL = re.compile(r"^https://graph\.test/v21\.0/me/messages\?.*$")
BODY = {"recipient": {"id": "u1"}, "messaging_type": "RESPONSE", "message": {"text": "hi"}}


def meta_error(code: int, subcode: int | None = None, status: int = 400) -> dict:  # type: ignore[type-arg]
    error = {"message": "x", "type": "OAuthException", "code": code, "fbtrace_id": "T1"}
    if subcode:
        error["error_subcode"] = subcode
    return {"status": status, "payload": {"error": error}}


@pytest.fixture
async def client():  # type: ignore[no-untyped-def]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async with aiohttp.ClientSession() as session:
        settings = GraphSettings(
            "https://graph.test",
            "v21.0",
            "PAGE-TOKEN",
            "APP-SECRET",
            max_attempts=4,
            backoff_base_seconds=0.5,
            backoff_max_seconds=3.0,
        )
        graph = GraphClient(session, settings, sleep=sleep, rng=random.Random(7))
        graph.slept = slept  # type: ignore[attr-defined]
        yield graph


async def test_success_returns_the_message_id_and_sends_token_and_proof(client: GraphClient) -> None:
    with aioresponses() as mocked:
        mocked.post(URL, payload={"recipient_id": "u1", "message_id": "m_1"})
        result = await client.send(BODY)
        (_, url), calls = next(iter(mocked.requests.items()))
    assert (result.outcome, result.message_id, result.attempts) == (Outcome.SENT, "m_1", 1)
    assert url.query["access_token"] == "PAGE-TOKEN"
    assert url.query["appsecret_proof"] == appsecret_proof("PAGE-TOKEN", "APP-SECRET")
    assert json.loads(calls[0].kwargs["data"]) == BODY
    assert calls[0].kwargs["headers"]["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (meta_error(190), Outcome.BAD_TOKEN),
        (meta_error(10, 2018278), Outcome.POLICY_BLOCKED),
        (meta_error(10, 2018108), Outcome.UNREACHABLE),
        (meta_error(551, 1545041), Outcome.UNREACHABLE),
        (meta_error(100, 2018001), Outcome.NO_USER),
        (meta_error(200, 2018027), Outcome.PERMISSION),
        (meta_error(4, 2018354), Outcome.USER_THROTTLED),
        (meta_error(100), Outcome.FAILED),
    ],
)
async def test_permanent_errors_are_classified_and_not_retried(
    client: GraphClient, error: dict, outcome: Outcome
) -> None:  # type: ignore[type-arg]
    with aioresponses() as mocked:
        mocked.post(URL, **error)
        result = await client.send(BODY)
    assert result.outcome is outcome
    assert result.attempts == 1
    assert result.error is not None and result.error.fbtrace_id == "T1"
    assert client.slept == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "error",
    [
        meta_error(613),
        meta_error(4),
        meta_error(32),
        meta_error(2, status=500),
        meta_error(1200),
        {"status": 503, "body": "upstream down"},
    ],
)
async def test_transient_errors_and_rate_limits_are_retried_with_backoff(client: GraphClient, error: dict) -> None:  # type: ignore[type-arg]
    with aioresponses() as mocked:
        mocked.post(URL, **error)
        mocked.post(URL, **error)
        mocked.post(URL, payload={"recipient_id": "u1", "message_id": "m_2"})
        result = await client.send(BODY)
    assert (result.outcome, result.attempts) == (Outcome.SENT, 3)
    slept = client.slept  # type: ignore[attr-defined]
    assert len(slept) == 2
    assert 0 <= slept[0] <= 1.0 and 0 <= slept[1] <= 2.0  # full jitter under base * 2**attempt


async def test_retries_stop_after_max_attempts_with_capped_backoff(client: GraphClient) -> None:
    with aioresponses() as mocked:
        for _ in range(4):
            mocked.post(URL, **meta_error(613))
        result = await client.send(BODY)
    assert (result.outcome, result.attempts) == (Outcome.RETRY, 4)
    assert all(0 <= s <= 3.0 for s in client.slept)  # type: ignore[attr-defined]


async def test_connection_errors_are_transient(client: GraphClient) -> None:
    with aioresponses() as mocked:
        mocked.post(URL, exception=aiohttp.ClientConnectionError("refused"))
        mocked.post(URL, payload={"recipient_id": "u1", "message_id": "m_3"})
        result = await client.send(BODY)
    assert (result.outcome, result.attempts) == (Outcome.SENT, 2)


async def test_profile_returns_fields_or_none(client: GraphClient) -> None:
    profile_url = re.compile(r"^https://graph\.test/v21\.0/u1\?.*$")
    with aioresponses() as mocked:
        mocked.get(profile_url, payload={"first_name": "Ann", "last_name": "Lee", "id": "u1"})
        mocked.get(profile_url, **meta_error(100))
        assert await client.profile("u1") == {"first_name": "Ann", "last_name": "Lee"}
        assert await client.profile("u1") is None


# -- the Handover Protocol --------------------------------------------------------------------------------------
PASS_URL = re.compile(r"^https://graph\.test/v21\.0/me/pass_thread_control\?.*$")


async def test_pass_thread_control_sends_the_target_and_the_note_and_retries_a_5xx(client: GraphClient) -> None:
    with aioresponses() as mocked:
        mocked.post(PASS_URL, **meta_error(2, status=500))
        mocked.post(PASS_URL, payload={"success": True})
        result = await client.thread_control(
            ThreadControl.PASS, "u1", target_app_id=PAGE_INBOX_APP_ID, metadata="n" * 1500
        )
        calls = next(iter(mocked.requests.values()))
    assert (result.outcome, result.attempts) == (Outcome.SENT, 2)
    body = json.loads(calls[0].kwargs["data"])
    assert body == {"recipient": {"id": "u1"}, "target_app_id": 263902037430900, "metadata": "n" * 1000}


async def test_a_refused_thread_control_call_is_classified_not_retried(client: GraphClient) -> None:
    with aioresponses() as mocked:
        mocked.post(re.compile(r"^https://graph\.test/v21\.0/me/take_thread_control\?.*$"), **meta_error(100))
        result = await client.thread_control(ThreadControl.TAKE, "u1")
    assert (result.outcome, result.attempts) == (Outcome.FAILED, 1)
    assert result.error is not None and result.error.code == 100
