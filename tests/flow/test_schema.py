"""The shipped JSON Schema agrees with the loader: generated from the same table, and both judge files alike."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import jsonschema
import pytest

from engine.flow.loader import build_spec
from engine.flow.shapes import json_schema

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "engine" / "flow" / "flow.schema.json"


def test_shipped_schema_is_current() -> None:
    assert json.loads(SHIPPED.read_text()) == json_schema(), (
        "engine/flow/flow.schema.json is stale: run `otnflow schema > engine/flow/flow.schema.json`"
    )


def test_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(json_schema())


@pytest.mark.parametrize("path", sorted((ROOT / "flows").glob("*.toml")), ids=lambda p: p.stem)
def test_example_flows_validate_against_the_schema(path: Path) -> None:
    jsonschema.validate(tomllib.loads(path.read_text()), json_schema())


SHAPE_ERRORS = [
    '[flow]\nname = "x"\nstart = "a"\n[states.a]\nsay = "hi"\nqiuck_replies = []\n',
    '[flow]\nname = "x"\nstart = "a"\n[states.a]\nend = "yes"\n',
    '[flow]\nname = "x"\n[states.a]\nsay = "hi"\n',
    '[flow]\nname = "x"\nstart = "a"\n[states.a]\nquick_replies = [{ goto = "a" }]\n',
    '[flow]\nname = "x"\nstart = "a"\n[states.a]\nsay = "a"\n[topics.t]\ntitle = "t"\nparams = "p"\n',
]


@pytest.mark.parametrize("text", SHAPE_ERRORS)
def test_schema_and_loader_reject_the_same_shape_errors(text: str) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(tomllib.loads(text), json_schema())
    _, report = build_spec(text, "x.toml")
    assert any(d.is_error for d in report.diagnostics)
