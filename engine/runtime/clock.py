"""Time is injected (promise 7): every decision takes `now` from a Clock the tests can move."""

from __future__ import annotations

import math
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...


class SystemClock:
    def now_ms(self) -> int:
        return int(time.time() * 1000)


class OffsetClock:
    """Wall-clock time plus an offset that only grows: the playground's clock, which an author moves forward to
    see the 24h window close and tokens age, while everything else keeps running in real time."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def now_ms(self) -> int:
        return int(time.time() * 1000) + self.offset_ms

    def advance(self, *, days: float = 0, hours: float = 0, minutes: float = 0) -> int:
        step_ms = ((days * 24 + hours) * 60 + minutes) * 60_000
        if not math.isfinite(step_ms) or step_ms < 0:
            raise ValueError(f"the clock only moves forward, by a finite amount (not {days=}, {hours=}, {minutes=})")
        self.offset_ms += int(step_ms)
        return self.now_ms()
