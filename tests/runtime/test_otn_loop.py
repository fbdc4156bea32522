"""The policy gate and the OTN loop through the real path: signed webhook JSON in, the fake Graph API out (with
Meta's enforcement of the window and of tokens switched on), driven by the flow-test harness."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from engine.testing.harness import Bot, BotUser
from engine.web.keys import STORE
from tests.conftest import example_bot
from tests.wine import white_lover_with_token

ROOT = Path(__file__).resolve().parents[2]
POLICY_FLOWS = ROOT / "tests" / "fixtures" / "policy_flows"


async def test_otn_request_follows_the_documented_template(bot: Bot) -> None:
    alice = bot.user("alice")
    await alice.says("hi")
    replies = await alice.taps("White")
    request = replies[-1]
    assert request.otn_topic == "restock"
    payload = request.raw["message"]["attachment"]["payload"]
    assert set(payload) == {"template_type", "title", "payload"}
    assert payload["template_type"] == "one_time_notif_req"
    assert payload["title"] == "Tell me when the Sauvignon 2024 is back" and len(payload["title"]) <= 65
    assert payload["payload"].startswith("otn:restock:sold_out:")
    assert request.raw["messaging_type"] == "RESPONSE"


async def test_optin_stores_the_token_for_a_year_and_runs_the_optin_step(bot: Bot) -> None:
    alice = await white_lover_with_token(bot)
    (token,) = alice.tokens("restock")
    assert token.expires_ms - token.received_ms == 365 * 24 * 3_600_000
    assert alice.state == "optin_thanks"
    assert alice.last_reply.text.startswith("Done: you will get one message")


@pytest.mark.parametrize(("hours", "minutes", "window_open"), [(23, 59, True), (24, 1, False)])
async def test_loop_re_request_goes_at_once_inside_the_window_else_on_engagement(
    bot: Bot, hours: int, minutes: int, window_open: bool
) -> None:
    alice = await white_lover_with_token(bot)
    bot.clock.advance(hours=hours, minutes=minutes)
    await bot.notify("restock", product="Sauvignon 2024")
    notification = next(r for r in alice.replies if r.is_notification)
    after = alice.replies[alice.replies.index(notification) + 1 :]
    assert [r.otn_topic for r in after] == (["restock"] if window_open else [])
    if not window_open:
        replies = await alice.taps("Show me")  # engaging reopens the window: the request goes first
        assert [r.otn_topic for r in replies] == ["restock", None]
        assert replies[1].text == "Great! It is in the shop now, while stocks last."
    assert bot.fake.rejected == []


async def red_lover_with_token(bot: Bot, name: str = "rob") -> BotUser:
    user = bot.user(name, first_name=name.title())
    await user.says("hi")
    await user.taps("Red")
    await user.taps("Older vintages")
    await user.opts_in("restock")
    return user


async def test_variants_are_chosen_per_segment(bot: Bot) -> None:
    wendy = await white_lover_with_token(bot, "wendy")
    rob = await red_lover_with_token(bot, "rob")
    both = bot.user("bea")
    await both.says("hi")
    await both.taps("Red")
    await both.taps("Whites too?")
    await both.opts_in("restock")
    assert (wendy.tags, rob.tags, both.tags) == ({"likes_white"}, {"likes_red"}, {"likes_red", "likes_white"})
    bot.clock.advance(hours=30)
    report = await bot.notify("restock", product="Sauvignon 2024")  # what wendy and bea asked about
    assert (report.eligible, report.delivered) == (2, 2)
    report = await bot.notify("restock", product="Rioja Gran Reserva 2015")  # what rob asked about
    assert (report.eligible, report.delivered) == (1, 1)
    texts = {u.id: next(r.text for r in reversed(u.replies) if r.is_notification) for u in (wendy, rob, both)}
    assert texts == {
        "wendy": "The Sauvignon 2024 is back, Wendy! Crisp, cold and waiting for you: the white you asked about is "
        "in the cellar again.",
        "rob": "The Rioja Gran Reserva 2015 is back! You're more of a red person, so we kept a Rioja pairing "
        "suggestion for you too.",
        "bea": "Good news: the Sauvignon 2024 is back in stock.",
    }


async def test_segment_option_limits_the_audience(bot: Bot) -> None:
    await white_lover_with_token(bot, "wendy")
    rob = await red_lover_with_token(bot, "rob")
    report = await bot.notify("restock", segment="likes_red and not likes_white", product="Rioja Gran Reserva 2015")
    assert (report.eligible, report.delivered) == (1, 1)
    assert [m.token_user for m in bot.fake.sent if m.otn_token] == ["rob"]
    # the window is still open: the loop asks again at once, titled as the state that first asked
    assert rob.last_reply.otn_topic == "restock"
    assert rob.last_reply.text == "Tell me when the Rioja Gran Reserva 2015 is back"


async def test_two_tokens_for_one_topic_are_used_oldest_first(bot: Bot) -> None:
    alice = await white_lover_with_token(bot)
    bot.clock.advance(hours=25)  # the anti-nagging period (1 request per 24h) has passed
    await alice.says("menu")
    await alice.taps("White")
    await alice.opts_in("restock")
    first, second = alice.tokens("restock")
    await bot.notify("restock", product="Sauvignon 2024")
    assert [t.token for t in alice.tokens("restock")] == [second.token]
    await bot.notify("restock", product="Sauvignon 2024")
    assert alice.tokens("restock") == []
    used = bot.fake.tokens_used()
    assert used == [first.token, second.token]


async def test_a_token_is_used_once_and_expired_tokens_never(bot: Bot) -> None:
    alice = await white_lover_with_token(bot)
    await bot.notify("restock", product="Sauvignon 2024")
    assert alice.tokens("restock") == []
    again = await bot.notify("restock", product="Sauvignon 2024")  # no valid token left: alice is not even eligible
    assert again.eligible == 0
    bob = await white_lover_with_token(bot, "bob")
    bot.clock.advance(days=366)
    late = await bot.notify("restock", product="C")
    assert late.eligible == 0
    assert [m.token_user for m in bot.fake.sent if m.otn_token] == ["alice"]
    assert bob.tokens("restock") == []  # expired
    assert Counter(bot.fake.tokens_used()).most_common(1)[0][1] == 1


async def test_an_invalid_token_is_marked_and_the_next_one_tried(bot: Bot) -> None:
    alice = await white_lover_with_token(bot)
    bot.clock.advance(hours=25)
    await alice.says("menu")
    await alice.taps("White")
    await alice.opts_in("restock")
    first, second = alice.tokens("restock")
    bot.fake.issued[first.token].used = True  # Meta no longer accepts it (used elsewhere)
    report = await bot.notify("restock", product="Sauvignon 2024")
    assert report.delivered == 1
    assert bot.fake.tokens_used() == [second.token]
    statuses = {t.token: t.status for t in await bot.app[STORE].tokens("alice")}
    assert statuses == {first.token: "invalid", second.token: "spent"}


async def test_anti_nagging_skips_a_request_while_a_token_is_held(bot: Bot) -> None:
    alice = await white_lover_with_token(bot)
    bot.clock.advance(hours=25)
    await alice.says("menu")
    replies = await alice.taps("White")
    assert [r.otn_topic for r in replies] == [None, None]  # the request was not sent again
    assert [r["reason"] for r in alice.refusals] == ["token_already_held"]


async def test_at_most_n_requests_per_period(bot: Bot) -> None:
    bob = bot.user("bob")
    await bob.says("hi")
    await bob.taps("White")  # request 1: not accepted
    await bob.says("menu")
    await bob.taps("White")  # within 24h: refused
    assert [r["reason"] for r in bob.refusals] == ["request_limit"]
    bot.clock.advance(hours=24, minutes=1)
    await bob.says("menu")
    replies = await bob.taps("White")
    assert replies[-1].otn_topic == "restock"


async def test_three_times_round_the_loop_without_a_single_rejection(bot: Bot) -> None:
    alice = await white_lover_with_token(bot)
    for _round in range(3):
        bot.clock.advance(days=3)  # the window has long closed
        report = await bot.notify("restock", product="Sauvignon 2024")
        assert report.delivered == 1
        assert alice.last_reply.is_notification
        replies = await alice.taps("Show me")  # engagement: the re-request goes out before the flow's reply
        assert replies[0].otn_topic == "restock"
        await alice.opts_in("restock")
        assert len(alice.tokens("restock")) == 1
    assert bot.fake.rejected == []
    figures = (await bot.app[STORE].otn_stats(bot.clock.now_ms(), bot.clock.now_ms()))["restock"]
    assert figures == {
        "request": 1,
        "re_request": 3,
        "optin": 4,
        "delivery": 3,
        "tokens_held": 1,
        "tokens_expiring_soon": 0,
        "token_holders": 1,
    }


async def test_eu_page_gets_no_otn_requests_and_no_notifications() -> None:
    async with example_bot(policy_page_in_eu=True) as bot:
        alice = bot.user("alice")
        await alice.says("hi")
        replies = await alice.taps("White")
        assert all(r.otn_topic is None for r in replies)
        assert [r["reason"] for r in alice.refusals] == ["otn_unavailable"]
        assert bot.fake.rejected == []


async def test_eu_user_tag_blocks_otn_for_that_user() -> None:
    async with Bot.start(POLICY_FLOWS, POLICY_FLOWS, config=ROOT / "config.toml", flow="orders") as bot:
        dana = bot.user("dana")
        await dana.says("hi")
        await dana.taps("My order")
        await dana.opts_in("shipping")  # while not known to be in the EU
        await dana.says("I live in the EU")
        assert "eu" in dana.tags
        await dana.taps("Sales")
        assert [r["reason"] for r in dana.refusals] == ["otn_unavailable"]
        report = await bot.notify("shipping")
        assert report.counts == {"skipped": 1, "skipped:otn_unavailable": 1}
        assert bot.fake.tokens_used() == [] and bot.fake.rejected == []


async def test_tagged_reply_goes_outside_the_window_and_an_untagged_one_is_refused() -> None:
    async with Bot.start(POLICY_FLOWS, POLICY_FLOWS, config=ROOT / "config.toml", flow="orders") as bot:
        carol = bot.user("carol")
        await carol.says("hi")
        await carol.taps("My order")
        await carol.says("menu")
        await carol.taps("Sales")
        bot.clock.advance(hours=30)  # the user taps Notify Me on old requests: an opt-in opens no window
        tagged = await carol.opts_in("shipping")
        assert [r.text for r in tagged] == ["Noted: we will tell you when your order ships."]
        sent = bot.fake.messages_to("carol")[-1].body
        assert (sent["messaging_type"], sent["tag"]) == ("MESSAGE_TAG", "POST_PURCHASE_UPDATE")
        untagged = await carol.opts_in("promo")
        assert untagged == []
        assert [(r["reason"], r["text"]) for r in carol.refusals] == [
            ("late_optin", "Great, and while you are here: 10% off everything today!")
        ]
        assert bot.fake.rejected == []
        metrics = await _metrics(bot)
        assert 'otnflow_policy_refusals_total{kind="message",reason="late_optin"} 1.0' in metrics


async def _metrics(bot: Bot) -> str:
    async with bot.session.get(f"{bot.url}/metrics") as response:
        return await response.text()
