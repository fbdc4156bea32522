"""The otnflow pytest plugin (registered through the `pytest11` entry point, so on wherever otnflow is installed).

Being installed must not change another project's test run, so by default the plugin offers only what no other
project names: the `otnflow` marker and the `otnflow_bot` fixture. A project that opts in (`otnflow = true` in its
pytest ini options, or `pytest_plugins = ["engine.testing.pytest_opt_in"]` in its root conftest.py) also gets the
`bot` fixture and the collection of conversation files (engine/testing/pytest_opt_in.py).

- The `otnflow_bot` fixture: a Bot over the project's flows (config.toml's, or those a
  `@pytest.mark.otnflow(flow=..., flows=..., templates=..., config=..., **settings)` marker names), with a fresh
  temporary store, the fake Graph API and a clock at a fixed instant. An unknown keyword fails the test (a typo
  must not silently run another flow). See engine/testing/harness.py for what a Bot and its users do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from .harness import Bot, unknown_setting

#: The marker's own keywords; any other must name a setting.
MARKER_KEYWORDS = frozenset({"flow", "flows", "templates", "config", "store_dir"})


#: The module a project's opt-in loads.
OPT_IN_PLUGIN = "engine.testing.pytest_opt_in"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "otnflow",
        type="bool",
        default=False,
        help="otnflow: offer the `bot` fixture and collect conversation files (test_*.toml)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getini("otnflow"):
        config.pluginmanager.import_plugin(OPT_IN_PLUGIN)
    config.addinivalue_line(
        "markers",
        "otnflow(flow=None, flows=None, templates=None, config=None, **settings): how the otnflow_bot fixture runs "
        "(flow: the flow new users enter; settings by name with '_' for '.', e.g. policy_page_in_eu=True)",
    )


try:
    import pytest_asyncio

    HAVE_PYTEST_ASYNCIO = True
except ImportError:  # pragma: no cover - the fixture needs pytest-asyncio; the TOML tests do not
    HAVE_PYTEST_ASYNCIO = False

if HAVE_PYTEST_ASYNCIO:

    @pytest_asyncio.fixture
    async def otnflow_bot(request: pytest.FixtureRequest) -> AsyncIterator[Bot]:
        marker = request.node.get_closest_marker("otnflow")
        options: dict[str, Any] = dict(marker.kwargs) if marker else {}
        for name in options:
            if problem := unknown_setting(name, MARKER_KEYWORDS):
                pytest.fail(f"@pytest.mark.otnflow: {problem.replace('setting', 'keyword', 1)}", pytrace=False)
        root = Path(request.config.rootpath)
        config = options.pop("config", None) or (root / "config.toml" if (root / "config.toml").exists() else None)
        async with Bot.start(
            options.pop("flows", None), options.pop("templates", None), config=config, **options
        ) as running:
            yield running
