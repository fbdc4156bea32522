"""The policy gate as a pure function: every rule of messenger-platform.md, at its boundaries."""

from __future__ import annotations

import itertools

import pytest

from engine.policy import Decision, Facts, MessageKind, Outgoing, PolicySettings, Refusal, Via, decide
from engine.policy.gate import DAY_MS, HOUR_MS, MINUTE_MS
from engine.runtime.policy_check import outgoing_from_meta
from engine.store import OutboxMeta

NOW = 1_800_000_000_000
S = PolicySettings()


def last_seen(ago_ms: int, **more: object) -> Facts:
    return Facts(last_interaction_ms=NOW - ago_ms, last_message_ms=NOW - ago_ms, **more)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ago", "allowed"),
    [(23 * HOUR_MS + 59 * MINUTE_MS, True), (24 * HOUR_MS + MINUTE_MS, False), (24 * HOUR_MS, False), (0, True)],
)
def test_window_boundary(ago: int, allowed: bool) -> None:
    decision = decide(last_seen(ago), Outgoing(kind=MessageKind.MESSAGE, responding=True), NOW, S)
    assert decision.allowed is allowed
    assert decision.via is (Via.RESPONSE if allowed else None)
    assert decision.reason == (None if allowed else "outside_window")


def test_proactive_message_inside_the_window_is_an_update() -> None:
    assert decide(last_seen(HOUR_MS), Outgoing(kind=MessageKind.MESSAGE), NOW, S).via is Via.UPDATE


def test_never_seen_user_has_no_window() -> None:
    assert decide(Facts(), Outgoing(kind=MessageKind.MESSAGE), NOW, S).reason == "outside_window"


@pytest.mark.parametrize(
    ("tag", "promotional", "ago", "expected"),
    [
        ("POST_PURCHASE_UPDATE", False, 3 * DAY_MS, (Via.MESSAGE_TAG, None)),
        ("POST_PURCHASE_UPDATE", True, 3 * DAY_MS, (None, "promotional_on_tag")),
        ("PAST_EVENT_UPDATE", False, 3 * DAY_MS, (None, "tag_not_allowed")),
        ("HUMAN_AGENT", False, 6 * DAY_MS, (Via.MESSAGE_TAG, None)),
        ("HUMAN_AGENT", False, 8 * DAY_MS, (None, "human_agent_expired")),
    ],
)
def test_tags_outside_the_window(
    tag: str, promotional: bool, ago: int, expected: tuple[Via | None, str | None]
) -> None:
    decision = decide(last_seen(ago), Outgoing(kind=MessageKind.MESSAGE, tag=tag, promotional=promotional), NOW, S)
    assert (decision.via, decision.reason) == expected
    if decision.allowed:
        assert decision.tag == tag


def test_allowed_tags_are_configuration() -> None:
    only = PolicySettings(allowed_tags=frozenset({"ACCOUNT_UPDATE"}))
    message = Outgoing(kind=MessageKind.MESSAGE, tag="POST_PURCHASE_UPDATE", promotional=False)
    assert decide(last_seen(2 * DAY_MS), message, NOW, only).reason == "tag_not_allowed"


def test_otn_request_only_inside_the_window_and_not_when_nagging() -> None:
    inside, outside = last_seen(HOUR_MS), last_seen(2 * DAY_MS)
    request = Outgoing(kind=MessageKind.OTN_REQUEST, responding=True)
    assert decide(inside, request, NOW, S).via is Via.RESPONSE
    assert decide(outside, request, NOW, S).reason == "outside_window"
    held = Facts(last_interaction_ms=NOW - HOUR_MS, tokens_held=1)
    assert decide(held, request, NOW, S).reason == "token_already_held"
    assert decide(held, request, NOW, PolicySettings(otn_skip_if_token_held=False)).allowed
    asked = Facts(last_interaction_ms=NOW - HOUR_MS, recent_requests=1)
    assert decide(asked, request, NOW, S).reason == "request_limit"
    assert decide(asked, request, NOW, PolicySettings(otn_max_requests=2)).allowed


@pytest.mark.parametrize("settings", [PolicySettings(page_in_eu=True), PolicySettings(otn_available=False)])
def test_otn_unavailable_for_eu_pages_or_when_off(settings: PolicySettings) -> None:
    assert decide(last_seen(HOUR_MS), Outgoing(kind=MessageKind.OTN_REQUEST), NOW, settings).reason == "otn_unavailable"
    assert decide(
        last_seen(HOUR_MS), Outgoing(kind=MessageKind.NOTIFICATION, with_token=True), NOW, settings
    ).reason == ("otn_unavailable")
    assert decide(
        last_seen(HOUR_MS), Outgoing(kind=MessageKind.MESSAGE), NOW, settings
    ).allowed  # ordinary messages still go


def test_otn_unavailable_for_eu_users() -> None:
    eu = last_seen(HOUR_MS, in_eu=True)
    assert decide(eu, Outgoing(kind=MessageKind.OTN_REQUEST), NOW, S).reason == "otn_unavailable"


def test_notification_needs_a_token_and_ignores_the_window() -> None:
    a_year_ago = last_seen(300 * DAY_MS)
    assert decide(a_year_ago, Outgoing(kind=MessageKind.NOTIFICATION, with_token=True), NOW, S).via is Via.OTN_TOKEN
    assert decide(a_year_ago, Outgoing(kind=MessageKind.NOTIFICATION), NOW, S).reason == "no_valid_token"
    expired = Outgoing(kind=MessageKind.NOTIFICATION, with_token=True, token_expires_ms=NOW)
    assert decide(a_year_ago, expired, NOW, S).reason == "token_expired"
    assert decide(a_year_ago, expired, NOW - 1, S).via is Via.OTN_TOKEN


def test_nothing_reaches_an_unreachable_user() -> None:
    blocked = last_seen(HOUR_MS, unreachable=True)
    for message in (
        Outgoing(kind=MessageKind.MESSAGE),
        Outgoing(kind=MessageKind.OTN_REQUEST),
        Outgoing(kind=MessageKind.NOTIFICATION, with_token=True),
    ):
        assert decide(blocked, message, NOW, S).reason == "user_unreachable"


# -- the Handover Protocol: a person's reply, and the bot's silence while a person has the thread -------------
AGENT = Outgoing(kind=MessageKind.AGENT_REPLY)


@pytest.mark.parametrize(
    ("ago", "expected"),
    [
        (0, (Via.MESSAGE_TAG, "HUMAN_AGENT", None)),
        (HOUR_MS, (Via.MESSAGE_TAG, "HUMAN_AGENT", None)),  # inside the window too: it says a person wrote it
        (7 * DAY_MS - 1, (Via.MESSAGE_TAG, "HUMAN_AGENT", None)),
        (7 * DAY_MS, (None, None, "human_agent_expired")),
        (30 * DAY_MS, (None, None, "human_agent_expired")),
    ],
)
def test_an_agent_reply_goes_tagged_up_to_seven_days_after_the_users_last_message(
    ago: int, expected: tuple[object, ...]
) -> None:
    decision = decide(last_seen(ago), AGENT, NOW, S)
    assert (decision.via, decision.tag, decision.reason) == expected


def test_an_agent_reply_counts_from_the_last_message_not_the_last_tap() -> None:
    facts = Facts(last_interaction_ms=NOW - HOUR_MS, last_message_ms=NOW - 8 * DAY_MS)
    assert decide(facts, AGENT, NOW, S).reason == "human_agent_expired"
    assert decide(Facts(last_interaction_ms=NOW), AGENT, NOW, S).reason == "human_agent_expired"  # never wrote


def test_an_agent_reply_follows_the_configured_days_and_tags() -> None:
    assert decide(last_seen(2 * DAY_MS), AGENT, NOW, PolicySettings(human_agent_days=1.0)).reason == (
        "human_agent_expired"
    )
    no_tag = PolicySettings(allowed_tags=frozenset({"ACCOUNT_UPDATE"}))
    assert decide(last_seen(HOUR_MS), AGENT, NOW, no_tag).reason == "tag_not_allowed"
    assert decide(last_seen(HOUR_MS, unreachable=True), AGENT, NOW, S).reason == "user_unreachable"


@pytest.mark.parametrize(
    "message",
    [
        Outgoing(kind=MessageKind.MESSAGE, responding=True),
        Outgoing(kind=MessageKind.OTN_REQUEST, responding=True),
        Outgoing(kind=MessageKind.NOTIFICATION, with_token=True),
        Outgoing(kind=MessageKind.MESSAGE, tag="POST_PURCHASE_UPDATE", promotional=False),
    ],
)
def test_the_bot_says_nothing_while_a_person_has_the_thread(message: Outgoing) -> None:
    assert decide(last_seen(HOUR_MS, with_human=True), message, NOW, S).reason == "with_human"
    assert decide(last_seen(HOUR_MS, with_human=True), AGENT, NOW, S).allowed


def test_every_refusal_the_gate_gives_is_a_member_of_the_enum_and_every_member_is_given() -> None:
    """Over a grid of every input the gate looks at: a decision is allowed with no reason, or refused with a
    `Refusal` member (stored, counted and shown as its plain value); and no member is dead."""
    given: set[Refusal] = set()
    facts = [
        Facts(last_interaction_ms=seen, last_message_ms=seen, tokens_held=held, recent_requests=asked, **blocker)
        for seen, blocker, held, asked in itertools.product(
            (0, NOW - HOUR_MS, NOW - 3 * DAY_MS, NOW - 8 * DAY_MS),
            ({}, {"unreachable": True}, {"in_eu": True}, {"unsubscribed": True}, {"with_human": True}),
            (0, 1), (0, 1),
        )
    ]  # fmt: skip
    messages = [
        Outgoing(kind=kind, tag=tag, promotional=promotional, with_token=token, token_expires_ms=expires,
                 after_optin=optin)
        for kind, tag, promotional, token, expires, optin in itertools.product(
            MessageKind, (None, "ACCOUNT_UPDATE", "HUMAN_AGENT", "PAST_EVENT_UPDATE"), (False, True), (False, True),
            (None, NOW), (False, True),
        )
    ]  # fmt: skip
    for fact, message in itertools.product(facts, messages):  # `responding` and the settings change no refusal
        decision = decide(fact, message, NOW, S)
        if decision.allowed:
            assert decision.reason is None
        else:
            assert type(decision.reason) is Refusal, decision
            given.add(decision.reason)
    assert given == set(Refusal)


def test_a_decision_is_allowed_or_refused_never_both_nor_neither() -> None:
    with pytest.raises(ValueError, match="allowed"):
        Decision(via=None)
    with pytest.raises(ValueError, match="allowed"):
        Decision(via=Via.UPDATE, reason=Refusal.OUTSIDE_WINDOW)


def test_an_outbox_rows_meta_gives_the_outgoing_its_fields_say_one_per_distinct_meta() -> None:
    """The sender and the step read an outbox row's meta as an Outgoing; equal metas share one (it is immutable),
    and every field the gate reads keeps metas apart."""
    kinds = [*MessageKind, "a_kind_from_a_newer_version"]
    tags = (None, "ACCOUNT_UPDATE", "HUMAN_AGENT")
    grid = itertools.product(kinds, (False, True), tags, (False, True), (False, True))
    for kind, responding, tag, promotional, after_optin in grid:
        fields = {"responding": responding, "tag": tag, "promotional": promotional, "after_optin": after_optin}
        outgoing = outgoing_from_meta(OutboxMeta(kind=kind, **fields))  # type: ignore[arg-type]
        known = kind if kind in set(MessageKind) else MessageKind.MESSAGE  # an unknown kind: an ordinary message
        assert outgoing == Outgoing(kind=MessageKind(known), **fields)  # type: ignore[arg-type]
        assert outgoing_from_meta(OutboxMeta(kind=str(kind), **fields)) is outgoing  # type: ignore[arg-type]
