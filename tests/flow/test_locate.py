from __future__ import annotations

import tomli

from engine.flow.locate import Locator

DOC = '''# comment with [brackets] and "quotes"
[flow]
name = "x [not a table]"
start = 'a'

[states."sold out"]
say = """multi
line = "not a key"
[not.a.table]
"""
quick_replies = [
  { title = "A, B", goto = "a" },   # comment { }
  {
    title = "C",
    goto = "c"
  },
]
set.size = "42"

[[states.a.on]]
regex = "\\\\d+ \\" ]"
goto = "a"

[[states.a.on]]
keyword = ["x", "y"]
goto = "b"
'''


def test_locator_finds_keys_through_strings_inline_tables_and_arrays_of_tables() -> None:
    tomli.loads(DOC)  # the scanner only ever sees valid TOML
    lines = Locator(DOC)
    assert lines.line(("flow",)) == 2
    assert lines.line(("flow", "start")) == 4
    assert lines.line(("states", "sold out")) == 6
    assert lines.line(("states", "sold out", "say")) == 7
    assert lines.line(("states", "sold out", "quick_replies")) == 11
    assert lines.line(("states", "sold out", "quick_replies", 0, "goto")) == 12
    assert lines.line(("states", "sold out", "quick_replies", 1)) == 13
    assert lines.line(("states", "sold out", "quick_replies", 1, "goto")) == 15
    assert lines.line(("states", "sold out", "set", "size")) == 18
    assert lines.line(("states", "a", "on", 0, "goto")) == 22
    assert lines.line(("states", "a", "on", 1)) == 24
    assert lines.line(("states", "a", "on", 1, "keyword", 1)) == 25
    # an unknown path falls back to the nearest enclosing key
    assert lines.line(("states", "a", "on", 1, "nope")) == 24
    assert lines.line(("nothing",)) == 1
