"""SQLite's group commit: writes queued while the writer thread is busy share one transaction; when one of them
fails, the transaction is rolled back and each write runs again alone, so only the failing one fails."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from engine.store import StepWrite, StoredEvent, Token, UserRecord
from engine.store.sqlite import SqliteStore


async def test_a_failing_write_in_a_group_fails_alone(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "g.sqlite3")
    await store.open()
    try:
        await store.add_events(
            [StoredEvent(key="e", user_id="bad", page_id="page", timestamp=1, kind="message", body="{}", received_ms=0)]
        )
        assert store._writer is not None
        gate, started = threading.Event(), threading.Event()
        busy = store._writer.submit(lambda _: started.set() or gate.wait(10))  # the writer is busy
        for _ in range(1000):  # until the writer thread runs it (then nothing else is in its batch)
            if started.is_set():
                break
            await asyncio.sleep(0.001)
        too_big = Token(
            token="t", user_id="bad", topic="topic", payload="p", received_ms=1, expires_ms=2**64
        )  # no SQLite INTEGER holds it: fails inside the write
        writes = [
            asyncio.create_task(store.put_user(UserRecord(user_id="first"))),
            asyncio.create_task(
                store.commit_step(StepWrite(event_key="e", user=UserRecord(user_id="bad"), tokens=[too_big]), 5)
            ),
            asyncio.create_task(store.put_user(UserRecord(user_id="last"))),
        ]
        for _ in range(100):  # until all three are queued behind the busy writer
            if store._writer.queued() == 3:
                break
            await asyncio.sleep(0.001)
        assert store._writer.queued() == 3  # one group: they will share a transaction
        gate.set()
        await busy
        first, failed, last = await asyncio.gather(*writes, return_exceptions=True)
        assert first is None and last is None
        assert isinstance(failed, OverflowError)
        assert (await store.load_users(["first", "bad", "last"])).keys() == {"first", "last"}
        assert [e.key for e in await store.pending_events("bad")] == ["e"]  # the failed step left nothing
    finally:
        await store.close()
