"""The README's first two commands stay true: CI runs the test command verbatim; the serve command serves."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import free_port, local_serve_replies, stop_serve

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
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTNFLOW_")}
    env.update(
        OTNFLOW_SERVER_PORT=str(port := free_port()),
        OTNFLOW_STORE_URL=f"sqlite:///{tmp_path / 'local.sqlite3'}",
        OTNFLOW_LOG_LEVEL="WARNING",
        OTNFLOW_SERVER_FIGURES_REFRESH_SECONDS="0.1",  # /healthz's counts are read in the background
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        await local_serve_replies(f"http://127.0.0.1:{port}", "otnflow serve")
    finally:
        output = await stop_serve(process)
    assert re.search(r"LOCAL MODE: no OTNFLOW_PAGE_TOKEN set; replies go to the in-process fake Graph API", output)
    assert process.returncode == 0
