"""The store's figures /healthz and /metrics show: table counts, the OTN loop per topic, the unsubscribed users.

Read by one background task (web/monitoring.py starts it), never by a probe or a scrape: the OTN log is never
pruned, so grouping it on every scrape would cost more as the page's history grows, and a load balancer probing
every second would count whole tables every second. A probe shows the last reading and its age."""

from __future__ import annotations

import asyncio
import logging
import time

from ..runtime.clock import Clock
from ..runtime.metrics import Metrics
from ..runtime.stats import loop_stats
from ..store import Backend

log = logging.getLogger("otnflow.web")

#: /healthz calls the store unresponsive when no reading came back for this many periods, and at least
#: UNRESPONSIVE_FLOOR_SECONDS (a read that hangs never fails; a busy store is slow, not down).
MISSED_READINGS = 3
UNRESPONSIVE_FLOOR_SECONDS = 30.0


class StoreFigures:
    """The last reading of the store's figures (the counts /healthz shows; the OTN loop and unsubscribed gauges
    of /metrics are set from it), and why the last attempt failed, if it did."""

    def __init__(
        self, store: Backend, clock: Clock, metrics: Metrics, soon_days: float, refresh_seconds: float
    ) -> None:
        self.store, self.clock, self.metrics = store, clock, metrics
        self.soon_days = soon_days
        self.refresh_seconds = refresh_seconds
        self.unresponsive_after = max(refresh_seconds * MISSED_READINGS, UNRESPONSIVE_FLOOR_SECONDS)
        self.counts: dict[str, int] = {}
        self.read_at: float | None = None  # monotonic seconds of the last reading
        self.error = ""  # the last attempt's failure; "" once a reading succeeds

    async def refresh(self) -> None:
        """Read the figures now (the background task's step; tests call it to see events at once)."""
        try:  # queued together: SQLite's reader thread runs them as one batch (one hand-off, not three)
            counts, loop, unsubscribed = await asyncio.gather(
                self.store.counts(),
                loop_stats(self.store, self.clock.now_ms(), self.soon_days),
                self.store.unsubscribed_users(),
            )
        except Exception as err:  # the store is down: /healthz says so until a reading succeeds
            self.error = f"{type(err).__name__}: {err}"
            log.warning("reading the store's figures failed: %s", self.error)
            return
        self.error, self.counts, self.read_at = "", counts, time.monotonic()
        for topic, values in loop.items():
            for name, value in values.items():
                self.metrics.otn.labels(topic, name).set(value)
        self.metrics.unsubscribed.set(unsubscribed)

    def age_seconds(self) -> float:
        return time.monotonic() - self.read_at if self.read_at is not None else float("inf")

    def trouble(self) -> str:
        """Why the store looks unhealthy ('' when it does not): the last read failed, or none came back lately."""
        if self.error:
            return self.error
        if self.age_seconds() > self.unresponsive_after:
            return f"no reading of the store for {self.age_seconds():.0f} s (it does not answer)"
        return ""

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            await self.refresh()
