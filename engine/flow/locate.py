"""Where each key of a TOML document stands: a map from key path to line number.

`tomllib`/`tomli` give values but no positions, and no maintained Python TOML library exposes per-key lines, so
this is a small structural scanner. It runs only on text that already parsed, so it need not diagnose syntax: it
tracks table headers, array-of-table indexes, dotted keys, inline tables and arrays, and skips over strings and
comments.
"""

from __future__ import annotations

import bisect
import contextlib
import re

from .diagnostics import KeyPath

_BARE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


class _Scanner:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.lines: dict[KeyPath, int] = {}
        self.aot_counts: dict[KeyPath, int] = {}
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    # -- low level -----------------------------------------------------------------------------------------
    def line(self) -> int:
        return bisect.bisect_right(self.line_starts, self.i)

    def peek(self, n: int = 1) -> str:
        return self.s[self.i : self.i + n]

    def skip_blank(self, newlines: bool) -> None:
        while self.i < len(self.s):
            c = self.s[self.i]
            if c in " \t\r" or (newlines and c == "\n"):
                self.i += 1
            elif c == "#":
                end = self.s.find("\n", self.i)
                self.i = len(self.s) if end < 0 else end
            else:
                return

    def skip_string(self) -> str:
        """Skip a string of any of TOML's four kinds; return its (unescaped enough for keys) content."""
        quote = self.s[self.i]
        if self.peek(3) == quote * 3:
            end = self.s.find(quote * 3, self.i + 3)
            while end >= 0 and self.s[end + 3 : end + 4] == quote:  # up to two quotes may close the content
                end += 1
            if quote == '"':
                while end >= 0 and _escaped(self.s, end):
                    end = self.s.find(quote * 3, end + 1)
            content = self.s[self.i + 3 : end]
            self.i = end + 3
            return content
        j = self.i + 1
        while self.s[j] != quote:
            j += 2 if (quote == '"' and self.s[j] == "\\") else 1
        content = self.s[self.i + 1 : j]
        self.i = j + 1
        return content

    def key(self) -> KeyPath:
        parts: list[str] = []
        while True:
            self.skip_blank(newlines=False)
            if self.peek() in ('"', "'"):
                parts.append(self.skip_string())
            else:
                start = self.i
                while self.i < len(self.s) and self.s[self.i] in _BARE:
                    self.i += 1
                parts.append(self.s[start : self.i])
            self.skip_blank(newlines=False)
            if self.peek() == ".":
                self.i += 1
                continue
            return tuple(parts)

    # -- structure -----------------------------------------------------------------------------------------
    def document(self) -> None:
        table: KeyPath = ()
        while True:
            self.skip_blank(newlines=True)
            if self.i >= len(self.s):
                return
            line = self.line()
            if self.peek(2) == "[[":
                self.i += 2
                path = self.key()
                self.i += 2
                index = self.aot_counts.get(path, 0)
                self.aot_counts[path] = index + 1
                table = (*path, index)
                self.record(path, line)
                self.record(table, line)
            elif self.peek() == "[":
                self.i += 1
                table = self.key()
                self.i += 1
                self.record(table, line)
            else:
                self.key_value(table)

    def key_value(self, table: KeyPath) -> None:
        line = self.line()
        path = (*table, *self.key())
        self.record(path, line)
        self.skip_blank(newlines=False)
        self.i += 1  # '='
        self.skip_blank(newlines=False)
        self.value(path)

    def value(self, path: KeyPath) -> None:
        c = self.peek()
        if c in ('"', "'"):
            self.skip_string()
        elif c == "[":
            self.i += 1
            index = 0
            while True:
                self.skip_blank(newlines=True)
                if self.peek() == "]":
                    self.i += 1
                    return
                if self.peek() == ",":
                    self.i += 1
                    continue
                self.record((*path, index), self.line())
                self.value((*path, index))
                index += 1
        elif c == "{":
            self.i += 1
            while True:
                self.skip_blank(newlines=True)
                if self.peek() == "}":
                    self.i += 1
                    return
                if self.peek() == ",":
                    self.i += 1
                    continue
                self.key_value(path)
        else:
            while self.i < len(self.s) and self.s[self.i] not in ",]}\n#":
                self.i += 1

    def record(self, path: KeyPath, line: int) -> None:
        self.lines.setdefault(path, line)
        for cut in range(1, len(path)):  # a dotted key also "defines" its parents there
            self.lines.setdefault(path[:cut], line)


def _escaped(s: str, pos: int) -> bool:
    backslashes = 0
    while pos - 1 - backslashes >= 0 and s[pos - 1 - backslashes] == "\\":
        backslashes += 1
    return backslashes % 2 == 1


class Locator:
    """Answers 'which line is this key on?' for one document, falling back to the nearest enclosing key."""

    def __init__(self, text: str) -> None:
        scanner = _Scanner(text)
        with contextlib.suppress(IndexError, ValueError):  # a construct it does not know: keep what it found
            scanner.document()
        self._lines = scanner.lines

    def line(self, path: KeyPath) -> int:
        for cut in range(len(path), 0, -1):
            found = self._lines.get(path[:cut])
            if found is not None:
                return found
        return 1
