"""The SQLite store on a real file: insert-if-absent inbox, atomic commit, ordering, crash recovery."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.store import OutboxItem, StepWrite, StoredEvent, UserRecord
from engine.store.sqlite import SqliteStore


def event(key: str, user: str = "u1", ts: int = 1) -> StoredEvent:
    return StoredEvent(key, user, "page", ts, "message", json.dumps({"message": {"mid": key}}), 0)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "s.sqlite3")
    await s.open()
    yield s
    await s.close()


async def test_file_is_in_wal_mode(store: SqliteStore) -> None:
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_add_events_is_insert_if_absent(store: SqliteStore) -> None:
    assert [e.key for e in await store.add_events([event("a"), event("b")])] == ["a", "b"]
    assert [e.key for e in await store.add_events([event("b"), event("c"), event("c")])] == ["c"]


async def test_pending_events_come_oldest_first(store: SqliteStore) -> None:
    await store.add_events([event("late", ts=30), event("early", ts=10), event("mid", ts=20), event("x", "u2", 5)])
    assert [e.key for e in await store.pending_events("u1")] == ["early", "mid", "late"]


async def test_commit_step_is_atomic_and_once_only(store: SqliteStore) -> None:
    await store.add_events([event("a")])
    user = UserRecord("u1", state="welcome", tags={"t"})
    outbox = [OutboxItem("a#0", "u1", {"text": "one"}), OutboxItem("a#1", "u1", {"text": "two"})]
    assert await store.commit_step(StepWrite("a", user, outbox), 100)
    user.state = "elsewhere"
    assert not await store.commit_step(StepWrite("a", user, outbox), 200)  # already handled: nothing written
    loaded = await store.load_user("u1")
    assert loaded is not None and (loaded.state, loaded.tags) == ("welcome", {"t"})
    assert [o.message["text"] for o in await store.pending_outbox("u1")] == ["one", "two"]
    assert await store.pending_events("u1") == []


async def test_a_failing_commit_leaves_nothing_half_done(store: SqliteStore) -> None:
    await store.add_events([event("a")])
    bad = [OutboxItem("a#0", "u1", {"text": "ok"}), OutboxItem("a#1", "u1", {"bad": object()})]
    with pytest.raises(TypeError):
        await store.commit_step(StepWrite("a", UserRecord("u1", state="s"), bad), 1)
    assert await store.load_user("u1") is None
    assert [e.key for e in await store.pending_events("u1")] == ["a"]


async def test_in_flight_sends_become_uncertain_at_restart(store: SqliteStore, tmp_path: Path) -> None:
    await store.add_events([event("a")])
    await store.commit_step(StepWrite("a", UserRecord("u1"), [OutboxItem("a#0", "u1", {"text": "x"})]), 1)
    await store.set_outbox_status("a#0", "sending", "", 2)
    await store.close()
    reopened = SqliteStore(tmp_path / "s.sqlite3")
    await reopened.open()
    try:
        assert await reopened.recover_in_flight() == 1
        assert await reopened.pending_outbox("u1") == []
        assert (await reopened.counts())["outbox_uncertain"] == 1
    finally:
        await reopened.close()
    await store.open()


async def test_users_with_pending_work(store: SqliteStore) -> None:
    await store.add_events([event("a", "u1"), event("b", "u2")])
    await store.commit_step(StepWrite("b", UserRecord("u2"), [OutboxItem("b#0", "u2", {"text": "x"})]), 1)
    assert sorted(await store.users_with_pending_work()) == ["u1", "u2"]


async def test_mark_unreachable(store: SqliteStore) -> None:
    await store.add_events([event("a")])
    await store.commit_step(StepWrite("a", UserRecord("u1"), []), 1)
    await store.mark_unreachable("u1")
    user = await store.load_user("u1")
    assert user is not None and user.unreachable
