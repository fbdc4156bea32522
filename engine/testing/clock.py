"""A clock the tests move by hand."""

from __future__ import annotations

import time


class ManualClock:
    def __init__(self, start_ms: int | None = None) -> None:
        self._now = start_ms if start_ms is not None else int(time.time() * 1000)

    def now_ms(self) -> int:
        return self._now

    def advance(self, *, days: float = 0, hours: float = 0, minutes: float = 0, seconds: float = 0) -> int:
        self._now += int(((days * 24 + hours) * 60 + minutes) * 60_000 + seconds * 1000)
        return self._now
