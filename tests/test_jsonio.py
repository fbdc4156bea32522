"""engine/jsonio.py: orjson on the hot paths must read and write every value as the standard library does."""

from __future__ import annotations

import json

import pytest

from engine import jsonio

VALUES = [
    {"text": "héllo 👋", "n": 1, "f": 0.1, "none": None, "list": [True, False]},
    {"big": 10**30, "neg": -(10**25)},  # over 64 bits: orjson cannot write them, nor read them as integers
    {"lone": "\ud83d"},  # a lone surrogate: orjson refuses it
    {"psid": "12345678901234567890123"},  # a long run of digits inside a string
]


@pytest.mark.parametrize("value", VALUES)
def test_dumps_then_loads_gives_the_value_back_as_the_standard_library_does(value: object) -> None:
    text = jsonio.dumps(value)
    assert json.loads(text) == value
    assert jsonio.loads(text) == value
    assert jsonio.loads(text.encode("utf-8", "surrogatepass")) == json.loads(text.encode("utf-8", "surrogatepass"))
    assert json.loads(jsonio.dumps_bytes(value).decode("utf-8", "surrogatepass")) == value


def test_a_big_integer_is_read_as_an_integer_not_a_float() -> None:
    assert jsonio.loads(b'{"timestamp": 1000000000000000000000000000000}') == {"timestamp": 10**30}
    assert type(jsonio.loads("[18446744073709551615]")[0]) is int
    # 19 digits with a minus sign can be under -2**63: orjson would read it as a float
    assert jsonio.loads(b"[-9223372036854775809, -9223372036854775808]") == [-(2**63) - 1, -(2**63)]
    assert jsonio.loads('{"t": -9999999999999999999}') == {"t": -9999999999999999999}


def test_what_neither_reads_raises_the_standard_librarys_error() -> None:
    with pytest.raises(json.JSONDecodeError, match="Expecting value"):
        jsonio.loads(b"[1,]")
    with pytest.raises(UnicodeDecodeError):
        jsonio.loads(b'"\xff"')


def test_orjson_writes_says_whether_a_value_has_no_lone_surrogate() -> None:
    assert jsonio.orjson_writes({"text": "héllo 👋", "n": [1, 2.5, None]})
    assert not jsonio.orjson_writes({"text": "x\ud83d"})
    assert not jsonio.orjson_writes({"big": 10**30})  # refused for another reason: the caller asks the stdlib
