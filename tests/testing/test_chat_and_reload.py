"""`otnflow chat` driven through a scripted session, and local mode's reload of changed flow files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from aiohttp import web

from engine.config import load_settings
from engine.web import create_app
from engine.web.keys import FLOWS
from engine.web.playground import PLAYGROUND
from tests.conftest import serve_on_loopback, wait_until

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """hi
2
/optin
/tags
/advance 25h
/notify restock product="Sauvignon 2024"
1
/tap Rosé
/state
/quit
"""


def test_chat_runs_a_scripted_session_through_the_otn_loop() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "chat", "wine_shop", "--user", "alice"],
        cwd=ROOT,
        input=SCRIPT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "chatting with wine_shop as alice; /quit to leave"
    assert "bot: Hi Alice! Welcome to the cellar. Red or white tonight?" in lines
    assert "     [1] Red  [2] White  [3] Surprise me" in lines  # numbered quick replies; "2" tapped White
    assert "bot: [Notify Me] Tell me when the Sauvignon 2024 is back   (/optin restock)" in lines
    assert "-- tags: ['likes_white']" in lines
    assert "-- notification restock: {'delivered': 1}" in lines
    assert any(line.startswith("bot (notification): The Sauvignon 2024 is back, Alice!") for line in lines)
    after_tap = lines[lines.index("     [1] Show me  [2] Menu") + 1 :]
    assert after_tap[0] == "bot: [Notify Me] Tell me when the Sauvignon 2024 is back   (/optin restock)"  # the loop
    assert "!! alice cannot tap 'Rosé': the last message offering choices" in done.stdout
    assert "-- state: back_in_stock" in lines


async def test_local_mode_reloads_changed_flows_that_pass_the_checker_and_keeps_them_otherwise(tmp_path: Path) -> None:
    flows, templates = tmp_path / "flows", tmp_path / "templates"
    shutil.copytree(ROOT / "flows", flows, ignore=shutil.ignore_patterns("tests"))
    shutil.copytree(ROOT / "templates", templates)
    settings = load_settings(
        ROOT / "config.toml",
        {
            "OTNFLOW_FLOWS_DIR": str(flows),
            "OTNFLOW_FLOWS_TEMPLATES": str(templates),
            "OTNFLOW_STORE_URL": f"sqlite:///{tmp_path / 's.sqlite3'}",
            "OTNFLOW_LOG_LEVEL": "WARNING",
        },
    )
    app = create_app(settings)
    served = await serve_on_loopback(app)
    try:
        wine = flows / "wine_shop.toml"
        wine.write_text(wine.read_text().replace("Welcome to the cellar.", "Welcome to the new cellar."))
        await wait_until(
            lambda: app[PLAYGROUND].reload_status.startswith("flows reloaded"),
            timeout=10,
            what="the edited flow to be reloaded",
        )
        assert "Welcome to the new cellar." in _welcome(app)

        wine.write_text(wine.read_text().replace('goto = "red"', 'goto = "rde"', 1))
        await wait_until(
            lambda: app[PLAYGROUND].reload_status.startswith("flow change NOT loaded"),
            timeout=10,
            what="the broken flow to be refused",
        )
        assert "unknown state 'rde'; did you mean 'red'?" in app[PLAYGROUND].reload_status
        assert "Welcome to the new cellar." in _welcome(app)
    finally:
        await served.runner.cleanup()


def _welcome(app: web.Application) -> str:
    """The running wine shop's welcome text: of the flows the app holds now."""
    return app[FLOWS].current.flows["wine_shop"].spec.states["welcome"].say.text or ""
