"""SQLite's WAL checkpoints run on their own thread: a checkpoint syncs the WAL and the database file to disk, and run
by the writer at commit (SQLite's autocheckpoint) it held up every write queued behind it, and so every webhook's 200
(100-350 ms when the disk stalled, measured with bench/webhook.py). The writer leaves checkpoints to the
checkpointer, which keeps the WAL short."""

from __future__ import annotations

import asyncio
from pathlib import Path

from engine.store import UserRecord
from engine.store.sqlite import WRITER_CHECKPOINT_PAGES, SqliteStore

PAGE = 4096  # SQLite's default page size


async def test_the_writer_leaves_checkpoints_to_the_checkpointer(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "c.sqlite3")
    await store.open()
    try:
        assert store._writer is not None
        pages = await store._writer.submit(lambda db: db.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
        assert pages == WRITER_CHECKPOINT_PAGES > 1000  # SQLite's default checkpoints at the commit past 1000 pages
    finally:
        await store.close()


async def test_the_wal_is_checkpointed_soon_after_commits(tmp_path: Path) -> None:
    path = tmp_path / "w.sqlite3"
    store = SqliteStore(path)
    await store.open()
    try:
        for n in range(9):  # about 100 pages each: 900 in all, under the 1000 of SQLite's own autocheckpoint
            await store.put_user(UserRecord(user_id=f"u{n}", variables={"blob": "x" * (100 * PAGE)}))
            await asyncio.sleep(0.15)  # past the checkpointer's pause: it checkpoints, the next commit restarts the WAL
        wal = path.with_name(path.name + "-wal").stat().st_size
        assert wal < 500 * PAGE, f"the WAL holds {wal // PAGE} pages: nothing checkpointed it"
        assert len(await store.load_users([f"u{n}" for n in range(9)])) == 9
    finally:
        await store.close()
    reopened = SqliteStore(path)  # what was checkpointed is all there
    await reopened.open()
    try:
        users = await reopened.load_users([f"u{n}" for n in range(9)])
        assert sorted(users) == [f"u{n}" for n in range(9)]
        assert all(len(u.variables["blob"]) == 100 * PAGE for u in users.values())
    finally:
        await reopened.close()
