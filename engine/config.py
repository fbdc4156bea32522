"""Runtime settings: `config.toml`, overridden by environment variables; secrets only from the environment.

The rule: a setting `section.key` in config.toml is overridden by `OTNFLOW_SECTION_KEY` (e.g. `graph.url` by
`OTNFLOW_GRAPH_URL`, `server.port` by `OTNFLOW_SERVER_PORT`). Secrets (`OTNFLOW_APP_SECRET`,
`OTNFLOW_PAGE_TOKEN`, `OTNFLOW_VERIFY_TOKEN`, `OTNFLOW_API_TOKEN`) are never read from the file. Every problem
stops the start with one line naming the setting and how to fix it (ConfigError).

Settings are parsed once, at load, into typed sections (`settings.server.port`, `settings.graph.timeout_seconds`):
a section's fields are its keys, and `OPTIONS` gives each its default, type and documentation.
"""

from __future__ import annotations

import difflib
import functools
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import tomli

from .actions import ActionFunction, load_actions, required_args
from .extensions import FILTER_GROUP, GLOBAL_GROUP, ExtensionError, load_named
from .flow import FlowOptions, Limits
from .flow.locate import Locator
from .http_actions import HttpAction, HttpActionError, parse_http_action
from .policy import PolicySettings

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


class ConfigError(ValueError):
    """One clear line: which setting, what is wrong, how to fix it."""


@dataclass(frozen=True)
class Option:
    default: Any
    doc: str


#: Every setting, by `section.key`. The default's type is the setting's type.
OPTIONS: dict[str, Option] = {
    "server.host": Option("127.0.0.1", "Address to listen on (use 0.0.0.0 behind a proxy)."),
    "server.port": Option(8080, "Port to listen on."),
    "server.max_body_bytes": Option(1_048_576, "Larger webhook bodies are refused with 413."),
    "server.read_timeout_seconds": Option(
        10.0,
        "A request's headers and body must arrive within this; slower clients are cut off (408) and idle "
        "connections closed. A reverse proxy in front is still the first line (docs/deploying.md).",
    ),
    "server.event_loop": Option(
        "uvloop",
        "uvloop (libuv's event loop: about a sixth less CPU per webhook turn, docs/architecture.md) or asyncio (the "
        "standard library's); uvloop falls back to asyncio where it is not installed (Windows).",
    ),
    "server.gc_threshold": Option(
        10_000,
        "Objects allocated between two runs of Python's garbage collector in `otnflow serve` (Python's default is "
        "700; 0 keeps it). Startup objects are frozen out of its scans. About a tenth less CPU per webhook turn "
        "(docs/architecture.md); unreachable cycles live a little longer.",
    ),
    "server.figures_refresh_seconds": Option(
        15.0,
        "How often /healthz's store counts and /metrics' OTN loop figures are read from the store, in the "
        "background: probes and scrapes never read it themselves, and /healthz calls the store unresponsive "
        "after three periods without a reading.",
    ),
    "server.allow_sha1_signature": Option(False, "Accept the legacy X-Hub-Signature (SHA-1) when no SHA-256 is sent."),
    "server.simulated_user_ids": Option(
        False,
        "Accept readable user ids (alice) besides Meta's digits in webhook events: for the flow-test harness and "
        "simulators; on by itself in local mode. Leave off in production.",
    ),
    "flows.dir": Option("flows", "Folder of flow files."),
    "flows.templates": Option("templates", "Folder of jinja2 templates."),
    "flows.default": Option("", "The flow a new user enters (default: the first flow by file name)."),
    "templates.filters": Option(
        "",
        "Extra jinja2 filters for flow templates, comma-separated name=module:function (e.g. "
        "money=shop.templating:money); installed packages add theirs by the entry point group "
        "otnflow.template_filters.",
    ),
    "templates.globals": Option(
        "",
        "Extra jinja2 globals (functions or values), comma-separated name=module:attribute; installed packages: "
        "otnflow.template_globals.",
    ),
    "store.url": Option("sqlite:///data/otnflow.sqlite3", "sqlite:///relative/or//absolute/path, or mongodb://..."),
    "graph.url": Option("https://graph.facebook.com", "Graph API base URL (tests point it at a local fake)."),
    "graph.version": Option("v21.0", "Graph API version."),
    "graph.app_id": Option("", "Your Meta app's id: lets `otnflow doctor` check this app's webhook subscription."),
    "graph.timeout_seconds": Option(10.0, "Timeout of one Graph API call."),
    "graph.max_attempts": Option(5, "Attempts per send for transient errors and rate limits."),
    "graph.backoff_base_seconds": Option(0.5, "First retry waits up to this (full jitter), doubling each time."),
    "graph.backoff_max_seconds": Option(30.0, "Longest wait between two attempts."),
    "dispatcher.concurrency": Option(64, "Users handled at the same time (one event at a time per user)."),
    "dispatcher.leases": Option(
        "auto",
        "Per-user leases for processes sharing a store: on, off, or auto (on for "
        "MongoDB, off for SQLite; set on when several processes share one SQLite file).",
    ),
    "dispatcher.lease_seconds": Option(10.0, "How long a user's lease lasts; a dead process's users wait this long."),
    "store.inbox_retention_days": Option(7.0, "Handled inbox events are kept this long (MongoDB: a TTL index)."),
    "policy.window_hours": Option(24.0, "The standard messaging window after the user's last interaction."),
    "policy.allowed_tags": Option(
        "CONFIRMED_EVENT_UPDATE,POST_PURCHASE_UPDATE,ACCOUNT_UPDATE,HUMAN_AGENT",
        "Message tags allowed outside the window, comma-separated (Meta deprecates some: keep this current).",
    ),
    "policy.human_agent_days": Option(7.0, "HUMAN_AGENT may answer up to this long after the user's last message."),
    "policy.otn_available": Option(True, "Whether the page may use One-Time Notification at all."),
    "policy.page_in_eu": Option(False, "A page located in the EU/EEA (or with admins there): OTN is unavailable."),
    "policy.eu_user_tag": Option("eu", "Users with this tag are treated as in the EU: no OTN for them."),
    "policy.otn_token_days": Option(365.0, "How long an OTN token stays valid after the opt-in."),
    "policy.otn_max_requests": Option(1, "Unanswered OTN requests per topic per user per period (against nagging)."),
    "policy.otn_request_period_hours": Option(24.0, "The period of policy.otn_max_requests."),
    "policy.otn_skip_if_token_held": Option(True, "Do not ask for a topic the user already holds a token for."),
    "notify.concurrency": Option(32, "Notifications in flight at once during a campaign."),
    "notify.rate_per_second": Option(250.0, "Send API calls per second a campaign may make (Meta allows ~300)."),
    "notify.claim_seconds": Option(
        120.0,
        "A claimed delivery is its run's for this long; a run that died leaves "
        "it to the next run after that (longer than graph timeout x attempts).",
    ),
    "notify.expiring_soon_days": Option(30.0, "`otnflow stats` counts tokens expiring within this many days."),
    "handover.idle_minutes": Option(
        60.0,
        "After this many minutes without an agent's reply, the bot takes a handed-over conversation back "
        "(take_thread_control) and the flow resumes; 0: only Meta or the user's take_back word return it.",
    ),
    "handover.alert_url_env": Option(
        "OTNFLOW_HANDOVER_ALERT_URL",
        "The environment variable holding the URL POSTed to when a conversation is handed over (a chat webhook, "
        "a pager): a secret, so never in this file. Unset: only the WARNING log line.",
    ),
    "log.level": Option("INFO", "DEBUG, INFO, WARNING or ERROR."),
    "log.format": Option("json", "json (one object per line) or text."),
}
SECRETS = ("OTNFLOW_APP_SECRET", "OTNFLOW_PAGE_TOKEN", "OTNFLOW_VERIFY_TOKEN", "OTNFLOW_API_TOKEN")
LOCAL_SECRET = "otnflow-local"


def env_name(key: str) -> str:
    return "OTNFLOW_" + key.replace(".", "_").upper()


@dataclass(frozen=True, kw_only=True)
class ServerSection:
    host: str
    port: int
    max_body_bytes: int
    read_timeout_seconds: float
    figures_refresh_seconds: float
    allow_sha1_signature: bool
    simulated_user_ids: bool
    event_loop: str  # uvloop or asyncio
    gc_threshold: int  # 0: Python's own


@dataclass(frozen=True, kw_only=True)
class FlowsSection:
    dir: str
    templates: str
    default: str


@dataclass(frozen=True, kw_only=True)
class TemplatesSection:
    filters: str  # comma-separated entry points or module:name (engine/flow extensions)
    globals: str


@dataclass(frozen=True, kw_only=True)
class StoreSection:
    url: str
    inbox_retention_days: float


@dataclass(frozen=True, kw_only=True)
class GraphSection:
    url: str
    version: str
    app_id: str
    timeout_seconds: float
    max_attempts: int
    backoff_base_seconds: float
    backoff_max_seconds: float


@dataclass(frozen=True, kw_only=True)
class DispatcherSection:
    concurrency: int
    leases: str  # auto, on or off
    lease_seconds: float


@dataclass(frozen=True, kw_only=True)
class NotifySection:
    concurrency: int
    rate_per_second: float
    claim_seconds: float
    expiring_soon_days: float


@dataclass(frozen=True, kw_only=True)
class HandoverSection:
    idle_minutes: float  # take a silent person's conversation back after this long; 0: never
    alert_url_env: str  # the environment variable holding the hand-over alert's URL (a secret: not in the file)


@dataclass(frozen=True, kw_only=True)
class LogSection:
    level: str
    format: str  # json or text


Section = TypeVar("Section", bound="DataclassInstance")


def _section(cls: type[Section], name: str, values: Mapping[str, Any]) -> Section:
    """A section from the parsed values: its fields are the keys `name.field` (already of the right type)."""
    return cls(**{f.name: values[f"{name}.{f.name}"] for f in fields(cls)})


def _policy(values: Mapping[str, Any]) -> PolicySettings:
    return PolicySettings(
        window_hours=values["policy.window_hours"],
        allowed_tags=frozenset(t.strip() for t in str(values["policy.allowed_tags"]).split(",") if t.strip()),
        human_agent_days=values["policy.human_agent_days"],
        otn_available=values["policy.otn_available"],
        page_in_eu=values["policy.page_in_eu"],
        otn_token_days=values["policy.otn_token_days"],
        otn_max_requests=values["policy.otn_max_requests"],
        otn_request_period_hours=values["policy.otn_request_period_hours"],
        otn_skip_if_token_held=values["policy.otn_skip_if_token_held"],
    )


@dataclass(frozen=True, kw_only=True)
class Settings:
    root: Path  # the folder of config.toml: relative paths are relative to it
    values: Mapping[str, Any]  # every setting by `section.key`, parsed (what the sections are built from)
    app_secret: str
    page_token: str
    verify_token: str
    api_token: str
    server: ServerSection
    flows: FlowsSection
    templates: TemplatesSection
    store: StoreSection
    graph: GraphSection
    dispatcher: DispatcherSection
    policy: PolicySettings
    eu_user_tag: str  # policy.eu_user_tag: users tagged so are treated as in the EU
    notify: NotifySection
    handover: HandoverSection
    log: LogSection
    actions: Mapping[str, str] = field(default_factory=dict)  # config.toml's Python actions: name -> "module:function"
    http_actions: Mapping[str, HttpAction] = field(default_factory=dict)  # config.toml's [actions.NAME] kind = "http"
    #: The values of the environment variables HTTP actions name (`env = [...]`), set ones only: secrets, never logged.
    action_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    handover_alert_url: str = field(default="", repr=False)  # from the variable handover.alert_url_env names

    @classmethod
    def parsed(
        cls,
        root: Path,
        values: Mapping[str, Any],
        secrets: Mapping[str, str],
        *,
        actions: Mapping[str, str] | None = None,
        http_actions: Mapping[str, HttpAction] | None = None,
        action_env: Mapping[str, str] | None = None,
        handover_alert_url: str = "",
    ) -> Settings:
        """The typed sections of checked values; `secrets` by attribute name (app_secret, page_token, ...)."""
        return cls(
            root=root,
            values=values,
            app_secret=secrets.get("app_secret", ""),
            page_token=secrets.get("page_token", ""),
            verify_token=secrets.get("verify_token", ""),
            api_token=secrets.get("api_token", ""),
            server=_section(ServerSection, "server", values),
            flows=_section(FlowsSection, "flows", values),
            templates=_section(TemplatesSection, "templates", values),
            store=_section(StoreSection, "store", values),
            graph=_section(GraphSection, "graph", values),
            dispatcher=_section(DispatcherSection, "dispatcher", values),
            policy=_policy(values),
            eu_user_tag=str(values["policy.eu_user_tag"]),
            notify=_section(NotifySection, "notify", values),
            handover=_section(HandoverSection, "handover", values),
            log=_section(LogSection, "log", values),
            actions=dict(actions or {}),
            http_actions=dict(http_actions or {}),
            action_env=dict(action_env or {}),
            handover_alert_url=handover_alert_url,
        )

    @property
    def local_mode(self) -> bool:
        """No page token: replies go to an in-process fake Graph API instead of Facebook."""
        return not self.page_token

    def path(self, folder: str) -> Path:
        """A configured folder (e.g. `self.flows.dir`) as an absolute path, relative to config.toml's folder."""
        return (self.root / folder).resolve()

    def action_functions(self) -> dict[str, ActionFunction]:
        """The registered Python actions (entry points, then `[actions]`); ConfigError for one that cannot be
        imported. The project's own modules are found from config.toml's folder (`shop.actions`)."""
        if self.actions and str(self.root) not in sys.path:
            sys.path.append(str(self.root))
        try:
            return load_actions(self.actions)
        except ExtensionError as err:
            raise ConfigError(f"config: {err}") from None

    def action_signatures(self) -> dict[str, frozenset[str]]:
        """Every registered action's name and the arguments it needs, for `otnflow check`."""
        python = {name: required_args(function) for name, function in self.action_functions().items()}
        return {**python, **{name: action.args for name, action in self.http_actions.items()}}

    def flow_options(self) -> FlowOptions:
        """How flows are checked against this configuration (templates folder, OTN availability, allowed tags, the
        registered actions and the arguments they need)."""
        policy = self.policy
        try:
            filters = load_named(self.templates.filters, FILTER_GROUP)
            globals_ = load_named(self.templates.globals, GLOBAL_GROUP, callables=False)
        except ExtensionError as err:
            raise ConfigError(f"config: templates: {err}") from None
        return FlowOptions(
            actions=self.action_signatures(),
            templates_dir=self.path(self.flows.templates),
            template_filters=filters,
            template_globals=globals_,
            limits=Limits(allowed_tags=policy.allowed_tags),
            otn_available=policy.otn_enabled,
            tags_set_elsewhere=frozenset({self.eu_user_tag}),
        )

    @property
    def leases(self) -> bool:
        mode = self.dispatcher.leases
        return mode == "on" or (mode == "auto" and self.store_url.startswith("mongodb"))

    @property
    def store_url(self) -> str:
        url = self.store.url
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            return "sqlite:///" + str(self.root / url.removeprefix("sqlite:///"))
        return url


def _coerce(key: str, value: Any, source: str, from_env: bool = False) -> Any:
    """Environment values are text and are parsed; file values must already have the right TOML type."""
    default = OPTIONS[key].default
    kind = type(default)
    if from_env and kind is not str:
        text = value.strip()
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return text.lower() in ("true", "1", "yes")
            return kind(text)
        except ValueError:
            raise ConfigError(f"config: {key} = {value!r} ({source}) must be {_kind_name(kind)}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"config: {key} = {value!r} ({source}) must be {_kind_name(kind)}")
    return value


def _kind_name(kind: type) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[kind]


def load_settings(
    config_path: Path | None = None, environ: Mapping[str, str] | None = None, *, require_secrets: bool = True
) -> Settings:
    """The settings; ConfigError for the first problem. `require_secrets=False` is for `otnflow doctor`, which
    reports every missing secret itself."""
    env = os.environ if environ is None else environ
    path = config_path or Path(env.get("OTNFLOW_CONFIG", "config.toml"))
    values = {key: option.default for key, option in OPTIONS.items()}
    actions: Mapping[str, str] = {}
    http_actions: Mapping[str, HttpAction] = {}
    if path.exists():
        try:
            text = path.read_text(encoding="utf-8")
            document = tomli.loads(text)
        except tomli.TOMLDecodeError as err:
            raise ConfigError(f"config: {path}:{err.lineno}: TOML syntax error: {err.msg}") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"config: {path}: cannot read it: {err}") from None
        document.pop("actions", None)
        actions, http_actions = _declared_actions(path, text)
        for section, table in document.items():
            if not isinstance(table, dict):
                raise ConfigError(f"config: {path}: '{section}' must be a [section]; known: {_sections()}")
            for name, value in table.items():
                key = f"{section}.{name}"
                if key not in OPTIONS:
                    close = difflib.get_close_matches(key, list(OPTIONS), n=1)
                    hint = f"; did you mean '{close[0]}'?" if close else ""
                    raise ConfigError(f"config: {path}: unknown setting '{key}'{hint}")
                values[key] = _coerce(key, value, str(path))
    elif config_path is not None:
        raise ConfigError(f"config: {path} not found")
    for key in OPTIONS:
        name = env_name(key)
        if name in env:
            values[key] = _coerce(key, env[name], f"from {name}", from_env=True)
    if values["dispatcher.leases"] not in ("auto", "on", "off"):
        raise ConfigError(f"config: dispatcher.leases = {values['dispatcher.leases']!r} must be auto, on or off")
    if values["server.event_loop"] not in ("uvloop", "asyncio"):
        raise ConfigError(f"config: server.event_loop = {values['server.event_loop']!r} must be uvloop or asyncio")
    if values["server.gc_threshold"] < 0:
        raise ConfigError(f"config: server.gc_threshold = {values['server.gc_threshold']!r} must be 0 or more")
    if values["log.format"] not in ("json", "text"):
        raise ConfigError(f"config: log.format = {values['log.format']!r} must be json or text")
    if not str(values["store.url"]).startswith(("sqlite:///", "mongodb://", "mongodb+srv://")):
        raise ConfigError(f"config: store.url = {values['store.url']!r} must start with sqlite:/// or mongodb://")
    settings = Settings.parsed(
        path.parent.resolve() if path.exists() else Path.cwd(),
        values,
        {name.removeprefix("OTNFLOW_").lower(): env.get(name, "") for name in SECRETS},
        actions=actions,
        http_actions=http_actions,
        action_env={name: env[name] for action in http_actions.values() for name in action.env if name in env},
        handover_alert_url=env.get(str(values["handover.alert_url_env"]), ""),
    )
    return _check_secrets(settings) if require_secrets else settings


@functools.lru_cache(maxsize=16)
def _declared_actions(path: Path, text: str) -> tuple[Mapping[str, str], Mapping[str, HttpAction]]:
    """The actions a config text declares, checked once per text: checking an HTTP action parses its templates,
    most of what reading a config costs, and a test suite starts hundreds of servers on one config.toml. (The
    results are read-only: Settings copies the mappings; an HttpAction is frozen.)"""
    return _actions(tomli.loads(text).get("actions", {}), path, text)


def _actions(declared: Any, path: Path, text: str) -> tuple[dict[str, str], dict[str, HttpAction]]:
    """config.toml's `[actions]`: Python actions as `name = "module:function"`, HTTP actions as
    `[actions.NAME]` tables with kind = "http" (engine/http_actions.py). ConfigError with the line of a problem."""
    if not isinstance(declared, dict):
        raise ConfigError(f"config: {path}: 'actions' must be a [section]")
    python: dict[str, str] = {}
    http: dict[str, HttpAction] = {}
    locate = Locator(text)
    for name, value in declared.items():
        where = f"config: {path}:{locate.line(('actions', name))}: actions.{name}"
        if isinstance(value, str):
            python[name] = value
        elif isinstance(value, dict) and value.get("kind") == "http":
            try:
                http[name] = parse_http_action(name, value)
            except HttpActionError as err:
                line = locate.line(("actions", name, *err.key))
                raise ConfigError(f"config: {path}:{line}: actions.{name}: {err}") from None
        elif isinstance(value, dict):
            raise ConfigError(f'{where}: a table declares an HTTP action: kind = "http" (got {value.get("kind")!r})')
        else:
            raise ConfigError(f'{where}: name a Python action as "module:function", or declare an HTTP action table')
    return python, http


def _check_secrets(settings: Settings) -> Settings:
    if settings.local_mode:  # a fresh clone runs with no Facebook account at all
        return replace(
            settings,
            app_secret=settings.app_secret or LOCAL_SECRET,
            page_token="",
            verify_token=settings.verify_token or LOCAL_SECRET,
            api_token=settings.api_token or LOCAL_SECRET,
        )
    missing = missing_secrets(settings)
    if missing:
        names = " and ".join(missing)
        raise ConfigError(
            f"config: {names} {'is' if len(missing) == 1 else 'are'} not set: with OTNFLOW_PAGE_TOKEN set (live "
            f"mode) export {'it' if len(missing) == 1 else 'them'} too (see docs/going-live.md)"
        )
    return settings


def missing_secrets(settings: Settings) -> list[str]:
    """The secrets live mode needs that the environment does not give, all of them (not one per run)."""
    needed = [
        ("OTNFLOW_PAGE_TOKEN", settings.page_token),
        ("OTNFLOW_APP_SECRET", settings.app_secret),
        ("OTNFLOW_VERIFY_TOKEN", settings.verify_token),
    ]
    return [name for name, value in needed if not value]


def _sections() -> str:
    return ", ".join(sorted({key.split(".")[0] for key in OPTIONS}))
