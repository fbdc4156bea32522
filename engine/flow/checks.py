"""Whole-flow checks on a built FlowSpec: targets, reachability, Messenger's limits, templates, topics.

Each check reports through the file's Reporter, so every finding carries the file, line and key.
"""

from __future__ import annotations

import difflib
import re
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from jinja2.sandbox import SandboxedEnvironment

from . import payloads
from .diagnostics import KeyPath, Reporter, dotted
from .segments import tags_in
from .shapes import suggest
from .spec import Choice, FlowSpec, Message
from .templates import (
    CONVERSATION_NAMES,
    NOTIFICATION_NAMES,
    USER_FIELDS,
    TemplateProblem,
    template_reads,
    template_source,
    undeclared_names,
)


@dataclass(frozen=True)
class Limits:
    """Messenger's limits (from messenger-platform.md); configuration may tighten them if Meta changes them."""

    quick_replies: int = 13
    quick_reply_title: int = 20
    buttons: int = 3
    button_text: int = 640
    otn_title: int = 65
    allowed_tags: frozenset[str] = frozenset(
        {"CONFIRMED_EVENT_UPDATE", "POST_PURCHASE_UPDATE", "ACCOUNT_UPDATE", "HUMAN_AGENT"}
    )


def check_flow(
    spec: FlowSpec,
    report: Reporter,
    env: SandboxedEnvironment,
    limits: Limits = Limits(),
    otn_available: bool = True,
    actions: Mapping[str, frozenset[str]] | None = None,
) -> None:
    """`actions`: the registered actions' names and required arguments (None: names are not checked)."""
    _check_targets(spec, report)
    _check_actions(spec, report, env, actions)
    _check_handovers(spec, report, env)
    _check_reachability(spec, report)
    _check_states(spec, report, limits)
    _check_topics(spec, report, limits, otn_available)
    _check_templates(spec, report, env, limits)


# -- targets and graph -------------------------------------------------------------------------------------
def _unknown_state(spec: FlowSpec, name: str) -> str:
    hint = suggest(name, list(spec.states)).replace("known keys", "known states")
    return f"unknown state '{name}'{hint}"


def _check_targets(spec: FlowSpec, report: Reporter) -> None:
    if not spec.name:
        report.error(("flow", "name"), "the flow needs a non-empty name")
    if spec.start not in spec.states:
        report.error(("flow", "start"), f"start state: {_unknown_state(spec, spec.start)}")
    for edge in spec.edges():
        if edge.target not in spec.states:
            report.error(edge.key, _unknown_state(spec, edge.target))
    for name, state in spec.states.items():
        seen = [name]
        nxt = state.then
        while nxt is not None and nxt in spec.states and nxt not in seen:
            seen.append(nxt)
            nxt = spec.states[nxt].then
        if nxt == name:
            report.error(("states", name, "then"), f"'then' loops forever: {' -> '.join([*seen, name])}")


def _check_reachability(spec: FlowSpec, report: Reporter) -> None:
    if spec.start not in spec.states:
        return
    outgoing: dict[str | None, set[str]] = {}
    for edge in spec.edges():
        outgoing.setdefault(edge.source, set()).add(edge.target)
    reached = {spec.start} | outgoing.get(None, set())
    queue = deque(reached)
    while queue:
        for target in outgoing.get(queue.popleft(), set()):
            if target not in reached:
                reached.add(target)
                queue.append(target)
    for name, state in spec.states.items():
        if name not in reached:
            report.error(
                ("states", name),
                f"state '{name}' is unreachable: no start, goto, then, keyword, on_optin or action outcome leads to it",
            )
        elif not outgoing.get(name) and not state.end:
            report.warning(
                ("states", name),
                f"state '{name}' is a dead end: nothing leads out of it but global "
                "keywords (add quick replies, buttons, 'on' or 'then', or mark it "
                "'end = true')",
            )


def _check_actions(
    spec: FlowSpec, report: Reporter, env: SandboxedEnvironment, actions: Mapping[str, frozenset[str]] | None
) -> None:
    """Unknown action names, missing required arguments, and argument templates that read unknown names."""
    for name, state in spec.states.items():
        action = state.action
        if action is None:
            continue
        path: KeyPath = ("states", name, "action")
        if actions is not None and action.name not in actions:
            hint = suggest(action.name, list(actions)).replace("known keys", "registered actions")
            report.error((*path, "name"), f"unknown action '{action.name}'{hint if actions else '; none registered'}")
        elif actions is not None:
            missing = sorted(actions[action.name] - {arg for arg, _ in action.args})
            if missing:
                report.error((*path, "args"), f"action '{action.name}' needs argument(s) {', '.join(missing)}")
        for arg, value in action.args:
            if not isinstance(value, str):
                continue
            try:
                unknown = undeclared_names(env, value) - CONVERSATION_NAMES
            except TemplateProblem as problem:
                report.error((*path, "args", arg), f"argument '{arg}': {problem.message}")
                continue
            for word in sorted(unknown):
                known = ", ".join(sorted(CONVERSATION_NAMES))
                message = f"argument '{arg}' uses undefined variable '{word}' (known: {known})"
                report.error((*path, "args", arg), message)


def _check_handovers(spec: FlowSpec, report: Reporter, env: SandboxedEnvironment) -> None:
    """A hand-over waits for a person: it cannot also move on by itself (`then`); its note's template must read
    known names only. Its `resume` is an edge: `_check_targets` checks it."""
    for name, state in spec.states.items():
        handover = state.handover
        if handover is None:
            continue
        path: KeyPath = ("states", name, "handover")
        if state.then is not None:
            report.error(
                ("states", name, "then"), f"state '{name}' hands over to a person: it cannot also 'then' move on"
            )
        if handover.note is None or handover.note.text is None:
            continue
        try:
            unknown = undeclared_names(env, handover.note.text) - CONVERSATION_NAMES
        except TemplateProblem as problem:
            report.error((*path, "note"), f"handover note: {problem.message}")
            continue
        for word in sorted(unknown):
            known = ", ".join(sorted(CONVERSATION_NAMES))
            report.error((*path, "note"), f"handover note uses undefined variable '{word}' (known: {known})")


# -- tags across flows ---------------------------------------------------------------------------------------
def _tags_set(spec: FlowSpec) -> set[str]:
    """Every tag something in the flow adds: states, their choices and rules, keywords, notification replies."""
    effects = [keyword.effects for keyword in spec.keywords]
    for state in spec.states.values():
        effects += [state.effects, *(c.effects for c in state.choices), *(r.effects for r in state.rules)]
    for topic in spec.topics.values():
        effects += [c.effects for c in topic.quick_replies]
    return {tag for effect in effects for tag in effect.tag}


def _tags_tested(spec: FlowSpec) -> Iterator[tuple[KeyPath, set[str]]]:
    for name, state in spec.states.items():
        for i, rule in enumerate(state.rules):
            yield ("states", name, "on", i, "when"), tags_in(rule.when)
    for name, topic in spec.topics.items():
        for i, variant in enumerate(topic.variants):
            yield ("topics", name, "variants", i, "when"), tags_in(variant.when)


def check_tags_set(flows: list[tuple[FlowSpec, Reporter]], set_elsewhere: frozenset[str] = frozenset()) -> None:
    """A guard or variant testing a tag that nothing ever sets is almost always a typo ("sweet_toth"): warn, with
    the closest tag that is set. Across all the flows checked together, since a user carries tags between them."""
    known = set(set_elsewhere).union(*(_tags_set(spec) for spec, _ in flows))
    for spec, report in flows:
        for path, tags in _tags_tested(spec):
            for tag in sorted(tags - known):
                close = difflib.get_close_matches(tag, sorted(known), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; tags that are set: {', '.join(sorted(known))}"
                report.warning(path, f"tag '{tag}' is never set by any flow{hint if known else ''}")


# -- Messenger's limits ------------------------------------------------------------------------------------
def _check_choices(choices: tuple[Choice, ...], path: KeyPath, report: Reporter, limits: Limits) -> None:
    if len(choices) > limits.quick_replies:
        report.error(path, f"{len(choices)} quick replies; Messenger allows at most {limits.quick_replies}")
    for i, choice in enumerate(choices):
        if len(choice.title) > limits.quick_reply_title:
            report.error(
                (*path, i, "title"),
                f"quick-reply title {choice.title!r} is {len(choice.title)} "
                f"characters; Messenger allows at most {limits.quick_reply_title}",
            )
        if not choice.title:
            report.error((*path, i, "title"), "quick-reply title is empty")


def _check_payload(key: KeyPath, payload: str, report: Reporter) -> None:
    """An author's payload may not fall in the engine's own namespace: it would be read as one of the engine's."""
    if payloads.is_reserved(payload):
        report.error(
            key,
            f"payload '{payload}' starts with '{payloads.RESERVED}', which otnflow reserves for the payloads it "
            "makes itself (requests, notification replies): choose another",
        )


def _check_states(spec: FlowSpec, report: Reporter, limits: Limits) -> None:
    for name, state in spec.states.items():
        path: KeyPath = ("states", name)
        _check_choices(state.quick_replies, (*path, "quick_replies"), report, limits)
        if len(state.buttons) > limits.buttons:
            report.error(
                (*path, "buttons"),
                f"{len(state.buttons)} buttons; Messenger allows at most {limits.buttons} in a button message",
            )
        if state.quick_replies and state.say is None:
            report.error((*path, "quick_replies"), "quick replies ride on a message: add 'say' or 'template'")
        if state.buttons and state.say is None:
            report.error((*path, "buttons"), "a button message needs text: add 'say' or 'template'")
        seen: dict[str, str] = {}
        payload_places: list[tuple[KeyPath, str]] = [
            ((*path, kind, i, "payload"), c.payload)
            for kind, choices in (("quick_replies", state.quick_replies), ("buttons", state.buttons))
            for i, c in enumerate(choices)
            if c.url is None
        ]
        payload_places += [
            ((*path, "on", i, "payload"), r.payload) for i, r in enumerate(state.rules) if r.payload is not None
        ]
        for key, payload in payload_places:
            _check_payload(key, payload, report)
            if payload in seen:
                report.error(
                    key,
                    f"duplicate payload '{payload}' in state '{name}' (also at {seen[payload]}); "
                    "each tap must lead to one place",
                )
            else:
                seen[payload] = dotted(key)
        if state.message_tag is not None:
            if state.message_tag not in limits.allowed_tags:
                report.error(
                    (*path, "message_tag"),
                    f"message tag '{state.message_tag}' is not allowed (allowed: "
                    f"{', '.join(sorted(limits.allowed_tags))})",
                )
            if state.promotional is not False:
                report.error(
                    (*path, "message_tag"),
                    "a tagged message must say 'promotional = false': promotional content never rides on a message tag",
                )
        if state.otn is not None and state.otn.topic not in spec.topics:
            known = ", ".join(sorted(spec.topics)) or "none declared"
            report.error((*path, "otn", "topic"), f"unknown topic '{state.otn.topic}' (topics: {known})")


def _check_topics(spec: FlowSpec, report: Reporter, limits: Limits, otn_available: bool) -> None:
    requested = {s.otn.topic for s in spec.states.values() if s.otn}
    requested |= {t.next for t in spec.topics.values() if t.next}
    asking = [name for name, s in spec.states.items() if s.otn]
    if asking and not otn_available:
        report.warning(
            ("states", asking[0], "otn"),
            "this flow asks for One-Time Notifications but OTN is off for "
            "this page (otn_available = false or an EU page): the requests "
            "will be refused",
        )
    for name, topic in spec.topics.items():
        path: KeyPath = ("topics", name)
        if name not in requested:
            report.warning(path, f"topic '{name}' is never requested: no state has otn = {{ topic = \"{name}\" }}")
        if topic.next is not None and topic.next not in spec.topics:
            report.error((*path, "next"), f"unknown topic '{topic.next}'")
        defaults = [i for i, v in enumerate(topic.variants) if not v.when_source]
        if topic.variants and not defaults:
            report.error(
                (*path, "variants"),
                f"topic '{name}' has no default variant: the last variant must have "
                "no 'when', so every user gets a message",
            )
        elif defaults and defaults[0] != len(topic.variants) - 1:
            report.warning((*path, "variants", defaults[0] + 1), "variants after the default can never be chosen")
        _check_choices(topic.quick_replies, (*path, "quick_replies"), report, limits)
        for i, choice in enumerate(topic.quick_replies):
            _check_payload((*path, "quick_replies", i, "payload"), choice.payload, report)


# -- templates -------------------------------------------------------------------------------------------------
_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)


def _message_source(
    message: Message, env: SandboxedEnvironment, path: KeyPath, report: Reporter
) -> tuple[str, str | None, str | None] | None:
    """The template text, its name and its file (both None for inline text), or None after reporting why not."""
    if message.text is not None:
        return message.text, None, None
    assert message.template is not None
    try:
        source, file = template_source(env, message.template)
    except TemplateProblem as problem:
        report.error((*path, "template"), problem.message)
        return None
    return source, message.template, file


def _check_message(
    message: Message | None,
    path: KeyPath,
    allowed: frozenset[str],
    env: SandboxedEnvironment,
    report: Reporter,
    max_static: int | None = None,
) -> None:
    """Report a message's mistakes at the flow's key; a template file's own mistakes also at the template's file
    and line, so an editor can jump there."""
    if message is None:
        return
    found = _message_source(message, env, path, report)
    if found is None:
        return
    source, name, file = found
    key = (*path, "say" if name is None else "template")
    where = f"template '{name}'" if name else "text"

    def also_in_template(line: int, message: str) -> None:
        if file is not None:
            report.elsewhere(file, line, message)

    try:
        reads = template_reads(env, source, name)
    except TemplateProblem as problem:
        report.error(key, f"{where} line {problem.line}: {problem.message}")
        also_in_template(problem.line or 1, problem.message)
        return
    for unknown in sorted(set(reads.names) - allowed):
        known = ", ".join(sorted(allowed))
        report.error(key, f"{where} uses undefined variable '{unknown}' (known: {known})")
        also_in_template(reads.names[unknown], f"undefined variable '{unknown}' (known: {known})")
    for field in sorted(set(reads.user_fields) - USER_FIELDS):
        unknown_field = f"unknown field 'user.{field}'{suggest(field, sorted(USER_FIELDS))}"
        unknown_field = unknown_field.replace("known keys", "user has")
        report.error(key, f"{where} uses {unknown_field}")
        also_in_template(reads.user_fields[field], unknown_field)
    static = _JINJA.sub("", source).strip()
    if max_static is not None and len(static) > max_static:
        report.error(key, f"{where} is at least {len(static)} characters; a button message allows at most {max_static}")


def _check_templates(spec: FlowSpec, report: Reporter, env: SandboxedEnvironment, limits: Limits) -> None:
    for name, state in spec.states.items():
        _check_message(
            state.say, ("states", name), CONVERSATION_NAMES, env, report, limits.button_text if state.buttons else None
        )
    if spec.fallback:
        _check_message(spec.fallback.say, ("fallback",), CONVERSATION_NAMES, env, report)
    for name, topic in spec.topics.items():
        allowed = NOTIFICATION_NAMES | set(topic.params)
        for i, variant in enumerate(topic.variants):
            _check_message(variant.message, ("topics", name, "variants", i), allowed, env, report)
        _check_otn_titles(spec, name, env, report, limits)


def _check_otn_titles(
    spec: FlowSpec, topic_name: str, env: SandboxedEnvironment, report: Reporter, limits: Limits
) -> None:
    """The Notify Me title is rendered with the asking state's `vars`: check it for each state that asks."""
    topic = spec.topics[topic_name]
    title_path: KeyPath = ("topics", topic_name, "title")
    try:
        names = undeclared_names(env, topic.title)
        template = env.from_string(topic.title)
    except TemplateProblem as problem:
        report.error(title_path, f"title line {problem.line}: {problem.message}")
        return
    askers = [(n, s.otn) for n, s in spec.states.items() if s.otn and s.otn.topic == topic_name]
    if not askers and len(topic.title) > limits.otn_title and not names:
        report.error(
            title_path, f"Notify Me title is {len(topic.title)} characters; Messenger allows at most {limits.otn_title}"
        )
    for state_name, ask in askers:
        assert ask is not None
        given = dict(ask.vars)
        missing = sorted(names - CONVERSATION_NAMES - set(given))
        ask_path: KeyPath = ("states", state_name, "otn")
        if missing:
            report.error(
                (*ask_path, "vars"),
                f"the title of topic '{topic_name}' uses {', '.join(missing)}: give "
                f"{'it' if len(missing) == 1 else 'them'} in otn.vars",
            )
            continue
        if not _check_request_vars(given, ask_path, env, report):
            continue  # a variable is a template: depends on the user, checked when rendered, at run time
        if names & CONVERSATION_NAMES:
            continue  # depends on the user: checked when rendered, at run time
        title = template.render(**given)
        if len(title) > limits.otn_title:
            report.error(
                ask_path,
                f"Notify Me title {title!r} is {len(title)} characters once rendered; Messenger "
                f"allows at most {limits.otn_title}",
            )


def _check_request_vars(
    given: Mapping[str, object], ask_path: KeyPath, env: SandboxedEnvironment, report: Reporter
) -> bool:
    """otn.vars values are templates over the conversation (`size = "{{ vars.size }}"`), rendered when the request
    is made and kept with the token. True when every value is plain text (the title can be checked now)."""
    plain = True
    for name, value in given.items():
        if not isinstance(value, str) or ("{{" not in value and "{%" not in value):
            continue
        plain = False
        try:
            unknown = sorted(undeclared_names(env, value) - CONVERSATION_NAMES)
        except TemplateProblem as problem:
            report.error((*ask_path, "vars", name), f"line {problem.line}: {problem.message}")
            continue
        for word in unknown:
            known = ", ".join(sorted(CONVERSATION_NAMES))
            report.error((*ask_path, "vars", name), f"uses undefined variable '{word}' (known: {known})")
    return plain
