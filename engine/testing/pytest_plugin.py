"""The otnflow pytest plugin (registered through the `pytest11` entry point).

- The `otnflow_bot` fixture (also as `bot`): a Bot over the project's flows (config.toml's, or those a
  `@pytest.mark.otnflow(flow=..., flows=..., templates=..., config=..., **settings)` marker names), with a fresh
  temporary store, the fake Graph API and a clock at a fixed instant. An unknown keyword fails the test (a typo
  must not silently run another flow). See engine/testing/harness.py for what a Bot and its users do.
- Conversation test files (`test_*.toml`) are collected like Python test files, one pytest item per [[test]].
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ..flow import FlowError
from .conversations import ConversationFile, ConversationRunner, ConversationTest, load_conversations
from .harness import Bot, unknown_setting

RUNNER = ConversationRunner()
#: The marker's own keywords; any other must name a setting.
MARKER_KEYWORDS = frozenset({"flow", "flows", "templates", "config", "store_dir"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "otnflow(flow=None, flows=None, templates=None, config=None, **settings): how the otnflow_bot fixture runs "
        "(flow: the flow new users enter; settings by name with '_' for '.', e.g. policy_page_in_eu=True)",
    )


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    if file_path.suffix == ".toml" and file_path.name.startswith("test_"):
        return ConversationFileCollector.from_parent(parent, path=file_path)
    return None


class ConversationFailure(AssertionError):
    pass


class ConversationFileCollector(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        try:
            conversations = load_conversations(self.path)
            RUNNER.flows(conversations)
        except FlowError as err:
            raise self.CollectError(str(err)) from None
        for test in conversations.tests:
            yield ConversationItem.from_parent(self, name=test.name, conversations=conversations, test=test)


class ConversationItem(pytest.Item):
    def __init__(self, *, conversations: ConversationFile, test: ConversationTest, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conversations = conversations
        self.test = test

    def runtest(self) -> None:
        result = asyncio.run(RUNNER.run(self.conversations, self.test))
        if not result.passed:
            raise ConversationFailure(result.failure)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ConversationFailure):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.test.line - 1, f"conversation: {self.test.name}"


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

    @pytest_asyncio.fixture
    async def bot(otnflow_bot: Bot) -> AsyncIterator[Bot]:
        yield otnflow_bot
