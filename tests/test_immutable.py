"""`@immutable` records (engine/immutable.py): the type checker refuses to assign their fields, as it does for a
frozen dataclass, and they compare, hash and copy as frozen dataclasses do; only the run-time check is gone (it cost
~1.3k instructions a field on every record made per event: docs/architecture.md, Performance)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from mypy import api as mypy_api

from engine.flow import Arrival, Reply, Snapshot, StepResult, UserInput
from engine.messenger.client import SendResult
from engine.messenger.events import EventKind, InboundEvent
from engine.policy import Decision, Facts, Outgoing
from engine.store import StoredEvent

ROOT = Path(__file__).resolve().parents[1]
RECORDS = [
    InboundEvent,
    StoredEvent,
    Facts,
    Outgoing,
    Decision,
    Reply,
    UserInput,
    Snapshot,
    StepResult,
    Arrival,
    SendResult,
]


def test_the_type_checker_refuses_to_assign_any_field_of_a_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = ["from __future__ import annotations"]
    for record in RECORDS:
        lines.append(f"from {record.__module__} import {record.__name__}")
    for record in RECORDS:
        first = dataclasses.fields(record)[0].name
        lines += [f"def assign_{record.__name__}(r: {record.__name__}) -> None:", f"    r.{first} = r.{first}"]
    snippet = tmp_path / "assigns.py"
    snippet.write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(ROOT)  # the engine package as mypy finds it in CI
    report, errors, status = mypy_api.run(
        [str(snippet), "--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache")]
    )
    assert status == 1, report + errors
    for record in RECORDS:
        first = dataclasses.fields(record)[0].name
        assert f'Property "{first}" defined in "{record.__name__}" is read-only' in report, report
    assert f"Found {len(RECORDS)} errors in 1 file" in report, report


def test_records_compare_hash_and_copy_as_frozen_dataclasses() -> None:
    event = InboundEvent(key="m1", user_id="1", page_id="2", timestamp=3, kind=EventKind.MESSAGE, raw={"a": 1})
    same_but_raw = dataclasses.replace(event, raw={"b": 2})  # `raw` is not compared (compare=False)
    assert event == same_but_raw and hash(event) == hash(same_but_raw) and len({event, same_but_raw}) == 1
    changed = dataclasses.replace(event, text="hi")
    assert changed != event and changed.text == "hi" and event.text is None
    assert Facts(tokens_held=1) == Facts(tokens_held=1) and hash(Facts(tokens_held=1)) == hash(Facts(tokens_held=1))
    assert Facts(tokens_held=1) != Facts(tokens_held=2)
    with pytest.raises(TypeError, match="unhashable"):  # a compared dict field: unhashable, as when frozen
        hash(Snapshot(variables={"a": 1}))
