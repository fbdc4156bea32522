"""Health and metrics endpoints. Neither reads the store: they show the background task's last reading of its
figures (web/figures.py), taken once at start and then every `server.figures_refresh_seconds`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from .figures import StoreFigures
from .keys import CLOCK, DISPATCHER, FIGURES, METRICS, SENDING, SETTINGS, STORE


async def figures_ctx(app: web.Application) -> AsyncIterator[None]:
    """One reading before the server answers, then one every `server.figures_refresh_seconds`."""
    settings = app[SETTINGS]
    figures = StoreFigures(
        app[STORE],
        app[CLOCK],
        app[METRICS],
        settings.notify.expiring_soon_days,
        settings.server.figures_refresh_seconds,
    )
    await figures.refresh()
    app[FIGURES] = figures
    task = asyncio.create_task(figures.run(), name="store figures")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def healthz(request: web.Request) -> web.Response:
    """200 while the server can do its job; 503 with the reason when sending stopped or the store fails. No store
    read: the counts are the background task's last reading (`store_as_of_seconds` ago)."""
    app = request.app
    figures = app[FIGURES]
    if trouble := figures.trouble():
        return web.json_response({"status": "error", "store": trouble}, status=503)
    stopped = app[SENDING].halt_reason
    body = {
        "status": "sending stopped" if stopped else "ok",
        "store": figures.counts,
        "store_as_of_seconds": round(figures.age_seconds(), 1),
        "active_users": app[DISPATCHER].active_users,
    }
    if stopped:
        body["reason"] = stopped
    return web.json_response(body, status=503 if stopped else 200)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text; the OTN loop gauges are as of the background task's last reading (no store read here)."""
    response = web.Response(body=request.app[METRICS].render())
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response
