"""Typed, validated flow specifications: what the loader produces and the compiler consumes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property

from .diagnostics import KeyPath
from .segments import ALWAYS, Segment
from .words import Match, normalised_words

Scalar = str | int | float | bool


@dataclass(frozen=True)
class Effects:
    """What happens to the user's record: tags added and removed, variables set, and consent: `False` unsubscribes
    the user (`unsubscribe = true`), `True` subscribes them again (`subscribe = true`), None leaves it."""

    tag: tuple[str, ...] = ()
    untag: tuple[str, ...] = ()
    set: tuple[tuple[str, Scalar], ...] = ()
    consent: bool | None = None

    def __bool__(self) -> bool:
        return bool(self.tag or self.untag or self.set or self.consent is not None)


@dataclass(frozen=True, kw_only=True)
class Choice:
    """A quick reply or a button. A `url` button opens a page and leads nowhere in the flow."""

    title: str
    payload: str
    goto: str | None
    effects: Effects = Effects()
    url: str | None = None


@dataclass(frozen=True)
class Rule:
    """A way out of a state on user input: a postback payload, keywords, or a regex, behind an optional guard."""

    goto: str
    payload: str | None = None
    keywords: tuple[str, ...] = ()
    regex: re.Pattern[str] | None = None
    when: Segment = ALWAYS
    when_source: str = ""
    capture: str | None = None
    effects: Effects = Effects()
    match: Match = Match.MESSAGE  # how `keywords` match typed text

    @cached_property
    def phrases(self) -> tuple[tuple[str, ...], ...]:
        return tuple(normalised_words(k) for k in self.keywords)


@dataclass(frozen=True)
class OtnAsk:
    """Ask the user for a One-Time Notification on a topic after this state speaks."""

    topic: str
    vars: tuple[tuple[str, Scalar], ...] = ()


@dataclass(frozen=True)
class Message:
    """Inline jinja2 text or a template file name (exactly one is set when a state speaks)."""

    text: str | None = None
    template: str | None = None


class Outcome(StrEnum):
    """How an action call ended."""

    SUCCESS = "success"
    FAILURE = "failure"  # it raised, or (HTTP) answered an error
    TIMEOUT = "timeout"  # it ran past its time budget


@dataclass(frozen=True)
class ResultRule:
    """A way out of an action's state on a result that matches a guard (over `vars`, the result saved there)."""

    when: Segment
    when_source: str
    goto: str


@dataclass(frozen=True, kw_only=True)
class Action:
    """A named action a state runs before it speaks. The runtime runs it outside the flow step and feeds back the
    outcome: the result is saved under `save_as`, then the first `on_result` guard that holds, `on_success`,
    `on_failure` or `on_timeout` (default: `on_failure`) leads on; when none does, the state itself speaks."""

    name: str
    args: tuple[tuple[str, Scalar], ...] = ()  # string values are jinja2 templates over user, vars and text
    timeout_seconds: float = 2.0
    save_as: str | None = None
    on_result: tuple[ResultRule, ...] = ()
    on_success: str | None = None
    on_failure: str | None = None
    on_timeout: str | None = None


#: `handover.to = "page_inbox"`: Meta's Page Inbox (people answering in Meta Business Suite), by its app id.
PAGE_INBOX = "page_inbox"
PAGE_INBOX_APP_ID = "263902037430900"


@dataclass(frozen=True, kw_only=True)
class HumanHandover:
    """A state that hands the conversation to a person (Messenger's Handover Protocol): after it speaks, the
    thread passes to `to` (the Page Inbox, or an app id) with `note` (a template) for the agent. The bot stays
    silent until control comes back (Meta passes it back, the idle timeout, or the user types a `take_back`
    word); the flow then resumes at `resume`."""

    to: str
    resume: str
    note: Message | None = None
    take_back: tuple[str, ...] = ()

    @property
    def app_id(self) -> str:
        return PAGE_INBOX_APP_ID if self.to == PAGE_INBOX else self.to

    @cached_property
    def phrases(self) -> tuple[tuple[str, ...], ...]:
        return tuple(normalised_words(w) for w in self.take_back)


@dataclass(frozen=True)
class State:
    name: str
    say: Message | None = None
    quick_replies: tuple[Choice, ...] = ()
    buttons: tuple[Choice, ...] = ()
    rules: tuple[Rule, ...] = ()
    then: str | None = None
    effects: Effects = Effects()
    otn: OtnAsk | None = None
    end: bool = False
    message_tag: str | None = None
    promotional: bool | None = None  # None: not said (treated as promotional)
    action: Action | None = None
    handover: HumanHandover | None = None

    @property
    def choices(self) -> tuple[Choice, ...]:
        return self.quick_replies + self.buttons


@dataclass(frozen=True)
class Variant:
    when: Segment
    when_source: str
    message: Message


@dataclass(frozen=True)
class Topic:
    name: str
    title: str
    params: tuple[str, ...]
    variants: tuple[Variant, ...]
    quick_replies: tuple[Choice, ...] = ()
    on_optin: str | None = None
    next: str | None = None


@dataclass(frozen=True)
class Keyword:
    """A global keyword: works from any state."""

    words: tuple[str, ...]
    goto: str
    effects: Effects = Effects()
    match: Match = Match.MESSAGE  # how `words` match typed text

    @cached_property
    def phrases(self) -> tuple[tuple[str, ...], ...]:
        return tuple(normalised_words(w) for w in self.words)


class Source(StrEnum):
    """Where a referral comes from, as an author names it; each value maps to Meta's word in `META_SOURCES`."""

    LINK = "link"  # an m.me link (SHORTLINK)
    AD = "ad"  # a Click-to-Messenger ad (ADS)
    CODE = "code"  # a Messenger code (MESSENGER_CODE)
    PLUGIN = "plugin"  # the chat plugin on the shop's website (CUSTOMER_CHAT_PLUGIN)
    DISCOVER = "discover"  # Messenger's Discover tab (DISCOVER_TAB)


#: Meta's `referral.source` values, by the author's name for them.
META_SOURCES: dict[str, Source] = {
    "SHORTLINK": Source.LINK,
    "ADS": Source.AD,
    "MESSENGER_CODE": Source.CODE,
    "CUSTOMER_CHAT_PLUGIN": Source.PLUGIN,
    "DISCOVER_TAB": Source.DISCOVER,
}


def source_name(meta_source: str) -> str:
    """Meta's source word as the author's (`ADS` -> `ad`); one Meta adds later, lower-cased as it came."""
    known = META_SOURCES.get(meta_source.upper())
    return known.value if known is not None else meta_source.lower()


@dataclass(frozen=True, kw_only=True)
class EntryPoint:
    """An entry point: a referral (link, ad, code, plugin, Discover) that matches `ref` exactly or `ref_matches`
    (a regex, searched), and `source`, if given. The first matching entry in file order routes the user."""

    ref: str | None = None
    ref_matches: re.Pattern[str] | None = None
    source: Source | None = None
    goto: str | None = None  # None: tag and set only, then as without an entry (new users start, others resume)
    effects: Effects = Effects()

    def matches(self, ref: str | None, source: str) -> bool:
        if self.source is not None and source_name(source) != self.source.value:
            return False
        if self.ref is not None and ref != self.ref:
            return False
        return self.ref_matches is None or (ref is not None and self.ref_matches.search(ref) is not None)

    @property
    def label(self) -> str:
        parts = [f"ref {self.ref}"] if self.ref is not None else []
        if self.ref_matches is not None:
            parts.append(f"ref /{self.ref_matches.pattern}/")
        if self.source is not None:
            parts.append(f"from {self.source.value}")
        return "arrives " + (" ".join(parts) or "from anywhere")


@dataclass(frozen=True)
class Fallback:
    say: Message
    goto: str | None = None


class Cause(StrEnum):
    """What takes a user along an edge."""

    QUICK_REPLY = "quick_reply"  # a state's quick reply, tapped or its title typed
    BUTTON = "button"  # a state's postback button
    RULE = "rule"  # one of a state's `on` rules: payload, keywords or regex, behind its guard
    THEN = "then"  # nothing: the state moves on by itself
    KEYWORD = "keyword"  # a global keyword, from any state
    FALLBACK = "fallback"  # input nothing else matched, from any state
    NOTIFICATION_REPLY = "notification_reply"  # a quick reply under a topic's notification, from any state
    OPTIN = "optin"  # Notify Me tapped: the topic's `on_optin`, from any state
    REFERRAL = "referral"  # the user arrived from a link, ad, code, plugin or Discover: an entry point, any state
    ACTION = "action"  # the outcome of the state's action: a result guard, success, failure or timeout
    HANDOVER = "handover"  # control came back from a person: the handing state's `resume`


@dataclass(frozen=True, kw_only=True)
class Edge:
    """One way from a state to another, as the author wrote it: what the checker walks, the compiler wires into
    the machine and the diagrams draw, from the one list `FlowSpec.edges()` makes."""

    source: str | None  # None: from any state
    target: str  # as written: the checker reports targets that name no state
    cause: Cause
    label: str  # what takes the user along it, for people: the quick-reply title, the keyword, `then`, ...
    key: KeyPath  # where the flow file says it
    index: int = 0  # position among its siblings (the state's rules, the flow's keywords, the choices)
    choice: Choice | None = None  # the quick reply or button tapped
    topic: str | None = None  # the topic of a notification's quick reply or of an opt-in
    when: Segment = ALWAYS  # a rule's guard
    capture: str | None = None  # a rule's variable that keeps the text typed
    effects: Effects = Effects()  # tags and variables changed on the way
    outcome: Outcome | None = None  # an action's success, failure or timeout edge (None on its result guards)


def rule_label(rule: Rule) -> str:
    """What a rule matches, as an author reads it: `payload SIZE_L`, `yes / y`, `/\\d+/`, then its guard."""
    parts = [f"payload {rule.payload}"] if rule.payload is not None else []
    if rule.keywords:
        parts.append(" / ".join(rule.keywords))
    if rule.regex is not None:
        parts.append(f"/{rule.regex.pattern}/")
    guard = f" if {rule.when_source}" if rule.when_source else ""
    return " / ".join(parts) + guard


@dataclass(frozen=True)
class FlowSpec:
    name: str
    start: str
    path: str
    states: dict[str, State]
    topics: dict[str, Topic] = field(default_factory=dict)
    keywords: tuple[Keyword, ...] = ()
    fallback: Fallback | None = None
    description: str = ""
    referrals: tuple[EntryPoint, ...] = ()

    def edges(self) -> tuple[Edge, ...]:
        """Every edge of the flow, in file order: states (quick replies, buttons, rules, then), then global
        keywords, the fallback, each topic's notification quick replies and opt-in, then the entry points."""
        edges: list[Edge] = []
        for name, state in self.states.items():
            edges += _choice_edges(Cause.QUICK_REPLY, state.quick_replies, name, ("states", name, "quick_replies"))
            edges += _choice_edges(Cause.BUTTON, state.buttons, name, ("states", name, "buttons"))
            edges += [
                Edge(
                    source=name,
                    target=r.goto,
                    cause=Cause.RULE,
                    label=rule_label(r),
                    key=("states", name, "on", i, "goto"),
                    index=i,
                    when=r.when,
                    capture=r.capture,
                    effects=r.effects,
                )
                for i, r in enumerate(state.rules)
            ]
            if state.action is not None:
                edges += _action_edges(name, state.action)
            if state.then is not None:
                edges.append(
                    Edge(source=name, target=state.then, cause=Cause.THEN, label="then", key=("states", name, "then"))
                )
            if state.handover is not None:
                edges.append(
                    Edge(
                        source=name,
                        target=state.handover.resume,
                        cause=Cause.HANDOVER,
                        label="back from a person",
                        key=("states", name, "handover", "resume"),
                    )
                )
        edges += [
            Edge(
                source=None,
                target=k.goto,
                cause=Cause.KEYWORD,
                label=" / ".join(k.words),
                key=("keywords", i, "goto"),
                index=i,
                effects=k.effects,
            )
            for i, k in enumerate(self.keywords)
        ]
        if self.fallback is not None and self.fallback.goto is not None:
            edges.append(
                Edge(
                    source=None,
                    target=self.fallback.goto,
                    cause=Cause.FALLBACK,
                    label="not understood",
                    key=("fallback", "goto"),
                )
            )
        for topic in self.topics.values():
            where: KeyPath = ("topics", topic.name, "quick_replies")
            edges += _choice_edges(Cause.NOTIFICATION_REPLY, topic.quick_replies, None, where, topic.name)
            if topic.on_optin:
                edges.append(
                    Edge(
                        source=None,
                        target=topic.on_optin,
                        cause=Cause.OPTIN,
                        label=f"Notify Me ({topic.name})",
                        key=("topics", topic.name, "on_optin"),
                        topic=topic.name,
                    )
                )
        edges += [
            Edge(
                source=None,
                target=entry.goto,
                cause=Cause.REFERRAL,
                label=entry.label,
                key=("referrals", i, "goto"),
                index=i,
                effects=entry.effects,
            )
            for i, entry in enumerate(self.referrals)
            if entry.goto is not None
        ]
        return tuple(edges)


def _choice_edges(
    cause: Cause, choices: tuple[Choice, ...], source: str | None, where: KeyPath, topic: str | None = None
) -> list[Edge]:
    """The edges of quick replies or buttons that lead somewhere (a `url` button or a reply without `goto` does not)."""
    return [
        Edge(
            source=source,
            target=c.goto,
            cause=cause,
            label=c.title if topic is None else f"{c.title} ({topic} notification)",
            key=(*where, i, "goto"),
            index=i,
            choice=c,
            topic=topic,
            effects=c.effects,
        )
        for i, c in enumerate(choices)
        if c.goto is not None
    ]


def _action_edges(source: str, action: Action) -> list[Edge]:
    """Where an action's outcome leads: its result guards (in order), then success, failure and timeout."""
    where: KeyPath = ("states", source, "action")
    edges = [
        Edge(
            source=source,
            target=r.goto,
            cause=Cause.ACTION,
            label=f"{action.name} if {r.when_source}",
            key=(*where, "on_result", i, "goto"),
            index=i,
            when=r.when,
        )
        for i, r in enumerate(action.on_result)
    ]
    ends = (
        (Outcome.SUCCESS, action.on_success, "on_success", "ok"),
        (Outcome.FAILURE, action.on_failure, "on_failure", "failed"),
        (Outcome.TIMEOUT, action.on_timeout, "on_timeout", "timed out"),
    )
    edges += [
        Edge(
            source=source,
            target=target,
            cause=Cause.ACTION,
            label=f"{action.name} {said}",
            key=(*where, key),
            index=len(action.on_result),
            outcome=outcome,
        )
        for outcome, target, key, said in ends
        if target is not None
    ]
    return edges
