"""The conversation step for one stored event: load the user, run the flow, and commit the new user state, the
replies (as outbox rows) and the event's handled mark in one atomic write."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..flow import CompiledFlow, Reply, Snapshot, StepResult, UserInput
from ..messenger import outbound
from ..messenger.webhook import InboundEvent, parse_event
from ..store import OutboxItem, Store, StoredEvent, UserRecord
from .clock import Clock

log = logging.getLogger("otnflow.conversation")

ProfileFetcher = Callable[[str], Awaitable[dict[str, Any] | None]]

#: Event kinds that open (or reopen) the 24h standard messaging window (messenger-platform.md).
WINDOW_OPENERS = frozenset({"message", "postback", "reaction", "referral"})


def reply_to_outbox(reply: Reply, key: str, user_id: str) -> OutboxItem:
    """A flow reply as a Send API `message`, with what the policy gate needs to know in `meta`."""
    quick = [(q.title, q.payload) for q in reply.quick_replies]
    if reply.otn_topic is not None:
        message = outbound.otn_request(reply.text, f"otn:{reply.otn_topic}:{key}")
        meta: dict[str, Any] = {"kind": "otn_request", "topic": reply.otn_topic}
    elif reply.buttons:
        message = outbound.button_message(reply.text, [(b.title, b.payload, b.url) for b in reply.buttons], quick)
        meta = {"kind": "reply"}
    else:
        message = outbound.text_message(reply.text, quick)
        meta = {"kind": "reply"}
    return OutboxItem(key, user_id, message, meta)


@dataclass
class Handled:
    """What one handled event left to send. `committed` is False when another worker or a replay got there first."""

    committed: bool
    user: UserRecord
    outbox: list[OutboxItem]


class ConversationHandler:
    def __init__(
        self,
        flows: Mapping[str, CompiledFlow],
        default_flow: str,
        store: Store,
        fetch_profile: ProfileFetcher,
        clock: Clock,
    ) -> None:
        self.flows = flows
        self.default_flow = default_flow
        self.store = store
        self.fetch_profile = fetch_profile
        self.clock = clock

    def flow_for(self, user: UserRecord) -> CompiledFlow:
        return self.flows.get(user.flow) or self.flows[self.default_flow]

    async def handle(self, stored: StoredEvent, send_now: bool = False, user: UserRecord | None = None) -> Handled:
        """Handle one event: one atomic write of the user, its replies and the event's handled mark. With
        `send_now` the first reply is recorded as `sending` in that same write, because the caller sends it at
        once: that saves a write per event, and a crash after the commit leaves it `uncertain`, as designed.
        `user` is the record this worker itself just committed for the same user, when it has one: no read back."""
        event = parse_event(json.loads(stored.body), stored.key, Counter())
        if user is None or user.user_id != stored.user_id:
            user = await self.store.load_user(stored.user_id)
        if user is None:
            user = UserRecord(stored.user_id, stored.page_id, self.default_flow, created_ms=self.clock.now_ms())
        if user.profile is None:
            user.profile = await self.fetch_profile(user.user_id)  # None again on failure: tried next time
        flow = self.flow_for(user)
        user.flow = flow.spec.name
        result = self.run_flow(flow, user, event) if event is not None else None
        if event is not None and event.kind in WINDOW_OPENERS:
            user.last_interaction_ms = max(user.last_interaction_ms, event.timestamp)
        replies: tuple[Reply, ...] = ()
        if result is not None:
            user.state = result.snapshot.state
            user.tags = set(result.snapshot.tags)
            user.variables = dict(result.snapshot.variables)
            replies = result.replies
        outbox = [reply_to_outbox(r, f"{stored.key}#{i}", user.user_id) for i, r in enumerate(replies)]
        if send_now and outbox and not user.unreachable:
            outbox[0].status = "sending"
        committed = await self.store.commit_step(stored.key, user, outbox, self.clock.now_ms())
        if not committed:  # someone else handled it: our copy of the user is stale
            reloaded = await self.store.load_user(stored.user_id)
            return Handled(False, reloaded or user, [])
        return Handled(True, user, outbox)

    def run_flow(self, flow: CompiledFlow, user: UserRecord, event: InboundEvent) -> StepResult | None:
        snapshot = Snapshot(
            user.state if user.state in flow.spec.states else None, frozenset(user.tags), user.variables
        )
        profile = user.profile or {}
        if event.kind in ("message", "postback"):
            return flow.step(snapshot, UserInput(event.text, event.payload), profile)
        if event.kind == "optin":
            topic = _otn_topic(event.payload)
            if topic and topic in flow.spec.topics:
                return flow.enter_optin(snapshot, topic, profile)
            return None
        if event.kind == "referral" and snapshot.state is None:  # an m.me link opened by a new user: greet them
            return flow.step(snapshot, UserInput(), profile)
        return None  # reactions and the like: they reopen the window, nothing to say


def _otn_topic(payload: str | None) -> str | None:
    """Our OTN request payloads are `otn:<topic>:<request id>`."""
    if payload and payload.startswith("otn:"):
        return payload.split(":", 2)[1]
    return None
