"""The sneaker shop's Python action (config.toml `[actions] hold_pair = "shop.actions:hold_pair"`): holds
a pair in the buyer's size for a few minutes, as a shop's reservation system would.

At least once: after a crash the same event runs the action again, with the same idempotency key. The hold is keyed
by it, so a second call for the same event finds the first hold instead of holding a second pair.
"""

from __future__ import annotations

import hashlib
from typing import Any

from engine.actions import ActionContext, ActionFailed, action

HOLD_MINUTES = 15
SIZES = range(35, 50)
#: The holds made so far, by idempotency key (a real shop keeps them in its own database).
HOLDS: dict[str, dict[str, Any]] = {}


@action("size")
async def hold_pair(context: ActionContext) -> dict[str, Any]:
    """{"code": ..., "minutes": 15} for a pair in `size`; ActionFailed for a size the shop does not make."""
    size = str(context.args["size"])
    if not size.isdigit() or int(size) not in SIZES:
        raise ActionFailed(f"hold_pair: no size {size!r}")
    if context.idempotency_key not in HOLDS:
        digest = hashlib.sha256(context.idempotency_key.encode()).hexdigest()[:6].upper()
        HOLDS[context.idempotency_key] = {"code": f"SL13-{size}-{digest}", "minutes": HOLD_MINUTES}
    return HOLDS[context.idempotency_key]
