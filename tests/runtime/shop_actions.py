"""Actions the action tests register through config.toml, as a shop would."""

from __future__ import annotations

from engine.actions import ActionContext, action


@action("sku")
async def check_stock(context: ActionContext) -> int:
    """The real one would ask the shop's stock system; the tests stub it or read this fixed answer."""
    return {"SL13": 3}.get(str(context.args["sku"]), 0)
