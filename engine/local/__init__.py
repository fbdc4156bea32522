"""Local mode: a fake Graph API faithful to messenger-platform.md, so a bot runs (playground, `serve --local`)
and is tested without Meta. A product feature, not test support: `web` and `testing` both import it."""

from .fake_graph import FakeGraph, SentMessage

__all__ = ["FakeGraph", "SentMessage"]
