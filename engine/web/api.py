"""The admin API: start a notification campaign, follow it, read the OTN loop figures.

Every route needs `Authorization: Bearer $OTNFLOW_API_TOKEN` (401 otherwise), compared in constant time.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any

from aiohttp import web

from ..runtime.notify import CampaignError, CampaignReport
from ..runtime.stats import loop_stats
from .keys import CAMPAIGNS, CLOCK, SETTINGS, STORE

log = logging.getLogger("otnflow.api")
RUNNING: web.AppKey[dict[str, asyncio.Task[CampaignReport]]] = web.AppKey("running_campaigns")


def _authorized(request: web.Request) -> bool:
    expected = request.app[SETTINGS].api_token
    given = request.headers.get("Authorization", "")
    return bool(expected) and hmac.compare_digest(given.encode(), f"Bearer {expected}".encode())


def _unauthorized() -> web.Response:
    return web.json_response(
        {"error": "missing or wrong bearer token (OTNFLOW_API_TOKEN)"},
        status=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


async def notify(request: web.Request) -> web.Response:
    """POST {"topic": ..., "segment": ..., "vars": {...}, "campaign": optional name} -> 202 {"campaign": id}."""
    if not _authorized(request):
        return _unauthorized()
    try:
        body: Any = await request.json()
    except ValueError:
        return web.json_response({"error": "body must be JSON"}, status=400)
    if not isinstance(body, dict) or not isinstance(body.get("topic"), str):
        return web.json_response({"error": "'topic' (a string) is required"}, status=400)
    variables = body.get("vars", {})
    if not isinstance(variables, dict):
        return web.json_response({"error": "'vars' must be an object"}, status=400)
    runner = request.app[CAMPAIGNS]
    segment = str(body.get("segment", ""))
    running = request.app[RUNNING]
    try:
        campaign = await runner.open(body["topic"], segment, variables, body.get("campaign"))
    except CampaignError as err:
        return web.json_response({"error": str(err)}, status=400)
    if campaign.id not in running or running[campaign.id].done():
        running[campaign.id] = asyncio.create_task(runner.execute(campaign), name=f"campaign {campaign.id}")
    return web.json_response({"campaign": campaign.id, "status": f"/api/campaigns/{campaign.id}"}, status=202)


async def campaign(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _unauthorized()
    campaign_id = request.match_info["id"]
    task = request.app[RUNNING].get(campaign_id)
    counts = await request.app[STORE].campaign_counts(campaign_id)
    if task is None and not counts:
        return web.json_response({"error": f"no campaign {campaign_id}"}, status=404)
    body: dict[str, Any] = {"campaign": campaign_id, "running": bool(task and not task.done()), "counts": counts}
    if task is not None and task.done():
        if task.exception() is not None:
            body["error"] = str(task.exception())
        else:
            body.update(task.result().as_dict())
    return web.json_response(body)


async def stats(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _unauthorized()
    settings = request.app[SETTINGS]
    figures = await loop_stats(
        request.app[STORE], request.app[CLOCK].now_ms(), float(settings["notify.expiring_soon_days"])
    )
    return web.json_response(figures)
