"""JSON on the hot paths of a turn (the webhook body, the stored event, the user record, outbox rows, Send API
bodies and answers): orjson, several times faster than the standard library (docs/architecture.md, Performance).
What orjson refuses or reads otherwise (integers over 64 bits, which it reads as floats; lone surrogates, NaN,
non-UTF-8 input) goes to the standard library, so every value is read and written as before: orjson only makes the
common case cheaper."""

from __future__ import annotations

import json
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


def orjson_writes(value: Any) -> bool:
    """True when orjson writes `value`: then none of its strings holds a lone surrogate (which UTF-8 cannot encode),
    known in well under a microsecond. False only says orjson refused it (a lone surrogate, an integer over 64 bits,
    nesting over 254 levels): ask the standard library."""
    try:
        orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError
        return False
    return True


#: Every byte of JSON text mapped to "0" (a digit), "-" (itself) or " " (anything else): in the mapped text, a run
#: of 20 digits, or a minus and 19, is maybe an integer outside 64 bits, which orjson would read as a float (or a long
#: string of digits, which the standard library reads just as well). `bytes.translate` and `in` run in C: ~1 us for a
#: webhook body where a regular expression took ~8 us (docs/architecture.md, Performance).
_DIGIT_RUNS = bytes(48 if 48 <= b <= 57 else 45 if b == 45 else 32 for b in range(256))
_OVER_64_BITS = (b"0" * 20, b"-" + b"0" * 19)


def _maybe_over_64_bits(text: str | bytes) -> bool:
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    digits = raw.translate(_DIGIT_RUNS)
    return _OVER_64_BITS[0] in digits or _OVER_64_BITS[1] in digits


def loads(text: str | bytes, strict: Callable[[Any], Any] = json.loads) -> Any:
    """The value of JSON text. What orjson refuses or could read otherwise goes to `strict` (the standard library by
    default), which reads it, or raises, as it always did."""
    if not _maybe_over_64_bits(text):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return strict(text)
