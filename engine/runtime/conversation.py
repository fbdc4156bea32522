"""The conversation step for one stored event: load the user, run the flow, pass every reply through the policy
gate, and commit the new user state, the outbox rows, any OTN token received and the event's handled mark in one
atomic write."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import jsonio
from ..actions import ActionContext
from ..flow import Arrival, CompiledFlow, Reply, Snapshot, StepResult, UserInput, payloads
from ..messenger import outbound
from ..messenger.client import ThreadControl
from ..messenger.events import MAX_KEY_CHARS, STANDBY, EventKind, InboundEvent, Referral, parse_event
from ..policy import MessageKind
from ..policy.gate import DAY_MS
from ..store import (
    OtnLogged,
    OutboxItem,
    OutboxMeta,
    OutboxStatus,
    StepWrite,
    Store,
    StoredEvent,
    Token,
    UserRecord,
    refused_request,
    request_key,
)
from . import handover
from .actions import ActionRunner
from .clock import Clock
from .flows import FlowSet, LiveFlows
from .handover import INTERNAL_KINDS, HandoverSettings
from .policy_check import Gate, outgoing_from_meta
from .replies import reply_to_outbox

log = logging.getLogger("otnflow.conversation")

ProfileFetcher = Callable[[str], Awaitable[dict[str, Any] | None]]

#: The topic under which a token for a topic no flow declares is kept (its payload says what it was). Not a valid
#: name for a declared topic in practice: parentheses.
UNKNOWN_TOPIC = "(unknown)"

#: Event kinds that open (or reopen) the 24h standard messaging window (messenger-platform.md). An opt-in does not.
#: Actions one event may run in a row (an action's outcome may lead to another state with an action).
MAX_ACTIONS_PER_EVENT = 5

WINDOW_OPENERS = frozenset({EventKind.MESSAGE, EventKind.POSTBACK, EventKind.REACTION, EventKind.REFERRAL})


#: Where a plugin opt-in's `ref` and `user_ref` are kept among the user's variables.
PLUGIN_OPTIN_VARIABLES = {"ref": "plugin_ref", "user_ref": "plugin_user_ref"}


def _record_plugin_optin(user: UserRecord, optin: dict[str, Any]) -> None:
    """A plugin opt-in carries no token, only what the page passed (`ref`) and the plugin's `user_ref`: kept."""
    for key, variable in PLUGIN_OPTIN_VARIABLES.items():
        value = optin.get(key)
        if isinstance(value, str) and value:
            user.variables[variable] = value[:MAX_KEY_CHARS]


def _inbound(stored: StoredEvent) -> InboundEvent | None:
    """The stored event as the webhook judged it on receipt: the webhook's own parse when this process stored it
    (and no middleware changed its body), else its body parsed again."""
    if stored.parsed is not None and stored.parsed[0] is stored.body and isinstance(stored.parsed[1], InboundEvent):
        return stored.parsed[1]
    return parse_event(jsonio.loads(stored.body), stored.key, Counter(), simulated_ids=True)


def _arrival(referral: Referral | None) -> Arrival | None:
    return None if referral is None else Arrival(referral.ref, referral.source, referral.ad_id)


@dataclass(kw_only=True)
class ThreadStep:
    """What an event does about the thread's owner: whether the flow runs on it (not while a person has the
    thread), whether it engages the loop, where the flow resumes when control came back, thread-control rows to
    send first, and a person's reply to send."""

    run_flow: bool = True
    engaged: bool = True
    resume_from: str | None = None
    before: list[OutboxItem] = field(default_factory=list)
    agent_text: str = ""


@dataclass
class StepOutcome:
    """What one handled event left to send. `committed` is False when another worker or a replay got there first."""

    committed: bool
    user: UserRecord
    outbox: list[OutboxItem]


#: One conversation step for one stored event, as a middleware sees it: call it (with the event, or an enriched
#: copy) to run the step. Call it: only the step marks the event handled (one not called leaves it pending); a
#: middleware that raises fails the event as a failing step does (kept in the inbox as failed, logged).
Step = Callable[[StoredEvent], Awaitable[StepOutcome]]
#: A callable around each step, for logging, tracing or enrichment: `async def timed(event, step): return await
#: step(event)`. The first in the list is the outermost. It runs with the user's lock held, inside the step's retry.
StepMiddleware = Callable[[StoredEvent, Step], Awaitable[StepOutcome]]


def _around(middleware: StepMiddleware, step: Step) -> Step:
    async def wrapped(event: StoredEvent) -> StepOutcome:
        return await middleware(event, step)

    return wrapped


class StepHandler:
    """Turns one stored event into one committed step: the user loaded, the flow run, the replies gated."""

    def __init__(
        self,
        flows: LiveFlows,
        store: Store,
        fetch_profile: ProfileFetcher,
        clock: Clock,
        gate: Gate,
        middlewares: Sequence[StepMiddleware] = (),
        actions: ActionRunner | None = None,
        handovers: HandoverSettings | None = None,
    ) -> None:
        self.handovers = handovers or HandoverSettings()
        self.middlewares = tuple(middlewares)
        self.actions = actions or ActionRunner({})
        self.flows = flows  # read once per step: a reload swaps in a new set, never changes one in flight
        self._unknown_topics_logged: set[str] = set()  # a warning once per topic, not per opt-in (bounded)
        self.store = store
        self.fetch_profile = fetch_profile
        self.clock = clock
        self.gate = gate

    async def handle(self, stored: StoredEvent, send_now: bool = False, user: UserRecord | None = None) -> StepOutcome:
        """The step for one event, through the middlewares, if any (see `_step`)."""
        if not self.middlewares:
            return await self._step(stored, send_now, user)

        async def innermost(event: StoredEvent) -> StepOutcome:
            return await self._step(event, send_now, user)

        step: Step = innermost
        for middleware in reversed(self.middlewares):
            step = _around(middleware, step)
        return await step(stored)

    async def _step(self, stored: StoredEvent, send_now: bool = False, user: UserRecord | None = None) -> StepOutcome:
        """Handle one event: one atomic write of the user, its replies and the event's handled mark. With
        `send_now` the first allowed reply is recorded as `sending` in that same write, because the caller sends
        it at once: that saves a write per event, and a crash after the commit leaves it `uncertain`, as designed.
        `user` is the record this worker itself just committed for the same user, when it has one: no read back."""
        # judged on receipt; the runtime's own events (an agent's reply, the idle timeout) are not Meta's
        event = None if stored.kind in INTERNAL_KINDS else _inbound(stored)
        flows = self.flows.current  # this step's flows, whatever a reload does meanwhile
        armed: list[tuple[str, str]] = []
        if user is None or user.user_id != stored.user_id:
            user, armed = await self.store.load_for_step(stored.user_id)
        # else: the record this worker just committed; a re-request armed meanwhile goes at the next engagement
        if user is None:
            user = UserRecord(
                user_id=stored.user_id, page_id=stored.page_id, flow=flows.default, created_ms=self.clock.now_ms()
            )
        if user.profile is None:
            user.profile = await self.fetch_profile(user.user_id)  # None again on failure: tried next time
        flow = flows.for_user(user.flow)
        user.flow = flow.spec.name
        write = StepWrite(event_key=stored.key, user=user)
        replies: list[Reply] = []
        engaged = event is not None and event.kind in WINDOW_OPENERS
        if event is not None and engaged:
            user.last_interaction_ms = max(user.last_interaction_ms, event.timestamp)
            if event.kind is EventKind.MESSAGE:
                user.last_message_ms = max(user.last_message_ms, event.timestamp)
        thread = self._thread(stored, event, user, flow)
        if thread.run_flow is False:  # a person has the thread, or the event is about who has it: no flow step
            event = None
        if thread.engaged and engaged:
            replies += self._armed_requests(flow, armed, user, write)  # the loop: before the flow's own reply
        rerequests = len(replies)
        if event is not None and event.kind is EventKind.OPTIN:
            self._receive_token(flows, flow, user, event, write)
            if write.tokens:  # tapping a Notify Me is asking to hear from us again
                self._consent(user, write, True)
        result = self.run_flow(flow, user, event) if event is not None else None
        if thread.resume_from is not None:  # the bot has the thread again: the flow resumes where the author said
            result = flow.hand_back(self.snapshot(flow, user), thread.resume_from, user.profile or {})
        if result is not None and result.action is not None:
            result = await self._run_actions(flow, user, result, stored.key)
        if result is not None:
            user.state = result.snapshot.state
            user.tags = set(result.snapshot.tags)
            user.variables = dict(result.snapshot.variables)
            replies += result.replies
            if result.consent is not None:  # before the gate: a request in the step that unsubscribes is refused
                self._consent(user, write, result.consent)
        after_optin = event is not None and event.kind is EventKind.OPTIN
        gated = await self._gated(replies, stored.key, user, engaged and thread.engaged, after_optin, write)
        for item in gated[:rerequests]:
            item.meta.re_request = True
            if item.status != OutboxStatus.REFUSED:  # used up only when the gate let it go; else it waits
                write.disarm.append(str(item.meta.topic))
        handing = result.handover if result is not None else None
        passing = [] if handing is None else [handover.pass_row(f"{stored.key}#handover", user.user_id, handing)]
        write.outbox = thread.before + gated + passing + self._agent_rows(thread.agent_text, stored.key, user)
        if send_now:  # refused rows are never sent, so the first pending row is the next to go out
            first = next((item for item in write.outbox if item.status == OutboxStatus.PENDING), None)
            if first is not None:
                first.status = OutboxStatus.SENDING
        committed = await self.store.commit_step(write, self.clock.now_ms())
        if not committed:  # someone else handled it: our copy of the user is stale
            reloaded = await self.store.load_user(stored.user_id)
            return StepOutcome(False, reloaded or user, [])
        return StepOutcome(
            True, user, [item for item in write.outbox if item.status in (OutboxStatus.PENDING, OutboxStatus.SENDING)]
        )

    def _thread(
        self, stored: StoredEvent, event: InboundEvent | None, user: UserRecord, flow: CompiledFlow
    ) -> ThreadStep:
        """Who has the user's thread, and what this event does about it (see runtime/handover.py)."""
        now = self.clock.now_ms()
        if stored.kind == handover.AGENT_REPLY:
            user.agent_replied_ms = now
            return ThreadStep(
                run_flow=False, engaged=False, agent_text=str(handover.internal_data(stored).get("text", ""))
            )
        # A person answered in the Page Inbox: the idle timeout counts from here.
        if stored.kind == EventKind.AGENT_ECHO:
            if user.with_human:
                user.agent_replied_ms = max(user.agent_replied_ms, stored.timestamp)
            return ThreadStep(run_flow=False, engaged=False)
        if stored.kind == handover.HANDOVER_IDLE:
            if not handover.is_idle(user, now, self.handovers.idle_minutes):
                return ThreadStep(run_flow=False, engaged=False)  # an agent answered meanwhile, or it came back
            self.metrics_handover("idle")
            return self._take_back(stored, user, engaged=False)
        if event is not None and event.handover is not None:
            was_with_human = user.with_human
            resume = handover.receive(user, event.handover, event.timestamp, self.handovers.bot_app_id)
            if was_with_human != user.with_human:
                self.metrics_handover("returned" if was_with_human else "taken")
            return ThreadStep(run_flow=False, engaged=False, resume_from=resume or None)
        if not user.with_human and stored.kind != STANDBY:
            return ThreadStep()
        if not user.with_human:  # Meta delivers in standby: another app has the thread, though nobody told us
            user.thread_owner, user.handed_over_ms = handover.UNKNOWN_OWNER, event.timestamp if event else now
        if event is not None and event.kind is EventKind.MESSAGE and flow.takes_back(user.handover_state, event.text):
            self.metrics_handover("take_back")
            return self._take_back(stored, user, engaged=True)
        return ThreadStep(run_flow=False, engaged=False)

    def _take_back(self, stored: StoredEvent, user: UserRecord, engaged: bool) -> ThreadStep:
        take = handover.control_row(f"{stored.key}#take", user.user_id, ThreadControl.TAKE, state=user.handover_state)
        return ThreadStep(run_flow=False, engaged=engaged, resume_from=handover.release(user), before=[take])

    def _agent_rows(self, text: str, key: str, user: UserRecord) -> list[OutboxItem]:
        """A person's reply, gated as HUMAN_AGENT (within 7 days of the user's last message, never later)."""
        if not text:
            return []
        item = OutboxItem(
            key=f"{key}#0",
            user_id=user.user_id,
            message=outbound.text_message(text),
            meta=OutboxMeta(kind=MessageKind.AGENT_REPLY),
        )
        decision = self.gate.check(self.gate.facts(user), outgoing_from_meta(item.meta), self.clock.now_ms())
        if decision.reason is not None:  # refused
            item.status, item.detail = OutboxStatus.REFUSED, decision.reason
        return [item]

    def metrics_handover(self, what: str) -> None:
        self.gate.metrics.handovers.labels(what).inc()

    def _consent(self, user: UserRecord, write: StepWrite, subscribed: bool) -> None:
        """Unsubscribing revokes the user's tokens and disarms their re-requests (in the step's own write); the
        gate keeps them out of campaigns and OTN requests until they subscribe again."""
        if subscribed and user.unsubscribed_ms:
            user.unsubscribed_ms, write.consent = 0, True
        elif not subscribed and not user.unsubscribed_ms:
            user.unsubscribed_ms, write.consent = self.clock.now_ms(), False

    def run_flow(self, flow: CompiledFlow, user: UserRecord, event: InboundEvent) -> StepResult | None:
        snapshot = self.snapshot(flow, user)
        profile = user.profile or {}
        arrival = _arrival(event.referral)
        if event.kind in (EventKind.MESSAGE, EventKind.POSTBACK):
            return flow.step(snapshot, UserInput(event.text, event.payload, arrival), profile)
        if event.kind is EventKind.OPTIN:
            topic = payloads.parse_request(event.payload, flow.spec.topics).topic
            return flow.enter_optin(snapshot, topic, profile) if topic in flow.spec.topics else None
        if event.kind is EventKind.REFERRAL:  # routed by the flow's entry points; new users start, others resume
            return flow.step(snapshot, UserInput(arrival=arrival), profile)
        return None  # reactions and the like: they reopen the window, nothing to say

    async def _run_actions(self, flow: CompiledFlow, user: UserRecord, result: StepResult, key: str) -> StepResult:
        """Run the actions the step stopped at, feeding each outcome back into the flow (bounded per event)."""
        replies, consent = list(result.replies), result.consent
        for index in range(MAX_ACTIONS_PER_EVENT):
            call = result.action
            if call is None:
                break
            snapshot = result.snapshot
            context = ActionContext(
                user_id=user.user_id,
                tags=snapshot.tags,
                vars=dict(snapshot.variables),
                idempotency_key=f"{key}#action{index}",
                args=call.args,
            )
            done = await self.actions.run(call, context)
            result = flow.resume(snapshot, done.outcome, done.value, user.profile or {})
            replies += result.replies
            consent = result.consent if result.consent is not None else consent
        if result.action is not None:
            log.warning("user %s: more than %d actions in one event; stopped", user.user_id, MAX_ACTIONS_PER_EVENT)
        return StepResult(
            snapshot=result.snapshot,
            replies=tuple(replies),
            matched=result.matched,
            consent=consent,
            handover=result.handover,
        )

    @staticmethod
    def snapshot(flow: CompiledFlow, user: UserRecord) -> Snapshot:
        state = user.state if user.state in flow.spec.states else None
        return Snapshot(state, frozenset(user.tags), user.variables)

    def _receive_token(
        self, flows: FlowSet, flow: CompiledFlow, user: UserRecord, event: InboundEvent, write: StepWrite
    ) -> None:
        optin = event.raw.get("optin", {})
        token = optin.get("one_time_notif_token")
        if optin.get("type") is None and token is None:  # a plugin opt-in (Send to Messenger, checkbox)
            _record_plugin_optin(user, optin)
            return
        if optin.get("type") != "one_time_notif_req" or not isinstance(token, str):
            log.info("opt-in of another kind (%s) ignored", optin.get("type"))
            return
        asked = payloads.parse_request(event.payload, flow.spec.topics)
        topic, source_state, about, title = asked.topic, asked.asking_state, dict(asked.vars), asked.title
        declared = flows.declaring(topic) is not None
        if not declared:  # no campaign can ever use it: kept for the record, under one name, with its payload
            if len(self._unknown_topics_logged) < 1_000 and topic not in self._unknown_topics_logged:
                self._unknown_topics_logged.add(topic)
                log.warning("OTN token for topic %r, which no flow declares: kept as %s", topic, UNKNOWN_TOPIC)
            topic, source_state, about, title = UNKNOWN_TOPIC, "", {}, ""
        days = self.gate.settings.otn_token_days
        write.tokens.append(
            Token(
                token=token,
                user_id=user.user_id,
                topic=topic,
                payload=event.payload or "",
                received_ms=event.timestamp,
                expires_ms=event.timestamp + int(days * DAY_MS),
                source_state=source_state,
                request_vars=about,
                title=title,
            )
        )
        if declared:  # the loop's figures are per declared topic (an unknown one would be a stray metrics label)
            write.otn_log.append((topic, OtnLogged.OPTIN))

    def _armed_requests(
        self, flow: CompiledFlow, armed: list[tuple[str, str]], user: UserRecord, write: StepWrite
    ) -> list[Reply]:
        """The user engaged: the OTN requests armed by earlier deliveries go out now (the window may have just
        reopened). Each stays armed unless the gate lets it go (see `handle`); one for a topic the flow no longer
        declares can never go, so it is dropped."""
        requests = []
        for topic, source_state in armed:
            if topic in flow.spec.topics:
                requests.append(flow.otn_request(topic, source_state, self.snapshot(flow, user), user.profile))
            else:
                write.disarm.append(topic)
        return requests

    async def _gated(
        self, replies: list[Reply], key: str, user: UserRecord, responding: bool, after_optin: bool, write: StepWrite
    ) -> list[OutboxItem]:
        """Outbox rows for the replies; those the policy gate refuses are recorded `refused`, with the reason."""
        if not replies:
            return []
        now = self.clock.now_ms()
        items = []
        queued: Counter[str] = Counter()  # requests this step already let through, per topic: they count too
        plain = self.gate.facts(user)  # what the gate knows for any reply but an OTN request
        for i, reply in enumerate(replies):
            item = reply_to_outbox(reply, f"{key}#{i}", user.user_id, responding)
            facts = plain
            if reply.otn_topic is not None:
                asked = request_key(dict(reply.otn_vars))
                received = sum(1 for t in write.tokens if t.topic == reply.otn_topic and t.request_key == asked)
                facts = await self.gate.request_facts(
                    self.store, user, reply.otn_topic, now, queued[reply.otn_topic], received, asked
                )
            if after_optin:
                item.meta.after_optin = True  # the sender's last gate gives the same reason
            decision = self.gate.check(facts, outgoing_from_meta(item.meta), now)
            if decision.reason is not None:  # refused
                item.status, item.detail = OutboxStatus.REFUSED, decision.reason
                if reply.otn_topic is not None:
                    write.otn_log.append((reply.otn_topic, refused_request(decision.reason)))
            elif reply.otn_topic is not None:
                queued[reply.otn_topic] += 1
            items.append(item)
        return items
