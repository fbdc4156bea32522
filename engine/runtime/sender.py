"""Drains a user's outbox in order through the Send API client, recording each row's fate.

A row is marked `sending` before the call and `sent`/`failed`/... after it. A row still `sending` after a crash is
an uncertain send; at start it becomes `uncertain` and is not resent (a duplicate reply is worse than a missing one
for a chat, and Meta itself refuses a second use of an OTN token). See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from ..messenger.client import GraphClient, SendResult, ThreadControl
from ..messenger.errors import Outcome
from ..messenger.outbound import send_body
from ..policy import MessageKind, Via
from ..store import OtnLogged, OtnLogLine, OutboxItem, OutboxStatus, StatusMark, Store, UserRecord
from .clock import Clock
from .handover import THREAD_CONTROL, HandoverAlert
from .metrics import Metrics
from .policy_check import Gate, outgoing_from_meta

log = logging.getLogger("otnflow.sender")


@dataclass
class SendingHealth:
    """Process-wide health of sending (not a flow's state): `halt_reason` is set when Meta says the page token is
    invalid or a permission is missing. Sending stops (rows stay pending, nothing is lost) until an operator fixes
    it and restarts. (How rows ended is counted in /metrics, `otnflow_sends_total`, and by the store.)"""

    halt_reason: str = ""


class QueuedMarks:
    """What the sender writes after a send without waiting for it: a row's `sent` mark and, for an OTN request,
    its log line. They are queued here and handed to the store together, one write (`Store.set_outbox_statuses`)
    for all that the sends of one event-loop iteration queued, instead of a task and a write per send. A mark is
    only ever queued after the step that committed its row (the send waits for that commit), and the write is
    handed over at the next iteration, before anything a later step queues. A process that dies first leaves the
    row `sending`: uncertain at restart, never resent. A write that fails is logged with the rows it leaves so."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._marks: list[StatusMark] = []
        self._logged: list[OtnLogLine] = []
        self._writes: set[asyncio.Future[None]] = set()

    def add(self, mark: StatusMark, logged: OtnLogLine | None = None) -> None:
        if not self._marks:  # the first of this iteration: hand them over once it has run
            asyncio.get_running_loop().call_soon(self._hand_over)
        self._marks.append(mark)
        if logged is not None:
            self._logged.append(logged)

    def _hand_over(self) -> None:
        if not self._marks:  # `flush` took them first
            return
        marks, logged = self._marks, self._logged
        self._marks, self._logged = [], []
        try:
            write = asyncio.ensure_future(self.store.set_outbox_statuses(marks, logged))
        except Exception as error:  # e.g. the store already closed
            _report(marks, error)
            return
        self._writes.add(write)
        write.add_done_callback(functools.partial(self._landed, marks))

    def _landed(self, marks: Sequence[StatusMark], write: asyncio.Future[None]) -> None:
        self._writes.discard(write)
        if write.cancelled():  # the process is going down (or, in tests, killed): as a crash would leave them
            return
        if (error := write.exception()) is not None:
            _report(marks, error)

    async def flush(self) -> None:
        """Hand over what is queued and wait until every write handed over has landed (or failed)."""
        self._hand_over()
        await asyncio.gather(*list(self._writes), return_exceptions=True)


def _report(marks: Sequence[StatusMark], error: BaseException) -> None:
    keys = ", ".join(mark.key for mark in marks[:5]) + (", ..." if len(marks) > 5 else "")
    log.error(
        "recording %d sent row(s) failed (%s: %s): they stay `sending` and become `uncertain` at the next start "
        "(never resent); rows %s",
        len(marks),
        type(error).__name__,
        error,
        keys,
        exc_info=error,
    )


class OutboxSender:
    def __init__(
        self,
        store: Store,
        client: GraphClient,
        clock: Clock,
        metrics: Metrics,
        health: SendingHealth,
        gate: Gate,
        alert: HandoverAlert | None = None,
    ) -> None:
        self.alert = alert
        self.store = store
        self.client = client
        self.clock = clock
        self.metrics = metrics
        self.health = health
        self.gate = gate
        self.marks = QueuedMarks(store)

    async def flush(self) -> None:
        """Wait for the status writes (and hand-over alerts) still queued (shutdown, tests)."""
        await self.marks.flush()
        if self.alert is not None:
            await self.alert.flush()

    async def drain(self, user_id: str) -> None:
        """Send whatever the user has pending in the store (after a restart, or after sending resumed)."""
        if self.health.halt_reason:
            return
        user = await self.store.load_user(user_id)
        await self.send(user, await self.store.pending_outbox(user_id))

    async def send(self, user: UserRecord | None, items: list[OutboxItem]) -> None:
        """Send rows in order; stop at the first that must stop the user's (or everyone's) sending. A user found
        unreachable is marked so in the store and on `user`, the caller's copy."""
        for item in items:
            if self.health.halt_reason:
                if item.status == OutboxStatus.SENDING:  # marked at commit, but no attempt will be made now
                    await self._finish(item, OutboxStatus.PENDING, "")
                return
            if user is not None and user.unreachable:
                await self._finish(item, OutboxStatus.SKIPPED, "user unreachable")
                continue
            outcome = await self._send(item, user)
            if outcome is Outcome.UNREACHABLE and user is not None:
                user.unreachable = True
            if outcome in (Outcome.BAD_TOKEN, Outcome.PERMISSION, Outcome.UNREACHABLE):
                return

    async def _send(self, item: OutboxItem, user: UserRecord | None) -> Outcome | None:
        """Send one row and record its fate; the outcome tells the caller whether to go on (None: refused)."""
        now = self.clock.now_ms()
        control = item.meta.kind == THREAD_CONTROL  # a Handover Protocol call: no message, no policy
        decision = None if control else self.gate.check(self.gate.facts(user), outgoing_from_meta(item.meta), now)
        if decision is not None and (decision.via is None or decision.via is Via.OTN_TOKEN):  # the last gate
            # token sends belong to campaigns (campaigns.py)
            await self._finish(item, OutboxStatus.REFUSED, decision.reason or "token sends go through a campaign")
            return None
        if item.status != OutboxStatus.SENDING:  # recorded before the attempt, so a crash mid-send is never resent
            await self.store.set_outbox_status(item.key, OutboxStatus.SENDING, "", now)
        if decision is None or decision.via is None:
            result = await self._thread_control(item, user, now)
        else:
            result = await self.client.send(send_body(item.user_id, item.message, decision.via.value, decision.tag))
            self.metrics.sends.labels(result.outcome.value).inc()
        if result.outcome is Outcome.SENT:
            # Not awaited (QueuedMarks): if the process dies before the mark lands, the row stays `sending` and
            # becomes `uncertain` at restart, which never resends it.
            mark = StatusMark(item.key, OutboxStatus.SENT, result.message_id or "", self.clock.now_ms())
            logged = None
            if not control and item.meta.kind == MessageKind.OTN_REQUEST:
                what = OtnLogged.RE_REQUEST if item.meta.re_request else OtnLogged.REQUEST
                logged = OtnLogLine(item.user_id, str(item.meta.topic), what, now)
            self.marks.add(mark, logged)
            return result.outcome
        detail = f"{result.outcome.value}: {result.detail}"
        if result.outcome in (Outcome.BAD_TOKEN, Outcome.PERMISSION):
            await self._finish(item, OutboxStatus.PENDING, detail)
            self.health.halt_reason = detail
            log.critical(
                "SENDING STOPPED: %s. Fix the page token or the app's permissions, then restart; unsent "
                "replies are kept and will go out then.",
                detail,
            )
        elif result.outcome is Outcome.UNREACHABLE:
            await self._finish(item, OutboxStatus.FAILED, detail)
            await self.store.mark_unreachable(item.user_id)
            log.warning("user marked unreachable; no further messages will be sent to them")
            for rest in await self.store.pending_outbox(item.user_id):
                await self._finish(rest, OutboxStatus.SKIPPED, "user unreachable")
        else:
            failed = OutboxStatus.REFUSED if result.outcome is Outcome.POLICY_BLOCKED else OutboxStatus.FAILED
            await self._finish(item, failed, detail)
        return result.outcome

    async def _thread_control(self, item: OutboxItem, user: UserRecord | None, now: int) -> SendResult:
        """Call the Handover Protocol endpoint a row names. A pass Meta accepted moves the thread: recorded on the
        user (the store and the caller's copy) and announced (`HandoverAlert`); a refused one leaves the bot in
        charge, said loudly (is the Page Inbox a Secondary Receiver? docs/going-live.md)."""
        message = item.message
        action = ThreadControl(str(message["thread_control"]))
        target = message.get("target_app_id")
        result = await self.client.thread_control(
            action,
            item.user_id,
            target_app_id=str(target) if target else None,
            metadata=str(message.get("metadata", "")),
        )
        if action is not ThreadControl.PASS:
            return result
        if result.outcome is not Outcome.SENT:
            self.metrics.handovers.labels("pass_failed").inc()
            log.warning("hand-over refused (%s): the bot keeps the conversation", result.detail or result.outcome.value)
            return result
        owner, state = str(target), str(message.get("state", ""))
        await self.store.set_thread_owner(item.user_id, owner, now, state)
        if user is not None:
            user.thread_owner, user.handed_over_ms, user.handover_state = owner, now, state
        self.metrics.handovers.labels("passed").inc()
        if self.alert is not None:
            self.alert.notify(item.user_id, message, now)
        return result

    async def _finish(self, item: OutboxItem, status: OutboxStatus, detail: str) -> None:
        now = self.clock.now_ms()
        await self.store.set_outbox_status(item.key, status, detail, now)
        if status in (OutboxStatus.REFUSED, OutboxStatus.FAILED) and item.meta.re_request:
            # the loop's request did not go: armed again, for the user's next engagement (used up only when sent)
            topic, source_state = str(item.meta.topic), item.meta.source_state
            await self.store.arm(item.user_id, topic, source_state, now)
