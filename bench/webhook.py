"""Signed events per second through the whole engine (receive, store, handle, reply to the fake Graph API) versus a
bare aiohttp pipeline that only verifies the signature and posts one fixed reply per event, in one run, on
loopback, with the same bounded load. Prints both rates, the ratio, and p50/p99 latency from receipt to reply.

    python bench/webhook.py [--users 100] [--per-user 30]

Three processes: the fake Graph API, the server under test (engine or bare), and this load generator. Each user
sends its events one after another (a real user waits for the reply... here only for the 200), users in parallel.
Then the engine gets the same load paced at half the rate it just reached: the latency a user sees when the
server is busy but not saturated (at saturation, receipt-to-reply mostly measures the queue).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))  # first: the project's `actions` package, not bench/actions.py

from _common import free_port, machine_line, start_fake_graph, wait_http  # noqa: E402

from engine.messenger.signature import sign  # noqa: E402

SECRET = "bench-secret"
PAGE_ID = "106000000000001"


async def sent_records(graph: str) -> list[dict]:  # type: ignore[type-arg]
    async with aiohttp.ClientSession() as session, session.get(f"{graph}/_fake/sent") as response:
        return await response.json()  # type: ignore[no-any-return]


async def load(
    server: str, graph: str, users: int, per_user: int, timeout: float, rate: float | None = None
) -> dict[str, float]:
    """`rate`: events per second for all users together, paced (event n of user u is due at (n * users + u) /
    rate); None: as fast as the server answers."""
    posted: dict[tuple[str, int], float] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=users)) as session:
        async with session.post(f"{graph}/_fake/reset") as response:
            await response.read()

        async def user(u: int) -> None:
            psid = str(7_100_000_000_000_000 + u)  # Meta's user ids are digits (others are dead letters)
            for n in range(per_user):
                if rate:
                    await asyncio.sleep(max(0.0, start + (n * users + u) / rate - time.time()))
                event = {
                    "sender": {"id": psid},
                    "recipient": {"id": PAGE_ID},
                    "timestamp": int(time.time() * 1000),
                    "message": {"mid": f"m{u}_{n}_{time.time_ns()}", "text": f"u{u} n{n}"},
                }
                raw = json.dumps({"object": "page", "entry": [{"id": PAGE_ID, "time": 1, "messaging": [event]}]})
                data = raw.encode()
                posted[(psid, n)] = time.time()
                async with session.post(
                    f"{server}/webhook", data=data, headers={"X-Hub-Signature-256": sign(data, SECRET)}
                ) as response:
                    assert response.status == 200, response.status

        # The load's own garbage collections would pause its posting (26-52 ms gen-2 runs, measured) and count as
        # the server's latency: none while it posts.
        gc.collect()
        gc.disable()
        start = time.time()
        try:
            await asyncio.gather(*(user(u) for u in range(users)))
        finally:
            gc.enable()
        total = users * per_user
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            records = await sent_records(graph)
            if len(records) >= total:
                break
            await asyncio.sleep(0.05)
    done = max(r["at"] for r in records)
    latencies = []
    seen: dict[str, int] = {}
    for record in sorted(records, key=lambda r: r["at"]):
        uid = record["recipient"]["id"]
        n = seen.get(uid, 0)
        seen[uid] = n + 1
        latencies.append(record["at"] - posted[(uid, n)])
    latencies.sort()
    return {
        "events": total,
        "replies": len(records),
        "seconds": done - start,
        "rate": len(records) / (done - start),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


def start(cmd: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--per-user", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()

    graph_port = free_port()
    graph = f"http://127.0.0.1:{graph_port}"
    fake = start_fake_graph(graph_port, ROOT)
    results: dict[str, dict[str, float]] = {}
    try:
        await wait_http(f"{graph}/_fake/sent")
        with tempfile.TemporaryDirectory() as tmp:
            bare_port = free_port()
            bare = start([sys.executable, str(ROOT / "bench" / "bare_pipeline.py"), str(bare_port), graph, SECRET])
            try:
                await wait_http(f"http://127.0.0.1:{bare_port}/healthz")
                results["bare aiohttp pipeline"] = await load(
                    f"http://127.0.0.1:{bare_port}", graph, args.users, args.per_user, args.timeout
                )
            finally:
                stop(bare)
            engine_port = free_port()
            config = Path(tmp) / "config.toml"
            config.write_text(
                f'[server]\nport = {engine_port}\n[flows]\ndir = "{ROOT / "tests/fixtures/flows"}"\n'
                f'templates = "{tmp}"\ndefault = "echo"\n[store]\nurl = "sqlite:///{tmp}/bench.sqlite3"\n'
                '[log]\nlevel = "WARNING"\n'
            )
            engine = start(
                [sys.executable, "-m", "engine.cli", "serve", "--config", str(config)],
                {
                    "OTNFLOW_APP_SECRET": SECRET,
                    "OTNFLOW_PAGE_TOKEN": "bench-token",
                    "OTNFLOW_VERIFY_TOKEN": "v",
                    "OTNFLOW_GRAPH_URL": graph,
                },
            )
            try:
                await wait_http(f"http://127.0.0.1:{engine_port}/healthz")
                if os.environ.get("BENCH_PROFILE"):
                    subprocess.Popen(
                        [
                            "py-spy",
                            "record",
                            "-o",
                            os.environ["BENCH_PROFILE"],
                            "-f",
                            "raw",
                            "-d",
                            "8",
                            "-p",
                            str(engine.pid),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                saturated = await load(
                    f"http://127.0.0.1:{engine_port}", graph, args.users, args.per_user, args.timeout
                )
                results["otnflow engine (SQLite)"] = saturated
                results["engine at half that rate"] = await load(
                    f"http://127.0.0.1:{engine_port}",
                    graph,
                    args.users,
                    args.per_user,
                    args.timeout,
                    rate=saturated["rate"] / 2,
                )
            finally:
                stop(engine)
    finally:
        stop(fake)

    print(machine_line())
    print(f"load: {args.users} users x {args.per_user} events, one signed event per request, loopback, 3 processes")
    print(f"{'pipeline':<28}{'events/s':>10}{'replies':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, r in results.items():
        print(f"{name:<28}{r['rate']:>10.0f}{r['replies']:>10.0f}{r['p50_ms']:>10.1f}{r['p99_ms']:>10.1f}")
    ratio = results["otnflow engine (SQLite)"]["rate"] / results["bare aiohttp pipeline"]["rate"]
    print(f"engine / bare rate: {ratio:.0%}")


if __name__ == "__main__":
    asyncio.run(main())
