"""Hand-over to a person (Messenger's Handover Protocol), the runtime side.

Who owns a user's thread is kept on the user record (`thread_owner`, "" for the bot). It changes only on Meta's
word: a pass Meta accepted (the outbox's thread-control row, sent after the handing state's replies), a
`pass_thread_control` / `take_thread_control` event, or evidence (an event in `standby[]`). While another app
owns it the bot stays silent (the policy gate refuses everything but an agent's reply: `with_human`).

Control comes back three ways, each ending in the flow's `hand_back` (the handing state's `resume`):
- Meta passes it back (an agent marked the conversation Done in the Page Inbox);
- the idle timeout: no agent reply for `handover.idle_minutes` (the `IdleTimer` stores an internal event, so the
  take-back runs in the user's turn like any event);
- the user types one of the handing state's `take_back` words.
The bot then calls `take_thread_control` itself (a thread-control row before the resumed state's replies).

Internal events (an agent's reply, the idle timeout) go through the inbox like Meta's: stored once by key, handled
in the user's turn, marked handled in the step's one write. Their body carries an `otnflow` object, a kind the
webhook never stores.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp

from ..flow import HandoverCall
from ..messenger.client import ThreadControl
from ..messenger.events import Handover, HandoverKind
from ..store import OutboxItem, OutboxMeta, Store, StoredEvent, UserRecord
from .clock import Clock

log = logging.getLogger("otnflow.handover")

#: An outbox row's `meta.kind` for a Handover Protocol call: no message, so no policy decision (it sends nothing
#: to the user); the sender calls the Graph API's thread-control endpoint instead of the Send API.
THREAD_CONTROL = "thread_control"
#: Inbox kinds the runtime itself stores (never accepted from the webhook).
AGENT_REPLY = "agent_reply"
HANDOVER_IDLE = "handover_idle"
INTERNAL_KINDS = frozenset({AGENT_REPLY, HANDOVER_IDLE})
#: The owner recorded when Meta delivers in `standby[]` without having told us who took the thread.
UNKNOWN_OWNER = "unknown"
MINUTE_MS = 60_000


def control_row(
    key: str, user_id: str, action: ThreadControl, *, target: str = "", note: str = "", state: str = ""
) -> OutboxItem:
    """A thread-control call as an outbox row, so it is ordered after the replies before it and survives a
    restart like them. `message` holds the call (and the handing state), not a Send API message."""
    message: dict[str, Any] = {"thread_control": action.value, "state": state}
    if target:
        message["target_app_id"] = target
    if note:
        message["metadata"] = note
    return OutboxItem(
        key=key, user_id=user_id, message=message, meta=OutboxMeta(kind=THREAD_CONTROL, promotional=False)
    )


def internal_event(kind: str, key: str, user: UserRecord, now_ms: int, data: dict[str, Any]) -> StoredEvent:
    body = {
        "sender": {"id": user.user_id},
        "recipient": {"id": user.page_id},
        "timestamp": now_ms,
        "otnflow": {kind: data},
    }
    return StoredEvent(
        key=key,
        user_id=user.user_id,
        page_id=user.page_id,
        timestamp=now_ms,
        kind=kind,
        body=json.dumps(body, ensure_ascii=False),
        received_ms=now_ms,
    )


def internal_data(stored: StoredEvent) -> dict[str, Any]:
    data = json.loads(stored.body).get("otnflow", {}).get(stored.kind, {})
    return data if isinstance(data, dict) else {}


def agent_reply_event(user: UserRecord, text: str, request_id: str, now_ms: int) -> StoredEvent:
    """A person's reply through POST /api/agent/reply, keyed by the request's id: a retried request is one reply."""
    return internal_event(AGENT_REPLY, f"{user.user_id}:agent:{request_id}", user, now_ms, {"text": text})


def idle_since(user: UserRecord) -> int:
    """The agent's silence counts from the hand-over or from their last reply through otnflow, whichever is later."""
    return max(user.handed_over_ms, user.agent_replied_ms)


def is_idle(user: UserRecord, now_ms: int, idle_minutes: float) -> bool:
    return user.with_human and idle_minutes > 0 and now_ms - idle_since(user) >= idle_minutes * MINUTE_MS


def release(user: UserRecord) -> str:
    """The bot has the thread again: the record forgets the hand-over; returns the state to resume at ("" none)."""
    state = user.handover_state
    user.thread_owner, user.handed_over_ms, user.handover_state = "", 0, ""
    return state


def receive(user: UserRecord, handover: Handover, timestamp: int, bot_app_id: str) -> str | None:
    """A Handover Protocol event, applied to the record. Returns the state to resume at when control came back
    to the bot ("" when nothing names one), None when the bot did not get the thread back."""
    if handover.kind is HandoverKind.REQUEST:
        log.info("another app (%s) asks for a user's thread: not passed by itself", handover.requested_owner_app_id)
        return None
    new_owner = handover.new_owner_app_id or ""
    if handover.kind is HandoverKind.PASS:  # Meta tells the app that receives the thread: with no id known, us
        to_bot = not bot_app_id or not new_owner or new_owner == bot_app_id
    else:  # TAKE: Meta tells the app that lost it
        to_bot = bool(bot_app_id) and new_owner == bot_app_id
    if to_bot:
        return release(user) if user.with_human else ""
    if not user.with_human:  # another app took the thread (an agent opened the conversation in the Page Inbox)
        user.handover_state = ""
        user.handed_over_ms = timestamp
    user.thread_owner = new_owner or UNKNOWN_OWNER
    return None


@dataclass(frozen=True)
class HandoverSettings:
    bot_app_id: str = ""  # graph.app_id: who "us" is in Meta's handover events
    idle_minutes: float = 0.0  # take the thread back after this much agent silence; 0: never
    alert_url: str = ""  # POSTed to on every hand-over (from the environment); empty: only the log line


class HandoverAlert:
    """Tells a person that a conversation waits for them: a log line always, and a POST to the alert URL when one
    is configured. Never blocks nor fails the conversation: the POST runs in the background, its failure is
    logged (without the URL, which may hold a secret)."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0
        self.failed = 0

    def notify(self, user_id: str, call: dict[str, Any], at_ms: int) -> None:
        log.warning(
            "conversation handed over to a person: user %s, to app %s, from state %r",
            user_id,
            call.get("target_app_id", ""),
            call.get("state", ""),
        )
        if not self.url:
            return
        body = {
            "user_id": user_id,
            "to": call.get("target_app_id", ""),
            "state": call.get("state", ""),
            "note": call.get("metadata", ""),
            "at_ms": at_ms,
        }
        self._background(self._post(body))

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name="handover alert")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, body: dict[str, Any]) -> None:
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            async with aiohttp.ClientSession(timeout=timeout) as session, session.post(self.url, json=body) as answer:
                if answer.status >= 400:
                    raise RuntimeError(f"HTTP {answer.status}")
            self.sent += 1
        except Exception as err:  # an alert must never take the conversation down
            self.failed += 1
            log.warning(
                "hand-over alert not delivered: %s", type(err).__name__ if not isinstance(err, RuntimeError) else err
            )

    async def flush(self) -> None:
        await asyncio.gather(*list(self._tasks), return_exceptions=True)


class IdleTimer:
    """Takes threads back from people who went silent: every `interval` seconds (and whenever `tick` is called),
    users with a person and no agent reply for `idle_minutes` get an internal event, handled in their turn."""

    def __init__(
        self, store: Store, clock: Clock, settings: HandoverSettings, wake: Callable[[str, list[StoredEvent]], None]
    ) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.wake = wake

    async def tick(self, limit: int = 1000) -> int:
        """Store an idle event for each silent thread (keyed by its hand-over and last reply: stored once)."""
        if self.settings.idle_minutes <= 0:
            return 0
        now = self.clock.now_ms()
        events = [
            internal_event(HANDOVER_IDLE, f"{u.user_id}:idle:{u.handed_over_ms}:{u.agent_replied_ms}", u, now, {})
            for u in await self.store.users_with_human(limit)
            if is_idle(u, now, self.settings.idle_minutes)
        ]
        new = await self.store.add_events(events) if events else []
        for event in new:
            self.wake(event.user_id, [event])
        return len(new)

    async def run(self, interval: float = 30.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.tick()
            except Exception:  # housekeeping: never let it take the process down
                log.exception("the hand-over idle check failed")


def pass_row(key: str, user_id: str, call: HandoverCall) -> OutboxItem:
    """The hand-over itself, after the handing state's replies: pass the thread with the note for the agent."""
    return control_row(key, user_id, ThreadControl.PASS, target=call.app_id, note=call.note, state=call.state)
