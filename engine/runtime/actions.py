"""Running actions: the flow step stays pure and stops at a state's action (`StepResult.action`); the conversation
handler runs it here, with the user's lock held (the dispatcher's per-user worker) and under the state's time
budget, and hands the outcome back to `CompiledFlow.resume`. At least once: a crash after the call and before the
step's commit runs the call again when the event is retried, with the same idempotency key (docs/flow-format.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..actions import ActionContext, ActionFailed, ActionFunction, required_args
from ..flow import ActionCall, Outcome
from .metrics import Metrics

log = logging.getLogger("otnflow.actions")


@dataclass(frozen=True)
class ActionOutcome:
    outcome: Outcome
    value: Any = None  # the result on success: JSON-like data
    seconds: float = 0.0


@dataclass(frozen=True, kw_only=True)
class ActionRecord:
    """One call as a watcher sees it (the harness's `bot.action_calls`, the playground's transcript)."""

    name: str
    context: ActionContext
    outcome: Outcome
    value: Any  # the result on success, else None
    seconds: float


ActionWatcher = Callable[[ActionRecord], None]


class ActionRunner:
    """Runs registered actions under their time budget, counting outcomes and latency in /metrics."""

    def __init__(self, functions: Mapping[str, ActionFunction], metrics: Metrics | None = None) -> None:
        self.functions = dict(functions)
        self.metrics = metrics
        self.watchers: list[ActionWatcher] = []  # told of every call once it ended (tests, the playground)

    def signatures(self) -> dict[str, frozenset[str]]:
        """Each action's required arguments, for the flow checker."""
        return {name: required_args(function) for name, function in self.functions.items()}

    async def run(self, call: ActionCall, context: ActionContext) -> ActionOutcome:
        function = self.functions.get(call.name)
        started = time.perf_counter()
        outcome, value = Outcome.FAILURE, None
        if function is None:  # the checker reports it; a flow loaded without the registry can still get here
            log.warning("action %r is not registered (state %r)", call.name, call.state)
        else:
            try:
                value = await asyncio.wait_for(function(context), call.timeout_seconds)
                json.dumps(value)  # JSON-like data only: it is saved with the user
                outcome = Outcome.SUCCESS
            except TimeoutError:
                outcome = Outcome.TIMEOUT
                log.warning("action %r timed out after %ss (user %s)", call.name, call.timeout_seconds, context.user_id)
            except ActionFailed as err:  # a failure that says what failed, safely
                log.warning("action %r failed (user %s): %s", call.name, context.user_id, err)
            except Exception as err:  # the action's own failure: the flow's on_failure decides what follows
                log.warning(  # the type only: an exception's text may carry a URL or a token
                    "action %r failed (user %s): %s", call.name, context.user_id, type(err).__name__
                )
        seconds = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.action_seconds.labels(call.name).observe(seconds)
            self.metrics.actions.labels(call.name, str(outcome)).inc()
        done = ActionOutcome(outcome, value if outcome is Outcome.SUCCESS else None, seconds)
        record = ActionRecord(name=call.name, context=context, outcome=outcome, value=done.value, seconds=seconds)
        for watcher in self.watchers:
            watcher(record)
        return done
