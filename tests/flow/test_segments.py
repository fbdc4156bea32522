from __future__ import annotations

import pytest

from engine.flow.segments import SegmentError, parse_segment, tags_in


@pytest.mark.parametrize(
    ("expression", "tags", "variables", "expected"),
    [
        ("likes_white", {"likes_white"}, {}, True),
        ("likes_white", {"likes_red"}, {}, False),
        ("likes_white and not churned", {"likes_white"}, {}, True),
        ("likes_white and not churned", {"likes_white", "churned"}, {}, False),
        ("any(likes_red, likes_white)", {"likes_red"}, {}, True),
        ("any(likes_red, likes_white)", set(), {}, False),
        ("all(a, b, c)", {"a", "b"}, {}, False),
        ("all(a, b, c)", {"a", "b", "c"}, {}, True),
        ("none(a, b)", {"c"}, {}, True),
        ("none(a, b)", {"b"}, {}, False),
        ("a or b and c", {"a"}, {}, True),  # and binds tighter than or
        ("(a or b) and c", {"a"}, {}, False),
        ("not not a", {"a"}, {}, True),
        ('vars.size == "42"', set(), {"size": "42"}, True),
        ("vars.size == 42", set(), {"size": "42"}, True),  # numbers compare with text the user typed
        ('vars.size != "42"', set(), {"size": "43"}, True),
        ("vars.vip", set(), {"vip": True}, True),
        ("vars.vip", set(), {}, False),
        ("true", set(), {}, True),
        ("false or a", {"a"}, {}, True),
    ],
)
def test_segment_evaluates(expression: str, tags: set[str], variables: dict[str, object], expected: bool) -> None:
    assert parse_segment(expression).matches(tags, variables) is expected


@pytest.mark.parametrize(
    ("expression", "message", "column"),
    [
        ("", "empty expression", 1),
        ("a and", "expected a tag", 6),
        ("a b", "unexpected 'b'", 3),
        ("any(a, b", "expected ')'", 9),
        ("a && b", "unexpected character '&'", 3),
        ("vars.", "expected a variable name", 6),
        ("vars.size == likes", "expected a quoted string", 14),
        ("__import__('os')", "unexpected '('", 11),
        # found by fuzzing: these raised RecursionError / a bare ValueError instead of a located error
        ("(" * 300 + "a" + ")" * 300, "nested more than 32 levels deep", 33),
        ("not " * 2000 + "a", "nested more than 32 levels deep", 129),
        ("any(" * 40 + "a" + ")" * 40, "nested more than 32 levels deep", 129),
        ("vars.n == " + "9" * 5000, "a number (30 characters at most)", 11),
    ],
)
def test_segment_errors_name_the_column(expression: str, message: str, column: int) -> None:
    with pytest.raises(SegmentError) as caught:
        parse_segment(expression)
    assert message in str(caught.value)
    assert caught.value.column == column


def test_tags_in_lists_every_tag_mentioned() -> None:
    assert tags_in(parse_segment("a and not any(b, vars.x, c)")) == {"a", "b", "c"}
