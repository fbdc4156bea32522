"""What a project gets when it opts in to otnflow's pytest plugin (see engine/testing/pytest_plugin.py).

Opt in with `otnflow = true` in the pytest ini options, or `pytest_plugins = ["engine.testing.pytest_opt_in"]` in
the root conftest.py. Then:
- the `bot` fixture, the same Bot as `otnflow_bot`;
- conversation test files (`test_*.toml`) are collected like Python test files, one pytest item per [[test]].
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..flow import FlowError
from .conversations import ConversationFile, ConversationRunner, ConversationTest, load_conversations
from .harness import Bot

RUNNER = ConversationRunner()


@pytest.fixture
def bot(otnflow_bot: Bot) -> Bot:
    """`otnflow_bot` under the short name the project opted in to."""
    return otnflow_bot


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
