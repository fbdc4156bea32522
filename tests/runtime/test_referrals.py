"""Arrivals through the real path (signed webhook, store, conversation step): a referral routes new and returning
users, the first and latest referral are stored with the user, and a plugin opt-in's `ref` and `user_ref` are kept
against the user when Meta names one (the PSID)."""

from __future__ import annotations

from pathlib import Path

from engine.testing.harness import PAGE_ID, Bot

ROOT = Path(__file__).resolve().parents[2]


def body(user: str | None, at: int, **item: object) -> dict[str, object]:
    event = {"recipient": {"id": PAGE_ID}, "timestamp": at, **item}
    if user is not None:
        event["sender"] = {"id": user}
    return {"object": "page", "entry": [{"id": PAGE_ID, "time": at, "messaging": [event]}]}


async def test_a_plugin_optin_records_ref_and_user_ref_against_the_user() -> None:
    async with Bot.start(config=ROOT / "config.toml") as bot:
        ann = bot.user("ann")
        await ann.says("hi")
        now = bot.clock.now_ms()
        await bot.post(body("ann", now + 1, optin={"ref": "PASS_THROUGH_PARAM", "user_ref": "cart-77"}))
        await bot.post(body(None, now + 2, optin={"ref": "orphan", "user_ref": "cart-78"}))  # no PSID: no user
        await ann.refresh()
        assert ann.variables["plugin_ref"] == "PASS_THROUGH_PARAM"
        assert ann.variables["plugin_user_ref"] == "cart-77"
        assert ann.state == "welcome" and ann.tokens() == []


async def test_referrals_are_stored_with_the_user_and_survive_a_restart() -> None:
    async with Bot.start(config=ROOT / "config.toml") as bot:
        ben = bot.user("ben")
        await ben.arrives(ref="summer-sale", source="ad", ad_id="6045246247433", get_started=True)
        assert ben.state == "summer_sale"
        await bot.restart()
        replies = await ben.arrives(ref="winter", source="code")
        assert replies and ben.variables["ref"] == "winter" and ben.variables["ref_source"] == "code"
        assert "ref_ad_id" not in ben.variables
        assert (ben.variables["first_ref"], ben.variables["first_ref_ad_id"]) == ("summer-sale", "6045246247433")
