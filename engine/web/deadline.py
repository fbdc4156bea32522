"""Slow clients cannot hold the server: a request's body must arrive within `server.read_timeout_seconds`.

aiohttp waits for a body as long as bytes keep coming; 300 clients sending one byte every few seconds would each
hold a connection for good. `bounded` wraps every route's handler and reads the body under a deadline (408 and the
connection closed when it passes) before the handler runs, so handlers read it from memory; a body that came whole
with its headers (nearly every one) is read at once, with no timer to arm and cancel. A wrapper per route, not an
app middleware: any app middleware makes aiohttp wrap every request in its own current-app layer too, ~26k
instructions a request (docs/architecture.md, Performance); tests/web/test_every_route_bounded.py fails for a route
left out. A request for no route is answered without its body being read (aiohttp closes the connection if the body
has not all arrived). Headers get the same bound from the keep-alive timer (`server_options`): a connection that has
not sent a complete request by then is closed. A reverse proxy in front remains the first line (docs/deploying.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..config import Settings
from .keys import METRICS, SETTINGS

log = logging.getLogger("otnflow.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def server_options(settings: Settings) -> dict[str, Any]:
    """Options for `web.run_app` / `web.AppRunner`: a connection idle, or still sending its headers, for longer
    than the read timeout is closed; and no lingering: aiohttp would otherwise keep reading (and discarding) the
    rest of a body cut off at the deadline or the size limit for another 10 s. Every body a handler sees has been
    read in full by `bounded`, so lingering never had anything else to do here."""
    return {"keepalive_timeout": settings.server.read_timeout_seconds, "lingering_time": 0.0}


def bounded(handler: Handler) -> Handler:
    """`handler` run once the request's body is read in full, under the size limit and the read deadline."""

    async def read_then_handle(request: web.Request) -> web.StreamResponse:
        if request.body_exists:
            await _read_body(request)
        return await handler(request)

    return read_then_handle


async def _read_body(request: web.Request) -> None:
    settings = request.app[SETTINGS]
    try:
        if request.content.is_eof():  # the whole body came with the headers (nearly always): no wait, no timer
            await request.read()  # kept by aiohttp: the handler's read() returns it
        else:
            await _read_within(request, settings.server.read_timeout_seconds)
    except web.HTTPRequestEntityTooLarge:
        if request.path == "/webhook":
            request.app[METRICS].webhook_rejected.labels("413").inc()
        log.warning(
            "%s %s: body over server.max_body_bytes (%d): refused",
            request.method,
            request.path,
            settings.server.max_body_bytes,
        )
        raise


async def _read_within(request: web.Request, timeout: float) -> None:
    """The rest of the body, or 408 once `timeout` has passed. Only here is a timer armed: it costs the event loop
    ~8 us a request (docs/architecture.md, Performance)."""
    try:
        async with asyncio.timeout(timeout):
            await request.read()  # kept by aiohttp: the handler's read() returns it
    except TimeoutError:
        log.warning("%s %s: body not received within %.1f s: connection closed", request.method, request.path, timeout)
        # aiohttp closes a connection whose body was not read to the end (no lingering: `server_options`)
        raise web.HTTPRequestTimeout(text=f"request body not received within {timeout:g} s") from None
