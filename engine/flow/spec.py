"""Typed, validated flow specifications: what the loader produces and the compiler consumes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .segments import ALWAYS, Segment

Scalar = str | int | float | bool


@dataclass(frozen=True)
class Effects:
    """What happens to the user's record: tags added and removed, variables set."""

    tag: tuple[str, ...] = ()
    untag: tuple[str, ...] = ()
    set: tuple[tuple[str, Scalar], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.tag or self.untag or self.set)


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class Fallback:
    say: Message
    goto: str | None = None


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
