"""A store that forwards every call to a real one, counting the calls by name and running a hook before any of
them: to see what a path reads and to act at a chosen point inside a step."""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable
from typing import Any

from engine.store import Backend


class SpyStore:
    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.before: dict[str, Callable[[], None]] = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            if hook := self.before.get(name):
                hook()
            return await attr(*args, **kwargs)

        return call
