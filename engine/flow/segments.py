"""Segment expressions: a tiny boolean language over a user's tags and variables.

    likes_white and not churned
    any(likes_red, likes_white)
    vars.size == "42" or (vip and not vars.unsubscribed)

Grammar (precedence low to high):
    expr     := and_expr ("or" and_expr)*
    and_expr := not_expr ("and" not_expr)*
    not_expr := "not" not_expr | primary
    primary  := "(" expr ")" | ("any" | "all" | "none") "(" expr ("," expr)* ")"
              | "vars." NAME [("==" | "!=") literal] | "true" | "false" | TAG
A bare TAG is true when the user has that tag; `vars.NAME` alone is true when the variable is set and truthy.
Parsed once into a tree of small classes and evaluated by walking it: never `eval`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

Scalar = str | int | float | bool


class SegmentError(ValueError):
    """A segment expression that does not parse. `column` is 1-based within the expression."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"{message} (at column {column})")
        self.column = column


class Segment(Protocol):
    def matches(self, tags: frozenset[str] | set[str], variables: Mapping[str, object]) -> bool: ...


@dataclass(frozen=True)
class Tag:
    name: str

    def matches(self, tags: frozenset[str] | set[str], variables: Mapping[str, object]) -> bool:
        return self.name in tags


@dataclass(frozen=True)
class Constant:
    value: bool

    def matches(self, tags: frozenset[str] | set[str], variables: Mapping[str, object]) -> bool:
        return self.value


@dataclass(frozen=True)
class Variable:
    name: str
    op: str | None = None
    literal: Scalar | None = None

    def matches(self, tags: frozenset[str] | set[str], variables: Mapping[str, object]) -> bool:
        value = variables.get(self.name)
        if self.op is None:
            return bool(value)
        equal = value == self.literal or (value is not None and str(value) == str(self.literal))
        return equal if self.op == "==" else not equal


@dataclass(frozen=True)
class Not:
    operand: Segment

    def matches(self, tags: frozenset[str] | set[str], variables: Mapping[str, object]) -> bool:
        return not self.operand.matches(tags, variables)


@dataclass(frozen=True)
class Combine:
    """`and`/`all` (every operand), `or`/`any` (some operand), `none` (no operand)."""

    kind: str
    operands: tuple[Segment, ...]

    def matches(self, tags: frozenset[str] | set[str], variables: Mapping[str, object]) -> bool:
        results = (o.matches(tags, variables) for o in self.operands)
        if self.kind == "all":
            return all(results)
        if self.kind == "any":
            return any(results)
        return not any(results)


ALWAYS: Segment = Constant(True)

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>"(?:[^"\\]|\\.)*"|'[^']*')
    | (?P<number>-?\d+(?:\.\d+)?)
    | (?P<op>==|!=|\(|\)|,|\.)
    | (?P<name>[A-Za-z_][A-Za-z0-9_-]*)
    | (?P<bad>\S)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "true", "false", "vars", "any", "all", "none"}


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    column: int


def _tokenize(source: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(source):
        m = _TOKEN.match(source, pos)
        if m is None or m.end() == pos:  # only trailing whitespace left
            break
        kind = m.lastgroup or "bad"
        text = m.group(kind)
        column = m.start(kind) + 1
        if kind == "bad":
            raise SegmentError(f"unexpected character {text!r}", column)
        tokens.append(_Tok(kind, text, column))
        pos = m.end()
    tokens.append(_Tok("end", "", len(source) + 1))
    return tokens


MAX_NESTING = 32  # parentheses, any(...) and `not`s inside each other: deeper is a mistake, and the parser recurses


class _Parser:
    def __init__(self, source: str) -> None:
        self.tokens = _tokenize(source)
        self.pos = 0
        self.depth = 0

    def enter(self, tok: _Tok) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise SegmentError(f"nested more than {MAX_NESTING} levels deep", tok.column)

    def peek(self) -> _Tok:
        return self.tokens[self.pos]

    def take(self) -> _Tok:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def expect(self, text: str) -> None:
        tok = self.take()
        if tok.text != text:
            found = repr(tok.text) if tok.kind != "end" else "the end of the expression"
            raise SegmentError(f"expected {text!r} but found {found}", tok.column)

    def parse(self) -> Segment:
        if self.peek().kind == "end":
            raise SegmentError("empty expression", 1)
        tree = self.or_expr()
        tok = self.peek()
        if tok.kind != "end":
            raise SegmentError(f"unexpected {tok.text!r}; join conditions with 'and' or 'or'", tok.column)
        return tree

    def or_expr(self) -> Segment:
        operands = [self.and_expr()]
        while self.peek().text == "or":
            self.take()
            operands.append(self.and_expr())
        return operands[0] if len(operands) == 1 else Combine("any", tuple(operands))

    def and_expr(self) -> Segment:
        operands = [self.not_expr()]
        while self.peek().text == "and":
            self.take()
            operands.append(self.not_expr())
        return operands[0] if len(operands) == 1 else Combine("all", tuple(operands))

    def not_expr(self) -> Segment:
        if self.peek().text == "not":
            self.enter(self.take())
            operand = self.not_expr()
            self.depth -= 1
            return Not(operand)
        return self.primary()

    def primary(self) -> Segment:
        tok = self.take()
        if tok.text == "(":
            self.enter(tok)
            inner = self.or_expr()
            self.expect(")")
            self.depth -= 1
            return inner
        if tok.text in ("any", "all", "none"):
            self.enter(tok)
            self.expect("(")
            operands = [self.or_expr()]
            while self.peek().text == ",":
                self.take()
                operands.append(self.or_expr())
            self.expect(")")
            self.depth -= 1
            return Combine(tok.text, tuple(operands))
        if tok.text in ("true", "false"):
            return Constant(tok.text == "true")
        if tok.text == "vars":
            return self.variable()
        if tok.kind == "name" and tok.text not in _KEYWORDS:
            return Tag(tok.text)
        found = repr(tok.text) if tok.kind != "end" else "the end of the expression"
        raise SegmentError(f"expected a tag, 'vars.NAME', 'not', 'any(...)' or '(' but found {found}", tok.column)

    def variable(self) -> Segment:
        self.expect(".")
        name = self.take()
        if name.kind != "name":
            raise SegmentError("expected a variable name after 'vars.'", name.column)
        if self.peek().text not in ("==", "!="):
            return Variable(name.text)
        op = self.take().text
        lit = self.take()
        literal: Scalar
        if lit.kind == "string":
            literal = lit.text[1:-1]
        elif lit.kind == "number" and len(lit.text) <= 30:
            literal = float(lit.text) if "." in lit.text else int(lit.text)
        elif lit.text in ("true", "false"):
            literal = lit.text == "true"
        else:
            raise SegmentError("expected a quoted string, a number (30 characters at most), true or false", lit.column)
        return Variable(name.text, op, literal)


def parse_segment(source: str) -> Segment:
    """Parse an expression; raise SegmentError naming the column of the first problem."""
    return _Parser(source).parse()


def tags_in(segment: Segment) -> set[str]:
    """Every tag an expression mentions (the checker uses it to spot tags no flow ever sets)."""
    if isinstance(segment, Tag):
        return {segment.name}
    if isinstance(segment, Not):
        return tags_in(segment.operand)
    if isinstance(segment, Combine):
        found: set[str] = set()
        for operand in segment.operands:
            found |= tags_in(operand)
        return found
    return set()
