"""Health and metrics endpoints."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ..runtime.stats import loop_stats
from .keys import CLOCK, DISPATCHER, METRICS, SENDING, SETTINGS, STORE


async def healthz(request: web.Request) -> web.Response:
    """200 while the server can do its job; 503 with the reason when sending stopped or the store fails."""
    app = request.app
    try:
        counts = await app[STORE].counts()
    except Exception as err:  # the store is down: say so rather than crash the probe
        return web.json_response({"status": "error", "store": f"{type(err).__name__}: {err}"}, status=503)
    stopped = app[SENDING].halt_reason
    body = {
        "status": "sending stopped" if stopped else "ok",
        "store": counts,
        "active_users": app[DISPATCHER].active_users,
    }
    if stopped:
        body["reason"] = stopped
    return web.json_response(body, status=503 if stopped else 200)


async def metrics(request: web.Request) -> web.Response:
    app = request.app
    figures = await loop_stats(app[STORE], app[CLOCK].now_ms(), app[SETTINGS].notify.expiring_soon_days)
    for topic, values in figures.items():
        for name, value in values.items():
            app[METRICS].otn.labels(topic, name).set(value)
    app[METRICS].unsubscribed.set(await app[STORE].unsubscribed_users())
    response = web.Response(body=app[METRICS].render())
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response
