"""The admin API: start a notification campaign, follow it, read the OTN loop figures.

Described by the OpenAPI document `openapi.json` (served at /api/openapi.json); request bodies are checked
against it. Every other route needs `Authorization: Bearer $OTNFLOW_API_TOKEN` (401 otherwise), compared in
constant time. Every error under /api/ is JSON, aiohttp's own (404, 405, 413) included.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from ..messenger.signature import same_secret
from ..policy import MessageKind, Outgoing
from ..runtime.campaigns import CampaignError, CampaignReport, campaign_counts
from ..runtime.handover import agent_reply_event
from ..runtime.stats import stats_document
from .bodies import BadBody, api_schema, checked_body, openapi_document
from .deadline import bounded
from .keys import CAMPAIGNS, CLOCK, DISPATCHER, SETTINGS, STORE

log = logging.getLogger("otnflow.api")
RUNNING: web.AppKey[dict[str, asyncio.Task[CampaignReport]]] = web.AppKey("running_campaigns")


async def campaigns_ctx(app: web.Application) -> AsyncIterator[None]:
    """Campaigns started through the API run in the server; at shutdown they stop before the engine does (what
    they left `sending` is settled by the next run, as after a crash)."""
    app[RUNNING] = {}
    yield
    tasks = [task for task in app[RUNNING].values() if not task.done()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def add_routes(app: web.Application) -> None:
    """The admin API under /api/. Every error there is JSON: each route's handler is wrapped (`_json_errors`, and
    `deadline.bounded` inside it) rather than the app given middlewares (deadline.py says why), so aiohttp's own
    answers get routes too: another method on an API path is a 405 (with `Allow`), any other path a 404."""
    for method, path, handler in (
        ("POST", "/api/notify", notify),
        ("GET", "/api/campaigns/{id}", campaign),
        ("GET", "/api/stats", stats),
        ("POST", "/api/agent/reply", agent_reply),
        ("GET", "/api/openapi.json", openapi),
    ):
        resource = app.router.add_resource(path)
        if method == "GET":
            resource.add_route("HEAD", _json_errors(bounded(handler)))  # as `add_get` does
        resource.add_route(method, _json_errors(bounded(handler)))
        resource.add_route(hdrs.METH_ANY, _json_errors(bounded(_method_not_allowed)))  # after: any other method
    app.router.add_route(hdrs.METH_ANY, "/api/{tail:.*}", _json_errors(bounded(_no_route)))


def _json_errors(handler: Handler) -> Handler:
    """aiohttp answers its own errors (wrong method, body too large) in text; the API answers them in JSON."""

    async def answer_errors_in_json(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as err:
            if err.status < 400:
                raise
            headers = {k: v for k, v in err.headers.items() if k.lower() not in ("content-type", "content-length")}
            return web.json_response({"error": err.reason}, status=err.status, headers=headers)

    return answer_errors_in_json


async def _method_not_allowed(request: web.Request) -> web.StreamResponse:
    resource = request.match_info.route.resource
    allowed = {route.method for route in resource or () if route.method != hdrs.METH_ANY}
    raise web.HTTPMethodNotAllowed(request.method, allowed)


async def _no_route(request: web.Request) -> web.StreamResponse:
    raise web.HTTPNotFound()


def _authorized(request: web.Request) -> bool:
    expected = request.app[SETTINGS].api_token
    return bool(expected) and same_secret(request.headers.get("Authorization", ""), f"Bearer {expected}")


def _unauthorized() -> web.Response:
    return web.json_response(
        {"error": "missing or wrong bearer token (OTNFLOW_API_TOKEN)"},
        status=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


async def notify(request: web.Request) -> web.Response:
    """POST a NotifyRequest (openapi.json) -> 202 {"campaign": id, "status": url}; with "dry_run": true -> 200,
    the audience per variant (an Audience), nothing sent, claimed or stored."""
    if not _authorized(request):
        return _unauthorized()
    try:
        body = await checked_body(request, api_schema("NotifyRequest"))
    except BadBody as bad:
        return bad.response()
    runner = request.app[CAMPAIGNS]
    running = request.app[RUNNING]
    try:
        topic, segment, variables = body["topic"], body.get("segment", ""), body.get("vars", {})
        if body.get("dry_run") is True:
            audience = await runner.dry_run(topic, segment, variables)
            return web.json_response({"dry_run": True, "segment": segment, **audience.as_dict()})
        campaign = await runner.open(topic, segment, variables, body.get("campaign"))
    except CampaignError as err:
        return web.json_response({"error": err.api_message}, status=400)
    if campaign.id not in running or running[campaign.id].done():
        running[campaign.id] = asyncio.create_task(runner.execute(campaign), name=f"campaign {campaign.id}")
    return web.json_response({"campaign": campaign.id, "status": f"/api/campaigns/{campaign.id}"}, status=202)


async def campaign(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _unauthorized()
    campaign_id = request.match_info["id"]
    task = request.app[RUNNING].get(campaign_id)
    counts = await campaign_counts(request.app[STORE], campaign_id)
    if task is None and not counts:
        return web.json_response({"error": f"no campaign {campaign_id}"}, status=404)
    body: dict[str, Any] = {"campaign": campaign_id, "running": bool(task and not task.done()), "counts": counts}
    if task is not None and task.done():
        if task.exception() is not None:
            body["error"] = str(task.exception())
        else:
            body.update(task.result().as_dict())
    return web.json_response(body)


async def agent_reply(request: web.Request) -> web.Response:
    """POST an AgentReply (openapi.json) -> 202 {"reply": key}: a person's reply, queued in the user's turn and sent
    tagged HUMAN_AGENT; 404 for a user never seen; 409 with the policy's reason when it may not go (7 days after the
    user's last message, never later). The step gates it again before the send."""
    if not _authorized(request):
        return _unauthorized()
    try:
        body = await checked_body(request, api_schema("AgentReply"))
    except BadBody as bad:
        return bad.response()
    user = await request.app[STORE].load_user(body["user_id"])
    if user is None:
        return web.json_response({"error": f"no user {body['user_id']}"}, status=404)
    now = request.app[CLOCK].now_ms()
    gate = request.app[DISPATCHER].handler.gate
    decision = gate.check(gate.facts(user), Outgoing(kind=MessageKind.AGENT_REPLY), now)
    if not decision.allowed:
        return web.json_response({"error": decision.reason}, status=409)
    event = agent_reply_event(user, body["text"], body.get("id") or uuid.uuid4().hex, now)
    if await request.app[STORE].add_events([event]):
        request.app[DISPATCHER].wake(user.user_id, [event])
    return web.json_response({"reply": event.key}, status=202)


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def stats(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _unauthorized()
    settings = request.app[SETTINGS]
    figures = await stats_document(request.app[STORE], request.app[CLOCK].now_ms(), settings.notify.expiring_soon_days)
    return web.json_response(figures)
