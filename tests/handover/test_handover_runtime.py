"""Hand-over to a person, end to end through the harness (the wine shop; signed webhooks in, the fake Graph API's
Handover Protocol out): the state speaks, then the thread passes to the Page Inbox with the note; the bot stays
silent (standby recorded, campaigns skip the user, armed re-requests wait); control comes back when the agent
marks the conversation Done, on the idle timeout, or on the user's take-back word, and the flow resumes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from engine.local.fake_graph import PAGE_INBOX_APP_ID
from engine.testing.harness import PAGE_ID, Bot, HarnessError
from engine.web.keys import METRICS
from tests.conftest import serve_on_loopback

ROOT = Path(__file__).resolve().parents[2]
HANDED_OVER = 'Of course: someone from the cellar will answer you here shortly. Type "bot" to come back to me.'
BACK = "I'm back! Anything else tonight?"


def start(**settings: Any) -> Any:
    return Bot.start(ROOT / "flows", ROOT / "templates", config=ROOT / "config.toml", **settings)


async def test_handover_passes_the_thread_with_the_note_and_the_agent_marks_it_done() -> None:
    async with start() as bot:
        ann = bot.user("ann", first_name="Ann")
        await ann.says("hi")
        await ann.taps("White")
        assert [r.text for r in await ann.says("talk to a person")] == [HANDED_OVER]
        (call,) = bot.fake.thread_calls
        assert (call.action, call.user_id, call.target_app_id) == ("pass_thread_control", "ann", PAGE_INBOX_APP_ID)
        assert call.metadata == "Ann asked for a person (tags: likes_white)"
        assert (ann.thread_owner, ann.state, bot.fake.channel("ann")) == (PAGE_INBOX_APP_ID, "person", "standby")

        sent = len(bot.fake.sent)
        assert await ann.says("menu") == []  # a global keyword: the person has the thread, the bot is silent
        assert await ann.says("do you ship to Lyon?") == []
        assert len(bot.fake.sent) == sent and ann.state == "person"

        assert [r.text for r in await ann.agent_done()] == [BACK]
        assert (ann.thread_owner, ann.state, bot.fake.channel("ann")) == ("", "welcome_back", "messaging")
        assert [c.action for c in bot.fake.thread_calls] == ["pass_thread_control"]  # Meta gave it back: no call
        assert (await ann.taps("Red"))[0].text.startswith("A red lover!")
        metrics = bot.app[METRICS].registry.get_sample_value
        assert metrics("otnflow_handovers_total", {"what": "passed"}) == 1.0
        assert metrics("otnflow_handovers_total", {"what": "returned"}) == 1.0


async def test_the_users_take_back_word_returns_the_bot_which_takes_the_thread() -> None:
    async with start() as bot:
        ann = bot.user("ann")
        await ann.says("hi")
        await ann.says("human")
        assert [r.text for r in await ann.says("Bot!")] == [BACK]
        assert [c.action for c in bot.fake.thread_calls] == ["pass_thread_control", "take_thread_control"]
        assert (ann.thread_owner, ann.state, bot.fake.channel("ann")) == ("", "welcome_back", "messaging")


async def test_the_idle_timeout_takes_the_thread_back_after_the_agents_silence() -> None:
    async with start(handover_idle_minutes=30) as bot:
        ann = bot.user("ann")
        await ann.says("hi")
        await ann.says("person")
        bot.clock.advance(minutes=20)
        await ann.agent_says("Hello Ann, how can I help?")  # the agent spoke: the silence counts from here
        bot.clock.advance(minutes=25)
        assert await bot.check_idle() == 0 and ann.with_human
        bot.clock.advance(minutes=6)
        assert await bot.check_idle() == 1
        assert ann.last_reply.text == BACK
        assert [c.action for c in bot.fake.thread_calls] == ["pass_thread_control", "take_thread_control"]
        assert (ann.thread_owner, ann.state) == ("", "welcome_back")
        assert await bot.check_idle() == 0  # once


async def test_an_agents_reply_goes_tagged_human_agent_up_to_seven_days_never_later() -> None:
    async with start(handover_idle_minutes=0) as bot:
        ann = bot.user("ann")
        await ann.says("hi")
        await ann.says("person")
        bot.clock.advance(hours=30)  # outside the 24h window
        (reply,) = await ann.agent_says("Sorry for the wait: the Rioja is back on Monday.", reply_id="t1")
        assert (reply.raw["messaging_type"], reply.raw["tag"]) == ("MESSAGE_TAG", "HUMAN_AGENT")
        assert await ann.agent_says("Sorry for the wait: the Rioja is back on Monday.", reply_id="t1") == []  # once
        assert ann.record is not None and ann.record.agent_replied_ms == bot.clock.now_ms()
        bot.clock.advance(days=5, hours=18)  # 7 days after ann's last message, to the millisecond
        try:
            await ann.agent_says("Still there?")
        except HarnessError as refused:
            assert "409" in str(refused) and "human_agent_expired" in str(refused)
        else:
            raise AssertionError("an agent's reply went out 7 days after the user's last message")
        assert bot.fake.rejected == []  # Meta never had to refuse anything


async def test_campaigns_skip_a_user_with_a_person_and_armed_requests_wait() -> None:
    async with start(handover_idle_minutes=0) as bot:
        ann = bot.user("ann")
        await ann.says("hi")
        await ann.taps("White")
        await ann.opts_in("restock")
        await ann.says("person")
        report = await bot.notify("restock", product="Sauvignon 2024")
        assert (report.delivered, report.counts.get("skipped:with_human")) == (0, 1)
        assert [r["reason"] for r in ann.refusals] == []  # nothing was even queued for her
        await ann.agent_done()
        report = await bot.notify("restock", product="Sauvignon 2024")
        assert report.delivered == 1


async def test_a_refused_pass_leaves_the_bot_in_charge() -> None:
    async with start() as bot:
        bot.fake.secondary_receivers.clear()  # the Page Inbox is not set up as a Secondary Receiver
        ann = bot.user("ann")
        await ann.says("hi")
        assert [r.text for r in await ann.says("person")] == [HANDED_OVER]
        assert (ann.thread_owner, bot.fake.thread_calls) == ("", [])
        assert bot.app[METRICS].registry.get_sample_value("otnflow_handovers_total", {"what": "pass_failed"}) == 1.0
        assert (await ann.says("menu"))[0].text.startswith("Hi")  # the bot still answers


async def test_an_agent_taking_the_thread_in_the_inbox_silences_the_bot_until_done() -> None:
    async with start() as bot:
        ann = bot.user("ann")
        await ann.says("hi")
        await ann.agent_takes()  # no hand-over from the flow: a person opened the conversation in the inbox
        assert ann.thread_owner == PAGE_INBOX_APP_ID
        assert await ann.says("hello?") == []
        assert await ann.agent_done() == []  # no state handed over: nothing to resume, the bot just listens again
        assert (await ann.says("menu"))[0].text.startswith("Hi")


async def test_the_alert_is_posted_and_its_failure_never_blocks_the_conversation(caplog: Any) -> None:
    received: list[dict[str, Any]] = []
    fail = [False]

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=500 if fail[0] else 200)

    app = web.Application()
    app.router.add_post("/alert", hook)
    served = await serve_on_loopback(app)
    try:
        url = f"{served.url}/alert?key=secret-in-the-url"
        async with start(handover_alert_url_env="SHOP_ALERT_URL", action_env={"SHOP_ALERT_URL": url}) as bot:
            ann = bot.user("ann", first_name="Ann")
            await ann.says("hi")
            await ann.says("person")
            assert received == [
                {
                    "user_id": "ann",
                    "to": PAGE_INBOX_APP_ID,
                    "state": "person",
                    "note": "Ann asked for a person (tags: none)",
                    "at_ms": bot.clock.now_ms(),
                }
            ]
            fail[0] = True
            await ann.agent_done()
            await ann.says("person")  # the alert fails: the hand-over stands all the same
            assert ann.thread_owner == PAGE_INBOX_APP_ID and len(received) == 2
    finally:
        await served.runner.cleanup()
    assert "secret-in-the-url" not in caplog.text
    assert "hand-over alert not delivered: HTTP 500" in caplog.text


async def test_a_reply_typed_in_the_page_inbox_resets_the_idle_timeout() -> None:
    """An agent answering in the Page Inbox (not through otnflow) reaches us as an echo in `standby[]`: the person
    is at work, so the silence counts from there, not from the hand-over."""
    async with start(handover_idle_minutes=30) as bot:
        ann = bot.user("ann")
        await ann.says("hi")
        await ann.says("person")
        bot.clock.advance(minutes=20)
        now = bot.clock.now_ms()
        echo = {
            "sender": {"id": PAGE_ID},
            "recipient": {"id": "ann"},
            "timestamp": now,
            "message": {"mid": "m_inbox_1", "is_echo": True, "app_id": int(PAGE_INBOX_APP_ID), "text": "Hello Ann!"},
        }
        await bot.post({"object": "page", "entry": [{"id": PAGE_ID, "time": now, "standby": [echo]}]})
        bot.clock.advance(minutes=25)  # 45 minutes after the hand-over, 25 after the agent's last word
        assert await bot.check_idle() == 0 and ann.with_human
        bot.clock.advance(minutes=6)
        assert await bot.check_idle() == 1 and not ann.with_human
