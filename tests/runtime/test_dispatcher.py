"""The dispatcher on its own (docs/architecture.md, promise 3): a user's events one at a time in timestamp order, one
worker per user, removed when idle, users in parallel up to `dispatcher.concurrency`; jobs in the user's turn, their
errors to their awaiter; a failing step recorded on its event. Real parts (tests/runtime/parts.py); steps observed
through a step middleware."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from engine.runtime import dispatcher as dispatcher_module
from engine.store import Backend
from tests.conftest import wait_until
from tests.runtime.parts import PartsFactory, StepLog


async def test_a_users_events_go_one_at_a_time_in_timestamp_order_through_one_worker(
    start_parts: PartsFactory,
) -> None:
    log = StepLog()
    parts = await start_parts(middlewares=[log])
    dispatcher = parts.runtime.dispatcher
    first = await parts.receive("ann", "1", "2", "3", at=0)
    later = await parts.receive("ann", "4", "5", at=10)
    dispatcher.wake("ann", list(reversed(later)))  # handed newest first: the worker sorts by timestamp
    dispatcher.wake("ann", list(reversed(first)))  # more work while the worker runs: the same worker takes it
    assert dispatcher.active_users == 1
    await dispatcher.idle(5)
    assert log.texts_of("ann") == ["1", "2", "3", "4", "5"]
    assert log.most_at_once_per_user == 1
    assert parts.texts_to("ann") == [f"echo: {text}" for text in log.texts_of("ann")]  # each reply before the next


async def test_one_batch_handed_out_of_order_is_handled_oldest_first(start_parts: PartsFactory) -> None:
    log = StepLog()
    parts = await start_parts(middlewares=[log])
    events = await parts.receive("ann", "a", "b", "c", "d")
    parts.runtime.dispatcher.wake("ann", [events[2], events[0], events[3], events[1]])
    await parts.runtime.dispatcher.idle(5)
    assert log.texts_of("ann") == ["a", "b", "c", "d"]
    assert parts.texts_to("ann") == ["echo: a", "echo: b", "echo: c", "echo: d"]


async def test_work_handed_while_the_worker_finishes_is_not_lost(start_parts: PartsFactory) -> None:
    """The wake-up race: an event stored while the user's worker does the last thing it knows of (here a job,
    after the user's events were drained)."""
    log = StepLog()
    parts = await start_parts(middlewares=[log])
    dispatcher = parts.runtime.dispatcher

    async def job() -> None:  # the user's only work: the worker will check for more right after it
        dispatcher.wake("ann", await parts.receive("ann", "hello"))

    await asyncio.wait_for(dispatcher.run_job("ann", job), 5)
    await dispatcher.idle(5)
    assert log.texts_of("ann") == ["hello"]
    assert parts.inbox("ann") == [("m_ann_0", True, None)]


async def test_a_worker_exists_only_while_its_user_has_work(start_parts: PartsFactory) -> None:
    parts = await start_parts()
    dispatcher = parts.runtime.dispatcher
    dispatcher.wake("ann", await parts.receive("ann", "hello"))
    dispatcher.wake("bob", await parts.receive("bob", "hello"))
    assert dispatcher.active_users == 2
    await dispatcher.idle(5)
    assert dispatcher.active_users == 0
    dispatcher.wake("ann", await parts.receive("ann", "again", at=10))  # a new worker for new work
    assert dispatcher.active_users == 1
    await dispatcher.idle(5)
    assert dispatcher.active_users == 0
    assert parts.texts_to("ann") == ["echo: hello", "echo: again"]


async def test_users_run_in_parallel_but_never_more_than_the_concurrency(start_parts: PartsFactory) -> None:
    log = StepLog(gate=asyncio.Event())
    parts = await start_parts(middlewares=[log], dispatcher_concurrency=2)
    dispatcher = parts.runtime.dispatcher
    users = [f"u{i}" for i in range(5)]
    for user in users:
        dispatcher.wake(user, await parts.receive(user, "hi"))
    await wait_until(lambda: log.in_flight == 2, timeout=5, what="two users' steps at once")
    await asyncio.sleep(0.05)  # room for a third to start, were the bound not kept
    assert log.in_flight == 2 and len(log.started) == 2
    assert dispatcher.active_users == 5  # every user has a worker; three wait for a slot
    assert log.gate is not None
    log.gate.set()
    await dispatcher.idle(5)
    assert log.most_at_once == 2
    assert sorted(who for who, _ in log.started) == users
    assert all(parts.texts_to(user) == ["echo: hi"] for user in users)


async def test_a_failing_step_is_recorded_on_its_event_and_the_users_next_event_is_handled(
    start_parts: PartsFactory,
) -> None:
    async def boom(user: str, text: str) -> None:
        if text == "boom":
            raise ValueError("the step broke")

    parts = await start_parts(middlewares=[StepLog(before=boom)])
    dispatcher = parts.runtime.dispatcher
    dispatcher.wake("ann", await parts.receive("ann", "before", "boom", "after"))
    await dispatcher.idle(5)
    assert parts.inbox("ann") == [
        ("m_ann_0", True, None),
        ("m_ann_1", True, "ValueError: the step broke"),  # handled with its error: kept, never retried forever
        ("m_ann_2", True, None),
    ]
    assert parts.texts_to("ann") == ["echo: before", "echo: after"]
    assert parts.outbox("ann") == [("sent", "m_fake_1"), ("sent", "m_fake_2")]  # nothing queued for the broken one
    assert parts.metrics.events_failed._value.get() == 1
    assert await parts.store.pending_events("ann") == []
    assert dispatcher.active_users == 0


async def test_a_job_runs_in_the_users_turn_and_its_result_reaches_the_awaiter(start_parts: PartsFactory) -> None:
    log = StepLog(gate=asyncio.Event())
    parts = await start_parts(middlewares=[log])
    dispatcher = parts.runtime.dispatcher
    dispatcher.wake("ann", await parts.receive("ann", "first"))
    await wait_until(lambda: log.in_flight == 1, timeout=5, what="ann's step")
    steps_beside: dict[str, int] = {}

    def job_for(user: str) -> Callable[[], Awaitable[str]]:
        async def job() -> str:
            steps_beside[user] = log.running.get(user, 0)  # the user's steps running beside the job: none
            return "delivered"

        return job

    result = asyncio.create_task(dispatcher.run_job("ann", job_for("ann")))
    other = asyncio.create_task(dispatcher.run_job("bob", job_for("bob")))  # bob has no worker: one is made
    assert await asyncio.wait_for(other, 5) == "delivered"
    await asyncio.sleep(0.02)
    assert not result.done()  # waits for ann's step in progress
    assert log.gate is not None
    log.gate.set()
    assert await asyncio.wait_for(result, 5) == "delivered"
    assert steps_beside == {"ann": 0, "bob": 0}
    assert parts.texts_to("ann") == ["echo: first"]
    await dispatcher.idle(5)
    assert dispatcher.active_users == 0


async def test_a_job_that_raises_fails_its_awaiter_only_and_the_worker_goes_on(start_parts: PartsFactory) -> None:
    log = StepLog(gate=asyncio.Event())
    parts = await start_parts(middlewares=[log])
    dispatcher = parts.runtime.dispatcher
    dispatcher.wake("ann", await parts.receive("ann", "first"))
    await wait_until(lambda: log.in_flight == 1, timeout=5, what="ann's step")
    error = LookupError("no token")

    async def failing() -> None:
        raise error

    async def fine() -> str:
        return "ok"

    failed = asyncio.create_task(dispatcher.run_job("ann", failing))  # queued behind the step, in this order
    after = asyncio.create_task(dispatcher.run_job("ann", fine))
    await asyncio.sleep(0)
    assert log.gate is not None
    log.gate.set()
    with pytest.raises(LookupError) as raised:
        await asyncio.wait_for(failed, 5)
    assert raised.value is error  # the job's own error, not a wrapper
    assert await asyncio.wait_for(after, 5) == "ok"  # the next job in the same turn still ran
    dispatcher.wake("ann", await parts.receive("ann", "second", at=10))  # and the user's next event is handled
    await dispatcher.idle(5)
    assert parts.texts_to("ann") == ["echo: first", "echo: second"]


class _StoreDown(Exception):
    pass


async def test_when_the_worker_itself_fails_its_queued_jobs_get_an_error_and_the_user_is_retried(
    start_parts: PartsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step fails and recording the failure fails too (the store is briefly down): the worker gives up its
    turn; the jobs waiting in it are not left hanging, and the user's events are read again from the store."""
    monkeypatch.setattr(dispatcher_module, "RETRY_AFTER_FAILURE", 0.05)
    log = StepLog(gate=asyncio.Event())
    parts = await start_parts(middlewares=[log])
    store: Backend = parts.store
    real_fail_event = store.fail_event
    down = {"fail_event": 1}

    async def fail_event_once(key: str, error: str, now_ms: int) -> None:
        if down["fail_event"]:
            down["fail_event"] -= 1
            raise _StoreDown("the store is down")
        await real_fail_event(key, error, now_ms)

    monkeypatch.setattr(store, "fail_event", fail_event_once)

    async def boom(user: str, text: str) -> None:
        if text == "boom":
            raise ValueError("the step broke")

    log.before = boom
    dispatcher = parts.runtime.dispatcher
    dispatcher.wake("ann", await parts.receive("ann", "boom"))
    await wait_until(lambda: log.in_flight == 1, timeout=5, what="ann's step")

    async def job() -> str:
        return "ok"

    queued = asyncio.create_task(dispatcher.run_job("ann", job))
    await asyncio.sleep(0)
    assert log.gate is not None
    log.gate.set()
    with pytest.raises(RuntimeError, match="the user's worker failed"):
        await asyncio.wait_for(queued, 5)
    # retried from the store: the event fails again, and this time its error is recorded
    await wait_until(lambda: parts.inbox("ann")[0][1], timeout=5, what="the retry to record the error")
    assert parts.inbox("ann") == [("m_ann_0", True, "ValueError: the step broke")]
    assert log.texts_of("ann") == ["boom", "boom"]
