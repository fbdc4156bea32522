"""What a new author runs into in their first hour with conversation tests, the `bot` fixture and `otnflow chat`
(issue 15): a misspelt flow, templates named only in the test file, a marker keyword, a value with a space."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from engine.testing.chat import run as chat
from tests.conftest import SHOP_FLOW

ROOT = Path(__file__).resolve().parents[2]


def otnflow_test(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "test", str(path)],
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_misspelt_conversation_flow_is_one_located_line_with_the_flows_there_are(tmp_path: Path) -> None:
    test = tmp_path / "test_wine.toml"
    test.write_text(
        f'[conversation]\nconfig = "{ROOT / "config.toml"}"\nflow = "wine_shp"\n\n'
        '[[test]]\nname = "hi"\nsteps = [{ says = "hi" }]\n'
    )
    done = otnflow_test(test)
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    assert (
        f"{test}:3: error: [conversation] no flow named 'wine_shp'; did you mean 'wine_shop'? "
        "(the flows: sneaker_drop, wine_shop) [flow]"
    ) in done.stdout
    assert "flows.default" not in done.stdout


def test_conversation_templates_are_used_without_a_config_file(tmp_path: Path) -> None:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "shop.toml").write_text(SHOP_FLOW)
    (tmp_path / "words").mkdir()
    (tmp_path / "words" / "hello.j2").write_text("Good morning {{ user.first_name }}!")
    test = tmp_path / "test_shop.toml"
    test.write_text(
        '[conversation]\nflows = "flows"\ntemplates = "words"\n\n'
        '[[test]]\nname = "greets"\nuser = { id = "ann", first_name = "Ann" }\n'
        'steps = [{ says = "hi" }, { expect = { reply = "Good morning Ann!" } }]\n'
    )
    assert not any((folder / "config.toml").exists() for folder in [tmp_path, *tmp_path.parents])
    done = otnflow_test(test)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed, 0 failed" in done.stdout


def test_unknown_conversation_settings_are_located_errors(tmp_path: Path) -> None:
    test = tmp_path / "test_wine.toml"
    test.write_text(
        f'[conversation]\nconfig = "{ROOT / "config.toml"}"\nsettings = {{ policy_page_in_ue = true }}\n\n'
        '[[test]]\nname = "hi"\nsteps = [{ says = "hi" }]\n'
    )
    done = otnflow_test(test)
    assert done.returncode == 1
    assert f"{test}:3: error: unknown setting 'policy_page_in_ue': did you mean 'policy_page_in_eu'?" in done.stdout


MARKED = """
import pytest

@pytest.mark.otnflow(flow="sneaker_drop")
async def test_the_marker_chooses_the_flow(bot):
    rita = bot.user("rita", first_name="Rita")
    await rita.says("hi")
    assert rita.last_reply.text.startswith("Hey Rita! The Adidas SL13 drop")

@pytest.mark.otnflow(flw="sneaker_drop")
async def test_a_misspelt_keyword_fails(bot):
    pass
"""


def test_the_marker_chooses_the_flow_and_refuses_unknown_keywords(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        (ROOT / "config.toml")
        .read_text()
        .replace('dir = "flows"', f'dir = "{ROOT / "flows"}"')
        .replace('templates = "templates"', f'templates = "{ROOT / "templates"}"')
    )
    (tmp_path / "test_marked.py").write_text(MARKED)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "asyncio_mode=auto",
            "-o",
            "otnflow=true",
            "test_marked.py",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},  # the example's own modules (its Python action)
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "1 passed, 1 error" in done.stdout, done.stdout
    assert "@pytest.mark.otnflow: unknown keyword 'flw': did you mean 'flow'?" in done.stdout


async def test_chat_refuses_a_value_cut_at_a_space_and_takes_quoted_ones() -> None:
    lines = iter(
        [
            "hi",
            "2",
            "/optin",
            "/advance 25h",
            "/notify restock product=Sauvignon 2024",
            '/notify restock product="Sauvignon 2024"',
            "/help",
        ]
    )
    out = io.StringIO()
    assert await chat("wine_shop", ROOT / "config.toml", "alice", lambda: next(lines, None), out) == 0
    text = out.getvalue()
    assert (
        "!! '2024' is not key=value: was product='Sauvignon' cut at a space? quote it: product=\"Sauvignon 2024\""
    ) in text
    assert "bot (notification): The Sauvignon 2024 is back, Alice!" in text
    assert text.count("(notification)") == 1  # the cut value sent nothing
    assert '/notify back_in_stock item="almond croissant"' in text  # /help
