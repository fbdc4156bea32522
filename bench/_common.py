"""Helpers the benchmarks share: free loopback ports, waiting for a server to answer."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_http(url: str, timeout: float = 30) -> None:
    """Until `url` answers below 500 (bounded in time)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    if response.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def start_fake_graph(port: int, root: Path) -> subprocess.Popen[bytes]:
    """The fake Graph API in its own process on loopback (stop it with .terminate())."""
    return subprocess.Popen(
        [sys.executable, "-m", "engine.local.fake_graph", "--port", str(port)],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
