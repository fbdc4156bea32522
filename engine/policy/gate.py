"""The policy gate: one pure function deciding how a message may be sent, or refusing it with a reason.

Meta's rules (messenger-platform.md), all lengths and lists from configuration:
- inside the standard window (24h after the user's last interaction) anything goes: RESPONSE when answering the
  user's own action, UPDATE otherwise;
- outside it, only a non-promotional message with an allowed message tag (HUMAN_AGENT: within 7 days of the user's
  last message), or a One-Time Notification sent with a valid token;
- an OTN request (the "Notify Me" template) is an ordinary message: inside the window only, and never where OTN is
  unavailable (a page in the EU, EU users, or switched off);
- nothing at all to a user who blocked the page;
- nothing from the bot while a person has the conversation (Handover Protocol: another app owns the thread);
- a human agent's reply (`AGENT_REPLY`) always goes with the HUMAN_AGENT tag, up to 7 days (configurable) after
  the user's last own message, never later, and only while the tag is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ..immutable import immutable

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
HUMAN_AGENT = "HUMAN_AGENT"


class MessageKind(StrEnum):
    """What an outbound message is, as far as the policy cares."""

    MESSAGE = "message"  # a flow reply or an update
    OTN_REQUEST = "otn_request"  # the "Notify Me" template
    NOTIFICATION = "notification"  # the one message an OTN token allows
    AGENT_REPLY = "agent_reply"  # a person's reply, sent through otnflow: only with the HUMAN_AGENT tag


class Refusal(StrEnum):
    """Why the gate refused a message: stored as the refused outbox row's detail and a skipped campaign item's
    reason, counted in /metrics, shown in the playground (the same plain words as before the enum)."""

    USER_UNREACHABLE = "user_unreachable"  # blocked the page, or Meta said the user is unavailable
    UNSUBSCRIBED = "unsubscribed"  # an OTN request or notification to a user who unsubscribed
    OTN_UNAVAILABLE = "otn_unavailable"  # switched off, the page in the EU, or the user tagged EU
    NO_VALID_TOKEN = "no_valid_token"  # a notification without a claimed token
    TOKEN_EXPIRED = "token_expired"
    OUTSIDE_WINDOW = "outside_window"  # the 24h window is closed and no allowed tag lets the message out
    LATE_OPTIN = "late_optin"  # the same, in reply to a Notify Me tap (an opt-in reopens no window)
    TOKEN_ALREADY_HELD = "token_already_held"  # an OTN request for a topic the user holds a token for
    REQUEST_LIMIT = "request_limit"  # too many OTN requests for the topic in the period
    TAG_NOT_ALLOWED = "tag_not_allowed"
    PROMOTIONAL_ON_TAG = "promotional_on_tag"  # a message tag never carries promotional content
    HUMAN_AGENT_EXPIRED = "human_agent_expired"  # HUMAN_AGENT past its days after the user's last message
    WITH_HUMAN = "with_human"  # anything the bot would send while a person has the conversation


class Via(StrEnum):
    RESPONSE = "RESPONSE"
    UPDATE = "UPDATE"
    MESSAGE_TAG = "MESSAGE_TAG"
    OTN_TOKEN = "OTN_TOKEN"


@dataclass(frozen=True)
class PolicySettings:
    window_hours: float = 24.0
    allowed_tags: frozenset[str] = frozenset(
        {"CONFIRMED_EVENT_UPDATE", "POST_PURCHASE_UPDATE", "ACCOUNT_UPDATE", "HUMAN_AGENT"}
    )
    human_agent_days: float = 7.0
    otn_available: bool = True
    page_in_eu: bool = False
    otn_token_days: float = 365.0
    otn_max_requests: int = 1  # OTN requests per topic per user per period (anti-nagging)
    otn_request_period_hours: float = 24.0
    otn_skip_if_token_held: bool = True

    @property
    def otn_enabled(self) -> bool:
        return self.otn_available and not self.page_in_eu


@immutable(kw_only=True)
class Facts:
    """What the gate knows of the user."""

    last_interaction_ms: int = 0  # any window-opening action
    last_message_ms: int = 0  # the user's last own message (HUMAN_AGENT counts from it)
    unreachable: bool = False
    in_eu: bool = False
    tokens_held: int = 0  # valid, unused OTN tokens for the message's topic
    recent_requests: int = 0  # OTN requests for the topic within the anti-nagging period
    unsubscribed: bool = False  # the user asked to hear no more (a flow step with `unsubscribe = true`)
    with_human: bool = False  # another app (a person in the Page Inbox) owns the thread: the bot stays silent


@immutable(kw_only=True)
class Outgoing:
    """What is to be sent."""

    kind: MessageKind
    responding: bool = False  # answers the user's own action (RESPONSE rather than UPDATE inside the window)
    tag: str | None = None  # a message tag the flow declared for it
    promotional: bool = True  # unless the flow says otherwise, assume it is
    with_token: bool = False  # a notification sent with a claimed OTN token
    token_expires_ms: int | None = None  # when that token expires (a token past it is never sent)
    after_optin: bool = False  # a reply to a Notify Me tap: an opt-in reopens no window


@immutable(kw_only=True)
class Decision:
    """Allowed (how it goes: `via`, `tag`) or refused (why: `reason`), never both nor neither."""

    via: Via | None
    tag: str | None = None
    reason: Refusal | None = None  # why it was refused; None when allowed

    def __post_init__(self) -> None:
        if (self.via is None) == (self.reason is None):
            raise ValueError(
                f"a decision is allowed (via) or refused (reason), not via={self.via} reason={self.reason}"
            )

    @property
    def allowed(self) -> bool:
        return self.via is not None

    @property
    def unsubscribed(self) -> bool:
        return self.reason is Refusal.UNSUBSCRIBED


def refuse(reason: Refusal) -> Decision:
    return _REFUSED[reason]


def allow(via: Via) -> Decision:
    """Allowed, with no message tag."""
    return _ALLOWED[via]


# Decisions are immutable: one of each is made once, not one per message (a tagged one is made when needed).
_REFUSED = {reason: Decision(via=None, reason=reason) for reason in Refusal}
_ALLOWED = {via: Decision(via=via) for via in (Via.RESPONSE, Via.UPDATE, Via.OTN_TOKEN)}


def window_open(facts: Facts, now_ms: int, settings: PolicySettings) -> bool:
    return facts.last_interaction_ms > 0 and now_ms - facts.last_interaction_ms < settings.window_hours * HOUR_MS


def decide(facts: Facts, message: Outgoing, now_ms: int, settings: PolicySettings) -> Decision:
    if facts.unreachable:
        return refuse(Refusal.USER_UNREACHABLE)
    if message.kind == MessageKind.AGENT_REPLY:
        return _agent_reply(facts, now_ms, settings)
    if facts.with_human:
        return refuse(Refusal.WITH_HUMAN)
    otn = message.kind in (MessageKind.OTN_REQUEST, MessageKind.NOTIFICATION)
    if otn and facts.unsubscribed:
        return refuse(Refusal.UNSUBSCRIBED)
    if otn and not (settings.otn_enabled and not facts.in_eu):
        return refuse(Refusal.OTN_UNAVAILABLE)
    if message.kind == MessageKind.NOTIFICATION:
        if not message.with_token:
            return refuse(Refusal.NO_VALID_TOKEN)
        if message.token_expires_ms is not None and message.token_expires_ms <= now_ms:
            return refuse(Refusal.TOKEN_EXPIRED)
        return allow(Via.OTN_TOKEN)
    inside = window_open(facts, now_ms, settings)
    closed = Refusal.LATE_OPTIN if message.after_optin else Refusal.OUTSIDE_WINDOW  # a late Notify Me tap says so
    if message.kind == MessageKind.OTN_REQUEST:
        if not inside:
            return refuse(closed)
        if settings.otn_skip_if_token_held and facts.tokens_held > 0:
            return refuse(Refusal.TOKEN_ALREADY_HELD)
        if facts.recent_requests >= settings.otn_max_requests:
            return refuse(Refusal.REQUEST_LIMIT)
        return allow(Via.RESPONSE if message.responding else Via.UPDATE)
    if inside:
        return allow(Via.RESPONSE if message.responding else Via.UPDATE)
    if message.tag is None:
        return refuse(closed)
    if message.tag not in settings.allowed_tags:
        return refuse(Refusal.TAG_NOT_ALLOWED)
    if message.promotional:
        return refuse(Refusal.PROMOTIONAL_ON_TAG)
    if message.tag == HUMAN_AGENT and not human_agent_open(facts, now_ms, settings):
        return refuse(Refusal.HUMAN_AGENT_EXPIRED)
    return Decision(via=Via.MESSAGE_TAG, tag=message.tag)


def human_agent_open(facts: Facts, now_ms: int, settings: PolicySettings) -> bool:
    """Whether a person may still answer: the user wrote within the last `human_agent_days` (7 days)."""
    return facts.last_message_ms > 0 and now_ms - facts.last_message_ms < settings.human_agent_days * DAY_MS


def _agent_reply(facts: Facts, now_ms: int, settings: PolicySettings) -> Decision:
    """A person's reply goes tagged HUMAN_AGENT, inside the 24h window too (it says who wrote it), and never
    once the 7 days after the user's last own message are over."""
    if HUMAN_AGENT not in settings.allowed_tags:
        return refuse(Refusal.TAG_NOT_ALLOWED)
    if not human_agent_open(facts, now_ms, settings):
        return refuse(Refusal.HUMAN_AGENT_EXPIRED)
    return Decision(via=Via.MESSAGE_TAG, tag=HUMAN_AGENT)
