"""Every payload otnflow makes itself, encoded and decoded here and nowhere else.

They live in a namespace reserved for them, `otn:`; the checker refuses an author's payload there, so an engine
payload can never be mistaken for an author's, nor one kind of engine payload for another:
- a Notify Me request: `otn:<topic>:<asking state>:<request id>:<what it is about>`, the last part JSON
  `{"vars": {...}, "title": "..."}` (the asking state's otn.vars and the title, rendered); Meta hands it back in
  the opt-in event, and the token is stored with what the user asked for;
- a quick reply under a notification: `otn:<topic>:tap:<the author's choice payload>`;
- the default quick reply under a notification whose topic offers none: `otn:<topic>:ENGAGE`.
Decoding also accepts what earlier versions sent (`otn:<topic>:<choice payload>` under notifications), so a tap on
an old message still works after an upgrade.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from typing import Any

RESERVED = "otn:"
_TAP = "tap"
_ENGAGE = "ENGAGE"


def is_reserved(payload: str) -> bool:
    """Whether an author's payload would fall in the engine's namespace (the checker refuses it)."""
    return payload.startswith(RESERVED)


def request(topic: str, asking_state: str, request_key: str, variables: Mapping[str, str], title: str) -> str:
    """A Notify Me request's payload: the topic, the asking state, a short id of the request, and what the request
    is about (its variables and title, as JSON)."""
    about = json.dumps({"vars": dict(variables), "title": title}, ensure_ascii=False, separators=(",", ":"))
    return f"{RESERVED}{topic}:{asking_state}:{hashlib.sha1(request_key.encode()).hexdigest()[:12]}:{about}"


def notification_reply(topic: str, choice_payload: str) -> str:
    """A quick reply under a notification: it belongs to no state, so its payload names the topic."""
    return f"{RESERVED}{topic}:{_TAP}:{choice_payload}"


def engage(topic: str) -> str:
    """The default quick reply under a notification: tapping it reopens the window, moving nothing."""
    return f"{RESERVED}{topic}:{_ENGAGE}"


@dataclass(frozen=True)
class OptIn:
    topic: str
    asking_state: str = ""
    vars: Mapping[str, str] = field(default_factory=dict)  # what the accepted request was about
    title: str = ""


def parse_request(payload: str | None, topics: Container[str]) -> OptIn:
    """The topic (and asking state) of an opt-in's payload. A payload otnflow did not make (a request sent by
    other software for the page) names its topic before a first ':', or is the topic itself."""
    if not payload:
        return OptIn("")
    if is_reserved(payload):
        parts = payload.split(":", 4)
        about = _about(parts[4]) if len(parts) > 4 else {}
        variables, title = about.get("vars"), about.get("title")
        return OptIn(
            parts[1],
            parts[2] if len(parts) > 3 else "",
            {str(k): str(v) for k, v in variables.items()} if isinstance(variables, dict) else {},
            title if isinstance(title, str) else "",
        )
    head = payload.split(":", 1)[0]
    return OptIn(head if head in topics else payload)


def _about(text: str) -> dict[str, Any]:
    try:
        about = json.loads(text)
    except ValueError:
        return {}
    return about if isinstance(about, dict) else {}


@dataclass(frozen=True)
class NotificationTap:
    """A tap on a notification's quick reply: `choice` is the author's choice payload, None for the default."""

    topic: str
    choice: str | None


def parse_tap(payload: str | None) -> NotificationTap | None:
    """A quick-reply payload from under a notification, or None for any other payload."""
    if payload is None or not is_reserved(payload):
        return None
    parts = payload.split(":", 2)
    if len(parts) < 3:
        return None
    topic, rest = parts[1], parts[2]
    if rest == _ENGAGE:
        return NotificationTap(topic, None)
    if rest.startswith(f"{_TAP}:"):
        return NotificationTap(topic, rest.removeprefix(f"{_TAP}:"))
    return NotificationTap(topic, rest)  # sent by an earlier version: otn:<topic>:<choice payload>
