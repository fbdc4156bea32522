"""`otnflow init DIR` makes a project that works outside this repository: its own check, test, pytest and serve
pass there with no further setup (CI does exactly what a new author does, in a temporary folder)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import aiohttp
import jsonschema
import pytest
import tomli

from engine.flow.shapes import schema_text
from engine.starter import project_files
from tests.conftest import free_port, local_serve_replies, stop_serve

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "otnflow"  # the console script `pip install` made


def outside_env() -> dict[str, str]:
    """The environment of a shell in the new folder: no OTNFLOW_* settings, nothing pointing back at this repo."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("OTNFLOW_", "PYTEST_"))}


def otnflow(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "engine.cli"]
    return subprocess.run([*command, *args], cwd=cwd, env=outside_env(), capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("author")
    done = otnflow(home, "init", "bakery_bot")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "otnflow check && otnflow test && otnflow serve" in done.stdout
    return home / "bakery_bot"


def test_init_writes_config_a_flow_its_templates_a_test_gitignore_and_readme(project: Path) -> None:
    made = sorted(p.relative_to(project) for p in project.rglob("*") if p.is_file())
    assert made == project_files()
    assert {"config.toml", ".gitignore", "README.md", "flow.schema.json"} <= {str(p) for p in made}
    readme = (project / "README.md").read_text()
    assert "    otnflow serve\n" in readme
    assert "pytest" in readme
    assert "/data/" in (project / ".gitignore").read_text().splitlines()


def test_the_flows_schema_line_names_the_shipped_schema_and_the_flow_validates(project: Path) -> None:
    flow = project / "flows" / "bakery.toml"
    first = flow.read_text().splitlines()[0]
    assert first.startswith("#:schema ")
    schema_path = (flow.parent / first.removeprefix("#:schema ")).resolve()
    assert schema_path.read_text() == schema_text()
    jsonschema.validate(tomli.loads(flow.read_text()), json.loads(schema_text()))


def test_check_test_and_pytest_pass_in_the_new_folder(project: Path) -> None:
    check = otnflow(project, "check", "--strict")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "1 flow file(s), 1 ok, 0 error(s), 0 warning(s)" in check.stderr
    test = otnflow(project, "test")
    assert test.returncode == 0, test.stdout + test.stderr
    assert test.stdout.strip().endswith("1 passed, 0 failed")
    pytest_run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env=outside_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pytest_run.returncode == 0, pytest_run.stdout + pytest_run.stderr
    assert "2 passed" in pytest_run.stdout  # the conversation file and the Python test with the `bot` fixture


async def test_serve_in_the_new_folder_answers_on_loopback(project: Path) -> None:
    port = free_port()
    # /healthz shows the store's counts as read in the background: read them often here
    env = outside_env() | {"OTNFLOW_SERVER_PORT": str(port), "OTNFLOW_SERVER_FIGURES_REFRESH_SECONDS": "0.1"}
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "engine.cli"]
    process = subprocess.Popen(
        [*command, "serve"], cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await local_serve_replies(url, "otnflow serve in the new project")
        async with aiohttp.ClientSession() as session, session.get(f"{url}/playground") as response:
            assert response.status == 200
    finally:
        output = await stop_serve(process)
    assert "flows: bakery" in output
    assert process.returncode == 0
    assert (project / "data" / "otnflow.sqlite3").exists()  # in the project, as config.toml says (and .gitignore)


def test_init_refuses_to_overwrite(project: Path) -> None:
    done = otnflow(project, "init", ".")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("otnflow init: . already has ")


def test_the_package_ships_the_project(tmp_path: Path) -> None:
    """A plain `pip install` gets the project from the wheel's package data, not from this checkout. Built from a
    copy: setuptools writes build/ and *.egg-info beside the sources."""
    source = tmp_path / "src"
    shutil.copytree(ROOT / "engine", source / "engine", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(source), "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("otnflow-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {str(p).replace(".gitignore", "gitignore") for p in project_files() if p.name != "flow.schema.json"}
    assert {f"engine/starter/project/{name}" for name in shipped} <= names
    assert {"engine/web/openapi.json", "engine/web/static/playground.html"} <= names  # the admin API's document


def test_check_catches_the_bakery_authors_mistakes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 15's shop owner: `user.firstname`, a misspelt tag in a variant, a broken line in a template."""
    from engine.cli import main
    from engine.starter import create_project

    create_project(tmp_path)
    flow = tmp_path / "flows" / "bakery.toml"
    flow.write_text(
        flow.read_text()
        .replace("Good morning {{ user.first_name", "Good morning {{ user.firstname")
        .replace('when = "sweet_tooth"', 'when = "sweet_toth and not churned"')
    )
    (tmp_path / "templates" / "bakery" / "back_in_stock.j2").write_text("Good news:\nthe {{ item }} is {% if %}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["check"]) == 1
    out = capsys.readouterr().out.splitlines()
    lines = {line.split(": ", 1)[0]: line for line in out}
    assert "did you mean 'first_name'?" in lines["flows/bakery.toml:37"]
    assert any("tag 'sweet_toth' is never set by any flow; did you mean 'sweet_tooth'?" in line for line in out)
    assert any("tag 'churned' is never set" in line for line in out)
    assert lines["templates/bakery/back_in_stock.j2:2"].startswith("templates/bakery/back_in_stock.j2:2: error: ")
