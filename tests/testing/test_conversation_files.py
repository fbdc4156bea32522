"""Conversation test files: a deliberately wrong expectation in a copy of the example tests fails with a clear
message, through `otnflow test` and through pytest; malformed files are refused with lines."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine.flow import FlowError
from engine.testing.conversations import load_conversations

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "flows" / "tests" / "test_sneaker_drop.toml"
RIGHT = 'action_calls = ["hold_pair"], action_args = { size = "42" }'
WRONG = 'action_calls = ["hold_pair"], action_args = { size = "43" }'


def broken_copy(tmp_path: Path) -> tuple[Path, int]:
    """The example file, with paths made absolute and one expectation made wrong; returns it and that line."""
    text = EXAMPLE.read_text()
    assert RIGHT in text
    text = text.replace(
        "[conversation]\n",
        f'[conversation]\nflows = "{ROOT / "flows"}"\n'
        f'templates = "{ROOT / "templates"}"\nconfig = "{ROOT / "config.toml"}"\n',
    )
    text = text.replace(RIGHT, WRONG)
    path = tmp_path / "test_sneaker_copy.toml"
    path.write_text(text)
    line = next(n for n, content in enumerate(text.splitlines(), 1) if WRONG in content)
    return path, line


def test_otnflow_test_reports_file_line_step_expected_and_got(tmp_path: Path) -> None:
    path, line = broken_copy(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "test", str(path)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    out = done.stdout
    assert "ok   collectors and runners get their own message" in out  # the other tests still pass
    assert f"{path}:{line}: step 16 (expect) of 'a runner is tagged, asked, opted in" in out
    assert "action_args: expected {'size': '43'}, got {'size': '42'}" in out
    assert out.strip().endswith("4 passed, 1 failed")


def test_pytest_collects_the_file_and_fails_with_the_same_message(tmp_path: Path) -> None:
    path, line = broken_copy(tmp_path)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(path),
            "-p",
            "no:cacheprovider",
            "-q",
            "-o",
            "otnflow=true",
            "--rootdir",
            str(tmp_path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{path}:{line}: step 16 (expect)" in done.stdout
    assert "'size': '43'" in done.stdout and "'size': '42'" in done.stdout
    assert re.search(r"1 failed, 4 passed", done.stdout)


def test_the_examples_pass_through_otnflow_test() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "test", "flows/"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout
    assert done.stdout.strip().endswith("16 passed, 0 failed")
    assert "ok   arrivals: a race-day Messenger code" in done.stdout  # the referral entry points' file ran


BAD = """[[test]]
name = "bad"
steps = [
  { says = "hi", taps = "Red" },
  { advance = "soon" },
  { expect = { rpely = "x" } },
  { user = "bob", says = "hi" },
  { segment = "vip", says = "hi" },
  { ad_id = "1", says = "hi" },
  { arrives = "x", source = "billboard" },
]
"""


def test_malformed_conversation_files_list_every_problem_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "test_bad.toml"
    path.write_text(BAD)
    with pytest.raises(FlowError) as caught:
        load_conversations(path)
    found = [(d.line, d.message) for d in caught.value.diagnostics]
    assert found == [
        (
            4,
            "a step does exactly one of says, taps, opts_in, arrives, advance, notify, stub, agent_takes, "
            "agent_says, agent_done, expect; this one has says, taps",
        ),
        (5, "duration 'soon' must be a number and a unit: s, m, h or d (e.g. '25h')"),
        (6, "unknown key 'rpely'; did you mean 'reply'?"),
        (7, "unknown user 'bob'; the test's users: user"),
        (8, "'segment' and 'vars' go with 'notify'"),
        (9, "'ad_id' only go with 'arrives'"),
        (10, '\'source\' must be "link" or "ad" or "code" or "plugin" or "discover", got \'billboard\''),
    ]


@pytest.mark.parametrize(
    ("contents", "line", "message"),
    [
        # found by tests/testing/test_conversations_fuzz.py: each raised something else than FlowError
        (b"\xff\xfe[[test]]\n", 1, "cannot read conversation file"),
        (b'[[test]]\nname = "t"\nsteps = [{ says = "hi", user = ["a"] }]\n', 3, "must be a string"),
        (b'[[test]]\nname = "t"\nsteps = [{ expect = { reply_matches = 5 } }]\n', 3, "must be a string"),
        (b'[[test]]\nname = "t"\nusers = 5\nsteps = [{ says = "hi" }]\n', 3, "must be an array of tables"),
        (b'[[test]]\nname = "t"\nsteps = 5\n', 3, "must be an array of tables"),
        (b"test = 5\n", 1, "must be"),
        (b'[conversation]\nconfig = "."\n[[test]]\nname = "t"\nsteps = [{ says = "hi" }]\n', 2, "cannot use"),
        (b'[conversation]\nconfig = "a\\u0000b"\n[[test]]\nname = "t"\nsteps = [{ says = "hi" }]\n', 2, "not found"),
    ],
)
def test_broken_conversation_files_get_located_errors_not_exceptions(
    tmp_path: Path, contents: bytes, line: int, message: str
) -> None:
    path = tmp_path / "test_broken.toml"
    path.write_bytes(contents)
    with pytest.raises(FlowError) as caught:
        load_conversations(path)
    assert any(d.line == line and message in d.message for d in caught.value.diagnostics), caught.value.diagnostics
