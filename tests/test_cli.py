"""`otnflow check` and `otnflow graph` as an author runs them: a real process, its exit status and output."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def otnflow(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_check_passes_on_the_example_flows() -> None:
    done = otnflow("check", "flows/")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 flow file(s), 2 ok, 0 error(s)" in done.stderr


def test_check_lists_every_error_compiler_style_and_fails() -> None:
    done = otnflow("check", "--templates", "tests/flow/broken/templates", "tests/flow/broken/three_errors.toml")
    assert done.returncode == 1
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 3
    assert all(re.match(r"^tests/flow/broken/three_errors\.toml:\d+: error: ", line) for line in lines), lines


def test_check_warnings_fail_only_when_strict(tmp_path: Path) -> None:
    flow = tmp_path / "f.toml"
    flow.write_text('[flow]\nname = "f"\nstart = "a"\n[states.a]\nsay = "hi"\n')
    assert otnflow("check", str(flow)).returncode == 0
    strict = otnflow("check", "--strict", str(flow))
    assert strict.returncode == 1
    assert "dead end" in strict.stdout


def test_check_of_a_missing_path_says_so() -> None:
    done = otnflow("check", "no/such/dir")
    assert done.returncode == 2
    assert "no such file or folder: no/such/dir" in done.stderr


def test_graph_prints_mermaid_with_otn_steps_marked() -> None:
    done = otnflow("graph", "flows/wine_shop.toml")
    assert done.returncode == 0
    out = done.stdout
    assert out.startswith("stateDiagram-v2\n")
    assert "    [*] --> welcome" in out
    assert "    welcome --> red: Red" in out
    assert "    white --> sold_out: then" in out
    assert "    note right of sold_out: OTN request (restock)" in out
    assert "    class red_sold_out,sold_out otn" in out
