"""The runtime tests' shared setup: the example bot (flows/, templates/, config.toml) under the flow-test harness."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from engine.testing.harness import Bot
from tests.conftest import example_bot


@pytest.fixture
async def bot() -> AsyncIterator[Bot]:
    async with example_bot() as running:
        yield running
