"""A flow as a Mermaid state diagram, drawn from the spec.

Written from the spec rather than with `transitions`' own Mermaid export because the spec knows what authors
wrote (quick-reply titles, keywords, guards, OTN topics) while the machine only knows internal trigger names.
"""

from __future__ import annotations

import re

from .spec import FlowSpec

ANYWHERE = "any_state"


def _label(text: str) -> str:
    """Mermaid ends a label at a newline and chokes on a few characters: keep labels to one safe line."""
    return re.sub(r"[:;#\n\r\"]", " ", text).strip()


def _node(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


def to_mermaid(spec: FlowSpec) -> str:
    lines = ["stateDiagram-v2", f"    %% flow {spec.name} ({spec.path})", f"    [*] --> {_node(spec.start)}"]
    for name in spec.states:
        if _node(name) != name:
            lines.append(f'    state "{_label(name)}" as {_node(name)}')
    for name, state in spec.states.items():
        for choice in state.quick_replies:
            if choice.goto:
                lines.append(f"    {_node(name)} --> {_node(choice.goto)}: {_label(choice.title)}")
        for choice in state.buttons:
            if choice.goto:
                lines.append(f"    {_node(name)} --> {_node(choice.goto)}: [{_label(choice.title)}]")
        for rule in state.rules:
            what = (
                f"payload {rule.payload}"
                if rule.payload
                else " / ".join(rule.keywords)
                if rule.keywords
                else f"/{rule.regex.pattern if rule.regex else ''}/"
            )
            guard = f" if {rule.when_source}" if rule.when_source else ""
            lines.append(f"    {_node(name)} --> {_node(rule.goto)}: {_label(what + guard)}")
        if state.then:
            lines.append(f"    {_node(name)} --> {_node(state.then)}: then")
        if state.end:
            lines.append(f"    {_node(name)} --> [*]")
    if spec.keywords or (spec.fallback and spec.fallback.goto):
        lines.append(f'    state "any state" as {ANYWHERE}')
        for keyword in spec.keywords:
            lines.append(f"    {ANYWHERE} --> {_node(keyword.goto)}: {_label(' / '.join(keyword.words))}")
        if spec.fallback and spec.fallback.goto:
            lines.append(f"    {ANYWHERE} --> {_node(spec.fallback.goto)}: not understood")
    for topic in spec.topics.values():
        if topic.on_optin:
            lines.append(
                f"    {ANYWHERE if spec.keywords else '[*]'} --> {_node(topic.on_optin)}: "
                f"Notify Me tapped ({_label(topic.name)})"
            )
    otn_states = [name for name, state in spec.states.items() if state.otn]
    for name in otn_states:
        ask = spec.states[name].otn
        topic_name = ask.topic if ask else ""
        lines.append(f"    note right of {_node(name)}: OTN request ({_label(topic_name)})")
    if otn_states:
        lines.append("    classDef otn fill:#fde68a,stroke:#b45309")
        lines.append(f"    class {','.join(_node(n) for n in otn_states)} otn")
    return "\n".join(lines) + "\n"
