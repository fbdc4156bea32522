"""Webhook JSON to typed events.

Every entry and every event of a batch is read. What otnflow acts on becomes an `InboundEvent` with a stable
dedup key; echoes, receipts, standby (handover) events and `changes` entries are counted as skipped, never an error.
A body that is not the documented shape raises WebhookFormatError naming the offending place.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


class WebhookFormatError(ValueError):
    """The body is not a Messenger webhook; the message names where (e.g. `entry[0].messaging[2].sender`)."""


@dataclass(frozen=True)
class InboundEvent:
    key: str  # dedup key: the mid, or sender:timestamp:kind:detail where Meta sends no mid
    user_id: str  # the sender's page-scoped id (PSID)
    page_id: str
    timestamp: int  # ms, Meta's
    kind: str  # message, postback, optin, reaction, referral
    text: str | None = None
    payload: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> str:
        return json.dumps(self.raw, separators=(",", ":"), ensure_ascii=False)


@dataclass
class ParsedWebhook:
    events: list[InboundEvent]
    skipped: Counter[str]


_SKIPPED_KINDS = (
    "delivery",
    "read",
    "account_linking",
    "pass_thread_control",
    "take_thread_control",
    "request_thread_control",
    "app_roles",
    "policy-enforcement",
    "message_edit",
)


def parse_body(raw: bytes) -> ParsedWebhook:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WebhookFormatError(f"body is not JSON: {err}") from None
    return parse_webhook(body)


def parse_webhook(body: Any) -> ParsedWebhook:
    if not isinstance(body, dict):
        raise WebhookFormatError("body must be a JSON object")
    skipped: Counter[str] = Counter()
    if body.get("object") != "page":
        skipped[f"object:{body.get('object')}"] += 1
        return ParsedWebhook([], skipped)
    entries = body.get("entry")
    if not isinstance(entries, list):
        raise WebhookFormatError("'entry' must be a list")
    events: list[InboundEvent] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise WebhookFormatError(f"entry[{i}] must be an object")
        if "changes" in entry:
            skipped["changes"] += len(entry["changes"]) if isinstance(entry["changes"], list) else 1
        if "standby" in entry:
            skipped["standby"] += len(entry["standby"]) if isinstance(entry["standby"], list) else 1
        messaging = entry.get("messaging", [])
        if not isinstance(messaging, list):
            raise WebhookFormatError(f"entry[{i}].messaging must be a list")
        for j, item in enumerate(messaging):
            event = parse_event(item, f"entry[{i}].messaging[{j}]", skipped)
            if event is not None:
                events.append(event)
    return ParsedWebhook(events, skipped)


def _id(item: dict[str, Any], side: str, where: str) -> str:
    party = item.get(side)
    if not isinstance(party, dict) or not isinstance(party.get("id"), str | int):
        raise WebhookFormatError(f"{where}.{side}.id is missing")
    return str(party["id"])


def parse_event(item: Any, where: str, skipped: Counter[str]) -> InboundEvent | None:
    """One item of `messaging`: an InboundEvent, or None (counted in `skipped`) for what otnflow does not act on."""
    if not isinstance(item, dict):
        raise WebhookFormatError(f"{where} must be an object")
    timestamp = item.get("timestamp")
    if not isinstance(timestamp, int):
        raise WebhookFormatError(f"{where}.timestamp must be an integer (ms)")
    sender, page = _id(item, "sender", where), _id(item, "recipient", where)

    def make(kind: str, key: str, text: str | None = None, payload: str | None = None) -> InboundEvent:
        return InboundEvent(key, sender, page, timestamp, kind, text, payload, item)

    if isinstance(item.get("message"), dict):
        message = item["message"]
        if message.get("is_echo"):
            skipped["echo"] += 1
            return None
        mid = message.get("mid")
        if not isinstance(mid, str):
            raise WebhookFormatError(f"{where}.message.mid is missing")
        quick = message.get("quick_reply")
        payload = quick.get("payload") if isinstance(quick, dict) else None
        text = message.get("text") if isinstance(message.get("text"), str) else None
        return make("message", mid, text, payload if isinstance(payload, str) else None)
    if isinstance(item.get("postback"), dict):
        postback = item["postback"]
        payload = postback.get("payload")
        payload = payload if isinstance(payload, str) else ""
        mid = postback.get("mid")
        key = mid if isinstance(mid, str) else f"{sender}:{timestamp}:postback:{payload}"
        title = postback.get("title")
        return make("postback", key, title if isinstance(title, str) else None, payload)
    if isinstance(item.get("optin"), dict):
        optin = item["optin"]
        detail = optin.get("one_time_notif_token") or optin.get("notification_messages_token") or optin.get("ref")
        payload = optin.get("payload")
        return make(
            "optin", f"{sender}:{timestamp}:optin:{detail}", None, payload if isinstance(payload, str) else None
        )
    if isinstance(item.get("reaction"), dict):
        reaction = item["reaction"]
        return make("reaction", f"{sender}:{timestamp}:reaction:{reaction.get('action')}:{reaction.get('mid')}")
    if isinstance(item.get("referral"), dict):
        ref = item["referral"].get("ref")
        return make("referral", f"{sender}:{timestamp}:referral:{ref}", None, ref if isinstance(ref, str) else None)
    for kind in _SKIPPED_KINDS:
        if kind in item:
            skipped[kind] += 1
            return None
    skipped["unknown"] += 1
    return None
