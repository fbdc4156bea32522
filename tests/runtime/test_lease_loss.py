"""Lease loss: another process takes a user's lease while this one works on the user (ours ran out). This process
steps back before its next event or job, leaves the other's lease alone, and takes the user up again once the
lease is free; nothing it had queued is lost or done twice. The other process is played by the store's own
`acquire_lease`/`release_lease` under another owner's name."""

from __future__ import annotations

import asyncio

from tests.conftest import wait_until
from tests.runtime.parts import Parts, PartsFactory, StepLog

LEASE_MS = 10_000


async def leased_parts(start_parts: PartsFactory, log: StepLog) -> Parts:
    return await start_parts(middlewares=[log], dispatcher_leases="on", dispatcher_lease_seconds=LEASE_MS / 1000)


async def lease_taken_by_other(parts: Parts, user: str) -> None:
    """Our lease runs out (the clock passes it) and the other process takes it."""
    now = parts.clock.advance(seconds=LEASE_MS / 1000 + 1)
    assert await parts.store.acquire_lease(user, "other-process", now, LEASE_MS)


async def test_a_lost_lease_stops_the_work_until_the_other_process_lets_go(start_parts: PartsFactory) -> None:
    log = StepLog(gate=asyncio.Event())
    parts = await leased_parts(start_parts, log)
    dispatcher = parts.runtime.dispatcher
    await parts.receive("ann", "1", "2")
    dispatcher.wake("ann")  # with leases, the worker reads the user's events from the store
    await wait_until(lambda: log.in_flight == 1, timeout=5, what="ann's first step")
    await lease_taken_by_other(parts, "ann")
    assert log.gate is not None
    log.gate.set()  # the step in progress commits (commit_step refuses an event handled twice); then we step back
    await wait_until(lambda: parts.texts_to("ann") == ["echo: 1"], timeout=5, what="the first reply")
    await asyncio.sleep(0.6)  # two retries (every 0.25 s) find the lease taken
    assert [e.key for e in await parts.store.pending_events("ann")] == ["m_ann_1"]
    assert log.texts_of("ann") == ["1"]
    now = parts.clock.now_ms()
    assert not await parts.store.acquire_lease("ann", "third-process", now, LEASE_MS)  # the other's lease stands
    await parts.store.release_lease("ann", "other-process")
    await wait_until(lambda: parts.texts_to("ann") == ["echo: 1", "echo: 2"], timeout=5, what="the takeover")
    await dispatcher.idle(5)
    assert log.texts_of("ann") == ["1", "2"]
    assert parts.inbox("ann") == [("m_ann_0", True, None), ("m_ann_1", True, None)]


async def test_a_job_queued_when_the_lease_is_lost_runs_in_the_users_next_turn(start_parts: PartsFactory) -> None:
    """A campaign's delivery waits in the user's turn (run_job): losing the lease must not drop it, or its awaiter
    (the campaign) would wait forever."""
    log = StepLog(gate=asyncio.Event())
    parts = await leased_parts(start_parts, log)
    dispatcher = parts.runtime.dispatcher
    await parts.receive("ann", "1")
    dispatcher.wake("ann")
    await wait_until(lambda: log.in_flight == 1, timeout=5, what="ann's step")
    ran: list[int] = []

    async def delivery() -> str:
        ran.append(parts.clock.now_ms())
        return "delivered"

    job = asyncio.create_task(dispatcher.run_job("ann", delivery))
    await lease_taken_by_other(parts, "ann")
    assert log.gate is not None
    log.gate.set()
    await asyncio.sleep(0.4)
    assert ran == [] and not job.done()  # not while the other process holds the user
    await parts.store.release_lease("ann", "other-process")
    assert await asyncio.wait_for(job, 5) == "delivered"
    assert len(ran) == 1
    await dispatcher.idle(5)
    assert dispatcher.active_users == 0
