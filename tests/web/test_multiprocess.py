"""Three `otnflow serve` processes sharing one store (a SQLite file; a MongoDB-compatible server), with signed
webhook traffic spread across them, every event delivered twice to different processes, one process killed with
SIGKILL midway, then a campaign run from two processes at once. Every event is handled once, each user's replies
keep their order, no reply or notification goes out twice and no token is used twice; the survivors take over the
killed process's users once its leases expire."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from engine.messenger.signature import sign
from engine.store import open_store
from tests.conftest import APP_SECRET, free_port, live_env, mongo_database_url, start_serve, wait_until

ROOT = Path(__file__).resolve().parents[2]
SIZES = {"sqlite": (24, 8), "mongo": (16, 6)}  # users, events each: SecantusDB is a slower server than mongod
LEASE = {"sqlite": 2.0, "mongo": 5.0}  # seconds: longer than a lease renewal takes under this load
PAGE = "106000000000001"


def serve(config: Path, graph_url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    process: subprocess.Popen[bytes] = start_serve(config, graph_url, log, "--port", str(port))
    return process


def event(user: str, n: int, now: int, **payload: object) -> dict[str, object]:
    return {"sender": {"id": user}, "recipient": {"id": PAGE}, "timestamp": now + n, **payload}


@pytest.mark.parametrize("backend", ["sqlite", "mongo"])
async def test_three_processes_share_one_store(
    backend: str,
    tmp_path: Path,
    fake_graph,  # type: ignore[no-untyped-def]
    request: pytest.FixtureRequest,
) -> None:
    users, events = SIZES[backend]
    fake, graph_url = fake_graph
    fake.clock = lambda: int(time.time() * 1000)  # Meta's rules on: the window, single-use tokens
    fake.delay = 0.005
    if backend == "sqlite":
        store_url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    else:
        store_url = mongo_database_url(request.getfixturevalue("mongo_server"), f"otnflow_mp_{uuid.uuid4().hex[:10]}")
    config = tmp_path / "config.toml"
    config.write_text(
        f'[flows]\ndir = "{ROOT / "tests/fixtures/flows"}"\ntemplates = "{tmp_path}"\ndefault = "echo"\n'
        f'[store]\nurl = "{store_url}"\n[dispatcher]\nleases = "on"\nlease_seconds = {LEASE[backend]}\n'
        '[graph]\nbackoff_base_seconds = 0.01\n[notify]\nconcurrency = 8\n[log]\nlevel = "WARNING"\n'
    )
    ports = [free_port() for _ in range(3)]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    processes = [serve(config, graph_url, port, tmp_path / f"serve{i}.log") for i, port in enumerate(ports)]
    rng = random.Random(7)
    now = int(time.time() * 1000)
    try:
        async with aiohttp.ClientSession() as session:

            async def up(url: str) -> bool:
                try:
                    async with session.get(f"{url}/healthz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            for url in urls:
                await wait_until(lambda u=url: up(u), timeout=30, what=f"{url} to start")

            async def post(url: str, item: dict[str, object]) -> int:
                raw = json.dumps({"object": "page", "entry": [{"id": PAGE, "time": now, "messaging": [item]}]})
                try:
                    async with session.post(
                        f"{url}/webhook",
                        data=raw.encode(),
                        headers={"X-Hub-Signature-256": sign(raw.encode(), APP_SECRET)},
                    ) as r:
                        return r.status
                except aiohttp.ClientError:
                    return 0  # the killed process

            async def user_traffic(u: int, alive: list[str]) -> None:
                user = f"user{u:02d}"
                for n in range(events):
                    item = event(user, n, now, message={"mid": f"m_{u}_{n}", "text": f"u{u} n{n}"})
                    fake.saw(user, now + n)
                    first, second = rng.sample(alive, 2)
                    statuses = await asyncio.gather(post(first, item), post(second, item))  # the same, racing
                    assert 200 in statuses

            # half the users with all three processes up, then one is killed, then the other half
            await asyncio.gather(*(user_traffic(u, urls) for u in range(users // 2)))
            processes[0].send_signal(signal.SIGKILL)
            await asyncio.to_thread(processes[0].wait, 10)
            survivors = urls[1:]
            await asyncio.gather(*(user_traffic(u, survivors) for u in range(users // 2, users)))

            store = open_store(store_url)
            await store.open()
            try:

                async def settled() -> bool:
                    counts = await store.counts()
                    busy = counts["inbox_pending"] + counts.get("outbox_pending", 0) + counts.get("outbox_sending", 0)
                    return busy == 0

                # MongoDB: the killed process died inside a transaction; its documents stay locked until the server
                # aborts that transaction (transactionLifetimeLimitSeconds: 60 s by default, 5 s on the suite's
                # SecantusDB, tests/secantus_server.py), then the survivors go on
                await wait_until(settled, timeout=150, what="the survivors to handle every event")
                counts = await store.counts()
                assert counts["inbox_handled"] == users * events  # each event once, duplicates dropped
                texts = Counter(m.text for m in fake.sent)
                assert max(texts.values()) == 1, "a reply went out twice"
                uncertain = counts.get("outbox_uncertain", 0)
                assert counts["outbox_sent"] + uncertain == users * events
                for u in range(users):  # each user's replies in the order of their events
                    numbers = [int((m.text or "").split(" n")[1]) for m in fake.messages_to(f"user{u:02d}")]
                    assert numbers == sorted(numbers), (u, numbers)

                # opt-ins through the survivors, then one campaign started from two processes at once
                for u in range(users):
                    user = f"user{u:02d}"
                    token = fake.issue_token(user, "otn:news:echo:x", int(time.time() * 1000))
                    item = event(
                        user,
                        100,
                        int(time.time() * 1000),
                        optin={
                            "type": "one_time_notif_req",
                            "payload": "otn:news:echo:x",
                            "one_time_notif_token": token,
                        },
                    )
                    assert await post(rng.choice(survivors), item) == 200
                await wait_until(settled, timeout=30, what="the opt-ins to be stored")
                env = live_env(graph_url)
                command = [
                    sys.executable,
                    "-m",
                    "engine.cli",
                    "notify",
                    "news",
                    "--var",
                    "headline=H",
                    "--config",
                    str(config),
                ]
                runs = [
                    subprocess.Popen(
                        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                    )
                    for _ in range(2)
                ]
                outputs = await asyncio.gather(*(asyncio.to_thread(run.communicate, None, 60) for run in runs))
                assert all(run.returncode == 0 for run in runs), "\n".join(err for _, err in outputs)
            finally:
                await store.close()
        notified = Counter(m.token_user for m in fake.sent if m.otn_token)
        assert set(notified) == {f"user{u:02d}" for u in range(users)}  # everyone...
        assert max(notified.values()) == 1  # ...exactly once
        used = Counter(fake.tokens_used())
        assert len(used) == users and max(used.values()) == 1  # no token twice
    finally:
        for process in processes[1:]:
            process.send_signal(signal.SIGTERM)
        for process in processes[1:]:
            await asyncio.to_thread(process.wait, 20)
