"""A flow's edges are listed once (`FlowSpec.edges()`): the checker walks them, the compiler wires them, Mermaid and
the SVG draw them, with the same labels."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from xml.etree import ElementTree

import pytest

from engine.flow import Arrival, CompiledFlow, FlowSpec, Snapshot, UserInput, load_flow
from engine.flow.loader import read_flow
from engine.flow.mermaid import mermaid_label, mermaid_node, to_mermaid
from engine.flow.spec import Cause, Edge, Outcome
from engine.flow.svg import to_svg

ROOT = Path(__file__).resolve().parents[2]

# Every kind of edge, and each state reachable through one kind only: a clean check proves the checker walks each.
EVERY_EDGE = """
[flow]
name = "every_edge"
start = "welcome"

[fallback]
say = "Pardon?"
goto = "confused"

[[keywords]]
words = ["help", "aide"]
goto = "helpdesk"

[topics.restock]
title = "Tell me when it is back"
on_optin = "subscribed"
quick_replies = [{ title = "Show me", goto = "shelf" }]
[[topics.restock.variants]]
say = "It is back"

[[referrals]]
ref_matches = "^summer-"
source = "ad"
goto = "sale"
tag = ["summer"]

[states.welcome]
say = "Hi"
quick_replies = [{ title = "Shop", goto = "shop" }]
buttons = [{ title = "Visit", goto = "visit" }, { title = "Site", url = "https://example.com" }]
otn = { topic = "restock" }

[states.shop]
say = "Which size?"
[[states.shop.on]]
keyword = ["large", "xl"]
when = "vip"
goto = "large"

[states.large]
say = "Large it is"
then = "checkout"

[states.checkout]
say = "Done"
end = true

[states.visit]
say = "Come by"
end = true
[states.visit.action]
name = "check_stock"
save_as = "n"
on_result = [{ when = "vars.n == 0", goto = "sold_out" }]
on_failure = "shop_down"

[states.sold_out]
say = "Nothing left"
end = true

[states.shop_down]
say = "Try later"
end = true

[states.helpdesk]
say = "How can I help?"
handover = { to = "page_inbox", note = "{{ user.first_name }} asked for help", resume = "back", take_back = "bot" }

[states.back]
say = "The bot again"
end = true

[states.confused]
say = "Let us start again"
end = true

[states.subscribed]
say = "You will hear from us"
end = true

[states.shelf]
say = "Here it is"
end = true

[states.sale]
say = "Summer sale!"
end = true
"""

WANT = [
    ("welcome", "shop", Cause.QUICK_REPLY, "Shop"),
    ("welcome", "visit", Cause.BUTTON, "Visit"),
    ("shop", "large", Cause.RULE, "large / xl if vip"),
    ("large", "checkout", Cause.THEN, "then"),
    ("visit", "sold_out", Cause.ACTION, "check_stock if vars.n == 0"),
    ("visit", "shop_down", Cause.ACTION, "check_stock failed"),
    ("helpdesk", "back", Cause.HANDOVER, "back from a person"),
    (None, "helpdesk", Cause.KEYWORD, "help / aide"),
    (None, "confused", Cause.FALLBACK, "not understood"),
    (None, "shelf", Cause.NOTIFICATION_REPLY, "Show me (restock notification)"),
    (None, "subscribed", Cause.OPTIN, "Notify Me (restock)"),
    (None, "sale", Cause.REFERRAL, "arrives ref /^summer-/ from ad"),
]


@pytest.fixture
def flow(tmp_path: Path) -> CompiledFlow:
    path = tmp_path / "every_edge.toml"
    path.write_text(EVERY_EDGE)
    compiled, diagnostics = load_flow(path)
    assert compiled is not None, diagnostics
    assert diagnostics == []  # nothing unreachable, no dead end: every kind of edge counts
    return compiled


def example_specs() -> list[FlowSpec]:
    specs = [read_flow(file)[0] for file in sorted((ROOT / "flows").glob("*.toml"))]
    assert specs
    return [spec for spec in specs if spec is not None]


def test_edges_list_every_kind_with_what_causes_it(flow: CompiledFlow) -> None:
    edges = flow.spec.edges()
    assert [(e.source, e.target, e.cause, e.label) for e in edges] == WANT
    assert {e.cause for e in edges} == set(Cause)
    assert [e.key for e in edges][:3] == [
        ("states", "welcome", "quick_replies", 0, "goto"),
        ("states", "welcome", "buttons", 0, "goto"),
        ("states", "shop", "on", 0, "goto"),
    ]


def take(flow: CompiledFlow, edge: Edge) -> str | None:
    """Drive the compiled flow along `edge` from its source; the state the user ends in."""
    at = Snapshot(edge.source or "welcome", frozenset({"vip"}))
    match edge.cause:
        case Cause.QUICK_REPLY | Cause.BUTTON:
            assert edge.choice is not None
            return flow.step(at, UserInput(payload=edge.choice.payload)).snapshot.state
        case Cause.RULE:
            return flow.step(at, UserInput(text="XL")).snapshot.state
        case Cause.THEN:  # a state with `then` moves on as soon as it is entered
            return flow.step(Snapshot("shop", frozenset({"vip"})), UserInput(text="large")).snapshot.state
        case Cause.KEYWORD:
            return flow.step(at, UserInput(text="Aide")).snapshot.state
        case Cause.FALLBACK:
            return flow.step(at, UserInput(text="what?")).snapshot.state
        case Cause.NOTIFICATION_REPLY:
            quick = flow.notification("restock", at, {}).quick_replies[0]
            return flow.step(at, UserInput(text=quick.title, payload=quick.payload)).snapshot.state
        case Cause.OPTIN:
            return flow.enter_optin(at, "restock").snapshot.state
        case Cause.ACTION:  # the runtime feeds the action's outcome back: a result guard's, or success/failure
            return flow.resume(at, edge.outcome or Outcome.SUCCESS, 0).snapshot.state
        case Cause.REFERRAL:
            return flow.step(at, UserInput(arrival=Arrival("summer-2026", "ADS", "42"))).snapshot.state
        case Cause.HANDOVER:  # control came back from a person
            assert edge.source is not None
            return flow.hand_back(at, edge.source).snapshot.state
    raise AssertionError(edge.cause)


def test_the_compiled_machine_takes_every_edge(flow: CompiledFlow) -> None:
    for edge in flow.spec.edges():
        landed = take(flow, edge)
        # `large` moves on by `then` at once: the rule's edge ends where its target's `then` leads
        assert landed == ("checkout" if edge.target == "large" else edge.target), edge


def test_a_rule_edge_keeps_its_guard(flow: CompiledFlow) -> None:
    assert flow.step(Snapshot("shop"), UserInput(text="xl")).snapshot.state == "confused"  # not vip: the fallback


MERMAID_EDGE = re.compile(r"^    (\S+) --> (\S+): (.*)$")


def mermaid_edges(text: str) -> Counter[tuple[str, str, str]]:
    found = (MERMAID_EDGE.match(line) for line in text.splitlines())
    return Counter((m[1], m[2], m[3]) for m in found if m and m[1] != "[*]")


def test_mermaid_draws_exactly_the_edges_with_their_labels(flow: CompiledFlow) -> None:
    for spec in [flow.spec, *example_specs()]:
        want = Counter((mermaid_node(e.source), mermaid_node(e.target), mermaid_label(e.label)) for e in spec.edges())
        assert mermaid_edges(to_mermaid(spec)) == want, spec.name
    assert "    any_state --> shelf: Show me (restock notification)" in to_mermaid(flow.spec)


SVG = "{http://www.w3.org/2000/svg}"


def svg_edges(text: str) -> Counter[tuple[str | None, str, str, str]]:
    root = ElementTree.fromstring(text)
    found: Counter[tuple[str | None, str, str, str]] = Counter()
    for group in root.iter(f"{SVG}g"):
        if group.get("class") == "edge":
            assert group.find(f"{SVG}path") is not None
            label = group.find(f"{SVG}text")
            assert label is not None
            found[
                group.get("data-source") or None,
                group.get("data-target", ""),
                group.get("data-cause", ""),
                label.text or "",
            ] += 1
    return found


def test_svg_draws_exactly_the_edges_with_their_labels(flow: CompiledFlow) -> None:
    for spec in [flow.spec, *example_specs()]:
        want = Counter((e.source, e.target, e.cause.value, e.label) for e in spec.edges())
        assert svg_edges(to_svg(spec)) == want, spec.name


def test_svg_draws_the_any_state_box_and_highlights_the_current_state(flow: CompiledFlow) -> None:
    root = ElementTree.fromstring(to_svg(flow.spec, current="shop"))
    groups = list(root.iter(f"{SVG}g"))
    assert [g for g in groups if g.get("class") == "anywhere"]
    states = {g.get("data-state"): g for g in groups if "state" in (g.get("class") or "").split()}
    assert set(states) == set(flow.spec.states)
    filled = {name for name, g in states.items() if g.find(f"{SVG}rect[@fill='#2563eb']") is not None}
    assert filled == {name for name, g in states.items() if "current" in (g.get("class") or "").split()} == {"shop"}
