"""HTTP actions as config.toml declares them: a method, a URL, headers and a JSON body, all jinja2 templates over
the action's arguments and the environment variables the declaration names, plus a time budget per attempt,
retries and a JSONPath that picks the result. This module only reads and checks the declaration (pure);
`engine/runtime/http_actions.py` makes the calls.

    [actions.check_stock]
    kind = "http"
    method = "GET"
    url = "{{ env.STOCK_API_URL }}/stock/{{ args.sku }}"
    headers = { Authorization = "Bearer {{ env.STOCK_API_KEY }}" }
    args = ["sku"]                             # the arguments a state must pass
    env = ["STOCK_API_URL", "STOCK_API_KEY"]   # the only environment variables its templates may read
    result = "$.available"                     # JSONPath into the answer (default: the whole answer)
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jsonpath
from jinja2 import StrictUndefined, Template
from jinja2.sandbox import SandboxedEnvironment

from .flow.templates import TemplateProblem, attribute_reads, template_reads

#: What an HTTP action's templates may read: its arguments, the environment variables it names, the user's id and
#: the event's idempotency key.
TEMPLATE_NAMES = frozenset({"args", "env", "user_id", "idempotency_key"})
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
#: The header every call carries, with the event's idempotency key (the same on every retry of that event).
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: otnflow's own secrets: no action may send them anywhere.
_OWN_SECRETS = frozenset({"OTNFLOW_APP_SECRET", "OTNFLOW_PAGE_TOKEN", "OTNFLOW_VERIFY_TOKEN", "OTNFLOW_API_TOKEN"})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEYS = (
    "kind",
    "description",
    "method",
    "url",
    "headers",
    "body",
    "args",
    "env",
    "timeout_seconds",
    "retries",
    "backoff_seconds",
    "result",
)


@dataclass(frozen=True, kw_only=True)
class HttpAction:
    """One declared HTTP action; every string in `url`, `headers` and `body` is a template."""

    name: str
    method: str = "GET"
    url: str
    headers: Mapping[str, str]
    body: Any = None  # JSON-like; None: no body
    args: frozenset[str] = frozenset()  # the arguments it needs
    env: frozenset[str] = frozenset()  # the environment variables its templates may read
    timeout_seconds: float = 2.0  # per attempt; the state's own budget bounds every attempt together
    retries: int = 2  # further attempts after a 5xx answer or a connection error (never after a 4xx)
    backoff_seconds: float = 0.2  # the first wait before a retry (full jitter, doubling)
    result: str | None = None  # JSONPath picking the result out of the answer; None: the whole answer


class HttpActionError(ValueError):
    """A declaration that cannot work: `key` is its path under the action (for the config's line)."""

    def __init__(self, key: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.key = key


def template_environment() -> SandboxedEnvironment:
    """The environment HTTP actions render in: a missing name is an error (a URL is never half-rendered)."""
    return SandboxedEnvironment(autoescape=False, undefined=StrictUndefined)


def parse_http_action(name: str, table: Mapping[str, Any]) -> HttpAction:
    """The declaration under `[actions.<name>]` (kind = "http"), or HttpActionError for its first problem."""
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise HttpActionError((unknown[0],), f"unknown key '{unknown[0]}' (known: {', '.join(_KEYS)})")
    method = _get(table, "method", str, "GET").upper()
    if method not in METHODS:
        raise HttpActionError(("method",), f"method must be one of {', '.join(METHODS)}, got {method!r}")
    url = _get(table, "url", str, "")
    if not url:
        raise HttpActionError(("url",), "an HTTP action needs a url")
    headers = _get(table, "headers", dict, {})
    if not all(isinstance(v, str) for v in headers.values()):
        raise HttpActionError(("headers",), "headers must be a table of strings")
    action = HttpAction(
        name=name,
        method=method,
        url=url,
        headers=dict(headers),
        body=table.get("body"),
        args=frozenset(_names(table, "args")),
        env=frozenset(_names(table, "env")),
        timeout_seconds=_positive(table, "timeout_seconds", 2.0),
        retries=_get(table, "retries", int, 2),
        backoff_seconds=_positive(table, "backoff_seconds", 0.2),
        result=table.get("result") if isinstance(table.get("result"), str) else None,
    )
    if not 0 <= action.retries <= 10:
        raise HttpActionError(("retries",), f"retries must be between 0 and 10, got {action.retries}")
    for variable in sorted(action.env):
        if not _ENV_NAME.fullmatch(variable):
            raise HttpActionError(("env",), f"'{variable}' is not an environment variable's name")
        if variable in _OWN_SECRETS:
            raise HttpActionError(("env",), f"{variable} is otnflow's own secret: no action may send it")
    if "result" in table and action.result is None:
        raise HttpActionError(("result",), "result must be a JSONPath string, e.g. '$.available'")
    if action.result is not None:
        try:
            jsonpath.compile(action.result)
        except jsonpath.JSONPathError as err:
            raise HttpActionError(("result",), f"result: not a JSONPath: {str(err).splitlines()[0]}") from None
    check_templates(action)
    return action


def templates(action: HttpAction) -> Iterator[tuple[tuple[str, ...], str]]:
    """Every template of the declaration, with its key path under the action."""
    yield ("url",), action.url
    for header, value in action.headers.items():
        yield ("headers", header), value
    yield from _strings(action.body, ("body",))


def check_templates(action: HttpAction) -> None:
    """Each template parses and reads only what it may: known names, declared arguments and environment
    variables (a secret not named under `env` is never read)."""
    env = template_environment()
    for key, source in templates(action):
        try:
            reads = template_reads(env, source)
            unknown = sorted(set(reads.names) - TEMPLATE_NAMES)
            if unknown:
                known = ", ".join(sorted(TEMPLATE_NAMES))
                raise HttpActionError(key, f"{'.'.join(key)} reads unknown name '{unknown[0]}' (known: {known})")
            for base, declared in (("args", action.args), ("env", action.env)):
                undeclared = sorted(set(attribute_reads(env, source, base)) - declared)
                if undeclared:
                    raise HttpActionError(
                        key,
                        f"{'.'.join(key)} reads {base}.{undeclared[0]}, which the action's `{base}` list does not "
                        f"name (it names: {', '.join(sorted(declared)) or 'nothing'})",
                    )
        except TemplateProblem as problem:
            raise HttpActionError(key, f"{'.'.join(key)}: {problem.message}") from None


@dataclass(frozen=True, kw_only=True)
class HttpRequest:
    """A call rendered for one context: what goes over the wire (the headers may hold secrets: never log them)."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: Any


class RequestTemplates:
    """An action's templates compiled once (parsing a template costs far more than rendering it); `render` builds
    one call's request. Pure."""

    def __init__(self, action: HttpAction) -> None:
        self.action = action
        self._compiled: dict[str, Template] = {source: _compiled(source) for _, source in templates(action)}

    def render(self, names: Mapping[str, Any]) -> HttpRequest:
        """The request over `names` (args, env, user_id, idempotency_key); the idempotency key travels in its
        header too. jinja2's UndefinedError for a name that is missing (an unset environment variable)."""

        def render(value: Any) -> Any:
            if isinstance(value, str):
                return self._compiled[value].render(names)
            if isinstance(value, dict):
                return {k: render(v) for k, v in value.items()}
            if isinstance(value, list):
                return [render(v) for v in value]
            return value

        action = self.action
        headers = {k: render(v) for k, v in action.headers.items()}
        headers[IDEMPOTENCY_HEADER] = str(names["idempotency_key"])
        return HttpRequest(method=action.method, url=render(action.url), headers=headers, body=render(action.body))


@functools.lru_cache(maxsize=1024)
def _compiled(source: str) -> Template:
    """One compiled template per source a process sees: a compiled template is immutable, and every server a
    process starts (a test suite starts hundreds) would otherwise parse the same few again."""
    return _RENDERING.from_string(source)


_RENDERING = template_environment()


def _strings(value: Any, key: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str]]:
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, (*key, str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, (*key, str(i)))


def _get(table: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    value = table.get(key, default)
    if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
        raise HttpActionError((key,), f"{key} must be {_KIND_NAMES[kind]}, got {value!r}")
    return value


def _positive(table: Mapping[str, Any], key: str, default: float) -> float:
    value = table.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise HttpActionError((key,), f"{key} must be a positive number, got {value!r}")
    return float(value)


def _names(table: Mapping[str, Any], key: str) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise HttpActionError((key,), f'{key} must be a list of names, e.g. ["sku"]')
    return value


_KIND_NAMES = {str: "a string", int: "an integer", dict: "a table", bool: "true or false"}
