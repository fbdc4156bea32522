"""One contract for every Store backend, run over each: SQLite on a real file, and MongoDB on a real server process
(SecantusDB on loopback, or the MongoDB named by OTNFLOW_TEST_MONGODB_URL). No mock of any driver."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.policy import Refusal
from engine.runtime.campaigns import ItemReason
from engine.runtime.inspection import inspect_user
from engine.runtime.stats import loop_stats
from engine.store import (
    Backend,
    Campaign,
    DeliveryResult,
    ItemStatus,
    OtnLogged,
    OtnLogLine,
    OutboxItem,
    OutboxMeta,
    OutboxStatus,
    RejectedEvent,
    StatusMark,
    StepWrite,
    StoredEvent,
    Token,
    TokenStatus,
    UserRecord,
    open_store,
    refused_request,
)
from engine.store.mongo import MongoStore
from engine.store.sqlite import SqliteStore


def event(key: str, user: str = "u1", ts: int = 1) -> StoredEvent:
    return StoredEvent(
        key=key,
        user_id=user,
        page_id="page",
        timestamp=ts,
        kind="message",
        body=json.dumps({"message": {"mid": key}}),
        received_ms=0,
    )


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Backend]:
    s = open_store(store_url)
    await s.open()
    yield s
    await s.close()


async def test_sqlite_file_is_in_wal_mode(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "wal.sqlite3")
    await store.open()
    await store.close()
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_add_events_is_insert_if_absent(store: Backend) -> None:
    assert [e.key for e in await store.add_events([event("a"), event("b")])] == ["a", "b"]
    assert [e.key for e in await store.add_events([event("b"), event("c"), event("c")])] == ["c"]


async def test_pending_events_come_oldest_first(store: Backend) -> None:
    await store.add_events([event("late", ts=30), event("early", ts=10), event("mid", ts=20), event("x", "u2", 5)])
    assert [e.key for e in await store.pending_events("u1")] == ["early", "mid", "late"]


async def test_commit_step_is_atomic_and_once_only(store: Backend) -> None:
    await store.add_events([event("a")])
    user = UserRecord(user_id="u1", state="welcome", tags={"t"})
    outbox = [
        OutboxItem(key="a#0", user_id="u1", message={"text": "one"}),
        OutboxItem(key="a#1", user_id="u1", message={"text": "two"}),
    ]
    assert await store.commit_step(StepWrite(event_key="a", user=user, outbox=outbox), 100)
    user.state = "elsewhere"
    assert not await store.commit_step(
        StepWrite(event_key="a", user=user, outbox=outbox), 200
    )  # already handled: nothing written
    loaded = await store.load_user("u1")
    assert loaded is not None and (loaded.state, loaded.tags) == ("welcome", {"t"})
    assert [o.message["text"] for o in await store.pending_outbox("u1")] == ["one", "two"]
    assert await store.pending_events("u1") == []


async def test_a_failing_commit_leaves_nothing_half_done(store: Backend) -> None:
    await store.add_events([event("a")])
    rows = [
        OutboxItem(key="a#0", user_id="u1", message={"text": "ok"}),
        OutboxItem(key="a#1", user_id="u1", message={"text": "also ok"}),
    ]
    # The token is written last, after the handled mark, the user and the rows: its expiry fits neither an SQLite
    # INTEGER nor a BSON int64, so the driver fails mid-transaction and the earlier writes must be undone.
    bad = token("t1", expires=2**64)
    with pytest.raises(OverflowError):
        await store.commit_step(
            StepWrite(event_key="a", user=UserRecord(user_id="u1", state="s"), outbox=rows, tokens=[bad]), 1
        )
    assert await store.load_user("u1") is None
    assert [e.key for e in await store.pending_events("u1")] == ["a"]
    assert await store.pending_outbox("u1") == [] and await store.tokens("u1") == []


async def test_in_flight_sends_become_uncertain_at_restart(store: Backend, store_url: str) -> None:
    await store.add_events([event("a")])
    await store.commit_step(
        StepWrite(
            event_key="a",
            user=UserRecord(user_id="u1"),
            outbox=[OutboxItem(key="a#0", user_id="u1", message={"text": "x"})],
        ),
        1,
    )
    await store.set_outbox_status("a#0", "sending", "", 2)
    reopened = open_store(store_url)  # the same store, as a new process would open it
    await reopened.open()
    try:
        assert await reopened.recover_in_flight("stopped") == 1
        assert await reopened.pending_outbox("u1") == []
        assert (await reopened.counts())["outbox_uncertain"] == 1
    finally:
        await reopened.close()


async def test_many_rows_statuses_and_otn_log_lines_land_in_one_call_in_the_order_given(store: Backend) -> None:
    """What the sender writes after its sends, without waiting: `sent` marks (and OTN log lines), many at once."""
    await store.add_events([event("a")])
    rows = [
        OutboxItem(key=f"a#{i}", user_id="u1", message={"text": str(i)}, status=OutboxStatus.SENDING) for i in range(4)
    ]
    await store.commit_step(StepWrite(event_key="a", user=UserRecord(user_id="u1"), outbox=rows), 1)
    marks = [
        StatusMark("a#0", OutboxStatus.SENT, "m_0", 5),
        StatusMark("a#1", OutboxStatus.REFUSED, "outside_window", 6),
        StatusMark("a#2", OutboxStatus.REFUSED, "first", 7),
        StatusMark("a#2", OutboxStatus.REFUSED, "second", 8),  # a row marked twice: the later mark stands
    ]
    lines = [OtnLogLine("u1", "restock", OtnLogged.REQUEST, 5), OtnLogLine("u1", "restock", OtnLogged.RE_REQUEST, 9)]
    await store.set_outbox_statuses(marks, lines)
    counts = await store.counts()
    assert (counts["outbox_sent"], counts["outbox_refused"], counts["outbox_sending"]) == (1, 2, 1)  # a#3 untouched
    refused = [(row.key, row.detail, row.updated_ms) for row in await store.refused_rows("u1")]
    assert refused == [("a#1", "outside_window", 6), ("a#2", "second", 8)]
    assert await store.last_otn("u1", "restock", OtnLogged.REQUEST) == 5
    assert await store.last_otn("u1", "restock", OtnLogged.RE_REQUEST) == 9
    await store.set_outbox_statuses([StatusMark("a#3", OutboxStatus.SENT, "m_3", 10)])  # no log line
    await store.set_outbox_statuses([], [])  # nothing: nothing written, no error
    assert (await store.counts())["outbox_sent"] == 2
    assert await store.count_otn_log("u1", "restock", OtnLogged.REQUEST, 0) == 1


async def test_users_with_pending_work(store: Backend) -> None:
    await store.add_events([event("a", "u1"), event("b", "u2")])
    await store.commit_step(
        StepWrite(
            event_key="b",
            user=UserRecord(user_id="u2"),
            outbox=[OutboxItem(key="b#0", user_id="u2", message={"text": "x"})],
        ),
        1,
    )
    assert sorted(await store.users_with_pending_work()) == ["u1", "u2"]


async def test_mark_unreachable(store: Backend) -> None:
    await store.add_events([event("a")])
    await store.commit_step(StepWrite(event_key="a", user=UserRecord(user_id="u1"), outbox=[]), 1)
    await store.mark_unreachable("u1")
    user = await store.load_user("u1")
    assert user is not None and user.unreachable


async def test_the_thread_owner_is_kept_on_the_user_and_listed_while_a_person_has_it(store: Backend) -> None:
    """The Handover Protocol: a pass Meta accepted moves only the owner fields; the idle timeout lists those users."""
    await store.add_events([event("a"), event("b", "u2")])
    await store.commit_step(StepWrite(event_key="a", user=UserRecord(user_id="u1", state="help", tags={"vip"})), 1)
    await store.commit_step(StepWrite(event_key="b", user=UserRecord(user_id="u2")), 1)
    assert await store.users_with_human(10) == []
    await store.set_thread_owner("u1", "263902037430900", 5_000, "help")
    user = await store.load_user("u1")
    assert user is not None and user.with_human
    assert (user.thread_owner, user.handed_over_ms, user.handover_state) == ("263902037430900", 5_000, "help")
    assert (user.state, user.tags) == ("help", {"vip"})  # nothing else moved
    assert [u.user_id for u in await store.users_with_human(10)] == ["u1"]
    user.thread_owner, user.agent_replied_ms = "", 6_000  # control came back, in a step's own write
    await store.add_events([event("c")])
    await store.commit_step(StepWrite(event_key="c", user=user), 2)
    assert await store.users_with_human(10) == []
    back = await store.load_user("u1")
    assert back is not None and (back.with_human, back.agent_replied_ms) == (False, 6_000)


def token(name: str, user: str = "u1", topic: str = "restock", received: int = 100, expires: int = 10_000) -> Token:
    return Token(
        token=name,
        user_id=user,
        topic=topic,
        payload=f"otn:{topic}:s:x",
        received_ms=received,
        expires_ms=expires,
        source_state="sold_out",
    )


async def test_tokens_arrive_with_the_step_and_are_counted_until_they_expire(store: Backend) -> None:
    await store.add_events([event("a")])
    await store.commit_step(
        StepWrite(
            event_key="a",
            user=UserRecord(user_id="u1"),
            tokens=[token("t1"), token("t2", received=200)],
            otn_log=[("restock", "optin")],
        ),
        300,
    )
    assert await store.count_tokens("u1", "restock", 5_000) == 2
    assert await store.count_tokens("u1", "restock", 10_000) == 0  # expired
    assert [t.token for t in await store.tokens("u1")] == ["t1", "t2"]
    assert await store.count_otn_log("u1", "restock", "optin", 0) == 1
    assert await store.last_otn("u1", "restock", "optin") == 300


def request(key: str, status: str, topic: str = "restock") -> OutboxItem:
    return OutboxItem(
        key=key, user_id="u1", message={"text": key}, meta=OutboxMeta(kind="otn_request", topic=topic), status=status
    )


async def test_request_counts_come_from_the_outbox_from_the_commit_that_queued_them(store: Backend) -> None:
    await store.add_events([event("a"), event("b", ts=2)])
    rows = [request("a#0", "sending"), request("a#1", "refused"), request("a#2", "pending", "promo")]
    rows.append(OutboxItem(key="a#3", user_id="u1", message={"text": "hi"}, meta=OutboxMeta(kind="message")))
    await store.commit_step(
        StepWrite(event_key="a", user=UserRecord(user_id="u1"), outbox=rows, tokens=[token("t1")]), 100
    )
    assert await store.request_counts("u1", "restock", 0, 5_000) == (1, 1)  # refused rows never count
    assert await store.request_counts("u1", "restock", 101, 5_000) == (1, 0)  # before the period
    await store.set_outbox_status("a#0", "sent", "", 150)
    assert await store.request_counts("u1", "restock", 0, 20_000) == (0, 1)  # the token expired; still asked
    await store.commit_step(
        StepWrite(event_key="b", user=UserRecord(user_id="u1"), otn_log=[("restock", "optin")]), 200
    )
    assert await store.request_counts("u1", "restock", 0, 5_000) == (1, 0)  # answered: not nagging any more


async def test_leases_are_exclusive_until_they_expire(store: Backend) -> None:
    assert await store.acquire_lease("u1", "A", 1_000, 500)
    assert not await store.acquire_lease("u1", "B", 1_200, 500)  # A holds it
    assert await store.acquire_lease("u1", "A", 1_300, 500)  # A renews
    assert not await store.acquire_lease("u1", "B", 1_700, 500)
    assert await store.acquire_lease("u1", "B", 1_801, 500)  # A's lease ran out: B takes over
    await store.release_lease("u1", "A")  # a stale release does not free B's lease
    assert not await store.acquire_lease("u1", "C", 1_900, 500)
    await store.release_lease("u1", "B")
    assert await store.acquire_lease("u1", "C", 1_900, 500)


async def test_users_needing_work_skips_users_with_a_live_lease(store: Backend) -> None:
    await store.add_events([event("a", "u1"), event("b", "u2")])
    assert await store.acquire_lease("u1", "A", 1_000, 500)
    assert await store.users_needing_work(1_200, 10) == ["u2"]
    assert sorted(await store.users_needing_work(2_000, 10)) == ["u1", "u2"]
    assert len(await store.users_needing_work(2_000, 1)) == 1  # the limit


async def test_armed_requests_and_disarm(store: Backend) -> None:
    await store.arm("u1", "restock", "sold_out", 10)
    await store.arm("u1", "restock", "other", 20)  # already armed: kept as first armed
    assert await store.armed("u1") == [("restock", "sold_out")]
    await store.add_events([event("a")])
    await store.commit_step(StepWrite(event_key="a", user=UserRecord(user_id="u1"), disarm=["restock"]), 30)
    assert await store.armed("u1") == []


async def test_campaign_claims_each_token_once_and_settles_outcomes(store: Backend) -> None:
    await store.add_events([event("a")])
    await store.commit_step(
        StepWrite(event_key="a", user=UserRecord(user_id="u1"), tokens=[token("t1"), token("t2", received=200)]), 1
    )
    campaign = await store.open_campaign(
        Campaign(id="c1", topic="restock", segment="", vars={"product": "x"}, created_ms=1)
    )
    assert (
        await store.open_campaign(Campaign(id="c1", topic="other", segment="", vars={}, created_ms=2))
    ).topic == "restock"  # insert-if-absent
    assert await store.token_holders("restock", "", 50, "", 10) == ["u1"]
    await store.add_campaign_items(campaign.id, ["u1"], {"u9": "segment"}, 50)
    assert await store.pending_items(campaign.id, "", 10) == ["u1"]
    hi = [("u1", {"text": "hi"})]
    (delivery,) = await store.begin_deliveries(campaign.id, "restock", hi, 60, 1_000, no_token_reason="none")
    assert delivery.token.token == "t1"  # the oldest
    assert await store.begin_deliveries(campaign.id, "restock", hi, 61, 1_000, no_token_reason="none") == []
    expired, later = await store.uncertain_deliveries(campaign.id, 500)
    assert (expired, later) == ([], 1_060)
    expired, later = await store.uncertain_deliveries(campaign.id, 2_000)
    assert [d.token.token for d in expired] == ["t1"] and expired[0].message == {"text": "hi"}
    await store.finish_deliveries(
        [
            DeliveryResult(
                delivery=delivery,
                item_status=ItemStatus.DELIVERED,
                reason="",
                token_status=TokenStatus.SPENT,
                arm=("restock", "sold_out"),
                logged="delivery",
            )
        ],
        70,
    )
    assert await store.count_tokens("u1", "restock", 80) == 1
    assert await store.armed("u1") == [("restock", "sold_out")]
    assert sorted(await store.campaign_item_counts(campaign.id)) == [("delivered", "", 1), ("skipped", "segment", 1)]
    stats = await store.otn_stats(80, 10_000)
    assert stats["restock"]["delivery"] == 1 and stats["restock"]["tokens_held"] == 1


async def test_tokens_keep_their_request_and_campaigns_claim_only_the_requests_they_are_about(store: Backend) -> None:
    sauvignon, rioja = {"product": "Sauvignon 2024"}, {"product": "Rioja 2015"}
    tokens = [
        Token(
            token="s1",
            user_id="u1",
            topic="restock",
            payload="p",
            received_ms=100,
            expires_ms=10_000,
            source_state="sold_out",
            request_vars=sauvignon,
            title="Sauvignon?",
        ),
        Token(
            token="r1",
            user_id="u1",
            topic="restock",
            payload="p",
            received_ms=50,
            expires_ms=10_000,
            source_state="red_sold_out",
            request_vars=rioja,
            title="Rioja?",
        ),
        Token(
            token="s2",
            user_id="u2",
            topic="restock",
            payload="p",
            received_ms=100,
            expires_ms=10_000,
            source_state="sold_out",
            request_vars=sauvignon,
        ),
        Token(
            token="n3",
            user_id="u3",
            topic="restock",
            payload="p",
            received_ms=100,
            expires_ms=10_000,
            source_state="sold_out",
        ),  # a request made without variables
    ]
    await store.add_events([event("a")])
    await store.commit_step(StepWrite(event_key="a", user=UserRecord(user_id="u1"), tokens=tokens), 1)
    (kept,) = [t for t in await store.tokens("u1") if t.token == "s1"]
    assert (kept.request_vars, kept.title) == (sauvignon, "Sauvignon?")
    s_key, r_key = tokens[0].request_key, tokens[1].request_key
    assert await store.held_requests("restock", 200) == {s_key: 2, r_key: 1, "": 1}
    assert await store.held_requests("restock", 20_000) == {}  # all expired
    assert await store.token_holders("restock", s_key, 200, "", 10) == ["u1", "u2"]
    assert await store.token_holders("restock", s_key, 200, "u1", 10) == ["u2"]
    assert await store.token_holders("restock", "", 200, "", 10) == ["u3"]
    assert await store.count_tokens("u1", "restock", 200, r_key) == 1
    assert await store.count_tokens("u1", "restock", 200) == 2
    campaign = await store.open_campaign(Campaign(id="c1", topic="restock", segment="", vars=sauvignon, created_ms=1))
    await store.add_campaign_items(campaign.id, ["u1", "u3"], {}, 200)
    claimed = await store.begin_deliveries(
        campaign.id,
        "restock",
        [("u1", {"text": "hi"}), ("u3", {"text": "hi"})],
        300,
        request_keys=(s_key, ""),
        no_token_reason="none",
    )
    assert [d.token.token for d in claimed] == ["s1", "n3"]  # not the older Rioja token
    stats = await store.otn_stats(300, 400)
    assert stats["restock"]["token_holders"] == 2 and stats["restock"]["tokens_held"] == 2


async def test_unsubscribing_revokes_tokens_and_disarms_in_the_step_and_subscribing_undoes_the_mark(
    store: Backend,
) -> None:
    await store.add_events([event("a"), event("b", ts=2)])
    await store.commit_step(
        StepWrite(event_key="a", user=UserRecord(user_id="u1"), tokens=[token("t1"), token("t2", received=200)]), 1
    )
    await store.arm("u1", "restock", "sold_out", 2)
    assert await store.unsubscribed_users() == 0
    await store.commit_step(
        StepWrite(event_key="b", user=UserRecord(user_id="u1", unsubscribed_ms=3), consent=False), 3
    )
    assert {t.status for t in await store.tokens("u1")} == {"revoked"}
    assert await store.armed("u1") == []
    assert await store.unsubscribed_users() == 1
    user = await store.load_user("u1")
    assert user is not None and user.unsubscribed_ms == 3
    await store.add_events([event("c", ts=3)])
    await store.commit_step(StepWrite(event_key="c", user=UserRecord(user_id="u1"), consent=True), 4)
    assert await store.unsubscribed_users() == 0


async def test_an_old_sqlite_file_gains_the_request_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE tokens (token TEXT PRIMARY KEY, user_id TEXT NOT NULL, topic TEXT NOT NULL,"
        " payload TEXT NOT NULL, source_state TEXT NOT NULL DEFAULT '', received_ms INTEGER NOT NULL,"
        " expires_ms INTEGER NOT NULL,"
        " status TEXT NOT NULL, claimed_by TEXT, used_ms INTEGER);"
        "CREATE INDEX tokens_by_topic ON tokens (topic, status, user_id, expires_ms);"
        "INSERT INTO tokens VALUES ('t1', 'u1', 'restock', 'p', 's', 1, 10000, 'valid', NULL, NULL);"
    )
    db.close()
    store = SqliteStore(path)
    await store.open()
    try:
        assert await store.held_requests("restock", 5) == {"": 1}
        (token,) = await store.tokens("u1")
        assert (token.request_vars, token.title) == ({}, "")
    finally:
        await store.close()


async def test_a_user_without_a_valid_token_is_skipped_with_the_reason_given(store: Backend) -> None:
    await store.add_events([event("a")])
    await store.commit_step(
        StepWrite(event_key="a", user=UserRecord(user_id="u1"), tokens=[token("t1", expires=100)]), 1
    )
    await store.open_campaign(Campaign(id="c1", topic="restock", segment="", vars={}, created_ms=1))
    await store.add_campaign_items("c1", ["u1"], {}, 50)
    hi = [("u1", {"text": "hi"})]
    assert await store.begin_deliveries("c1", "restock", hi, 200, 1_000, no_token_reason="gone") == []
    assert await store.campaign_item_counts("c1") == [("skipped", "gone", 1)]


async def test_campaigns_by_prefix_oldest_first(store: Backend) -> None:
    await store.open_campaign(Campaign(id="news-abc.2", topic="news", segment="", vars={}, created_ms=2))
    await store.open_campaign(Campaign(id="news-abc", topic="news", segment="", vars={}, created_ms=1))
    await store.open_campaign(Campaign(id="news-abcd", topic="news", segment="", vars={}, created_ms=3))
    await store.open_campaign(Campaign(id="news-ab%", topic="news", segment="", vars={}, created_ms=4))
    await store.open_campaign(Campaign(id="other", topic="news", segment="", vars={}, created_ms=5))
    assert [c.id for c in await store.campaigns_by_prefix("news-abc")] == ["news-abc", "news-abc.2", "news-abcd"]
    assert [c.id for c in await store.campaigns_by_prefix("news-ab%")] == ["news-ab%"]  # no wildcard


async def test_inspect_and_forget_a_user(store: Backend) -> None:
    await store.add_events([event("a")])
    refused = OutboxItem(
        key="a#0",
        user_id="u1",
        message={"text": "no"},
        meta=OutboxMeta(kind="message"),
        status=OutboxStatus.REFUSED,
        detail="outside_window",
    )
    await store.commit_step(
        StepWrite(event_key="a", user=UserRecord(user_id="u1", tags={"x"}), outbox=[refused], tokens=[token("t1")]), 5
    )
    (row,) = await store.refused_rows("u1")
    assert (row.key, row.message, row.meta, row.detail, row.updated_ms) == (
        "a#0",
        {"text": "no"},
        OutboxMeta(kind="message"),
        "outside_window",
        5,
    )
    assert await store.refused_rows() == [row] and await store.refused_rows("u2") == []
    view = await inspect_user(store, "u1")
    assert view.record is not None and view.record.tags == {"x"}
    assert [t.token for t in view.tokens] == ["t1"]
    assert [(r["reason"], r["text"]) for r in view.refused] == [("outside_window", "no")]
    await store.forget_user("u1")
    view = await inspect_user(store, "u1")
    assert (view.record, view.tokens, view.refused) == (None, [], [])
    assert await store.pending_events("u1") == []


async def test_handled_events_are_pruned_after_the_retention_pending_ones_never(store: Backend) -> None:
    await store.add_events([event("old", ts=1), event("pending", ts=2)])
    await store.commit_step(StepWrite(event_key="old", user=UserRecord(user_id="u1")), 1_000)
    week = 7 * 86_400_000
    assert await store.prune_inbox(1_000 + week - 1) == 0
    if isinstance(store, MongoStore):  # the server's TTL index does it, on its own schedule: check the index
        ttl = {i["name"]: i async for i in await store.db.inbox.list_indexes()}["handled_ttl"]
        assert (dict(ttl["key"]), ttl["expireAfterSeconds"]) == ({"handled_at": 1}, 7 * 86_400)
        dates = {d["_id"]: d.get("handled_at") async for d in store.db.inbox.find()}
        assert dates["pending"] is None and dates["old"].timestamp() == 1.0  # only handled events expire
        return
    assert await store.prune_inbox(1_000 + week + 1) == 1
    assert [e.key for e in await store.pending_events("u1")] == ["pending"]
    assert await store.add_events([event("old")]) != []  # forgotten: only within the retention is a retry a no-op


async def test_dead_letters_are_kept_once_newest_first_and_counted(store: Backend) -> None:
    first = RejectedEvent(
        key="k1",
        where="entry[0].messaging[1]",
        kind="message",
        reason="message.mid is missing",
        body='{"message":{}}',
        received_ms=10,
    )
    second = RejectedEvent(
        key="k2",
        where="entry[0].messaging[0]",
        kind="postback",
        reason="timestamp out of range",
        body='{"x":"\\ud83d"}',
        received_ms=20,
    )
    assert await store.add_rejected([first, second]) == 2
    assert await store.add_rejected([first]) == 0  # Meta's retry of the same body adds nothing
    assert await store.rejected_events() == [second, first]
    assert await store.rejected_events(limit=1) == [second]
    assert (await store.counts())["rejected"] == 2


async def test_every_refusal_and_item_reason_round_trips_as_its_plain_word(store: Backend) -> None:
    """A refused row's detail and a skipped item's reason are stored as the enum's plain value and read back as
    one that `Refusal(...)` / `ItemReason(...)` parse to the same member (rows written before the enums too)."""
    reasons = [*Refusal, *ItemReason]

    def parsed(word: str) -> Refusal | ItemReason:
        return Refusal(word) if word in set(Refusal) else ItemReason(word)

    await store.add_events([event("a")])
    rows = [
        OutboxItem(key=f"a#{i}", user_id="u1", message={"text": r}, status=OutboxStatus.REFUSED, detail=r)
        for i, r in enumerate(reasons)
    ]
    await store.commit_step(StepWrite(event_key="a", user=UserRecord(user_id="u1"), outbox=rows), 5)
    details = [row.detail for row in await store.refused_rows("u1")]
    assert details == [r.value for r in reasons] and [parsed(d) for d in details] == reasons
    await store.open_campaign(Campaign(id="c1", topic="restock", segment="", vars={}, created_ms=1))
    await store.add_campaign_items("c1", [], {f"u{i}": r for i, r in enumerate(reasons)}, 50)
    counts = await store.campaign_item_counts("c1")
    assert sorted(counts) == sorted((ItemStatus.SKIPPED.value, r.value, 1) for r in reasons)
    assert {parsed(reason) for _, reason, _ in counts} == set(reasons)


async def test_every_otn_log_entry_round_trips_and_the_loop_figures_count_it(store: Backend) -> None:
    """The OTN log keeps `OtnLogged`'s plain words (a refused request with its reason); the loop figures read them."""
    for what in OtnLogged:
        await store.log_otn("u1", "restock", what, 10)
    await store.log_otn("u1", "restock", refused_request(Refusal.REQUEST_LIMIT), 10)
    counts = (await store.otn_stats(20, 30))["restock"]
    assert {what: counts.get(what) for what in OtnLogged} == {what: 1 for what in OtnLogged}
    assert counts["request_refused:request_limit"] == 1
    figures = (await loop_stats(store, 20, 0))["restock"]
    assert (figures["requests"], figures["optins"], figures["deliveries"], figures["re_requests"]) == (2, 1, 1, 1)
