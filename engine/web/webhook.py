"""The Messenger webhook: verification handshake and event intake.

POST answers 200 only once every good event of the body is stored durably (and every broken one kept in the
dead-letter table); handling happens after, in the dispatcher. Only whole-body problems get another answer:
413 (too large), 403 (signature), 400 (not a JSON object with an `entry` list). Never a 500: Meta would resend the
same body for hours.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from aiohttp import web

from ..messenger.events import SKIPPED_KINDS, ParsedWebhook, WebhookFormatError, parse_body
from ..messenger.signature import same_secret, verify
from ..runtime.metrics import Metrics
from ..store import RejectedEvent, StoredEvent
from .keys import CLOCK, DISPATCHER, METRICS, SETTINGS, SIMULATED_IDS, STORE

log = logging.getLogger("otnflow.webhook")
#: The 200 every accepted body gets, its bytes and headers built once (aiohttp copies the headers per response).
_RECEIVED_BODY = b"EVENT_RECEIVED"
_RECEIVED_HEADERS = {"Content-Type": "text/plain; charset=utf-8"}


async def verify_subscription(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    query = request.query
    if query.get("hub.mode") == "subscribe" and same_secret(query.get("hub.verify_token", ""), settings.verify_token):
        return web.Response(text=query.get("hub.challenge", ""))
    log.warning("webhook verification refused: wrong mode or verify token")
    return web.Response(status=403, text="verification failed")


async def receive(request: web.Request) -> web.Response:
    app = request.app
    settings, metrics = app[SETTINGS], app[METRICS]
    raw = await request.read()  # already read under the size limit and the read deadline (deadline.py)
    if not verify(
        raw,
        settings.app_secret,
        request.headers.get("X-Hub-Signature-256"),
        request.headers.get("X-Hub-Signature"),
        settings.server.allow_sha1_signature,
    ):
        metrics.webhook_rejected.labels("403").inc()
        log.warning("webhook signature missing or invalid: %d bytes refused, nothing stored", len(raw))
        return web.Response(status=403, text="invalid signature")
    try:
        parsed = parse_body(raw, simulated_ids=app[SIMULATED_IDS])
    except WebhookFormatError as err:
        metrics.webhook_rejected.labels("400").inc()
        log.warning("malformed webhook body: %s", err)
        return web.Response(status=400, text=f"malformed webhook body: {err}")
    _report_skipped(parsed, metrics)
    received = app[CLOCK].now_ms()
    stored = inbox_events(parsed, received)
    new = await app[STORE].add_events(stored) if stored else []
    if parsed.rejected:
        await app[STORE].add_rejected(
            [
                RejectedEvent(
                    key=r.key(), where=r.where, kind=r.kind, reason=r.reason, body=r.body(), received_ms=received
                )
                for r in parsed.rejected
            ]
        )
        for r in parsed.rejected:
            metrics.events_rejected.labels(r.kind).inc()
            log.warning(
                "webhook event rejected, kept in the dead-letter table (otnflow inbox --rejected): %s", r.reason
            )
    if len(new) < len(stored):
        metrics.events_duplicate.inc(len(stored) - len(new))
    by_user: dict[str, list[StoredEvent]] = defaultdict(list)
    for event in new:
        metrics.events_received.labels(event.kind).inc()
        by_user[event.user_id].append(event)
    for user_id, events in by_user.items():
        app[DISPATCHER].wake(user_id, events)
    return web.Response(body=_RECEIVED_BODY, headers=_RECEIVED_HEADERS)


def inbox_events(parsed: ParsedWebhook, received_ms: int) -> list[StoredEvent]:
    """The judged events as inbox rows, each with the parse the step can reuse instead of reading its body again."""
    return [
        StoredEvent(
            key=e.key,
            user_id=e.user_id,
            page_id=e.page_id,
            timestamp=e.timestamp,
            kind=e.stored_kind,
            body=body,
            received_ms=received_ms,
            parsed=(body, e),
        )
        for e, body in ((e, e.to_json()) for e in parsed.events)
    ]


def _report_skipped(parsed: ParsedWebhook, metrics: Metrics) -> None:
    """Skipped kinds are counted; the first sighting of each is logged, and a Page notice always is (WARNING)."""
    for kind, count in parsed.skipped.items():
        if metrics.count_skipped(kind, count, SKIPPED_KINDS):
            log.info("webhook events of kind %r are not acted on: skipped (otnflow_events_skipped_total)", kind)
    for notice in parsed.notices:
        log.warning(
            "Meta reported a policy enforcement on page %s: action %r, reason: %s "
            "(see the Page's Support Inbox; a blocked Page cannot send)",
            notice.page_id,
            notice.action,
            notice.reason or "none given",
        )
