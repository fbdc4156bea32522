"""The OTN loop's figures per topic, for `otnflow stats`, `/api/stats` and `/metrics`."""

from __future__ import annotations

import json
from typing import Any

from ..policy.gate import DAY_MS
from ..store import Backend, OtnLogged, Store
from .audience import held_requests

FIGURES = (
    "requests",
    "optins",
    "optin_rate",
    "deliveries",
    "re_requests",
    "tokens_held",
    "holders",
    "tokens_expiring_soon",
)

UNSUBSCRIBED_USERS = "unsubscribed_users"  # the key of the unsubscribed count beside the topics


async def loop_stats(store: Store, now_ms: int, soon_days: float) -> dict[str, dict[str, float]]:
    raw = await store.otn_stats(now_ms, now_ms + int(soon_days * DAY_MS))
    out: dict[str, dict[str, float]] = {}
    for topic, counts in sorted(raw.items()):
        requests = counts.get(OtnLogged.REQUEST, 0) + counts.get(OtnLogged.RE_REQUEST, 0)
        optins = counts.get(OtnLogged.OPTIN, 0)
        out[topic] = {
            "requests": requests,
            "optins": optins,
            "optin_rate": round(optins / requests, 3) if requests else 0.0,
            "deliveries": counts.get(OtnLogged.DELIVERY, 0),
            "re_requests": counts.get(OtnLogged.RE_REQUEST, 0),
            "tokens_held": counts.get("tokens_held", 0),
            "holders": counts.get("token_holders", 0),
            "tokens_expiring_soon": counts.get("tokens_expiring_soon", 0),
        }
    return out


async def stats_report(store: Store, now_ms: int, soon_days: float) -> dict[str, dict[str, Any]]:
    """`loop_stats` plus, per topic, the holders of each request (by the variables it was made with): what
    `otnflow stats` and `/api/stats` show."""
    figures: dict[str, dict[str, Any]] = dict(await loop_stats(store, now_ms, soon_days))
    for topic, values in figures.items():
        held = await held_requests(store, topic, now_ms) if values["tokens_held"] else ()
        values["by_request"] = [{"vars": dict(r.vars), "holders": r.holders} for r in held]
    return figures


async def stats_document(store: Backend, now_ms: int, soon_days: float) -> dict[str, Any]:
    """What `otnflow stats --json` and `/api/stats` return: `stats_report`'s topics, and beside them
    `unsubscribed_users` (a count, not a topic: the users no campaign or OTN request reaches)."""
    return {**await stats_report(store, now_ms, soon_days), UNSUBSCRIBED_USERS: await store.unsubscribed_users()}


def table(figures: dict[str, dict[str, Any]]) -> str:
    """A plain text table, one row per topic, and under it one line per request variables with its holders."""
    header = ["topic", *FIGURES]
    rows = [[topic, *(_fmt(f[k]) for k in FIGURES)] for topic, f in figures.items()]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in [header, *rows]
    ]
    if not rows:
        return "no OTN activity yet"
    for topic, values in figures.items():
        for request in values.get("by_request", ()):
            if request["vars"]:
                about = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in request["vars"].items())
                lines.append(f"{topic} {about}: {request['holders']} holders")
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return f"{value:.1%}" if isinstance(value, float) else str(value)
