"""Consent: "stop" stops everything. A step marked `unsubscribe = true` revokes the user's tokens, disarms their
re-requests and keeps them out of campaigns and OTN requests until a step with `subscribe = true` or a Notify Me
tap. Through the harness (the wine shop), /metrics and `otnflow stats` in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from engine.testing.harness import Bot
from engine.web.keys import STORE

ROOT = Path(__file__).resolve().parents[2]


async def test_stop_revokes_tokens_keeps_campaigns_and_requests_away_until_subscribe(tmp_path: Path) -> None:
    async with Bot.start(ROOT / "flows", ROOT / "templates", config=ROOT / "config.toml", store_dir=tmp_path) as bot:
        alice = bot.user("alice", first_name="Alice")
        await alice.says("hi")
        await alice.taps("White")
        await alice.opts_in("restock")
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
        async with bot.session.get(f"{bot.url}/metrics") as r:
            assert "otnflow_unsubscribed_users 1.0" in await r.text()
        stats = subprocess.run(
            [sys.executable, "-m", "engine.cli", "stats", "--config", str(ROOT / "config.toml")],
            cwd=ROOT,
            env={**__import__("os").environ, "OTNFLOW_STORE_URL": f"sqlite:///{tmp_path / 'harness.sqlite3'}"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert stats.stdout.strip().endswith("unsubscribed users: 1"), stats.stdout + stats.stderr

        await alice.says("subscribe")
        assert alice.subscribed
        await alice.says("menu")
        replies = await alice.taps("White")
        assert replies[-1].otn_topic == "restock"  # asked again
        assert token.token not in bot.fake.tokens_used()
        assert bot.fake.rejected == []


async def test_stop_disarms_the_loop_and_a_notify_me_tap_subscribes_again() -> None:
    async with Bot.start(ROOT / "flows", ROOT / "templates", config=ROOT / "config.toml") as bot:
        alice = bot.user("alice")
        await alice.says("hi")
        await alice.taps("White")
        await alice.opts_in("restock")
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
