"""The benchmarks stay runnable: a tiny run of each campaign benchmark, as a subprocess, the way a person runs it.
Figures are never asserted (speed is measured in bench/, not tested); what is asserted is that the run completes
and says which machine and versions it ran on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_bench(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_notify_bench_runs_when_both_audience_sizes_are_equal() -> None:
    # The small run and the main run once shared a store file when their sizes were equal (UNIQUE constraint).
    out = run_bench("bench/notify.py", "--users", "40", "--small", "40", "--rounds", "1", "--concurrency", "4")
    lines = out.splitlines()
    assert lines[0].startswith("cores "), out
    assert "otnflow " in lines[0] and "aiohttp " in lines[0]
    assert sum(1 for line in lines if line.split()[:1] == ["40"]) == 2, out
