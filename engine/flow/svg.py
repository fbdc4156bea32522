"""A flow as an SVG drawing, with one state highlighted: the playground's diagram.

States are laid out in columns by their distance from the start state (breadth first); every edge of
`FlowSpec.edges()` is drawn as a curve labelled with what takes the user along it (the quick-reply title, the
keyword, `then`, Notify Me). Edges that work from any state (keywords, the fallback, a notification's quick replies,
opt-ins) leave a dashed "any state" box under the start state. OTN states are shaded. `otnflow graph` gives the
same edges as Mermaid text; this drawing needs no JavaScript library, so the playground fetches nothing from the
internet.
"""

from __future__ import annotations

from collections import Counter, deque
from html import escape

from .spec import Edge, FlowSpec, State

BOX_W, BOX_H, COL_GAP, ROW_GAP, MARGIN = 150, 34, 120, 30, 24
ANYWHERE_LABEL = "any state"
DASHED = ' stroke-dasharray="4 3"'  # what works from any state
Point = tuple[float, float]
Curve = tuple[Point, Point, Point, Point]  # a cubic Bézier: start, two control points, end


def _columns(spec: FlowSpec, edges: tuple[Edge, ...]) -> dict[str | None, int]:
    depth: dict[str | None, int] = {spec.start: 0}
    queue = deque([spec.start])
    while queue:
        current = queue.popleft()
        for edge in edges:
            if edge.source == current and edge.target not in depth:
                depth[edge.target] = depth[current] + 1
                queue.append(edge.target)
    deepest = max(depth.values(), default=0)
    for name in spec.states:  # reached only through edges from any state: one more column
        depth.setdefault(name, deepest + 1)
    return depth


def _layout(spec: FlowSpec, edges: tuple[Edge, ...]) -> dict[str | None, Point]:
    """Top-left corner of each state's box; None is the "any state" box, in a first column of its own, if drawn."""
    columns = _columns(spec, edges)
    if any(edge.source is None for edge in edges):
        columns = {name: column + 1 for name, column in columns.items()}
        columns[None] = 0
    rows: Counter[int] = Counter()
    position: dict[str | None, Point] = {}
    for name, column in columns.items():
        position[name] = (column * (BOX_W + COL_GAP), rows[column] * (BOX_H + ROW_GAP))
        rows[column] += 1
    return position


def _curve(source: Point, target: Point, nth: int) -> Curve:
    """A curve between two boxes; `nth` fans out parallel edges."""
    (x1, y1), (x2, y2) = source, target
    fan = nth * 18
    if source == target:  # a loop over the top of the box
        top = y1 - 36 - fan
        return (x1 + BOX_W * 0.65, y1), (x1 + BOX_W * 0.9, top), (x1 + BOX_W * 0.1, top), (x1 + BOX_W * 0.35, y1)
    if x2 > x1:  # forward: right side to left side
        start, end = (x1 + BOX_W, y1 + BOX_H / 2), (x2, y2 + BOX_H / 2)
        bend = (start[0] + end[0]) / 2
        return start, (bend, start[1] + fan), (bend, end[1] + fan), end
    if x2 < x1:  # backward: left side to right side, arching over
        start, end = (x1, y1 + BOX_H / 2), (x2 + BOX_W, y2 + BOX_H / 2)
        bend = (start[0] + end[0]) / 2
        return start, (bend, start[1] - 40 - fan), (bend, end[1] - 40 - fan), end
    start, end = (x1, y1 + BOX_H / 2), (x2, y2 + BOX_H / 2)  # same column: out and back in on the left
    return start, (x1 - 50 - fan, start[1]), (x1 - 50 - fan, end[1]), end


def _label_at(curve: Curve) -> Point:
    """The middle of the curve (t = 1/2), where its label goes."""
    (sx, sy), (ax, ay), (bx, by), (ex, ey) = curve
    return (sx + 3 * ax + 3 * bx + ex) / 8, (sy + 3 * ay + 3 * by + ey) / 8


def _edge(edge: Edge, curve: Curve) -> str:
    (sx, sy), (ax, ay), (bx, by), (ex, ey) = curve
    mid_x, mid_y = _label_at(curve)
    source = ANYWHERE_LABEL if edge.source is None else edge.source
    dashed = DASHED if edge.source is None else ""
    return (
        f'<g class="edge" data-source="{escape(edge.source or "")}" data-target="{escape(edge.target)}" '
        f'data-cause="{edge.cause.value}"><title>{escape(source)} → {escape(edge.target)}: {escape(edge.label)}</title>'
        f'<path d="M {sx:.1f} {sy:.1f} C {ax:.1f} {ay:.1f}, {bx:.1f} {by:.1f}, {ex:.1f} {ey:.1f}" fill="none" '
        f'stroke="#94a3b8"{dashed} marker-end="url(#arrow)"/>'
        f'<text x="{mid_x:.1f}" y="{mid_y + 3:.1f}" text-anchor="middle" font-size="10" fill="#334155" '
        f'stroke="#ffffff" stroke-width="3" paint-order="stroke">{escape(edge.label)}</text></g>'
    )


def _box(state: State | None, at: Point, current: str | None) -> str:
    """A state's box (`None`: the dashed "any state" box), filled to show the current state and OTN states."""
    x, y = at
    if state is None:
        group, fill, ink, dash, text = (
            'class="anywhere"',
            "#ffffff",
            "#475569",
            ' stroke-dasharray="4 3"',
            ANYWHERE_LABEL,
        )
    else:
        group = f'class="state{" current" if state.name == current else ""}" data-state="{escape(state.name)}"'
        fill = "#2563eb" if state.name == current else ("#fde68a" if state.otn else "#f1f5f9")
        ink = "#ffffff" if state.name == current else "#0f172a"
        dash, text = "", escape(state.name) + (" (OTN)" if state.otn else "")
    return (
        f'<g {group}><rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="8" fill="{fill}" '
        f'stroke="#64748b"{dash}/>'
        f'<text x="{x + BOX_W / 2}" y="{y + BOX_H / 2 + 4}" text-anchor="middle" fill="{ink}">{text}</text></g>'
    )


def to_svg(spec: FlowSpec, current: str | None = None) -> str:
    edges = spec.edges()
    position = _layout(spec, edges)
    parallel: Counter[tuple[str | None, str]] = Counter()
    curves: list[Curve] = []
    for edge in edges:
        curves.append(_curve(position[edge.source], position[edge.target], parallel[edge.source, edge.target]))
        parallel[edge.source, edge.target] += 1
    # The drawing's extent: every box, every curve's control points, every label (about 6 px a character).
    xs = [x for x, _ in position.values()] + [x + BOX_W for x, _ in position.values()]
    ys = [y for _, y in position.values()] + [y + BOX_H for _, y in position.values()]
    for edge, curve in zip(edges, curves, strict=True):
        xs += [x for x, _ in curve]
        ys += [y for _, y in curve]
        mid_x, mid_y = _label_at(curve)
        xs += [mid_x - len(edge.label) * 3, mid_x + len(edge.label) * 3]
        ys += [mid_y - 8, mid_y + 8]
    left, top = min(xs) - MARGIN, min(ys) - MARGIN
    width, height = max(xs) + MARGIN - left, max(ys) + MARGIN - top
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="{left:.0f} {top:.0f} {width:.0f} {height:.0f}" font-family="sans-serif" font-size="11">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#94a3b8"/></marker></defs>',
    ]
    parts += [_edge(edge, curve) for edge, curve in zip(edges, curves, strict=True)]
    parts += [_box(spec.states[name] if name else None, at, current) for name, at in position.items()]
    parts.append("</svg>")
    return "".join(parts)
