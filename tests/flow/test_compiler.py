"""The compiled step: how input is matched, what is said, tagged and asked, on one shared machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.flow import CompiledFlow, FlowOptions, Match, Snapshot, UserInput, load_flow

ROOT = Path(__file__).resolve().parents[2]

FLOW = """
[flow]
name = "t"
start = "welcome"

[fallback]
say = "Pardon?"

[[keywords]]
words = ["menu"]
goto = "welcome"

[[keywords]]
words = ["stop"]
goto = "bye"
tag = ["churned"]

[topics.news]
title = "News about {{ subject }}"
params = ["headline"]
on_optin = "subscribed"
quick_replies = [{ title = "Read", goto = "welcome" }]
[[topics.news.variants]]
when = "vip"
say = "VIP {{ user.first_name }}: {{ headline }}"
[[topics.news.variants]]
say = "{{ headline }}"

[states.welcome]
say = "Hi {{ user.first_name }}{% if 'vip' in user.tags %} (vip){% endif %}"
untag = ["churned"]
quick_replies = [
  { title = "VIP", goto = "welcome", tag = ["vip"] },
  { title = "Name", goto = "ask_name" },
  { title = "News", goto = "news" },
]

[states.ask_name]
say = "Your name?"

[[states.ask_name.on]]
regex = "^admin$"
when = "vip"
goto = "welcome"
set = { admin = true }

[[states.ask_name.on]]
regex = "\\\\w+"
capture = "name"
goto = "greet"

[states.greet]
say = "Nice to meet you, {{ vars.name }}. You said: {{ text }}"
then = "welcome"

[states.news]
say = "Want news?"
otn = { topic = "news", vars = { subject = "wine" } }
buttons = [{ title = "Back", goto = "welcome" }]

[states.subscribed]
say = "Subscribed!"
end = true

[states.bye]
say = "Bye"
end = true
"""


@pytest.fixture
def flow(tmp_path: Path) -> CompiledFlow:
    path = tmp_path / "t.toml"
    path.write_text(FLOW)
    compiled, diagnostics = load_flow(path)
    assert compiled is not None, diagnostics
    return compiled


def run(flow: CompiledFlow, *inputs: UserInput, snapshot: Snapshot | None = None) -> tuple[Snapshot, list[str]]:
    snapshot = snapshot or Snapshot()
    said: list[str] = []
    for user_input in inputs:
        result = flow.step(snapshot, user_input, {"first_name": "Ann"})
        snapshot = result.snapshot
        said.extend(reply.text for reply in result.replies)
    return snapshot, said


def test_first_message_enters_the_start_state(flow: CompiledFlow) -> None:
    result = flow.step(Snapshot(), UserInput(text="hello"), {"first_name": "Ann"})
    assert result.matched is Match.START and result.matched == "start"  # the enum, shown as the same word
    assert result.snapshot.state == "welcome"
    assert [r.text for r in result.replies] == ["Hi Ann"]
    assert [q.title for q in result.replies[0].quick_replies] == ["VIP", "Name", "News"]


def test_choice_tags_are_applied_before_the_next_state_speaks(flow: CompiledFlow) -> None:
    snapshot, said = run(flow, UserInput(text="hi"), UserInput(payload="VIP"))
    assert snapshot.tags == {"vip"}
    assert said[-1] == "Hi Ann (vip)"


def test_typing_a_quick_reply_title_counts_as_tapping_it(flow: CompiledFlow) -> None:
    result = flow.step(Snapshot("welcome"), UserInput(text="  name "))
    assert (result.matched, result.snapshot.state) == ("title", "ask_name")


def test_global_keyword_works_from_any_state_and_applies_its_effects(flow: CompiledFlow) -> None:
    snapshot, said = run(flow, UserInput(text="STOP"), snapshot=Snapshot("ask_name"))
    assert (snapshot.state, snapshot.tags, said) == ("bye", {"churned"}, ["Bye"])
    snapshot, said = run(flow, UserInput(text="menu"), snapshot=snapshot)
    assert snapshot.state == "welcome" and "churned" not in snapshot.tags  # welcome untags


def test_guarded_rule_falls_through_to_the_next_rule(flow: CompiledFlow) -> None:
    snapshot, _ = run(flow, UserInput(text="admin"), snapshot=Snapshot("ask_name"))
    assert snapshot.variables == {"name": "admin"}  # not vip: the guarded rule did not fire
    snapshot, _ = run(flow, UserInput(text="admin"), snapshot=Snapshot("ask_name", frozenset({"vip"})))
    assert snapshot.variables == {"admin": True}


def test_capture_stores_text_and_then_chains_to_the_next_state(flow: CompiledFlow) -> None:
    snapshot, said = run(flow, UserInput(text="Zoe"), snapshot=Snapshot("ask_name"))
    assert said == ["Nice to meet you, Zoe. You said: Zoe", "Hi Ann"]
    assert snapshot.state == "welcome"


def test_user_text_is_data_never_a_template(flow: CompiledFlow) -> None:
    evil = "{{ 7 * 7 }}{% for x in range(3) %}x{% endfor %}"
    _, said = run(flow, UserInput(text=evil), snapshot=Snapshot("ask_name"))
    assert said[0] == f"Nice to meet you, {evil}. You said: {evil}"


def test_fallback_says_so_and_offers_the_state_quick_replies_again(flow: CompiledFlow) -> None:
    result = flow.step(Snapshot("welcome"), UserInput(text="blue?"))
    assert result.matched == "fallback"
    assert result.snapshot.state == "welcome"
    assert result.replies[0].text == "Pardon?"
    assert [q.payload for q in result.replies[0].quick_replies] == ["VIP", "NAME", "NEWS"]


def test_tap_on_an_older_message_is_followed_from_where_it_was_offered(flow: CompiledFlow) -> None:
    result = flow.step(Snapshot("subscribed"), UserInput(payload="NEWS"))
    assert (result.matched, result.snapshot.state) == ("late_tap", "news")


def test_state_with_otn_asks_for_the_topic_with_its_title_rendered(flow: CompiledFlow) -> None:
    result = flow.step(Snapshot("welcome"), UserInput(payload="NEWS"))
    say, ask = result.replies
    assert [b.title for b in say.buttons] == ["Back"]
    assert (ask.otn_topic, ask.text) == ("news", "News about wine")


def test_optin_runs_the_topic_optin_state(flow: CompiledFlow) -> None:
    result = flow.enter_optin(Snapshot("news"), "news")
    assert result.snapshot.state == "subscribed"
    assert [r.text for r in result.replies] == ["Subscribed!"]


def test_notification_variant_is_chosen_by_segment(flow: CompiledFlow) -> None:
    vip = flow.notification("news", Snapshot("welcome", frozenset({"vip"})), {"headline": "Sale"}, {"first_name": "A"})
    plain = flow.notification("news", Snapshot("welcome"), {"headline": "Sale"})
    assert (vip.text, plain.text) == ("VIP A: Sale", "Sale")
    assert [q.payload for q in plain.quick_replies] == ["otn:news:tap:READ"]
    result = flow.step(Snapshot("bye"), UserInput(payload="otn:news:tap:READ"))
    assert result.snapshot.state == "welcome"
    # a tap on a notification an earlier version sent (otn:<topic>:<choice>) still follows its goto
    assert flow.step(Snapshot("bye"), UserInput(payload="otn:news:READ")).snapshot.state == "welcome"


def test_the_shared_machine_keeps_no_user(flow: CompiledFlow) -> None:
    for i in range(50):
        flow.step(Snapshot("welcome", frozenset({f"t{i}"})), UserInput(payload="NAME"))
    assert flow.machine.models == []


def test_the_step_is_pure(flow: CompiledFlow) -> None:
    before = Snapshot("welcome", frozenset({"a"}), {"x": 1})
    first = flow.step(before, UserInput(payload="VIP"))
    second = flow.step(before, UserInput(payload="VIP"))
    assert first == second
    assert before == Snapshot("welcome", frozenset({"a"}), {"x": 1})


@pytest.mark.parametrize("name", ["wine_shop", "sneaker_drop"])
def test_example_flows_load_clean(name: str) -> None:
    flow, diagnostics = load_flow(ROOT / "flows" / f"{name}.toml", FlowOptions(templates_dir=ROOT / "templates"))
    assert flow is not None and diagnostics == []


def test_wine_shop_tags_white_lovers_and_asks_for_the_restock_otn() -> None:
    flow, _ = load_flow(ROOT / "flows" / "wine_shop.toml", FlowOptions(templates_dir=ROOT / "templates"))
    assert flow is not None
    snapshot, _ = run(flow, UserInput(text="hi"))
    result = flow.step(snapshot, UserInput(text="White", payload="WHITE"))
    assert result.snapshot.tags == {"likes_white"}
    assert result.replies[-1].otn_topic == "restock"
    assert result.replies[-1].text == "Tell me when the Sauvignon 2024 is back"
    note = flow.notification("restock", result.snapshot, {"product": "Sauvignon 2024"}, {"first_name": "Ann"})
    assert note.text.startswith("The Sauvignon 2024 is back, Ann! Crisp")


def test_a_request_carries_its_otn_vars_rendered_and_the_checker_knows_their_names(tmp_path: Path) -> None:
    sized = FLOW.replace('vars = { subject = "wine" }', 'vars = { subject = "wine {{ vars.year }}", size = 42 }')
    path = tmp_path / "sized.toml"
    path.write_text(sized)
    compiled, diagnostics = load_flow(path)
    assert compiled is not None, diagnostics
    result = compiled.step(Snapshot("welcome", variables={"year": 2015}), UserInput(payload="NEWS"))
    request = result.replies[-1]
    assert request.otn_topic == "news" and request.text == "News about wine 2015"
    assert request.otn_vars == (("size", "42"), ("subject", "wine 2015"))
    path.write_text(sized.replace("vars.year", "year"))
    compiled, diagnostics = load_flow(path)
    assert compiled is None
    assert [d.message for d in diagnostics] == ["uses undefined variable 'year' (known: text, user, vars)"]
    assert "states.news.otn.vars.subject" in str(diagnostics[0])


def test_unsubscribe_and_subscribe_mark_a_step_and_not_both(tmp_path: Path) -> None:
    marked = FLOW.replace('goto = "bye"\ntag = ["churned"]', 'goto = "bye"\ntag = ["churned"]\nunsubscribe = true')
    assert marked != FLOW
    path = tmp_path / "consent.toml"
    path.write_text(marked)
    compiled, diagnostics = load_flow(path)
    assert compiled is not None, diagnostics
    assert compiled.step(Snapshot("welcome"), UserInput(text="stop")).consent is False
    assert compiled.step(Snapshot("welcome"), UserInput(text="menu")).consent is None
    path.write_text(marked.replace("unsubscribe = true", "unsubscribe = true\nsubscribe = true"))
    compiled, diagnostics = load_flow(path)
    assert compiled is None
    assert [d.message for d in diagnostics] == ["a step cannot both unsubscribe and subscribe the user"]
