"""Helpers the benchmarks share: free loopback ports, waiting for a server to answer, the machine line every
benchmark prints first (figures mean little without the cores and versions they ran on)."""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import aiohttp


def machine_line(*packages: str) -> str:
    """`cores 2 | Python 3.11.7 | otnflow 0.1.0 | aiohttp 3.14.0 | ...`: the cores and the versions a run used."""
    names = ("otnflow", "aiohttp", "uvloop", "orjson", "transitions", "jinja2", *packages)
    versions = []
    for name in dict.fromkeys(names):
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return " | ".join([f"cores {os.cpu_count()}", f"Python {platform.python_version()}", *versions])


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


def start_secantus() -> tuple[str, subprocess.Popen[bytes] | None]:
    """SecantusDB (a MongoDB-wire server) on a loopback port, unless OTNFLOW_BENCH_MONGODB_URL names one."""
    given = os.environ.get("OTNFLOW_BENCH_MONGODB_URL")
    if given:
        return given.rstrip("/"), None
    server = shutil.which("secantusd-py") or str(Path(sys.executable).parent / "secantusd-py")
    port = free_port()
    process = subprocess.Popen(
        [server, "--host", "127.0.0.1", "--port", str(port), "--storage-path", ":memory:", "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(3)
    return f"mongodb://127.0.0.1:{port}", process
