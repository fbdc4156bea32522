"""Test support shipped with the package: a fake Graph API faithful to messenger-platform.md and a clock."""

from .clock import ManualClock
from .fake_graph import FakeGraph

__all__ = ["FakeGraph", "ManualClock"]
