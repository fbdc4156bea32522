"""The Messenger webhook: verification handshake and event intake.

POST answers 200 only once every event of the body is stored durably; handling happens after, in the dispatcher.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict

from aiohttp import web

from ..messenger.signature import verify
from ..messenger.webhook import WebhookFormatError, parse_body
from ..store import StoredEvent
from .keys import CLOCK, DISPATCHER, METRICS, SETTINGS, STORE

log = logging.getLogger("otnflow.webhook")


async def verify_subscription(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    query = request.query
    if query.get("hub.mode") == "subscribe" and query.get("hub.verify_token") == settings.verify_token:
        return web.Response(text=query.get("hub.challenge", ""))
    log.warning("webhook verification refused: wrong mode or verify token")
    return web.Response(status=403, text="verification failed")


async def receive(request: web.Request) -> web.Response:
    app = request.app
    settings, metrics = app[SETTINGS], app[METRICS]
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        metrics.webhook_rejected.labels("413").inc()
        log.warning("webhook body over server.max_body_bytes (%d): refused", settings["server.max_body_bytes"])
        raise
    if not verify(
        raw,
        settings.app_secret,
        request.headers.get("X-Hub-Signature-256"),
        request.headers.get("X-Hub-Signature"),
        settings["server.allow_sha1_signature"],
    ):
        metrics.webhook_rejected.labels("403").inc()
        log.warning("webhook signature missing or invalid: %d bytes refused, nothing stored", len(raw))
        return web.Response(status=403, text="invalid signature")
    try:
        parsed = parse_body(raw)
    except WebhookFormatError as err:
        metrics.webhook_rejected.labels("400").inc()
        log.warning("malformed webhook body: %s", err)
        return web.Response(status=400, text=f"malformed webhook body: {err}")
    for reason, count in parsed.skipped.items():
        metrics.events_skipped.labels(reason).inc(count)
    received = app[CLOCK].now_ms()
    stored = [
        StoredEvent(
            e.key,
            e.user_id,
            e.page_id,
            e.timestamp,
            e.kind,
            json.dumps(e.raw, separators=(",", ":"), ensure_ascii=False),
            received,
        )
        for e in parsed.events
    ]
    new = await app[STORE].add_events(stored) if stored else []
    metrics.events_duplicate.inc(len(stored) - len(new))
    by_user: dict[str, list[StoredEvent]] = defaultdict(list)
    for event in new:
        metrics.events_received.labels(event.kind).inc()
        by_user[event.user_id].append(event)
    for user_id, events in by_user.items():
        app[DISPATCHER].wake(user_id, events)
    return web.Response(text="EVENT_RECEIVED")
