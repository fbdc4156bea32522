"""The step handler on its own (docs/architecture.md, promises 1, 2 and 4): one event, one atomic write (user,
outbox rows, the event's handled mark); a replay writes nothing; replies the gate refuses are stored `refused`
with the reason and never handed to the sender; a step that raises writes nothing, and the dispatcher records its
error on the event."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from engine.runtime.inspection import refused_messages
from engine.store import OPERATIONS, Backend, OutboxStatus
from tests.runtime.parts import ROOT, Parts, PartsFactory


def record_calls(monkeypatch: pytest.MonkeyPatch, store: Backend) -> list[str]:
    """The store's operations, each still doing its work, named in a list as they are called."""
    calls: list[str] = []
    for name in OPERATIONS:
        operation = getattr(store, name)

        def recorded(*args: Any, _name: str = name, _operation: Callable[..., Awaitable[Any]] = operation) -> Any:
            calls.append(_name)
            return _operation(*args)

        monkeypatch.setattr(store, name, recorded)
    return calls


async def test_a_step_reads_once_and_writes_once(start_parts: PartsFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = await start_parts()
    (event,) = await parts.receive("ann", "hello")
    calls = record_calls(monkeypatch, parts.store)
    outcome = await parts.runtime.handler.handle(event, send_now=True)
    assert calls == ["load_for_step", "commit_step"]
    assert outcome.committed
    # that one write holds the user, the reply (already `sending`: the caller sends it now) and the handled mark
    assert parts.outbox("ann") == [("sending", "")]
    assert [item.status for item in outcome.outbox] == [OutboxStatus.SENDING]
    assert parts.inbox("ann") == [("m_ann_0", True, None)]
    stored = await parts.store.load_user("ann")
    assert stored is not None and stored.state == "echo" and stored.last_interaction_ms == event.timestamp


async def test_the_next_step_starts_from_the_record_just_committed_without_reading_it(
    start_parts: PartsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = await start_parts()
    first, second = await parts.receive("ann", "1", "2")
    done = await parts.runtime.handler.handle(first)
    calls = record_calls(monkeypatch, parts.store)
    await parts.runtime.handler.handle(second, user=done.user)
    assert calls == ["commit_step"]
    assert [status for status, _ in parts.outbox("ann")] == ["pending", "pending"]


async def test_a_replayed_event_writes_nothing(start_parts: PartsFactory) -> None:
    parts = await start_parts()
    (event,) = await parts.receive("ann", "hello")
    assert (await parts.runtime.handler.handle(event)).committed
    replay = await parts.runtime.handler.handle(event)  # another worker, or a retry, got there first
    assert not replay.committed and replay.outbox == []
    assert parts.outbox("ann") == [("pending", "")]


async def test_refused_replies_are_stored_with_the_reason_and_never_handed_to_the_sender(
    start_parts: PartsFactory,
) -> None:
    parts = await start_parts(flows_dir=ROOT / "flows", flows_default="wine_shop", policy_otn_available=False)
    hi, white = await parts.receive("ann", "hi", "White")
    user = (await parts.runtime.handler.handle(hi)).user
    outcome = await parts.runtime.handler.handle(white, send_now=True, user=user)
    refused = [(status, detail) for status, detail in parts.outbox("ann") if status == "refused"]
    assert refused == [("refused", "otn_unavailable")]
    assert OutboxStatus.REFUSED not in [item.status for item in outcome.outbox]
    assert [item.status for item in outcome.outbox][:1] == [OutboxStatus.SENDING]  # a row that may go, not it
    (shown,) = await refused_messages(parts.store, "ann")
    assert (shown["kind"], shown["topic"], shown["reason"]) == ("otn_request", "restock", "otn_unavailable")
    assert await parts.store.count_otn_log("ann", "restock", "request_refused:otn_unavailable", 0) == 1
    assert parts.metrics.policy_refusals.labels("otn_request", "otn_unavailable")._value.get() == 1


DIVIDING_FLOW = """
[flow]
name = "divide"
start = "divide"

[states.divide]
say = "{{ 10 // (text | int) }}"

[[states.divide.on]]
regex = "."
goto = "divide"
"""


async def dividing_parts(start_parts: PartsFactory, tmp_path: Path) -> Parts:
    """A flow whose reply divides by what the user wrote: "0" makes its step raise."""
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "divide.toml").write_text(DIVIDING_FLOW)
    return await start_parts(flows_dir=folder, flows_default="divide")


async def test_a_step_that_raises_writes_nothing(start_parts: PartsFactory, tmp_path: Path) -> None:
    parts = await dividing_parts(start_parts, tmp_path)
    (event,) = await parts.receive("ann", "0")
    with pytest.raises(ZeroDivisionError):
        await parts.runtime.handler.handle(event)
    assert await parts.store.load_user("ann") is None
    assert parts.outbox("ann") == []
    assert parts.inbox("ann") == [("m_ann_0", False, None)]


async def test_the_dispatcher_records_a_raising_steps_error_on_its_event(
    start_parts: PartsFactory, tmp_path: Path
) -> None:
    parts = await dividing_parts(start_parts, tmp_path)
    parts.runtime.dispatcher.wake("ann", await parts.receive("ann", "0", "5"))
    await parts.runtime.dispatcher.idle(5)
    assert parts.inbox("ann") == [
        ("m_ann_0", True, "ZeroDivisionError: integer division or modulo by zero"),
        ("m_ann_1", True, None),
    ]
    assert parts.texts_to("ann") == ["2"]
    assert parts.metrics.events_failed._value.get() == 1
