"""The OTN loop's figures per topic, for `otnflow stats`, `/api/stats` and `/metrics`."""

from __future__ import annotations

from ..policy.gate import DAY_MS
from ..store import Store

FIGURES = ("requests", "optins", "optin_rate", "deliveries", "re_requests", "tokens_held", "tokens_expiring_soon")


async def loop_stats(store: Store, now_ms: int, soon_days: float) -> dict[str, dict[str, float]]:
    raw = await store.otn_stats(now_ms, now_ms + int(soon_days * DAY_MS))
    out: dict[str, dict[str, float]] = {}
    for topic, counts in sorted(raw.items()):
        requests = counts.get("request", 0) + counts.get("re_request", 0)
        optins = counts.get("optin", 0)
        out[topic] = {
            "requests": requests,
            "optins": optins,
            "optin_rate": round(optins / requests, 3) if requests else 0.0,
            "deliveries": counts.get("delivery", 0),
            "re_requests": counts.get("re_request", 0),
            "tokens_held": counts.get("tokens_held", 0),
            "tokens_expiring_soon": counts.get("tokens_expiring_soon", 0),
        }
    return out


def table(figures: dict[str, dict[str, float]]) -> str:
    """A plain text table, one row per topic."""
    header = ["topic", *FIGURES]
    rows = [[topic, *(_fmt(f[k]) for k in FIGURES)] for topic, f in figures.items()]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in [header, *rows]
    ]
    return "\n".join(lines) if rows else "no OTN activity yet"


def _fmt(value: float) -> str:
    return f"{value:.1%}" if isinstance(value, float) else str(value)
