"""The outbox sender on its own (docs/architecture.md, promises 1 and 4): the policy gate once more right before
each Send API call, each row's fate recorded from Meta's answer, and sending halted for everyone on a page-level
error with nothing lost. Rows are queued by the real step handler (not sent), then the sender is driven directly
against the fake Graph API on loopback."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Sequence

import pytest

from engine.local.fake_graph import SentMessage
from engine.runtime.dispatcher import STOPPED_WHILE_SENDING
from engine.store import OPERATIONS, OtnLogLine, OutboxItem, OutboxStatus, StatusMark, UserRecord
from engine.testing.harness import _dead as dead
from tests.runtime.parts import Parts, PartsFactory


async def queued(parts: Parts, user: str, *texts: str) -> tuple[UserRecord, list[OutboxItem]]:
    """The user's messages handled by the step handler, their replies committed `pending`, none sent."""
    record, rows = None, []
    for event in await parts.receive(user, *texts):
        outcome = await parts.runtime.handler.handle(event, send_now=False, user=record)
        record, rows = outcome.user, rows + outcome.outbox
    assert record is not None
    return record, rows


async def test_each_row_passes_the_gate_again_right_before_its_own_send(start_parts: PartsFactory) -> None:
    parts = await start_parts()
    await queued(parts, "ann", "1", "2")

    def window_closes_while_the_first_travels(sent: SentMessage) -> None:
        parts.clock.advance(hours=25)

    parts.fake.listeners.append(window_closes_while_the_first_travels)
    await parts.runtime.sender.drain("ann")
    await parts.runtime.sender.flush()
    assert parts.texts_to("ann") == ["echo: 1"]
    assert parts.outbox("ann") == [("sent", "m_fake_1"), ("refused", "outside_window")]
    refusals = parts.metrics.policy_refusals.labels("message", "outside_window")._value.get()
    assert refusals == 1


async def test_a_row_resumed_after_its_window_closed_is_refused_not_sent(start_parts: PartsFactory) -> None:
    parts = await start_parts()
    user, rows = await queued(parts, "ann", "hello")
    parts.clock.advance(hours=24)  # e.g. a restart a day later: the row outlived the window it was queued in
    await parts.runtime.sender.send(user, rows)
    assert parts.fake.sent == []
    assert parts.outbox("ann") == [("refused", "outside_window")]


#: Meta's answer to the first of three rows -> how the first row's detail starts, and the three rows' statuses.
FATES = {
    "551": ("unreachable: ", ["failed", "skipped", "skipped"]),  # the user is never messaged again
    "blocked": ("unreachable: ", ["failed", "skipped", "skipped"]),
    "window": ("policy_blocked: ", ["refused", "sent", "sent"]),  # Meta's policy refusal: that row only
    "no_user": ("no_user: ", ["failed", "sent", "sent"]),
    "5xx": ("retry: ", ["failed", "sent", "sent"]),  # still failing after the client's bounded retries
    "190": ("bad_token: ", ["pending", "pending", "pending"]),  # the page token is bad: all sending halts
    "permission": ("permission: ", ["pending", "pending", "pending"]),
}


@pytest.mark.parametrize("kind", list(FATES))
async def test_each_rows_fate_follows_metas_answer(start_parts: PartsFactory, kind: str) -> None:
    detail, statuses = FATES[kind]
    parts = await start_parts()
    user, rows = await queued(parts, "ann", "1", "2", "3")
    parts.fake.fail(kind, times=5 if kind == "5xx" else 1)  # config.toml's graph.max_attempts = 5
    await parts.runtime.sender.send(user, rows)
    await parts.runtime.sender.flush()
    assert [status for status, _ in parts.outbox("ann")] == statuses
    assert parts.outbox("ann")[0][1].startswith(detail)
    assert len(parts.fake.sent) == statuses.count("sent")
    unreachable = statuses[1] == "skipped"
    stored = await parts.store.load_user("ann")
    assert stored is not None and stored.unreachable is unreachable
    assert user.unreachable is unreachable  # the caller's copy says so too
    halted = statuses[0] == "pending"
    assert (
        parts.runtime.sender.health.halt_reason.startswith(detail)
        if halted
        else not parts.runtime.sender.health.halt_reason
    )


async def test_a_halt_stops_everyone_keeps_every_row_and_a_restart_sends_them(start_parts: PartsFactory) -> None:
    parts = await start_parts()
    user, rows = await queued(parts, "ann", "1")
    parts.fake.fail("190")
    await parts.runtime.sender.send(user, rows)
    assert parts.runtime.sender.health.halt_reason.startswith("bad_token: HTTP 400 code=190")
    # bob's step still commits, its first row marked `sending` to go at once; the halted sender puts it back
    (event,) = await parts.receive("bob", "hi")
    step = await parts.runtime.handler.handle(event, send_now=True)
    assert parts.outbox("bob") == [("sending", "")]
    await parts.runtime.sender.send(step.user, step.outbox)
    assert parts.outbox("bob") == [("pending", "")]  # not left `sending`: a restart would call it uncertain
    await parts.runtime.sender.drain("ann")
    assert parts.fake.sent == []
    # the operator fixes the token and restarts: a new process on the same store sends what waited, in order
    restarted = await start_parts()
    assert await restarted.runtime.dispatcher.start() == 2
    await restarted.runtime.dispatcher.idle(5)
    assert restarted.texts_to("ann") == ["echo: 1"] and restarted.texts_to("bob") == ["echo: hi"]
    assert [status for status, _ in parts.outbox("ann") + parts.outbox("bob")] == ["sent", "sent"]


async def test_the_sent_marks_queued_in_one_loop_iteration_are_one_store_write(
    start_parts: PartsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = await start_parts()
    rows: list[OutboxItem] = []
    for user in ("ann", "bob", "cy"):
        (event,) = await parts.receive(user, "hi")
        rows += (await parts.runtime.handler.handle(event, send_now=True)).outbox  # committed `sending`
    writes: list[list[str]] = []
    write = parts.store.set_outbox_statuses

    def counted(marks: Sequence[StatusMark], logged: Sequence[OtnLogLine] = ()) -> Awaitable[None]:
        writes.append([mark.key for mark in marks])
        return write(marks, logged)

    monkeypatch.setattr(parts.store, "set_outbox_statuses", counted)
    queued_marks = parts.runtime.sender.marks
    for row in rows:  # three sends that came back in the same iteration
        queued_marks.add(StatusMark(row.key, OutboxStatus.SENT, f"m_{row.user_id}", parts.clock.now_ms()))
    assert writes == []  # nothing written yet: handed over once the iteration has run
    await asyncio.sleep(0)
    assert writes == [[row.key for row in rows]]
    await parts.runtime.sender.flush()  # waits for the write handed over
    assert [parts.outbox(user) for user in ("ann", "bob", "cy")] == [[("sent", f"m_{u}")] for u in ("ann", "bob", "cy")]
    queued_marks.add(StatusMark(rows[0].key, OutboxStatus.SENT, "again", parts.clock.now_ms()))
    await parts.runtime.sender.flush()  # a mark not handed over yet: flush hands it over itself
    assert len(writes) == 2 and parts.outbox("ann") == [("sent", "again")]


async def test_a_send_whose_sent_mark_had_not_landed_when_the_process_died_is_uncertain_and_never_resent(
    start_parts: PartsFactory,
) -> None:
    parts = await start_parts()
    user, rows = await queued(parts, "ann", "hello")
    await parts.runtime.sender.send(user, rows)  # reached Meta; its `sent` mark is queued, not written yet
    assert parts.texts_to("ann") == ["echo: hello"] and parts.outbox("ann") == [("sending", "")]
    for name in OPERATIONS:  # the process dies (as the test harness kills one): it writes nothing more
        setattr(parts.store, name, dead)
    await parts.runtime.sender.flush()  # what was queued ran into the wall
    assert parts.outbox("ann") == [("sending", "")]
    restarted = await start_parts()  # a new process on the same store
    assert await restarted.runtime.dispatcher.start() == 0  # nothing to resend
    await restarted.runtime.dispatcher.idle(5)
    assert parts.outbox("ann") == [("uncertain", STOPPED_WHILE_SENDING)]
    assert parts.texts_to("ann") == ["echo: hello"]  # once


async def test_a_failing_write_of_sent_marks_is_logged_with_its_rows_and_they_stay_sending(
    start_parts: PartsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    parts = await start_parts()
    user, rows = await queued(parts, "ann", "1", "2")
    with sqlite3.connect(parts.store_path) as db:  # the file refuses the `sent` marks (as a full disk would)
        db.execute(
            "CREATE TRIGGER no_sent BEFORE UPDATE OF status ON outbox WHEN NEW.status = 'sent' "
            "BEGIN SELECT RAISE(ABORT, 'no room for sent marks'); END"
        )
    with caplog.at_level(logging.ERROR, logger="otnflow.sender"):
        await parts.runtime.sender.send(user, rows)
        await parts.runtime.sender.flush()
    assert parts.texts_to("ann") == ["echo: 1", "echo: 2"]
    assert parts.outbox("ann") == [("sending", ""), ("sending", "")]  # uncertain at the next start, never resent
    logged = [r.getMessage() for r in caplog.records if r.name == "otnflow.sender"]  # one per write (the two
    # sends came back in different iterations)
    assert logged and all("no room for sent marks" in m and "`uncertain`" in m for m in logged)
    assert all(any(row.key in m for m in logged) for row in rows)
