"""Request bodies checked against JSON Schemas before a handler looks at them: a bad body is a 400 that names
the field, never a 500.

The admin API's schemas live in its OpenAPI document (`openapi.json`, served at /api/openapi.json); the
playground keeps its own few next to its routes. Both go through `checked_body`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from aiohttp import web
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

MAX_MESSAGE = 300
OPENAPI_URI = "urn:otnflow:admin-api"  # how schemas here refer to the OpenAPI document's components


class BadBody(Exception):
    """The request body cannot be used; `field` names the part at fault ('' for the body as a whole)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def response(self) -> web.Response:
        body = {"error": self.message, **({"field": self.field} if self.field else {})}
        return web.json_response(body, status=400)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(raw: bytes) -> Any:
    """Strict JSON: UTF-8, and no NaN or Infinity (Python's json accepts them; no other JSON parser does)."""
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise BadBody(f"body must be JSON: {err}"[:MAX_MESSAGE]) from None


def _field(error: ValidationError) -> str:
    """Dotted path of the value at fault; for a missing or unexpected property, that property."""
    path = ".".join(str(part) for part in error.absolute_path)
    extra: list[str] = []
    if error.validator == "required":
        extra = [str(error.message).split("'")[1]]
    elif error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        allowed = error.schema.get("properties", {}) if isinstance(error.schema, Mapping) else {}
        extra = sorted(str(key) for key in error.instance if key not in allowed)[:1]
    return ".".join(filter(None, [path, *extra]))


def problem(schema: Mapping[str, Any], instance: Any) -> BadBody | None:
    """The most relevant way `instance` breaks `schema`, as a BadBody naming the field; None when it fits."""
    error = best_match(_validator(json.dumps(schema, sort_keys=True)).iter_errors(instance))
    if error is None:
        return None
    field = _field(error)
    if error.validator == "required":
        return BadBody(f"'{field}' is required", field)
    if error.validator == "additionalProperties":
        return BadBody(f"'{field}' is not a known field"[:MAX_MESSAGE], field)
    what = f"'{field}'" if field else "the body"
    return BadBody(f"{what}: {error.message}"[:MAX_MESSAGE], field)


@cache
def _validator(schema_json: str) -> Draft202012Validator:
    schema = json.loads(schema_json)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=_registry())


@cache
def _registry() -> Registry[Any]:
    document = Resource.from_contents(openapi_document(), default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(OPENAPI_URI, document)
    return registry


async def checked_body(request: web.Request, schema: Mapping[str, Any]) -> dict[str, Any]:
    """The request's JSON object, checked against `schema`; BadBody (answer 400 with it) otherwise."""
    body = parse_json(await request.read())
    found = problem(schema, body)
    if found is not None:
        raise found
    if not isinstance(body, dict):  # every schema here describes an object; say so even if one forgets
        raise BadBody("the body must be a JSON object")
    return body


@cache
def openapi_document() -> dict[str, Any]:
    """The admin API's OpenAPI 3.1 document, shipped as package data."""
    text = resources.files("engine.web").joinpath("openapi.json").read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def api_schema(name: str) -> dict[str, Any]:
    """A schema of the OpenAPI document's components, by reference (so its own $refs resolve)."""
    if name not in openapi_document()["components"]["schemas"]:
        raise KeyError(f"no schema {name} in openapi.json")
    return {"$ref": f"{OPENAPI_URI}#/components/schemas/{name}"}
