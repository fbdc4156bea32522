"""Every `otnflow` command, given bad arguments, ends in one line saying what is wrong (plus located diagnostics
for broken flows), never a traceback. Run in-process through `main`, the console script's entry point: an
exception escaping it is what a user would see as a traceback."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from engine.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]

BAD_CALLS: list[tuple[str, ...]] = [
    ("check", "no/such/dir"),
    ("check", "--config", "nosuch.toml", "flows"),
    ("graph", "nosuch.toml"),
    ("graph", "flows"),
    ("graph", "config.toml"),
    ("serve", "--config", "nosuch.toml"),
    ("serve", "--port", "99999"),
    ("notify", "restock"),  # local mode: the CLI sends real messages only
    ("stats", "--config", "nosuch.toml"),
    ("inbox", "--config", "nosuch.toml"),
    ("inbox", "--limit", "many"),
    ("test", "nosuch"),
    ("test", "flows/broken_tests"),
    ("chat", "bakerry"),
    ("doctor", "--config", "nosuch.toml"),
    ("schema", "extra"),
    ("init", "."),  # config.toml and README.md are there already
    ("nosuchcommand",),
]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the example project, with one broken conversation file, as the working directory."""
    shutil.copytree(ROOT / "flows", tmp_path / "flows")
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    shutil.copy(ROOT / "config.toml", tmp_path / "config.toml")
    broken = tmp_path / "flows" / "broken_tests"
    broken.mkdir()
    (broken / "test_broken.toml").write_text('[conversation]\nflow = 3\n\n[[test]]\nname = "x"\nsteps = "no"\n')
    monkeypatch.chdir(tmp_path)
    for name in ("OTNFLOW_PAGE_TOKEN", "OTNFLOW_CONFIG", "OTNFLOW_GRAPH_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def run(args: tuple[str, ...]) -> int:
    try:
        return main(list(args))
    except SystemExit as exit:  # argparse's usage errors and the commands' own exits end the same way
        return int(exit.code or 0)


@pytest.mark.parametrize("args", BAD_CALLS, ids=" ".join)
def test_a_bad_call_fails_with_a_line_not_a_traceback(
    project: Path, args: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(args)
    out, err = capsys.readouterr()
    assert code != 0, out + err
    assert "Traceback" not in out + err
    assert err.strip() or out.strip(), "says something"


def test_every_command_has_a_bad_call_above() -> None:
    parser = build_parser()
    commands = next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(commands) <= {args[0] for args in BAD_CALLS}


def test_an_unknown_flow_names_the_flows_there_are_not_a_setting(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(("chat", "wine_shp")) == 2
    err = capsys.readouterr().err
    assert err == (
        "otnflow chat: no flow named 'wine_shp'; did you mean 'wine_shop'? (the flows: sneaker_drop, wine_shop)\n"
    )


def test_a_missing_flows_folder_is_named(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.rmtree(project / "flows")
    assert run(("serve",)) == 1
    err = capsys.readouterr().err
    assert f"{project / 'flows'}:1: error: no such flows folder or file" in err
