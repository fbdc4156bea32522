"""GraphClient against Meta's documented error shapes: classification, retries, backoff, token and proof.

POSTs (sends, the Handover Protocol) go over the client's own connections (messenger/poster.py), so they are answered
by a scripted Graph API on loopback; the profile GET goes through the aiohttp session, mocked with aioresponses."""

from __future__ import annotations

import json
import random
import re
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aioresponses import aioresponses

from engine.messenger.client import PAGE_INBOX_APP_ID, GraphClient, GraphSettings, ThreadControl
from engine.messenger.errors import Outcome
from engine.messenger.signature import appsecret_proof
from tests.conftest import free_port

BODY = {"recipient": {"id": "u1"}, "messaging_type": "RESPONSE", "message": {"text": "hi"}}
DROP = {"drop": True}  # a scripted answer: the connection is closed with no answer at all


def meta_error(code: int, subcode: int | None = None, status: int = 400) -> dict:  # type: ignore[type-arg]
    error = {"message": "x", "type": "OAuthException", "code": code, "fbtrace_id": "T1"}
    if subcode:
        error["error_subcode"] = subcode
    return {"status": status, "payload": {"error": error}}


@dataclass
class ScriptedGraph:
    """Answers each POST with the next scripted answer ({"status", "payload" or "body"}, or DROP); records them."""

    url: str = ""  # where it listens, once started
    answers: list[dict[str, Any]] = field(default_factory=list)
    posts: list[tuple[str, dict[str, str], bytes, str]] = field(default_factory=list)  # path, query, body, type

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.posts.append((request.path, dict(request.query), await request.read(), request.content_type))
        answer = self.answers.pop(0)
        if answer.get("drop"):
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        if "payload" in answer:
            return web.json_response(answer["payload"], status=answer.get("status", 200))
        return web.Response(status=answer["status"], text=answer["body"])


@pytest.fixture
async def graph() -> AsyncIterator[ScriptedGraph]:
    scripted = ScriptedGraph()
    app = web.Application()
    app.router.add_post("/{tail:.*}", scripted.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    scripted.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield scripted
    await runner.cleanup()


@pytest.fixture
async def client(graph: ScriptedGraph) -> AsyncIterator[GraphClient]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async with aiohttp.ClientSession() as session:
        settings = GraphSettings(
            graph.url,
            "v21.0",
            "PAGE-TOKEN",
            "APP-SECRET",
            max_attempts=4,
            backoff_base_seconds=0.5,
            backoff_max_seconds=3.0,
        )
        graph_client = GraphClient(session, settings, sleep=sleep, rng=random.Random(7))
        graph_client.slept = slept  # type: ignore[attr-defined]
        yield graph_client
        await graph_client.aclose()


async def test_success_returns_the_message_id_and_sends_token_and_proof(
    client: GraphClient, graph: ScriptedGraph
) -> None:
    graph.answers.append({"payload": {"recipient_id": "u1", "message_id": "m_1"}})
    result = await client.send(BODY)
    assert (result.outcome, result.message_id, result.attempts) == (Outcome.SENT, "m_1", 1)
    [(path, query, body, content_type)] = graph.posts
    assert path == "/v21.0/me/messages"
    assert query["access_token"] == "PAGE-TOKEN"
    assert query["appsecret_proof"] == appsecret_proof("PAGE-TOKEN", "APP-SECRET")
    assert json.loads(body) == BODY
    assert content_type == "application/json"


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
    client: GraphClient, graph: ScriptedGraph, error: dict, outcome: Outcome
) -> None:  # type: ignore[type-arg]
    graph.answers.append(error)
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
        DROP,
    ],
)
async def test_transient_errors_and_rate_limits_are_retried_with_backoff(
    client: GraphClient,
    graph: ScriptedGraph,
    error: dict,  # type: ignore[type-arg]
) -> None:
    graph.answers += [error, error, {"payload": {"recipient_id": "u1", "message_id": "m_2"}}]
    result = await client.send(BODY)
    assert (result.outcome, result.attempts) == (Outcome.SENT, 3)
    slept = client.slept  # type: ignore[attr-defined]
    assert len(slept) == 2
    assert 0 <= slept[0] <= 1.0 and 0 <= slept[1] <= 2.0  # full jitter under base * 2**attempt


async def test_retries_stop_after_max_attempts_with_capped_backoff(client: GraphClient, graph: ScriptedGraph) -> None:
    graph.answers += [meta_error(613)] * 4
    result = await client.send(BODY)
    assert (result.outcome, result.attempts) == (Outcome.RETRY, 4)
    assert all(0 <= s <= 3.0 for s in client.slept)  # type: ignore[attr-defined]


async def test_connection_errors_are_transient() -> None:
    """A refused connection is retried (here it never comes: nothing listens on the port); nothing reached Meta."""
    settings = GraphSettings(
        f"http://127.0.0.1:{free_port()}", "v21.0", "T", "", max_attempts=2, backoff_base_seconds=0
    )
    async with aiohttp.ClientSession() as session, aclosing(GraphClient(session, settings)) as refused:
        result = await refused.send(BODY)
    assert (result.outcome, result.attempts, result.reached_meta) == (Outcome.RETRY, 2, False)
    assert "no connection to the Graph API" in result.detail


async def test_profile_returns_fields_or_none(client: GraphClient, graph: ScriptedGraph) -> None:
    profile_url = re.compile(rf"^{re.escape(graph.url)}/v21\.0/u1\?.*$")
    with aioresponses() as mocked:
        mocked.get(profile_url, payload={"first_name": "Ann", "last_name": "Lee", "id": "u1"})
        mocked.get(profile_url, **meta_error(100))
        assert await client.profile("u1") == {"first_name": "Ann", "last_name": "Lee"}
        assert await client.profile("u1") is None


# -- the Handover Protocol --------------------------------------------------------------------------------------
async def test_pass_thread_control_sends_the_target_and_the_note_and_retries_a_5xx(
    client: GraphClient, graph: ScriptedGraph
) -> None:
    graph.answers += [meta_error(2, status=500), {"payload": {"success": True}}]
    result = await client.thread_control(ThreadControl.PASS, "u1", target_app_id=PAGE_INBOX_APP_ID, metadata="n" * 1500)
    assert (result.outcome, result.attempts) == (Outcome.SENT, 2)
    assert [post[0] for post in graph.posts] == ["/v21.0/me/pass_thread_control"] * 2
    body = json.loads(graph.posts[0][2])
    assert body == {"recipient": {"id": "u1"}, "target_app_id": 263902037430900, "metadata": "n" * 1000}


async def test_a_refused_thread_control_call_is_classified_not_retried(
    client: GraphClient, graph: ScriptedGraph
) -> None:
    graph.answers.append(meta_error(100))
    result = await client.thread_control(ThreadControl.TAKE, "u1")
    assert graph.posts[0][0] == "/v21.0/me/take_thread_control"
    assert (result.outcome, result.attempts) == (Outcome.FAILED, 1)
    assert result.error is not None and result.error.code == 100
