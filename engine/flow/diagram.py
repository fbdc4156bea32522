"""A flow as an SVG drawing, with one state highlighted: the playground's diagram.

States are laid out in columns by their distance from the start state (breadth first), edges drawn as curves
labelled with what leads along them; OTN states are shaded. `otnflow graph` gives the same flow as Mermaid text;
this drawing needs no JavaScript library, so the playground fetches nothing from the internet.
"""

from __future__ import annotations

from collections import deque
from html import escape

from .graph import ANYWHERE
from .spec import FlowSpec

BOX_W, BOX_H, COL_GAP, ROW_GAP, MARGIN = 150, 34, 70, 22, 20


def _edges(spec: FlowSpec) -> list[tuple[str, str, str]]:
    edges = []
    for name, state in spec.states.items():
        for choice in state.choices:
            if choice.goto:
                edges.append((name, choice.goto, choice.title))
        for rule in state.rules:
            label = rule.payload or " / ".join(rule.keywords) or (f"/{rule.regex.pattern}/" if rule.regex else "")
            edges.append((name, rule.goto, label))
        if state.then:
            edges.append((name, state.then, "then"))
    for keyword in spec.keywords:
        edges.append((ANYWHERE, keyword.goto, " / ".join(keyword.words)))
    for topic in spec.topics.values():
        if topic.on_optin:
            edges.append((ANYWHERE, topic.on_optin, f"Notify Me ({topic.name})"))
    return [(a, b, label) for a, b, label in edges if b in spec.states]


def _columns(spec: FlowSpec, edges: list[tuple[str, str, str]]) -> dict[str, int]:
    depth = {spec.start: 0}
    queue = deque([spec.start])
    while queue:
        current = queue.popleft()
        for source, target, _ in edges:
            if source == current and target not in depth:
                depth[target] = depth[current] + 1
                queue.append(target)
    deepest = max(depth.values(), default=0)
    for name in spec.states:  # reached only through global keywords or opt-ins: one more column
        depth.setdefault(name, deepest + 1)
    return depth


def to_svg(spec: FlowSpec, current: str | None = None) -> str:
    edges = _edges(spec)
    columns = _columns(spec, edges)
    rows: dict[int, int] = {}
    position: dict[str, tuple[int, int]] = {}
    for name in spec.states:
        column = columns[name]
        row = rows.get(column, 0)
        rows[column] = row + 1
        position[name] = (MARGIN + column * (BOX_W + COL_GAP), MARGIN + row * (BOX_H + ROW_GAP))
    width = MARGIN * 2 + (max(columns.values(), default=0) + 1) * (BOX_W + COL_GAP)
    height = MARGIN * 2 + max(rows.values(), default=1) * (BOX_H + ROW_GAP)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="sans-serif" font-size="11">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#94a3b8"/></marker></defs>',
    ]
    for source, target, label in edges:
        if source in (ANYWHERE, target):
            continue
        (x1, y1), (x2, y2) = position[source], position[target]
        start = (x1 + BOX_W, y1 + BOX_H / 2) if x2 > x1 else (x1, y1 + BOX_H / 2)
        end = (x2, y2 + BOX_H / 2) if x2 > x1 else (x2 + BOX_W, y2 + BOX_H / 2)
        bend = (start[0] + end[0]) / 2
        lift = 0 if x2 > x1 else -40
        parts.append(
            f'<path d="M {start[0]} {start[1]} C {bend} {start[1] + lift}, {bend} {end[1] + lift}, {end[0]} {end[1]}"'
            ' fill="none" stroke="#94a3b8" marker-end="url(#arrow)"><title>'
            f"{escape(source)} → {escape(target)}: {escape(label)}</title></path>"
        )
    for name, state in spec.states.items():
        x, y = position[name]
        fill = "#2563eb" if name == current else ("#fde68a" if state.otn else "#f1f5f9")
        ink = "#ffffff" if name == current else "#0f172a"
        parts.append(
            f'<g class="state" data-state="{escape(name)}"><rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" '
            f'rx="8" fill="{fill}" stroke="#64748b"/><text x="{x + BOX_W / 2}" y="{y + BOX_H / 2 + 4}" '
            f'text-anchor="middle" fill="{ink}">{escape(name)}{" (OTN)" if state.otn else ""}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)
