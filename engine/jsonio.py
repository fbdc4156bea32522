"""JSON on the hot paths of a turn (the webhook body, the stored event, the user record, outbox rows, Send API
bodies and answers): orjson, several times faster than the standard library (docs/architecture.md, Performance).
What orjson refuses or reads otherwise (integers over 64 bits, which it reads as floats; lone surrogates, NaN,
non-UTF-8 input) goes to the standard library, so every value is read and written as before: orjson only makes the
common case cheaper."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import orjson


def dumps(value: Any) -> str:
    """Compact JSON text (no spaces, non-ASCII kept): what `json.dumps(value, separators=(",", ":"),
    ensure_ascii=False)` gives, modulo escapes."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError: a big integer, a lone surrogate, a key that is not a string
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def dumps_bytes(value: Any) -> bytes:
    """`dumps` as UTF-8 bytes, for an HTTP body."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":")).encode()


#: 20 digits in a row: maybe an integer over 64 bits, which orjson would read as a float (or a long string of
#: digits, which the standard library reads just as well).
_LONG_DIGITS = re.compile(r"[0-9]{20}")
_LONG_DIGITS_BYTES = re.compile(rb"[0-9]{20}")


def loads(text: str | bytes, strict: Callable[[Any], Any] = json.loads) -> Any:
    """The value of JSON text. What orjson refuses or could read otherwise goes to `strict` (the standard library by
    default), which reads it, or raises, as it always did."""
    long_digits = _LONG_DIGITS_BYTES.search(text) if isinstance(text, bytes) else _LONG_DIGITS.search(text)
    if long_digits is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return strict(text)
