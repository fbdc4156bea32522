"""Compile a FlowSpec into one `transitions` machine shared by every user, and run one conversation step on it.

A step is pure: it takes the user's snapshot (state, tags, variables), one input and the user's profile, and
returns the new snapshot and the replies to send. Nothing is sent and nothing is stored here; the runtime does
that. A user is "bound" to the machine by handing a short-lived model object to `Event.trigger`, which reads and
writes only that object's `state` attribute: no `add_model`/`remove_model` (both O(models)) and no per-user machine.
`bench/compile.py` measures the alternatives.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from typing import Any, cast

from jinja2 import Template
from jinja2.sandbox import SandboxedEnvironment
from transitions import EventData, Machine, Transition
from transitions import State as MachineState

from ..immutable import immutable
from . import payloads
from .segments import ALWAYS, Segment
from .spec import Cause, Edge, Effects, FlowSpec, Message, Outcome, Rule, Scalar, State, source_name
from .words import Typed

NEW_USER = "__new__"
TAPS = (Cause.QUICK_REPLY, Cause.BUTTON, Cause.NOTIFICATION_REPLY)
MAX_THEN_CHAIN = 25
DEFAULT_FALLBACK = "Sorry, I didn't get that."


# -- what a step returns ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QuickReply:
    title: str
    payload: str


@dataclass(frozen=True)
class Button:
    title: str
    payload: str | None = None
    url: str | None = None


@immutable
class Reply:
    """One outgoing message. With `otn_topic` set it is a Notify Me request and `text` is its title."""

    text: str
    quick_replies: tuple[QuickReply, ...] = ()
    buttons: tuple[Button, ...] = ()
    otn_topic: str | None = None
    otn_state: str = ""  # the state whose `otn` asked (its vars title the topic's next requests)
    otn_vars: tuple[tuple[str, str], ...] = ()  # what the request is about: the asking state's otn.vars, rendered
    message_tag: str | None = None  # lets the message go outside the 24h window (never promotional)
    promotional: bool = True


@immutable
class Arrival:
    """Where the user came from: Meta's referral (an m.me link, an ad, a code, the chat plugin, Discover), as the
    runtime read it from a `referral` event or a Get Started postback. `source` is Meta's word (SHORTLINK, ADS...)."""

    ref: str | None
    source: str
    ad_id: str | None = None


#: The variables that keep the user's latest and first referral (the first is never overwritten).
REFERRAL_VARIABLES = ("ref", "ref_source", "ref_ad_id")
FIRST_REFERRAL_VARIABLES = ("first_ref", "first_ref_source", "first_ref_ad_id")


@immutable
class UserInput:
    """What the user did: typed `text`, or tapped something carrying `payload` (a quick reply carries both), or
    arrived from a referral (`arrival`; a Get Started postback can carry one too)."""

    text: str | None = None
    payload: str | None = None
    arrival: Arrival | None = None


@immutable
class Snapshot:
    """The conversational part of a user record. `state` is None for a user the flow has never seen."""

    state: str | None = None
    tags: frozenset[str] = frozenset()
    variables: Mapping[str, Scalar] = field(default_factory=dict)


@dataclass(frozen=True)
class ActionCall:
    """An action the step stopped at: the runtime runs it, then hands its outcome to `CompiledFlow.resume`."""

    state: str  # the state whose action it is (the user is in it)
    name: str
    args: Mapping[str, Scalar]  # rendered
    timeout_seconds: float


class Match(StrEnum):
    """How a step understood its input (shown as the same plain words)."""

    START = "start"  # a new user began the flow
    RESUME = "resume"  # a referral no entry point routes: a returning user hears their state again
    REFERRAL = "referral"  # an entry point routed the referral
    KEYWORD = "keyword"
    PAYLOAD = "payload"  # a quick reply, button or rule on the tap's payload
    ENGAGED = "engaged"  # a tap on a notification that offers no choice: the user engaged, nothing more
    LATE_TAP = "late_tap"  # a tap on an earlier message, followed from the state that sent it
    TITLE = "title"  # typed text equal to a quick reply's title
    RULE = "rule"  # a state's rule on the typed text
    FALLBACK = "fallback"  # nothing else matched
    OPTIN = "optin"  # a Notify Me tap ran the topic's on_optin state
    ACTION_SUCCESS = "action_success"  # `resume` with the action's outcome
    ACTION_FAILURE = "action_failure"
    ACTION_TIMEOUT = "action_timeout"
    HANDED_BACK = "handed_back"  # control came back from a person: the handing state's `resume`


@dataclass(frozen=True)
class HandoverCall:
    """The step handed the conversation to a person: after its replies, pass the thread to `app_id` with `note`."""

    state: str  # the state that handed over: its `resume` and `take_back` apply when control comes back
    app_id: str
    note: str = ""


@immutable(kw_only=True)
class StepResult:
    snapshot: Snapshot
    replies: tuple[Reply, ...]
    matched: Match  # how the input was understood
    consent: bool | None = None  # False: the step unsubscribed the user; True: subscribed them again
    action: ActionCall | None = None  # the step stopped at a state's action: run it, then `resume`
    handover: HandoverCall | None = None  # the step handed the conversation to a person


class _Conversation:
    """The model bound to the shared machine for the length of one step."""

    __slots__ = ("action", "consent", "handover", "profile", "replies", "state", "tags", "text", "variables")

    def __init__(self, snapshot: Snapshot, text: str | None, profile: Mapping[str, Any]) -> None:
        self.state = snapshot.state or NEW_USER
        self.tags = set(snapshot.tags)
        self.variables: dict[str, Scalar] = dict(snapshot.variables)
        self.text = text
        self.profile = profile
        self.replies: list[Reply] = []
        self.consent: bool | None = None
        self.action: ActionCall | None = None
        self.handover: HandoverCall | None = None

    def context(self) -> dict[str, Any]:
        user = {**self.profile, "tags": sorted(self.tags)}
        return {"user": user, "vars": self.variables, "text": self.text or ""}

    def apply(self, effects: Effects) -> None:
        self.tags.update(effects.tag)
        self.tags.difference_update(effects.untag)
        self.variables.update(effects.set)
        if effects.consent is not None:
            self.consent = effects.consent

    def snapshot(self) -> Snapshot:
        return Snapshot(self.state, frozenset(self.tags), dict(self.variables))

    def result(self, matched: Match) -> StepResult:
        return StepResult(
            snapshot=self.snapshot(),
            replies=tuple(self.replies),
            matched=matched,
            consent=self.consent,
            action=self.action,
            handover=self.handover,
        )


# -- the machine -----------------------------------------------------------------------------------------------
# transitions' own Machine, State and Transition, run as they are, minus their log calls: a debug or info call
# around every callback, state exit and enter, and transition (ten or more a step; `logs.py` silences them anyway)
# were a third of what a transition costs. The three overrides are transitions 0.9's code without those calls.
class _QuietState(MachineState):
    def enter(self, event_data: EventData) -> None:
        event_data.machine.callbacks(self.on_enter, event_data)

    def exit(self, event_data: EventData) -> None:
        event_data.machine.callbacks(self.on_exit, event_data)


class _QuietTransition(Transition):
    def execute(self, event_data: EventData) -> bool:
        machine = event_data.machine
        machine.callbacks(self.prepare, event_data)
        if not self._eval_conditions(event_data):
            return False
        machine.callbacks(itertools.chain(machine.before_state_change, self.before), event_data)
        if self.dest:
            self._change_state(event_data)
        machine.callbacks(itertools.chain(self.after, machine.after_state_change), event_data)
        return True


class _FlowMachine(Machine):
    state_cls = _QuietState
    transition_cls = _QuietTransition

    def callbacks(self, funcs: Iterable[Any], event_data: EventData) -> None:
        for func in funcs:
            self.callback(func, event_data)


# -- the compiled flow -----------------------------------------------------------------------------------------
class CompiledFlow:
    """Built once per flow file; `step` is safe to call for any number of users (one step at a time per user)."""

    def __init__(self, spec: FlowSpec, env: SandboxedEnvironment) -> None:
        self.spec = spec
        self._env = env
        self._templates: dict[Message, Template] = {}
        self._late_taps = self._index_late_taps()
        # what each state offers under its message, made once (the same for every user)
        self._quick_replies = {
            name: tuple(QuickReply(c.title, c.payload) for c in state.quick_replies)
            for name, state in spec.states.items()
        }
        self._buttons = {
            name: tuple(Button(c.title, None if c.url else c.payload, c.url) for c in state.buttons)
            for name, state in spec.states.items()
        }
        self.machine = self._build_machine()

    # The machine -------------------------------------------------------------------------------------------
    def _build_machine(self) -> Machine:
        spec = self.spec
        machine = _FlowMachine(model=None, states=[NEW_USER], initial=NEW_USER, auto_transitions=False, send_event=True)
        for state in spec.states.values():
            machine.add_state(state.name, on_enter=[partial(self._on_enter, state)])
        machine.add_transition("begin", NEW_USER, spec.start)
        for edge in spec.edges():
            machine.add_transition(
                _trigger(edge),
                edge.source or "*",
                edge.target,
                conditions=_guard(edge.when),
                before=[partial(_take_edge, edge)] if edge.effects or edge.capture else [],
            )
        return machine

    def _index_late_taps(self) -> dict[str, str]:
        """Payload -> the one state offering it, for taps on a button from an earlier message."""
        offered: dict[str, list[str]] = {}
        for edge in self.spec.edges():
            if edge.cause in (Cause.QUICK_REPLY, Cause.BUTTON) and edge.choice and edge.source:
                offered.setdefault(edge.choice.payload, []).append(edge.source)
        return {payload: states[0] for payload, states in offered.items() if len(states) == 1}

    def _on_enter(self, state: State, event: EventData) -> None:
        convo = cast(_Conversation, event.model)
        convo.apply(state.effects)
        if state.action is None:
            self._speak(state, convo)
            return
        context = convo.context()
        args = {k: self.render_value(v, context) if isinstance(v, str) else v for k, v in state.action.args}
        convo.action = ActionCall(state.name, state.action.name, args, state.action.timeout_seconds)

    def _speak(self, state: State, convo: _Conversation) -> None:
        """The state's message, then its Notify Me request (a state with an action speaks once it has run)."""
        self._say(state, convo)
        if state.otn is not None:
            convo.replies.append(self._otn_request(state.otn.topic, state.name, convo.context(), {}))
        if state.handover is not None:
            note = self.render(state.handover.note, convo.context()) if state.handover.note else ""
            convo.handover = HandoverCall(state.name, state.handover.app_id, note)

    def _say(self, state: State, convo: _Conversation) -> None:
        if state.say is not None:
            convo.replies.append(
                Reply(
                    self.render(state.say, convo.context()),
                    self._quick_replies[state.name],
                    self._buttons[state.name],
                    message_tag=state.message_tag,
                    promotional=state.promotional is not False,
                )
            )

    def _otn_request(
        self, topic_name: str, source_state: str, context: Mapping[str, Any], extra: Mapping[str, Scalar]
    ) -> Reply:
        topic = self.spec.topics[topic_name]
        asked = self.spec.states.get(source_state)
        given: dict[str, str] = {}
        if asked and asked.otn and asked.otn.topic == topic_name:
            given = {name: self.render_value(value, context) for name, value in asked.otn.vars}
        title = self.render(Message(text=topic.title), {**context, **extra, **given})
        return Reply(title, otn_topic=topic.name, otn_state=source_state, otn_vars=tuple(sorted(given.items())))

    def render_value(self, value: Scalar, context: Mapping[str, Any]) -> str:
        """A request variable as text: a string is a template (`"{{ vars.size }}"`), other values as TOML
        writes them. Notifications are matched to requests on these texts."""
        return self.render(Message(text=value), context) if isinstance(value, str) else scalar_text(value)

    def otn_request(
        self,
        topic_name: str,
        source_state: str,
        snapshot: Snapshot,
        profile: Mapping[str, Any] | None = None,
        extra: Mapping[str, Scalar] | None = None,
    ) -> Reply:
        """The Notify Me request for a topic outside any step (the loop's re-request), titled as the state that
        first asked titled it."""
        convo = _Conversation(snapshot, None, profile or {})
        return self._otn_request(topic_name, source_state, convo.context(), extra or {})

    def next_topic(self, topic_name: str) -> str:
        return self.spec.topics[topic_name].next or topic_name

    def render(self, message: Message, context: Mapping[str, Any]) -> str:
        template = self._templates.get(message)
        if template is None:
            if message.text is not None:
                template = self._env.from_string(message.text)
            else:
                assert message.template is not None
                template = self._env.get_template(message.template)
            self._templates[message] = template
        return template.render(context).strip()

    def _fire(self, convo: _Conversation, trigger: str) -> bool:
        event = self.machine.events.get(trigger)
        if event is None or convo.state not in event.transitions:  # not offered here: no transition, no error
            return False
        return bool(event.trigger(convo))

    # One step ----------------------------------------------------------------------------------------------
    def step(self, snapshot: Snapshot, user_input: UserInput, profile: Mapping[str, Any] | None = None) -> StepResult:
        """Apply one input to one user. Pure: the same arguments give the same result."""
        convo = _Conversation(snapshot, user_input.text, profile or {})
        arrival = user_input.arrival
        if arrival is not None:
            _remember(convo.variables, arrival)
        if arrival is not None and self._arrive(convo, arrival):
            matched = Match.REFERRAL
        elif arrival is not None and user_input.payload is None and user_input.text is None:
            matched = self._resume(convo)
        else:
            matched = self._match(convo, user_input)
        self._follow_then(convo)
        return convo.result(matched)

    def resume(
        self,
        snapshot: Snapshot,
        outcome: Outcome,
        result: Any = None,
        profile: Mapping[str, Any] | None = None,
    ) -> StepResult:
        """Feed an action's outcome back: save the result, then follow the first result guard that holds, or the
        success, failure or timeout edge; when none leads on, the state speaks (and may use the result). Pure."""
        convo = _Conversation(snapshot, None, profile or {})
        state = self.spec.states[convo.state]
        assert state.action is not None, f"state {state.name!r} runs no action"
        if outcome is Outcome.SUCCESS and state.action.save_as:
            convo.variables[state.action.save_as] = result  # JSON-like data, kept as the store keeps variables
        triggers = [f"action:{outcome}"]
        if outcome is Outcome.SUCCESS:
            triggers = [f"action:result:{i}" for i in range(len(state.action.on_result))] + triggers
        if outcome is Outcome.TIMEOUT and state.action.on_timeout is None:
            triggers.append(f"action:{Outcome.FAILURE}")
        if not any(self._fire(convo, trigger) for trigger in triggers):
            self._speak(state, convo)
        self._follow_then(convo)
        return convo.result(Match(f"action_{outcome}"))

    def hand_back(self, snapshot: Snapshot, from_state: str, profile: Mapping[str, Any] | None = None) -> StepResult:
        """Control came back from a person: follow the handing state's `resume` edge (its state speaks). A state
        the flow no longer has, or one that no longer hands over, resumes nothing: the user stays where they are."""
        convo = _Conversation(snapshot, None, profile or {})
        handing = self.spec.states.get(from_state)
        if handing is not None and handing.handover is not None:
            convo.state = from_state
            if self._fire(convo, "handover"):
                self._follow_then(convo)
        return convo.result(Match.HANDED_BACK)

    def takes_back(self, from_state: str, text: str | None) -> bool:
        """Whether the user's text is one of the handing state's `take_back` words (the bot is wanted back)."""
        handing = self.spec.states.get(from_state)
        if handing is None or handing.handover is None or not text:
            return False
        return Typed(text).words in handing.handover.phrases  # the whole message, case and punctuation aside

    def enter_optin(self, snapshot: Snapshot, topic: str, profile: Mapping[str, Any] | None = None) -> StepResult:
        """The user tapped Notify Me for `topic`: run the topic's on_optin state, if it names one."""
        convo = _Conversation(snapshot, None, profile or {})
        if convo.state == NEW_USER:
            convo.state = self.spec.start
        if self._fire(convo, f"optin:{topic}"):
            self._follow_then(convo)
        return convo.result(Match.OPTIN)

    def _arrive(self, convo: _Conversation, arrival: Arrival) -> bool:
        """The first entry point matching the referral routes the user; one without `goto` only tags and sets
        (False: the input is then handled as if no entry matched)."""
        for index, entry in enumerate(self.spec.referrals):
            if entry.matches(arrival.ref, arrival.source):
                if entry.goto is None:
                    convo.apply(entry.effects)
                    return False
                return self._fire(convo, f"referral:{index}")
        return False

    def _resume(self, convo: _Conversation) -> Match:
        """A referral no entry point routes: a new user starts, a returning one hears their current state again
        (opening a link must never be met with silence)."""
        if convo.state == NEW_USER:
            self._fire(convo, "begin")
            return Match.START
        self._say(self.spec.states[convo.state], convo)
        return Match.RESUME

    def _follow_then(self, convo: _Conversation) -> None:
        for _ in range(MAX_THEN_CHAIN):  # the checker rejects 'then' cycles; this bounds it regardless
            if convo.action is not None or convo.handover is not None or not self._fire(convo, "then"):
                return

    def _match(self, convo: _Conversation, user_input: UserInput) -> Match:
        text = (user_input.text or "").strip()
        typed = Typed(text)
        folded = typed.folded
        if convo.state == NEW_USER:
            if folded and self._match_keyword(convo, typed):
                return Match.KEYWORD
            self._fire(convo, "begin")
            return Match.START
        state = self.spec.states[convo.state]
        if user_input.payload is not None:
            payload = user_input.payload
            tap = payloads.parse_tap(payload)
            if tap is not None:  # a quick reply under a notification
                if tap.choice is None:
                    return Match.ENGAGED
                payload = payloads.notification_reply(tap.topic, tap.choice)  # as sent now, old messages too
            if self._fire(convo, f"tap:{payload}") or self._match_rules(convo, state.rules, payload=payload):
                return Match.PAYLOAD
            source = self._late_taps.get(payload)
            if source is not None and source != convo.state:
                convo.state = source  # the tap belongs to an earlier message: follow it from there
                if self._fire(convo, f"tap:{payload}"):
                    return Match.LATE_TAP
                convo.state = state.name
        if folded:
            if self._match_keyword(convo, typed):
                return Match.KEYWORD
            for choice in state.choices:
                if choice.goto is not None and choice.title.casefold() == folded:
                    self._fire(convo, f"tap:{choice.payload}")
                    return Match.TITLE
            if self._match_rules(convo, state.rules, typed=typed):
                return Match.RULE
        self._fallback(convo, state)
        return Match.FALLBACK

    def _match_keyword(self, convo: _Conversation, typed: Typed) -> bool:
        """The first keyword in file order that matches wins, whatever its `match`."""
        for index, keyword in enumerate(self.spec.keywords):
            if typed.matches(keyword.words, keyword.phrases, keyword.match) and self._fire(convo, f"keyword:{index}"):
                return True
        return False

    def _match_rules(
        self, convo: _Conversation, rules: tuple[Rule, ...], *, payload: str | None = None, typed: Typed | None = None
    ) -> bool:
        for index, rule in enumerate(rules):
            if payload is not None:
                hit = rule.payload == payload
            else:
                assert typed is not None
                hit = typed.matches(rule.keywords, rule.phrases, rule.match) or (
                    rule.regex is not None and bool(rule.regex.search(typed.text))
                )
            if hit and self._fire(convo, f"rule:{index}"):  # False when the rule's guard does not hold
                return True
        return False

    def _fallback(self, convo: _Conversation, state: State) -> None:
        fallback = self.spec.fallback
        text = self.render(fallback.say, convo.context()) if fallback else DEFAULT_FALLBACK
        convo.replies.append(Reply(text, self._quick_replies[state.name]))
        if fallback and fallback.goto:
            self._fire(convo, "fallback")

    # Notifications -----------------------------------------------------------------------------------------
    def notification(
        self,
        topic_name: str,
        snapshot: Snapshot,
        params: Mapping[str, Scalar],
        profile: Mapping[str, Any] | None = None,
    ) -> Reply:
        """The message a user gets for `topic_name`: the first variant whose segment matches their tags."""
        topic = self.spec.topics[topic_name]
        convo = _Conversation(snapshot, None, profile or {})
        variant = topic.variants[self.variant_index(topic_name, snapshot)]
        text = self.render(variant.message, {**convo.context(), **params})
        quick = tuple(
            QuickReply(c.title, payloads.notification_reply(topic.name, c.payload)) for c in topic.quick_replies
        )
        return Reply(text, quick or (QuickReply(ENGAGE_TITLE, payloads.engage(topic.name)),))

    def variant_index(self, topic_name: str, snapshot: Snapshot) -> int:
        """First match wins; the checker guarantees a default variant, so one always matches."""
        tags = frozenset(snapshot.tags)
        variants = self.spec.topics[topic_name].variants
        return next(i for i, v in enumerate(variants) if v.when.matches(tags, snapshot.variables))


#: The default quick reply under a notification whose topic names none: tapping it reopens the 24h window (and so
#: lets the next OTN request go out) without moving the conversation.
ENGAGE_TITLE = "Thanks!"


def scalar_text(value: Scalar) -> str:
    """How a plain value is compared between a request and a notification: `true`, `42`, `19.5`, or the text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _trigger(edge: Edge) -> str:
    """The machine event that takes an edge; `_match` fires the same names for the input it reads."""
    if edge.cause in TAPS:
        assert edge.choice is not None  # every tap edge carries its choice
        payload = (
            edge.choice.payload if edge.topic is None else payloads.notification_reply(edge.topic, edge.choice.payload)
        )
        return f"tap:{payload}"
    if edge.cause is Cause.RULE:
        return f"rule:{edge.index}"
    if edge.cause is Cause.KEYWORD:
        return f"keyword:{edge.index}"
    if edge.cause is Cause.OPTIN:
        return f"optin:{edge.topic}"
    if edge.cause is Cause.REFERRAL:
        return f"referral:{edge.index}"
    if edge.cause is Cause.HANDOVER:
        return "handover"
    if edge.cause is Cause.ACTION:
        return f"action:result:{edge.index}" if edge.outcome is None else f"action:{edge.outcome}"
    return "then" if edge.cause is Cause.THEN else "fallback"


def _remember(variables: dict[str, Scalar], arrival: Arrival) -> None:
    """The latest referral replaces the previous one; the first one is kept for good."""
    values = (arrival.ref, source_name(arrival.source), arrival.ad_id)
    first = "first_ref_source" not in variables
    for name, first_name, value in zip(REFERRAL_VARIABLES, FIRST_REFERRAL_VARIABLES, values, strict=True):
        if value is None:
            variables.pop(name, None)
        else:
            variables[name] = value
            if first:
                variables[first_name] = value


def _take_edge(edge: Edge, event: EventData) -> None:
    convo = cast(_Conversation, event.model)
    convo.apply(edge.effects)
    if edge.capture and convo.text is not None:
        convo.variables[edge.capture] = convo.text


def _guard(segment: Segment) -> list[str | Callable[..., bool | None]]:
    if segment is ALWAYS:
        return []

    def holds(event: EventData) -> bool:
        convo = cast(_Conversation, event.model)
        return segment.matches(convo.tags, convo.variables)

    return [holds]
