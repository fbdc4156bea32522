"""The playground: chat with the flows in a browser as a test user you name, and watch the policy and the OTN loop.

Everything goes through the real path: each action becomes signed webhook JSON posted to this server's own
/webhook, and the replies are what the in-process fake Graph API received. The transcript is kept in memory per
playground user (a development tool, local mode only); the engine itself still keeps nothing per user between
events.

Local mode only, and even there no other web site may drive it: every API call must carry the token embedded in
the page (made fresh per process), come from the page's own origin, name a loopback or IP-address host (so a DNS
rebinding name cannot reach it) and, for actions, be `application/json` checked against the action's schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from ..flow import Outcome
from ..flow.spec import PAGE_INBOX_APP_ID, FlowSpec
from ..flow.svg import to_svg
from ..local.fake_graph import SentMessage
from ..messenger.signature import same_secret, sign
from ..policy import Facts, window_open
from ..policy.gate import HOUR_MS
from ..runtime.actions import ActionRecord
from ..runtime.campaigns import CampaignError
from ..runtime.clock import OffsetClock
from ..runtime.handover import UNKNOWN_OWNER
from ..runtime.inspection import inspect_user, message_text, refused_messages
from ..store import TokenStatus, UserRecord
from .bodies import BadBody, checked_body
from .deadline import bounded
from .keys import CAMPAIGNS, CLOCK, DISPATCHER, FAKE_GRAPH, FLOWS, SETTINGS, STORE
from .reload import Reloaded

log = logging.getLogger("otnflow.playground")
PAGE_ID = "106000000000001"
MAX_TRANSCRIPT = 500
TOKEN_HEADER = "X-Playground-Token"
TOKEN_PLACEHOLDER = "__OTNFLOW_PLAYGROUND_TOKEN__"
WAIT_SECONDS = 20.0  # a page's long poll; it asks again at once
MAX_ADVANCE_DAYS = 3660  # one step of the clock: ten years and a bit, well past a token's year of life

_TEXT = {"type": "string"}
_DAYS = {"type": "number", "minimum": 0, "maximum": MAX_ADVANCE_DAYS}
ACTION_SCHEMAS: dict[str, dict[str, Any]] = {
    "say": {"properties": {"text": _TEXT}},
    "tap": {"properties": {"title": _TEXT, "payload": _TEXT, "postback": {"type": "boolean"}}},
    "optin": {"properties": {"payload": _TEXT}},
    "advance": {"properties": {"days": _DAYS, "hours": {**_DAYS, "maximum": MAX_ADVANCE_DAYS * 24}}},
    "notify": {
        "properties": {
            "topic": _TEXT,
            "segment": _TEXT,
            "to": {"enum": ["user", "segment"]},
            "vars": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
        }
    },
    "reset": {},
    "flow": {"properties": {"flow": _TEXT}},
}
"""What each action reads from its JSON object (besides `user`); other keys are ignored."""


class Playground:
    def __init__(self) -> None:
        self.transcripts: dict[str, list[dict[str, Any]]] = {}
        self.seen_sent: dict[str, int] = {}
        self.seen_refused: dict[str, int] = {}
        self.reload_status = ""
        self.reload_errors: tuple[str, ...] = ()  # shown in a banner until a reload succeeds
        self._mids = itertools.count(1)
        self.session: aiohttp.ClientSession | None = None
        self.token = secrets.token_urlsafe(32)
        self._news = asyncio.Event()  # set and replaced on every change a waiting page should see
        self.closing = False

    def note(self, user_id: str, entry: dict[str, Any]) -> None:
        transcript = self.transcripts.setdefault(user_id, [])
        transcript.append(entry)
        del transcript[:-MAX_TRANSCRIPT]

    def action_called(self, call: ActionRecord) -> None:
        """A flow action ran for a user: the transcript shows the call, how it ended and its result."""
        args = ", ".join(f"{k}={json.dumps(v)}" for k, v in call.context.args.items())
        shown = f": {json.dumps(call.value)[:300]}" if call.outcome is Outcome.SUCCESS else ""
        self.note(
            call.context.user_id,
            {
                "from": "action",
                "text": f"{call.name}({args}) {call.outcome} in {call.seconds * 1000:.0f} ms{shown}",
                "name": call.name,
                "outcome": str(call.outcome),
                "result": call.value,
            },
        )

    def reloaded(self, outcome: Reloaded) -> None:
        self.reload_status, self.reload_errors = outcome.message, outcome.errors
        self.wake()

    def wake(self, _: object = None) -> None:
        """Something happened (a message reached the fake Graph API, a reload): every waiting page looks again."""
        news, self._news = self._news, asyncio.Event()
        news.set()

    async def news(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._news.wait(), timeout)


PLAYGROUND: web.AppKey[Playground] = web.AppKey("playground", Playground)


def setup(app: web.Application) -> None:
    app[PLAYGROUND] = playground = Playground()
    app[FAKE_GRAPH].listeners.append(playground.wake)
    app.on_shutdown.append(_release_waiting_pages)
    app.router.add_get("/playground", bounded(_guarded(page, needs_token=False)))
    app.router.add_get("/playground/api/state", bounded(_guarded(state)))
    app.router.add_get("/playground/api/wait", bounded(_guarded(wait)))
    app.router.add_get("/playground/api/diagram", bounded(_guarded(diagram)))
    app.router.add_post("/playground/api/audience", bounded(_guarded(audience)))
    app.router.add_post("/playground/api/{action}", bounded(_guarded(act)))
    app.cleanup_ctx.append(_session_ctx)


Handler = Callable[[web.Request], Awaitable[web.Response]]


def _guarded(handler: Handler, needs_token: bool = True) -> Handler:
    async def guarded(request: web.Request) -> web.Response:
        refusal = _refusal(request, needs_token)
        if refusal is not None:
            log.warning("playground request refused: %s %s: %s", request.method, request.path, refusal)
            return web.json_response({"error": refusal}, status=403)
        return await handler(request)

    return guarded


def _refusal(request: web.Request, needs_token: bool) -> str | None:
    """Why this request may not use the playground, or None. Cheap checks first; the token last."""
    if not _ip_or_localhost(request.host):
        return "the playground answers only at localhost or an IP address (this Host header names another site)"
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        return f"the playground answers only its own page (request from origin {origin[:100]!r})"
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return "the playground answers only its own page (a cross-site request)"
    if not needs_token:
        return None
    if not same_secret(request.headers.get(TOKEN_HEADER, ""), request.app[PLAYGROUND].token):
        return f"missing or wrong {TOKEN_HEADER} (reload the playground page)"
    if request.method == "POST" and request.content_type != "application/json":
        return "playground actions take Content-Type: application/json"
    return None


def _ip_or_localhost(host: str) -> bool:
    """A DNS rebinding attack reaches a loopback server under the attacker's own name; an address cannot be
    rebound. So: `localhost` or an IP literal, with any port."""
    if any(char in host for char in "@/?#\\"):
        return False
    try:
        name = URL(f"http://{host}/").host or ""
    except ValueError:
        return False
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name == "localhost"
    return True


async def _release_waiting_pages(app: web.Application) -> None:
    app[PLAYGROUND].closing = True
    app[PLAYGROUND].wake()


async def _session_ctx(app: web.Application) -> Any:
    app[PLAYGROUND].session = aiohttp.ClientSession()
    app[DISPATCHER].handler.actions.watchers.append(app[PLAYGROUND].action_called)
    yield
    await app[PLAYGROUND].session.close()  # type: ignore[union-attr]


async def page(request: web.Request) -> web.Response:
    html = resources.files("engine.web").joinpath("static/playground.html").read_text(encoding="utf-8")
    html = html.replace(TOKEN_PLACEHOLDER, request.app[PLAYGROUND].token)
    headers = {"Cache-Control": "no-store", "Content-Security-Policy": "frame-ancestors 'none'"}
    return web.Response(text=html, content_type="text/html", headers=headers)


def _user(request: web.Request, body: dict[str, Any] | None = None) -> str:
    user = (body or {}).get("user") or request.query.get("user") or "tester"
    if not isinstance(user, str):
        raise BadBody("'user' must be a string", "user")
    return user[:64]


# -- actions: each one is webhook JSON through the real path -------------------------------------------------
async def act(request: web.Request) -> web.Response:
    app = request.app
    action = request.match_info["action"]
    if action not in ACTION_SCHEMAS:
        return web.json_response({"error": f"unknown action {action!r}"}, status=404)
    try:
        body = await checked_body(request, {"type": "object", **ACTION_SCHEMAS[action]})
        user_id = _user(request, body)
    except BadBody as bad:
        return bad.response()
    playground, fake, clock = app[PLAYGROUND], app[FAKE_GRAPH], app[CLOCK]
    mid = f"m_play_{next(playground._mids)}"
    try:
        if action == "say":
            text = str(body.get("text", ""))[:2000]
            playground.note(user_id, {"from": "user", "text": text})
            await _post(request, user_id, {"message": {"mid": mid, "text": text}})
        elif action == "tap":
            title, payload = str(body.get("title", "")), str(body.get("payload", ""))
            playground.note(user_id, {"from": "user", "text": title, "tap": True})
            event = (
                {"postback": {"mid": mid, "title": title, "payload": payload}}
                if body.get("postback")
                else {"message": {"mid": mid, "text": title, "quick_reply": {"payload": payload}}}
            )
            await _post(request, user_id, event)
        elif action == "optin":
            payload = str(body.get("payload", ""))
            token = fake.issue_token(user_id, payload, clock.now_ms())
            playground.note(user_id, {"from": "user", "text": "Notify Me", "tap": True})
            await _post(
                request,
                user_id,
                {"optin": {"type": "one_time_notif_req", "payload": payload, "one_time_notif_token": token}},
                interaction=False,
            )
        elif action == "advance":
            if not isinstance(clock, OffsetClock):
                return web.json_response({"error": "this server's clock cannot be moved"}, status=400)
            clock.advance(days=float(body.get("days", 0)), hours=float(body.get("hours", 0)))
            playground.note(user_id, {"from": "clock", "text": f"clock moved {_span(body)} forward"})
        elif action == "notify":
            only = None if body.get("to") == "segment" else [user_id]
            report = await app[CAMPAIGNS].run(
                str(body.get("topic", "")),
                str(body.get("segment", "")),
                body.get("vars", {}),
                f"playground-{mid}",
                only_users=only,
            )
            await app[DISPATCHER].idle()
            playground.note(
                user_id, {"from": "clock", "text": f"notification '{report.campaign.topic}': {_counts(report.counts)}"}
            )
        elif action == "reset":
            await app[STORE].forget_user(user_id)
            for table in (playground.transcripts, playground.seen_sent, playground.seen_refused):
                table.pop(user_id, None)
            fake.sent[:] = [m for m in fake.sent if m.user_id != user_id]
        elif action == "flow":
            flow = str(body.get("flow", ""))
            if flow not in app[FLOWS].current.flows:
                return web.json_response({"error": f"unknown flow {flow!r}"}, status=400)
            await app[STORE].forget_user(user_id)
            await app[STORE].put_user(
                UserRecord(user_id=user_id, page_id=PAGE_ID, flow=flow, created_ms=clock.now_ms())
            )
            playground.transcripts.pop(user_id, None)
            fake.sent[:] = [m for m in fake.sent if m.user_id != user_id]
            playground.seen_sent.pop(user_id, None)
            playground.note(user_id, {"from": "clock", "text": f"now talking to the flow {flow}"})
    except CampaignError as err:  # a campaign that cannot start: the same words as the admin API's
        return web.json_response({"error": err.api_message}, status=400)
    except ValueError as err:  # a bad number
        return web.json_response({"error": str(err)}, status=400)
    await _collect(app, user_id)
    return web.json_response(await _state(app, user_id))


async def audience(request: web.Request) -> web.Response:
    """What the notify control would send, before it does: users per variant (the dry run `otnflow notify
    --dry-run` makes), or why it cannot go. A problem is an answer here, not an error: 200 either way."""
    app = request.app
    try:
        body = await checked_body(request, {"type": "object", **ACTION_SCHEMAS["notify"]})
        user_id = _user(request, body)
    except BadBody as bad:
        return bad.response()
    only = None if body.get("to") == "segment" else [user_id]
    try:
        found = await app[CAMPAIGNS].dry_run(
            str(body.get("topic", "")), str(body.get("segment", "")), body.get("vars", {}), only_users=only
        )
    except CampaignError as err:
        return web.json_response({"problem": err.api_message})
    except ValueError as err:  # a segment expression that does not parse
        return web.json_response({"problem": str(err)})
    return web.json_response({"audience": found.as_dict()})


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in counts.items()) or "nobody holds a token"


def _span(body: dict[str, Any]) -> str:
    days, hours = float(body.get("days", 0)), float(body.get("hours", 0))
    return " ".join(part for part in (f"{days:g} d" if days else "", f"{hours:g} h" if hours else "") if part) or "0 h"


async def _post(request: web.Request, user_id: str, payload: dict[str, Any], interaction: bool = True) -> None:
    app = request.app
    now = app[CLOCK].now_ms()
    app[FAKE_GRAPH].profiles.setdefault(user_id, {"first_name": user_id.title(), "last_name": "Tester"})
    if interaction:
        app[FAKE_GRAPH].saw(user_id, now, message="message" in payload)
    event = {"sender": {"id": user_id}, "recipient": {"id": PAGE_ID}, "timestamp": now, **payload}
    raw = json.dumps({"object": "page", "entry": [{"id": PAGE_ID, "time": now, "messaging": [event]}]}).encode()
    url = f"http://127.0.0.1:{request.url.port}/webhook"
    session = app[PLAYGROUND].session
    assert session is not None
    async with session.post(url, data=raw, headers={"X-Hub-Signature-256": sign(raw, app[SETTINGS].app_secret)}) as r:
        if r.status != 200:
            raise ValueError(f"the webhook answered {r.status}: {await r.text()}")
    await app[DISPATCHER].idle()


async def _collect(app: web.Application, user_id: str) -> None:
    """Add to the transcript what the fake Graph API received and what the policy gate refused since last time."""
    playground = app[PLAYGROUND]
    sent = app[FAKE_GRAPH].messages_to(user_id)
    for message in sent[playground.seen_sent.get(user_id, 0) :]:
        playground.note(user_id, _bot_entry(message))
    playground.seen_sent[user_id] = len(sent)
    refused = await refused_messages(app[STORE], user_id)
    shown = playground.seen_refused.get(user_id, 0)  # read after the await: a page's poll may collect meanwhile
    if len(refused) > shown:
        playground.seen_refused[user_id] = len(refused)
        for item in refused[shown:]:
            explain = EXPLAINED.get(item["reason"], "")
            entry = {"from": "policy", "text": item["text"], "reason": item["reason"], "kind": item["kind"]}
            playground.note(user_id, {**entry, "explain": explain} if explain else entry)


#: What the user experiences when the gate refuses for these reasons, as the transcript explains it.
EXPLAINED = {
    "late_optin": "Notify Me was tapped after the 24-hour window closed, and an opt-in reopens no window: Meta "
    "allows no confirmation, so the user sees none. The token is kept: the notification will come.",
}


def _bot_entry(message: SentMessage) -> dict[str, Any]:
    body = message.body
    content = body.get("message", {})
    payload = content.get("attachment", {}).get("payload", {})
    kind = payload.get("template_type", "text")
    via = "OTN token" if message.otn_token else " ".join(filter(None, [body.get("messaging_type"), body.get("tag")]))
    return {
        "from": "bot",
        "kind": "otn_request" if kind == "one_time_notif_req" else ("notification" if message.otn_token else kind),
        "text": message_text(content) or "",
        "quick_replies": [{"title": q["title"], "payload": q["payload"]} for q in content.get("quick_replies", [])],
        "buttons": payload.get("buttons", []),
        "otn_payload": payload.get("payload") if kind == "one_time_notif_req" else None,
        "via": via,
    }


# -- what the page shows --------------------------------------------------------------------------------------
async def _state(app: web.Application, user_id: str) -> dict[str, Any]:
    view = await inspect_user(app[STORE], user_id)
    now = app[CLOCK].now_ms()
    settings = app[SETTINGS]
    record = view.record
    flows = app[FLOWS].current
    flow = flows.for_user(record.flow if record else "")
    gate_settings = settings.policy
    last = record.last_interaction_ms if record else 0
    facts = (
        Facts(
            last_interaction_ms=record.last_interaction_ms,
            last_message_ms=record.last_message_ms,
            unreachable=record.unreachable,
        )
        if record
        else Facts()
    )
    facts_open = window_open(facts, now, gate_settings)
    closes_in = max(0, last + int(gate_settings.window_hours * HOUR_MS) - now) if facts_open else 0
    return {
        "user": user_id,
        "now": now,
        "flow": flow.spec.name,
        "flows": sorted(flows.flows),
        "topics": [{"name": t.name, "params": list(t.params)} for t in flow.spec.topics.values()],
        "state": record.state if record else None,
        "tags": sorted(record.tags) if record else [],
        "variables": record.variables if record else {},
        "window": {"open": facts_open, "closes_in_ms": closes_in, "hours": gate_settings.window_hours},
        "subscribed": not (record and record.unsubscribed_ms),
        "thread": _thread(record, flow.spec),
        "otn_available": gate_settings.otn_enabled,
        "tokens": [
            {
                "topic": t.topic,
                "about": t.request_vars,
                "title": t.title,
                "status": t.status,
                "expires_ms": t.expires_ms,
                "valid": t.status == TokenStatus.VALID and t.expires_ms > now,
            }
            for t in view.tokens
        ],
        "transcript": app[PLAYGROUND].transcripts.get(user_id, []),
        "reload": app[PLAYGROUND].reload_status,
        "reload_errors": list(app[PLAYGROUND].reload_errors),
    }


def _thread(record: UserRecord | None, spec: FlowSpec) -> dict[str, Any]:
    """Who owns the user's thread (Messenger's Handover Protocol): the bot, the Page Inbox or another app, since
    when, and the state the flow resumes at when the bot gets it back."""
    if record is None or not record.thread_owner:
        return {"owner": "bot", "app_id": "", "since_ms": 0, "resume": ""}
    owner = record.thread_owner
    named = {PAGE_INBOX_APP_ID: "page_inbox", UNKNOWN_OWNER: "unknown"}.get(owner, "app")
    handing = spec.states.get(record.handover_state)  # the state that handed over names where the flow resumes
    resume = handing.handover.resume if handing and handing.handover else ""
    return {"owner": named, "app_id": owner, "since_ms": record.handed_over_ms, "resume": resume}


async def wait(request: web.Request) -> web.Response:
    """Long poll: answers once the user has messages the page has not shown (a notification sent through the API,
    say) or something else changed, at most WAIT_SECONDS later. The page then asks for the state."""
    app, user_id = request.app, _user(request)
    playground = app[PLAYGROUND]
    if len(app[FAKE_GRAPH].messages_to(user_id)) == playground.seen_sent.get(user_id, 0) and not playground.closing:
        await playground.news(WAIT_SECONDS)
    return web.json_response({"closing": playground.closing})


async def state(request: web.Request) -> web.Response:
    user_id = _user(request)
    await _collect(request.app, user_id)
    return web.json_response(await _state(request.app, user_id))


async def diagram(request: web.Request) -> web.Response:
    app = request.app
    view = await inspect_user(app[STORE], _user(request))
    flows = app[FLOWS].current
    record = view.record
    name = request.query.get("flow") or flows.for_user(record.flow if record else "").spec.name
    if name not in flows.flows:
        return web.Response(status=404, text=f"no flow {name}")
    return web.Response(
        text=to_svg(flows.flows[name].spec, record.state if record else None), content_type="image/svg+xml"
    )
