"""The SQLite store's step cache (engine/store/step_cache.py): a step starts from what the store last committed or
read for the user, and never from an entry that a later change made stale: one by this store (a hand-over mark,
a forget, a duplicate step), or one committed by another process on the same file, seen at the user's next event.
Through the real path: the harness's server on loopback over a real SQLite file, and a second process or
connection writing to that file."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.store import StepWrite, StoredEvent, UserRecord
from engine.store.sqlite import SqliteStore
from engine.store.step_cache import StepCache
from engine.testing.harness import Bot
from engine.web.keys import STORE
from tests.conftest import example_bot

ROOT = Path(__file__).resolve().parents[2]


def store_path(bot: Bot) -> str:
    return bot.settings.store_url.removeprefix("sqlite:///")


async def in_another_process(path: str, call: str) -> None:
    """`call` (a SqliteStore method call, e.g. `arm(...)`) run by a separate Python process on the store's file."""
    script = (
        "import asyncio, sys\n"
        "from engine.store.sqlite import SqliteStore\n"
        "async def main():\n"
        "    store = SqliteStore(sys.argv[1])\n"
        "    await store.open()\n"
        f"    await store.{call}\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
    )
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", script, path, cwd=ROOT)
    assert await asyncio.wait_for(process.wait(), 60) == 0


def counting_reads(store: SqliteStore) -> list[int]:
    """The number of reads the store queues to its reader thread, kept up to date in a one-item list."""
    reads = [0]
    read = store._read

    async def counted(fn: Callable[[Any], Any]) -> Any:
        reads[0] += 1
        return await read(fn)

    store._read = counted  # type: ignore[method-assign]
    return reads


async def test_a_re_request_another_process_arms_goes_at_the_users_next_event() -> None:
    async with example_bot() as bot:
        bob = bot.user("bob", first_name="Bob")
        await bob.says("hi")
        await bob.says("hi")  # bob's record and armed requests are now what the store last committed
        store = bot.app[STORE]
        assert isinstance(store, SqliteStore) and store.step_cache.get("bob") is not None
        await in_another_process(store_path(bot), f"arm('bob', 'restock', 'sold_out', {bot.clock.now_ms()})")
        replies = await bob.says("menu")
        assert replies[0].otn_topic == "restock"  # the armed request, before the flow's own reply
        assert await store.armed("bob") == []  # used up by that step


async def test_an_unreachable_mark_another_connection_writes_is_seen_at_the_next_event(tmp_path: Path) -> None:
    async with example_bot() as bot:
        bob = bot.user("bob", first_name="Bob")
        await bob.says("hi")
        sent = len(bot.fake.messages_to("bob"))
        other = SqliteStore(store_path(bot))  # another connection: what another process's writes look like
        await other.open()
        try:
            await other.mark_unreachable("bob")
        finally:
            await other.close()
        assert await bob.says("menu") == []  # the step knew: nothing goes to an unreachable user
        assert len(bot.fake.messages_to("bob")) == sent
        assert [r["reason"] for r in bob.refusals][-1:] == ["user_unreachable"]


async def test_a_forgotten_user_starts_afresh_at_their_next_event() -> None:
    async with example_bot() as bot:
        alice = bot.user("alice", first_name="Alice")
        await alice.says("hi")
        await alice.taps("White")  # tagged a white lover
        assert "likes_white" in alice.tags
        store = bot.app[STORE]
        await store.forget_user("alice")
        await alice.says("hi")
        assert "likes_white" not in alice.tags  # a new user: nothing of the forgotten one came back
        assert alice.state == "welcome"


async def test_a_forget_voids_a_read_in_flight_and_a_change_voids_an_entry(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite3")
    await store.open()
    try:
        await store.put_user(UserRecord(user_id="u", state="old"))
        cache = store.step_cache
        ticket = cache.reading("u")  # a read was queued...
        cache.drop("u")  # ...then a write changed the user before it came back
        user, _ = cache.read("u", ticket, '{"state":"old"}', [])
        assert user is not None and user.state == "old"  # the caller gets what it read...
        assert cache.get("u") is None  # ...but it is not kept
        ticket = cache.reading("u")
        cache.clear()  # another connection committed
        cache.read("u", ticket, '{"state":"old"}', [])
        assert cache.get("u") is None
        loaded, _ = await store.load_for_step("u")
        assert loaded is not None and cache.get("u") is not None
        await store.put_user(UserRecord(user_id="u", state="new"))
        assert cache.get("u") is None  # dropped by the write that changed it
        again, _ = await store.load_for_step("u")
        assert again is not None and again.state == "new"
    finally:
        await store.close()


def event(key: str, user_id: str = "u") -> StoredEvent:
    return StoredEvent(key=key, user_id=user_id, page_id="p", timestamp=1, kind="message", body="{}", received_ms=0)


async def test_a_duplicate_step_does_not_poison_the_cache(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "d.sqlite3")
    await store.open()
    try:
        reads = counting_reads(store)
        await store.add_events([event("e1")])
        user, armed = await store.load_for_step("u")
        assert (user, armed, reads[0]) == (None, [], 1)
        first = UserRecord(user_id="u", state="first", variables={"n": 1})
        assert await store.commit_step(StepWrite(event_key="e1", user=first), 10)
        kept, _ = await store.load_for_step("u")
        assert kept == first and reads[0] == 1  # what the store committed, not read back
        kept.variables["n"] = 2
        assert (await store.load_for_step("u"))[0] == first  # each caller gets its own copy
        replay = UserRecord(user_id="u", state="replayed")
        assert not await store.commit_step(StepWrite(event_key="e1", user=replay), 11)  # handled already
        reloaded, _ = await store.load_for_step("u")
        assert reloaded == first and reads[0] == 2  # read again, and what the store holds
    finally:
        await store.close()


async def test_a_step_that_disarms_or_unsubscribes_leaves_the_right_armed_requests(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "a.sqlite3")
    await store.open()
    try:
        reads = counting_reads(store)
        await store.arm("u", "news", "s1", 1)
        await store.arm("u", "restock", "s2", 2)
        await store.add_events([event("e1"), event("e2")])
        _, armed = await store.load_for_step("u")
        assert armed == [("news", "s1"), ("restock", "s2")]
        await store.commit_step(StepWrite(event_key="e1", user=UserRecord(user_id="u"), disarm=["news"]), 10)
        assert (await store.load_for_step("u"))[1] == [("restock", "s2")] == await store.armed("u")
        await store.commit_step(StepWrite(event_key="e2", user=UserRecord(user_id="u"), consent=False), 11)
        assert (await store.load_for_step("u"))[1] == [] == await store.armed("u")
        assert reads[0] == 3  # the two `armed` checks; the loads after the commits came from the cache
        await store.arm("u", "news", "s1", 12)
        assert (await store.load_for_step("u"))[1] == [("news", "s1")]  # the arm dropped the entry: read again
    finally:
        await store.close()


async def test_the_cache_holds_at_most_its_capacity(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "b.sqlite3", step_cache=StepCache(capacity=3))
    await store.open()
    try:
        reads = counting_reads(store)
        for n in range(10):
            await store.load_for_step(f"u{n}")
        assert len(store.step_cache) == 3
        await store.load_for_step("u9")  # among the last three: kept
        assert reads[0] == 10
        await store.load_for_step("u0")  # evicted long ago: read again
        assert reads[0] == 11 and len(store.step_cache) == 3
    finally:
        await store.close()
