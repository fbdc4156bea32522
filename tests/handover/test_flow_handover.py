"""The flow side of a hand-over, pure: the state speaks, then the step asks the runtime to pass the thread (with
the note rendered); `hand_back` resumes at the named state; `take_back` words are whole messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.flow import CompiledFlow, HandoverCall, Snapshot, UserInput, load_flow

FLOW = """
[flow]
name = "desk"
start = "welcome"

[states.welcome]
say = "Hi"
quick_replies = [{ title = "Person", goto = "person" }, { title = "Desk", goto = "app" }]

[states.person]
say = "A person will answer, {{ user.first_name }}"
[states.person.handover]
to = "page_inbox"
note = "{{ user.first_name }} wants a person"
resume = "back"
take_back = ["bot", "back to the bot"]

[states.back]
say = "The bot again"
then = "welcome"

[states.app]
say = "Over to our desk"
end = true
handover = { to = "1517776481860111", resume = "welcome" }
"""


@pytest.fixture
def flow(tmp_path: Path) -> CompiledFlow:
    path = tmp_path / "desk.toml"
    path.write_text(FLOW)
    compiled, diagnostics = load_flow(path)
    assert compiled is not None, diagnostics
    assert [d for d in diagnostics if d.severity.value == "error"] == []
    return compiled


def test_the_state_speaks_then_hands_over_with_the_note(flow: CompiledFlow) -> None:
    result = flow.step(Snapshot("welcome"), UserInput(text="Person", payload="PERSON"), {"first_name": "Ann"})
    assert [r.text for r in result.replies] == ["A person will answer, Ann"]
    assert result.snapshot.state == "person"
    assert result.handover == HandoverCall("person", "263902037430900", "Ann wants a person")
    assert flow.step(Snapshot("welcome"), UserInput(text="hi")).handover is None


def test_hand_back_resumes_at_the_named_state(flow: CompiledFlow) -> None:
    result = flow.hand_back(Snapshot("person"), "person")
    assert [r.text for r in result.replies] == ["The bot again", "Hi"]  # `back` moves on by `then`
    assert (result.snapshot.state, result.handover) == ("welcome", None)
    stay = flow.hand_back(Snapshot("welcome"), "gone_from_the_flow")
    assert (stay.snapshot.state, stay.replies) == ("welcome", ())


@pytest.mark.parametrize(
    ("text", "wanted"),
    [("bot", True), ("  BOT! ", True), ("Back to the bot", True), ("the bot is slow", False), ("", False)],
)
def test_take_back_words_are_whole_messages(flow: CompiledFlow, text: str, wanted: bool) -> None:
    assert flow.takes_back("person", text) is wanted
    assert flow.takes_back("app", text) is False  # no take_back words there
