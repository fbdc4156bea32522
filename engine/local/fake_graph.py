"""A fake Graph API: an aiohttp app answering like Meta's Send API, User Profile API and Handover Protocol.

It validates message shapes and limits (messenger-platform.md), answers errors in Meta's format, records every
accepted message, and can be told to fail (5xx, 613, timeouts, 551, 190, ...) for tests, in process
(`fake.fail(...)`) or over HTTP (`POST /_fake/fail`), so subprocess tests can steer it too.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

#: Failure kinds: (HTTP status, error code, subcode, message).
FAILURES: dict[str, tuple[int, int | None, int | None, str]] = {
    "5xx": (500, 2, None, "An unexpected error has occurred. Please retry your request later."),
    "613": (400, 613, None, "Calls to this api have exceeded the rate limit."),
    "551": (400, 551, 1545041, "This person isn't available right now."),
    "blocked": (400, 10, 2018108, "This person isn't receiving messages from you right now."),
    "190": (400, 190, None, "Invalid OAuth access token."),
    "permission": (400, 200, 2018027, "This message is sent outside of allowed window. Permission missing."),
    "window": (400, 10, 2018278, "This message is sent outside of allowed window."),
    "no_user": (400, 100, 2018001, "No matching user found"),
}


@dataclass
class SentMessage:
    recipient: dict[str, Any]
    body: dict[str, Any]
    message_id: str
    at: float = field(default_factory=time.time)  # when the fake received it (wall clock, for latency figures)
    token_user: str | None = None  # for a send with an OTN token: the user the token belongs to
    at_ms: int = 0  # when Meta received it, on the fake's clock (0 without one)

    @property
    def user_id(self) -> str | None:
        value = self.recipient.get("id")
        return str(value) if value is not None else self.token_user

    @property
    def otn_token(self) -> str | None:
        value = self.recipient.get("one_time_notif_token")
        return str(value) if value is not None else None

    @property
    def text(self) -> str | None:
        message = self.body.get("message", {})
        if "text" in message:
            return str(message["text"])
        payload = message.get("attachment", {}).get("payload", {})
        found = payload.get("text") or payload.get("title")
        return str(found) if found is not None else None


@dataclass(kw_only=True)
class ThreadCall:
    """One accepted Handover Protocol call: what Meta was asked (`pass_thread_control`, ...), for whose thread,
    to which app, with which note, and who owned the thread after it."""

    action: str
    user_id: str
    target_app_id: str | None
    metadata: str | None
    owner_after: str
    at_ms: int = 0


@dataclass
class _Failure:
    kind: str
    user_id: str | None = None


@dataclass
class IssuedToken:
    user_id: str
    payload: str
    issued_ms: int
    used: bool = False


WINDOW_MS = 24 * 3_600_000
TOKEN_MS = 365 * 24 * 3_600_000
HUMAN_AGENT_MS = 7 * 24 * 3_600_000  # after the user's last message (a postback tap does not count)
ALLOWED_TAGS = frozenset({"CONFIRMED_EVENT_UPDATE", "POST_PURCHASE_UPDATE", "ACCOUNT_UPDATE", "HUMAN_AGENT"})
BOT_APP_ID = "1517776481860111"  # the bot's app: the Page's Primary Receiver (as in `subscribed_apps`)
PAGE_INBOX_APP_ID = "263902037430900"  # Meta's Page Inbox, a Secondary Receiver
THREAD_CONTROL = ("pass_thread_control", "take_thread_control", "release_thread_control", "request_thread_control")


@dataclass
class FakeGraph:
    """Policy enforcement is on once `clock` is set (a callable giving now in ms): sends to a user outside the 24h
    window without an allowed tag, and sends with an unknown, used or expired OTN token, are refused with Meta's
    error 10/2018278. Tests tell it what Meta would know: `saw(user, ms)` when a user interacts, `issue_token`
    when a user taps Notify Me."""

    page_token: str | None = None  # when set, any other token answers 190
    timeout_delay: float = 30.0  # how long a "timeout" failure hangs
    delay: float = 0.0  # added to every send, to model Meta's latency in load and crash tests
    sent: list[SentMessage] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    profile_requests: int = 0
    clock: Any = None  # Callable[[], int] | None: enforce the window and tokens when set
    rate_limit_per_second: int | None = None  # answer 613 past this many sends within one clock second
    interactions: dict[str, int] = field(default_factory=dict)
    messages: dict[str, int] = field(default_factory=dict)  # the user's last message: HUMAN_AGENT's 7 days
    # what `otnflow doctor` asks about: the Page behind the token, the app's webhook fields, the Page's features
    page: dict[str, str] = field(
        default_factory=lambda: {"id": "106000000000001", "name": "Test Page", "category": "Shopping & retail"}
    )
    user_tokens: set[str] = field(default_factory=set)  # tokens that belong to a person, not a Page
    subscribed_apps: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {
                "id": "1517776481860111",
                "name": "otnflow",
                "subscribed_fields": ["messages", "messaging_postbacks", "messaging_optins", "message_deliveries"],
            }
        ]
    )
    features: list[dict[str, str]] = field(
        default_factory=lambda: [{"feature": "one_time_notification", "status": "approved"}]
    )
    issued: dict[str, IssuedToken] = field(default_factory=dict)
    # the Handover Protocol: the bot's app is the Primary Receiver; a thread not listed belongs to it
    app_id: str = BOT_APP_ID
    secondary_receivers: set[str] = field(default_factory=lambda: {PAGE_INBOX_APP_ID})
    owners: dict[str, str] = field(default_factory=dict)  # user -> the app owning their thread, when not the bot's
    thread_calls: list[ThreadCall] = field(default_factory=list)
    listeners: list[Callable[[SentMessage], None]] = field(default_factory=list)  # told of every accepted message
    _second: tuple[int, int] = (0, 0)
    _failures: deque[_Failure] = field(default_factory=deque)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # -- control -------------------------------------------------------------------------------------------
    def fail(self, kind: str, times: int = 1, user_id: str | None = None) -> None:
        """The next `times` sends (to `user_id`, or to anyone) fail with `kind` (a key of FAILURES or 'timeout')."""
        if kind not in FAILURES and kind != "timeout":
            raise ValueError(f"unknown failure kind {kind!r}; known: timeout, {', '.join(FAILURES)}")
        self._failures.extend(_Failure(kind, user_id) for _ in range(times))

    def saw(self, user_id: str, at_ms: int, *, message: bool = True) -> None:
        """The user interacted at `at_ms` (a message, a tap): Meta opens their 24h window. A message (quick replies
        included; not a postback) also starts HUMAN_AGENT's 7 days."""
        self.interactions[user_id] = max(self.interactions.get(user_id, 0), at_ms)
        if message:
            self.messages[user_id] = max(self.messages.get(user_id, 0), at_ms)

    def issue_token(self, user_id: str, payload: str, at_ms: int) -> str:
        """The user tapped Notify Me on a request carrying `payload`: the token Meta would put in the opt-in."""
        token = f"otn-{len(self.issued) + 1:06d}-{user_id}"
        self.issued[token] = IssuedToken(user_id, payload, at_ms)
        return token

    def tokens_used(self) -> list[str]:
        return [m.otn_token for m in self.sent if m.otn_token]

    def reset(self) -> None:
        self.sent.clear()
        self.thread_calls.clear()
        self.rejected.clear()
        self._failures.clear()

    def messages_to(self, user_id: str) -> list[SentMessage]:
        return [m for m in self.sent if m.user_id == user_id]

    # -- the Handover Protocol -----------------------------------------------------------------------------
    def owner(self, user_id: str) -> str:
        """The app that owns the user's thread (the bot's, unless it passed it on)."""
        return self.owners.get(user_id, self.app_id)

    def channel(self, user_id: str) -> str:
        """Where Meta delivers the user's events to the bot: `messaging` when it owns the thread, else `standby`."""
        return "messaging" if self.owner(user_id) == self.app_id else "standby"

    def give_back(self, user_id: str, metadata: str | None = None) -> dict[str, Any]:
        """The agent marked the conversation Done in the Page Inbox (or the other app passed it back): the thread
        is the bot's again, and the `pass_thread_control` event Meta sends the bot is returned."""
        previous = self.owner(user_id)
        self.owners.pop(user_id, None)
        event: dict[str, Any] = {"new_owner_app_id": self.app_id, "previous_owner_app_id": previous}
        if metadata is not None:
            event["metadata"] = metadata
        return {"pass_thread_control": event}

    def take_by(self, user_id: str, app_id: str, metadata: str | None = None) -> dict[str, Any]:
        """Another app (the Page Inbox, when an agent takes the conversation) takes the thread: the
        `take_thread_control` event Meta sends the bot, the previous owner."""
        previous = self.owner(user_id)
        self.owners[user_id] = app_id
        event: dict[str, Any] = {"previous_owner_app_id": previous, "new_owner_app_id": app_id}
        if metadata is not None:
            event["metadata"] = metadata
        return {"take_thread_control": event}

    # -- the app -------------------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{version}/me/messages", self._messages)
        app.router.add_post("/{version}/{page_id}/messages", self._messages)
        for action in THREAD_CONTROL:
            app.router.add_post(f"/{{version}}/me/{action}", self._thread_control)
        app.router.add_get("/{version}/me", self._me)
        app.router.add_get("/{version}/me/messaging_feature_review", self._features)
        app.router.add_get("/{version}/{page_id}/messaging_feature_review", self._features)
        app.router.add_get("/{version}/{page_id}/subscribed_apps", self._subscribed_apps)
        app.router.add_get("/{version}/{user_id}", self._profile)
        app.router.add_post("/_fake/fail", self._control_fail)
        app.router.add_post("/_fake/reset", self._control_reset)
        app.router.add_get("/_fake/sent", self._control_sent)
        return app

    async def _messages(self, request: web.Request) -> web.Response:
        token = request.query.get("access_token")
        if not token or (self.page_token is not None and token != self.page_token):
            return _error(*FAILURES["190"])
        try:
            body = await request.json()
        except ValueError:
            return _error(400, 100, None, "Invalid JSON body")
        problem = validate_send(body)
        if problem:
            self.rejected.append({"body": body, "error": problem})
            return _error(400, 100, None, problem)
        recipient = body["recipient"]
        if self.delay:
            await asyncio.sleep(self.delay)
            if request.transport is None or request.transport.is_closing():
                return web.Response(status=499)  # the sender died while the request travelled: it never arrived
        failure = self._take_failure(recipient.get("id"))
        if failure is None and self._over_rate_limit():
            failure = _Failure("613")
        if failure is None and self.clock is not None:
            refusal = self._policy_refusal(body)
            if refusal:
                self.rejected.append({"body": body, "error": refusal, "at_ms": int(self.clock())})
                return _error(400, 10, 2018278, f"(#10) {refusal}")
        if failure is not None:
            if failure.kind == "timeout":
                await asyncio.sleep(self.timeout_delay)
                return web.json_response({"error": {"message": "timeout"}}, status=504)
            self.rejected.append({"body": body, "error": failure.kind})
            return _error(*FAILURES[failure.kind])
        message_id = f"m_fake_{next(self._ids)}"
        token_user = None
        if recipient.get("one_time_notif_token") in self.issued:
            issued = self.issued[recipient["one_time_notif_token"]]
            issued.used = True
            token_user = issued.user_id
        if "sender_action" not in body:
            at_ms = int(self.clock()) if self.clock is not None else 0
            sent = SentMessage(recipient, body, message_id, token_user=token_user, at_ms=at_ms)
            self.sent.append(sent)
            for listener in self.listeners:
                listener(sent)
        return web.json_response({"recipient_id": str(recipient.get("id", "")), "message_id": message_id})

    async def _thread_control(self, request: web.Request) -> web.Response:
        """`/me/pass_thread_control` and its siblings, called by the bot's app (the Primary Receiver)."""
        if (problem := self._token_error(request)) is not None:
            return problem
        action = request.path.rsplit("/", 1)[1]
        try:
            body = await request.json()
        except ValueError:
            return _error(400, 100, None, "Invalid JSON body")
        recipient = body.get("recipient") if isinstance(body, dict) else None
        if not isinstance(recipient, dict) or not recipient.get("id"):
            return _error(400, 100, None, "(#100) recipient.id is required")
        user_id = str(recipient["id"])
        metadata = body.get("metadata")
        if metadata is not None and (not isinstance(metadata, str) or len(metadata) > 1000):
            return _error(400, 100, None, "(#100) metadata must be a string of at most 1000 characters")
        failure = self._take_failure(user_id)
        if failure is not None:
            self.rejected.append({"body": body, "error": failure.kind, "action": action})
            return _error(*FAILURES[failure.kind])
        target = body.get("target_app_id")
        target_id = str(target) if target is not None else None
        if action == "pass_thread_control":
            if target_id is None:
                return _error(400, 100, None, "(#100) target_app_id is required")
            if target_id != self.app_id and target_id not in self.secondary_receivers:
                return _error(400, 100, None, f"(#100) app {target_id} is not a receiver of this Page")
            if self.owner(user_id) != self.app_id:
                return _error(400, 100, None, "(#100) the app does not own the thread: take it first")
            self.owners[user_id] = target_id
            if target_id == self.app_id:
                self.owners.pop(user_id)
        elif action == "take_thread_control":
            self.owners.pop(user_id, None)  # the Primary Receiver may take any thread
        elif action == "release_thread_control" and self.owner(user_id) != self.app_id:
            return _error(400, 100, None, "(#100) the app does not own the thread")
        at_ms = int(self.clock()) if self.clock is not None else 0
        note = metadata if isinstance(metadata, str) else None
        self.thread_calls.append(
            ThreadCall(
                action=action,
                user_id=user_id,
                target_app_id=target_id,
                metadata=note,
                owner_after=self.owner(user_id),
                at_ms=at_ms,
            )
        )
        return web.json_response({"success": True})

    def _over_rate_limit(self) -> bool:
        if self.rate_limit_per_second is None:
            return False
        second = int(time.monotonic())
        start, count = self._second
        self._second = (second, count + 1) if start == second else (second, 1)
        return self._second[1] > self.rate_limit_per_second

    def _policy_refusal(self, body: dict[str, Any]) -> str | None:
        now = int(self.clock())
        token = body["recipient"].get("one_time_notif_token")
        if token is not None:
            issued = self.issued.get(token)
            if issued is None:
                return "unknown one-time notification token"
            if issued.used:
                return "one-time notification token already used"
            if now - issued.issued_ms > TOKEN_MS:
                return "one-time notification token expired"
            return None
        user = str(body["recipient"]["id"])
        if now - self.interactions.get(user, -WINDOW_MS) < WINDOW_MS:
            return None
        if body.get("messaging_type") == "MESSAGE_TAG" and body.get("tag") == "HUMAN_AGENT":
            said = self.messages.get(user)
            return None if said is not None and now - said < HUMAN_AGENT_MS else "HUMAN_AGENT is allowed for 7 days"
        if body.get("messaging_type") == "MESSAGE_TAG" and body.get("tag") in ALLOWED_TAGS:
            return None
        return "This message is sent outside of allowed window."

    def _take_failure(self, user_id: Any) -> _Failure | None:
        for failure in self._failures:
            if failure.user_id is None or failure.user_id == str(user_id):
                self._failures.remove(failure)
                return failure
        return None

    async def _profile(self, request: web.Request) -> web.Response:
        self.profile_requests += 1
        if not request.query.get("access_token"):
            return _error(*FAILURES["190"])
        user_id = request.match_info["user_id"]
        profile = self.profiles.get(user_id, {"first_name": "Test", "last_name": "User"})
        if profile.get("fail"):
            return _error(*FAILURES["5xx"])
        return web.json_response({"id": user_id, **profile})

    def _token_error(self, request: web.Request) -> web.Response | None:
        token = request.query.get("access_token")
        if not token or (self.page_token is not None and token != self.page_token and token not in self.user_tokens):
            return _error(*FAILURES["190"])
        return None

    async def _me(self, request: web.Request) -> web.Response:
        if (problem := self._token_error(request)) is not None:
            return problem
        if request.query["access_token"] in self.user_tokens:
            if "category" in request.query.get("fields", ""):
                return _error(400, 100, None, "(#100) Tried accessing nonexisting field (category) on node type (User)")
            return web.json_response({"id": "10000000001", "name": "A Person"})
        fields = request.query.get("fields", "id,name").split(",")
        return web.json_response({k: v for k, v in self.page.items() if k in fields})

    async def _subscribed_apps(self, request: web.Request) -> web.Response:
        if (problem := self._token_error(request)) is not None:
            return problem
        if request.match_info["page_id"] not in ("me", self.page["id"]):
            return _error(400, 100, None, "(#100) Unsupported get request")
        return web.json_response({"data": self.subscribed_apps})

    async def _features(self, request: web.Request) -> web.Response:
        if (problem := self._token_error(request)) is not None:
            return problem
        return web.json_response({"data": self.features})

    async def _control_fail(self, request: web.Request) -> web.Response:
        data = await request.json()
        self.fail(str(data["kind"]), int(data.get("times", 1)), data.get("user_id"))
        return web.json_response({"ok": True})

    async def _control_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def _control_sent(self, request: web.Request) -> web.Response:
        return web.json_response(
            [{"recipient": m.recipient, "body": m.body, "message_id": m.message_id, "at": m.at} for m in self.sent]
        )


def _error(status: int, code: int | None, subcode: int | None, message: str) -> web.Response:
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "AFakeTraceId"}
    if subcode is not None:
        error["error_subcode"] = subcode
    return web.json_response({"error": error}, status=status)


def validate_send(body: Any) -> str | None:
    """What Meta would refuse in a Send API body, as a message; None when the body is acceptable."""
    if not isinstance(body, dict):
        return "body must be an object"
    recipient = body.get("recipient")
    if not isinstance(recipient, dict) or not (recipient.get("id") or recipient.get("one_time_notif_token")):
        return "(#100) recipient.id or recipient.one_time_notif_token is required"
    if "sender_action" in body:
        ok = body["sender_action"] in ("typing_on", "typing_off", "mark_seen") and "message" not in body
        return None if ok else "(#100) sender_action must be typing_on, typing_off or mark_seen, without message"
    if recipient.get("id"):
        kind = body.get("messaging_type")
        if kind not in ("RESPONSE", "UPDATE", "MESSAGE_TAG"):
            return "(#100) messaging_type must be RESPONSE, UPDATE or MESSAGE_TAG"
        if kind == "MESSAGE_TAG" and not body.get("tag"):
            return "(#100) MESSAGE_TAG requires a tag"
    message = body.get("message")
    if not isinstance(message, dict):
        return "(#100) message is required"
    return validate_message(message)


def validate_message(message: dict[str, Any]) -> str | None:
    quick = message.get("quick_replies", [])
    if len(quick) > 13:
        return "(#100) quick_replies: at most 13"
    for reply in quick:
        if reply.get("content_type") == "text":
            if not 0 < len(reply.get("title", "")) <= 20:
                return "(#100) quick_replies[].title must be 1 to 20 characters"
            if not 0 < len(reply.get("payload", "")) <= 1000:
                return "(#100) quick_replies[].payload must be 1 to 1000 characters"
    if "text" in message:
        if not isinstance(message["text"], str) or not message["text"]:
            return "(#100) message.text must be a non-empty string"
        if len(message["text"]) > 2000:
            return "(#100) message.text: at most 2000 characters"
        return None
    attachment = message.get("attachment")
    if not isinstance(attachment, dict) or attachment.get("type") != "template":
        return "(#100) message needs text or a template attachment"
    payload = attachment.get("payload", {})
    kind = payload.get("template_type")
    if kind == "button":
        buttons = payload.get("buttons", [])
        if not 1 <= len(buttons) <= 3:
            return "(#100) button template: 1 to 3 buttons"
        if not 0 < len(payload.get("text", "")) <= 640:
            return "(#100) button template: text must be 1 to 640 characters"
        for button in buttons:
            if button.get("type") == "postback" and not button.get("payload"):
                return "(#100) postback button needs a payload"
            if button.get("type") == "web_url" and not button.get("url"):
                return "(#100) web_url button needs a url"
        return None
    if kind == "one_time_notif_req":
        if set(payload) - {"template_type", "title", "payload"}:
            return "(#100) one_time_notif_req accepts only title and payload"
        if not 0 < len(payload.get("title", "")) <= 65:
            return "(#100) one_time_notif_req: title must be 1 to 65 characters"
        if not payload.get("payload"):
            return "(#100) one_time_notif_req: payload is required"
        return None
    if kind == "generic":
        if not 1 <= len(payload.get("elements", [])) <= 10:
            return "(#100) generic template: 1 to 10 elements"
        return None
    return f"(#100) unsupported template_type {kind!r}"


def main() -> None:
    """Run the fake on its own: `python -m engine.local.fake_graph --port 8081` (benchmarks, manual tests)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds added to every send")
    args = parser.parse_args()
    web.run_app(
        FakeGraph(delay=args.delay).app(),
        host=args.host,
        port=args.port,
        access_log=None,
        print=lambda _: print(f"fake Graph API on http://{args.host}:{args.port}", flush=True),
    )


if __name__ == "__main__":
    main()
