"""Webhook JSON to typed events.

Two levels of judgement. The body as a whole: not JSON, not an object or no `entry` list raises
WebhookFormatError (answered 400: nothing in it can be trusted). Within a well-formed body every event is judged
alone: it is classified by its kind first (`classify`), then only what a handled kind needs is validated. A good
event becomes an `InboundEvent`; a kind otnflow does not act on (echoes, receipts, Page-level notices, kinds Meta
adds later) is counted in `skipped`; a handled kind that is broken becomes a `RejectedItem` naming the
place and the reason, for the dead-letter table, and never takes the rest of its body down with it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from .. import jsonio
from ..immutable import immutable

# Sane ranges: outside them an event is rejected, never an exception further down (SQLite and BSON hold 64 bits).
MIN_TIMESTAMP_MS = 1_072_915_200_000  # 2004-01-01: Facebook did not exist before
MAX_TIMESTAMP_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
MAX_ID_DIGITS = 30  # PSIDs and Page ids are 15-17 digits
#: Readable ids ("alice") of simulated users: accepted only with `simulated_ids` (harness, playground, local mode).
SIMULATED_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
MAX_KEY_CHARS = 1_024  # a mid, a token, a ref: anything that ends up in a dedup key
MAX_TEXT_CHARS = 20_000  # a text, a title, a payload
MAX_DEPTH = 32  # Meta's events nest ~6 levels
MAX_REJECTED_CHARS = 8_192  # of a rejected event's JSON kept in the dead-letter table

#: The kind an event is stored under when it came in `standby[]`: the thread belongs to another app (a person in
#: the Page Inbox); it is recorded, never answered. Its body is the event as Meta sent it (a message, a postback).
STANDBY = "standby"
#: Kinds Meta sends that otnflow does not act on; anything else is counted as `unknown` (and named in the log).
SKIPPED_KINDS = frozenset(
    {
        "echo",
        "delivery",
        "read",
        "account_linking",
        "app_roles",
        "policy_enforcement",
        "policy-enforcement",
        "message_edit",
        "messaging_feedback",
        "response_feedback",
        "game_play",
        "payment",
        "checkout_update",
        "pre_checkout",
        "optin_user_ref",
        "standby",
        "changes",
    }
)
_ENVELOPE = ("sender", "recipient", "timestamp")


class WebhookFormatError(ValueError):
    """The body as a whole is not a Messenger webhook; the message says why."""


class EventError(ValueError):
    """One event is broken; the message names where (e.g. `entry[0].messaging[2].timestamp`) and what."""


@dataclass(frozen=True)
class Referral:
    """Where the user came from (an m.me link, an ad, a Messenger code, the chat plugin, the Discover tab): Meta's
    `referral` object, on a `referral` event or inside a Get Started `postback`. `source` is Meta's word
    (SHORTLINK, ADS, MESSENGER_CODE, CUSTOMER_CHAT_PLUGIN, DISCOVER_TAB, ...)."""

    ref: str | None
    source: str
    ad_id: str | None = None


class EventKind(StrEnum):
    """What an inbound event is, named as Meta names the key that carries it (the Handover Protocol's three are
    HandoverKind's), and otnflow's own `agent_echo`: a person's reply in the Page Inbox, echoed in `standby[]`."""

    MESSAGE = "message"
    POSTBACK = "postback"
    OPTIN = "optin"
    REACTION = "reaction"
    REFERRAL = "referral"
    AGENT_ECHO = "agent_echo"


class HandoverKind(StrEnum):
    """The Handover Protocol's webhook events (`messaging_handovers`), named as Meta names their keys."""

    PASS = "pass_thread_control"  # control passed to the app receiving it (e.g. an agent marked the chat Done)
    TAKE = "take_thread_control"  # another app took the thread from the app receiving it
    REQUEST = "request_thread_control"  # another app asks the owner (us) for the thread


#: The kinds otnflow acts on, by the key that carries each; `classify` tries them in this order.
HANDLED_KINDS: dict[str, EventKind | HandoverKind] = {
    kind.value: kind
    for kind in (
        EventKind.MESSAGE,
        EventKind.POSTBACK,
        EventKind.OPTIN,
        EventKind.REACTION,
        EventKind.REFERRAL,
        *HandoverKind,
    )
}


@dataclass(frozen=True, kw_only=True)
class Handover:
    """A Handover Protocol event: Meta's app ids as text (Meta sends digits, as strings or numbers) and the note
    the other app attached (`metadata`)."""

    kind: HandoverKind
    new_owner_app_id: str | None = None
    previous_owner_app_id: str | None = None
    requested_owner_app_id: str | None = None
    metadata: str | None = None


@immutable(kw_only=True)
class InboundEvent:
    key: str  # dedup key: the mid, or sender:timestamp:kind:detail where Meta sends no mid
    user_id: str  # the sender's page-scoped id (PSID)
    page_id: str
    timestamp: int  # ms, Meta's
    kind: EventKind | HandoverKind
    text: str | None = None
    payload: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)
    referral: Referral | None = None  # on a `referral` event, and on a Get Started postback from a link or ad
    handover: Handover | None = None  # on pass/take/request_thread_control events
    standby: bool = False  # came in `standby[]`: another app owns the thread; recorded, never answered

    @property
    def stored_kind(self) -> str:
        """The inbox kind: the event's own, or `standby` for what the user sent while another app owned the
        thread (an agent's echo keeps its own kind: it is the person's, not the user's)."""
        return STANDBY if self.standby and self.kind is not EventKind.AGENT_ECHO else self.kind

    def to_json(self) -> str:
        return jsonio.dumps(self.raw)


@dataclass(frozen=True)
class RejectedItem:
    """A broken event of a handled kind (or an item that is not even an object), kept for inspection."""

    where: str
    kind: str  # one of HANDLED_KINDS, or "item" for what is not an event at all: a bounded metrics label
    reason: str
    raw: Any = field(compare=False)

    def key(self) -> str:
        """Stable over Meta's retries of the same body: a hash of the item's own JSON."""
        return hashlib.sha256(_dump_any(self.raw).encode()).hexdigest()

    def body(self) -> str:
        """The item's JSON, cut at MAX_REJECTED_CHARS (a dead letter must not be a way to fill the disk)."""
        text = _dump_any(self.raw)
        if len(text) > MAX_REJECTED_CHARS:
            return text[:MAX_REJECTED_CHARS] + f"...[cut: {len(text)} chars]"
        return text


@dataclass(frozen=True)
class PageNotice:
    """A Page-level notice worth a WARNING: Meta blocked or restricted the Page (`policy_enforcement`)."""

    page_id: str
    action: str
    reason: str


@dataclass
class ParsedWebhook:
    events: list[InboundEvent]
    skipped: Counter[str]
    rejected: list[RejectedItem] = field(default_factory=list)
    notices: list[PageNotice] = field(default_factory=list)


def parse_body(raw: bytes, *, simulated_ids: bool = False) -> ParsedWebhook:
    body = jsonio.loads(raw, _strict_loads)
    return parse_webhook(body, simulated_ids=simulated_ids, check_depth=_could_nest_deeper_than(raw, MAX_DEPTH))


def _could_nest_deeper_than(raw: bytes, depth: int) -> bool:
    """False when the body has too few brackets for anything in it to nest `depth` levels deep, so no event's depth
    needs walking (nearly every body: the sample webhooks have 6-18; brackets in strings only make the count larger)."""
    return raw.count(b"{") + raw.count(b"[") > depth


def _strict_loads(raw: bytes) -> Any:
    """The standard library's reading of what orjson refused: its answer, or the reason it is not JSON."""
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise WebhookFormatError("body is not JSON we can read: nested too deeply") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, over-long integers, NaN/Infinity
        raise WebhookFormatError(f"body is not JSON: {err}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_webhook(body: Any, *, simulated_ids: bool = False, check_depth: bool = True) -> ParsedWebhook:
    """`check_depth=False` only when nothing in the body can nest more than MAX_DEPTH levels (`parse_body` knows)."""
    if not isinstance(body, dict):
        raise WebhookFormatError("body must be a JSON object")
    parsed = ParsedWebhook([], Counter())
    if body.get("object") != "page":
        parsed.skipped[f"object:{str(body.get('object'))[:40]}"] += 1
        return parsed
    entries = body.get("entry")
    if not isinstance(entries, list):
        raise WebhookFormatError("'entry' must be a list")
    for i, entry in enumerate(entries):
        where = f"entry[{i}]"
        if not isinstance(entry, dict):
            parsed.rejected.append(RejectedItem(where, "item", f"{where} must be an object", entry))
            continue
        if "changes" in entry:
            value = entry["changes"]
            parsed.skipped["changes"] += len(value) if isinstance(value, list) else 1
        for channel in ("messaging", STANDBY):
            items = entry.get(channel, [])
            if not isinstance(items, list):
                parsed.rejected.append(RejectedItem(where, "item", f"{where}.{channel} must be a list", items))
                continue
            for j, item in enumerate(items):
                _judge(item, f"{where}.{channel}[{j}]", parsed, simulated_ids, channel == STANDBY, check_depth)
    return parsed


#: What a standby event can be that otnflow records: what the user said or tapped while a person had the thread.
STANDBY_KINDS = frozenset({EventKind.MESSAGE, EventKind.POSTBACK})


def _judge(item: Any, where: str, parsed: ParsedWebhook, simulated_ids: bool, standby: bool, check_depth: bool) -> None:
    """One item of `messaging` (or `standby`), judged alone: stored, skipped or rejected."""
    if not isinstance(item, dict):
        parsed.rejected.append(RejectedItem(where, "item", f"{where} must be an object, not {_describe(item)}", item))
        return
    kind = classify(item)
    if standby and kind == "echo":
        try:
            parsed.events.append(_agent_echo(item, where, simulated_ids, check_depth))
        except EventError as err:
            parsed.rejected.append(RejectedItem(where, EventKind.AGENT_ECHO, str(err), item))
        return
    if standby and kind not in STANDBY_KINDS:  # receipts and the like: one bounded label
        parsed.skipped[STANDBY] += 1
        return
    if kind not in HANDLED_KINDS:
        parsed.skipped[kind] += 1
        if kind in ("policy_enforcement", "policy-enforcement"):
            parsed.notices.append(_policy_notice(item, kind))
        return
    try:
        event = parse_event(item, where, parsed.skipped, simulated_ids=simulated_ids, check_depth=check_depth)
    except EventError as err:
        parsed.rejected.append(RejectedItem(where, kind, str(err), item))
        return
    if event is not None:
        parsed.events.append(replace(event, standby=True) if standby else event)


def _agent_echo(item: dict[str, Any], where: str, simulated_ids: bool, check_depth: bool) -> InboundEvent:
    """An echo in `standby[]`: sent by the page (a person answering in the Page Inbox) to the user. The person is at
    work, so the hand-over's idle timeout counts from it. Its user is the echo's recipient."""
    if check_depth:
        _check_depth(item, where)
    item = _well_formed(item)
    timestamp = _timestamp(item, where)
    page, user = _psid(item, "sender", where, simulated_ids), _psid(item, "recipient", where, simulated_ids)
    mid = _string(_object(item, "message", where), "mid", f"{where}.message", MAX_KEY_CHARS, required=True)
    assert mid is not None
    return InboundEvent(
        key=mid, user_id=user, page_id=page, timestamp=timestamp, kind=EventKind.AGENT_ECHO, raw=item, standby=True
    )


def classify(item: Any) -> str:
    """The event's kind from the key that carries it (a member of HANDLED_KINDS, else Meta's word); nothing else is
    looked at. Not an object: `item`."""
    if not isinstance(item, dict):
        return "item"
    message = item.get("message")
    if "message" in item:
        return "echo" if isinstance(message, dict) and message.get("is_echo") is True else EventKind.MESSAGE
    for key, kind in HANDLED_KINDS.items():
        if key in item:
            if kind is EventKind.OPTIN and _plugin_user_only(item):
                return "optin_user_ref"
            return kind
    for key in item:
        if key not in _ENVELOPE:
            return str(key)[:40]
    return "unknown"


def _plugin_user_only(item: dict[str, Any]) -> bool:
    """A checkbox-plugin opt-in: the user is known only by `user_ref` (no sender PSID yet)."""
    sender = item.get("sender")
    optin = item.get("optin")
    has_psid = isinstance(sender, dict) and "id" in sender
    has_ref = (isinstance(optin, dict) and "user_ref" in optin) or (isinstance(sender, dict) and "user_ref" in sender)
    return has_ref and not has_psid


def _policy_notice(item: dict[str, Any], kind: str) -> PageNotice:
    notice = item.get(kind)
    notice = notice if isinstance(notice, dict) else {}
    recipient = item.get("recipient")
    page = recipient.get("id") if isinstance(recipient, dict) else None
    return PageNotice(
        str(page)[:40] if page is not None else "?",
        str(notice.get("action", "?"))[:100],
        " ".join(str(notice.get("reason", "")).split())[:1000],
    )


def parse_event(
    item: Any, where: str, skipped: Counter[str], *, simulated_ids: bool = False, check_depth: bool = True
) -> InboundEvent | None:
    """One item of `messaging`: an InboundEvent, None (counted in `skipped`) for what otnflow does not act on, or
    EventError naming what is wrong with a kind otnflow handles. Ids are Meta's digits, or also readable names
    with `simulated_ids`; `check_depth=False` when the caller knows the item cannot nest more than MAX_DEPTH."""
    found = classify(item)
    kind = HANDLED_KINDS.get(found)
    if kind is None:
        skipped[found] += 1
        return None
    assert isinstance(item, dict)
    if check_depth:
        _check_depth(item, where)
    item = _well_formed(item)
    timestamp = _timestamp(item, where)
    sender, page = _psid(item, "sender", where, simulated_ids), _psid(item, "recipient", where, simulated_ids)
    body = _object(item, kind, where)

    def make(
        key: str, text: str | None = None, payload: str | None = None, referral: Referral | None = None
    ) -> InboundEvent:
        return InboundEvent(
            key=key,
            user_id=sender,
            page_id=page,
            timestamp=timestamp,
            kind=kind,
            text=text,
            payload=payload,
            raw=item,
            referral=referral,
        )

    if kind is EventKind.MESSAGE:
        mid = _string(body, "mid", f"{where}.message", MAX_KEY_CHARS, required=True)
        text = _string(body, "text", f"{where}.message", MAX_TEXT_CHARS)
        quick = body.get("quick_reply")
        payload = None
        if quick is not None:
            payload = _string(
                _object(body, "quick_reply", f"{where}.message"), "payload", f"{where}.message.quick_reply"
            )
        assert mid is not None
        return make(mid, text, payload)
    if kind is EventKind.POSTBACK:
        payload = _string(body, "payload", f"{where}.postback") or ""
        title = _string(body, "title", f"{where}.postback")
        mid = _string(body, "mid", f"{where}.postback", MAX_KEY_CHARS)
        referral = _referral(body, f"{where}.postback") if "referral" in body else None
        return make(
            mid if mid is not None else f"{sender}:{timestamp}:postback:{payload[:MAX_KEY_CHARS]}",
            title,
            payload,
            referral,
        )
    if kind is EventKind.OPTIN:
        details = [
            _string(body, name, f"{where}.optin", MAX_KEY_CHARS)
            for name in ("one_time_notif_token", "notification_messages_token", "ref")
        ]
        payload = _string(body, "payload", f"{where}.optin")
        detail = next((d for d in details if d), None)
        return make(f"{sender}:{timestamp}:optin:{detail}", None, payload)
    if kind is EventKind.REACTION:
        action = _string(body, "action", f"{where}.reaction", MAX_KEY_CHARS)
        target = _string(body, "mid", f"{where}.reaction", MAX_KEY_CHARS)
        return make(f"{sender}:{timestamp}:reaction:{action}:{target}")
    if kind is EventKind.REFERRAL:
        referral = _referral(item, where)
        return make(f"{sender}:{timestamp}:referral:{referral.ref}", None, referral.ref, referral)
    handover = _handover(HandoverKind(kind), body, f"{where}.{kind}")
    detail = handover.new_owner_app_id or handover.requested_owner_app_id or ""
    return replace(make(f"{sender}:{timestamp}:{kind}:{detail}"), handover=handover)


def _handover(kind: HandoverKind, body: dict[str, Any], where: str) -> Handover:
    """`pass_thread_control` / `take_thread_control` / `request_thread_control` (messenger-platform.md)."""

    def app_id(name: str) -> str | None:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool):  # app ids are digits; sent as numbers too
            value = str(value)
        return _string({name: value}, name, where, MAX_KEY_CHARS)

    return Handover(
        kind=kind,
        new_owner_app_id=app_id("new_owner_app_id"),
        previous_owner_app_id=app_id("previous_owner_app_id"),
        requested_owner_app_id=app_id("requested_owner_app_id"),
        metadata=_string(body, "metadata", where),
    )


def _referral(parent: dict[str, Any], where: str) -> Referral:
    """`parent.referral`: `ref` (absent on an ad without one), `source`, `ad_id` (Click-to-Messenger ads)."""
    body = _object(parent, "referral", where)
    at = f"{where}.referral"
    ad_id = body.get("ad_id")
    if isinstance(ad_id, int) and not isinstance(ad_id, bool):  # ids are digits; some clients send numbers
        ad_id = str(ad_id)
    return Referral(
        _string(body, "ref", at, MAX_KEY_CHARS),
        _string(body, "source", at, MAX_KEY_CHARS) or "",
        _string({"ad_id": ad_id}, "ad_id", at, MAX_KEY_CHARS),
    )


def _timestamp(item: dict[str, Any], where: str) -> int:
    value = item.get("timestamp")
    if not isinstance(value, int) or isinstance(value, bool):
        raise EventError(f"{where}.timestamp must be an integer (ms), not {_describe(value)}")
    if not MIN_TIMESTAMP_MS <= value <= MAX_TIMESTAMP_MS:
        raise EventError(f"{where}.timestamp {_clip(value)} is outside 2004..9999 (ms since 1970)")
    return value


def _psid(item: dict[str, Any], side: str, where: str, simulated: bool = False) -> str:
    party = item.get(side)
    if not isinstance(party, dict) or "id" not in party:
        raise EventError(f"{where}.{side}.id is missing")
    value = party["id"]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**MAX_ID_DIGITS:
        return str(value)
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_DIGITS and value.isascii() and value.isdigit():
        return value
    if simulated and isinstance(value, str) and SIMULATED_ID.fullmatch(value):
        return value
    raise EventError(f"{where}.{side}.id must be digits (a string or an integer), not {_describe(value)}")


def _object(parent: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    value = parent.get(name)
    if not isinstance(value, dict):
        raise EventError(f"{where}.{name} must be an object, not {_describe(value)}")
    return value


def _string(
    parent: dict[str, Any], name: str, where: str, cap: int = MAX_TEXT_CHARS, required: bool = False
) -> str | None:
    value = parent.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise EventError(f"{where}.{name} must be a{' non-empty' if required else ''} string, not {_describe(value)}")
    if len(value) > cap:
        raise EventError(f"{where}.{name} is {len(value)} characters long (at most {cap})")
    return value


def _check_depth(item: Any, where: str) -> None:
    """Iteratively, so a hostile nesting cannot exhaust the stack here or when the event is serialised."""
    stack: list[tuple[Any, int]] = [(item, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise EventError(f"{where} is nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def _well_formed(item: dict[str, Any]) -> dict[str, Any]:
    """The event with every lone UTF-16 surrogate (`"\\ud83d"` without its pair: JSON allows it, UTF-8 cannot
    encode it) replaced by U+FFFD, Unicode's replacement character. The event is kept: a damaged emoji in a text
    must not cost the user their answer. Events without one (nearly all) are returned as they are: orjson, which
    refuses lone surrogates, says so in well under a microsecond; only what it refuses (that, or an integer over 64
    bits) is looked at by the standard library's encoder."""
    if jsonio.orjson_writes(item):
        return item
    try:
        json.dumps(item, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        repaired = _repair(item)
        assert isinstance(repaired, dict)
        return repaired
    return item


def _repair(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {_repair(k): _repair(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_repair(v) for v in value]
    return value


def _dump_any(value: Any) -> str:
    """Any parsed JSON value as ASCII JSON (lone surrogates escaped, so always storable), or a placeholder."""
    try:
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    except (RecursionError, ValueError):
        return '"<not serialisable: nested too deeply>"'


def _describe(value: Any) -> str:
    if value is None:
        return "missing"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"{type(value).__name__} {_clip(value)}"
    if isinstance(value, str):
        return f"string {value[:40]!r}" + ("..." if len(value) > 40 else "")
    if isinstance(value, dict):
        return "an object"
    return "a list" if isinstance(value, list) else type(value).__name__


def _clip(value: float) -> str:
    text = str(value)
    return text if len(text) <= 24 else text[:20] + f"...({len(text)} digits)"
