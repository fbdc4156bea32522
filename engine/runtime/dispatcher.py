"""Per-user ordering within a process: one worker task per user with work, removed when idle (memory stays flat),
at most `concurrency` users at once. A worker handles the user's events oldest first, sending each event's
replies before the next event, and loops while new work arrived meanwhile.

The webhook hands freshly stored events to the worker directly, so the steady state reads nothing back from the
inbox; the store stays the source of truth (a restart, or a user whose hand-off was lost, is read from it) and
`commit_step` refuses an event already handled, so a hand-off can never cause double handling.

With leases (several processes sharing one store), a worker first takes the user's lease in the store (owner and
expiry, taken atomically), renews it while it works and releases it at the end; it reads the user's work from the
store, since other processes may have stored events for the user too. When another process holds the lease the
worker retries shortly. A sweeper wakes users with pending work and no live lease: those of a process that died,
once its leases expire."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..store import Store, StoredEvent, UserRecord
from .clock import Clock
from .conversation import StepHandler
from .metrics import Metrics
from .sender import OutboxSender

log = logging.getLogger("otnflow.dispatcher")
Job = Callable[[], Awaitable[Any]]
RETRY_AFTER_FAILURE = 5.0
PRUNE_EVERY_SECONDS = 900.0
STOPPED_WHILE_SENDING = "process stopped while sending"  # an uncertain row's detail: it may or may not have gone


class LeaseLost(Exception):
    """Another process took the user's lease (ours ran out): it carries on from the store; we step back."""


@dataclass(frozen=True)
class Leases:
    ttl_ms: int
    owner: str = ""

    @classmethod
    def for_this_process(cls, seconds: float) -> Leases:
        return cls(int(seconds * 1000), f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}")

    @property
    def retry_seconds(self) -> float:
        return min(0.25, self.ttl_ms / 4000)


class Dispatcher:
    def __init__(
        self,
        store: Store,
        handler: StepHandler,
        sender: OutboxSender,
        metrics: Metrics,
        concurrency: int,
        leases: Leases | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.handler = handler
        self.sender = sender
        self.metrics = metrics
        self.leases = leases
        self.clock = clock or handler.clock
        self._retrying: set[str] = set()
        self._lease_until: dict[str, int] = {}
        self._releases: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._pruner: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(concurrency)
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._resume: set[str] = set()  # users to read from the store (restart): their outbox, then their inbox
        self._handed: dict[str, list[StoredEvent]] = {}  # events the webhook just stored, per user with a worker
        self._jobs: dict[str, list[tuple[Job, asyncio.Future[Any]]]] = {}  # other work on a user (notifications)
        self._received_at: dict[str, float] = {}  # event key -> monotonic receipt time, for the latency histogram

    def wake(self, user_id: str, events: list[StoredEvent] | None = None) -> None:
        """New work for a user: `events` just stored, or (None) whatever the store holds for them."""
        now = time.monotonic()
        for event in events or ():
            self._received_at[event.key] = now
        if events is None or self.leases:  # with leases, the store is read: other processes store events too
            self._resume.add(user_id)
        else:
            self._handed.setdefault(user_id, []).extend(events)
        if user_id in self._workers:
            self._again.add(user_id)
            return
        self._workers[user_id] = asyncio.create_task(self._work(user_id), name="user-worker")

    async def run_job(self, user_id: str, job: Job) -> Any:
        """Run `job` in the user's turn, between their events (a campaign's delivery to them); return its result."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._jobs.setdefault(user_id, []).append((job, future))
        if user_id in self._workers:
            self._again.add(user_id)
        else:
            self._workers[user_id] = asyncio.create_task(self._work(user_id), name="user-worker")
        return await future

    async def start(self) -> int:
        """Resume what a previous process left: uncertain sends are settled, pending users woken. With leases, sends
        are settled user by user when a worker takes over an expired lease, and a sweeper looks for orphans."""
        self._pruner = asyncio.create_task(self._prune(), name="inbox pruner")
        if self.leases:
            self._sweeper = asyncio.create_task(self._sweep(), name="lease sweeper")
            return 0
        uncertain = await self.store.recover_in_flight(STOPPED_WHILE_SENDING)
        if uncertain:
            log.warning(
                "%d send(s) were in flight when the last process stopped: marked uncertain, not resent", uncertain
            )
        users = await self.store.users_with_pending_work()
        for user_id in users:
            self.wake(user_id)
        return len(users)

    async def idle(self, timeout: float = 30.0) -> None:
        """Wait until no worker runs (tests and graceful shutdown)."""
        deadline = time.monotonic() + timeout
        while self._workers and time.monotonic() < deadline:
            await asyncio.gather(*list(self._workers.values()), return_exceptions=True)
        await self.sender.flush()

    async def _prune(self) -> None:
        while True:
            try:
                pruned = await self.store.prune_inbox(self.clock.now_ms())
                if pruned:
                    log.info("pruned %d handled inbox event(s) past store.inbox_retention_days", pruned)
            except Exception:  # pruning is housekeeping: never let it take the process down
                log.exception("pruning the inbox failed")
            await asyncio.sleep(PRUNE_EVERY_SECONDS)

    async def _sweep(self) -> None:
        assert self.leases is not None
        while True:
            for user_id in await self.store.users_needing_work(self.clock.now_ms(), 1000):
                if user_id not in self._workers:
                    self.wake(user_id)
            await asyncio.sleep(self.leases.ttl_ms / 2000)

    def _retry_later(self, user_id: str) -> None:
        assert self.leases is not None
        if user_id in self._retrying:
            return
        self._retrying.add(user_id)

        def retry() -> None:
            self._retrying.discard(user_id)
            self.wake(user_id)

        asyncio.get_running_loop().call_later(self.leases.retry_seconds, retry)

    async def stop(self, timeout: float = 10.0) -> None:
        for task in (self._sweeper, self._pruner):
            if task is not None:
                task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.idle(timeout), timeout)
        for task in list(self._workers.values()):
            task.cancel()
        await asyncio.gather(*list(self._workers.values()), return_exceptions=True)
        await asyncio.gather(*list(self._releases), return_exceptions=True)
        await self.sender.flush()

    @property
    def active_users(self) -> int:
        return len(self._workers)

    async def _work(self, user_id: str) -> None:
        leased = False
        try:
            async with self._slots:
                if self.leases:
                    leased = await self.store.acquire_lease(
                        user_id, self.leases.owner, self.clock.now_ms(), self.leases.ttl_ms
                    )
                    if not leased:  # another process works on this user: try again shortly
                        self._retry_later(user_id)
                        return
                    self._lease_until[user_id] = self.clock.now_ms() + self.leases.ttl_ms
                    await self.store.recover_user_in_flight(user_id, STOPPED_WHILE_SENDING)  # a dead holder's rows
                    self._resume.add(user_id)
                while True:
                    self._again.discard(user_id)
                    await self._drain(user_id)
                    if user_id not in self._again:
                        break
        except LeaseLost:
            log.info(
                "a user's lease ran out and another process took over (dispatcher.lease_seconds too short for "
                "this store's latency?)"
            )
            leased = False
            self._retry_later(user_id)
        except Exception:  # a worker must never die silently; its events are stored: read them again shortly
            log.exception("worker for a user failed; retrying from the store in %.0fs", RETRY_AFTER_FAILURE)
            asyncio.get_running_loop().call_later(RETRY_AFTER_FAILURE, self.wake, user_id)
            for _, future in self._jobs.pop(user_id, []):
                if not future.done():
                    future.set_exception(RuntimeError("the user's worker failed"))
        finally:
            del self._workers[user_id]  # no await between the last check of _again and here: no lost wake-up
            if leased and self.leases:
                self._lease_until.pop(user_id, None)
                release = asyncio.get_running_loop().create_task(self.store.release_lease(user_id, self.leases.owner))
                self._releases.add(release)  # kept until done (and awaited at stop), not left to the collector
                release.add_done_callback(self._releases.discard)
            elif not self.leases:
                self._handed.pop(user_id, None)

    async def _renew(self, user_id: str) -> None:
        """Renew the user's lease once half of it has run out (a write per half-lease, not per event)."""
        if not self.leases:
            return
        now = self.clock.now_ms()
        if now < self._lease_until.get(user_id, 0) - self.leases.ttl_ms // 2:
            return
        if not await self.store.acquire_lease(user_id, self.leases.owner, now, self.leases.ttl_ms):
            raise LeaseLost(user_id)
        self._lease_until[user_id] = now + self.leases.ttl_ms

    async def _drain(self, user_id: str) -> None:
        user: UserRecord | None = None  # what this run last committed for the user: its next event starts there
        if user_id in self._resume:
            self._resume.discard(user_id)
            await self.sender.drain(user_id)  # rows a previous run left pending go first: they are older
            while events := await self.store.pending_events(user_id):
                user = await self._handle_all(events, user)
        while handed := self._handed.pop(user_id, None):
            user = await self._handle_all(sorted(handed, key=lambda e: e.timestamp), user)
        while queued := self._jobs.get(user_id):
            await self._renew(user_id)  # a lost lease leaves the job queued, for the user's next turn
            job, future = queued.pop(0)
            if not queued:
                del self._jobs[user_id]
            try:
                future.set_result(await job())
            except Exception as err:  # the job's owner gets the error; the worker goes on
                future.set_exception(err)

    async def _handle_all(self, events: list[StoredEvent], user: UserRecord | None) -> UserRecord | None:
        for event in events:
            await self._renew(event.user_id)
            try:
                outcome = await self.handler.handle(event, not self.sender.health.halt_reason, user)
                user = outcome.user
            except Exception as err:
                user = None  # unknown state after a failure: read it again
                self.metrics.events_failed.inc()
                log.exception("handling event %s failed", event.key)
                await self.store.fail_event(event.key, f"{type(err).__name__}: {err}", self.handler.clock.now_ms())
            else:
                await self.sender.send(outcome.user, outcome.outbox)
            started = self._received_at.pop(event.key, None)
            if started is not None:
                self.metrics.handling_seconds.observe(time.monotonic() - started)
        return user
