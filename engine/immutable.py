"""`@immutable`: a dataclass whose fields the type checker refuses to assign, for the records made once or more per
event (the parsed event, the inbox row, the flow's input, snapshot, result and replies, the policy gate's facts,
outgoing message and decision).

`@dataclass(frozen=True)` enforces that at run time, at a price: its `__init__` sets each field through
`object.__setattr__`, ~1.3k instructions a field (the parsed event, 11 fields: 20k instead of 6k), ~75k of the event
loop's ~1,400k instructions a turn for these records (docs/architecture.md, Performance). Here the type checker (mypy,
strict on engine/ in CI) enforces it instead: `frozen_default=True` makes every field read-only to it, while the class
is built as a plain dataclass. Equality and hashing stay those of a frozen dataclass (`unsafe_hash=True` hashes the
compared fields, as `frozen=True` does), and `dataclasses.replace` makes changed copies as before."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform, overload

T = TypeVar("T")


@overload
def immutable(cls: type[T], /) -> type[T]: ...
@overload
def immutable(*, kw_only: bool = False) -> Callable[[type[T]], type[T]]: ...
@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def immutable(cls: type[T] | None = None, /, *, kw_only: bool = False) -> Any:
    def build(plain: type[T]) -> type[T]:
        return dataclasses.dataclass(plain, kw_only=kw_only, unsafe_hash=True)

    return build if cls is None else build(cls)
