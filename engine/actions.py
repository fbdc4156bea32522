"""Actions as their authors write them: an `async def` taking an ActionContext and returning JSON-like data,
registered by name in config.toml's `[actions]` (`check_stock = "shop.actions:check_stock"`) or by a package's
entry point group `otnflow.actions`. `engine/runtime/actions.py` runs them.

    @action("sku")  # the arguments it needs: `otnflow check` reports a state that does not pass them
    async def check_stock(context: ActionContext) -> dict[str, int]:
        return {"count": await stock_of(context.args["sku"], key=context.idempotency_key)}
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .extensions import ExtensionError, installed_entry_points, load_reference

#: The entry point group a package registers its actions under (name = "module:function").
ENTRY_POINT_GROUP = "otnflow.actions"


@dataclass(frozen=True, kw_only=True)
class ActionContext:
    """What an action is told: who, what the flow knows of them, and its rendered arguments."""

    user_id: str
    tags: frozenset[str]
    vars: Mapping[str, Any]
    idempotency_key: str  # the same on every retry of the same event: a backend can make a repeated call harmless
    args: Mapping[str, Any]


class ActionFailed(Exception):
    """An action's failure whose message is safe to log (it names what failed, never a secret): the flow's
    `on_failure` decides what follows. Any other exception is a failure too, logged by its type only."""


ActionFunction = Callable[[ActionContext], Awaitable[Any]]
F = TypeVar("F", bound=ActionFunction)


def action(*required: str) -> Callable[[F], F]:
    """Names the arguments an action needs, so `otnflow check` reports a state that does not pass them."""

    def mark(function: F) -> F:
        function.otnflow_required_args = frozenset(required)  # type: ignore[attr-defined]
        return function

    return mark


def required_args(function: ActionFunction) -> frozenset[str]:
    return frozenset(getattr(function, "otnflow_required_args", frozenset()))


def import_action(name: str, reference: str) -> ActionFunction:
    """`module:function` -> the async function, or ExtensionError naming the action."""
    try:
        function = load_reference(reference)
    except ExtensionError as err:
        raise ExtensionError(f"action '{name}': {err}") from None
    if not asyncio.iscoroutinefunction(function):
        raise ExtensionError(f"action '{name}' = {reference!r}: must be an 'async def' function")
    return function  # type: ignore[no-any-return]


def load_actions(declared: Mapping[str, str]) -> dict[str, ActionFunction]:
    """Actions registered by installed packages (entry point group `otnflow.actions`), then those config.toml's
    `[actions]` names (which win on a name both give)."""
    found = {point.name: point.value for point in installed_entry_points(ENTRY_POINT_GROUP)}
    return {name: import_action(name, reference) for name, reference in {**found, **declared}.items()}
