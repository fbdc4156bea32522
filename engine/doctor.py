"""`otnflow doctor`: the Facebook-side checks most first-day failures come from, one line each, with the fix.

Each check returns a verdict: ok, FAIL (something to fix; the exit status is 1) or skip (a check it depends on
failed). Secrets are checked for presence only and never printed.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterator
from contextlib import aclosing
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import aiohttp

from .config import ConfigError, Settings, load_settings, missing_secrets
from .flow import check_paths
from .messenger.client import GraphClient
from .runtime.assembly import graph_settings
from .store import open_store

REQUIRED_FIELDS = ("messages", "messaging_postbacks", "messaging_optins")
OPTIONAL_FIELDS = ("messaging_referrals", "message_reactions")  # used when present: they reopen the window


class Status(StrEnum):
    OK = "ok"
    FAIL = "FAIL"  # something to fix: the exit status is 1
    SKIP = "skip"  # not checked: what it needs is missing or failed


@dataclass(frozen=True)
class Verdict:
    status: Status
    check: str
    detail: str

    def __str__(self) -> str:
        return f"{self.status.value:<5} {self.check}: {self.detail}"


def ok(check: str, detail: str) -> Verdict:
    return Verdict(Status.OK, check, detail)


def fail(check: str, detail: str) -> Verdict:
    return Verdict(Status.FAIL, check, detail)


def skip(check: str, detail: str) -> Verdict:
    return Verdict(Status.SKIP, check, detail)


def summary(verdicts: list[Verdict]) -> str:
    """One line; skipped checks are counted apart: they were not found fine, they were not looked at."""
    count = Counter(v.status for v in verdicts)
    return f"doctor: {count[Status.OK]} ok, {count[Status.SKIP]} skipped, {count[Status.FAIL]} to fix"


class Doctor:
    def __init__(self, config: Path | None, url: str | None) -> None:
        self.config = config
        self.url = url
        self.settings: Settings | None = None
        self.asks_for_otn = False
        self.page_id = ""

    async def run(self) -> list[Verdict]:
        verdicts = list(self.local_checks())
        if self.settings is None:
            return verdicts
        async with (
            aiohttp.ClientSession() as session,
            aclosing(GraphClient(session, graph_settings(self.settings))) as graph,
        ):
            verdicts += [
                await check
                for check in (
                    self.page_token(graph),
                    self.subscription(graph),
                    self.features(graph),
                    self.store(),
                    self.webhook(session),
                )
            ]
        return verdicts

    # -- local -----------------------------------------------------------------------------------------------
    def local_checks(self) -> Iterator[Verdict]:
        try:
            self.settings = load_settings(self.config, require_secrets=False)
        except ConfigError as err:
            yield fail("config", f"{err}")
            return
        yield ok("config", f"{self.config or 'config.toml'} loads")
        settings = self.settings
        flows, diagnostics = check_paths([settings.path(settings.flows.dir)], settings.flow_options())
        errors = [d for d in diagnostics if d.is_error]
        self.asks_for_otn = any(s.otn for f in flows.values() for s in f.spec.states.values())
        if errors:
            yield fail("flows", f"{len(errors)} error(s), first: {errors[0]}; run `otnflow check` and fix them")
        else:
            yield ok("flows", f"{len(flows)} flow(s) pass the checker ({len(diagnostics)} warning(s))")
        missing = missing_secrets(settings)
        if missing:
            yield fail(
                "secrets",
                f"{', '.join(missing)} not set: export them before `otnflow serve` (docs/going-live.md, step 3)",
            )
        else:
            yield ok("secrets", "OTNFLOW_PAGE_TOKEN, OTNFLOW_APP_SECRET and OTNFLOW_VERIFY_TOKEN are set (not shown)")
        if self.asks_for_otn and not settings.policy.otn_enabled:
            yield fail(
                "OTN setting",
                "the flows ask for One-Time Notifications but config.toml turns OTN off "
                "(policy.page_in_eu or policy.otn_available): remove the flows' otn steps, or "
                "fix the setting if the Page may use OTN",
            )

    # -- Graph API -------------------------------------------------------------------------------------------
    async def page_token(self, graph: GraphClient) -> Verdict:
        assert self.settings is not None
        if not self.settings.page_token:
            return skip("page token", "no OTNFLOW_PAGE_TOKEN")
        status, body = await _get(graph, "me", {"fields": "id,name,category"})
        error = _error(body)
        if error and error.get("code") == 190:
            return fail(
                "page token",
                "Meta says the token is invalid or expired (code 190): generate a new Page "
                "access token in the Meta app's Messenger settings",
            )
        if error and "User" in str(error.get("message", "")):
            return fail(
                "page token",
                "this is a user access token, not a Page access token: generate the token "
                "for the Page in the Meta app's Messenger settings",
            )
        if status != 200 or not isinstance(body, dict) or "id" not in body:
            return fail("page token", f"GET /me answered {status}: {_describe(body)}")
        self.page_id = str(body["id"])
        return ok("page token", f"belongs to the Page {body.get('name', '?')!r} ({self.page_id})")

    async def subscription(self, graph: GraphClient) -> Verdict:
        assert self.settings is not None
        if not self.page_id:
            return skip("webhook fields", "needs a valid page token")
        status, body = await _get(graph, f"{self.page_id}/subscribed_apps")
        if status != 200 or not isinstance(body, dict):
            return fail("webhook fields", f"GET /{self.page_id}/subscribed_apps answered {status}: {_describe(body)}")
        apps = body.get("data", [])
        app_id = self.settings.graph.app_id
        if app_id:
            apps = [a for a in apps if str(a.get("id")) == app_id]
        if not apps:
            which = f"app {app_id}" if app_id else "no app"
            return fail(
                "webhook fields",
                f"{which} is subscribed to the Page: subscribe it with the fields "
                f"{', '.join(REQUIRED_FIELDS)} (docs/going-live.md, step 5)",
            )
        fields = set(apps[0].get("subscribed_fields", []))
        missing = [f for f in REQUIRED_FIELDS if f not in fields]
        if missing:
            lost = " (every OTN opt-in, so every token, would be lost)" if "messaging_optins" in missing else ""
            return fail(
                "webhook fields",
                f"the app is not subscribed to {', '.join(missing)}{lost}: add them in the "
                "app's Messenger > Webhooks settings",
            )
        extra = [f for f in OPTIONAL_FIELDS if f in fields]
        return ok(
            "webhook fields",
            f"subscribed to {', '.join(REQUIRED_FIELDS)}" + (f" (and {', '.join(extra)})" if extra else ""),
        )

    async def features(self, graph: GraphClient) -> Verdict:
        assert self.settings is not None
        if not self.page_id:
            return skip("OTN feature", "needs a valid page token")
        status, body = await _get(graph, "me/messaging_feature_review")
        if status != 200 or not isinstance(body, dict):
            return fail("OTN feature", f"GET /me/messaging_feature_review answered {status}: {_describe(body)}")
        otn = [f for f in body.get("data", []) if str(f.get("feature", "")).startswith("one_time_notif")]
        approved = any(str(f.get("status", "")).lower() == "approved" for f in otn)
        if approved:
            return ok("OTN feature", "the Page may send One-Time Notifications")
        if not self.asks_for_otn:
            return ok("OTN feature", "not granted, and no flow asks for it")
        state = ", ".join(f"{f.get('feature')}: {f.get('status')}" for f in otn) or "never requested"
        return fail(
            "OTN feature",
            f"the flows ask for One-Time Notifications but the Page has no approved OTN "
            f"feature ({state}): request it in Page settings > Advanced Messaging > "
            "Requested Features (not available to Pages or users in the EU)",
        )

    # -- store and webhook -----------------------------------------------------------------------------------
    async def store(self) -> Verdict:
        assert self.settings is not None
        url = self.settings.store_url
        try:
            store = open_store(url)
            await store.open()
            try:
                counts = await store.counts()
            finally:
                await store.close()
        except Exception as err:  # any driver error: report it, do not crash the doctor
            return fail("store", f"{url.split('://')[0]} store unreachable: {type(err).__name__}: {err}")
        return ok("store", f"{url.split('?')[0]} reachable, schema current ({counts.get('users', 0)} users)")

    async def webhook(self, session: aiohttp.ClientSession) -> Verdict:
        assert self.settings is not None
        if not self.url:
            return skip("webhook URL", "pass --url https://your.host/webhook to check the handshake")
        if not self.settings.verify_token:
            return skip("webhook URL", "needs OTNFLOW_VERIFY_TOKEN (the handshake sends it)")
        challenge = secrets.token_hex(8)
        params = {"hub.mode": "subscribe", "hub.verify_token": self.settings.verify_token, "hub.challenge": challenge}
        try:
            async with session.get(self.url, params=params, timeout=aiohttp.ClientTimeout(total=10)) as response:
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError) as err:
            return fail(
                "webhook URL",
                f"{self.url} unreachable ({type(err).__name__}): is `otnflow serve` running "
                "and the tunnel or proxy up?",
            )
        if response.status == 200 and text == challenge:
            return ok("webhook URL", f"{self.url} answered the verification handshake")
        if response.status == 403:
            return fail(
                "webhook URL", f"{self.url} refused the verify token: the server runs with another OTNFLOW_VERIFY_TOKEN"
            )
        return fail("webhook URL", f"{self.url} answered {response.status} {text[:60]!r} instead of the challenge")


async def _get(graph: GraphClient, path: str, params: dict[str, str] | None = None) -> tuple[int, Any]:
    try:
        return await graph.get(path, params)
    except (aiohttp.ClientError, TimeoutError) as err:
        return 0, {"error": {"message": f"Graph API unreachable: {type(err).__name__}"}}


def _error(body: Any) -> dict[str, Any] | None:
    return body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), dict) else None


def _describe(body: Any) -> str:
    error = _error(body)
    return f"code {error.get('code')}: {error.get('message')}" if error else str(body)[:120]
