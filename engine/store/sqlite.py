"""The embedded default store: one SQLite file in WAL mode.

All calls run on one dedicated thread that owns the connection (SQLite serialises writers anyway), so the event
loop never blocks on disk. `synchronous=NORMAL` in WAL mode survives a process crash (SIGKILL) without losing a
committed transaction; only a power loss can drop the last commits. Each public method is one transaction.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
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
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (user_id, seq) WHERE status IN ('pending', 'sending');
"""


class SqliteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    # -- plumbing ------------------------------------------------------------------------------------------
    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._executor is not None and self._db is not None, "store is not open"
        db = self._db
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, db)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=30000")
        with _transaction(db):
            for statement in SCHEMA.split(";"):  # executescript would COMMIT our transaction early
                if statement.strip():
                    db.execute(statement)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        return db

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="otnflow-sqlite")
        loop = asyncio.get_running_loop()
        self._db = await loop.run_in_executor(self._executor, self._connect)

    async def close(self) -> None:
        if self._db is not None and self._executor is not None:
            db = self._db
            await asyncio.get_running_loop().run_in_executor(self._executor, db.close)
            self._executor.shutdown(wait=True)
        self._db, self._executor = None, None

    # -- inbox ---------------------------------------------------------------------------------------------
    async def add_events(self, events: Sequence[StoredEvent]) -> list[StoredEvent]:
        def work(db: sqlite3.Connection) -> list[StoredEvent]:
            new = []
            with _transaction(db):
                for e in events:
                    cursor = db.execute(
                        "INSERT OR IGNORE INTO inbox (key, user_id, page_id, timestamp, kind, body, received_ms) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (e.key, e.user_id, e.page_id, e.timestamp, e.kind, e.body, e.received_ms),
                    )
                    if cursor.rowcount:
                        new.append(e)
            return new

        return await self._run(work)

    async def pending_events(self, user_id: str, limit: int = 100) -> list[StoredEvent]:
        def work(db: sqlite3.Connection) -> list[StoredEvent]:
            rows = db.execute(
                "SELECT key, user_id, page_id, timestamp, kind, body, received_ms FROM inbox "
                "WHERE user_id = ? AND handled_ms IS NULL ORDER BY timestamp, rowid LIMIT ?",
                (user_id, limit),
            ).fetchall()
            return [StoredEvent(*row) for row in rows]

        return await self._run(work)

    async def fail_event(self, key: str, error: str, now_ms: int) -> None:
        def work(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.execute("UPDATE inbox SET handled_ms = ?, error = ? WHERE key = ?", (now_ms, error, key))

        await self._run(work)

    async def users_with_pending_work(self) -> list[str]:
        def work(db: sqlite3.Connection) -> list[str]:
            rows = db.execute(
                "SELECT user_id FROM inbox WHERE handled_ms IS NULL "
                "UNION SELECT user_id FROM outbox WHERE status IN ('pending', 'sending')"
            ).fetchall()
            return [row[0] for row in rows]

        return await self._run(work)

    # -- users ---------------------------------------------------------------------------------------------
    async def load_user(self, user_id: str) -> UserRecord | None:
        def work(db: sqlite3.Connection) -> UserRecord | None:
            row = db.execute("SELECT data FROM users WHERE user_id = ?", (user_id,)).fetchone()
            return UserRecord.from_data(user_id, json.loads(row[0])) if row else None

        return await self._run(work)

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
            with _transaction(db):
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

        return await self._run(work)

    async def mark_unreachable(self, user_id: str) -> None:
        def work(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.execute(
                    "UPDATE users SET data = json_set(data, '$.unreachable', json('true')) WHERE user_id = ?",
                    (user_id,),
                )

        await self._run(work)

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

        return await self._run(work)

    async def set_outbox_status(self, key: str, status: str, detail: str, now_ms: int) -> None:
        def work(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.execute(
                    "UPDATE outbox SET status = ?, detail = ?, updated_ms = ? WHERE key = ?",
                    (status, detail, now_ms, key),
                )

        await self._run(work)

    async def recover_in_flight(self) -> int:
        def work(db: sqlite3.Connection) -> int:
            with _transaction(db):
                return db.execute(
                    "UPDATE outbox SET status = 'uncertain', detail = 'process stopped while sending' "
                    "WHERE status = 'sending'"
                ).rowcount

        return await self._run(work)

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

        return await self._run(work)


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): takes the write lock up front, so concurrent writers from
    other processes wait (busy_timeout) instead of failing mid-transaction."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
