"""A notification campaign to N users holding tokens, against the fake Graph API on loopback, beside a bare
aiohttp client posting the same number of messages to the same fake, in one run. Prints deliveries per second
for both, the ratio, and each side's peak memory, for two audience sizes (memory must not grow with users).

    python bench/notify.py [--users 100000] [--small 10000] [--concurrency 32]

Each side runs in its own process (peak RSS is that process's own); the fake Graph API runs in a third. Both
sides run `--rounds` times, interleaved, and the best rate of each is reported (loopback figures on a shared
2-core machine are noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))  # first: the project's `actions` package, not bench/actions.py

from _common import free_port, machine_line, start_fake_graph  # noqa: E402


def seed(path: Path, users: int, fresh: bool = False) -> None:
    """Users and tokens written straight into a fresh store (the store's own schema), in bulk."""
    from engine.store.sqlite import SqliteStore

    if fresh:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    async def create() -> None:
        store = SqliteStore(path)
        await store.open()
        await store.close()

    asyncio.run(create())
    now = int(time.time() * 1000)
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO users VALUES (?, ?)",
            (
                (
                    f"u{i:07d}",
                    json.dumps(
                        {
                            "flow": "wine_shop",
                            "state": "optin_thanks",
                            "tags": ["likes_white"] if i % 2 else ["likes_red"],
                            "profile": {"first_name": "Ann"},
                            "last_interaction_ms": now - 3 * 86_400_000,
                        }
                    ),
                )
                for i in range(users)
            ),
        )
        db.executemany(
            "INSERT INTO tokens (token, user_id, topic, payload, source_state, received_ms, expires_ms, "
            "status) VALUES (?, ?, 'restock', 'otn:restock:sold_out:x', 'sold_out', ?, ?, 'valid')",
            ((f"tok{i:07d}", f"u{i:07d}", now - 86_400_000, now + 300 * 86_400_000) for i in range(users)),
        )


def child_engine(store: str, graph: str, concurrency: int) -> None:
    """Run the campaign in this process; print its figures as JSON."""
    import aiohttp

    from engine.config import load_settings
    from engine.messenger.client import GraphClient
    from engine.runtime.assembly import assemble, graph_settings
    from engine.runtime.clock import SystemClock
    from engine.runtime.flows import FlowSet, LiveFlows, load_configured_flows
    from engine.runtime.metrics import Metrics
    from engine.runtime.sender import SendingHealth
    from engine.store import open_store

    env = {
        "OTNFLOW_PAGE_TOKEN": "t",
        "OTNFLOW_APP_SECRET": "s",
        "OTNFLOW_VERIFY_TOKEN": "v",
        "OTNFLOW_STORE_URL": f"sqlite:///{store}",
        "OTNFLOW_NOTIFY_CONCURRENCY": str(concurrency),
        "OTNFLOW_NOTIFY_RATE_PER_SECOND": "0",
        "OTNFLOW_LOG_LEVEL": "WARNING",
    }
    settings = load_settings(ROOT / "config.toml", env)

    async def run() -> dict[str, float]:
        flows = load_configured_flows(settings)
        db = open_store(settings.store_url)
        await db.open()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
            graph_client = GraphClient(session, graph_settings(settings, graph))
            runtime = assemble(
                settings,
                LiveFlows(FlowSet.configured(settings, flows)),
                db,
                graph_client,
                SystemClock(),
                Metrics(),
                SendingHealth(),
                campaigns_through_dispatcher=False,
            )
            start = time.perf_counter()
            report = await runtime.campaigns.run("restock", "", {"product": "Sauvignon 2024"})
            seconds = time.perf_counter() - start
        await db.close()
        return {"delivered": report.delivered, "seconds": seconds}

    figures = asyncio.run(run())
    figures["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(figures))


def child_bare(graph: str, users: int, concurrency: int) -> None:
    """The same number of token sends, straight from one aiohttp session: the ceiling."""
    import aiohttp

    async def run() -> dict[str, float]:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(users):
            queue.put_nowait(i)
        sent = 0

        async def worker(session: aiohttp.ClientSession) -> None:
            nonlocal sent
            while not queue.empty():
                i = queue.get_nowait()
                body = {"recipient": {"one_time_notif_token": f"tok{i:07d}"}, "message": {"text": "back in stock"}}
                async with session.post(f"{graph}/v21.0/me/messages", params={"access_token": "t"}, json=body) as r:
                    await r.read()
                    sent += r.status == 200

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
            start = time.perf_counter()
            await asyncio.gather(*(worker(session) for _ in range(concurrency)))
            return {"delivered": sent, "seconds": time.perf_counter() - start}

    figures = asyncio.run(run())
    figures["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(figures))


def _rate(figures: dict[str, float]) -> float:
    return figures["delivered"] / figures["seconds"]


def measure(cmd: list[str]) -> dict[str, float]:
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=["engine", "bare"])
    parser.add_argument("--store")
    parser.add_argument("--graph")
    args = parser.parse_args()
    if args.child == "engine":
        return child_engine(args.store, args.graph, args.concurrency)
    if args.child == "bare":
        return child_bare(args.graph, args.users, args.concurrency)

    port = free_port()
    graph = f"http://127.0.0.1:{port}"
    fake = start_fake_graph(port, ROOT)
    rows = []
    try:
        time.sleep(1.5)
        with tempfile.TemporaryDirectory() as tmp:
            for run, users in enumerate((args.small, args.users)):
                me = [sys.executable, str(Path(__file__).resolve())]
                bare_cmd = [*me, "--child", "bare", "--graph", graph, "--users", str(users)]
                bare_cmd += ["--concurrency", str(args.concurrency)]
                bares, engines = [], []
                for round_ in range(args.rounds):  # interleaved: a busy spell hits both sides alike
                    store = Path(tmp) / f"bench-{run}-{round_}-{users}.sqlite3"  # a file a run: sizes may be equal
                    seed(store, users)
                    bares.append(measure(bare_cmd))
                    engine_cmd = [*me, "--child", "engine", "--graph", graph, "--store", str(store)]
                    engines.append(measure([*engine_cmd, "--concurrency", str(args.concurrency)]))
                    assert engines[-1]["delivered"] == users, engines[-1]
                    store.unlink()
                rows.append((users, max(bares, key=_rate), max(engines, key=_rate)))
    finally:
        fake.terminate()
        try:
            fake.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a loaded machine; the fake holds every message it was sent
            fake.kill()
            fake.wait(timeout=10)
    print(machine_line())
    print(
        f"campaign to N users holding a token, concurrency {args.concurrency}, fake Graph API on loopback "
        "(separate processes)"
    )
    print(
        f"{'users':>8}  {'bare msg/s':>10}  {'engine msg/s':>12}  {'ratio':>6}  {'bare peak MB':>12}  "
        f"{'engine peak MB':>14}"
    )
    for users, bare, engine in rows:
        bare_rate, engine_rate = bare["delivered"] / bare["seconds"], engine["delivered"] / engine["seconds"]
        print(
            f"{users:>8}  {bare_rate:>10.0f}  {engine_rate:>12.0f}  {engine_rate / bare_rate:>6.0%}  "
            f"{bare['peak_mb']:>12.1f}  {engine['peak_mb']:>14.1f}"
        )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
