"""Conversation tests as TOML files, for authors who do not write Python.

    [conversation]                       # optional: where the flows are and how to run them
    flows = ".."                         # relative to this file (default: config.toml's, else the parent folder)

    [[test]]
    name = "white wine lovers get the white restock message"
    user = { id = "alice", first_name = "Alice" }
    steps = [
      { says = "hi" },
      { expect = { reply = "Hi Alice! Welcome to the cellar. Red or white tonight?" } },
      { taps = "White" },
      { expect = { tags = ["likes_white"], otn_request = "restock" } },
      { opts_in = "restock" },
      { advance = "25h" },
      { notify = "restock", vars = { product = "Sauvignon 2024" } },
      { expect = { reply_matches = "^The Sauvignon 2024 is back" } },
    ]

`otnflow test` runs them with a report; the pytest plugin collects them (files named test_*.toml). A failing step
reports the file, the line, the step, what was expected and what came. The format is in docs/testing-flows.md.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError, load_settings
from ..flow import CompiledFlow, Diagnostic, FlowError, FlowOptions, load_flows
from ..flow.diagnostics import KeyPath, Reporter
from ..flow.loader import parse_toml, read_source
from ..flow.locate import Locator
from ..flow.shapes import Field, check_shape
from ..runtime.actions import ActionRecord
from ..runtime.flows import no_such_flow
from .harness import Bot, BotUser, HarnessError, ReplyView, unknown_setting

ACTIONS = (
    "says",
    "taps",
    "opts_in",
    "arrives",
    "advance",
    "notify",
    "stub",
    "agent_takes",
    "agent_says",
    "agent_done",
    "expect",
)
#: Options of an `arrives` step.
ARRIVAL_OPTIONS = ("source", "ad_id", "get_started")
#: Options of a `stub` step: what the stubbed flow action does.
STUB_OPTIONS = ("result", "fails", "times_out")

SHAPES: dict[str, dict[str, Field]] = {
    "file": {
        "conversation": Field("table:conversation", "Where the flows are and how to run them."),
        "test": Field("tables:test", "The tests of this file.", required=True),
    },
    "conversation": {
        "flows": Field("str", "Folder of flow files, relative to this file."),
        "templates": Field("str", "Folder of templates, relative to this file."),
        "config": Field("str", "config.toml to use, relative to this file."),
        "flow": Field("str", "The flow new users start in (default: the config's flows.default)."),
        "settings": Field("scalars", "Setting overrides, e.g. { policy_page_in_eu = true }."),
    },
    "test": {
        "name": Field("str", "What the test shows.", required=True),
        "user": Field("table:user", "The user who acts (default id: 'user')."),
        "users": Field("tables:user", "Several users; a step names who acts with `user`."),
        "steps": Field("tables:step", "What happens, in order.", required=True),
    },
    "user": {
        "id": Field("str", "The user's id (their PSID).", required=True),
        "first_name": Field("str", "Their profile's first name."),
        "last_name": Field("str", "Their profile's last name."),
    },
    "step": {
        "says": Field("str", "The user types this."),
        "taps": Field("str", "The user taps the quick reply or button with this title."),
        "opts_in": Field("str", "The user taps Notify Me on the latest request for this topic."),
        "arrives": Field(
            "str", 'The user arrives from a referral with this `ref` ("": none), e.g. an m.me link\'s ?ref=.'
        ),
        "source": Field(
            "str",
            "With arrives: link (the default), ad, code, plugin or discover.",
            choices=("link", "ad", "code", "plugin", "discover"),
        ),
        "ad_id": Field("str", "With arrives: the Click-to-Messenger ad's id."),
        "get_started": Field("bool", "With arrives: the referral comes on the Get Started postback (a new thread)."),
        "advance": Field("str", "Time passes: '90s', '30m', '25h', '2d'."),
        "notify": Field("str", "The page sends this topic's notification to every token holder."),
        "segment": Field("str", "With notify: only users matching this segment expression."),
        "vars": Field("scalars", "With notify: the notification's variables."),
        "stub": Field("str", "From now on the flow action with this name is stubbed: it returns `result`."),
        "result": Field("any", "With stub: what the action returns (any TOML value)."),
        "fails": Field("bool", "With stub: the action fails (the state's on_failure follows)."),
        "times_out": Field("bool", "With stub: the action runs out of time (on_timeout, else on_failure)."),
        "agent_takes": Field("bool", "A person takes the user's thread in the Page Inbox (Meta tells the bot)."),
        "agent_says": Field("str", "A person answers the user through otnflow (tagged HUMAN_AGENT)."),
        "agent_done": Field("bool", "The person marks the conversation Done: the bot has the thread again."),
        "user": Field("str", "Which user acts or is checked (in a test with `users`)."),
        "expect": Field("table:expect", "What must hold now."),
    },
    "expect": {
        "reply": Field("str", "The last message the user got, exactly."),
        "reply_matches": Field("str", "A regex the last message must match (search)."),
        "replies": Field("str_list", "Every message the previous step brought, exactly, in order."),
        "no_reply": Field("bool", "The previous step brought no message."),
        "quick_replies": Field("str_list", "The quick-reply titles on the last message."),
        "buttons": Field("str_list", "The button titles on the last message."),
        "otn_request": Field("str", "The previous step brought a Notify Me request for this topic."),
        "notification": Field("bool", "The last message is an OTN notification (sent with a token)."),
        "tags": Field("str_list", "Tags the user has (others may be there too)."),
        "tags_absent": Field("str_list", "Tags the user does not have."),
        "state": Field("str", "The user's state in the flow."),
        "variables": Field("scalars", "Variables the user has, with these values."),
        "tokens": Field("ints", "How many valid tokens the user holds per topic, e.g. { restock = 1 }."),
        "refused": Field("str", "The policy gate refused a message to the user for this reason."),
        "delivered": Field("int", "With notify: how many users the notification reached."),
        "subscribed": Field("bool", "Whether the user is subscribed (false once a step unsubscribed them)."),
        "action_calls": Field("str_list", "The flow actions the previous step called, in order ([]: none)."),
        "action_args": Field("scalars", "Arguments the previous step's last action call got, with these values."),
        "action_outcome": Field(
            "str", "How the previous step's last action call ended.", choices=("success", "failure", "timeout")
        ),
        "with_human": Field("bool", "Whether a person has the user's conversation (the bot stays silent)."),
    },
}


@dataclass(frozen=True, kw_only=True)
class Step:
    index: int  # 1-based, as the report shows it
    line: int
    action: str
    value: Any
    user: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ConversationTest:
    name: str
    line: int
    users: dict[str, dict[str, str]]
    steps: list[Step]


@dataclass(kw_only=True)
class ConversationFile:
    path: Path
    tests: list[ConversationTest]
    flows_dir: Path
    templates_dir: Path
    config: Path | None
    settings: dict[str, Any]
    flow: str | None = None  # the flow new users enter; None: the config's flows.default
    flow_line: int = 1


class StepFailure(AssertionError):
    """A step that did not go as the file said: where, which step, what was expected and what came."""

    def __init__(self, file: Path, step: Step, test: str, problems: list[str]) -> None:
        self.file, self.step, self.test, self.problems = file, step, test, problems
        where = f"{file}:{step.line}: step {step.index} ({step.action}) of '{test}'"
        super().__init__(where + "\n" + "\n".join(f"  {p}" for p in problems))


@dataclass
class TestResult:
    file: Path
    test: ConversationTest
    failure: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failure


def parse_duration(text: str) -> dict[str, float]:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*", text)
    if not match:
        raise ValueError(f"duration {text!r} must be a number and a unit: s, m, h or d (e.g. '25h')")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
    return {unit: float(match.group(1))}


def _find_config(start: Path) -> Path | None:
    for folder in [start, *start.parents]:
        if (folder / "config.toml").exists():
            return folder / "config.toml"
    return None


def load_conversations(path: Path) -> ConversationFile:
    """Read and check a conversation file; FlowError lists every problem, with lines."""
    report = Reporter(str(path), None)
    text = read_source(path, report, "conversation file")
    document = parse_toml(text, report) if text is not None else None
    if text is None or document is None:
        raise FlowError(report.diagnostics)
    report.locator = Locator(text)
    check_shape(document, "file", (), report.error, SHAPES)
    meta = document.get("conversation", {}) if isinstance(document.get("conversation"), dict) else {}
    here = path.parent
    config = here / meta["config"] if isinstance(meta.get("config"), str) else _find_config(here.resolve())
    settings_dir, flows_dir, templates_dir = None, None, None
    if config is not None and config.exists():
        try:
            loaded = load_settings(config, {})
            settings_dir = (loaded.path(loaded.flows.dir), loaded.path(loaded.flows.templates))
        except ConfigError as err:
            report.error(("conversation", "config"), f"cannot use {config}: {err}")
    elif config is not None:
        report.error(("conversation", "config"), f"config file {config} not found")
    flows_dir = (
        here / meta["flows"]
        if isinstance(meta.get("flows"), str)
        else (settings_dir[0] if settings_dir else here.parent)
    )
    templates_dir = (
        here / meta["templates"]
        if isinstance(meta.get("templates"), str)
        else (settings_dir[1] if settings_dir else flows_dir.parent / "templates")
    )
    settings = dict(meta.get("settings", {})) if isinstance(meta.get("settings"), dict) else {}
    for name in settings:
        if problem := unknown_setting(name):
            report.error(("conversation", "settings", name), problem)
    flow = meta["flow"] if isinstance(meta.get("flow"), str) else None
    tests = [
        _test(raw, ("test", i), report) for i, raw in enumerate(_listed(document.get("test"))) if isinstance(raw, dict)
    ]
    errors = [d for d in report.diagnostics if d.is_error]
    if errors:
        raise FlowError(errors)
    return ConversationFile(
        path=path,
        tests=tests,
        flows_dir=flows_dir.resolve(),
        templates_dir=templates_dir.resolve(),
        config=config,
        settings=settings,
        flow=flow,
        flow_line=report.line(("conversation", "flow")) if flow else 1,
    )


def _listed(value: Any) -> list[Any]:
    """A list the shape check asked for, or nothing when it is something else (the shape check reported it)."""
    return value if isinstance(value, list) else []


def _test(raw: dict[str, Any], path: KeyPath, report: Reporter) -> ConversationTest:
    users: dict[str, dict[str, str]] = {}
    for profile in ([raw["user"]] if isinstance(raw.get("user"), dict) else []) + _listed(raw.get("users")):
        if isinstance(profile, dict) and isinstance(profile.get("id"), str):
            users[profile["id"]] = {k: v for k, v in profile.items() if k != "id" and isinstance(v, str)}
    default_user = next(iter(users), "user")
    users.setdefault(default_user, {})
    steps = []
    for i, step in enumerate(_listed(raw.get("steps"))):
        if not isinstance(step, dict):
            continue
        where = (*path, "steps", i)
        actions = [a for a in ACTIONS if a in step]
        if len(actions) != 1:
            report.error(
                where, f"a step does exactly one of {', '.join(ACTIONS)}; this one has {', '.join(actions) or 'none'}"
            )
            continue
        action = actions[0]
        if ("segment" in step or "vars" in step) and action != "notify":
            report.error(where, "'segment' and 'vars' go with 'notify'")
        if action == "advance" and isinstance(step["advance"], str):
            try:
                parse_duration(step["advance"])
            except ValueError as err:
                report.error((*where, "advance"), str(err))
        user = step.get("user", default_user)
        if isinstance(user, str) and user not in users:  # (a user that is not a string: the shape check said so)
            report.error((*where, "user"), f"unknown user '{user}'; the test's users: {', '.join(users)}")
        if (
            action == "expect"
            and isinstance(step["expect"], dict)
            and isinstance(step["expect"].get("reply_matches"), str)
        ):
            try:
                re.compile(step["expect"]["reply_matches"])
            except re.error as err:
                report.error((*where, "expect", "reply_matches"), f"invalid regex: {err}")
        for kind, allowed in (("arrives", ARRIVAL_OPTIONS), ("stub", STUB_OPTIONS)):
            stray = [k for k in allowed if k in step]
            if stray and action != kind:
                report.error(where, f"{', '.join(repr(k) for k in stray)} only go with '{kind}'")
        if action == "stub" and sum(k in step for k in STUB_OPTIONS) > 1:
            report.error(where, "a stub does one of: result, fails, times_out")
        options = {k: step[k] for k in ("segment", "vars", *ARRIVAL_OPTIONS, *STUB_OPTIONS) if k in step}
        steps.append(
            Step(
                index=i + 1, line=report.line(where), action=action, value=step[action], user=str(user), options=options
            )
        )
    return ConversationTest(str(raw.get("name", "")), report.line(path), users, steps)


class _Run:
    """One test being run: the bot, its users, what the previous step brought."""

    def __init__(self, bot: Bot, test: ConversationTest) -> None:
        self.bot = bot
        self.users = {uid: bot.user(uid, p.get("first_name"), p.get("last_name")) for uid, p in test.users.items()}
        self.last: dict[str, list[ReplyView]] = {uid: [] for uid in self.users}
        self.refusals_before: dict[str, int] = {uid: 0 for uid in self.users}
        self.calls_before = 0  # bot.action_calls before the previous step
        self.delivered: int | None = None

    async def do(self, step: Step) -> list[str]:
        user = self.users[step.user]
        if step.action == "expect":
            return self.check(user, step.value)
        if step.action == "stub":
            options = step.options
            try:
                self.bot.stub_action(
                    step.value,
                    options.get("result"),
                    fails=options.get("fails") is True,
                    times_out=options.get("times_out") is True,
                )
            except HarnessError as err:
                return [str(err)]
            return []
        self.refusals_before[step.user] = len(user.refusals)
        self.calls_before = len(self.bot.action_calls)
        before = {uid: len(u.replies) for uid, u in self.users.items()}
        try:
            if step.action == "says":
                self.last[step.user] = await user.says(step.value)
            elif step.action == "taps":
                self.last[step.user] = await user.taps(step.value)
            elif step.action == "opts_in":
                self.last[step.user] = await user.opts_in(step.value)
            elif step.action == "arrives":
                self.last[step.user] = await user.arrives(
                    step.value or None,
                    str(step.options.get("source", "link")),
                    step.options.get("ad_id"),
                    step.options.get("get_started") is True,
                )
            elif step.action == "advance":  # then the hand-over idle check, as the server runs it
                self.bot.clock.advance(**parse_duration(step.value))
                await self.bot.check_idle()
                for uid, u in self.users.items():
                    self.last[uid] = u.replies[before[uid] :]
            elif step.action == "agent_takes":
                await user.agent_takes()
                self.last[step.user] = []
            elif step.action == "agent_says":
                self.last[step.user] = await user.agent_says(step.value)
            elif step.action == "agent_done":
                self.last[step.user] = await user.agent_done()
            elif step.action == "notify":
                report = await self.bot.notify(
                    step.value, str(step.options.get("segment", "")), **dict(step.options.get("vars", {}))
                )
                self.delivered = report.delivered
                for uid, u in self.users.items():
                    self.last[uid] = u.replies[before[uid] :]
        except HarnessError as err:
            return [str(err)]
        except ValueError as err:  # a campaign that cannot start: unknown topic, missing vars
            return [f"{step.action} failed: {err}"]
        return []

    def check(self, user: BotUser, expect: dict[str, Any]) -> list[str]:
        calls = self.bot.action_calls[self.calls_before :]
        seen = Seen(
            user=user,
            brought=self.last[user.id],
            refusals=user.refusals[self.refusals_before[user.id] :],
            delivered=self.delivered,
            action_calls=calls,
        )
        return [problem for key, wanted in expect.items() if (problem := CHECKS[key](seen, wanted))]


@dataclass(kw_only=True)
class Seen:
    """What an `expect` step looks at: the user now, what the previous step brought them."""

    user: BotUser
    brought: list[ReplyView]
    refusals: list[dict[str, Any]]
    delivered: int | None
    action_calls: list[ActionRecord]  # what the previous step called

    @property
    def last(self) -> ReplyView | None:
        replies = self.user.replies
        return replies[-1] if replies else None


def _differ(what: str, wanted: Any, got: Any) -> str | None:
    return None if wanted == got else f"{what}: expected {wanted!r}, got {got!r}"


def _reply_matches(seen: Seen, pattern: str) -> str | None:
    got = seen.last.text if seen.last else None
    ok = got is not None and re.search(pattern, got)
    return None if ok else f"reply_matches: expected a match for {pattern!r}, got {got!r}"


def _otn_request(seen: Seen, topic: str) -> str | None:
    asked = [r.otn_topic for r in seen.brought if r.otn_topic]
    if topic in asked:
        return None
    return (
        f"otn_request: expected a Notify Me request for {topic!r}, got {asked or 'none'} "
        f"(the step brought {[r.text for r in seen.brought]})"
    )


def _tags(seen: Seen, wanted: list[str]) -> str | None:
    missing = sorted(set(wanted) - seen.user.tags)
    if not missing:
        return None
    has = sorted(seen.user.tags)
    return f"tags: expected {sorted(wanted)} among the user's tags, missing {missing}; the user has {has}"


def _tags_absent(seen: Seen, wanted: list[str]) -> str | None:
    present = sorted(set(wanted) & seen.user.tags)
    return f"tags_absent: expected none of {sorted(wanted)}, but the user has {present}" if present else None


def _refused(seen: Seen, reason: str) -> str | None:
    reasons = [r["reason"] for r in seen.refusals]
    return None if reason in reasons else f"refused: expected a refusal for {reason!r}, got {reasons or 'none'}"


def _action_args(seen: Seen, wanted: dict[str, Any]) -> str | None:
    if not seen.action_calls:
        return f"action_args: expected a call with {wanted!r}, but the previous step called no action"
    args = seen.action_calls[-1].context.args
    return _differ("action_args", dict(wanted), {k: args.get(k) for k in wanted})


CHECKS: dict[str, Callable[[Seen, Any], str | None]] = {
    "reply": lambda seen, w: _differ("reply", w, seen.last.text if seen.last else None),
    "reply_matches": _reply_matches,
    "replies": lambda seen, w: _differ("replies", w, [r.text for r in seen.brought]),
    "no_reply": lambda seen, w: _differ("no_reply", w, not seen.brought),
    "quick_replies": lambda seen, w: _differ("quick_replies", w, list(seen.last.quick_replies) if seen.last else []),
    "buttons": lambda seen, w: _differ("buttons", w, list(seen.last.buttons) if seen.last else []),
    "otn_request": _otn_request,
    "notification": lambda seen, w: _differ("notification", w, bool(seen.last and seen.last.is_notification)),
    "tags": _tags,
    "tags_absent": _tags_absent,
    "state": lambda seen, w: _differ("state", w, seen.user.state),
    "variables": lambda seen, w: _differ("variables", dict(w), {k: seen.user.variables.get(k) for k in w}),
    "tokens": lambda seen, w: _differ("tokens", dict(w), {t: len(seen.user.tokens(t)) for t in w}),
    "refused": _refused,
    "delivered": lambda seen, w: _differ("delivered", w, seen.delivered),
    "subscribed": lambda seen, w: _differ("subscribed", w, seen.user.subscribed),
    "action_calls": lambda seen, w: _differ("action_calls", w, [c.name for c in seen.action_calls]),
    "action_args": _action_args,
    "action_outcome": lambda seen, w: _differ(
        "action_outcome", w, str(seen.action_calls[-1].outcome) if seen.action_calls else None
    ),
    "with_human": lambda seen, w: _differ("with_human", w, seen.user.with_human),
}
assert set(CHECKS) == set(SHAPES["expect"]), "every expectation key has a check"


class ConversationRunner:
    """Runs conversation files; flows are compiled once per flows folder."""

    def __init__(self) -> None:
        self._flows: dict[tuple[Path, Path, tuple[tuple[str, Any], ...]], dict[str, CompiledFlow]] = {}

    def flows(self, file: ConversationFile) -> dict[str, CompiledFlow]:
        """The file's flows, compiled once per folder; FlowError (located) when they do not load or the file's
        `[conversation] flow` names none of them."""
        key = (file.flows_dir, file.templates_dir, tuple(sorted(file.settings.items())))
        if key not in self._flows:
            env = {"OTNFLOW_FLOWS_TEMPLATES": str(file.templates_dir)}
            options = load_settings(file.config, env).flow_options() if file.config else FlowOptions(file.templates_dir)
            self._flows[key] = load_flows([file.flows_dir], options)
        flows = self._flows[key]
        if file.flow is not None and file.flow not in flows:
            raise FlowError(
                [
                    Diagnostic(
                        file=str(file.path),
                        line=file.flow_line,
                        message=f"[conversation] {no_such_flow(file.flow, flows)}",
                        key="flow",
                    )
                ]
            )
        return flows

    async def run(self, file: ConversationFile, test: ConversationTest) -> TestResult:
        started = time.perf_counter()
        flows = self.flows(file)
        async with Bot.start(
            file.flows_dir, file.templates_dir, config=file.config, compiled=flows, flow=file.flow, **file.settings
        ) as bot:
            run = _Run(bot, test)
            for step in test.steps:
                problems = await run.do(step)
                if problems:
                    failure = StepFailure(file.path, step, test.name, problems)
                    return TestResult(file.path, test, str(failure), time.perf_counter() - started)
        return TestResult(file.path, test, "", time.perf_counter() - started)


def conversation_files(paths: list[Path]) -> list[Path]:
    """test_*.toml files under the given files or folders."""
    found: list[Path] = []
    for path in paths:
        found.extend(sorted(path.rglob("test_*.toml")) if path.is_dir() else [path])
    return found


__all__ = [
    "ConversationFile",
    "ConversationRunner",
    "ConversationTest",
    "Diagnostic",
    "StepFailure",
    "TestResult",
    "conversation_files",
    "load_conversations",
]
