from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from engine.config import LOCAL_SECRET, OPTIONS, ConfigError, env_name, load_settings

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_config_lists_every_setting_with_its_default() -> None:
    settings = load_settings(ROOT / "config.toml", {})
    for key, option in OPTIONS.items():
        if key != "flows.default":
            assert settings.values[key] == option.default, key


def test_every_setting_is_parsed_into_its_typed_section() -> None:
    settings = load_settings(ROOT / "config.toml", {"OTNFLOW_POLICY_EU_USER_TAG": "in_eu"})
    typed = {"policy.eu_user_tag": settings.eu_user_tag}
    sections = ("server", "flows", "templates", "store", "graph", "dispatcher", "policy", "notify", "handover", "log")
    for section in sections:
        for field in fields(getattr(settings, section)):
            typed[f"{section}.{field.name}"] = getattr(getattr(settings, section), field.name)
    assert set(typed) == set(OPTIONS)
    for key, value in typed.items():
        if key != "policy.allowed_tags":  # parsed from its comma-separated text
            assert value == settings.values[key] and type(value) is type(OPTIONS[key].default), key
    assert settings.eu_user_tag == "in_eu"
    assert "HUMAN_AGENT" in settings.policy.allowed_tags


def test_every_setting_is_overridden_by_its_environment_variable() -> None:
    settings = load_settings(
        ROOT / "config.toml",
        {
            "OTNFLOW_SERVER_PORT": "9999",
            "OTNFLOW_GRAPH_URL": "http://x",
            "OTNFLOW_SERVER_ALLOW_SHA1_SIGNATURE": "yes",
            "OTNFLOW_GRAPH_TIMEOUT_SECONDS": "2",
        },
    )
    assert settings.server.port == 9999
    assert settings.graph.url == "http://x"
    assert settings.server.allow_sha1_signature is True
    assert settings.graph.timeout_seconds == 2.0
    assert env_name("dispatcher.concurrency") == "OTNFLOW_DISPATCHER_CONCURRENCY"


def test_local_mode_without_a_page_token_uses_local_secrets() -> None:
    settings = load_settings(ROOT / "config.toml", {})
    assert settings.local_mode
    assert settings.app_secret == settings.verify_token == LOCAL_SECRET


@pytest.mark.parametrize(
    ("env", "file", "message"),
    [
        (
            {"OTNFLOW_SERVER_PORT": "eighty"},
            None,
            "config: server.port = 'eighty' (from OTNFLOW_SERVER_PORT) must be an integer",
        ),
        ({}, "[server]\nprot = 1\n", "unknown setting 'server.prot'; did you mean 'server.port'?"),
        ({}, '[graph]\nmax_attempts = "3"\n', "config: graph.max_attempts = '3' ("),
        ({}, '[store]\nurl = "postgres://x"\n', "store.url = 'postgres://x' must start with sqlite:/// or mongodb://"),
        (
            {"OTNFLOW_PAGE_TOKEN": "EAAB"},
            None,
            "OTNFLOW_APP_SECRET and OTNFLOW_VERIFY_TOKEN are not set: with OTNFLOW_PAGE_TOKEN set",
        ),
        ({}, "[server\n", "TOML syntax error"),
    ],
)
def test_a_bad_setting_stops_with_one_clear_line(
    tmp_path: Path, env: dict[str, str], file: str | None, message: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(file if file is not None else "")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text


def test_relative_sqlite_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[store]\nurl = "sqlite:///data/x.sqlite3"\n')
    assert load_settings(path, {}).store_url == f"sqlite:///{tmp_path}/data/x.sqlite3"


def test_a_config_that_cannot_be_read_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe[server]\n")
    for path, reason in ((tmp_path, "Is a directory"), (tmp_path / "binary.toml", "can.t decode")):
        with pytest.raises(ConfigError, match=f"cannot read it: .*{reason}"):
            load_settings(path, {})


def test_the_event_loop_is_uvloop_or_asyncio_and_nothing_else() -> None:
    assert load_settings(ROOT / "config.toml", {}).server.event_loop == "uvloop"
    assert load_settings(ROOT / "config.toml", {"OTNFLOW_SERVER_EVENT_LOOP": "asyncio"}).server.event_loop == "asyncio"
    with pytest.raises(ConfigError, match=r"server\.event_loop = 'trio' must be uvloop or asyncio"):
        load_settings(ROOT / "config.toml", {"OTNFLOW_SERVER_EVENT_LOOP": "trio"})


def test_serve_runs_on_the_event_loop_the_settings_name() -> None:
    import uvloop

    from engine.cli import _event_loop

    for choice, uses_uvloop in (("uvloop", True), ("asyncio", False)):
        loop = _event_loop(choice)
        try:
            assert isinstance(loop, uvloop.Loop) is uses_uvloop, choice
        finally:
            loop.close()


def test_serve_collects_garbage_as_rarely_as_the_settings_say() -> None:
    import gc

    from engine.cli import _tune_gc

    assert load_settings(ROOT / "config.toml", {}).server.gc_threshold == 10_000
    with pytest.raises(ConfigError, match=r"server\.gc_threshold = -1 must be 0 or more"):
        load_settings(ROOT / "config.toml", {"OTNFLOW_SERVER_GC_THRESHOLD": "-1"})
    before = gc.get_threshold()
    try:
        _tune_gc(0)
        assert gc.get_threshold() == before and gc.get_freeze_count() == 0
        _tune_gc(12_345)
        assert gc.get_threshold() == (12_345, *before[1:])
        assert gc.get_freeze_count() > 0  # what start-up built is out of the collector's scans
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_the_example_actions_load_with_another_flows_folder(tmp_path: Path) -> None:
    """The peer benchmark (../shared/peers/run-otnflow.sh) serves a copy of this project with flows/ swapped for
    an echo flow: the example's Python actions live in shop/, not flows/, so the server still starts."""
    for part in ("config.toml", "shop", "templates"):
        source = ROOT / part
        if source.is_dir():
            shutil.copytree(source, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, tmp_path / part)
    (tmp_path / "flows").mkdir()
    shutil.copy(ROOT / "tests" / "fixtures" / "flows" / "echo.toml", tmp_path / "flows")
    load = (
        "from pathlib import Path; from engine.config import load_settings as load; "
        "print(sorted(load(Path('config.toml'), {}).action_functions()))"
    )
    done = subprocess.run([sys.executable, "-c", load], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "hold_pair" in done.stdout


def test_an_edited_config_is_read_again_and_a_broken_one_refused_each_time(tmp_path: Path) -> None:
    # The actions a config declares are checked once per text (a suite starts hundreds of servers on one file).
    path = tmp_path / "config.toml"
    declare = '[actions.stock]\nkind = "http"\nurl = "http://127.0.0.1/{{ args.sku }}"\nargs = ["sku"]\nretries = %d\n'
    path.write_text(declare % 1)
    assert load_settings(path, {}).http_actions["stock"].retries == 1
    path.write_text(declare % 3)
    assert load_settings(path, {}).http_actions["stock"].retries == 3
    path.write_text(declare % 30)
    for _ in range(2):
        with pytest.raises(ConfigError, match=r"config.toml:5: actions.stock: retries must be between 0 and 10"):
            load_settings(path, {})
