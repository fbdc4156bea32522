"""The embedded default store: one SQLite file in WAL mode.

Writes run on one dedicated thread that owns the writing connection (SQLite serialises writers anyway), reads on
another, so the event loop never blocks on disk. `synchronous=NORMAL` in WAL mode survives a process crash
(SIGKILL) without losing a committed transaction; only a power loss can drop the last commits. Each public write
is atomic on its own.

`load_for_step` is answered, for most turns, from a bounded cache of what this store itself last committed or read
for the user (`step_cache.py`): the user's JSON and armed re-requests. Each write of this store that changes a user's
row or armed requests updates or drops that user's entry when it settles, in commit order. A commit by another
connection to the file (`otnflow notify` beside `otnflow serve`, the CLI) is seen by the writer: inside each group
commit's transaction it reads `PRAGMA data_version` (which changes only when another connection committed), and when
it changed the whole cache is cleared before any write of that batch is settled. So an event's step never starts from
an entry older than another process's commit that landed before the event was stored; one that lands between an
event's arrival and its step is seen at the user's next event (as the dispatcher's reuse of the record a worker just
committed already accepts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .. import jsonio
from .base import (
    Campaign,
    Delivery,
    DeliveryResult,
    OtnLogLine,
    OutboxItem,
    OutboxMeta,
    RejectedEvent,
    StatusMark,
    StepWrite,
    StoredEvent,
    Token,
    UserRecord,
    request_vars,
)
from .status import CampaignStatus, OtnLogged, OutboxStatus, TokenStatus
from .step_cache import StepCache

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
CREATE INDEX IF NOT EXISTS inbox_handled ON inbox (handled_ms) WHERE handled_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS rejected (
    key TEXT PRIMARY KEY,
    location TEXT NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    body TEXT NOT NULL,
    received_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS rejected_by_time ON rejected (received_ms);
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
CREATE INDEX IF NOT EXISTS outbox_by_user ON outbox (user_id, created_ms);
CREATE TABLE IF NOT EXISTS tokens (
    token TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    source_state TEXT NOT NULL DEFAULT '',
    received_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    claimed_by TEXT,
    used_ms INTEGER,
    request_key TEXT NOT NULL DEFAULT '',
    title TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS tokens_by_user ON tokens (user_id, topic, status, received_ms);
CREATE TABLE IF NOT EXISTS otn_log (
    user_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    what TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS otn_log_by_user ON otn_log (user_id, topic, what, at_ms);
CREATE INDEX IF NOT EXISTS otn_log_by_topic ON otn_log (topic, what);
CREATE TABLE IF NOT EXISTS armed (
    user_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    source_state TEXT NOT NULL,
    armed_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, topic)
);
CREATE TABLE IF NOT EXISTS campaigns (
    id TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    segment TEXT NOT NULL,
    vars TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    finished_ms INTEGER
);
CREATE TABLE IF NOT EXISTS campaign_items (
    campaign_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    token TEXT,
    message TEXT,
    claimed_until INTEGER,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (campaign_id, user_id)
);
CREATE INDEX IF NOT EXISTS campaign_items_by_status ON campaign_items (campaign_id, status, user_id);
CREATE TABLE IF NOT EXISTS leases (user_id TEXT PRIMARY KEY, owner TEXT NOT NULL, until_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS unsubscribed (user_id TEXT PRIMARY KEY, since_ms INTEGER NOT NULL);
"""

#: Outbox statuses of a request that may have reached, or may still reach, the user: what anti-nagging counts.
_LIVE_REQUEST = "('pending', 'sending', 'sent', 'uncertain')"
_TOKEN_COLUMNS = "token, user_id, topic, payload, received_ms, expires_ms, source_state, status, request_key, title"
_TOKEN_PLACES = ", ".join("?" * len(_TOKEN_COLUMNS.split(",")))

# Files made before tokens carried their request: add the columns, then index the audience by request.
_MIGRATIONS = (
    ("tokens", "request_key", "ALTER TABLE tokens ADD COLUMN request_key TEXT NOT NULL DEFAULT ''"),
    ("tokens", "title", "ALTER TABLE tokens ADD COLUMN title TEXT NOT NULL DEFAULT ''"),
)
_AUDIENCE_INDEX = (
    "DROP INDEX IF EXISTS tokens_by_topic",
    "CREATE INDEX IF NOT EXISTS tokens_by_request ON tokens (topic, status, request_key, user_id, expires_ms)",
)


_INSERT_OUTBOX = (
    "INSERT OR IGNORE INTO outbox (key, user_id, message, meta, status, detail, created_ms, updated_ms) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_TOKEN = f"INSERT OR IGNORE INTO tokens ({_TOKEN_COLUMNS}) VALUES ({_TOKEN_PLACES})"
_UPSERT_USER = (
    "INSERT INTO users (user_id, data) VALUES (?, ?) ON CONFLICT (user_id) DO UPDATE SET data = excluded.data"
)


def _executemany(db: sqlite3.Connection, statement: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """`executemany`, skipped for no rows: even then it costs a cursor and a statement lookup (most steps have no
    token, disarm or OTN log row)."""
    if rows:
        db.executemany(statement, rows)


_SET_STATUS = "UPDATE outbox SET status = ?, detail = ?, updated_ms = ? WHERE key = ?"
_LOG_OTN = "INSERT INTO otn_log VALUES (?, ?, ?, ?)"


def _outbox_row(o: OutboxItem, now_ms: int) -> tuple[Any, ...]:
    return (
        o.key,
        o.user_id,
        jsonio.dumps(o.message),
        jsonio.dumps(o.meta.to_data()),
        str(o.status),  # a plain str: sqlite3 looks for an adapter, at length, for any subclass of one
        o.detail,
        now_ms,
        now_ms,
    )


_OUTBOX_COLUMNS = "key, user_id, message, meta, status, detail, created_ms, seq, updated_ms"


def _outbox_item(row: Sequence[Any]) -> OutboxItem:
    key, user_id, message, meta, status, detail, created, seq, updated = row
    return OutboxItem(
        key=key,
        user_id=user_id,
        message=jsonio.loads(message),
        meta=OutboxMeta.from_data(jsonio.loads(meta)),
        status=OutboxStatus(status),
        detail=detail,
        created_ms=created,
        seq=seq,
        updated_ms=updated,
    )


def _token(row: Sequence[Any]) -> Token:
    token, user_id, topic, payload, received, expires, source_state, status, key, title = row
    return Token(
        token=token,
        user_id=user_id,
        topic=topic,
        payload=payload,
        received_ms=received,
        expires_ms=expires,
        source_state=source_state,
        status=TokenStatus(status),
        request_vars=request_vars(key),
        title=title,
    )


def _token_row(t: Token) -> tuple[Any, ...]:
    return (
        t.token,
        t.user_id,
        t.topic,
        t.payload,
        t.received_ms,
        t.expires_ms,
        t.source_state,
        t.status,
        t.request_key,
        t.title,
    )


Job = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]"]
Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]
#: What a settled write does to the step cache, on the event loop, before any future of its batch is settled: it is
#: handed the write's result, or None when it failed.
Effect = Callable[[Any], None]


class _ConnectionThread:
    """A thread that owns one connection and runs the jobs queued for it, a batch at a time: whatever was queued
    when it woke up. Each batch is settled on the event loop with one `call_soon_threadsafe`, so the loop pays one
    wake-up per batch, not per job, and no `run_in_executor` (its futures and locks cost the loop's thread
    10-30 µs a call, measured)."""

    def __init__(
        self,
        name: str,
        run_batch: Callable[[sqlite3.Connection, list[Job]], list[Outcome]],
        settle: Callable[[list[Outcome]], None] | None = None,
    ) -> None:
        self.db: sqlite3.Connection | None = None
        self._run_batch = run_batch
        self._settle = settle or _settle
        self._jobs: queue.SimpleQueue[Job | asyncio.Future[None]] = queue.SimpleQueue()  # a bare future: stop
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.put((fn, future))
        return future

    def queued(self) -> int:
        return self._jobs.qsize()

    async def open(self, connect: Callable[[], sqlite3.Connection]) -> None:
        """Make the connection on the thread itself, as its first job (outside any transaction)."""
        future: asyncio.Future[sqlite3.Connection] = asyncio.get_running_loop().create_future()
        self._jobs.put((lambda _: connect(), future))
        self.db = await future  # set before any other job is queued: the thread sees it from the next batch on

    async def stop(self) -> None:
        """Close the connection once every job queued before has run, and end the thread."""
        stopped: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._jobs.put(stopped)
        await stopped
        self._thread.join()  # the thread is past its last job: it ends at once

    def _serve(self) -> None:
        while True:
            batch: list[Job] = []
            item = self._jobs.get()
            with contextlib.suppress(queue.Empty):
                while not isinstance(item, asyncio.Future):
                    batch.append(item)
                    item = self._jobs.get_nowait()
            outcomes = [] if not batch else _each(batch) if self.db is None else self._run_batch(self.db, batch)
            stop = item if isinstance(item, asyncio.Future) else None
            if stop is not None:
                if self.db is not None:
                    self.db.close()
                outcomes.append((stop, None, None))
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
                outcomes[0][0].get_loop().call_soon_threadsafe(self._settle, outcomes)
            if stop is not None:
                return


#: The writer's own checkpoint, a backstop (SQLite's default is 1000 pages): the WAL stays under about 40 MB whatever
#: happens to the checkpointer. Under steady load the WAL seldom restarts (that needs a writer's transaction to begin
#: right after a checkpoint that caught up), so it reaches this size and the writer checkpoints what little is left.
WRITER_CHECKPOINT_PAGES = 10_000
CHECKPOINT_PAUSE_SECONDS = 0.1  # the least time between two checkpoints: ten a second at most while commits come


class _Checkpointer:
    """A thread that moves committed pages from the WAL into the database file (`PRAGMA wal_checkpoint(PASSIVE)`,
    on its own connection) shortly after the writer commits. A checkpoint syncs both files to disk: run by the
    writer at commit (SQLite's autocheckpoint), every write queued behind it, and so every webhook's 200, waited for
    those syncs, 3-10 ms each time and 100-350 ms when the disk stalled (measured). A commit stays as durable as
    before: `synchronous=NORMAL` never synced it, the checkpoint only copies what is already in the WAL."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._wrote = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="otnflow-sqlite-checkpoint", daemon=True)
        self._thread.start()

    def wrote(self) -> None:
        """The writer committed: checkpoint soon (any thread)."""
        self._wrote.set()

    def stop(self) -> None:
        """End the thread (blocks until it has). Closing a file's last connection checkpoints it anyway."""
        self._stopping.set()
        self._wrote.set()
        self._thread.join()

    def _serve(self) -> None:
        db = self._connect()
        try:
            while not self._stopping.is_set():
                self._wrote.wait()
                self._wrote.clear()
                with contextlib.suppress(sqlite3.Error):  # busy or locked: the next commit brings another try
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                self._stopping.wait(CHECKPOINT_PAUSE_SECONDS)  # the pause between two, cut short by `stop`
        finally:
            db.close()


def _each(batch: list[Job], db: sqlite3.Connection | None = None) -> list[Outcome]:
    """Reads: each job on its own (WAL gives each statement a consistent snapshot); a failing one fails alone."""
    outcomes: list[Outcome] = []
    for fn, future in batch:
        try:
            outcomes.append((future, fn(db), None))  # type: ignore[arg-type]  # None only for the opening job
        except Exception as err:
            outcomes.append((future, None, err))
    return outcomes


class SqliteStore:
    """Writes go through group commit: every write queued while the writer thread is busy joins the next
    transaction (a failing write is retried alone, so it does not undo the others), and each caller's await
    returns only after that transaction's COMMIT. Under load this turns many small commits into few large
    ones. Reads use a second connection on a second thread (WAL lets readers run beside the writer) and see every
    write whose await has returned."""

    def __init__(
        self, path: str | Path, inbox_retention_days: float = 7.0, step_cache: StepCache | None = None
    ) -> None:
        self.path = Path(path)
        self.retention_ms = int(inbox_retention_days * 86_400_000)
        self._writer: _ConnectionThread | None = None
        self._reader: _ConnectionThread | None = None
        self._checkpointer: _Checkpointer | None = None
        self.step_cache = step_cache if step_cache is not None else StepCache()
        self._effects: dict[asyncio.Future[Any], Effect] = {}  # a queued write's effect on the cache
        self._data_version: int | None = None  # the writer's last `PRAGMA data_version` (writer thread only)

    # -- plumbing ------------------------------------------------------------------------------------------
    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._reader is not None, "store is not open"
        return await self._reader.submit(fn)

    async def _write(self, fn: Callable[[sqlite3.Connection], T], effect: Effect | None = None) -> T:
        """`effect`: what the write does to the step cache once it settled. A write that changes a user's row or
        armed requests must give one (dropping that user's entry, or clearing the cache when it cannot say whose)."""
        assert self._writer is not None, "store is not open"
        future = self._writer.submit(fn)
        if effect is not None:
            self._effects[future] = effect
        return await future

    def _drop(self, *user_ids: str) -> Effect:
        def effect(_: Any) -> None:
            for user_id in user_ids:
                self.step_cache.drop(user_id)

        return effect

    def _settle_writes(self, outcomes: list[Outcome]) -> None:
        """On the event loop: the batch's effects on the step cache in commit order, then its futures."""
        if self._effects:
            for future, result, error in outcomes:
                effect = self._effects.pop(future, None)
                if effect is not None:
                    effect(None if error is not None else result)
        _settle(outcomes)

    def _group_commit(self, db: sqlite3.Connection, batch: list[Job]) -> list[Outcome]:
        """On the writer thread: run every queued write in one transaction. Should one write fail, the transaction
        is rolled back and each write is run again in a transaction of its own, so a failing write fails alone (the
        common case pays for no savepoints)."""
        try:
            return self._transaction(db, batch)
        except Exception:
            outcomes: list[Outcome] = []
            for write in batch:
                try:
                    outcomes += self._transaction(db, [write])
                except Exception as err:
                    outcomes.append((write[1], None, err))
            return outcomes

    def _transaction(self, db: sqlite3.Connection, batch: list[Job]) -> list[Outcome]:
        db.execute("BEGIN IMMEDIATE")
        try:
            self._notice_other_writers(db, batch)
            outcomes: list[Outcome] = [(future, fn(db), None) for fn, future in batch]
            db.execute("COMMIT")
            if self._checkpointer is not None:
                self._checkpointer.wrote()
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return outcomes

    def _notice_other_writers(self, db: sqlite3.Connection, batch: list[Job]) -> None:
        """On the writer thread, inside the transaction (no other connection can commit until it ends): when another
        connection committed since the last look, the step cache is cleared on the event loop. Queued before this
        batch is settled (the loop runs `call_soon_threadsafe` callbacks in order), so before any of its writes
        returns. `data_version` does not change for this connection's own commits."""
        version = db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._data_version = version
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody reads the cache any more
                batch[0][1].get_loop().call_soon_threadsafe(self.step_cache.clear)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        for attempt in range(100):  # processes starting together race to switch a new file to WAL: a few ms
            try:
                db.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError:
                if attempt == 99:
                    raise
                time.sleep(0.05)
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=30000")
        return db

    def _create_schema(self) -> sqlite3.Connection:
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")
        for statement in SCHEMA.split(";"):  # executescript would COMMIT our transaction early
            if statement.strip():
                db.execute(statement)
        for table, column, alter in _MIGRATIONS:
            if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
                db.execute(alter)
        for statement in _AUDIENCE_INDEX:
            db.execute(statement)
        db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        db.execute("COMMIT")
        db.execute(f"PRAGMA wal_autocheckpoint={WRITER_CHECKPOINT_PAGES}")  # the checkpointer's job (_Checkpointer)
        return db

    async def open(self) -> None:
        self.step_cache.clear()  # reopened: what others committed meanwhile is unknown, and the new connection's
        self._data_version = None  # data_version starts afresh
        self._writer = _ConnectionThread("otnflow-sqlite-write", self._group_commit, self._settle_writes)
        self._reader = _ConnectionThread("otnflow-sqlite-read", lambda db, batch: _each(batch, db))
        try:
            await self._writer.open(self._create_schema)
            await self._reader.open(self._connect)
            self._checkpointer = _Checkpointer(self._connect)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        for thread in (self._writer, self._reader):
            if thread is not None:
                await thread.stop()
        self._writer = self._reader = None
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.stop)
            self._checkpointer = None

    # -- inbox ---------------------------------------------------------------------------------------------
    async def add_events(self, events: Sequence[StoredEvent]) -> list[StoredEvent]:
        def work(db: sqlite3.Connection) -> list[StoredEvent]:
            new = []
            for e in events:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO inbox (key, user_id, page_id, timestamp, kind, body, received_ms) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (e.key, e.user_id, e.page_id, e.timestamp, str(e.kind), e.body, e.received_ms),
                )
                if cursor.rowcount:
                    new.append(e)
            return new

        return await self._write(work)

    async def add_rejected(self, rejected: Sequence[RejectedEvent]) -> int:
        def work(db: sqlite3.Connection) -> int:
            return sum(
                db.execute(
                    "INSERT OR IGNORE INTO rejected (key, location, kind, reason, body, received_ms) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (r.key, r.where, r.kind, r.reason, r.body, r.received_ms),
                ).rowcount
                for r in rejected
            )

        return await self._write(work)

    async def rejected_events(self, limit: int = 100) -> list[RejectedEvent]:
        def work(db: sqlite3.Connection) -> list[RejectedEvent]:
            rows = db.execute(
                "SELECT key, location, kind, reason, body, received_ms FROM rejected "
                "ORDER BY received_ms DESC, rowid DESC LIMIT ?",
                (limit,),
            ).fetchall()
            return [
                RejectedEvent(key=key, where=where, kind=kind, reason=reason, body=body, received_ms=received)
                for key, where, kind, reason, body, received in rows
            ]

        return await self._read(work)

    async def pending_events(self, user_id: str, limit: int = 100) -> list[StoredEvent]:
        def work(db: sqlite3.Connection) -> list[StoredEvent]:
            rows = db.execute(
                "SELECT key, user_id, page_id, timestamp, kind, body, received_ms FROM inbox "
                "WHERE user_id = ? AND handled_ms IS NULL ORDER BY timestamp, rowid LIMIT ?",
                (user_id, limit),
            ).fetchall()
            return [
                StoredEvent(
                    key=key, user_id=user, page_id=page, timestamp=ts, kind=kind, body=body, received_ms=received
                )
                for key, user, page, ts, kind, body, received in rows
            ]

        return await self._read(work)

    async def fail_event(self, key: str, error: str, now_ms: int) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute("UPDATE inbox SET handled_ms = ?, error = ? WHERE key = ?", (now_ms, error, key))

        await self._write(work)

    async def prune_inbox(self, now_ms: int) -> int:
        def work(db: sqlite3.Connection) -> int:
            return db.execute(
                "DELETE FROM inbox WHERE handled_ms IS NOT NULL AND handled_ms < ?", (now_ms - self.retention_ms,)
            ).rowcount

        return await self._write(work)

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
            return UserRecord.from_data(user_id, jsonio.loads(row[0])) if row else None

        return await self._read(work)

    async def commit_step(self, write: StepWrite, now_ms: int) -> bool:
        user = write.user
        data = jsonio.dumps(user.to_data())
        rows = [_outbox_row(o, now_ms) for o in write.outbox]

        def work(db: sqlite3.Connection) -> bool:
            marked = db.execute(
                "UPDATE inbox SET handled_ms = ? WHERE key = ? AND handled_ms IS NULL", (now_ms, write.event_key)
            ).rowcount
            if not marked:
                return False
            db.execute(_UPSERT_USER, (user.user_id, data))
            _executemany(db, _INSERT_OUTBOX, rows)
            _executemany(db, _INSERT_TOKEN, [_token_row(t) for t in write.tokens])
            _executemany(
                db, "DELETE FROM armed WHERE user_id = ? AND topic = ?", [(user.user_id, t) for t in write.disarm]
            )
            _executemany(
                db,
                _LOG_OTN,
                [(user.user_id, topic, what, now_ms) for topic, what in write.otn_log],
            )
            if write.consent is False:  # unsubscribed: no token of theirs is ever sent, no re-request goes out
                db.execute(
                    "UPDATE tokens SET status = 'revoked' WHERE user_id = ? AND status IN ('valid', 'claimed')",
                    (user.user_id,),
                )
                db.execute("DELETE FROM armed WHERE user_id = ?", (user.user_id,))
                db.execute("INSERT OR IGNORE INTO unsubscribed VALUES (?, ?)", (user.user_id, now_ms))
            elif write.consent is True:
                db.execute("DELETE FROM unsubscribed WHERE user_id = ?", (user.user_id,))
            return True

        def effect(committed: bool | None) -> None:
            if committed:
                self.step_cache.committed(user.user_id, data, write.disarm, withdrawn=write.consent is False)
            else:  # another worker or a replay got there first: what it wrote is unknown here
                self.step_cache.drop(user.user_id)

        return await self._write(work, effect)

    async def load_for_step(self, user_id: str) -> tuple[UserRecord | None, list[tuple[str, str]]]:
        """From the step cache when it holds the user (see the module's docstring), else read (and kept)."""
        kept = self.step_cache.get(user_id)
        if kept is not None:
            return kept

        def work(db: sqlite3.Connection) -> tuple[str | None, list[tuple[str, str]]]:
            row = db.execute("SELECT data FROM users WHERE user_id = ?", (user_id,)).fetchone()
            armed = db.execute(
                "SELECT topic, source_state FROM armed WHERE user_id = ? ORDER BY armed_ms, topic", (user_id,)
            ).fetchall()
            return (row[0] if row else None), [(topic, state) for topic, state in armed]

        ticket = self.step_cache.reading(user_id)
        try:
            data, armed = await self._read(work)
        except BaseException:
            self.step_cache.abandon(user_id, ticket)
            raise
        return self.step_cache.read(user_id, ticket, data, armed)

    async def load_users(self, user_ids: Sequence[str]) -> dict[str, UserRecord]:
        def work(db: sqlite3.Connection) -> dict[str, UserRecord]:
            marks = ",".join("?" * len(user_ids))
            rows = db.execute(f"SELECT user_id, data FROM users WHERE user_id IN ({marks})", list(user_ids))
            return {uid: UserRecord.from_data(uid, jsonio.loads(data)) for uid, data in rows}

        return await self._read(work) if user_ids else {}

    async def put_user(self, user: UserRecord) -> None:
        data = jsonio.dumps(user.to_data())

        def work(db: sqlite3.Connection) -> None:
            db.execute(_UPSERT_USER, (user.user_id, data))

        await self._write(work, self._drop(user.user_id))

    async def forget_user(self, user_id: str) -> None:
        def work(db: sqlite3.Connection) -> None:
            for table in ("users", "inbox", "outbox", "tokens", "armed", "otn_log", "campaign_items", "unsubscribed"):
                db.execute(f"DELETE FROM {table} WHERE user_id = ?", (user_id,))

        await self._write(work, self._drop(user_id))  # a read in flight is not kept either: no deleted user returns

    async def unsubscribed_users(self) -> int:
        return await self._read(lambda db: int(db.execute("SELECT count(*) FROM unsubscribed").fetchone()[0]))

    async def mark_unreachable(self, user_id: str) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE users SET data = json_set(data, '$.unreachable', json('true')) WHERE user_id = ?", (user_id,)
            )

        await self._write(work, self._drop(user_id))

    async def set_thread_owner(self, user_id: str, owner: str, since_ms: int, state: str) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE users SET data = json_set(data, '$.thread_owner', ?, '$.handed_over_ms', ?, "
                "'$.handover_state', ?) WHERE user_id = ?",
                (owner, since_ms, state, user_id),
            )

        await self._write(work, self._drop(user_id))

    async def users_with_human(self, limit: int) -> list[UserRecord]:
        def work(db: sqlite3.Connection) -> list[UserRecord]:
            rows = db.execute(
                "SELECT user_id, data FROM users WHERE coalesce(json_extract(data, '$.thread_owner'), '') != '' "
                "LIMIT ?",
                (limit,),
            ).fetchall()
            return [UserRecord.from_data(uid, json.loads(data)) for uid, data in rows]

        return await self._read(work)

    # -- outbox --------------------------------------------------------------------------------------------
    async def pending_outbox(self, user_id: str) -> list[OutboxItem]:
        def work(db: sqlite3.Connection) -> list[OutboxItem]:
            rows = db.execute(
                f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE user_id = ? AND status = 'pending' ORDER BY seq",
                (user_id,),
            ).fetchall()
            return [_outbox_item(row) for row in rows]

        return await self._read(work)

    async def add_outbox(self, item: OutboxItem, now_ms: int) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute(_INSERT_OUTBOX, _outbox_row(item, now_ms))

        await self._write(work)

    async def set_outbox_status(self, key: str, status: OutboxStatus, detail: str, now_ms: int) -> None:
        await self.set_outbox_statuses((StatusMark(key, status, detail, now_ms),))

    def set_outbox_statuses(self, marks: Sequence[StatusMark], logged: Sequence[OtnLogLine] = ()) -> Awaitable[None]:
        def work(db: sqlite3.Connection) -> None:  # plain str for the enums (see _outbox_row)
            _executemany(db, _SET_STATUS, [(str(status), detail, at, key) for key, status, detail, at in marks])
            _executemany(db, _LOG_OTN, [(user, topic, str(what), at) for user, topic, what, at in logged])

        assert self._writer is not None, "store is not open"
        return self._writer.submit(work)  # one job (a future, a queue put) for all of them

    async def recover_in_flight(self, detail: str) -> int:
        def work(db: sqlite3.Connection) -> int:
            return db.execute(
                "UPDATE outbox SET status = 'uncertain', detail = ? WHERE status = 'sending'", (detail,)
            ).rowcount

        return await self._write(work)

    async def counts(self) -> dict[str, int]:
        def work(db: sqlite3.Connection) -> dict[str, int]:
            out: dict[str, int] = {}
            out["users"] = db.execute("SELECT count(*) FROM users").fetchone()[0]
            out["inbox_pending"] = db.execute("SELECT count(*) FROM inbox WHERE handled_ms IS NULL").fetchone()[0]
            out["inbox_handled"] = db.execute("SELECT count(*) FROM inbox WHERE handled_ms IS NOT NULL").fetchone()[0]
            out["inbox_failed"] = db.execute("SELECT count(*) FROM inbox WHERE error IS NOT NULL").fetchone()[0]
            out["rejected"] = db.execute("SELECT count(*) FROM rejected").fetchone()[0]
            for status, n in db.execute("SELECT status, count(*) FROM outbox GROUP BY status"):
                out[f"outbox_{status}"] = n
            return out

        return await self._read(work)

    # -- OTN tokens and the loop ---------------------------------------------------------------------------
    async def count_tokens(self, user_id: str, topic: str, now_ms: int, request_key: str | None = None) -> int:
        query = "SELECT count(*) FROM tokens WHERE user_id = ? AND topic = ? AND status = 'valid' AND expires_ms > ?"
        args: tuple[Any, ...] = (user_id, topic, now_ms)
        if request_key is not None:
            query, args = query + " AND request_key = ?", (*args, request_key)

        def work(db: sqlite3.Connection) -> int:
            return int(db.execute(query, args).fetchone()[0])

        return await self._read(work)

    async def tokens(self, user_id: str) -> list[Token]:
        def work(db: sqlite3.Connection) -> list[Token]:
            rows = db.execute(
                f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE user_id = ? ORDER BY received_ms, token", (user_id,)
            ).fetchall()
            return [_token(row) for row in rows]

        return await self._read(work)

    async def count_otn_log(self, user_id: str, topic: str, what: str, since_ms: int) -> int:
        def work(db: sqlite3.Connection) -> int:
            return int(
                db.execute(
                    "SELECT count(*) FROM otn_log WHERE user_id = ? AND topic = ? AND what = ? AND at_ms >= ?",
                    (user_id, topic, what, since_ms),
                ).fetchone()[0]
            )

        return await self._read(work)

    async def request_counts(
        self, user_id: str, topic: str, since_ms: int, now_ms: int, request_key: str | None = None
    ) -> tuple[int, int]:
        same_request = "" if request_key is None else "AND request_key = ? "
        key_args = () if request_key is None else (request_key,)

        def work(db: sqlite3.Connection) -> tuple[int, int]:
            held, last_optin = db.execute(
                "SELECT (SELECT count(*) FROM tokens WHERE user_id = ? AND topic = ? AND status = 'valid' "
                f"AND expires_ms > ? {same_request}), (SELECT coalesce(max(at_ms), 0) FROM otn_log WHERE user_id = ? "
                "AND topic = ? AND what = ?)",
                (user_id, topic, now_ms, *key_args, user_id, topic, OtnLogged.OPTIN),
            ).fetchone()
            requests = db.execute(
                "SELECT count(*) FROM outbox WHERE user_id = ? AND created_ms >= ? "
                f"AND status IN {_LIVE_REQUEST} AND json_extract(meta, '$.kind') = 'otn_request' "
                "AND json_extract(meta, '$.topic') = ?",
                (user_id, max(since_ms, last_optin + 1), topic),
            ).fetchone()[0]
            return int(held), int(requests)

        return await self._read(work)

    async def last_otn(self, user_id: str, topic: str, what: str) -> int:
        def work(db: sqlite3.Connection) -> int:
            row = db.execute(
                "SELECT max(at_ms) FROM otn_log WHERE user_id = ? AND topic = ? AND what = ?", (user_id, topic, what)
            ).fetchone()
            return int(row[0] or 0)

        return await self._read(work)

    async def log_otn(self, user_id: str, topic: str, what: str, now_ms: int) -> None:
        await self.set_outbox_statuses((), (OtnLogLine(user_id, topic, what, now_ms),))

    async def arm(self, user_id: str, topic: str, source_state: str, now_ms: int) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR IGNORE INTO armed VALUES (?, ?, ?, ?)", (user_id, topic, source_state, now_ms))

        await self._write(work, self._drop(user_id))

    async def armed(self, user_id: str) -> list[tuple[str, str]]:
        def work(db: sqlite3.Connection) -> list[tuple[str, str]]:
            rows = db.execute(
                "SELECT topic, source_state FROM armed WHERE user_id = ? ORDER BY armed_ms, topic", (user_id,)
            ).fetchall()
            return [(topic, state) for topic, state in rows]

        return await self._read(work)

    async def otn_stats(self, now_ms: int, soon_ms: int) -> dict[str, dict[str, int]]:
        def work(db: sqlite3.Connection) -> dict[str, dict[str, int]]:
            stats: dict[str, dict[str, int]] = {}
            for topic, what, n in db.execute("SELECT topic, what, count(*) FROM otn_log GROUP BY topic, what"):
                stats.setdefault(topic, {})[what] = n
            for topic, held, expiring, holders in db.execute(
                "SELECT topic, count(*), sum(expires_ms < ?), count(DISTINCT user_id) FROM tokens "
                "WHERE status = 'valid' AND expires_ms > ? GROUP BY topic",
                (soon_ms, now_ms),
            ):
                stats.setdefault(topic, {}).update(
                    tokens_held=held, tokens_expiring_soon=expiring or 0, token_holders=holders
                )
            return stats

        return await self._read(work)

    # -- campaigns -----------------------------------------------------------------------------------------
    async def open_campaign(self, campaign: Campaign) -> Campaign:
        def work(db: sqlite3.Connection) -> Campaign:
            db.execute(
                "INSERT OR IGNORE INTO campaigns (id, topic, segment, vars, created_ms, status) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    campaign.id,
                    campaign.topic,
                    campaign.segment,
                    json.dumps(campaign.vars),
                    campaign.created_ms,
                    campaign.status,
                ),
            )
            row = db.execute(
                "SELECT id, topic, segment, vars, created_ms, status FROM campaigns WHERE id = ?", (campaign.id,)
            ).fetchone()
            return Campaign(
                id=row[0],
                topic=row[1],
                segment=row[2],
                vars=json.loads(row[3]),
                created_ms=row[4],
                status=CampaignStatus(row[5]),
            )

        return await self._write(work)

    async def token_holders(self, topic: str, request_key: str, now_ms: int, after_user: str, limit: int) -> list[str]:
        def work(db: sqlite3.Connection) -> list[str]:
            rows = db.execute(  # the tokens_by_request index: one range
                "SELECT DISTINCT user_id FROM tokens WHERE topic = ? AND status = 'valid' AND request_key = ? "
                "AND user_id > ? AND expires_ms > ? ORDER BY user_id LIMIT ?",
                (topic, request_key, after_user, now_ms, limit),
            ).fetchall()
            return [row[0] for row in rows]

        return await self._read(work)

    async def held_requests(self, topic: str, now_ms: int) -> dict[str, int]:
        def work(db: sqlite3.Connection) -> dict[str, int]:
            rows = db.execute(
                "SELECT request_key, count(DISTINCT user_id) FROM tokens WHERE topic = ? AND status = 'valid' "
                "AND expires_ms > ? GROUP BY request_key",
                (topic, now_ms),
            )
            return {key: holders for key, holders in rows}

        return await self._read(work)

    async def add_campaign_items(
        self, campaign_id: str, user_ids: Sequence[str], skipped: dict[str, str], now_ms: int
    ) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT OR IGNORE INTO campaign_items (campaign_id, user_id, status, reason, updated_ms) "
                "VALUES (?, ?, ?, ?, ?)",
                [(campaign_id, u, "pending", "", now_ms) for u in user_ids]
                + [(campaign_id, u, "skipped", reason, now_ms) for u, reason in skipped.items()],
            )

        await self._write(work)

    async def pending_items(self, campaign_id: str, after_user: str, limit: int) -> list[str]:
        def work(db: sqlite3.Connection) -> list[str]:
            rows = db.execute(
                "SELECT user_id FROM campaign_items WHERE campaign_id = ? AND status = 'pending' AND user_id > ? "
                "ORDER BY user_id LIMIT ?",
                (campaign_id, after_user, limit),
            ).fetchall()
            return [row[0] for row in rows]

        return await self._read(work)

    async def skip_item(self, campaign_id: str, user_id: str, reason: str, now_ms: int) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE campaign_items SET status = 'skipped', reason = ?, updated_ms = ? "
                "WHERE campaign_id = ? AND user_id = ? AND status = 'pending'",
                (reason, now_ms, campaign_id, user_id),
            )

        await self._write(work)

    async def begin_deliveries(
        self,
        campaign_id: str,
        topic: str,
        requests: Sequence[tuple[str, dict[str, Any]]],
        now_ms: int,
        claim_ms: int = 120_000,
        request_keys: Sequence[str] = ("",),
        *,
        no_token_reason: str,
    ) -> list[Delivery]:
        keys = list(request_keys)
        among = ", ".join("?" * len(keys))
        texts = [(user_id, message, jsonio.dumps(message)) for user_id, message in requests]

        def work(db: sqlite3.Connection) -> list[Delivery]:
            claimed = []
            for user_id, message, text in texts:
                item = db.execute(
                    "SELECT status FROM campaign_items WHERE campaign_id = ? AND user_id = ?", (campaign_id, user_id)
                ).fetchone()
                if item is None or item[0] != "pending":
                    continue
                row = db.execute(
                    "UPDATE tokens SET status = 'claimed', claimed_by = ? WHERE token = (SELECT token FROM tokens "
                    f"WHERE user_id = ? AND topic = ? AND status = 'valid' AND expires_ms > ? AND request_key IN "
                    f"({among}) ORDER BY received_ms, token LIMIT 1) RETURNING {_TOKEN_COLUMNS}",
                    (campaign_id, user_id, topic, now_ms, *keys),
                ).fetchone()
                if row is None:
                    db.execute(
                        "UPDATE campaign_items SET status = 'skipped', reason = ?, updated_ms = ? "
                        "WHERE campaign_id = ? AND user_id = ?",
                        (no_token_reason, now_ms, campaign_id, user_id),
                    )
                    continue
                token = _token(row)
                db.execute(  # the item is this message's outbox row: recorded before the send
                    "UPDATE campaign_items SET status = 'sending', token = ?, message = ?, claimed_until = ?, "
                    "updated_ms = ? WHERE campaign_id = ? AND user_id = ?",
                    (token.token, text, now_ms + claim_ms, now_ms, campaign_id, user_id),
                )
                claimed.append(Delivery(campaign_id, user_id, token, message))
            return claimed

        return await self._write(work) if texts else []

    async def finish_deliveries(self, finished: Sequence[DeliveryResult], now_ms: int) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.executemany(
                "UPDATE campaign_items SET status = ?, reason = ?, updated_ms = ? "
                "WHERE campaign_id = ? AND user_id = ?",
                [(f.item_status, f.reason, now_ms, f.delivery.campaign_id, f.delivery.user_id) for f in finished],
            )
            db.executemany(
                "UPDATE tokens SET status = ?, used_ms = ? WHERE token = ?",
                [(f.token_status, now_ms, f.delivery.token.token) for f in finished],
            )
            _executemany(
                db,
                _LOG_OTN,
                [(f.delivery.user_id, f.delivery.token.topic, f.logged, now_ms) for f in finished if f.logged],
            )
            _executemany(
                db,
                "INSERT OR IGNORE INTO armed VALUES (?, ?, ?, ?)",
                [(f.delivery.user_id, *f.arm, now_ms) for f in finished if f.arm is not None],
            )

        if finished:
            await self._write(work, self._drop(*{f.delivery.user_id for f in finished if f.arm is not None}))

    async def uncertain_deliveries(self, campaign_id: str, now_ms: int) -> tuple[list[Delivery], int | None]:
        def work(db: sqlite3.Connection) -> tuple[list[Delivery], int | None]:
            columns = ", ".join("t." + c.strip() for c in _TOKEN_COLUMNS.split(","))
            rows = db.execute(
                f"SELECT i.user_id, i.message, {columns} FROM campaign_items i JOIN tokens t ON t.token = i.token "
                "WHERE i.campaign_id = ? AND i.status = 'sending' AND i.claimed_until <= ? ORDER BY i.user_id",
                (campaign_id, now_ms),
            ).fetchall()
            later = db.execute(
                "SELECT min(claimed_until) FROM campaign_items WHERE campaign_id = ? AND status = 'sending' "
                "AND claimed_until > ?",
                (campaign_id, now_ms),
            ).fetchone()[0]
            return [Delivery(campaign_id, row[0], _token(row[2:]), json.loads(row[1])) for row in rows], later

        return await self._read(work)

    async def campaign_item_counts(self, campaign_id: str) -> list[tuple[str, str, int]]:
        def work(db: sqlite3.Connection) -> list[tuple[str, str, int]]:
            rows = db.execute(
                "SELECT status, reason, count(*) FROM campaign_items WHERE campaign_id = ? GROUP BY status, reason",
                (campaign_id,),
            ).fetchall()
            return [(status, reason, n) for status, reason, n in rows]

        return await self._read(work)

    async def campaigns_by_prefix(self, prefix: str) -> list[Campaign]:
        def work(db: sqlite3.Connection) -> list[Campaign]:
            rows = db.execute(  # substr, not LIKE: a prefix holding % or _ matches only itself
                "SELECT id, topic, segment, vars, created_ms, status FROM campaigns WHERE substr(id, 1, ?) = ? "
                "ORDER BY created_ms, rowid",
                (len(prefix), prefix),
            ).fetchall()
            return [
                Campaign(
                    id=r[0],
                    topic=r[1],
                    segment=r[2],
                    vars=json.loads(r[3]),
                    created_ms=r[4],
                    status=CampaignStatus(r[5]),
                )
                for r in rows
            ]

        return await self._read(work)

    async def refused_rows(self, user_id: str | None = None) -> list[OutboxItem]:
        def work(db: sqlite3.Connection) -> list[OutboxItem]:
            query = f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE status = 'refused'"
            args: tuple[str, ...] = ()
            if user_id is not None:
                query, args = query + " AND user_id = ?", (user_id,)
            return [_outbox_item(row) for row in db.execute(query + " ORDER BY seq", args)]

        return await self._read(work)

    async def finish_campaign(self, campaign_id: str, now_ms: int) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute("UPDATE campaigns SET status = 'done', finished_ms = ? WHERE id = ?", (now_ms, campaign_id))

        await self._write(work)

    # -- leases --------------------------------------------------------------------------------------------
    async def acquire_lease(self, user_id: str, owner: str, now_ms: int, ttl_ms: int) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            return (
                db.execute(
                    "INSERT INTO leases VALUES (?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET owner = excluded.owner, "
                    "until_ms = excluded.until_ms WHERE leases.until_ms <= ? OR leases.owner = excluded.owner",
                    (user_id, owner, now_ms + ttl_ms, now_ms),
                ).rowcount
                == 1
            )

        return await self._write(work)

    async def release_lease(self, user_id: str, owner: str) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM leases WHERE user_id = ? AND owner = ?", (user_id, owner))

        await self._write(work)

    async def recover_user_in_flight(self, user_id: str, detail: str) -> int:
        def work(db: sqlite3.Connection) -> int:
            return db.execute(
                "UPDATE outbox SET status = 'uncertain', detail = ? WHERE user_id = ? AND status = 'sending'",
                (detail, user_id),
            ).rowcount

        return await self._write(work)

    async def users_needing_work(self, now_ms: int, limit: int) -> list[str]:
        def work(db: sqlite3.Connection) -> list[str]:
            rows = db.execute(
                "SELECT user_id FROM (SELECT user_id FROM inbox WHERE handled_ms IS NULL "
                "UNION SELECT user_id FROM outbox WHERE status IN ('pending', 'sending')) "
                "WHERE user_id NOT IN (SELECT user_id FROM leases WHERE until_ms > ?) LIMIT ?",
                (now_ms, limit),
            ).fetchall()
            return [row[0] for row in rows]

        return await self._read(work)


def _settle(outcomes: list[Outcome]) -> None:
    for future, result, error in outcomes:
        if future.done():  # the caller was cancelled meanwhile; the write itself stands
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
