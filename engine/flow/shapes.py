"""The flow format's keys and value types, in one table.

The loader checks documents against it (unknown keys with a suggestion, wrong types, missing keys) and the
shipped JSON Schema (`flow.schema.json`) is generated from it, so editors and the loader cannot disagree;
`tests/flow/test_schema.py` fails when the shipped file is stale
(`otnflow schema > engine/flow/flow.schema.json` refreshes it).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .diagnostics import KeyPath


@dataclass(frozen=True)
class Field:
    """`kind` is one of: str, bool, str_list, words (a string or a list of strings), scalars (a table of plain
    values), or `table:K`, `tables:K` (array of tables), `map:K` (table of named K tables) for a shape K."""

    kind: str
    doc: str
    required: bool = False
    choices: tuple[str, ...] = ()  # for a `str`: the only values allowed


_EFFECTS = {
    "tag": Field("str_list", "Tags added to the user."),
    "untag": Field("str_list", "Tags removed from the user."),
    "set": Field("scalars", 'Variables set on the user, e.g. { size = "42" }.'),
}
_MATCH = Field(
    "str",
    'How keywords match typed text: "message" (the default: the whole message, ignoring case) or "word" (as whole '
    "words anywhere in the message, ignoring case, accents and punctuation).",
    choices=("message", "word"),
)
_CONSENT = {
    "unsubscribe": Field(
        "bool",
        "The user asks to hear no more: their OTN tokens are revoked, any armed re-request disarmed, and no campaign "
        "or OTN request reaches them until they subscribe again (or tap a Notify Me).",
    ),
    "subscribe": Field("bool", "The user subscribes again after unsubscribing."),
}
_SAY = {
    "say": Field("str", "Inline jinja2 text. Knows `user`, `vars` and `text` (the user's last message, as data)."),
    "template": Field("str", "A jinja2 template file in the templates folder, instead of `say`."),
}

SHAPES: dict[str, dict[str, Field]] = {
    "file": {
        "flow": Field("table:flow", "The flow's name and start state.", required=True),
        "states": Field("map:state", "The conversation's states, by name.", required=True),
        "topics": Field("map:topic", "One-Time Notification topics, by name."),
        "keywords": Field("tables:keyword", 'Global keywords that work from any state ("menu", "stop").'),
        "fallback": Field("table:fallback", "What to say when input matches nothing in the current state."),
        "referrals": Field(
            "tables:referral",
            "Entry points: where a user arriving from an m.me link, an ad, a Messenger code, the chat plugin or the "
            "Discover tab goes (first match wins; new and returning users, and Get Started with a referral).",
        ),
    },
    "flow": {
        "name": Field("str", "The flow's unique name.", required=True),
        "start": Field("str", "The state a new user starts in.", required=True),
        "description": Field("str", "Free text for humans."),
    },
    "fallback": {
        **_SAY,
        "goto": Field("str", "State to move to; absent means stay (the state's quick replies are offered again)."),
    },
    "keyword": {
        "words": Field("words", "Words that trigger it (how: `match`).", required=True),
        "match": _MATCH,
        "goto": Field("str", "The state to move to.", required=True),
        **_EFFECTS,
        **_CONSENT,
    },
    "state": {
        **_SAY,
        "quick_replies": Field("tables:choice", "Quick replies offered under the message (at most 13)."),
        "buttons": Field("tables:button", "Buttons of a button message (at most 3)."),
        "on": Field("tables:rule", "Ways out on a postback payload, keywords or a regex, with optional guards."),
        "then": Field("str", "Move on to this state right after speaking, without waiting for input."),
        "otn": Field("table:otn", "Ask for a One-Time Notification on a topic after speaking."),
        "end": Field("bool", "Marks an intended end of the conversation (no dead-end warning)."),
        **_CONSENT,
        "message_tag": Field("str", "Meta message tag allowing this message outside the 24h window (non-promotional)."),
        "promotional": Field("bool", "Whether the message promotes something; must be false on a tagged message."),
        "description": Field("str", "Free text for humans."),
        "action": Field("table:action", "An action to run before speaking (is it in stock?); see `[actions]`."),
        "handover": Field("table:handover", "Hand the conversation to a person after speaking (Handover Protocol)."),
        **_EFFECTS,
    },
    "handover": {
        "to": Field("str", 'Who takes over: "page_inbox" (Meta Business Suite) or an app id (digits).', required=True),
        "note": Field("str", "A note for the agent (a template over user, vars and text): why they are needed."),
        "resume": Field("str", "The state the flow resumes at when the bot gets the conversation back.", required=True),
        "take_back": Field("words", 'Words the user types to get the bot back ("bot"): whole messages, any case.'),
    },
    "action": {
        "name": Field("str", "The action, as registered (config.toml `[actions]` or entry points).", required=True),
        "args": Field("scalars", "Its arguments; strings are jinja2 templates over user, vars and text."),
        "timeout_seconds": Field("number", "Its time budget (default 2); past it the outcome is a timeout."),
        "save_as": Field("str", "The variable its result is saved to (the state's reply can use it)."),
        "on_result": Field("tables:result_rule", "Where to go when the result matches a guard; first match wins."),
        "on_success": Field("str", "Where to go on success when no guard matched; absent: the state speaks."),
        "on_failure": Field("str", "Where to go when it fails; absent: the state speaks."),
        "on_timeout": Field("str", "Where to go when it runs out of time (default: on_failure)."),
    },
    "result_rule": {
        "when": Field("str", 'A segment expression over tags and vars, e.g. "vars.stock == 0".', required=True),
        "goto": Field("str", "The state to move to.", required=True),
    },
    "choice": {
        "title": Field("str", "The text on the quick reply (at most 20 characters).", required=True),
        "payload": Field("str", "Sent back when tapped; defaults to the title in upper case."),
        "goto": Field("str", "The state to move to when tapped.", required=True),
        **_EFFECTS,
    },
    "button": {
        "title": Field("str", "The text on the button.", required=True),
        "payload": Field("str", "Postback payload; defaults to the title in upper case."),
        "goto": Field("str", "The state to move to when tapped (postback buttons)."),
        "url": Field("str", "Opens this web page instead (web_url button; no goto)."),
        **_EFFECTS,
    },
    "rule": {
        "payload": Field("str", "Matches a postback or quick-reply payload exactly."),
        "keyword": Field("words", "Matches these words (how: `match`)."),
        "match": _MATCH,
        "regex": Field("str", "Matches the user's text with this Python regular expression (search)."),
        "when": Field("str", 'A segment expression that must hold, e.g. "likes_white and not churned".'),
        "capture": Field("str", "Store the user's text in this variable."),
        "goto": Field("str", "The state to move to.", required=True),
        **_EFFECTS,
    },
    "otn": {
        "topic": Field("str", "The topic to ask about (declared under [topics]).", required=True),
        "vars": Field(
            "scalars",
            'What the request is about, e.g. { product = "SL13" }: the title\'s variables, kept with the token; '
            "a notification reaches the token only with the same values.",
        ),
    },
    "topic": {
        "title": Field("str", "The Notify Me title (jinja2; at most 65 characters once rendered).", required=True),
        "params": Field("str_list", "Variables a notification of this topic is sent with (`otnflow notify --var`)."),
        "variants": Field(
            "tables:variant", "Notification texts by segment: first match wins, a default last.", required=True
        ),
        "quick_replies": Field("tables:choice", "Offered under the delivered notification so the user can engage."),
        "on_optin": Field("str", "State to run when the user taps Notify Me."),
        "next": Field("str", "Topic to ask for again after a delivery (default: the same topic)."),
    },
    "referral": {
        "ref": Field("str", 'Matches the referral\'s `ref` exactly (`m.me/PAGE?ref=summer-sale`: "summer-sale").'),
        "ref_matches": Field("str", 'Matches the `ref` with this Python regular expression (search), e.g. "^summer-".'),
        "source": Field(
            "str",
            "Matches where the user came from: link (m.me), ad (Click-to-Messenger), code (Messenger code), plugin "
            "(chat plugin) or discover (Discover tab).",
            choices=("link", "ad", "code", "plugin", "discover"),
        ),
        "goto": Field("str", "The state to move to; absent: only tag and set (new users start, others resume)."),
        "description": Field("str", "Free text for humans."),
        **_EFFECTS,
    },
    "variant": {
        "when": Field("str", "A segment expression; omit it on the last variant (the default)."),
        **_SAY,
    },
}

Report = Callable[[KeyPath, str], None]


def suggest(word: str, known: list[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(sorted(known))}"


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "any":  # any TOML value (a stubbed action's result)
        return True
    if kind == "str":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "ints":
        return isinstance(value, dict) and all(isinstance(v, int) and not isinstance(v, bool) for v in value.values())
    if kind == "str_list":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "words":
        return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    if kind == "scalars":
        return isinstance(value, dict) and all(isinstance(v, str | int | float | bool) for v in value.values())
    if kind.startswith(("table:", "map:")):
        return isinstance(value, dict)
    if kind.startswith("tables:"):
        return isinstance(value, list)
    raise AssertionError(kind)


_TYPE_NAMES = {
    "str": "a string",
    "bool": "true or false",
    "int": "an integer",
    "number": "a number",
    "ints": "a table of integers",
    "str_list": "a list of strings",
    "words": "a string or a list of strings",
    "scalars": "a table of strings, numbers or booleans",
    "any": "any value",
}


def _type_name(kind: str) -> str:
    if kind.startswith("tables:"):
        return "an array of tables"
    return _TYPE_NAMES.get(kind, "a table")


def check_shape(
    value: Any, shape: str, path: KeyPath, report: Report, shapes: dict[str, dict[str, Field]] = SHAPES
) -> bool:
    """Report unknown keys, missing keys and wrong types below `path`. True when the shape is usable."""
    if not isinstance(value, dict):
        report(path, f"expected a table, got {type(value).__name__}")
        return False
    fields = shapes[shape]
    ok = True
    for key, item in value.items():
        field = fields.get(key)
        if field is None:
            report((*path, key), f"unknown key '{key}'{suggest(key, list(fields))}")
            ok = False
            continue
        if not _type_ok(field.kind, item):
            report((*path, key), f"'{key}' must be {_type_name(field.kind)}, got {_toml_type(item)}")
            ok = False
            continue
        if field.choices and item not in field.choices:
            allowed = " or ".join(f'"{choice}"' for choice in field.choices)
            report((*path, key), f"'{key}' must be {allowed}, got {item!r}")
            ok = False
            continue
        sub = field.kind.partition(":")[2]
        if field.kind.startswith("table:"):
            ok &= check_shape(item, sub, (*path, key), report, shapes)
        elif field.kind.startswith("tables:"):
            for index, element in enumerate(item):
                ok &= check_shape(element, sub, (*path, key, index), report, shapes)
        elif field.kind.startswith("map:"):
            for name, element in item.items():
                ok &= check_shape(element, sub, (*path, key, name), report, shapes)
    for key, field in fields.items():
        if field.required and key not in value:
            report(path, f"missing required key '{key}' ({field.doc})")
            ok = False
    return ok


def _toml_type(value: Any) -> str:
    return {
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a flow file, generated from SHAPES."""

    def field_schema(field: Field) -> dict[str, Any]:
        scalar = {"type": ["string", "number", "boolean"]}
        kind, _, sub = field.kind.partition(":")
        by_kind: dict[str, dict[str, Any]] = {
            "any": {},
            "str": {"type": "string"},
            "bool": {"type": "boolean"},
            "number": {"type": "number"},
            "str_list": {"type": "array", "items": {"type": "string"}},
            "words": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
            "scalars": {"type": "object", "additionalProperties": scalar},
            "table": {"$ref": f"#/$defs/{sub}"},
            "tables": {"type": "array", "items": {"$ref": f"#/$defs/{sub}"}},
            "map": {"type": "object", "additionalProperties": {"$ref": f"#/$defs/{sub}"}},
        }
        choices = {"enum": list(field.choices)} if field.choices else {}
        return {**by_kind[kind], **choices, "description": field.doc}

    def object_schema(shape: str) -> dict[str, Any]:
        fields = SHAPES[shape]
        out: dict[str, Any] = {
            "type": "object",
            "properties": {key: field_schema(f) for key, f in fields.items()},
            "additionalProperties": False,
        }
        required = [key for key, f in fields.items() if f.required]
        if required:
            out["required"] = required
        return out

    root = object_schema("file")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://otnflow.dev/schema/flow.schema.json",
        "title": "otnflow flow file",
        **root,
        "$defs": {shape: object_schema(shape) for shape in SHAPES if shape != "file"},
    }


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"
