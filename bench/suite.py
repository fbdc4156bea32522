"""The test suite's speed, like for like: the tests two commits have in common, run alternately on each.

    python bench/suite.py OLD NEW [--rounds 2] [--workers 4] [--lock /tmp/otnflow-measure.lock]

Each commit is exported with `git archive` into a temporary directory (beside a link to the project's ../shared,
which the tests read their sample webhooks from) and run by this interpreter, so both use the same installed
packages; PYTHONPATH points at the export, so `engine` and `tests` are the commit's own, not the editable install's.
The node ids both collect (`pytest --collect-only -q`) are run with `-n WORKERS`, OLD and NEW alternately, the order
flipped every round (ABBA) so drift on a shared machine does not favour one side. Each run holds the measurement
lock (released between runs, so a run never overlaps another measurement and no one waits longer than a run).

Prints, per round and commit: wall seconds, CPU seconds of pytest and everything it started (workers, servers,
SecantusDB: less sensitive to a busy machine than the wall clock), the load average when the run began and
pytest's summary; then NEW/OLD per round. A failed test makes its row not comparable: the summary says so.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_line

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True, kw_only=True)
class Run:
    wall: float
    cpu: float
    load: float
    summary: str
    failed: list[str]  # pytest's FAILED/ERROR lines: a run with any is not comparable


def export(commit: str, into: Path) -> Path:
    """`git archive COMMIT` unpacked as into/otnflow, with into/shared linked to the project's ../shared."""
    project = into / "otnflow"
    project.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(project)], input=archive, check=True)
    shared = ROOT.parent / "shared"
    if shared.is_dir():
        (into / "shared").symlink_to(shared)
    return project


def pytest_env(project: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(project)}


def collect(project: Path) -> list[str]:
    """The node ids pytest collects in `project` (which also compiles its modules, so no run pays for that)."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-n", "0", "-p", "no:cacheprovider"],
        cwd=project,
        env=pytest_env(project),
        capture_output=True,
        text=True,
        check=False,
    )
    ids = [line for line in done.stdout.splitlines() if "::" in line]
    if done.returncode != 0 or not ids:
        raise SystemExit(f"collection failed in {project}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return ids


@contextmanager
def held(lock: str | None):  # type: ignore[no-untyped-def]
    if lock is None:
        yield
        return
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run(project: Path, ids_file: Path, workers: int, lock: str | None) -> Run:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", str(workers), f"@{ids_file}"]
    with held(lock):
        load = os.getloadavg()[0]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.monotonic()
        done = subprocess.run(command, cwd=project, env=pytest_env(project), capture_output=True, text=True)
        wall = time.monotonic() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    summary = lines[-1].strip("= ") if lines else f"exit {done.returncode}"
    failed = [line for line in lines if line.startswith(("FAILED ", "ERROR "))]
    return Run(wall=wall, cpu=cpu, load=load, summary=summary, failed=failed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", help="the baseline commit (e.g. af7111c)")
    parser.add_argument("new", help="the commit to compare (e.g. main)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--lock", default="/tmp/otnflow-measure.lock", help="'' to run without one")
    parser.add_argument("--keep", action="store_true", help="keep the exports (their path is printed)")
    args = parser.parse_args()
    names = {}
    for side in (args.old, args.new):
        rev = ["git", "rev-parse", "--short", f"{side}^{{commit}}"]
        names[side] = subprocess.run(rev, cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    print(machine_line("pytest", "pytest-xdist", "hypothesis", "schemathesis", "secantusdb"))
    work = Path(tempfile.mkdtemp(prefix="otnflow-suite-"))
    try:
        projects = {side: export(side, work / label) for side, label in ((args.old, "old"), (args.new, "new"))}
        collected = {side: collect(project) for side, project in projects.items()}
        newer = set(collected[args.new])
        common = [node for node in collected[args.old] if node in newer]
        ids_file = work / "common_ids.txt"
        ids_file.write_text("".join(f"{node}\n" for node in common), encoding="utf-8")
        print(
            f"{names[args.old]} ({args.old}) collects {len(collected[args.old])}, {names[args.new]} ({args.new}) "
            f"{len(collected[args.new])}; {len(common)} node ids in common, run with -n {args.workers}"
        )
        print(f"{'round':>5}  {'commit':<8} {'wall s':>7} {'cpu s':>7} {'load':>5}  pytest")
        ratios = []
        for number in range(1, args.rounds + 1):
            order = [args.old, args.new] if number % 2 else [args.new, args.old]
            runs = {}
            for side in order:
                runs[side] = run(projects[side], ids_file, args.workers, args.lock or None)
                result = runs[side]
                print(
                    f"{number:>5}  {names[side]:<8} {result.wall:>7.1f} {result.cpu:>7.1f} {result.load:>5.1f}  "
                    f"{result.summary}",
                    flush=True,
                )
                for line in result.failed:
                    print(f"{'':>7}{line[:200]}", flush=True)
            old, new = runs[args.old], runs[args.new]
            ratios.append((new.wall / old.wall, new.cpu / old.cpu))
            comparable = not any(r.failed for r in runs.values()) and all(
                "failed" not in r.summary and "error" not in r.summary for r in runs.values()
            )
            print(
                f"{number:>5}  new/old  wall {ratios[-1][0]:.2f}  cpu {ratios[-1][1]:.2f}"
                + ("" if comparable else "  (not comparable: a run had failures)"),
                flush=True,
            )
        print("new/old per round, wall: " + ", ".join(f"{w:.2f}" for w, _ in ratios))
        print("new/old per round, cpu:  " + ", ".join(f"{c:.2f}" for _, c in ratios))
        if args.keep:
            print(f"exports kept in {work}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
