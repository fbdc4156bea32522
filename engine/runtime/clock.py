"""Time is injected (promise 7): every decision takes `now` from a Clock the tests can move. The two clocks that
move by hand (the playground's and the tests') share one `advance`, which only goes forward."""

from __future__ import annotations

import math
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...


def wall_ms() -> int:
    return int(time.time() * 1000)


class SystemClock:
    def now_ms(self) -> int:
        return wall_ms()


class _MovableClock:
    """A base time plus an offset that only grows."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def _base_ms(self) -> int:
        raise NotImplementedError

    def now_ms(self) -> int:
        return self._base_ms() + self.offset_ms

    def advance(self, *, days: float = 0, hours: float = 0, minutes: float = 0, seconds: float = 0) -> int:
        """Move forward by the sum of the given amounts; returns the new now. A negative or infinite step is a
        ValueError: a clock that went back would let a closed window reopen."""
        step_ms = (((days * 24 + hours) * 60 + minutes) * 60 + seconds) * 1000
        if not math.isfinite(step_ms) or step_ms < 0:
            raise ValueError(
                f"the clock only moves forward, by a finite amount (not {days=}, {hours=}, {minutes=}, {seconds=})"
            )
        self.offset_ms += int(step_ms)
        return self.now_ms()


class OffsetClock(_MovableClock):
    """Wall-clock time plus an offset: the playground's clock, which an author moves forward to see the 24h window
    close and tokens age, while everything else keeps running in real time."""

    def _base_ms(self) -> int:
        return wall_ms()


class ManualClock(_MovableClock):
    """Stands still until moved: the tests' clock (`engine.testing.ManualClock`)."""

    def __init__(self, start_ms: int | None = None) -> None:
        super().__init__()
        self.start_ms = start_ms if start_ms is not None else wall_ms()

    def _base_ms(self) -> int:
        return self.start_ms
