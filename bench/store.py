"""For each store backend, in one run: the store operations per second the hot path needs (append an inbox event,
load a user, claim a lease, save a step), and events per second through the whole path (signed webhook in, reply
at the fake Graph API out) with one `otnflow serve` process and with three sharing the store.

    python bench/store.py [--ops 2000] [--users 60] [--events 20]
    python bench/store.py --writer [--turns 5000] [--batch 30] [--rounds 5]

`--writer`: only the SQLite writer's work for the peer load's turns (the inbox row, the step's commit with one
reply marked `sending`, that reply's `sent` status one batch later), `--batch` writes a transaction as group commit
makes them under load (~31 on average in `measure.sh`'s load), on a real file, one thread: its CPU per turn
(`time.thread_time`). Load-independent in instructions: run it under
`valgrind --tool=callgrind --separate-threads=yes` and read the thread numbered 2 (the benchmark's writer).

MongoDB: the MongoDB at $OTNFLOW_BENCH_MONGODB_URL, else SecantusDB started on loopback (a MongoDB-compatible
server written for embedding and tests: expect a real mongod to be faster).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))  # first: the project's `actions` package, not bench/actions.py

from _common import free_port, machine_line, start_fake_graph, start_secantus, wait_http  # noqa: E402

from engine.messenger.events import EventKind  # noqa: E402
from engine.messenger.signature import sign  # noqa: E402
from engine.store import OutboxItem, OutboxStatus, StatusMark, StepWrite, StoredEvent, UserRecord, open_store  # noqa: E402
from engine.store.sqlite import Job, SqliteStore  # noqa: E402

SECRET = "bench-secret"


async def store_ops(url: str, ops: int, concurrency: int = 32) -> dict[str, float]:
    store = open_store(url)
    await store.open()
    rates: dict[str, float] = {}
    now = int(time.time() * 1000)
    users = [f"u{i}" for i in range(ops)]

    async def measure(name: str, op) -> None:  # type: ignore[no-untyped-def]
        queue = list(range(ops))
        start = time.perf_counter()

        async def worker() -> None:
            while queue:
                await op(queue.pop())

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        rates[name] = ops / (time.perf_counter() - start)

    await measure(
        "append inbox event",
        lambda i: store.add_events(
            [
                StoredEvent(
                    key=f"e{i}",
                    user_id=users[i],
                    page_id="p",
                    timestamp=now + i,
                    kind="message",
                    body='{"message": {"mid": "x"}}',
                    received_ms=now,
                )
            ]
        ),
    )
    await measure(
        "save a step (commit_step)",
        lambda i: store.commit_step(
            StepWrite(event_key=f"e{i}", user=UserRecord(user_id=users[i], state="welcome", tags={"likes_white"})), now
        ),
    )
    await measure("load a user", lambda i: store.load_user(users[i]))
    await measure("claim a lease", lambda i: store.acquire_lease(users[i], "bench", now, 10_000))
    await store.close()
    return rates


class _KeptJobs:
    """Stands in for the store's writer thread: keeps each write job, for `writer_turns` to run in batches."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []

    def submit(self, fn):  # type: ignore[no-untyped-def]
        future = asyncio.get_running_loop().create_future()
        self.jobs.append((fn, future))
        return future


def _turn(store: SqliteStore, i: int, now: int, users: int) -> list[Coroutine[Any, Any, Any]]:
    """Turn i's first two writes as the server makes them: its inbox row, then its step (one reply, `sending`)."""
    uid, key, text = f"u{i % users}", f"m_{now}_{i}", f"hello {now} #{i}"
    body = json.dumps(
        {"sender": {"id": uid}, "recipient": {"id": "p"}, "timestamp": now + i, "message": {"mid": key, "text": text}}
    )
    event = StoredEvent(
        key=key, user_id=uid, page_id="p", timestamp=now + i, kind=EventKind.MESSAGE, body=body, received_ms=now
    )
    user = UserRecord(
        user_id=uid, page_id="p", flow="echo", state="echo", last_interaction_ms=now, last_message_ms=now,
        created_ms=now, variables={"text": text},
    )  # fmt: skip
    reply = OutboxItem(key=f"{key}#0", user_id=uid, message={"text": f"You said: {text}"}, status=OutboxStatus.SENDING)
    return [store.add_events([event]), store.commit_step(StepWrite(event_key=key, user=user, outbox=[reply]), now)]


async def writer_turns(path: Path, turns: int, batch: int, users: int = 500) -> float:
    """µs of the writer thread's CPU per turn: the store's own write jobs, made by its public methods, run through
    its group commit on one thread, each transaction holding `batch` // 3 turns' inbox rows and steps and the `sent`
    marks of the turns before them, one job as the sender hands them over (the queue and the event loop's settling
    left out)."""
    store = SqliteStore(path)
    kept = _KeptJobs()
    store._writer = kept  # type: ignore[assignment]
    now = int(time.time() * 1000)
    per_batch = max(1, batch // 3)
    tasks = []
    transactions: list[list[Job]] = []
    for first in range(0, turns, per_batch):
        kept.jobs.clear()
        writes: list[Awaitable[Any]] = [
            w for i in range(first, min(turns, first + per_batch)) for w in _turn(store, i, now, users)
        ]
        if first:  # the replies of the transaction before, sent meanwhile: their `sent` marks, one job (QueuedMarks)
            sent = range(first - per_batch, first)
            writes.append(
                store.set_outbox_statuses([StatusMark(f"m_{now}_{i}#0", OutboxStatus.SENT, "", now) for i in sent])
            )
        tasks += [asyncio.ensure_future(w) for w in writes]
        await asyncio.sleep(0)  # each runs to its submit
        transactions.append(list(kept.jobs))
    spent: list[float] = []
    errors: list[BaseException] = []

    def run() -> None:
        db = store._create_schema()
        start = time.thread_time()
        for jobs in transactions:
            errors.extend(error for _, _, error in store._group_commit(db, jobs) if error is not None)
        spent.append(time.thread_time() - start)
        db.close()

    writer = threading.Thread(target=run, name="bench-writer")
    writer.start()
    writer.join()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    with contextlib.closing(sqlite3.connect(path)) as db:  # every write landed: the figure is for real work
        handled = db.execute("SELECT count(*) FROM inbox WHERE handled_ms IS NOT NULL").fetchone()[0]
        sent = db.execute("SELECT count(*) FROM outbox WHERE status = 'sent'").fetchone()[0]
    if errors or handled != turns or sent != (turns - 1) // per_batch * per_batch:  # the last replies stay `sending`
        raise RuntimeError(f"the writes did not all land: {errors[:1]}, {handled} handled, {sent} sent of {turns}")
    return spent[0] * 1e6 / turns


async def whole_path(store_url: str, processes: int, users: int, events: int, graph: str, tmp: Path) -> float:
    config = tmp / f"config-{uuid.uuid4().hex[:6]}.toml"
    config.write_text(
        f'[flows]\ndir = "{ROOT / "tests/fixtures/flows"}"\ntemplates = "{tmp}"\ndefault = "echo"\n'
        f'[store]\nurl = "{store_url}"\n[dispatcher]\nleases = "{"on" if processes > 1 else "auto"}"\n'
        'lease_seconds = 10.0\n[log]\nlevel = "WARNING"\n'
    )
    env = {
        **os.environ,
        "OTNFLOW_APP_SECRET": SECRET,
        "OTNFLOW_PAGE_TOKEN": "t",
        "OTNFLOW_VERIFY_TOKEN": "v",
        "OTNFLOW_GRAPH_URL": graph,
    }
    ports = [free_port() for _ in range(processes)]
    servers = [
        subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "serve", "--config", str(config), "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    rng = random.Random(1)
    try:
        for url in urls:
            await wait_http(f"{url}/healthz")
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{graph}/_fake/reset") as r:
                await r.read()
            now = int(time.time() * 1000)

            async def user(u: int) -> None:
                for n in range(events):
                    item = {
                        "sender": {"id": f"u{u}"},
                        "recipient": {"id": "p"},
                        "timestamp": now + n,
                        "message": {"mid": f"m{u}_{n}_{now}", "text": f"u{u} n{n}"},
                    }
                    raw = json.dumps({"object": "page", "entry": [{"id": "p", "time": now, "messaging": [item]}]})
                    async with session.post(
                        f"{rng.choice(urls)}/webhook",
                        data=raw.encode(),
                        headers={"X-Hub-Signature-256": sign(raw.encode(), SECRET)},
                    ) as r:
                        assert r.status == 200

            started = time.time()  # wall clock: the fake Graph API stamps replies with it
            await asyncio.gather(*(user(u) for u in range(users)))
            total = users * events
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                async with session.get(f"{graph}/_fake/sent") as r:
                    sent = await r.json()
                if len(sent) >= total:
                    break
                await asyncio.sleep(0.05)
            assert len(sent) >= total, f"only {len(sent)} of {total} replies"
            return total / (max(m["at"] for m in sent) - started)
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
        for server in servers:
            server.wait(timeout=30)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--users", type=int, default=60)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--writer", action="store_true", help="only the SQLite writer's CPU per turn")
    parser.add_argument("--turns", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.writer:
        with tempfile.TemporaryDirectory() as tmp:
            rounds = [
                await writer_turns(Path(tmp) / f"w{n}.sqlite3", args.turns, args.batch) for n in range(args.rounds)
            ]
        print(machine_line())
        print(
            f"SQLite writer, {args.turns} turns, {args.batch} writes a transaction: CPU per turn "
            f"median {statistics.median(rounds):.1f} µs, min {min(rounds):.1f} (rounds: "
            + ", ".join(f"{r:.1f}" for r in rounds)
            + f"; load {os.getloadavg()[0]:.1f})"
        )
        return
    graph_port = free_port()
    graph = f"http://127.0.0.1:{graph_port}"
    fake = start_fake_graph(graph_port, ROOT)
    mongo_base, secantus = start_secantus()
    results = []
    try:
        await wait_http(f"{graph}/_fake/sent")
        with tempfile.TemporaryDirectory() as tmp:
            for name, make_url in (
                ("SQLite", lambda: f"sqlite:///{tmp}/{uuid.uuid4().hex[:8]}.sqlite3"),
                (
                    "MongoDB" if os.environ.get("OTNFLOW_BENCH_MONGODB_URL") else "MongoDB (SecantusDB)",
                    lambda: f"{mongo_base}/bench_{uuid.uuid4().hex[:8]}?directConnection=true",
                ),
            ):
                ops = await store_ops(make_url(), args.ops)
                one = await whole_path(make_url(), 1, args.users, args.events, graph, Path(tmp))
                three = await whole_path(make_url(), 3, args.users, args.events, graph, Path(tmp))
                results.append((name, ops, one, three))
    finally:
        fake.terminate()
        if secantus is not None:
            secantus.terminate()
    print(machine_line("pymongo", "secantusdb"))
    print(
        f"store operations per second (32 concurrent), then events/s through the whole path "
        f"({args.users} users x {args.events} events, spread over the processes)"
    )
    header = list(results[0][1])
    print(f"{'backend':<22}" + "".join(f"{h:>28}" for h in header) + f"{'1 process ev/s':>16}{'3 processes ev/s':>18}")
    for name, ops, one, three in results:
        print(f"{name:<22}" + "".join(f"{ops[h]:>28.0f}" for h in header) + f"{one:>16.0f}{three:>18.0f}")


if __name__ == "__main__":
    asyncio.run(main())
