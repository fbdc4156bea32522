"""otnflow's pytest plugin is on wherever otnflow is installed: a project that has not opted in keeps its own `bot`
fixture name and its own `test_*.toml` files; one that opts in (ini option or `pytest_plugins`) gets both."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import engine.starter

STARTER = Path(engine.starter.__file__).parent / "project"
#: The runs are in-process (fast); engine is imported already, so pytest cannot rewrite its asserts there.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestAssertRewriteWarning")

INI = "[pytest]\ntestpaths = flows/tests\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"


def starter_project(pytester: pytest.Pytester, ini: str) -> None:
    shutil.copytree(STARTER, pytester.path, dirs_exist_ok=True)
    (pytester.path / "pytest.ini").write_text(ini)


def offers_fixture(pytester: pytest.Pytester, name: str) -> bool:
    listed = pytester.runpytest_inprocess("--fixtures", "-p", "no:cacheprovider").stdout.lines
    return any(line.split(" ")[0] == name for line in listed)


def test_a_project_that_has_not_opted_in_gets_no_bot_fixture_and_no_toml_collection(pytester: pytest.Pytester) -> None:
    starter_project(pytester, INI)
    collected = pytester.runpytest_inprocess("--collect-only", "-q", "-p", "no:cacheprovider")
    assert "test_bakery.toml" not in collected.stdout.str()
    run = pytester.runpytest_inprocess("-p", "no:cacheprovider", "flows/tests/test_bakery.py")
    run.assert_outcomes(errors=1)
    run.stdout.fnmatch_lines(["*fixture 'bot' not found*"])
    assert offers_fixture(pytester, "otnflow_bot")
    assert not offers_fixture(pytester, "bot")


@pytest.mark.parametrize(
    ("ini", "conftest"),
    [
        (INI + "otnflow = true\n", None),
        (INI, 'pytest_plugins = ["engine.testing.pytest_opt_in"]\n'),
    ],
    ids=["ini-option", "pytest_plugins"],
)
def test_a_project_that_opts_in_gets_the_bot_fixture_and_its_conversation_files_collected(
    pytester: pytest.Pytester, ini: str, conftest: str | None
) -> None:
    starter_project(pytester, ini)
    if conftest:
        (pytester.path / "conftest.py").write_text(conftest)
    collected = pytester.runpytest_inprocess("--collect-only", "-q", "-p", "no:cacheprovider")
    collected.stdout.fnmatch_lines(["flows/tests/test_bakery.py::*", "flows/tests/test_bakery.toml::*"])
    assert offers_fixture(pytester, "bot")
