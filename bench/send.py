"""What the Send API client costs: CPU of the sending process per message, `GraphClient.send` (body, retries,
classification, the answer parsed) beside a bare aiohttp loop posting the same bytes to the same fake Graph API on
loopback, in one run. Each side runs in its own process (its CPU time is its own; the fake runs in a third), both
sides `--rounds` times, interleaved; the best of each is reported (a shared machine is noisy).

    python bench/send.py [--sends 20000] [--concurrency 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from _common import free_port, machine_line, start_fake_graph, wait_http  # noqa: E402

WARMUP = 500


def child(side: str, graph: str, sends: int, concurrency: int) -> None:
    """Post `sends` messages from this process; print its CPU seconds and wall seconds for them as JSON."""
    import aiohttp

    from engine import jsonio
    from engine.messenger.client import GraphClient, GraphSettings
    from engine.messenger.outbound import send_body

    async def main() -> dict[str, float]:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))  # as engine/web/app.py makes it
        client = GraphClient(session, GraphSettings(base_url=graph, version="21.0", page_token="t", app_secret="s"))
        url = client.url("me/messages") + "?access_token=t"
        headers = {"Content-Type": "application/json"}

        async def by_client(i: int) -> bool:
            result = await client.send(send_body(f"{i:016d}", {"text": "back in stock"}))
            return result.message_id is not None

        async def bare(i: int) -> bool:
            body = jsonio.dumps_bytes(send_body(f"{i:016d}", {"text": "back in stock"}))
            async with session.post(url, data=body, headers=headers) as response:
                return "message_id" in jsonio.loads(await response.read())

        send = by_client if side == "client" else bare

        async def batch(count: int) -> int:
            queue = iter(range(count))
            sent = 0

            async def worker() -> None:
                nonlocal sent
                for i in queue:
                    ok = await send(i)  # awaited first: `sent += await ...` would read `sent` before the wait
                    sent += ok

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return sent

        await batch(WARMUP)
        cpu, wall = time.process_time(), time.perf_counter()
        sent = await batch(sends)
        figures = {"sent": sent, "cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall}
        await session.close()
        return figures

    try:  # the server's default event loop (server.event_loop)
        from uvloop import run
    except ImportError:
        from asyncio import run
    print(json.dumps(run(main())))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sends", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=["client", "bare"])
    parser.add_argument("--graph")
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.graph, args.sends, args.concurrency)

    port = free_port()
    graph = f"http://127.0.0.1:{port}"
    fake = start_fake_graph(port, ROOT)
    best: dict[str, dict[str, float]] = {}
    try:
        asyncio.run(wait_http(f"{graph}/_fake/sent"))
        for _ in range(args.rounds):
            for side in ("bare", "client"):
                cmd = [sys.executable, __file__, "--child", side, "--graph", graph, "--sends", str(args.sends)]
                done = subprocess.run(
                    [*cmd, "--concurrency", str(args.concurrency)], capture_output=True, text=True, timeout=600
                )
                assert done.returncode == 0, done.stderr[-2000:]
                figures = json.loads(done.stdout.strip().splitlines()[-1])
                assert figures["sent"] == args.sends, figures
                if side not in best or figures["cpu"] < best[side]["cpu"]:
                    best[side] = figures
    finally:
        fake.terminate()
        fake.wait(timeout=10)
    print(machine_line())
    print(f"{args.sends} sends, concurrency {args.concurrency}, fake Graph API on loopback (separate processes)")
    print(f"{'side':<22}  {'CPU us/send':>11}  {'sends/s':>8}")
    for side, name in (("bare", "bare aiohttp loop"), ("client", "GraphClient.send")):
        figures = best[side]
        print(f"{name:<22}  {1e6 * figures['cpu'] / args.sends:>11.1f}  {args.sends / figures['wall']:>8.0f}")
    print(f"the client's CPU per send is {best['client']['cpu'] / best['bare']['cpu']:.2f}x the bare loop's")


if __name__ == "__main__":
    main()
