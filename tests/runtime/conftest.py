"""The runtime tests' shared setup: the example bot (flows/, templates/, config.toml) under the flow-test harness,
and the runtime's parts without the web app (tests/runtime/parts.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from engine.local import FakeGraph
from engine.testing.harness import Bot
from tests.conftest import example_bot
from tests.runtime.parts import Parts, PartsFactory, runtime_parts


@pytest.fixture
async def bot() -> AsyncIterator[Bot]:
    async with example_bot() as running:
        yield running


@pytest.fixture
async def start_parts(tmp_path: Path, fake_graph: tuple[FakeGraph, str]) -> AsyncIterator[PartsFactory]:
    """Starts the runtime's parts (see `runtime_parts`); all stopped at the test's end. Parts started twice in one
    test share the SQLite file: two processes on one store."""
    async with AsyncExitStack() as stack:

        async def start(**options: Any) -> Parts:
            return await stack.enter_async_context(runtime_parts(tmp_path, *fake_graph, **options))

        yield start
