"""The README's first two commands stay true: CI runs the test command verbatim; the serve command serves."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from engine.config import LOCAL_SECRET
from engine.messenger.signature import sign
from tests.conftest import wait_until, webhook_fixture

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    head = ROOT.joinpath("README.md").read_text().split("## ")[0]
    return [line.strip() for line in head.splitlines() if line.startswith("    ")]


def test_readme_opens_with_the_serve_and_test_commands() -> None:
    serve, test = readme_commands()[:2]
    assert serve.endswith("otnflow serve")
    assert test.endswith(".venv/bin/pytest")


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    test = readme_commands()[1]
    assert test in ROOT.joinpath(".ci/run").read_text().splitlines()


async def test_serve_in_local_mode_answers_a_message_through_the_fake_graph(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTNFLOW_")}
    env.update(
        OTNFLOW_SERVER_PORT=str(port),
        OTNFLOW_STORE_URL=f"sqlite:///{tmp_path / 'local.sqlite3'}",
        OTNFLOW_LOG_LEVEL="WARNING",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:

            async def up() -> bool:
                try:
                    async with session.get(f"{url}/healthz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(up, timeout=20, what="otnflow serve")
            body = webhook_fixture("text.json")
            body["entry"][0]["messaging"][0]["timestamp"] = int(time.time() * 1000)  # inside the 24h window
            raw = json.dumps(body).encode()
            async with session.post(
                f"{url}/webhook", data=raw, headers={"X-Hub-Signature-256": sign(raw, LOCAL_SECRET)}
            ) as response:
                assert response.status == 200

            async def replied() -> bool:
                async with session.get(f"{url}/healthz") as response:
                    return (await response.json())["store"].get("outbox_sent", 0) == 1

            await wait_until(replied, timeout=10, what="the reply to reach the in-process fake Graph API")
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(process.communicate, None, 20)
    assert re.search(r"LOCAL MODE: no OTNFLOW_PAGE_TOKEN set; replies go to the in-process fake Graph API", output)
    assert process.returncode == 0
