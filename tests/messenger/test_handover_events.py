"""Handover Protocol webhooks (messenger-platform.md): `standby[]` entries and `messaging_handovers` events become
typed events; what the bot does not record from standby is counted, never crashes."""

from __future__ import annotations

from typing import Any

import pytest

from engine.messenger.events import STANDBY, EventKind, Handover, HandoverKind, parse_webhook
from tests.conftest import webhook_fixture

USER, PAGE, T0 = "7100000000000001", "106000000000001", 1764240000000
INBOX = "263902037430900"


def handover_body(kind: str, event: dict[str, Any]) -> dict[str, Any]:
    item = {"sender": {"id": USER}, "recipient": {"id": PAGE}, "timestamp": T0, kind: event}
    return {"object": "page", "entry": [{"id": PAGE, "time": T0, "messaging": [item]}]}


def test_a_standby_message_is_kept_as_standby() -> None:
    parsed = parse_webhook(webhook_fixture("standby.json"))
    (event,) = parsed.events
    assert (event.kind, event.key, event.text, event.standby) == ("message", "m_stby1", "to the inbox app", True)
    assert event.stored_kind == STANDBY
    assert not parsed.skipped


def test_standby_receipts_are_counted_under_one_label_and_an_agents_echo_is_kept() -> None:
    """A read receipt in standby is counted; the echo of a person's reply in the Page Inbox is kept as the agent's
    (its user is the recipient), for the idle timeout; an echo without a mid is rejected, naming the field."""
    body = webhook_fixture("standby.json")
    entry = body["entry"][0]
    echo = {"mid": "m_agent1", "is_echo": True, "app_id": 263902037430900, "text": "Hello!"}
    entry["standby"] += [
        {"sender": {"id": USER}, "recipient": {"id": PAGE}, "timestamp": T0 + 1, "read": {"watermark": T0}},
        {"sender": {"id": PAGE}, "recipient": {"id": USER}, "timestamp": T0 + 2, "message": echo},
        {"sender": {"id": PAGE}, "recipient": {"id": USER}, "timestamp": T0 + 3, "message": {"is_echo": True}},
    ]
    parsed = parse_webhook(body)
    assert [(e.key, e.stored_kind) for e in parsed.events] == [("m_stby1", STANDBY), ("m_agent1", EventKind.AGENT_ECHO)]
    assert (parsed.events[1].user_id, parsed.events[1].page_id) == (USER, PAGE)
    assert parsed.skipped == {STANDBY: 1}
    (rejected,) = parsed.rejected
    assert rejected.kind == EventKind.AGENT_ECHO and "mid" in rejected.reason


def test_a_broken_standby_list_is_rejected_alone() -> None:
    body = webhook_fixture("text.json")
    body["entry"][0]["standby"] = {"not": "a list"}
    parsed = parse_webhook(body)
    assert len(parsed.events) == 1
    (rejected,) = parsed.rejected
    assert rejected.reason == "entry[0].standby must be a list"


@pytest.mark.parametrize(
    ("kind", "event", "expected"),
    [
        (
            "pass_thread_control",
            {"new_owner_app_id": "1517776481860111", "previous_owner_app_id": INBOX, "metadata": "done"},
            Handover(
                kind=HandoverKind.PASS,
                new_owner_app_id="1517776481860111",
                previous_owner_app_id=INBOX,
                requested_owner_app_id=None,
                metadata="done",
            ),
        ),
        (
            "take_thread_control",
            {"previous_owner_app_id": 1517776481860111, "new_owner_app_id": int(INBOX), "metadata": "mine"},
            Handover(
                kind=HandoverKind.TAKE,
                new_owner_app_id=INBOX,
                previous_owner_app_id="1517776481860111",
                requested_owner_app_id=None,
                metadata="mine",
            ),
        ),
        (
            "request_thread_control",
            {"requested_owner_app_id": INBOX, "metadata": "may I?"},
            Handover(
                kind=HandoverKind.REQUEST,
                new_owner_app_id=None,
                previous_owner_app_id=None,
                requested_owner_app_id=INBOX,
                metadata="may I?",
            ),
        ),
    ],
)
def test_handover_events_are_typed(kind: str, event: dict[str, Any], expected: Handover) -> None:
    parsed = parse_webhook(handover_body(kind, event))
    (got,) = parsed.events
    assert (got.kind, got.user_id, got.timestamp, got.handover) == (kind, USER, T0, expected)
    assert got.key.startswith(f"{USER}:{T0}:{kind}:")
    assert got.stored_kind == kind and not got.standby


def test_a_broken_handover_event_is_rejected_naming_the_field() -> None:
    parsed = parse_webhook(handover_body("pass_thread_control", {"new_owner_app_id": "1", "metadata": 5}))
    (rejected,) = parsed.rejected
    assert rejected.kind == "pass_thread_control"
    assert "entry[0].messaging[0].pass_thread_control.metadata must be a string" in rejected.reason
    parsed = parse_webhook(handover_body("take_thread_control", "nope"))  # type: ignore[arg-type]
    assert "take_thread_control must be an object" in parsed.rejected[0].reason
