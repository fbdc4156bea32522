"""Tests for flows/wine_shop.toml, written in Python with otnflow's pytest plugin (the `bot` fixture).

Each test gets a fresh bot: the project's flows (config.toml's), a temporary store, the fake Graph API and a
clock that only moves when the test moves it. Everything goes through the real engine.
"""

from __future__ import annotations

import pytest

from engine.testing.harness import Bot, HarnessError


async def test_white_lovers_are_tagged_asked_notified_and_asked_again(bot: Bot) -> None:
    alice = bot.user("alice", first_name="Alice")
    await alice.says("hi")
    assert alice.last_reply.text == "Hi Alice! Welcome to the cellar. Red or white tonight?"
    assert alice.last_reply.quick_replies == ("Red", "White", "Surprise me")

    await alice.taps("White")
    assert alice.tags == {"likes_white"}
    assert alice.state == "sold_out"
    assert alice.last_reply.is_otn_request and alice.last_reply.otn_topic == "restock"
    assert alice.last_reply.text == "Tell me when the Sauvignon 2024 is back"

    await alice.opts_in("restock")
    assert len(alice.tokens("restock")) == 1

    bot.clock.advance(hours=25)  # the 24h window has closed: only the OTN token can reach her now
    await bot.notify("restock", product="Sauvignon 2024")
    assert alice.last_reply.is_notification
    assert alice.last_reply.text.startswith("The Sauvignon 2024 is back, Alice! Crisp, cold")
    assert alice.tokens("restock") == []

    replies = await alice.taps("Show me")  # engaging reopens the window: the next request goes first
    assert [r.otn_topic for r in replies] == ["restock", None]
    await alice.opts_in("restock")
    assert len(alice.tokens("restock")) == 1


async def test_red_lovers_get_the_red_message_and_both_get_the_default(bot: Bot) -> None:
    rob, bea = bot.user("rob"), bot.user("bea")
    await rob.says("hi")
    await rob.taps("Red")
    await rob.taps("Older vintages")
    await rob.opts_in("restock")
    await bea.says("hi")
    await bea.taps("Red")
    await bea.taps("Whites too?")
    await bea.opts_in("restock")

    bot.clock.advance(days=10)
    report = await bot.notify("restock", product="Rioja Gran Reserva 2015")  # what rob asked about
    assert report.delivered == 1
    assert rob.last_reply.text.startswith("The Rioja Gran Reserva 2015 is back! You're more of a red person")
    report = await bot.notify("restock", product="Sauvignon 2024")  # what bea asked about, from the whites
    assert report.delivered == 1
    assert bea.last_reply.text == "Good news: the Sauvignon 2024 is back in stock."


async def test_the_request_is_not_repeated_while_a_token_is_held(bot: Bot) -> None:
    alice = bot.user("alice")
    await alice.says("hi")
    await alice.taps("White")
    await alice.opts_in("restock")
    bot.clock.advance(hours=30)
    await alice.says("menu")
    replies = await alice.taps("White")
    assert not any(r.is_otn_request for r in replies)
    assert [r["reason"] for r in alice.refusals] == ["token_already_held"]


async def test_tapping_what_was_not_offered_says_what_was(bot: Bot) -> None:
    alice = bot.user("alice")
    await alice.says("hi")
    with pytest.raises(HarnessError, match=r"cannot tap 'Rosé'.* offers \['Red', 'White', 'Surprise me'\]"):
        await alice.taps("Rosé")


async def test_a_summer_sale_link_opens_the_sale_for_a_new_user_and_keeps_the_ref(bot: Bot) -> None:
    carol = bot.user("carol", first_name="Carol")
    replies = await carol.arrives(ref="summer-sale", get_started=True)  # m.me/PAGE?ref=summer-sale, Get Started
    assert [r.text for r in replies] == ["Welcome to the summer sale: 20% off every white until Sunday!"]
    assert carol.state == "summer_sale" and "summer_sale" in carol.tags
    assert carol.variables["ref"] == carol.variables["first_ref"] == "summer-sale"
    assert carol.variables["ref_source"] == "link"


async def test_a_returning_user_from_an_ad_is_routed_and_the_first_referral_kept(bot: Bot) -> None:
    dave = bot.user("dave")
    await dave.arrives(ref="summer-sale", source="link")  # a new user on a referral event (the thread was open)
    await dave.taps("Menu")
    replies = await dave.arrives(source="ad", ad_id="6045246247433")  # weeks later, a Click-to-Messenger ad
    assert dave.state == "red" and {"from_ad", "likes_red"} <= dave.tags
    assert replies[0].text.startswith("A red lover!")
    assert dave.variables["ref_source"] == "ad" and dave.variables["ref_ad_id"] == "6045246247433"
    assert "ref" not in dave.variables  # the ad carried no ref: the latest referral has none
    assert (dave.variables["first_ref"], dave.variables["first_ref_source"]) == ("summer-sale", "link")


async def test_a_returning_user_on_a_link_no_entry_routes_hears_where_they_are(bot: Bot) -> None:
    erin = bot.user("erin")
    await erin.says("hi")
    replies = await erin.arrives(ref="newsletter-june")  # no entry point for it: never silence
    assert [r.text for r in replies] == ["Hi Test! Welcome to the cellar. Red or white tonight?"]
    assert erin.state == "welcome" and erin.variables["ref"] == "newsletter-june"
