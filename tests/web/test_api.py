"""POST /api/notify and friends: bearer token, validation, a campaign run in the server through the users' workers."""

from __future__ import annotations

from pathlib import Path

from engine.testing.harness import API_TOKEN, Bot
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


async def test_api_needs_the_bearer_token() -> None:
    async with Bot.start(ROOT / "flows", ROOT / "templates", config=ROOT / "config.toml") as bot:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_TOKEN}):
            async with bot.session.post(f"{bot.url}/api/notify", json={"topic": "restock"}, headers=headers) as r:
                assert r.status == 401
                assert r.headers["WWW-Authenticate"] == "Bearer"
        async with bot.session.get(f"{bot.url}/api/stats", headers={}) as r:
            assert r.status == 401


async def test_api_validates_the_request() -> None:
    async with Bot.start(ROOT / "flows", ROOT / "templates", config=ROOT / "config.toml") as bot:
        cases = [
            ({"segment": "x"}, "'topic' (a string) is required"),
            ({"topic": "nope"}, "unknown topic 'nope'; topics: restock, sl13_restock"),
            ({"topic": "restock"}, "topic 'restock' needs product: pass --var product=..."),
            ({"topic": "restock", "vars": {"product": "x"}, "segment": "a &"}, "invalid segment expression"),
        ]
        for body, message in cases:
            async with bot.session.post(f"{bot.url}/api/notify", json=body, headers=AUTH) as r:
                assert r.status == 400
                assert message in (await r.json())["error"]


async def test_api_runs_a_campaign_and_reports_it() -> None:
    async with Bot.start(ROOT / "flows", ROOT / "templates", config=ROOT / "config.toml") as bot:
        alice = bot.user("alice")
        await alice.says("hi")
        await alice.taps("White")
        await alice.opts_in("restock")
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
        async with bot.session.get(f"{bot.url}/metrics") as r:
            metrics = await r.text()
        assert 'otnflow_otn{figure="deliveries",topic="restock"} 1.0' in metrics
