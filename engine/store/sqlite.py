"""The embedded default store: one SQLite file in WAL mode.

Writes run on one dedicated thread that owns the writing connection (SQLite serialises writers anyway), reads on
another, so the event loop never blocks on disk. `synchronous=NORMAL` in WAL mode survives a process crash
(SIGKILL) without losing a committed transaction; only a power loss can drop the last commits. Each public write
is atomic on its own.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from .base import OutboxItem, StoredEvent, UserRecord

T = TypeVar("T")
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS inbox (
    key TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    page_id TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    handled_ms INTEGER,
    error TEXT
);
CREATE INDEX IF NOT EXISTS inbox_pending ON inbox (user_id, timestamp) WHERE handled_ms IS NULL;
CREATE TABLE IF NOT EXISTS users (user_id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    message TEXT NOT NULL,
    meta TEXT NOT NULL,
    status TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (user_id, seq) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS outbox_sending ON outbox (status) WHERE status = 'sending';
"""


class SqliteStore:
    """Writes go through group commit: every write queued while the writer thread is busy joins the next
    transaction (each in its own SAVEPOINT, so one failing write does not undo the others), and each caller's
    await returns only after that transaction's COMMIT. Under load this turns many small commits into few large
    ones. Reads use a second connection on a second thread (WAL lets readers run beside the writer) and see every
    write whose await has returned."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._writer: ThreadPoolExecutor | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._write_db: sqlite3.Connection | None = None
        self._read_db: sqlite3.Connection | None = None
        self._queue: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._queue_lock = threading.Lock()
        self._flush_scheduled = False

    # -- plumbing ------------------------------------------------------------------------------------------
    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._reader is not None and self._read_db is not None, "store is not open"
        return await asyncio.get_running_loop().run_in_executor(self._reader, fn, self._read_db)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._writer is not None, "store is not open"
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._queue_lock:
            self._queue.append((fn, future))
            schedule = not self._flush_scheduled
            self._flush_scheduled = True
        if schedule:
            loop.run_in_executor(self._writer, self._flush, loop)
        return await future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the writer thread: run every queued write in one transaction, then settle their futures."""
        with self._queue_lock:
            batch, self._queue = self._queue, []
            self._flush_scheduled = False
        db = self._write_db
        assert db is not None
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            for fn, future in batch:
                db.execute("SAVEPOINT one_write")
                try:
                    outcomes.append((future, fn(db), None))
                    db.execute("RELEASE one_write")
                except Exception as err:
                    db.execute("ROLLBACK TO one_write")
                    db.execute("RELEASE one_write")
                    outcomes.append((future, None, err))
            db.execute("COMMIT")
        except Exception as err:  # the transaction itself failed: nothing of it is durable
            if db.in_transaction:
                db.execute("ROLLBACK")
            outcomes = [(future, None, err) for _, future in batch]
        loop.call_soon_threadsafe(_settle, outcomes)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=30000")
        return db

    def _create_schema(self) -> sqlite3.Connection:
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")
        for statement in SCHEMA.split(";"):  # executescript would COMMIT our transaction early
            if statement.strip():
                db.execute(statement)
        db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        db.execute("COMMIT")
        return db

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="otnflow-sqlite-write")
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="otnflow-sqlite-read")
        self._write_db = await loop.run_in_executor(self._writer, self._create_schema)
        self._read_db = await loop.run_in_executor(self._reader, self._connect)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for executor, db in ((self._writer, self._write_db), (self._reader, self._read_db)):
            if executor is not None and db is not None:
                await loop.run_in_executor(executor, db.close)
                executor.shutdown(wait=True)
        self._writer = self._reader = None
        self._write_db = self._read_db = None

    # -- inbox ---------------------------------------------------------------------------------------------
    async def add_events(self, events: Sequence[StoredEvent]) -> list[StoredEvent]:
        def work(db: sqlite3.Connection) -> list[StoredEvent]:
            new = []
            for e in events:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO inbox (key, user_id, page_id, timestamp, kind, body, received_ms) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (e.key, e.user_id, e.page_id, e.timestamp, e.kind, e.body, e.received_ms),
                )
                if cursor.rowcount:
                    new.append(e)
            return new

        return await self._write(work)

    async def pending_events(self, user_id: str, limit: int = 100) -> list[StoredEvent]:
        def work(db: sqlite3.Connection) -> list[StoredEvent]:
            rows = db.execute(
                "SELECT key, user_id, page_id, timestamp, kind, body, received_ms FROM inbox "
                "WHERE user_id = ? AND handled_ms IS NULL ORDER BY timestamp, rowid LIMIT ?",
                (user_id, limit),
            ).fetchall()
            return [StoredEvent(*row) for row in rows]

        return await self._read(work)

    async def fail_event(self, key: str, error: str, now_ms: int) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute("UPDATE inbox SET handled_ms = ?, error = ? WHERE key = ?", (now_ms, error, key))

        await self._write(work)

    async def users_with_pending_work(self) -> list[str]:
        def work(db: sqlite3.Connection) -> list[str]:
            rows = db.execute(
                "SELECT user_id FROM inbox WHERE handled_ms IS NULL "
                "UNION SELECT user_id FROM outbox WHERE status IN ('pending', 'sending')"
            ).fetchall()
            return [row[0] for row in rows]

        return await self._read(work)

    # -- users ---------------------------------------------------------------------------------------------
    async def load_user(self, user_id: str) -> UserRecord | None:
        def work(db: sqlite3.Connection) -> UserRecord | None:
            row = db.execute("SELECT data FROM users WHERE user_id = ?", (user_id,)).fetchone()
            return UserRecord.from_data(user_id, json.loads(row[0])) if row else None

        return await self._read(work)

    async def commit_step(self, event_key: str, user: UserRecord, outbox: Sequence[OutboxItem], now_ms: int) -> bool:
        data = json.dumps(user.to_data(), separators=(",", ":"))
        rows = [
            (
                o.key,
                o.user_id,
                json.dumps(o.message, separators=(",", ":")),
                json.dumps(o.meta),
                o.status,
                o.detail,
                now_ms,
                now_ms,
            )
            for o in outbox
        ]

        def work(db: sqlite3.Connection) -> bool:
            marked = db.execute(
                "UPDATE inbox SET handled_ms = ? WHERE key = ? AND handled_ms IS NULL", (now_ms, event_key)
            ).rowcount
            if not marked:
                return False
            db.execute(
                "INSERT INTO users (user_id, data) VALUES (?, ?) ON CONFLICT (user_id) DO UPDATE SET data = ?",
                (user.user_id, data, data),
            )
            db.executemany(
                "INSERT OR IGNORE INTO outbox (key, user_id, message, meta, status, detail, created_ms, "
                "updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            return True

        return await self._write(work)

    async def mark_unreachable(self, user_id: str) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE users SET data = json_set(data, '$.unreachable', json('true')) WHERE user_id = ?", (user_id,)
            )

        await self._write(work)

    # -- outbox --------------------------------------------------------------------------------------------
    async def pending_outbox(self, user_id: str) -> list[OutboxItem]:
        def work(db: sqlite3.Connection) -> list[OutboxItem]:
            rows = db.execute(
                "SELECT key, user_id, message, meta, status, detail, created_ms, seq FROM outbox "
                "WHERE user_id = ? AND status = 'pending' ORDER BY seq",
                (user_id,),
            ).fetchall()
            return [
                OutboxItem(key, uid, json.loads(message), json.loads(meta), status, detail, created, seq)
                for key, uid, message, meta, status, detail, created, seq in rows
            ]

        return await self._read(work)

    async def set_outbox_status(self, key: str, status: str, detail: str, now_ms: int) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE outbox SET status = ?, detail = ?, updated_ms = ? WHERE key = ?", (status, detail, now_ms, key)
            )

        await self._write(work)

    async def recover_in_flight(self) -> int:
        def work(db: sqlite3.Connection) -> int:
            return db.execute(
                "UPDATE outbox SET status = 'uncertain', detail = 'process stopped while sending' "
                "WHERE status = 'sending'"
            ).rowcount

        return await self._write(work)

    async def counts(self) -> dict[str, int]:
        def work(db: sqlite3.Connection) -> dict[str, int]:
            out: dict[str, int] = {}
            out["users"] = db.execute("SELECT count(*) FROM users").fetchone()[0]
            out["inbox_pending"] = db.execute("SELECT count(*) FROM inbox WHERE handled_ms IS NULL").fetchone()[0]
            out["inbox_handled"] = db.execute("SELECT count(*) FROM inbox WHERE handled_ms IS NOT NULL").fetchone()[0]
            out["inbox_failed"] = db.execute("SELECT count(*) FROM inbox WHERE error IS NOT NULL").fetchone()[0]
            for status, n in db.execute("SELECT status, count(*) FROM outbox GROUP BY status"):
                out[f"outbox_{status}"] = n
            return out

        return await self._read(work)


def _settle(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in outcomes:
        if future.done():  # the caller was cancelled meanwhile; the write itself stands
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
