"""The Send API and User Profile client: POSTs (sends, the Handover Protocol) over the client's own kept-alive
connections (poster.py), GETs (profiles) on the app's aiohttp session; bounded retries with exponential backoff and
full jitter, every failure classified (messenger/errors.py). It never raises on a Graph API answer; the caller decides
from the returned outcome."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import aiohttp
from yarl import URL

from .. import jsonio
from ..immutable import immutable
from .errors import GraphError, Outcome, classify
from .poster import NoAnswer, Poster
from .signature import appsecret_proof

log = logging.getLogger("otnflow.graph")
#: The User Profile fields asked for once per user; templates read them as `user.<field>` (the flow checker's
#: USER_FIELDS lists them too).
PROFILE_FIELDS = ("first_name", "last_name", "profile_pic")
#: The Page Inbox's app id (people answering in Meta Business Suite): the usual target of a hand-over.
PAGE_INBOX_APP_ID = "263902037430900"
CONNECTIONS = 100  # at most this many POSTs in flight at once; the others wait for a connection
METADATA_MAX_CHARS = 1_000  # the note for the agent; Meta's documented limit for `metadata` is 1,000 characters


class ThreadControl(StrEnum):
    """The Handover Protocol's calls, named as Meta names their endpoints."""

    PASS = "pass_thread_control"  # give the thread to another app (target_app_id), with a note
    TAKE = "take_thread_control"  # take it back (the Primary Receiver may, from any app)
    RELEASE = "release_thread_control"  # a secondary receiver gives it back to the Primary Receiver
    REQUEST = "request_thread_control"  # ask the owner for it


@dataclass(frozen=True)
class GraphSettings:
    base_url: str
    version: str
    page_token: str
    app_secret: str
    timeout_seconds: float = 10.0
    max_attempts: int = 5
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 30.0


@immutable(kw_only=True)  # one a send: read-only to the type checker, not frozen at run time (engine/immutable.py)
class SendResult:
    outcome: Outcome
    message_id: str | None = None
    error: GraphError | None = None
    attempts: int = 1
    reached_meta: bool = True  # False only when no attempt got any HTTP answer (all timed out / refused)

    @property
    def detail(self) -> str:
        return self.error.describe() if self.error else ""


Sleep = Callable[[float], Awaitable[None]]


def full_jitter(attempt: int, base: float, longest: float, rng: random.Random) -> float:
    """The wait before retry `attempt` (1, 2, ...): uniform in [0, min(longest, base * 2**attempt)] (AWS's "full
    jitter": retries from many callers spread out instead of arriving together)."""
    return rng.uniform(0, min(longest, base * 2**attempt))


class GraphClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: GraphSettings,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._session = session
        self._poster = Poster(URL(settings.base_url), limit=CONNECTIONS)
        self.settings = settings
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_seconds)
        self._targets: dict[str, str] = {}  # path -> its path and query on the wire, auth included
        self._auth = {"access_token": settings.page_token}
        if settings.app_secret:
            self._auth["appsecret_proof"] = appsecret_proof(settings.page_token, settings.app_secret)

    @property
    def session(self) -> aiohttp.ClientSession:
        """The app's one HTTP session (HTTP actions share its connection pool)."""
        return self._session

    async def aclose(self) -> None:
        """Close the POST connections (`contextlib.aclosing`); the session is its owner's to close."""
        self._poster.close()

    def url(self, path: str) -> str:
        version = self.settings.version.lstrip("v")
        return f"{self.settings.base_url.rstrip('/')}/v{version}/{path.lstrip('/')}"

    def backoff(self, attempt: int) -> float:
        return full_jitter(attempt, self.settings.backoff_base_seconds, self.settings.backoff_max_seconds, self._rng)

    async def send(self, body: dict[str, Any]) -> SendResult:
        """POST /me/messages, retrying transient errors and rate limits up to max_attempts."""
        return await self._post("me/messages", body, "send")

    async def thread_control(
        self, action: ThreadControl, user_id: str, *, target_app_id: str | None = None, metadata: str = ""
    ) -> SendResult:
        """A Handover Protocol call (`/me/pass_thread_control`, ...) for one user's thread, with the note for the
        agent (`metadata`), retried like a send. Meta answers `{"success": true}`."""
        body: dict[str, Any] = {"recipient": {"id": user_id}}
        if target_app_id is not None:
            body["target_app_id"] = int(target_app_id) if target_app_id.isdigit() else target_app_id
        if metadata:
            body["metadata"] = metadata[:METADATA_MAX_CHARS]
        return await self._post(f"me/{action.value}", body, action.value)

    async def _post(self, path: str, body: dict[str, Any], what: str) -> SendResult:
        """POST a JSON body, retrying transient errors and rate limits up to max_attempts; a send succeeds with a
        `message_id`, a thread-control call with `success: true`."""
        reached = False
        error: GraphError | None = None
        for attempt in range(1, self.settings.max_attempts + 1):
            try:
                status, answer = await self._post_once(path, body)
            except (TimeoutError, NoAnswer) as err:
                error = GraphError(
                    status=0, code=None, subcode=None, message=f"{type(err).__name__}: {err}", fbtrace_id=None
                )
                outcome = Outcome.RETRY
            else:
                reached = True
                if status == 200 and isinstance(answer, dict) and "message_id" in answer:
                    return SendResult(
                        outcome=Outcome.SENT, message_id=str(answer["message_id"]), error=None, attempts=attempt
                    )
                if status == 200 and isinstance(answer, dict) and answer.get("success") is True:
                    return SendResult(outcome=Outcome.SENT, message_id=None, error=None, attempts=attempt)
                error = GraphError.from_response(status, answer)
                outcome = classify(error)
            if outcome is not Outcome.RETRY:
                log.warning("%s failed: %s (%s)", what, outcome.value, error.describe())
                return SendResult(outcome=outcome, message_id=None, error=error, attempts=attempt, reached_meta=reached)
            if attempt < self.settings.max_attempts:
                delay = self.backoff(attempt)
                log.info("%s attempt %d failed (%s); retrying in %.2fs", what, attempt, error.describe(), delay)
                await self._sleep(delay)
        assert error is not None
        log.warning("%s gave up after %d attempts: %s", what, self.settings.max_attempts, error.describe())
        return SendResult(
            outcome=Outcome.RETRY,
            message_id=None,
            error=error,
            attempts=self.settings.max_attempts,
            reached_meta=reached,
        )

    async def profile(self, user_id: str, timeout: float = 3.0) -> dict[str, Any] | None:
        """The User Profile API, once, short timeout; None on any failure (a reply never waits on it)."""
        try:
            status, answer = await self._request(
                "GET", user_id, params={"fields": ",".join(PROFILE_FIELDS)}, timeout=timeout
            )
        except (TimeoutError, aiohttp.ClientError) as err:
            log.info("profile of a user unavailable: %s", type(err).__name__)
            return None
        if status != 200 or not isinstance(answer, dict):
            log.info("profile of a user unavailable: HTTP %s", status)
            return None
        return {k: answer[k] for k in PROFILE_FIELDS if isinstance(answer.get(k), str)}

    async def get(self, path: str, params: dict[str, str] | None = None) -> tuple[int, Any]:
        return await self._request("GET", path, params=params)

    async def _post_once(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """One POST attempt on the client's kept-alive connections: the status and the decoded answer."""
        target = self._targets.get(path)
        if target is None:  # a handful of paths (me/messages, the thread-control calls): each built once
            target = self._url(path, None).raw_path_qs
            if len(self._targets) < 8:
                self._targets[path] = target
        status, raw = await self._poster.post(target, jsonio.dumps_bytes(body), self.settings.timeout_seconds)
        return status, _decoded(raw)

    async def _request(
        self, method: str, path: str, *, params: dict[str, str] | None = None, timeout: float | None = None
    ) -> tuple[int, Any]:
        client_timeout = aiohttp.ClientTimeout(total=timeout) if timeout else self._timeout
        async with self._session.request(method, self._url(path, params), timeout=client_timeout) as response:
            return response.status, _decoded(await response.read())

    def _url(self, path: str, params: dict[str, str] | None) -> URL:
        return URL(self.url(path)).with_query({**self._auth, **(params or {})})


def _decoded(raw: bytes) -> Any:
    """A Graph API answer's JSON (UTF-8: no charset sniffing); None when empty, not JSON or not UTF-8."""
    try:
        return jsonio.loads(raw) if raw else None
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        return None
