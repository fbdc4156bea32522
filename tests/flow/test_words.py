"""Keyword matching (issue 15: "croissant please" fell to the fallback): `match = "word"` finds the keywords as whole
words anywhere in the message, ignoring case, accents and punctuation; the default still wants the whole message.
When several could match, the first in the file wins: global keywords before the state's rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.flow import CompiledFlow, Snapshot, UserInput, load_flow
from engine.flow.words import contains_phrase, normalised_words

FLOW = """
[flow]
name = "bakery"
start = "welcome"

[fallback]
say = "Pardon?"

[[keywords]]
words = ["menu"]
goto = "welcome"

[[keywords]]
words = ["croissant", "pain au chocolat", "crème brûlée"]
match = "word"
goto = "pastries"

[[keywords]]
words = ["bread"]
match = "word"
goto = "bread"

[states.welcome]
say = "Bread or pastries?"
quick_replies = [{ title = "Bread", goto = "bread" }]

[[states.welcome.on]]
keyword = ["coffee"]
match = "word"
goto = "coffee"

[[states.welcome.on]]
keyword = "tea"
goto = "coffee"

[states.pastries]
say = "Pastries!"
quick_replies = [{ title = "Menu", goto = "welcome" }]

[states.bread]
say = "Bread!"
quick_replies = [{ title = "Menu", goto = "welcome" }]

[states.coffee]
say = "Coffee!"
quick_replies = [{ title = "Menu", goto = "welcome" }]
"""


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> CompiledFlow:
    path = tmp_path_factory.mktemp("words") / "bakery.toml"
    path.write_text(FLOW)
    compiled, diagnostics = load_flow(path)
    assert compiled is not None, diagnostics
    return compiled


def reply_to(flow: CompiledFlow, text: str) -> str:
    result = flow.step(Snapshot("welcome"), UserInput(text))
    return result.replies[0].text if result.replies else ""


@pytest.mark.parametrize(
    ("text", "reply"),
    [
        ("croissant please", "Pastries!"),  # issue 15
        ("CROISSANT!!!", "Pastries!"),
        ("Two pains au chocolat?", "Pardon?"),  # words, not stems: "pains" is not "pain"
        ("un pain au chocolat, merci", "Pastries!"),  # several words, side by side
        ("creme brulee?", "Pastries!"),  # accents either way
        ("Crème Brûlée", "Pastries!"),
        ("croissants", "Pardon?"),  # whole words only
        ("menu please", "Pardon?"),  # the default: the whole message
        ("Menu", "Bread or pastries?"),
        ("a coffee, please", "Coffee!"),  # a state's rule with match = "word"
        ("tea please", "Pardon?"),  # a rule with the default
        ("bread and a croissant", "Pastries!"),  # both match: the first keyword in the file wins
    ],
)
def test_word_matching(flow: CompiledFlow, text: str, reply: str) -> None:
    assert reply_to(flow, text) == reply


def test_global_keywords_come_before_a_states_rules(flow: CompiledFlow) -> None:
    assert reply_to(flow, "coffee with a croissant") == "Pastries!"


def test_normalisation() -> None:
    assert normalised_words("Crème Brûlée, please!") == ("creme", "brulee", "please")
    assert contains_phrase(("can", "we", "start", "over"), ("start", "over"))
    assert not contains_phrase(("start", "now", "over"), ("start", "over"))
    assert not contains_phrase(("a",), ())


def test_the_checker_names_the_allowed_values(tmp_path: Path) -> None:
    path = tmp_path / "f.toml"
    path.write_text(FLOW.replace('match = "word"\ngoto = "bread"', 'match = "words"\ngoto = "bread"'))
    compiled, diagnostics = load_flow(path)
    assert compiled is None
    line = FLOW.splitlines().index('match = "word"', FLOW.splitlines().index('words = ["bread"]')) + 1
    want = "'match' must be \"message\" or \"word\", got 'words'"
    assert [(d.line, d.message) for d in diagnostics] == [(line, want)]
