"""For each store backend, in one run: the store operations per second the hot path needs (append an inbox event,
load a user, claim a lease, save a step), and events per second through the whole path (signed webhook in, reply
at the fake Graph API out) with one `otnflow serve` process and with three sharing the store.

    python bench/store.py [--ops 2000] [--users 60] [--events 20]

MongoDB: the MongoDB at $OTNFLOW_BENCH_MONGODB_URL, else SecantusDB started on loopback (a MongoDB-compatible
server written for embedding and tests: expect a real mongod to be faster).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))  # first: the project's `actions` package, not bench/actions.py

from _common import free_port, machine_line, start_fake_graph, start_secantus, wait_http  # noqa: E402

from engine.messenger.signature import sign  # noqa: E402
from engine.store import StepWrite, StoredEvent, UserRecord, open_store  # noqa: E402

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
    args = parser.parse_args()
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
