"""While another app (a person in the Page Inbox) owns the thread, Meta delivers the user's events in `standby[]`:
the bot records them (the inbox, handled), keeps the window up to date, and answers nothing."""

from __future__ import annotations

from pathlib import Path

from engine.local.fake_graph import PAGE_INBOX_APP_ID
from engine.testing.harness import Bot
from engine.web.keys import STORE

ROOT = Path(__file__).resolve().parents[2]


async def test_standby_events_are_recorded_never_answered() -> None:
    async with Bot.start(ROOT / "flows", ROOT / "templates", config=ROOT / "config.toml") as bot:
        alice = bot.user("alice")
        await alice.says("hi")
        state, sent = alice.state, len(bot.fake.sent)
        bot.fake.take_by("alice", PAGE_INBOX_APP_ID)  # a person took the thread in the Page Inbox
        assert await alice.says("is anyone there?") == []
        assert await alice.taps("White") == []
        assert len(bot.fake.sent) == sent and alice.state == state and "likes_white" not in alice.tags
        assert alice.record is not None and alice.record.last_message_ms == bot.clock.now_ms()  # the window moved
        counts = await bot.app[STORE].counts()
        assert (counts["inbox_handled"], counts.get("inbox_pending", 0), counts.get("inbox_failed", 0)) == (3, 0, 0)
