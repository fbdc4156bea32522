"""A model of the OTN loop's promises, and a Hypothesis state machine that drives the real engine through the
flow-test harness and checks them after every step against the fake Graph API's own record (what Meta received,
refused and issued), never against the engine's store.

Users say and tap, opt in, double-tap, say "stop" and come back, move to the EU; the clock jumps from minutes to
more than a year; campaigns run with and without variables and segments, some while a user taps the notification
at once; the server restarts, gracefully or killed the way SIGKILL kills it (`Bot.restart(kill=True)`).

The test files (tests/model/test_otn_model.py) run it bounded for CI; docs/testing-flows.md gives the longer
profile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from engine.config import load_settings
from engine.flow import load_flows
from engine.flow.segments import parse_segment
from engine.local.fake_graph import SentMessage
from engine.runtime.campaigns import CampaignError, campaign_runs
from engine.testing.harness import PAGE_ID, Bot, BotUser, HarnessError
from engine.web.keys import STORE

ROOT = Path(__file__).resolve().parents[2]
FLOWS = ROOT / "tests" / "fixtures" / "model_flows"
USERS = ("ann", "bob", "cat")
MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WINDOW_MS = DAY_MS
PERIOD_MS = DAY_MS  # policy.otn_request_period_hours
TOKEN_MS = 365 * DAY_MS
#: What resubscribes a user in the model's flow (the welcome state) and what unsubscribes them.
SUBSCRIBING_TEXTS = frozenset({"hi", "menu", "i live in the eu"})
SUBSCRIBING_TAPS = frozenset({"Menu", "Show me"})
REQUEST_TITLES = {"Tell me the shop's news": ("news", None)}
RESTOCK_TITLE = re.compile(r"^Tell me when the (.+) is back$")
NOTIFICATION = re.compile(r"^\[(red|white|any|news)\] (.*?) ?(is back|Something new in the shop)$")
JUMPS_MS = (5 * MINUTE_MS, 3 * HOUR_MS, 23 * HOUR_MS, 25 * HOUR_MS, 3 * DAY_MS, 8 * DAY_MS, 366 * DAY_MS)


class Violation(AssertionError):
    """A promise of issue 11 broken, with the fake Graph API's record that shows it."""


@dataclass
class Checks:
    """Which promises the machine holds the engine to. All on by default; a check is switched off only while the
    feature it tests has not landed (the test says which, with an xfail naming the missing fix)."""

    request_variables: bool = True  # issue 11 §1: a token serves only its own request's variables
    consent: bool = True  # issue 11 §2: "stop" revokes tokens, keeps the user out of campaigns and requests
    tap_at_once: bool = True  # issue 11 §3.1: a tap on the notification the moment it arrives is re-asked
    resume_gate: bool = True  # issue 11 §3.4: a resumed campaign item passes the gate again (EU since the kill)
    resume_expired: bool = True  # issue 11 §3.5: a token that expired since the kill is never sent on resume


@dataclass
class UserModel:
    """What the test knows of one user from what it made them do, independent of the engine."""

    engagements: list[int] = field(default_factory=list)  # times of window-opening actions, as Meta saw them
    unsubscribed_at: list[tuple[int, int]] = field(default_factory=list)  # (from, until) spans; until -1: still
    eu_since: int | None = None
    tags: set[str] = field(default_factory=set)
    opted_payloads: set[str] = field(default_factory=set)
    optins: dict[str, list[int]] = field(default_factory=dict)  # topic -> when the user tapped Notify Me

    def subscribed(self, at_ms: int) -> bool:
        return not any(start <= at_ms and (end == -1 or at_ms < end) for start, end in self.unsubscribed_at)

    def unsubscribe(self, at_ms: int) -> None:
        if self.subscribed(at_ms):
            self.unsubscribed_at.append((at_ms, -1))

    def resubscribe(self, at_ms: int) -> None:
        if self.unsubscribed_at and self.unsubscribed_at[-1][1] == -1:
            self.unsubscribed_at[-1] = (self.unsubscribed_at[-1][0], at_ms)

    def unsubscribed_between(self, start: int, end: int) -> bool:
        return any(start <= s <= end for s, _ in self.unsubscribed_at)

    def window_open(self, at_ms: int) -> bool:
        seen = [e for e in self.engagements if e <= at_ms]
        return bool(seen) and at_ms - max(seen) < WINDOW_MS

    def in_eu(self, at_ms: int) -> bool:
        return self.eu_since is not None and self.eu_since <= at_ms


@dataclass
class Obligation:
    """A delivery's promise: the topic's next request goes out with the user's first engagement after it."""

    user: str
    topic: str
    delivered_ms: int


class OtnMachine(RuleBasedStateMachine):
    """Three users, two topics (one with request variables), the real engine."""

    store_url: str | None = None  # None: a fresh SQLite file; else a fresh MongoDB database URL per run
    checks = Checks()
    lease_seconds = 2.0
    claim_seconds = 5.0
    _runs = 0

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.Runner()
        self.bot: Bot | None = None
        self._started: Any = None
        self.models = {u: UserModel() for u in USERS}
        self.seen = 0  # fake.sent entries already checked
        self.rejected_seen = 0
        self.obligations: list[Obligation] = []
        self.kill_ms: list[int] = []  # when the server was killed
        self.max_requests = 1
        self.otn_on = True
        self.step_started_ms = 0
        self.current_campaign: tuple[str, str, dict[str, str]] | None = None

    # -- set-up ------------------------------------------------------------------------------------------------
    @initialize(
        otn_on=st.sampled_from([True, True, True, True, False]),
        max_requests=st.sampled_from([1, 1, 1, 2]),
        visits=st.lists(
            st.tuples(st.sampled_from(USERS), st.sampled_from(["Red", "White", "News"]), st.booleans()), max_size=4
        ),
    )
    def start(self, otn_on: bool, max_requests: int, visits: list[tuple[str, str, bool]] = []) -> None:  # noqa: B006
        """A bot with the drawn settings; the users the examples start with have browsed (and often opted in)."""
        type(self)._runs += 1
        self.otn_on, self.max_requests = otn_on, max_requests
        settings: dict[str, Any] = {
            "flows_default": "shop",
            "policy_otn_available": otn_on,
            "policy_otn_max_requests": max_requests,
            "notify_claim_seconds": self.claim_seconds,
            "dispatcher_lease_seconds": self.lease_seconds,
            "log_level": "ERROR",
        }
        if self.store_url is not None:
            settings["store_url"] = self.store_url.format(run=f"{id(self):x}{type(self)._runs}")
        self._started = Bot.start(FLOWS, FLOWS, config=ROOT / "config.toml", compiled=compiled_flows(), **settings)
        self.bot = self.loop.run(self._started.__aenter__())
        for user in USERS:
            self.bot.user(user)
        self.step_started_ms = self.bot.clock.now_ms()
        for name, choice, opt_in in visits:
            self.browses(name, choice, opt_in)

    def teardown(self) -> None:
        try:
            if self._started is not None:
                self.loop.run(self._started.__aexit__(None, None, None))
        finally:
            self.loop.close()

    @property
    def running(self) -> Bot:
        assert self.bot is not None
        return self.bot

    def user(self, name: str) -> BotUser:
        return self.running.users[name]

    def run(self, coro: Any) -> Any:
        self.step_started_ms = self.running.clock.now_ms()
        return self.loop.run(coro)

    # -- what users do -----------------------------------------------------------------------------------------
    def engaged(self, name: str, at_ms: int, text: str | None = None, tap: str | None = None) -> None:
        model = self.models[name]
        model.engagements.append(at_ms)
        if text is not None and text.lower() == "stop":
            model.unsubscribe(at_ms)
        elif (text is not None and text.lower() in SUBSCRIBING_TEXTS) or tap in SUBSCRIBING_TAPS:
            model.resubscribe(at_ms)
        if text is not None and text.lower() == "i live in the eu" and model.eu_since is None:
            model.eu_since = at_ms
        if tap == "Red":
            model.tags.add("likes_red")
        if tap == "White":
            model.tags.add("likes_white")

    @rule(name=st.sampled_from(USERS), text=st.sampled_from(["hi", "menu", "ok", "stop", "I live in the EU"]))
    def says(self, name: str, text: str) -> None:
        self.run(self.user(name).says(text))
        self.engaged(name, self.running.clock.now_ms(), text=text)

    @rule(name=st.sampled_from(USERS), choice=st.sampled_from(["Red", "White", "News"]), opt_in=st.booleans())
    def browses(self, name: str, choice: str, opt_in: bool) -> None:
        """A typical visit: says hi, taps a choice that asks for a notification, often taps Notify Me."""
        self.says(name, "hi")
        self.run(self.user(name).taps(choice))
        self.engaged(name, self.running.clock.now_ms(), tap=choice)
        if opt_in:
            self.opts_in(name)

    @rule(name=st.sampled_from(USERS), pick=st.integers(0, 5))
    def taps(self, name: str, pick: int) -> None:
        """Tap one of the choices the latest message offering any offers."""
        title = self.offered(name, pick)
        if title is not None:
            self.run(self.user(name).taps(title))
            self.engaged(name, self.running.clock.now_ms(), tap=title)

    @rule(name=st.sampled_from(USERS), pick=st.integers(0, 5))
    def double_taps(self, name: str, pick: int) -> None:
        """Two taps on the same quick reply, both in one webhook batch (an impatient thumb)."""
        title = self.offered(name, pick)
        payload = self.offered_payload(name, title) if title else None
        if title is None or payload is None:
            return
        bot = self.running
        first = bot.clock.advance(seconds=1)
        events = [
            {
                "sender": {"id": name},
                "recipient": {"id": PAGE_ID},
                "timestamp": at,
                "message": {"mid": bot.mid(), "text": title, "quick_reply": {"payload": payload}},
            }
            for at in (first, first + 150)
        ]
        bot.fake.saw(name, first + 150)
        self.run(self.post(events))
        self.engaged(name, first, tap=title)

    @rule(name=st.sampled_from(USERS))
    def late_retry(self, name: str) -> None:
        """Meta retries a 30-hour-old message ("ok", which changes nothing in the flow): not a new engagement."""
        bot = self.running
        old = bot.clock.now_ms() - 30 * HOUR_MS
        event = {"sender": {"id": name}, "recipient": {"id": PAGE_ID}, "timestamp": old}
        event["message"] = {"mid": bot.mid(), "text": "ok"}
        self.run(self.post([event]))

    @rule(name=st.sampled_from(USERS))
    def opts_in(self, name: str) -> None:
        """Tap Notify Me on the latest request, unless already tapped: one token a request."""
        model = self.models[name]
        for sent in reversed(self.running.fake.messages_to(name)):
            request = request_of(sent)
            if request is not None:
                payload = sent.body["message"]["attachment"]["payload"]["payload"]
                if payload in model.opted_payloads:
                    return
                model.opted_payloads.add(payload)
                self.run(self.user(name).opts_in(request[0]))
                model.resubscribe(self.running.clock.now_ms())  # tapping Notify Me subscribes again
                model.optins.setdefault(request[0], []).append(self.running.clock.now_ms())
                return

    @rule(jump=st.sampled_from(JUMPS_MS))
    def time_passes(self, jump: int) -> None:
        self.running.clock.advance(seconds=jump / 1000)

    # -- what the page does ------------------------------------------------------------------------------------
    campaigns = st.sampled_from(
        [
            ("restock", "", {"product": "Rioja"}),
            ("restock", "", {"product": "Sauvignon"}),
            ("restock", "likes_red", {"product": "Rioja"}),
            ("restock", "likes_white and not likes_red", {"product": "Sauvignon"}),
            ("restock", "", {"product": "Merlot"}),  # a value nobody asked for
            ("restock", "", {}),  # variables missing
            ("news", "", {}),
            ("news", "not likes_red", {}),
        ]
    )

    @rule(campaign=campaigns)
    def notify(self, campaign: tuple[str, str, dict[str, str]]) -> None:
        self.current_campaign = campaign
        self.running.clock.advance(seconds=1)  # the manual clock: nothing else happens in the same millisecond
        with contextlib.suppress(CampaignError):
            self.run(self.running.notify(campaign[0], campaign[1], **campaign[2]))

    @precondition(lambda self: self.checks.tap_at_once)
    @rule(campaign=campaigns, name=st.sampled_from(USERS))
    def notify_and_tap_at_once(self, campaign: tuple[str, str, dict[str, str]], name: str) -> None:
        """A campaign runs; the moment the user's notification arrives, they tap its quick reply."""
        self.current_campaign = campaign
        self.run(self._notify_and_tap(campaign, name))

    async def _notify_and_tap(self, campaign: tuple[str, str, dict[str, str]], name: str) -> None:
        bot = self.running
        bot.clock.advance(seconds=1)
        before = len(bot.fake.messages_to(name))
        task = asyncio.create_task(bot.notify(campaign[0], campaign[1], **campaign[2]))
        for _ in range(2000):
            if task.done() or any(m.otn_token for m in bot.fake.messages_to(name)[before:]):
                break
            await asyncio.sleep(0.0005)
        if any(m.otn_token for m in bot.fake.messages_to(name)[before:]):
            title = "Show me" if campaign[0] == "restock" else "Thanks!"
            with contextlib.suppress(HarnessError):
                await self.user(name).taps(title)
                self.engaged(name, bot.clock.now_ms(), tap=title)
        with contextlib.suppress(CampaignError):
            await task

    @rule(
        what=st.sampled_from(["restart", "kill_campaign", "kill_conversation"]),
        campaign=campaigns,
        names=st.lists(st.sampled_from(USERS), min_size=1, max_size=3, unique=True),
        after=st.integers(min_value=0, max_value=4),
        meanwhile=st.sampled_from([None, None, "eu", "stop", "year"]),
    )
    def server(
        self,
        what: str,
        campaign: tuple[str, str, dict[str, str]],
        names: list[str],
        after: int,
        meanwhile: str | None = None,
    ) -> None:
        """The server restarts: gracefully, or killed (SIGKILL) mid-campaign (after `after` sends reached Meta;
        then, `meanwhile`, a user moves to the EU or says stop, or a year passes; then the same campaign runs again
        and resumes) or while users' messages are being handled (`names`: who moves, or writes)."""
        if what == "restart":
            self.run(self.running.restart())
        elif what == "kill_campaign":
            self.current_campaign = campaign
            self.run(self._killed_campaign(campaign, after, names, meanwhile))
        else:
            self.run(self._write_then_kill(names, after))

    async def _killed_campaign(
        self, campaign: tuple[str, str, dict[str, str]], after: int, names: list[str], meanwhile: str | None
    ) -> None:
        bot = self.running
        bot.clock.advance(seconds=1)
        before = len(bot.fake.sent)
        bot.fake.delay = 0.005  # Meta's latency keeps sends in flight when the kill comes (those never arrive)
        task = asyncio.create_task(bot.notify(campaign[0], campaign[1], **campaign[2]))
        try:
            for _ in range(2000):
                if task.done() or len(bot.fake.sent) - before >= after:
                    break
                await asyncio.sleep(0.0005)
            await self._kill()
        finally:
            bot.fake.delay = 0.0
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, CampaignError):
                await task
        said = {"eu": ("I live in the EU", self.checks.resume_gate), "stop": ("stop", self.checks.consent)}
        if meanwhile in said and said[meanwhile][1]:
            for name in names:
                await self.user(name).says(said[meanwhile][0])
                self.engaged(name, bot.clock.now_ms(), text=said[meanwhile][0])
        elif meanwhile == "year" and self.checks.resume_expired:
            bot.clock.advance(days=366)
        try:
            report = await bot.notify(campaign[0], campaign[1], **campaign[2])
        except CampaignError:
            return
        # issue 11 §3.6: a resumed campaign's report and status are final
        if report.counts.get("sending") or report.stopped:
            raise Violation(f"the resumed campaign ended unsettled: {report.as_dict()}")
        stored = [c for c in await campaign_runs(bot.app[STORE], report.campaign.id) if c.id == report.campaign.id]
        if [c.status for c in stored] != ["done"]:
            raise Violation(f"the resumed campaign {report.campaign.id} is not done: {stored}")

    async def _write_then_kill(self, names: list[str], wait: int) -> None:
        bot = self.running
        at = bot.clock.advance(seconds=1)
        events = []
        for name in names:
            events.append(
                {
                    "sender": {"id": name},
                    "recipient": {"id": PAGE_ID},
                    "timestamp": at,
                    "message": {"mid": bot.mid(), "text": "menu"},
                }
            )
            bot.fake.saw(name, at)
            self.engaged(name, at, text="menu")
        bot.fake.delay = 0.002
        try:
            await self.post(events, settle=False)
            for _ in range(wait):
                await asyncio.sleep(0.002)
            await self._kill()
        finally:
            bot.fake.delay = 0.0

    async def _kill(self) -> None:
        self.kill_ms.append(self.running.clock.now_ms())
        await self.running.restart(kill=True)

    # -- helpers -----------------------------------------------------------------------------------------------
    async def post(self, events: list[dict[str, Any]], settle: bool = True) -> None:
        bot = self.running
        body = {"object": "page", "entry": [{"id": PAGE_ID, "time": bot.clock.now_ms(), "messaging": events}]}
        if settle:
            await bot.post(body)
        else:
            from engine.messenger.signature import sign
            from engine.testing.harness import SECRET

            raw = json.dumps(body).encode()
            headers = {"X-Hub-Signature-256": sign(raw, SECRET)}
            async with bot.session.post(f"{bot.url}/webhook", data=raw, headers=headers) as response:
                assert response.status == 200, await response.text()
        for name in {e["sender"]["id"] for e in events}:
            await self.user(name).refresh()

    def offered(self, name: str, pick: int) -> str | None:
        """The `pick`th choice (modulo) of the latest message offering quick replies or postback buttons."""
        for reply in reversed(self.user(name).replies):
            raw = reply.raw.get("message", {})
            buttons = raw.get("attachment", {}).get("payload", {}).get("buttons", [])
            titles = [q["title"] for q in raw.get("quick_replies", [])]
            titles += [b["title"] for b in buttons if b.get("type") == "postback"]
            if raw.get("quick_replies") or buttons:
                return titles[pick % len(titles)] if titles else None
        return None

    def offered_payload(self, name: str, title: str) -> str | None:
        for reply in reversed(self.user(name).replies):
            quick = reply.raw.get("message", {}).get("quick_replies", [])
            if quick:
                found = [q["payload"] for q in quick if q.get("title") == title]
                return found[0] if found else None
        return None

    # -- the promises ------------------------------------------------------------------------------------------
    @invariant()
    def promises_hold(self) -> None:
        if self.bot is None:
            return
        fake = self.bot.fake
        new = fake.sent[self.seen :]
        self.seen = len(fake.sent)
        self.check_refusals(fake.rejected[self.rejected_seen :])
        self.rejected_seen = len(fake.rejected)
        self.check_tokens_used_once()
        for sent in new:
            self.check_message(sent)
        self.check_loop(new)

    def check_refusals(self, rejected: list[dict[str, Any]]) -> None:
        """Nothing refused by Meta's rules, except the one refusal the design relies on: a campaign resumed after a
        kill resends a token that had reached Meta, and Meta's "already used" confirms the first send."""
        used_before_kill = {
            m.otn_token for m in self.running.fake.sent if m.otn_token and self.kill_ms and m.at_ms <= self.kill_ms[-1]
        }
        for refusal in rejected:
            token = refusal["body"].get("recipient", {}).get("one_time_notif_token")
            if refusal["error"] == "one-time notification token already used" and token in used_before_kill:
                continue
            raise Violation(f"Meta refused a send: {refusal['error']}: {json.dumps(refusal['body'])[:300]}")

    def check_tokens_used_once(self) -> None:
        used = Counter(self.running.fake.tokens_used())
        twice = [token for token, count in used.items() if count > 1]
        if twice:
            raise Violation(f"tokens accepted twice: {twice}")

    def check_message(self, sent: SentMessage) -> None:
        fake = self.running.fake
        name = sent.user_id or ""
        model = self.models.get(name)
        if model is None:
            return
        request = request_of(sent)
        if sent.otn_token:
            issued = fake.issued.get(sent.otn_token)
            if issued is None:
                raise Violation(f"a notification to {name} with a token Meta never issued")
            if sent.at_ms - issued.issued_ms > TOKEN_MS:
                raise Violation(f"an expired token sent to {name}")
            if not self.otn_on or model.in_eu(sent.at_ms):
                raise Violation(f"a notification to {name} with OTN off or the user in the EU: {sent.text!r}")
            if self.checks.consent and not model.subscribed(sent.at_ms):
                raise Violation(f"a notification to {name}, who said stop: {sent.text!r}")
            if self.checks.consent and model.unsubscribed_between(issued.issued_ms, sent.at_ms):
                raise Violation(f"a token revoked by 'stop' was sent to {name}: {sent.text!r}")
            self.check_notification_matches_request(sent, issued.payload)
        elif request is not None:
            if not self.otn_on or model.in_eu(sent.at_ms):
                raise Violation(f"an OTN request to {name} with OTN off or the user in the EU: {sent.text!r}")
            if self.checks.consent and not model.subscribed(sent.at_ms):
                raise Violation(f"an OTN request to {name}, who said stop: {sent.text!r}")
            self.check_request_limit(sent, name, request[0])

    def check_notification_matches_request(self, sent: SentMessage, payload: str) -> None:
        """The notification is the topic's, for the variables of the request the user accepted, in the variant of
        the user's segment."""
        asked = self.request_with_payload(payload)
        if asked is None:
            raise Violation(f"no request carried the payload of token used for {sent.user_id}")
        topic, product = asked
        found = NOTIFICATION.match(sent.text or "")
        if found is None:
            raise Violation(f"not a notification of the model's flow: {sent.text!r}")
        variant, said = found.group(1), found.group(2)
        if (variant == "news") != (topic == "news"):
            raise Violation(f"a {topic} token carried another topic's notification: {sent.text!r}")
        if self.checks.request_variables and topic == "restock" and said != product:
            raise Violation(f"{sent.user_id} asked to hear about the {product} and got a notification about the {said}")
        if self.current_campaign and self.current_campaign[1]:
            segment = parse_segment(self.current_campaign[1])
            if not segment.matches(frozenset(self.models[sent.user_id or ""].tags), {}):
                raise Violation(f"{sent.user_id} is outside the segment {self.current_campaign[1]!r}: {sent.text!r}")
        if topic == "restock":
            tags = self.models[sent.user_id or ""].tags
            red, white = "likes_red" in tags, "likes_white" in tags
            expected = "red" if red and not white else "white" if white and not red else "any"
            if variant != expected:
                raise Violation(f"{sent.user_id} (tags {sorted(tags)}) got the [{variant}] variant: {sent.text!r}")

    def request_with_payload(self, payload: str) -> tuple[str, str | None] | None:
        for sent in self.running.fake.sent:
            if sent.body.get("message", {}).get("attachment", {}).get("payload", {}).get("payload") == payload:
                return request_of(sent)
        return None

    def requests_to(self, name: str, topic: str) -> list[int]:
        return [
            m.at_ms
            for m in self.running.fake.messages_to(name)
            if not m.otn_token and (r := request_of(m)) is not None and r[0] == topic
        ]

    def last_optin(self, name: str, topic: str, before_ms: int) -> int:
        return max((t for t in self.models[name].optins.get(topic, []) if t <= before_ms), default=-1)

    def topic_of_payload(self, payload: str) -> str | None:
        asked = self.request_with_payload(payload)
        return asked[0] if asked else None

    def unanswered_requests(self, name: str, topic: str, at_ms: int) -> int:
        since = max(at_ms - PERIOD_MS, self.last_optin(name, topic, at_ms) + 1)
        return sum(1 for t in self.requests_to(name, topic) if since <= t <= at_ms)

    def check_request_limit(self, sent: SentMessage, name: str, topic: str) -> None:
        count = self.unanswered_requests(name, topic, sent.at_ms)
        if count > self.max_requests:
            raise Violation(
                f"{count} unanswered {topic} requests to {name} within the period (limit {self.max_requests})"
            )

    def holds_token(self, name: str, topic: str, at_ms: int) -> bool:
        model = self.models[name]
        for token in self.running.fake.issued.values():
            if token.user_id != name or token.used or at_ms - token.issued_ms > TOKEN_MS:
                continue
            if self.checks.consent and model.unsubscribed_between(token.issued_ms, at_ms):
                continue  # revoked
            if self.topic_of_payload(token.payload) == topic:
                return True
        return False

    def must_ask(self, name: str, topic: str, at_ms: int) -> bool:
        """Whether the gate has no reason to refuse the topic's next request to the user at `at_ms`."""
        model = self.models[name]
        return (
            self.otn_on
            and not model.in_eu(at_ms)
            and model.subscribed(at_ms)
            and not self.holds_token(name, topic, at_ms)
            and self.unanswered_requests(name, topic, at_ms - 1) < self.max_requests
        )

    def check_loop(self, new: list[SentMessage]) -> None:
        """Every delivery is followed by exactly one next request: at once when the window is open, else with the
        user's first engagement after it (unless the gate has a reason to refuse it then)."""
        for sent in new:
            if sent.otn_token and sent.user_id in self.models:
                topic = self.topic_of_payload(self.running.fake.issued[sent.otn_token].payload)
                assert topic is not None
                self.obligations.append(Obligation(sent.user_id, topic, sent.at_ms))
        still: list[Obligation] = []
        for duty in self.obligations:
            model = self.models[duty.user]
            if model.window_open(duty.delivered_ms):
                due = duty.delivered_ms
            else:
                later = [e for e in model.engagements if e > duty.delivered_ms]
                if not later:
                    still.append(duty)
                    continue
                due = min(later)
            if any(due <= kill for kill in self.kill_ms) or not self.must_ask(duty.user, duty.topic, due):
                continue  # a request in flight at a kill is `uncertain`, never resent (promise 4)
            asked = [t for t in self.requests_to(duty.user, duty.topic) if due <= t]
            if not asked:
                raise Violation(
                    f"{duty.user} got a {duty.topic} notification at {duty.delivered_ms} and engaged at {due}, "
                    f"but no next request went out"
                )
        self.obligations = still


def request_of(sent: SentMessage) -> tuple[str, str | None] | None:
    """(topic, product) of an OTN request message, from its title; None for any other message."""
    payload = sent.body.get("message", {}).get("attachment", {}).get("payload", {})
    if payload.get("template_type") != "one_time_notif_req":
        return None
    title = str(payload.get("title", ""))
    if title in REQUEST_TITLES:
        return REQUEST_TITLES[title]
    found = RESTOCK_TITLE.match(title)
    if found is None:
        raise Violation(f"an OTN request the model's flow does not make: {title!r}")
    return ("restock", found.group(1))


_compiled: dict[str, Any] = {}


def compiled_flows() -> dict[str, Any]:
    """The model's flow, compiled once for every run."""
    if not _compiled:
        settings = load_settings(ROOT / "config.toml", {"OTNFLOW_FLOWS_TEMPLATES": str(FLOWS)})
        _compiled.update(load_flows([FLOWS], settings.flow_options()))
    return _compiled
