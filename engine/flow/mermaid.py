"""A flow as a Mermaid state diagram (`otnflow graph`), drawn from the spec's edges.

Written from the spec rather than with `transitions`' own Mermaid export because the spec knows what authors
wrote (quick-reply titles, keywords, guards, OTN topics) while the machine only knows internal trigger names.
"""

from __future__ import annotations

import re

from .spec import FlowSpec

ANYWHERE = "any_state"


def mermaid_label(text: str) -> str:
    """Mermaid ends a label at a newline and chokes on a few characters: keep labels to one safe line."""
    return re.sub(r"[:;#\n\r\"]", " ", text).strip()


def mermaid_node(name: str | None) -> str:
    """A state's Mermaid id; None (an edge from any state) is the `any state` node."""
    return ANYWHERE if name is None else re.sub(r"[^0-9A-Za-z_]", "_", name)


def to_mermaid(spec: FlowSpec) -> str:
    edges = spec.edges()
    lines = ["stateDiagram-v2", f"    %% flow {spec.name} ({spec.path})", f"    [*] --> {mermaid_node(spec.start)}"]
    lines += [f'    state "{mermaid_label(n)}" as {mermaid_node(n)}' for n in spec.states if mermaid_node(n) != n]
    if any(edge.source is None for edge in edges):
        lines.append(f'    state "any state" as {ANYWHERE}')
    for edge in edges:
        lines.append(f"    {mermaid_node(edge.source)} --> {mermaid_node(edge.target)}: {mermaid_label(edge.label)}")
    lines += [f"    {mermaid_node(name)} --> [*]" for name, state in spec.states.items() if state.end]
    otn_states = [name for name, state in spec.states.items() if state.otn]
    for name in otn_states:
        ask = spec.states[name].otn
        topic_name = ask.topic if ask else ""
        lines.append(f"    note right of {mermaid_node(name)}: OTN request ({mermaid_label(topic_name)})")
    if otn_states:
        lines.append("    classDef otn fill:#fde68a,stroke:#b45309")
        lines.append(f"    class {','.join(mermaid_node(n) for n in otn_states)} otn")
    return "\n".join(lines) + "\n"
