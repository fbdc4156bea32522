"""Hypothesis strategies for the parsers' property tests: TOML documents that are random, or a real file mutated
(values swapped for any TOML value, keys dropped or added, lines dropped, repeated or swapped), and the settings
they run under: bounded and derandomized in CI, OTNFLOW_FUZZ=long for a long random exploration."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import tomli
import tomli_w
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from engine.flow.shapes import SHAPES as FLOW_SHAPES
from engine.testing.conversations import SHAPES as CONVERSATION_SHAPES

LONG = os.environ.get("OTNFLOW_FUZZ") == "long"
FUZZ = (
    settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    if LONG
    else settings(max_examples=120, deadline=None, derandomize=True, database=None)
)

KNOWN_KEYS = sorted({key for table in [*FLOW_SHAPES.values(), *CONVERSATION_SHAPES.values()] for key in table})
KEYS = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(min_size=1, max_size=12))
SCALARS = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)),
    st.dates(),
    st.times(),
    st.sampled_from(
        [
            "",
            "welcome",
            "restock",
            "likes_white",
            "((a",
            "{{ user.first_name }}",
            "{% if %}",
            "25h",
            "-1d",
            "vars.x == 1",
            "not " * 40 + "a",
            "\x00",
            "../..",
            "/",
            "x" * 3000,
        ]
    ),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=12,
)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path into a parsed TOML document."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += paths(value, (*prefix, index))
    return found


def _parent(document: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        document = document[part]
    return document


@st.composite
def mutated_documents(draw: st.DrawFn, text: str) -> str:
    """A real file's document with a few mutations, written back as TOML (tomli-w's layout)."""
    document = tomli.loads(text)
    for _ in range(draw(st.integers(1, 4))):
        targets = paths(document)
        if not targets:
            break
        path = draw(st.sampled_from(targets))
        parent = _parent(document, path)
        what = draw(st.sampled_from(["replace", "replace", "drop", "add"]))
        if what == "replace":
            parent[path[-1]] = draw(VALUES)
        elif what == "drop":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(KEYS)] = draw(VALUES)
        else:
            parent.append(draw(VALUES))
    return tomli_w.dumps(document)


@st.composite
def mutated_lines(draw: st.DrawFn, text: str) -> str:
    """A real file's text, in its author's layout, with lines dropped, repeated, swapped or cut short."""
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        j = draw(st.integers(0, len(lines) - 1))
        what = draw(st.sampled_from(["drop", "repeat", "swap", "cut"]))
        if what == "drop" and len(lines) > 1:
            del lines[i]
        elif what == "repeat":
            lines.insert(j, lines[i])
        elif what == "swap":
            lines[i], lines[j] = lines[j], lines[i]
        else:
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
    return "\n".join(lines) + "\n"


def toml_files(text: str) -> st.SearchStrategy[bytes]:
    """Broken and almost-right variants of `text`, plus random documents, random text and bytes that are not
    UTF-8: a file's contents."""
    return st.one_of(
        st.one_of(
            mutated_documents(text),
            mutated_lines(text),
            st.dictionaries(KEYS, VALUES, max_size=5).map(tomli_w.dumps),
            st.text(max_size=300),
        ).map(lambda made: made.encode("utf-8")),
        st.binary(max_size=200),
    )


def assert_located(diagnostics: list[Any], file: str, contents: bytes) -> None:
    """Each finding names the file and a line within it (or another file that exists, e.g. a template the flow
    uses, and a line of it), and says something."""
    for diagnostic in diagnostics:
        named = contents if diagnostic.file == file else Path(diagnostic.file).read_bytes()
        lines = named.replace(b"\r\n", b"\n").replace(b"\r", b"\n").count(b"\n") + 1  # as read_text sees them
        assert 1 <= diagnostic.line <= lines, (diagnostic, named[:200])
        assert diagnostic.message.strip(), diagnostic
