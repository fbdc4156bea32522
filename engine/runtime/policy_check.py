"""The runtime side of the policy gate: gathers the facts about a user and counts refusals. Every outbound
message passes `Gate.check` when it is queued and again right before the Send API call; the decision itself is
the pure `policy.decide`."""

from __future__ import annotations

import logging

from ..policy import Decision, Facts, MessageKind, Outgoing, PolicySettings, decide
from ..policy.gate import HOUR_MS
from ..store import OutboxMeta, Store, UserRecord
from .metrics import Metrics

log = logging.getLogger("otnflow.policy")


class Gate:
    def __init__(self, settings: PolicySettings, metrics: Metrics, eu_user_tag: str = "eu") -> None:
        self.settings = settings
        self.metrics = metrics
        self.eu_user_tag = eu_user_tag

    def facts(self, user: UserRecord | None, tokens_held: int = 0, recent_requests: int = 0) -> Facts:
        if user is None:
            return Facts(tokens_held=tokens_held, recent_requests=recent_requests)
        return Facts(
            last_interaction_ms=user.last_interaction_ms,
            last_message_ms=user.last_message_ms,
            unreachable=user.unreachable,
            in_eu=self.eu_user_tag in user.tags,
            tokens_held=tokens_held,
            recent_requests=recent_requests,
            unsubscribed=user.unsubscribed_ms > 0,
            with_human=user.with_human,
        )

    async def request_facts(
        self,
        store: Store,
        user: UserRecord,
        topic: str,
        now_ms: int,
        queued: int = 0,
        received: int = 0,
        request_key: str = "",
    ) -> Facts:
        """Facts for an OTN request: also the tokens held for the same request (`request_key`: a token for the
        Sauvignon does not answer a request about the Rioja), and the requests still unanswered (made within the
        anti-nagging period and after the user's last opt-in to the topic: an accepted request is not nagging).
        The store counts requests from the outbox (queued, in flight or sent); `queued` adds those the caller is
        about to commit in the same write, `received` the tokens it is about to store. A user's steps run one at
        a time (the dispatcher, and leases across processes), so read-then-commit cannot interleave."""
        period_start = now_ms - int(self.settings.otn_request_period_hours * HOUR_MS)
        held, recent = await store.request_counts(user.user_id, topic, period_start, now_ms, request_key)
        return self.facts(user, held + received, recent + queued)

    def check(self, facts: Facts, message: Outgoing, now_ms: int) -> Decision:
        decision = decide(facts, message, now_ms, self.settings)
        if not decision.allowed:
            self.metrics.policy_refusals.labels(message.kind, decision.reason).inc()
            log.info("policy refused a %s: %s", message.kind, decision.reason)
        return decision


#: The kinds of outbox row the gate tells apart from an ordinary message, by their stored name.
_GATED_KINDS = {
    str(kind): kind for kind in (MessageKind.OTN_REQUEST, MessageKind.NOTIFICATION, MessageKind.AGENT_REPLY)
}


#: Outgoing by the meta fields it is made of: an Outgoing is immutable, and rows have few distinct metas. Making one
#: costs ~6.8k instructions, the lookup ~1.7k (callgrind); the gate reads one twice a turn.
_OUTGOING: dict[tuple[str, bool, str | None, bool, bool], Outgoing] = {}
_OUTGOING_KEPT = 256  # beyond this many distinct metas (tags are few), the rest are made each time


def outgoing_from_meta(meta: OutboxMeta) -> Outgoing:
    """An outbox row's meta as the gate's Outgoing (an unknown kind is an ordinary message)."""
    key = (meta.kind, meta.responding, meta.tag, meta.promotional, meta.after_optin)
    outgoing = _OUTGOING.get(key)
    if outgoing is None:
        outgoing = Outgoing(
            kind=_GATED_KINDS.get(meta.kind, MessageKind.MESSAGE),
            responding=meta.responding,
            tag=meta.tag,
            promotional=meta.promotional,
            after_optin=meta.after_optin,
        )
        if len(_OUTGOING) < _OUTGOING_KEPT:
            _OUTGOING[key] = outgoing
    return outgoing
