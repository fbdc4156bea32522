"""Template filters and globals a project registers by name: in config.toml (`templates.filters`,
`templates.globals`: name=module:function) or as an installed package's entry points (`otnflow.template_filters`,
`otnflow.template_globals`). The checker and the running bot use the same ones; an unknown filter is a located
error; a bad reference stops the start with one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import ConfigError, load_settings
from engine.extensions import FILTER_GROUP
from engine.flow import Snapshot, UserInput, check_paths, load_flows
from engine.testing.harness import Bot

ROOT = Path(__file__).resolve().parents[2]
FLOW = """
[flow]
name = "till"
start = "total"

[states.total]
say = "{{ shop }}: {{ greeting('Ana') }}, your total is {{ vars.cents | default(1999) | money }}"
end = true
"""
CONFIG = """
[flows]
dir = "flows"
templates = "templates"
default = "till"

[templates]
filters = "money = tests.extensions.shop_templating:money"
globals = "shop=tests.extensions.shop_templating:SHOP_NAME, greeting=tests.extensions.shop_templating:greeting"
"""


def project(tmp_path: Path, config: str = CONFIG, flow: str = FLOW) -> Path:
    (tmp_path / "flows").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "flows" / "till.toml").write_text(flow)
    (tmp_path / "config.toml").write_text(config)
    return tmp_path / "config.toml"


def test_config_registered_filters_and_globals_render_and_pass_the_checker(tmp_path: Path) -> None:
    options = load_settings(project(tmp_path), {}, require_secrets=False).flow_options()
    flows = load_flows([tmp_path / "flows"], options)
    result = flows["till"].step(Snapshot(), UserInput(text="hi"))
    assert [r.text for r in result.replies] == ["Cellar 42: Bonjour Ana, your total is 19.99 euros"]


def test_without_the_registration_the_checker_names_the_unknown_filter_at_its_line(tmp_path: Path) -> None:
    config = project(tmp_path, CONFIG.replace('filters = "money', 'filters = "cash'))
    options = load_settings(config, {}, require_secrets=False).flow_options()
    _, diagnostics = check_paths([tmp_path / "flows"], options)
    assert [(d.line, d.message) for d in diagnostics] == [(7, "text line 1: No filter named 'money'.")]


def test_otnflow_check_uses_the_configs_filters(tmp_path: Path) -> None:
    config = project(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "check", "--config", str(config), str(tmp_path / "flows")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("listing", "message"),
    [
        ("money", "'money' must be name=module:function"),
        ("money=tests.extensions.shop_templating", "must be module:function"),
        ("money=tests.extensions.no_such_module:money", "cannot import tests.extensions.no_such_module"),
        ("money=tests.extensions.shop_templating:cash", "tests.extensions.shop_templating has no cash"),
        ("money=tests.extensions.shop_templating:SHOP_NAME", "'money' is not a function: str"),
    ],
)
def test_a_bad_reference_is_one_config_error_naming_it(tmp_path: Path, listing: str, message: str) -> None:
    config = project(tmp_path, CONFIG.replace('"money = tests.extensions.shop_templating:money"', f'"{listing}"'))
    with pytest.raises(ConfigError, match="config: templates: ") as caught:
        load_settings(config, {}, require_secrets=False).flow_options()
    assert message in str(caught.value)


def test_an_installed_packages_entry_point_registers_a_filter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    dist = site / "shop_ext-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shop-ext\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{FILTER_GROUP}]\nshout = tests.extensions.shop_templating:shout\n")
    monkeypatch.syspath_prepend(str(site))
    flow = FLOW.replace("your total is {{ vars.cents | default(1999) | money }}", "{{ 'sale' | shout }}")
    (tmp_path / "p").mkdir()
    config = project(tmp_path / "p", CONFIG, flow)
    options = load_settings(config, {}, require_secrets=False).flow_options()
    flows = load_flows([tmp_path / "p" / "flows"], options)
    assert flows["till"].step(Snapshot(), UserInput(text="hi")).replies[0].text == "Cellar 42: Bonjour Ana, SALE!"


async def test_the_running_bot_renders_with_the_registered_filter(tmp_path: Path) -> None:
    config = project(tmp_path)
    async with Bot.start(config=config) as bot:
        ana = bot.user("ana")
        await ana.says("hello")
        assert ana.last_reply.text == "Cellar 42: Bonjour Ana, your total is 19.99 euros"
