"""A test harness for flows: a real otnflow server and the fake Graph API on loopback, a clock you move, and
simulated users who type, tap and opt in. Everything goes through the real path: signed webhook JSON in, the
dispatcher, the flow, the policy gate, the outbox, the Send API client, the fake Graph API out.

    async with Bot.start(flows="flows", templates="templates") as bot:
        alice = bot.user("alice", first_name="Alice")
        await alice.says("hi")
        await alice.taps("White")
        assert "likes_white" in alice.tags
        await alice.opts_in("restock")
        bot.clock.advance(hours=25)
        await bot.notify("restock", product="Sauvignon")
        assert alice.last_reply.text.startswith("The Sauvignon")
"""

from __future__ import annotations

import asyncio
import difflib
import itertools
import json
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from ..actions import ActionContext, ActionFailed, ActionFunction
from ..config import OPTIONS, Settings, load_settings
from ..flow import CompiledFlow, payloads
from ..flow.spec import META_SOURCES
from ..local.fake_graph import BOT_APP_ID, PAGE_INBOX_APP_ID, FakeGraph, SentMessage
from ..messenger.signature import sign
from ..runtime.actions import ActionRecord
from ..runtime.audience import Audience
from ..runtime.campaigns import CampaignReport
from ..runtime.clock import ManualClock
from ..runtime.flows import no_such_flow
from ..runtime.inspection import inspect_user
from ..store import OPERATIONS, Token, TokenStatus, UserRecord
from ..web import create_app
from ..web.deadline import server_options
from ..web.keys import CAMPAIGNS, DISPATCHER, FLOWS, GRAPH, IDLE_TIMER, STORE
from .reuse import COMPILED_FLOWS, EMPTY_STORE, scratch_folder

PAGE_ID = "106000000000001"
SECRET = "harness-app-secret"
API_TOKEN = "harness-api-token"
START_MS = 1_764_240_000_000  # 2025-11-27: any fixed instant; tests move the clock from here


class HarnessError(AssertionError):
    """A step the simulated user cannot take (tapping something not offered, ...): says what was offered."""


#: Setting overrides a Bot takes, by dotted name with '_' for '.': policy_page_in_eu=True.
SETTING_NAMES = frozenset(key.replace(".", "_") for key in OPTIONS)


def unknown_setting(name: str, also: frozenset[str] = frozenset()) -> str | None:
    """The complaint about an override that names no setting (a typo would otherwise be ignored), or None."""
    if name in SETTING_NAMES or name in also:
        return None
    close = difflib.get_close_matches(name, [*also, *SETTING_NAMES], n=1)
    hint = f"did you mean '{close[0]}'?" if close else "settings are named like policy_page_in_eu"
    return f"unknown setting '{name}': {hint}"


@dataclass(frozen=True)
class ReplyView:
    """One message the bot sent, as the user sees it."""

    text: str
    quick_replies: tuple[str, ...]
    buttons: tuple[str, ...]
    otn_topic: str | None  # set when this is a Notify Me request
    is_notification: bool  # sent with an OTN token
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def is_otn_request(self) -> bool:
        return self.otn_topic is not None

    @classmethod
    def of(cls, sent: SentMessage) -> ReplyView:
        message = sent.body.get("message", {})
        quick = tuple(q.get("title", "") for q in message.get("quick_replies", []))
        payload = message.get("attachment", {}).get("payload", {})
        buttons = tuple(b.get("title", "") for b in payload.get("buttons", []))
        topic = None
        if payload.get("template_type") == "one_time_notif_req":
            topic = payloads.parse_request(str(payload.get("payload", "")), ()).topic
        text = message.get("text") or payload.get("text") or payload.get("title") or ""
        return cls(text, quick, buttons, topic, sent.otn_token is not None, sent.body)


#: Meta's `referral.source` word for each name an author uses (`ad` -> `ADS`).
META_SOURCE_WORDS = {name.value: word for word, name in META_SOURCES.items()}
#: The payload the harness's Get Started button sends (a page sets its own in the Messenger Profile).
GET_STARTED = "GET_STARTED"


class BotUser:
    """A simulated Messenger user. Its record (state, tags, variables, tokens) is refreshed after every step."""

    def __init__(self, bot: Bot, user_id: str) -> None:
        self.bot = bot
        self.id = user_id
        self.record: UserRecord | None = None
        self._tokens: list[Token] = []
        self._refused: list[dict[str, Any]] = []
        self._views: list[ReplyView] = []  # the views of the messages sent to the user so far, in order

    # -- what the user does ----------------------------------------------------------------------------------
    async def says(self, text: str) -> list[ReplyView]:
        return await self._act({"message": {"mid": self.bot.mid(), "text": text}})

    async def taps(self, title: str) -> list[ReplyView]:
        """Tap a quick reply or a postback button, by its title, on the latest message offering any."""
        for reply in reversed(self.replies):
            raw = reply.raw.get("message", {})
            for quick in raw.get("quick_replies", []):
                if quick.get("title") == title:
                    return await self._act(
                        {
                            "message": {
                                "mid": self.bot.mid(),
                                "text": title,
                                "quick_reply": {"payload": quick["payload"]},
                            }
                        }
                    )
            for button in raw.get("attachment", {}).get("payload", {}).get("buttons", []):
                if button.get("title") == title:
                    if button.get("type") != "postback":
                        raise HarnessError(f"'{title}' opens {button.get('url')}; it sends nothing to the bot")
                    return await self._act(
                        {"postback": {"mid": self.bot.mid(), "title": title, "payload": button["payload"]}}
                    )
            if raw.get("quick_replies") or reply.buttons:
                offered = [*reply.quick_replies, *reply.buttons]
                raise HarnessError(
                    f"{self.id} cannot tap '{title}': the last message offering choices "
                    f"({reply.text!r}) offers {offered}"
                )
        raise HarnessError(f"{self.id} cannot tap '{title}': no message offered any quick reply or button")

    async def opts_in(self, topic: str | None = None) -> list[ReplyView]:
        """Tap Notify Me on the latest OTN request (for `topic`, if given)."""
        for view in reversed(self.replies):
            if view.otn_topic is not None and topic in (None, view.otn_topic):
                payload = view.raw["message"]["attachment"]["payload"]["payload"]
                token = self.bot.fake.issue_token(self.id, payload, self.bot.clock.now_ms())
                return await self._act(
                    {"optin": {"type": "one_time_notif_req", "payload": payload, "one_time_notif_token": token}},
                    interaction=False,
                )
        asked = sorted({v.otn_topic for v in self.replies if v.otn_topic})
        raise HarnessError(f"{self.id} cannot opt in to {topic or 'a topic'}: the bot asked for {asked or 'none'}")

    async def arrives(
        self, ref: str | None = None, source: str = "link", ad_id: str | None = None, get_started: bool = False
    ) -> list[ReplyView]:
        """Arrive from a referral, as Meta reports it: `source` is link, ad, code, plugin or discover (Meta's own
        word, e.g. SHORTLINK, passes as it is). A new user comes by the Get Started button (`get_started`): the
        referral then rides on that postback; otherwise on a `referral` event (the thread was already open)."""
        referral: dict[str, Any] = {"source": META_SOURCE_WORDS.get(source, source), "type": "OPEN_THREAD"}
        if ref is not None:
            referral["ref"] = ref
        if ad_id is not None:
            referral["ad_id"] = ad_id
        if get_started:
            return await self._act(
                {
                    "postback": {
                        "mid": self.bot.mid(),
                        "title": "Get Started",
                        "payload": GET_STARTED,
                        "referral": referral,
                    }
                }
            )
        return await self._act({"referral": referral})

    async def _act(self, payload: dict[str, Any], interaction: bool = True) -> list[ReplyView]:
        before = len(self.replies)
        now = self.bot.clock.advance(seconds=1)
        event = {"sender": {"id": self.id}, "recipient": {"id": PAGE_ID}, "timestamp": now, **payload}
        if interaction:
            self.bot.fake.saw(self.id, now, message="message" in payload)  # what Meta knows: the window opens
        channel = self.bot.fake.channel(self.id)  # `standby` while another app (a person) owns the thread
        await self.bot.post({"object": "page", "entry": [{"id": PAGE_ID, "time": now, channel: [event]}]})
        await self.refresh()
        return self.replies[before:]

    # -- a person at the Page Inbox (the Handover Protocol) -------------------------------------------------
    async def agent_takes(self, app_id: str = PAGE_INBOX_APP_ID) -> None:
        """A person takes the thread in the Page Inbox (or another app takes it): Meta tells the bot."""
        await self._handover(self.bot.fake.take_by(self.id, app_id))

    async def agent_says(self, text: str, reply_id: str | None = None) -> list[ReplyView]:
        """A person answers through otnflow (POST /api/agent/reply): tagged HUMAN_AGENT. Raises HarnessError with
        the API's answer when it refuses (404 unknown user, 409 the policy's reason)."""
        before = len(self.replies)
        body: dict[str, Any] = {"user_id": self.id, "text": text, **({"id": reply_id} if reply_id else {})}
        async with self.bot.session.post(
            f"{self.bot.url}/api/agent/reply", json=body, headers={"Authorization": f"Bearer {API_TOKEN}"}
        ) as response:
            if response.status != 202:
                raise HarnessError(f"the agent's reply was refused: {response.status} {await response.text()}")
        await self.bot.settle()
        await self.refresh()
        return self.replies[before:]

    async def agent_done(self, note: str | None = None) -> list[ReplyView]:
        """The person marks the conversation Done in the Page Inbox: the thread goes back to the bot (Meta sends
        it `pass_thread_control`), and the flow resumes at the handing state's `resume`."""
        before = len(self.replies)
        await self._handover(self.bot.fake.give_back(self.id, note))
        return self.replies[before:]

    async def _handover(self, event_body: dict[str, Any]) -> None:
        now = self.bot.clock.advance(seconds=1)
        event = {"sender": {"id": self.id}, "recipient": {"id": PAGE_ID}, "timestamp": now, **event_body}
        await self.bot.post({"object": "page", "entry": [{"id": PAGE_ID, "time": now, "messaging": [event]}]})
        await self.refresh()

    @property
    def thread_owner(self) -> str:
        """The app that has the user's conversation, as the bot knows it: "" for the bot itself."""
        return self.record.thread_owner if self.record else ""

    @property
    def with_human(self) -> bool:
        return bool(self.thread_owner)

    # -- what the test asserts on ----------------------------------------------------------------------------
    async def refresh(self) -> None:
        view = await inspect_user(self.bot.app[STORE], self.id)
        self.record, self._tokens, self._refused = view.record, view.tokens, view.refused

    @property
    def replies(self) -> list[ReplyView]:
        """Every message sent to the user, oldest first. A message's view is made once: tests and steps ask for
        them after every step (the fake only appends, or starts over when reset)."""
        sent, views = self.bot.fake.messages_to(self.id), self._views
        if len(sent) < len(views) or (views and views[-1].raw is not sent[len(views) - 1].body):
            views.clear()  # the fake was reset
        views.extend(ReplyView.of(m) for m in sent[len(views) :])
        return list(views)

    @property
    def last_reply(self) -> ReplyView:
        replies = self.replies
        if not replies:
            raise HarnessError(f"the bot has sent nothing to {self.id}")
        return replies[-1]

    @property
    def state(self) -> str | None:
        return self.record.state if self.record else None

    @property
    def tags(self) -> set[str]:
        return set(self.record.tags) if self.record else set()

    @property
    def variables(self) -> dict[str, Any]:
        return dict(self.record.variables) if self.record else {}

    def tokens(self, topic: str | None = None) -> list[Token]:
        """The user's valid, unexpired OTN tokens (for `topic`), oldest first."""
        now = self.bot.clock.now_ms()
        return [
            t
            for t in self._tokens
            if t.status == TokenStatus.VALID and t.expires_ms > now and (topic is None or t.topic == topic)
        ]

    @property
    def subscribed(self) -> bool:
        """False once a step with `unsubscribe = true` ran, until one with `subscribe = true` or a Notify Me tap."""
        return not (self.record and self.record.unsubscribed_ms)

    @property
    def refusals(self) -> list[dict[str, Any]]:
        """Messages the policy gate refused for this user: {'kind', 'topic', 'reason', 'text', 'at'}."""
        return list(self._refused)


#: What a killed process can no longer do: every store operation but open/close (those the harness itself runs).
STORE_OPERATIONS = OPERATIONS


async def _dead(*args: Any, **kwargs: Any) -> Any:
    """The process is gone: whatever called this stops here, as it would under SIGKILL."""
    raise asyncio.CancelledError


class Bot:
    def __init__(self, settings: Settings, clock: ManualClock, fake: FakeGraph) -> None:
        self.settings = settings
        self.clock = clock
        self.fake = fake
        self.users: dict[str, BotUser] = {}
        self._mids = itertools.count(1)
        self.app: web.Application
        self.url = ""
        self.session: aiohttp.ClientSession
        self._runner: web.AppRunner | None = None
        self._compiled: dict[str, CompiledFlow] | None = None
        self.restarts = 0
        self._stubs: dict[str, ActionFunction] = {}
        self.action_calls: list[ActionRecord] = []  # every action call (stubbed or not), in call order

    @classmethod
    @asynccontextmanager
    async def start(
        cls,
        flows: str | Path | None = None,
        templates: str | Path | None = None,
        config: str | Path | None = None,
        store_dir: str | Path | None = None,
        compiled: dict[str, CompiledFlow] | None = None,
        flow: str | None = None,
        action_env: Mapping[str, str] | None = None,
        **settings: Any,
    ) -> AsyncIterator[Bot]:
        """A bot over the flows in `flows` (default: config.toml's flows.dir, else ./flows), with a fresh SQLite
        store in `store_dir` (a temporary folder by default); new users enter `flow` (default: config.toml's
        flows.default). `settings` override config.toml's, by dotted name with '_' for '.':
        policy_page_in_eu=True. `compiled` reuses flows already loaded (fast test suites). `action_env` holds the
        environment variables HTTP actions read (`STOCK_API_URL`): the harness never reads the real environment.
        It also holds the variable `handover.alert_url_env` names (the hand-over alert's URL)."""
        for name in settings:
            if problem := unknown_setting(name):
                raise HarnessError(problem)
        with tempfile.TemporaryDirectory(prefix="otnflow-harness-", dir=scratch_folder()) as tmp:
            folder = Path(store_dir) if store_dir else Path(tmp)
            config_path = Path(config) if config else None
            if config_path is None and Path("config.toml").exists():
                config_path = Path("config.toml")
            if flows is None or templates is None:
                configured = load_settings(config_path, {}) if config_path else None
                flows = flows or (configured.path(configured.flows.dir) if configured else Path("flows"))
                templates = templates or (
                    configured.path(configured.flows.templates) if configured else Path("templates")
                )
            store_file = folder / "harness.sqlite3"
            env = {
                "OTNFLOW_APP_SECRET": SECRET,
                "OTNFLOW_PAGE_TOKEN": "harness-page-token",
                "OTNFLOW_VERIFY_TOKEN": "harness",
                "OTNFLOW_API_TOKEN": API_TOKEN,
                "OTNFLOW_FLOWS_DIR": str(Path(flows).resolve()),
                "OTNFLOW_FLOWS_TEMPLATES": str(Path(templates).resolve()),
                "OTNFLOW_STORE_URL": f"sqlite:///{store_file}",
                "OTNFLOW_LOG_LEVEL": "WARNING",
                "OTNFLOW_SERVER_SIMULATED_USER_IDS": "true",  # users are called alice, not 7100000000000001
                "OTNFLOW_GRAPH_APP_ID": BOT_APP_ID,  # the fake's bot app: the Primary Receiver
                "OTNFLOW_GRAPH_BACKOFF_BASE_SECONDS": "0.001",
                "OTNFLOW_GRAPH_BACKOFF_MAX_SECONDS": "0.005",
            }
            env.update(action_env or {})
            env.update(
                {
                    f"OTNFLOW_{key.upper()}": str(value).lower() if isinstance(value, bool) else str(value)
                    for key, value in settings.items()
                }
            )
            if flow is not None:
                env["OTNFLOW_FLOWS_DEFAULT"] = flow
            clock = ManualClock(START_MS)
            fake = FakeGraph(page_token="harness-page-token", clock=clock.now_ms)
            fake_runner = web.AppRunner(fake.app(), access_log=None)
            await fake_runner.setup()
            await web.TCPSite(fake_runner, "127.0.0.1", 0).start()
            try:
                env["OTNFLOW_GRAPH_URL"] = f"http://127.0.0.1:{fake_runner.addresses[0][1]}"
                loaded = load_settings(config_path, env)
                compiled = compiled if compiled is not None else COMPILED_FLOWS.of(loaded)
                if flow is not None and flow not in compiled:
                    raise HarnessError(no_such_flow(flow, compiled))
                if loaded.store_url == f"sqlite:///{store_file}":
                    await EMPTY_STORE.put(store_file)  # the schema made once per process, copied: no fsyncs
                bot = cls(loaded, clock, fake)
                bot._compiled = compiled
                await bot._serve()
                # reuse no connection the server may be closing: it drops one idle for its read timeout, and a
                # test that blocks the loop (subprocess.run) would otherwise post on it as it closes (a reset)
                idle = loaded.server.read_timeout_seconds / 2
                bot.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(keepalive_timeout=idle))
                try:
                    yield bot
                finally:
                    await bot.session.close()
                    await bot._shut()
            finally:
                await fake_runner.cleanup()

    async def _serve(self) -> None:
        self.app = create_app(self.settings, flows=self._compiled, clock=self.clock)
        self._runner = web.AppRunner(self.app, access_log=None, **server_options(self.settings))
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        actions = self.app[DISPATCHER].handler.actions
        actions.functions.update(self._stubs)
        actions.watchers.append(self.action_calls.append)

    def stub_action(
        self, name: str, result: Any = None, *, fails: bool = False, times_out: bool = False
    ) -> list[ActionContext]:
        """Replace the action `name` with a stub: it returns `result`, raises (`fails`), or ends as if it ran past
        its time budget (`times_out`, at once: no test waits for it). Returns the list of calls it receives.
        HarnessError for a name no flow uses and nothing registers (a typo would stub nothing)."""
        registered = self.app[DISPATCHER].handler.actions.functions
        used = {
            s.action.name for f in self.app[FLOWS].current.flows.values() for s in f.spec.states.values() if s.action
        }
        if name not in registered and name not in used:
            known = ", ".join(sorted(used | set(registered))) or "none"
            raise HarnessError(f"stub: no action named '{name}' (the flows use and the config registers: {known})")
        calls: list[ActionContext] = []

        async def stub(context: ActionContext) -> Any:
            calls.append(context)
            if fails:
                raise ActionFailed(f"stubbed failure of {name}")
            if times_out:
                raise TimeoutError
            return result

        self._stubs[name] = stub
        registered[name] = stub
        return calls

    async def _shut(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def restart(self, kill: bool = False) -> None:
        """Stop the server and start a new one on the same store, with the same fake Graph API and clock.

        With `kill`, the old server dies the way a SIGKILL would kill it: from this instant it writes nothing more
        to the store and sends nothing more to the Graph API. Writes and sends already under way land or not, as
        they would (a send the fake received counts as having reached Meta); nothing is shut down gracefully
        (queued status writes, batched campaign outcomes and armed requests not yet written are lost). A dead
        process keeps its users' leases and its campaign claims until they expire, so the clock then moves on by
        `dispatcher.lease_seconds` (with leases on) and `notify.claim_seconds`. Work in flight that the test
        awaits (a campaign run) should be cancelled by the test."""
        if kill:
            store, graph = self.app[STORE], self.app[GRAPH]
            for name in STORE_OPERATIONS:
                setattr(store, name, _dead)
            graph.send = _dead  # type: ignore[method-assign]
            graph.profile = _dead  # type: ignore[method-assign]
            await asyncio.sleep(0)  # let the old server's tasks run into the wall before the shutdown
        await self._shut()
        if kill:
            held = self.settings.notify.claim_seconds
            if self.settings.leases:
                held = max(held, self.settings.dispatcher.lease_seconds)
            self.clock.advance(seconds=held)
        self.restarts += 1
        await self._serve()
        await self.settle()
        for user in self.users.values():
            await user.refresh()

    def user(self, user_id: str, first_name: str | None = None, last_name: str | None = None) -> BotUser:
        if first_name is not None or last_name is not None:
            self.fake.profiles[user_id] = {"first_name": first_name or "", "last_name": last_name or ""}
        return self.users.setdefault(user_id, BotUser(self, user_id))

    def mid(self) -> str:
        return f"m_harness_{next(self._mids)}"

    async def post(self, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        async with self.session.post(
            f"{self.url}/webhook", data=raw, headers={"X-Hub-Signature-256": sign(raw, SECRET)}
        ) as response:
            if response.status != 200:
                raise HarnessError(f"the webhook answered {response.status}: {await response.text()}")
        await self.settle()

    async def settle(self) -> None:
        """Wait until every event is handled and every reply sent."""
        await self.app[DISPATCHER].idle()

    async def check_idle(self) -> int:
        """Run the hand-over idle check now (the server runs it every 30 s of wall time): threads whose person said
        nothing for `handover.idle_minutes` on the bot's clock come back to the bot. Returns how many."""
        taken = await self.app[IDLE_TIMER].tick()
        await self.settle()
        for user in self.users.values():
            await user.refresh()
        return taken

    async def dry_run(self, topic: str, segment: str = "", **variables: Any) -> Audience:
        """Who a notification would reach, per variant; nothing is sent, claimed or stored."""
        return await self.app[CAMPAIGNS].dry_run(topic, segment, variables)

    async def notify(
        self, topic: str, segment: str = "", campaign: str | None = None, **variables: Any
    ) -> CampaignReport:
        report = await self.app[CAMPAIGNS].run(topic, segment, variables, campaign)
        await self.settle()
        for user in self.users.values():
            await user.refresh()
        return report
