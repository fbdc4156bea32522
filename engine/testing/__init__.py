"""Test support shipped with the package: a manual clock, the flow-test harness, conversation files, the pytest
plugin. `FakeGraph` lives in `engine.local` (local mode uses it too) and is re-exported here for flow tests."""

from ..local.fake_graph import FakeGraph
from ..runtime.clock import ManualClock

__all__ = ["FakeGraph", "ManualClock"]
