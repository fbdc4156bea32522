from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import pytest

from engine.messenger.events import (
    PageNotice,
    ParsedWebhook,
    Referral,
    RejectedItem,
    WebhookFormatError,
    parse_body,
    parse_webhook,
)
from engine.messenger.signature import same_secret, sign, verify
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


GOOD = {"sender": {"id": "7100000000000001"}, "recipient": {"id": "106000000000001"}, "timestamp": 1764240000000}


def _one(item: Any) -> ParsedWebhook:
    return parse_webhook({"object": "page", "entry": [{"id": "106000000000001", "time": 1, "messaging": [item]}]})


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            {"message": {"text": "x"}},
            r"entry\[0\]\.messaging\[0\]\.message\.mid must be a non-empty string, not missing",
        ),
        ({"message": {"mid": "m", "text": 5}}, r"message\.text must be a string, not int 5"),
        ({"message": "hello"}, r"\.message must be an object"),
        ({"timestamp": True}, r"timestamp must be an integer \(ms\), not a boolean"),
        ({"timestamp": -5}, r"timestamp -5 is outside 2004\.\.9999"),
        ({"timestamp": 10**30}, r"timestamp 10{19}\.\.\.\(31 digits\) is outside"),
        ({"timestamp": 1_000_000_000_000}, r"is outside 2004\.\.9999"),  # 2001
        ({"timestamp": 1764240000000.0}, r"timestamp must be an integer \(ms\), not float"),
        ({"sender": {"id": "USER_ID"}}, r"sender\.id must be digits"),
        ({"sender": {"id": "１２３"}}, r"sender\.id must be digits"),  # fullwidth digits: isdigit() but not ASCII
        ({"sender": {"id": 10**40}}, r"sender\.id must be digits"),
        ({"sender": {"id": -1}}, r"sender\.id must be digits"),
        ({"sender": {}}, r"sender\.id is missing"),
        ({"recipient": None}, r"recipient\.id is missing"),
        ({"message": {"mid": "m", "text": "x" * 20_001}}, r"message\.text is 20001 characters long \(at most 20000\)"),
        ({"message": {"mid": "m" * 1025}}, r"message\.mid is 1025 characters long"),
        ({"postback": {"payload": ["A"]}}, r"postback\.payload must be a string, not a list"),
        ({"message": {"mid": "m", "x": functools.reduce(lambda a, _: [a], range(40), [])}}, r"nested more than 32"),
    ],
)
def test_a_broken_event_is_rejected_alone_with_its_place_and_reason(change: dict[str, Any], reason: str) -> None:
    good = {**GOOD, "message": {"mid": "m_good", "text": "hi"}}
    kind = {} if "postback" in change else {"message": {"mid": "m_bad"}}
    bad = {**GOOD, **kind, **change}
    parsed = parse_webhook({"object": "page", "entry": [{"id": "1", "time": 1, "messaging": [bad, good]}]})
    assert [e.key for e in parsed.events] == ["m_good"]
    (rejected,) = parsed.rejected
    assert re.search(reason, rejected.reason), rejected.reason
    assert rejected.where == "entry[0].messaging[0]"
    assert len(rejected.body()) <= 8_192 + 40
    assert rejected.key() == RejectedItem("elsewhere", "x", "y", json.loads(json.dumps(bad))).key()  # content hash


def test_items_that_are_not_events_are_rejected_not_fatal() -> None:
    parsed = parse_webhook({"object": "page", "entry": [5, {"messaging": {}}, {"messaging": [None, "x"]}]})
    assert [r.where for r in parsed.rejected] == [
        "entry[0]",
        "entry[1]",
        "entry[2].messaging[0]",
        "entry[2].messaging[1]",
    ]
    assert {r.kind for r in parsed.rejected} == {"item"}


@pytest.mark.parametrize("channel", ["messaging", "standby"])
def test_an_event_nested_too_deep_is_rejected_from_raw_bytes_too(channel: str) -> None:
    """parse_body skips walking the events' depth when the body has too few brackets to be deep: a deep one still
    is a dead letter, and brackets inside strings only make it look deeper."""
    deep = functools.reduce(lambda a, _: [a], range(40), [])
    is_echo = {"is_echo": True} if channel == "standby" else {}
    bad = {**GOOD, "message": {"mid": "m_bad", "x": deep, **is_echo}}
    good = {**GOOD, "message": {"mid": "m_good", "text": "[[[{{{" * 20, **is_echo}}
    raw = json.dumps({"object": "page", "entry": [{"id": "1", "time": 1, channel: [bad, good]}]}).encode()
    parsed = parse_body(raw)
    assert [e.key for e in parsed.events] == ["m_good"]
    (rejected,) = parsed.rejected
    assert rejected.reason == f"entry[0].{channel}[0] is nested more than 32 levels deep"


def test_a_lone_surrogate_is_replaced_and_the_event_kept() -> None:
    raw = (
        b'{"object":"page","entry":[{"messaging":[{"sender":{"id":"1"},"recipient":{"id":"2"},'
        b'"timestamp":1764240000000,"message":{"mid":"m_\\ud83d","text":"x\\ud83d","quick_reply":{"payload":"\\udc00"}}}]}]}'
    )
    (event,) = parse_body(raw).events
    assert (event.key, event.text, event.payload) == ("m_\ufffd", "x\ufffd", "\ufffd")
    event.to_json().encode()  # storable as UTF-8


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"object":"page","entry":[{"messaging":[{"message":{"text":Infinity}}]}]}', "Infinity is not JSON"),
        (b'{"object":"page","entry":[],"x":NaN}', "NaN is not JSON"),
        (b'{"object":"page","entry":[],"x":' + b"1" * 5000 + b"}", "body is not JSON"),
        (b'\xff{"object":"page"}', "body is not JSON"),
    ],
)
def test_bodies_that_are_not_json_raise_the_format_error(raw: bytes, message: str) -> None:
    with pytest.raises(WebhookFormatError, match=message):
        parse_body(raw)


@pytest.mark.parametrize(
    ("item", "kind"),
    [
        # a delivery receipt carries no timestamp (Meta's own message_deliveries example)
        ({"sender": {"id": "1"}, "recipient": {"id": "2"}, "delivery": {"mids": ["m"], "watermark": 1}}, "delivery"),
        # checkbox plugin: the user is known by user_ref only, no sender
        (
            {"recipient": {"id": "2"}, "timestamp": 1764240000000, "optin": {"ref": "r", "user_ref": "u1"}},
            "optin_user_ref",
        ),
        ({"recipient": {"id": "2"}, "timestamp": 1, "app_roles": {"123": ["automation"]}}, "app_roles"),
        (
            {"recipient": {"id": "2"}, "timestamp": 1, "policy_enforcement": {"action": "block", "reason": "spam"}},
            "policy_enforcement",
        ),
        ({"recipient": {"id": "2"}, "timestamp": 1, "policy-enforcement": {"action": "block"}}, "policy-enforcement"),
        ({"sender": {"id": "1"}, "recipient": {"id": "2"}, "message": {"is_echo": True}}, "echo"),
        ({"sender": {"id": "1"}, "brand_new_kind": {}}, "brand_new_kind"),
        ({"sender": {"id": "1"}}, "unknown"),
    ],
)
def test_kinds_not_acted_on_are_skipped_without_validation(item: dict[str, Any], kind: str) -> None:
    parsed = _one(item)
    assert (parsed.events, parsed.rejected) == ([], [])
    assert parsed.skipped == {kind: 1}


def test_a_policy_enforcement_notice_says_what_meta_reported() -> None:
    parsed = _one(
        {
            "recipient": {"id": "106"},
            "timestamp": 1,
            "policy_enforcement": {"action": "block", "reason": "too\n  spammy"},
        }
    )
    assert parsed.notices == [PageNotice("106", "block", "too spammy")]


def test_signature_roundtrip_and_tamper() -> None:
    body = b'{"object":"page"}'
    header = sign(body, "s3cret")
    # what `openssl dgst -sha256 -hmac s3cret` (and -sha1) gives for the body: Meta's header, computed elsewhere
    assert header == "sha256=2c456c04d69676a639e2f3f04db472fa1dab1ac0c44d094f7684ada2e97d0c39"
    assert sign(body, "s3cret", "sha1") == "sha1=24f663b1239e358a3f85e9a31fdbc75ba7a024b1"
    assert verify(body, "s3cret", header)
    assert not verify(body + b" ", "s3cret", header)
    assert not verify(body, "s3cret", None, sign(body, "s3cret", "sha1"), allow_sha1=False)
    assert verify(body, "s3cret", None, sign(body, "s3cret", "sha1"), allow_sha1=True)
    assert verify(body, "s3cret", f" {header} ")  # spaces around the header value are not part of it
    assert not verify(body, "s3cret", header + "\udcff")  # a header byte that is not UTF-8: compared, not raised


def test_one_constant_time_comparison_for_every_secret_a_request_presents() -> None:
    assert same_secret("Bearer t0ken", "Bearer t0ken")
    assert not same_secret("Bearer t0ken", "Bearer t0kem")
    assert not same_secret("", "")  # a secret that is not set matches nothing, not even nothing
    assert not same_secret("t\udcff", "t")  # aiohttp's lone surrogate for a byte that is not UTF-8


def test_readable_user_ids_only_for_simulated_users() -> None:
    item = {**GOOD, "sender": {"id": "alice"}, "message": {"mid": "m"}}
    assert (
        _one(item).rejected[0].reason.endswith("sender.id must be digits (a string or an integer), not string 'alice'")
    )
    body = {"object": "page", "entry": [{"messaging": [item, {**item, "sender": {"id": "al ice"}}]}]}
    parsed = parse_webhook(body, simulated_ids=True)
    assert [e.user_id for e in parsed.events] == ["alice"]
    assert [r.where for r in parsed.rejected] == ["entry[0].messaging[1]"]


def library_fixture(name: str) -> Any:
    return json.loads((Path(__file__).parents[1] / "fixtures" / "library_webhooks" / name).read_text())


def test_a_referral_event_keeps_ref_and_source() -> None:
    (event,) = parse_webhook(webhook_fixture("referral.json")).events
    assert event.kind == "referral" and event.referral == Referral("spring_sale", "SHORTLINK")


def test_get_started_carries_its_referral() -> None:
    (event,) = parse_webhook(library_fixture("bottender_postback_referral.json")).events
    assert (event.kind, event.payload) == ("postback", "__GET_STARTED__")
    assert event.referral == Referral("aaaa", "SHORTLINK")
    (plain,) = parse_webhook(webhook_fixture("postback.json")).events
    assert plain.referral is None


def test_an_ad_referral_keeps_its_ad_id_and_may_lack_a_ref() -> None:
    ad = {"source": "ADS", "type": "OPEN_THREAD", "ad_id": 6045246247433}
    (event,) = _one({**GOOD, "referral": ad}).events
    assert event.referral == Referral(None, "ADS", "6045246247433")


@pytest.mark.parametrize(
    ("referral", "reason"),
    [
        ("summer", r"messaging\[0\]\.referral must be an object, not string"),
        ({"ref": 5, "source": "SHORTLINK"}, r"\.referral\.ref must be a string, not int 5"),
        ({"ref": "x", "source": ["ADS"]}, r"\.referral\.source must be a string, not a list"),
        ({"source": "ADS", "ad_id": {"id": 1}}, r"\.referral\.ad_id must be a string, not an object"),
    ],
)
def test_a_broken_referral_is_rejected_with_its_place(referral: Any, reason: str) -> None:
    parsed = _one({**GOOD, "referral": referral})
    (rejected,) = parsed.rejected
    assert re.search(reason, rejected.reason), rejected.reason
    parsed = _one({**GOOD, "postback": {"payload": "GET_STARTED", "referral": referral}})
    assert re.search(reason.replace(r"messaging\[0\]\.", r"postback\."), parsed.rejected[0].reason)
