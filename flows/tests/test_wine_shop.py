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
