from __future__ import annotations

import json

import pytest

from engine.messenger.signature import sign, verify
from engine.messenger.webhook import WebhookFormatError, parse_body, parse_webhook
from tests.conftest import webhook_fixture


def test_text_message() -> None:
    parsed = parse_webhook(webhook_fixture("text.json"))
    (event,) = parsed.events
    assert (event.key, event.user_id, event.kind, event.text, event.timestamp) == (
        "m_AbC123text",
        "7100000000000001",
        "message",
        "Hi there",
        1764240000000,
    )


def test_quick_reply_carries_payload_and_text() -> None:
    (event,) = parse_webhook(webhook_fixture("quick_reply.json")).events
    assert (event.text, event.payload) == ("White wine", "WHITE")


def test_postback_without_mid_is_keyed_by_sender_timestamp_payload() -> None:
    (event,) = parse_webhook(webhook_fixture("postback_old_no_mid.json")).events
    assert event.key == "7100000000000001:1764240000000:postback:SHOW"
    assert (event.kind, event.payload, event.text) == ("postback", "SHOW", "Show me")


def test_optin_keeps_the_token_in_its_raw_event() -> None:
    (event,) = parse_webhook(webhook_fixture("otn_optin.json")).events
    assert event.kind == "optin" and event.payload == "restock:sauvignon-2024"
    assert event.raw["optin"]["one_time_notif_token"] == "6954271848764637184"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("echo.json", "echo"),
        ("delivery.json", "delivery"),
        ("read.json", "read"),
        ("standby.json", "standby"),
        ("changes_entry.json", "changes"),
    ],
)
def test_things_not_acted_on_are_counted_not_failed(name: str, reason: str) -> None:
    parsed = parse_webhook(webhook_fixture(name))
    assert parsed.events == []
    assert parsed.skipped[reason] == 1


def test_batch_reads_every_entry_and_event() -> None:
    parsed = parse_webhook(webhook_fixture("batch.json"))
    assert [e.key for e in parsed.events] == ["m_b1", "m_b2", "m_b3"]


def test_other_objects_are_skipped() -> None:
    assert parse_webhook({"object": "instagram", "entry": []}).skipped["object:instagram"] == 1


def test_malformed_bodies_name_where() -> None:
    with pytest.raises(WebhookFormatError, match=r"entry\[0\]\.messaging\[0\]\.message\.mid is missing"):
        parse_body(
            json.dumps(
                {
                    "object": "page",
                    "entry": [
                        {
                            "messaging": [
                                {
                                    "sender": {"id": "1"},
                                    "recipient": {"id": "2"},
                                    "timestamp": 1,
                                    "message": {"text": "x"},
                                }
                            ]
                        }
                    ],
                }
            ).encode()
        )


def test_signature_roundtrip_and_tamper() -> None:
    body = b'{"object":"page"}'
    header = sign(body, "s3cret")
    assert verify(body, "s3cret", header)
    assert not verify(body + b" ", "s3cret", header)
    assert not verify(body, "s3cret", None, sign(body, "s3cret", "sha1"), allow_sha1=False)
    assert verify(body, "s3cret", None, sign(body, "s3cret", "sha1"), allow_sha1=True)
