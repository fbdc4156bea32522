"""Drains a user's outbox in order through the Send API client, recording each row's fate.

A row is marked `sending` before the call and `sent`/`failed`/... after it. A row still `sending` after a crash is
an uncertain send; at start it becomes `uncertain` and is not resent (a duplicate reply is worse than a missing one
for a chat, and Meta itself refuses a second use of an OTN token). See docs/architecture.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..messenger.client import GraphClient
from ..messenger.errors import Outcome
from ..messenger.outbound import send_body
from ..store import OutboxItem, Store
from .clock import Clock
from .metrics import Metrics

log = logging.getLogger("otnflow.sender")


@dataclass
class SendingState:
    """Process-wide: set when Meta says the page token is invalid or a permission is missing. Sending stops (rows
    stay pending, nothing is lost) until an operator fixes it and restarts."""

    stopped_reason: str = ""
    counts: dict[str, int] = field(default_factory=dict)


class OutboxSender:
    def __init__(self, store: Store, client: GraphClient, clock: Clock, metrics: Metrics, state: SendingState) -> None:
        self.store = store
        self.client = client
        self.clock = clock
        self.metrics = metrics
        self.state = state

    async def drain(self, user_id: str) -> None:
        if self.state.stopped_reason:
            return
        user = await self.store.load_user(user_id)
        for item in await self.store.pending_outbox(user_id):
            if user is not None and user.unreachable:
                await self._finish(item, "skipped", "user unreachable")
                continue
            if not await self._send(item):
                return

    async def _send(self, item: OutboxItem) -> bool:
        """Send one row. False when sending must stop (for this user or for everyone)."""
        now = self.clock.now_ms()
        await self.store.set_outbox_status(item.key, "sending", "", now)
        result = await self.client.send(send_body(item.user_id, item.message, "RESPONSE"))
        self.metrics.sends.labels(result.outcome.value).inc()
        if result.outcome is Outcome.SENT:
            await self._finish(item, "sent", result.message_id or "")
            return True
        detail = f"{result.outcome.value}: {result.detail}"
        if result.outcome in (Outcome.BAD_TOKEN, Outcome.PERMISSION):
            await self._finish(item, "pending", detail)
            self.state.stopped_reason = detail
            log.critical(
                "SENDING STOPPED: %s. Fix the page token or the app's permissions, then restart; unsent "
                "replies are kept and will go out then.",
                detail,
            )
            return False
        if result.outcome is Outcome.UNREACHABLE:
            await self._finish(item, "failed", detail)
            await self.store.mark_unreachable(item.user_id)
            log.warning("user marked unreachable; no further messages will be sent to them")
            for rest in await self.store.pending_outbox(item.user_id):
                await self._finish(rest, "skipped", "user unreachable")
            return False
        await self._finish(item, "refused" if result.outcome is Outcome.POLICY_BLOCKED else "failed", detail)
        return True

    async def _finish(self, item: OutboxItem, status: str, detail: str) -> None:
        await self.store.set_outbox_status(item.key, status, detail, self.clock.now_ms())
        self.state.counts[status] = self.state.counts.get(status, 0) + 1
