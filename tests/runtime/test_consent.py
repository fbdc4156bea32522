"""Consent: "stop" stops everything. A step marked `unsubscribe = true` revokes the user's tokens, disarms their
re-requests and keeps them out of campaigns and OTN requests until a step with `subscribe = true` or a Notify Me
tap. Through the harness (the wine shop), /metrics and `otnflow stats` in a subprocess, and the playground over
HTTP (its state panel, /api/stats)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from engine.config import LOCAL_SECRET
from engine.web.keys import FIGURES, STORE
from tests.conftest import example_bot, served_playground
from tests.wine import white_lover_with_token

ROOT = Path(__file__).resolve().parents[2]


async def test_stop_revokes_tokens_keeps_campaigns_and_requests_away_until_subscribe(tmp_path: Path) -> None:
    async with example_bot(store_dir=tmp_path) as bot:
        alice = await white_lover_with_token(bot)
        (token,) = alice.tokens("restock")
        await alice.says("stop")
        assert not alice.subscribed
        assert [t.status for t in await bot.app[STORE].tokens("alice")] == ["revoked"]
        bot.clock.advance(hours=25)
        report = await bot.notify("restock", product="Sauvignon 2024")
        assert report.delivered == 0 and not [m for m in bot.fake.sent if m.otn_token]

        await alice.says("menu")
        replies = await alice.taps("White")  # browsing is answered, but no Notify Me request goes out
        assert [r.otn_topic for r in replies] == [None, None]
        assert [r["reason"] for r in alice.refusals] == ["unsubscribed"]
        await bot.app[FIGURES].refresh()  # /metrics shows the last reading of the store (every 15 s)
        async with bot.session.get(f"{bot.url}/metrics") as r:
            assert "otnflow_unsubscribed_users 1.0" in await r.text()
        stats_env = {**os.environ, "OTNFLOW_STORE_URL": f"sqlite:///{tmp_path / 'harness.sqlite3'}"}
        stats = subprocess.run(
            [sys.executable, "-m", "engine.cli", "stats", "--config", str(ROOT / "config.toml")],
            cwd=ROOT,
            env=stats_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert stats.stdout.strip().endswith("unsubscribed users: 1"), stats.stdout + stats.stderr
        as_json = subprocess.run([*stats.args, "--json"], cwd=ROOT, env=stats_env, capture_output=True, timeout=60)
        assert json.loads(as_json.stdout)["unsubscribed_users"] == 1, as_json.stderr

        await alice.says("subscribe")
        assert alice.subscribed
        await alice.says("menu")
        replies = await alice.taps("White")
        assert replies[-1].otn_topic == "restock"  # asked again
        assert token.token not in bot.fake.tokens_used()
        assert bot.fake.rejected == []


async def test_stop_disarms_the_loop_and_a_notify_me_tap_subscribes_again() -> None:
    async with example_bot() as bot:
        alice = await white_lover_with_token(bot)
        bot.clock.advance(hours=25)  # the window closed: the next request is armed for her next engagement
        await bot.notify("restock", product="Sauvignon 2024")
        assert await bot.app[STORE].armed("alice") != []
        replies = await alice.says("stop")
        assert [r.otn_topic for r in replies] == [None]  # the armed re-request did not go out
        assert await bot.app[STORE].armed("alice") == []
        assert not alice.subscribed

        bob = bot.user("bob")
        await bob.says("hi")
        await bob.taps("White")  # asked, not yet accepted
        await bob.says("stop")
        assert not bob.subscribed
        await bob.opts_in("restock")  # tapping Notify Me on the old request: he asks to hear from us again
        assert bob.subscribed and len(bob.tokens("restock")) == 1


async def test_the_playground_shows_consent_and_api_stats_counts_the_unsubscribed(tmp_path: Path) -> None:
    async with served_playground(tmp_path) as playground:

        async def unsubscribed_users() -> int:
            bearer = {"Authorization": f"Bearer {LOCAL_SECRET}"}  # local mode's API token
            async with playground.session.get(f"{playground.url}/api/stats", headers=bearer) as r:
                assert r.status == 200, await r.text()
                count: int = (await r.json())["unsubscribed_users"]
                return count

        await playground.done("say", user="pat", text="hi")
        state = await playground.done("tap", user="pat", title="White", payload="WHITE")
        request = next(e for e in state["transcript"] if e.get("kind") == "otn_request")
        state = await playground.done("optin", user="pat", payload=request["otn_payload"])
        assert state["subscribed"] is True and await unsubscribed_users() == 0

        state = await playground.done("say", user="pat", text="stop")
        assert state["subscribed"] is False
        assert [t["status"] for t in state["tokens"]] == ["revoked"]
        url = f"{playground.url}/playground/api/state?user=pat"
        async with playground.session.get(url, headers=playground.headers) as r:
            assert (await r.json())["subscribed"] is False  # what the panel reads on a refresh
        assert await unsubscribed_users() == 1

        state = await playground.done("say", user="pat", text="subscribe")
        assert state["subscribed"] is True and await unsubscribed_users() == 0
