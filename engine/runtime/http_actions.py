"""Calling an HTTP action (engine/http_actions.py declares it) through the app's one aiohttp session: the request
rendered from the action's arguments and its named environment variables, the event's idempotency key in the
`Idempotency-Key` header, retries with full-jitter backoff after a 5xx answer or a connection error (never after a
4xx: the backend said no), the result picked by the action's JSONPath.

What is logged names the action, the method, the host, the status or the error's type: never a header, a body
or a URL's query, which may carry a secret.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Mapping
from typing import Any

import aiohttp
import jsonpath
from jinja2 import UndefinedError
from yarl import URL

from ..actions import ActionContext, ActionFailed
from ..http_actions import HttpAction, HttpRequest, RequestTemplates
from ..messenger.client import Sleep, full_jitter

log = logging.getLogger("otnflow.actions")
#: The longest wait between two attempts, whatever the backoff doubles to.
MAX_BACKOFF_SECONDS = 5.0


class HttpActionCaller:
    """One HTTP action as an action function: `await caller(context)` returns the picked result or raises
    ActionFailed with a message safe to log."""

    def __init__(
        self,
        action: HttpAction,
        session: aiohttp.ClientSession,
        env_values: Mapping[str, str],
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.action = action
        self.otnflow_required_args = action.args  # what `otnflow check` asks of a state (engine/actions.py)
        self._session = session
        self._env = {k: v for k, v in env_values.items() if k in action.env}
        self._templates = RequestTemplates(action)
        self._result = jsonpath.compile(action.result) if action.result else None
        self._sleep = sleep
        self._rng = rng or random.Random()
        unset = sorted(action.env - set(self._env))
        if unset:  # the names only: a start-up line an operator can act on
            log.warning("action %r: %s not set in the environment: its calls will fail", action.name, ", ".join(unset))

    async def __call__(self, context: ActionContext) -> Any:
        request = self.render(context)
        where = f"{request.method} {URL(request.url).host or '?'}"
        attempts = self.action.retries + 1
        problem = ""
        for attempt in range(1, attempts + 1):
            try:
                status, answer = await self._attempt(request)
            except (TimeoutError, aiohttp.ClientError) as err:
                problem = type(err).__name__
            else:
                if 200 <= status < 300:
                    return self.pick(answer)
                problem = f"HTTP {status}"
                if status < 500:  # the backend refused this call: asking again changes nothing
                    raise ActionFailed(f"action '{self.action.name}': {where} answered {problem}")
            if attempt < attempts:
                delay = full_jitter(attempt, self.action.backoff_seconds, MAX_BACKOFF_SECONDS, self._rng)
                log.info(
                    "action %r: %s attempt %d/%d failed (%s); retrying in %.2fs",
                    self.action.name,
                    where,
                    attempt,
                    attempts,
                    problem,
                    delay,
                )
                await self._sleep(delay)
        raise ActionFailed(f"action '{self.action.name}': {where} failed {attempts} time(s), last: {problem}")

    def render(self, context: ActionContext) -> HttpRequest:
        names = {
            "args": dict(context.args),
            "env": self._env,
            "user_id": context.user_id,
            "idempotency_key": context.idempotency_key,
        }
        try:
            return self._templates.render(names)
        except UndefinedError as err:  # an environment variable the action names is not set, or a missing argument
            raise ActionFailed(f"action '{self.action.name}': cannot build the request: {err.message}") from None

    async def _attempt(self, request: HttpRequest) -> tuple[int, Any]:
        timeout = aiohttp.ClientTimeout(total=self.action.timeout_seconds)
        body = json.dumps(request.body).encode() if request.body is not None else None
        headers = {**request.headers, **({"Content-Type": "application/json"} if body is not None else {})}
        async with self._session.request(
            request.method, request.url, data=body, headers=headers, timeout=timeout
        ) as response:
            text = await response.text()
            if not 200 <= response.status < 300:
                return response.status, None
            try:
                return response.status, json.loads(text) if text else None
            except json.JSONDecodeError:
                raise ActionFailed(
                    f"action '{self.action.name}': the answer (HTTP {response.status}) is not JSON"
                ) from None

    def pick(self, answer: Any) -> Any:
        """The result: the whole answer, or what the JSONPath selects (one match: itself; several: a list)."""
        if self._result is None:
            return answer
        found = self._result.findall(answer) if isinstance(answer, dict | list) else []
        if not found:
            raise ActionFailed(f"action '{self.action.name}': result {self.action.result} matched nothing")
        return found[0] if len(found) == 1 else found
