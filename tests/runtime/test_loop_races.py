"""The OTN loop and the policy gate under races, backlogs and crashes (issue 11, section 3), through the real path:
the harness's server on loopback, a real store, the fake Graph API enforcing Meta's rules."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

from engine.runtime.campaigns import NO_VALID_TOKEN, campaign_counts, campaign_runs
from engine.store import StepWrite, StoredEvent, Token, UserRecord
from engine.testing.harness import PAGE_ID, Bot
from engine.web.keys import CAMPAIGNS, STORE
from tests.conftest import example_bot, served_playground, wait_until
from tests.wine import requests_to, white_lover_with_token

ROOT = Path(__file__).resolve().parents[2]
HOUR_MS = 3_600_000


def message(user_id: str, mid: str, at_ms: int, text: str, payload: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"mid": mid, "text": text}
    if payload is not None:
        body["quick_reply"] = {"payload": payload}
    return {"sender": {"id": user_id}, "recipient": {"id": PAGE_ID}, "timestamp": at_ms, "message": body}


def batch(*events: dict[str, Any]) -> dict[str, Any]:
    return {"object": "page", "entry": [{"id": PAGE_ID, "time": events[0]["timestamp"], "messaging": list(events)}]}


# -- 2. an armed request is used up only when it is actually sent -----------------------------------------------
async def test_a_backlogged_engagement_keeps_the_armed_request_for_the_next_one(bot: Bot) -> None:
    alice = await white_lover_with_token(bot)
    bot.clock.advance(hours=30)  # the window has closed: the delivery arms the next request
    report = await bot.notify("restock", product="Sauvignon 2024")
    assert report.delivered == 1
    # Meta retries a message alice wrote 30 hours ago: it reopens no window, so the armed request cannot go...
    late = bot.clock.now_ms() - 30 * HOUR_MS
    await bot.post(batch(message("alice", "m_backlog", late, "are you there?")))
    await alice.refresh()
    assert requests_to(bot, "alice") == ["restock"]  # only the first request, before the opt-in
    assert [(r["kind"], r["reason"]) for r in alice.refusals] == [
        ("otn_request", "outside_window"),
        ("message", "outside_window"),  # the flow's answer to the old message cannot go either
    ]
    # ...and it is still armed: her first real engagement gets it, before the flow's reply
    replies = await alice.taps("Show me")
    assert [r.otn_topic for r in replies] == ["restock", None]
    assert bot.fake.rejected == []


# -- 3. anti-nagging is atomic ----------------------------------------------------------------------------------
async def test_the_armed_request_and_the_flows_own_request_in_one_step_respect_the_limit(bot: Bot) -> None:
    alice = await white_lover_with_token(bot)
    await alice.says("menu")  # back at the welcome state, where "White" leads to the restock request
    bot.clock.advance(hours=30)
    await bot.notify("restock", product="Sauvignon 2024")  # window closed: the next request is armed
    replies = await alice.says("White")  # one step: the armed re-request, then sold_out's own request
    assert [r.otn_topic for r in replies].count("restock") == 1  # otn_max_requests = 1
    assert [r["reason"] for r in alice.refusals] == ["request_limit"]
    assert bot.fake.rejected == []


async def test_double_taps_in_one_batch_are_asked_once_on_both_stores(store_url: str) -> None:
    users = 150
    async with example_bot(store_url=store_url) as bot:
        names = [f"dt{i:03d}" for i in range(users)]
        now = bot.clock.advance(seconds=1)
        for name in names:
            bot.fake.saw(name, now + 1000)  # what Meta knows: each user interacts (hi, then the taps)
        await bot.post(batch(*(message(name, f"m_hi_{name}", now, "hi") for name in names)))
        now = bot.clock.advance(seconds=1)
        taps = []
        for name in names:  # the same quick reply tapped twice, 50 ms apart, all users in one webhook batch
            taps.append(message(name, f"m_white1_{name}", now, "White", "WHITE"))
            taps.append(message(name, f"m_white2_{name}", now + 50, "White", "WHITE"))
        await bot.post(batch(*taps))
        asked = Counter(name for name in names for _ in requests_to(bot, name))
        assert set(asked) == set(names)
        assert [name for name in names if asked[name] > 1] == []
        assert bot.fake.rejected == []


async def test_the_quick_reply_payload_of_white_is_what_the_batch_test_taps(bot: Bot) -> None:
    """Guards the batch test above: its hand-made taps carry the payload the welcome state offers."""
    user = bot.user("check")
    replies = await user.says("hi")
    quick = replies[-1].raw["message"]["quick_replies"]
    assert {q["title"]: q["payload"] for q in quick}["White"] == "WHITE"


# -- 1. the first engagement after a delivery is re-asked -------------------------------------------------------
async def test_a_tap_on_the_notification_at_once_gets_the_next_request() -> None:
    async with example_bot(notify_concurrency=1) as bot:
        users = [await white_lover_with_token(bot, f"fan{i}") for i in range(5)]
        bot.clock.advance(hours=30)  # every window has closed: each delivery arms the next request
        bot.fake.delay = 0.1  # Meta's latency: the campaign is still sending to the others when fan0 taps
        campaign = asyncio.create_task(bot.app[CAMPAIGNS].run("restock", "", {"product": "Sauvignon 2024"}))
        await wait_until(lambda: any(m.otn_token for m in bot.fake.messages_to("fan0")), what="fan0's notification")
        replies = await users[0].taps("Show me")
        assert [r.otn_topic for r in replies] == ["restock", None]
        report = await campaign
        assert report.delivered == 5
        assert bot.fake.rejected == []


async def holders_with_claims_left_by_a_dead_run(
    bot: Bot, count: int, claim_ms: int, expires_in_ms: int = 300 * 24 * HOUR_MS
) -> None:
    """`count` users holding a restock token, each claimed by a run that died before sending (items `sending`)."""
    store, now = bot.app[STORE], bot.clock.now_ms()
    for i in range(count):
        user_id = f"h{i:03d}"
        payload = "otn:restock:sold_out:seed"
        token = bot.fake.issue_token(user_id, payload, now - HOUR_MS)
        user = UserRecord(
            user_id=user_id,
            page_id=PAGE_ID,
            flow="wine_shop",
            state="optin_thanks",
            tags={"likes_white"},
            last_interaction_ms=1,
        )
        await store.add_events(
            [StoredEvent(key=f"seed-{i}", user_id=user_id, page_id=PAGE_ID, timestamp=now, kind="optin", body="{}")]
        )
        tokens = [
            Token(
                token=token,
                user_id=user_id,
                topic="restock",
                payload=payload,
                received_ms=now - HOUR_MS,
                expires_ms=now + expires_in_ms,
                source_state="sold_out",
            )
        ]
        await store.commit_step(StepWrite(event_key=f"seed-{i}", user=user, tokens=tokens), now)
    campaign = await bot.app[CAMPAIGNS].open("restock", "", {"product": "Sauvignon 2024"}, None)
    users = [f"h{i:03d}" for i in range(count)]
    await store.add_campaign_items(campaign.id, users, {}, now)
    await store.begin_deliveries(
        campaign.id, "restock", [(u, {"text": "back!"}) for u in users], now, claim_ms, no_token_reason=NO_VALID_TOKEN
    )


async def test_a_resumed_campaign_is_done_only_once_every_outcome_is_written(bot: Bot) -> None:
    await holders_with_claims_left_by_a_dead_run(bot, 64, claim_ms=60_000)  # one full batch
    run = asyncio.create_task(bot.app[CAMPAIGNS].run("restock", "", {"product": "Sauvignon 2024"}))
    await asyncio.sleep(0.3)  # the resumed run finds the dead run's claims still live: it waits for them
    bot.clock.advance(minutes=2)  # they expire: the run settles them (same token, once)
    report = await asyncio.wait_for(run, 30)
    assert report.counts == {"delivered": 64}
    (campaign,) = await campaign_runs(bot.app[STORE], report.campaign.id)
    assert campaign.status == "done"
    assert await campaign_counts(bot.app[STORE], campaign.id) == {"delivered": 64}
    assert len(bot.fake.tokens_used()) == 64 and bot.fake.rejected == []


# -- 4. a resumed campaign item passes the gate again ----------------------------------------------------------
async def test_a_resumed_item_is_gated_again_and_a_refusal_recorded_with_its_reason(bot: Bot) -> None:
    await holders_with_claims_left_by_a_dead_run(bot, 3, claim_ms=0)
    store = bot.app[STORE]
    tagged = await store.load_user("h000")
    assert tagged is not None
    tagged.tags.add("eu")  # tagged as living in the EU since the dead run claimed her token
    await store.put_user(tagged)
    await store.mark_unreachable("h001")  # blocked the page meanwhile
    report = await bot.notify("restock", product="Sauvignon 2024")
    assert report.counts == {
        "delivered": 1,
        "skipped": 2,
        "skipped:otn_unavailable": 1,
        "skipped:user_unreachable": 1,
    }
    assert [m.token_user for m in bot.fake.sent if m.otn_token] == ["h002"]
    assert bot.fake.rejected == []


async def test_a_resumed_campaign_sends_nothing_where_otn_is_off() -> None:
    async with example_bot(policy_otn_available=False) as bot:
        await holders_with_claims_left_by_a_dead_run(bot, 2, claim_ms=0)
        report = await bot.notify("restock", product="Sauvignon 2024")
        assert report.counts == {"skipped": 2, "skipped:otn_unavailable": 2}
        assert bot.fake.sent == [] and bot.fake.rejected == []


# -- 5. an expired token is never sent, on resume either --------------------------------------------------------
async def test_a_token_that_expired_since_its_claim_is_never_sent_nor_counted_delivered(bot: Bot) -> None:
    await holders_with_claims_left_by_a_dead_run(bot, 1, claim_ms=60_000, expires_in_ms=HOUR_MS)
    bot.clock.advance(hours=2)  # the dead run's claim and the token have both expired
    report = await bot.notify("restock", product="Sauvignon 2024")
    assert report.counts == {"skipped": 1, "skipped:token_expired": 1}
    assert report.delivered == 0
    assert bot.fake.sent == [] and bot.fake.rejected == []  # nothing went out, not even a refused attempt
    assert await bot.app[STORE].armed("h000") == []  # nothing reached the user: nothing to re-ask


async def test_a_resend_refused_for_another_reason_is_not_counted_delivered(bot: Bot) -> None:
    await holders_with_claims_left_by_a_dead_run(bot, 1, claim_ms=0)
    bot.fake.fail("551", user_id=None)  # the person is unavailable: not Meta's answer to a reused token
    report = await bot.notify("restock", product="Sauvignon 2024")
    assert report.delivered == 0
    assert report.counts == {"failed": 1, "failed:unreachable": 1}
    assert await bot.app[STORE].armed("h000") == []


# -- 7. payloads are one vocabulary ------------------------------------------------------------------------------
ENGAGE_FLOW = """
[flow]
name = "club"
start = "welcome"

[topics.news]
title = "Tell me when the club has news"
quick_replies = [{ title = "Engage", goto = "engaged" }, { title = "Later", goto = "welcome" }]

[[topics.news.variants]]
say = "The club has news!"

[states.welcome]
say = "Hi! Want our news?"
otn = { topic = "news" }
quick_replies = [{ title = "Menu", goto = "welcome" }]

[states.engaged]
say = "You engaged: here is the news."
quick_replies = [{ title = "Menu", goto = "welcome" }]
"""


async def test_a_topic_quick_reply_titled_engage_follows_its_goto(tmp_path: Path) -> None:
    (tmp_path / "club.toml").write_text(ENGAGE_FLOW)
    async with Bot.start(tmp_path, tmp_path, config=ROOT / "config.toml", flows_default="club") as bot:
        fan = bot.user("fan")
        await fan.says("hi")
        await fan.opts_in("news")
        bot.clock.advance(hours=30)
        assert (await bot.notify("news")).delivered == 1
        replies = await fan.taps("Engage")
        assert [(r.otn_topic, r.text) for r in replies] == [
            ("news", "Tell me when the club has news"),  # the loop's next request, first
            (None, "You engaged: here is the news."),
        ]
        assert fan.state == "engaged"
        assert bot.fake.rejected == []


# -- 8. late opt-ins ---------------------------------------------------------------------------------------------
async def test_a_late_opt_in_keeps_the_token_and_records_why_no_confirmation_went(bot: Bot) -> None:
    alice = bot.user("alice")
    await alice.says("hi")
    await alice.taps("White")  # the request
    bot.clock.advance(hours=30)  # she taps Notify Me the next evening: the opt-in reopens no window
    assert await alice.opts_in("restock") == []  # Meta allows no confirmation now: she sees none
    assert len(alice.tokens("restock")) == 1  # but her token is kept: the notification will come
    assert [(r["kind"], r["reason"]) for r in alice.refusals] == [("message", "late_optin")]
    assert bot.fake.rejected == []
    await bot.notify("restock", product="Sauvignon 2024")
    assert alice.last_reply.is_notification


async def test_the_playground_explains_a_late_opt_in(tmp_path: Path) -> None:
    async with served_playground(tmp_path) as playground:
        await playground.done("say", user="pat", text="hi")
        state = await playground.done("tap", user="pat", title="White", payload="WHITE")
        request = next(e for e in state["transcript"] if e.get("otn_payload"))
        await playground.done("advance", user="pat", hours=30)
        state = await playground.done("optin", user="pat", payload=request["otn_payload"])
        late = state["transcript"][-1]
        assert (late["from"], late["reason"]) == ("policy", "late_optin")
        assert "after the 24-hour window" in late["explain"] and "token is kept" in late["explain"]
        assert [t["valid"] for t in state["tokens"]] == [True]


async def test_a_re_request_meta_refuses_is_armed_again_for_the_next_engagement(bot: Bot) -> None:
    alice = await white_lover_with_token(bot)
    bot.clock.advance(hours=30)
    await bot.notify("restock", product="Sauvignon 2024")
    bot.fake.fail("no_user", user_id="alice")  # the re-request's send fails at Meta (once)
    replies = await alice.taps("Show me")
    assert [r.otn_topic for r in replies] == [None]  # only the flow's reply reached her
    assert await bot.app[STORE].armed("alice") == [("restock", "sold_out")]  # not used up: it was never sent
    replies = await alice.says("menu")
    assert replies[0].otn_topic == "restock"  # the armed request, before the menu
    assert await bot.app[STORE].armed("alice") == []
