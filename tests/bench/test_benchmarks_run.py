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


def test_webhook_bench_runs_through_the_engine_and_reports_half_the_saturating_rate() -> None:
    # Its events once used readable user ids, which the engine keeps as dead letters: no reply ever came back.
    out = run_bench("bench/webhook.py", "--users", "3", "--per-user", "3", "--timeout", "60")
    lines = out.splitlines()
    assert lines[0].startswith("cores ") and "uvloop " in lines[0] and "orjson " in lines[0], out
    rows = {line[:28].strip(): line[28:].split() for line in lines if line.startswith(("bare", "otnflow", "engine at"))}
    assert set(rows) == {"bare aiohttp pipeline", "otnflow engine (SQLite)", "engine at half that rate"}, out
    assert all(row[1] == "9" for row in rows.values()), out  # every event's reply came back, on each run


def test_actions_bench_runs() -> None:
    out = run_bench("bench/actions.py", "--rounds", "2")
    lines = out.splitlines()
    assert lines[0].startswith("cores ") and "python-jsonpath " in lines[0], out
    assert [line.split("  ")[0] for line in lines[2:]] == [
        "HTTP action call",
        "step into the HTTP action's state",
        "step into the stubbed action's state",
    ], out


def test_harness_bench_runs_and_compares_a_start_with_the_fresh_one() -> None:
    out = run_bench("bench/harness.py", "--runs", "2")
    lines = out.splitlines()
    assert lines[0].startswith("cores ") and "otnflow " in lines[0], out
    labels = [line.strip().split("  ")[0] for line in lines[1:]]
    assert "whole test" in labels and "bot start + stop" in labels and "ratio" in labels, out


def test_send_bench_runs_both_sides_and_every_send_gets_through() -> None:
    out = run_bench("bench/send.py", "--sends", "60", "--concurrency", "4", "--rounds", "2")
    lines = out.splitlines()
    assert lines[0].startswith("cores ") and "uvloop " in lines[0], out
    assert [line.split("  ")[0] for line in lines[3:5]] == ["bare aiohttp loop", "GraphClient.send"], out
    assert lines[-1].startswith("the client's CPU per send is "), out


def test_store_bench_writer_mode_runs_every_write_it_times() -> None:
    # The writer's figure is for real work: the run fails unless every inbox row, step and `sent` status landed.
    out = run_bench("bench/store.py", "--writer", "--turns", "40", "--batch", "9", "--rounds", "2")
    lines = out.splitlines()
    assert lines[0].startswith("cores ") and "otnflow " in lines[0], out
    assert lines[1].startswith("SQLite writer, 40 turns, 9 writes a transaction: CPU per turn median "), out
