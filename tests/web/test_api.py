"""POST /api/notify and friends: bearer token, validation, a campaign run in the server through the users' workers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.testing.harness import API_TOKEN
from engine.web.keys import FIGURES
from tests.conftest import example_bot, wait_until
from tests.wine import white_lover_with_token

ROOT = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


async def test_api_needs_the_bearer_token() -> None:
    async with example_bot() as bot:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_TOKEN}):
            async with bot.session.post(f"{bot.url}/api/notify", json={"topic": "restock"}, headers=headers) as r:
                assert r.status == 401
                assert r.headers["WWW-Authenticate"] == "Bearer"
        async with bot.session.get(f"{bot.url}/api/stats", headers={}) as r:
            assert r.status == 401


async def test_api_validates_the_request() -> None:
    async with example_bot() as bot:
        cases = [
            ({"segment": "x"}, "'topic' is required"),
            ({"topic": "nope"}, "unknown topic 'nope'; topics: restock, sl13_restock"),
            ({"topic": "restock"}, """topic 'restock' needs product: give "vars": {"product": ...}"""),
            ({"topic": "restock", "vars": {"product": "x"}, "segment": "a &"}, "invalid segment expression"),
        ]
        for body, message in cases:
            async with bot.session.post(f"{bot.url}/api/notify", json=body, headers=AUTH) as r:
                assert r.status == 400
                assert message in (await r.json())["error"]


async def test_api_runs_a_campaign_and_reports_it() -> None:
    async with example_bot() as bot:
        alice = await white_lover_with_token(bot)
        bot.clock.advance(days=2)
        async with bot.session.post(
            f"{bot.url}/api/notify", headers=AUTH, json={"topic": "restock", "vars": {"product": "Sauvignon 2024"}}
        ) as r:
            assert r.status == 202
            campaign = (await r.json())["campaign"]

        async def finished() -> bool:
            async with bot.session.get(f"{bot.url}/api/campaigns/{campaign}", headers=AUTH) as r:
                body = await r.json()
                return not body["running"] and body.get("counts", {}).get("delivered") == 1

        await wait_until(finished, timeout=10, what="the campaign to finish")
        await bot.settle()
        assert alice.last_reply.is_notification
        async with bot.session.get(f"{bot.url}/api/stats", headers=AUTH) as r:
            stats = await r.json()
        assert stats["restock"]["deliveries"] == 1 and stats["restock"]["optin_rate"] == 1.0
        async with bot.session.get(f"{bot.url}/api/campaigns/none", headers=AUTH) as r:
            assert r.status == 404
        await bot.app[FIGURES].refresh()  # /metrics shows the last reading of the store (every 15 s)
        async with bot.session.get(f"{bot.url}/metrics") as r:
            metrics = await r.text()
        assert 'otnflow_otn{figure="deliveries",topic="restock"} 1.0' in metrics


async def raw_request(url: str, head: bytes) -> bytes:
    """Send request bytes as they are (aiohttp's client refuses bytes that are not UTF-8) and read the status."""
    import asyncio

    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head)
    status = (await reader.readline()).split()[1]
    writer.close()
    return status


async def test_a_header_that_is_not_utf8_is_a_401_not_a_500() -> None:
    async with example_bot() as bot:
        for value in (b"Bearer \xff\xfe", b"\xc3", f"Bearer {API_TOKEN}\xe9".encode("latin-1")):
            head = b"GET /api/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " + value + b"\r\n\r\n"
            assert await raw_request(bot.url, head) == b"401"


async def test_secrets_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bearer token and the webhook verify token both go through hmac.compare_digest."""
    import hmac

    compared: list[bytes] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    async with example_bot() as bot:
        async with bot.session.get(f"{bot.url}/api/stats", headers=AUTH) as r:
            assert r.status == 200
        verify = {"hub.mode": "subscribe", "hub.verify_token": "harness", "hub.challenge": "42"}
        async with bot.session.get(f"{bot.url}/webhook", params=verify) as r:
            assert r.status == 200 and await r.text() == "42"
        async with bot.session.get(f"{bot.url}/webhook", params={**verify, "hub.verify_token": "nope"}) as r:
            assert r.status == 403
    assert f"Bearer {API_TOKEN}".encode() in compared
    assert compared.count(b"harness") == 2


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ([], "", "the body: [] is not of type 'object'"),
        ({"topic": 5}, "topic", "'topic': 5 is not of type 'string'"),
        ({"topic": ""}, "topic", "'topic': '' should be non-empty"),
        ({"topic": "restock", "vars": 5}, "vars", "'vars': 5 is not of type 'object'"),
        ({"topic": "restock", "vars": {"product": [1]}}, "vars.product", "'vars.product': [1] is not valid"),
        (b'{"topic": "restock", "vars": {"product": 1e400}}', "vars.product", "'vars.product': inf is greater"),
        ({"topic": "restock", "vars": {"product": "x"}, "campaign": 5}, "campaign", "'campaign': 5 is not of type"),
        ({"topic": "restock", "vars": {"product": "x"}, "campaign": "a/b"}, "campaign", "does not match"),
        ({"topic": "restock", "segment": ["likes_white"]}, "segment", "'segment': ['likes_white'] is not of type"),
        ({"topic": "restock", "segmnet": "likes_white"}, "segmnet", "'segmnet' is not a known field"),
    ],
)
async def test_notify_bodies_are_checked_against_the_openapi_document(body: Any, field: str, message: str) -> None:
    async with example_bot() as bot:
        sent = {"data": body} if isinstance(body, bytes) else {"json": body}
        async with bot.session.post(f"{bot.url}/api/notify", headers=AUTH, **sent) as r:
            assert r.status == 400, await r.text()
            answer = await r.json()
        assert message in answer["error"]
        assert answer.get("field", "") == field


async def test_api_answers_for_any_method_and_path_under_it_in_json_body_limit_first() -> None:
    """aiohttp's own answers (no route, wrong method, body too large) under /api/ are JSON, for every path and
    method, and a body over the limit is refused before anything else is decided, as for a route's own method."""
    too_large = b"x" * (1_048_576 + 1)  # the limit + 1: read in full before the refusal (no reset)
    async with example_bot() as bot:
        async with bot.session.head(f"{bot.url}/api/stats", headers=AUTH) as r:
            assert r.status == 200
        async with bot.session.delete(f"{bot.url}/api/stats", headers=AUTH) as r:
            assert r.status == 405 and r.headers["Allow"] == "GET,HEAD" and "error" in await r.json()
        async with bot.session.get(f"{bot.url}/api/campaigns", headers=AUTH) as r:  # no id: no route
            assert r.status == 404 and (await r.json())["error"] == "Not Found"
        for path in ("/api/stats", "/api/campaigns/x/y", "/api/agent/reply"):
            async with bot.session.post(f"{bot.url}{path}", data=too_large, headers=AUTH) as r:
                assert r.status == 413 and "error" in await r.json(), path
        async with bot.session.get(f"{bot.url}/apiary") as r:  # not under /api/: aiohttp's own text
            assert r.status == 404 and r.content_type == "text/plain"


async def test_every_api_error_is_json_and_the_document_is_served() -> None:
    async with example_bot() as bot:
        for raw in (b"{", b'{"topic": NaN}', b"\xff", b"[" * 100_000):
            async with bot.session.post(f"{bot.url}/api/notify", data=raw, headers=AUTH) as r:
                assert r.status == 400 and (await r.json())["error"].startswith("body must be JSON"), raw[:10]
        too_large = b'{"topic": "' + b"x" * 2_000_000 + b'"}'
        async with bot.session.post(f"{bot.url}/api/notify", data=too_large, headers=AUTH) as r:
            assert r.status == 413 and "error" in await r.json()
        async with bot.session.put(f"{bot.url}/api/notify", json={}, headers=AUTH) as r:
            assert r.status == 405 and r.headers["Allow"] == "POST" and "error" in await r.json()
        async with bot.session.get(f"{bot.url}/api/nothing-here", headers=AUTH) as r:
            assert r.status == 404 and "error" in await r.json()
        async with bot.session.get(f"{bot.url}/api/openapi.json") as r:  # public: it holds no secret
            served = await r.json()
    shipped = json.loads((ROOT / "engine" / "web" / "openapi.json").read_text())
    assert served == shipped and served["openapi"] == "3.1.0"
    assert set(served["paths"]) == {
        "/api/notify",
        "/api/campaigns/{id}",
        "/api/stats",
        "/api/agent/reply",
        "/api/openapi.json",
    }
