"""The `otnflow` command: init, check, graph, schema, serve, doctor, notify, stats, inbox, test, chat.

`otnflow --help` lists them with what each does; each subcommand's parser is built in `build_parser()`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import os
import sys
from collections.abc import Sequence
from contextlib import aclosing
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .flow import FlowOptions, check_paths, flow_files
from .flow.loader import read_flow
from .flow.mermaid import to_mermaid
from .flow.shapes import schema_text

if TYPE_CHECKING:
    from .config import Settings
    from .flow import CompiledFlow
    from .runtime.audience import Audience


def _flow_options(args: argparse.Namespace) -> FlowOptions:
    """From config.toml when there is one (templates, OTN availability, allowed tags); --templates overrides."""
    from .config import ConfigError, load_settings

    try:
        options = load_settings(Path(args.config) if args.config else None).flow_options()
    except ConfigError:
        if args.config:  # one named on the command line must be usable; a broken default one is `serve`'s problem
            raise
        options = FlowOptions()
    templates = Path(args.templates) if args.templates else options.templates_dir or Path("templates")
    return dataclasses.replace(options, templates_dir=templates)


def _settings(args: argparse.Namespace) -> Settings:
    """Settings, or SystemExit(2) with the one line that says what is wrong."""
    from .config import ConfigError, load_settings

    try:
        return load_settings(Path(args.config) if args.config else None)
    except ConfigError as err:
        print(f"otnflow: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def _flows(settings: Settings) -> dict[str, CompiledFlow]:
    from .flow import FlowError
    from .runtime.flows import load_configured_flows

    try:
        return load_configured_flows(settings)
    except FlowError as err:
        for diagnostic in err.diagnostics:
            print(diagnostic, file=sys.stderr)
        print("otnflow: the flows have errors (listed above); `otnflow check` shows them too", file=sys.stderr)
        raise SystemExit(1) from None


def _parse_vars(pairs: list[str]) -> dict[str, str]:
    variables = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            print(f"otnflow: --var {pair!r} must be key=value", file=sys.stderr)
            raise SystemExit(2)
        variables[key] = value
    return variables


def cmd_notify(args: argparse.Namespace) -> int:
    import asyncio

    settings = _settings(args)
    flows = _flows(settings)
    variables = _parse_vars(args.var)
    return asyncio.run(_notify(settings, flows, args.topic, args.segment or "", variables, args.campaign, args.dry_run))


async def _notify(
    settings: Settings,
    flows: dict[str, CompiledFlow],
    topic: str,
    segment: str,
    variables: dict[str, str],
    name: str | None,
    dry_run: bool = False,
) -> int:
    import aiohttp

    from .messenger.client import GraphClient
    from .runtime.assembly import assemble, graph_settings
    from .runtime.campaigns import CampaignError
    from .runtime.clock import SystemClock
    from .runtime.flows import FlowSet, LiveFlows
    from .runtime.metrics import Metrics
    from .runtime.sender import SendingHealth
    from .store import open_store

    if settings.local_mode and not os.environ.get("OTNFLOW_GRAPH_URL") and not dry_run:
        print(
            "otnflow: notify sends real messages: set OTNFLOW_PAGE_TOKEN (or OTNFLOW_GRAPH_URL for a fake)",
            file=sys.stderr,
        )
        return 2
    store = open_store(settings.store_url, settings.store.inbox_retention_days)
    await store.open()
    try:
        async with (
            aiohttp.ClientSession() as session,
            aclosing(GraphClient(session, graph_settings(settings))) as graph,
        ):
            runtime = assemble(
                settings,
                LiveFlows(FlowSet.configured(settings, flows)),
                store,
                graph,
                SystemClock(),
                Metrics(),
                SendingHealth(),
                campaigns_through_dispatcher=False,
            )
            bar = ProgressBar(sys.stderr)
            try:
                if dry_run:
                    audience = await runtime.campaigns.dry_run(topic, segment, variables)
                    print(audience_table(audience, segment))
                    return 0
                report = await runtime.campaigns.run(topic, segment, variables, name, progress=bar.update)
            except CampaignError as err:
                print(f"otnflow: {err}", file=sys.stderr)
                return 2
            bar.close()
    finally:
        await store.close()
    print(campaign_table(report.as_dict()))
    if report.stopped:
        print(
            f"otnflow: campaign stopped: {report.stopped}; fix it and run the same command again to resume",
            file=sys.stderr,
        )
        return 1
    return 0


class ProgressBar:
    """A one-line bar on a terminal; a line every 10% elsewhere (logs, CI)."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream, self.width = stream, width
        self.tty = stream.isatty()
        self._last_tenth = -1

    def update(self, done: int, total: int) -> None:
        total = max(total, 1)
        if self.tty:
            filled = self.width * done // total
            self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total}")
            self.stream.flush()
        elif (tenth := 10 * done // total) != self._last_tenth:
            self._last_tenth = tenth
            print(f"notify: {done}/{total}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


def audience_table(audience: Audience, segment: str) -> str:
    """What `notify --dry-run` prints: who would get which variant; nothing was sent or claimed."""
    from .runtime.audience import held_listing

    rows: list[tuple[str, object]] = [("topic", audience.topic), ("segment", segment or "(all)")]
    rows.append(("requests reached", held_listing(audience.reached)))
    rows += [(f"variant {v.index + 1} ({v.when or 'default'})", v.users) for v in audience.variants]
    rows += [(f"skipped:{reason}", n) for reason, n in sorted(audience.refused.items())]
    rows.append(("would receive", audience.users))
    width = max(len(key) for key, _ in rows)
    lines = [f"{key.ljust(width)}  {value}" for key, value in rows]
    return "\n".join([*lines, "dry run: nothing was sent or claimed"])


def campaign_table(report: dict[str, Any]) -> str:
    counts: dict[str, int] = report["counts"]
    rows = [
        ("campaign", report["campaign"]),
        ("topic", report["topic"]),
        ("segment", report["segment"] or "(all)"),
        ("eligible", report["eligible"]),
    ]
    rows += [(key, value) for key, value in sorted(counts.items())]
    rows.append(("seconds", report["seconds"]))
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key.ljust(width)}  {value}" for key, value in rows)


def cmd_stats(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from .runtime.clock import SystemClock
    from .runtime.stats import UNSUBSCRIBED_USERS, stats_document, table
    from .store import open_store

    settings = _settings(args)

    async def run() -> dict[str, Any]:
        store = open_store(settings.store_url, settings.store.inbox_retention_days)
        await store.open()
        try:
            now, soon = SystemClock().now_ms(), settings.notify.expiring_soon_days
            return await stats_document(store, now, soon)
        finally:
            await store.close()

    figures = asyncio.run(run())
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    unsubscribed = figures.pop(UNSUBSCRIBED_USERS)
    print(f"{table(figures)}\nunsubscribed users: {unsubscribed}")
    return 0


def cmd_inbox(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from .store import RejectedEvent, open_store

    settings = _settings(args)

    async def run() -> tuple[dict[str, int], list[RejectedEvent]]:
        store = open_store(settings.store_url, settings.store.inbox_retention_days)
        await store.open()
        try:
            return await store.counts(), (await store.rejected_events(args.limit) if args.rejected else [])
        finally:
            await store.close()

    counts, rejected = asyncio.run(run())
    if not args.rejected:
        keys = ("inbox_pending", "inbox_handled", "inbox_failed", "rejected")
        print("\n".join(f"{key}: {counts.get(key, 0)}" for key in keys))
        return 0
    if args.json:
        print(json.dumps([vars(r) for r in rejected], indent=2, ensure_ascii=False))
        return 0
    for r in rejected:
        print(f"{r.received_ms}  {r.kind}  {r.reason}\n    {r.body}")
    print(f"{len(rejected)} of {counts.get('rejected', 0)} rejected event(s) shown, newest first")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.paths] or [Path("flows")]
    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"otnflow check: no such file or folder: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    flows, diagnostics = check_paths(paths, _flow_options(args))
    for diagnostic in diagnostics:
        print(diagnostic)
    errors = sum(d.is_error for d in diagnostics)
    warnings = len(diagnostics) - errors
    files = len(flow_files(paths))
    print(f"{files} flow file(s), {len(flows)} ok, {errors} error(s), {warnings} warning(s)", file=sys.stderr)
    return 1 if errors or (args.strict and warnings) else 0


def cmd_graph(args: argparse.Namespace) -> int:
    if not Path(args.flow).is_file():
        print(f"otnflow graph: {args.flow} is not a flow file", file=sys.stderr)
        return 2
    spec, report = read_flow(Path(args.flow))
    if spec is None:
        for diagnostic in report.diagnostics:
            print(diagnostic, file=sys.stderr)
        return 1
    sys.stdout.write(to_mermaid(spec))
    return 0


def _event_loop(choice: str) -> asyncio.AbstractEventLoop:
    """The server's event loop: uvloop unless the settings ask for asyncio's own or uvloop is not installed."""
    if choice == "uvloop":
        try:
            import uvloop
        except ImportError:  # an optional speed-up: Windows has none
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _tune_gc(threshold: int) -> None:
    """Fewer garbage-collector runs for a long-lived server: with Python's default (a run every 700 new objects) a
    webhook turn spent about a tenth of its CPU in the collector. Objects alive after start-up (modules, compiled
    flows and templates) are frozen out of its scans; 0 keeps Python's settings."""
    if threshold:
        gc.collect()
        gc.freeze()
        gc.set_threshold(threshold, *gc.get_threshold()[1:])


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from .config import SECRETS
    from .flow import FlowError
    from .logs import setup_logging
    from .web import create_app
    from .web.deadline import server_options
    from .web.keys import FLOWS, GRAPH_URL, SETTINGS

    settings = _settings(args)
    setup_logging(
        settings.log.level,
        settings.log.format,
        [
            settings.app_secret,
            settings.page_token,
            settings.verify_token,
            settings.api_token,
            *settings.action_env.values(),
        ],
    )
    try:
        app = create_app(settings, playground=True if args.playground else None)
    except FlowError as err:
        for diagnostic in err.diagnostics:
            print(diagnostic, file=sys.stderr)
        print("otnflow: the flows have errors (listed above); fix them, `otnflow check` to confirm", file=sys.stderr)
        return 1
    except ValueError as err:
        print(f"otnflow: {err}", file=sys.stderr)
        return 2
    host = args.host or settings.server.host
    port = args.port if args.port is not None else settings.server.port

    async def banner(app: web.Application) -> None:
        s = app[SETTINGS]
        _tune_gc(s.server.gc_threshold)
        flows = app[FLOWS].current.flows
        lines = [
            f"otnflow serving on http://{host}:{port}/webhook",
            f"  flows: {', '.join(sorted(flows))}",
            f"  store: {s.store_url}",
        ]
        if s.local_mode:
            lines.append(f"  playground: http://{host}:{port}/playground")
        if s.local_mode:
            lines += [
                f"  LOCAL MODE: no OTNFLOW_PAGE_TOKEN set; replies go to the in-process fake Graph API at "
                f"{app[GRAPH_URL]}",
                f"  local webhook secrets: app secret and verify token are '{s.app_secret}' unless "
                f"{SECRETS[0]} / {SECRETS[2]} are set",
            ]
        else:
            lines.append(f"  Graph API: {app[GRAPH_URL]}")
        print("\n".join(lines), flush=True)

    app.on_startup.append(banner)
    web.run_app(
        app,
        host=host,
        port=port,
        print=None,
        access_log=None,
        shutdown_timeout=5.0,
        loop=_event_loop(settings.server.event_loop),
        **server_options(settings),
    )
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    import asyncio

    from .flow import FlowError
    from .testing.conversations import ConversationRunner, conversation_files, load_conversations

    paths = [Path(p) for p in args.paths] or [Path("flows")]
    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"otnflow test: no such file or folder: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    files = conversation_files(paths)
    if not files:
        print(f"otnflow test: no test_*.toml under {', '.join(map(str, paths))}", file=sys.stderr)
        return 2
    runner = ConversationRunner()
    passed = failed = 0

    async def run_all() -> None:
        nonlocal passed, failed
        for path in files:
            print(path)
            try:
                conversations = load_conversations(path)
                runner.flows(conversations)
            except FlowError as err:
                print("\n".join(f"  {d}" for d in err.diagnostics))
                failed += 1
                continue
            for test in conversations.tests:
                result = await runner.run(conversations, test)
                mark = "ok  " if result.passed else "FAIL"
                print(f"  {mark} {test.name} ({len(test.steps)} steps, {result.seconds * 1000:.0f} ms)")
                if not result.passed:
                    print("\n".join(f"       {line}" for line in result.failure.splitlines()))
                passed += result.passed
                failed += not result.passed

    asyncio.run(run_all())
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def cmd_chat(args: argparse.Namespace) -> int:
    import asyncio

    from .flow import FlowError
    from .testing.chat import PROMPT, run
    from .testing.harness import HarnessError

    interactive = sys.stdin.isatty()

    def read() -> str | None:
        try:
            return input(PROMPT) if interactive else sys.stdin.readline() or None
        except EOFError:
            return None

    try:
        return asyncio.run(run(args.flow, Path(args.config) if args.config else None, args.user, read))
    except FlowError as err:
        print(err, file=sys.stderr)
        print("otnflow chat: the flows have errors (listed above)", file=sys.stderr)
        return 1
    except HarnessError as err:
        print(f"otnflow chat: {err}", file=sys.stderr)
        return 2


def cmd_doctor(args: argparse.Namespace) -> int:
    import asyncio

    from .doctor import Doctor, Status, summary

    verdicts = asyncio.run(Doctor(Path(args.config) if args.config else None, args.url).run())
    for verdict in verdicts:
        print(verdict)
    print(summary(verdicts))
    return 1 if any(v.status is Status.FAIL for v in verdicts) else 0


def cmd_schema(args: argparse.Namespace) -> int:
    if args.output:
        from .starter import write_schema

        write_schema(Path(args.output))
        print(f"otnflow: wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(schema_text())
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from .starter import create_project

    target = Path(args.dir)
    written = create_project(target)
    print("\n".join(f"  {path.relative_to(target)}" for path in written))
    go = f"cd {target} && " if target.resolve() != Path.cwd() else ""
    print(f"otnflow: a new bot in {target}; try: {go}otnflow check && otnflow test && otnflow serve")
    return 0


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535)")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otnflow", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check", help="check flow files; print file:line: message for every problem")
    check.add_argument("paths", nargs="*", help="flow files or folders (default: flows/)")
    check.add_argument("--templates", help="templates folder (default: from config.toml, else templates/)")
    check.add_argument("--config", help="config file (default: config.toml, or $OTNFLOW_CONFIG)")
    check.add_argument("--strict", action="store_true", help="fail on warnings too")
    check.set_defaults(run=cmd_check)

    graph = commands.add_parser("graph", help="print a flow as a Mermaid state diagram")
    graph.add_argument("flow", help="a flow file")
    graph.set_defaults(run=cmd_graph)

    serve = commands.add_parser("serve", help="run the webhook server (local mode without a page token)")
    serve.add_argument("--config", help="config file (default: config.toml, or $OTNFLOW_CONFIG)")
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=_port, help="override server.port")
    serve.add_argument(
        "--playground",
        action="store_true",
        help="insist on the playground: it is served in local mode (no OTNFLOW_PAGE_TOKEN) and refused with a "
        "page token, since it would drive the real users in the live store",
    )
    serve.set_defaults(run=cmd_serve)

    notify = commands.add_parser("notify", help="deliver a topic to every user holding a valid OTN token")
    notify.add_argument("topic")
    notify.add_argument("--segment", help='only users matching this segment expression, e.g. "likes_white"')
    notify.add_argument("--var", action="append", default=[], metavar="KEY=VALUE", help="a template variable")
    notify.add_argument("--campaign", help="campaign name (default: derived from topic, segment and vars)")
    notify.add_argument("--dry-run", action="store_true", help="print the audience per variant; send and claim nothing")
    notify.add_argument("--config", help="config file (default: config.toml, or $OTNFLOW_CONFIG)")
    notify.set_defaults(run=cmd_notify)

    stats = commands.add_parser("stats", help="the OTN loop's figures per topic")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.add_argument("--config", help="config file (default: config.toml, or $OTNFLOW_CONFIG)")
    stats.set_defaults(run=cmd_stats)

    inbox = commands.add_parser("inbox", help="inbox counts; --rejected lists the webhook's dead letters")
    inbox.add_argument("--rejected", action="store_true", help="list events kept in the dead-letter table")
    inbox.add_argument("--limit", type=int, default=50, help="how many dead letters, newest first (default: 50)")
    inbox.add_argument("--json", action="store_true", help="print JSON instead of text")
    inbox.add_argument("--config", help="config file (default: config.toml, or $OTNFLOW_CONFIG)")
    inbox.set_defaults(run=cmd_inbox)

    test = commands.add_parser("test", help="run conversation tests (test_*.toml) against the flows")
    test.add_argument("paths", nargs="*", help="test files or folders (default: flows/)")
    test.set_defaults(run=cmd_test)

    chat = commands.add_parser("chat", help="talk to a flow in the terminal (the real engine, a fake Graph API)")
    chat.add_argument("flow", nargs="?", help="the flow's name (default: config.toml's flows.default)")
    chat.add_argument("--user", default="you", help="your user id (default: you)")
    chat.add_argument("--config", help="config file (default: config.toml, or $OTNFLOW_CONFIG)")
    chat.set_defaults(run=cmd_chat)

    doctor = commands.add_parser("doctor", help="check the Facebook-side setup: token, webhook fields, OTN, store")
    doctor.add_argument("--url", help="the public webhook URL, to check the verification handshake")
    doctor.add_argument("--config", help="config file (default: config.toml, or $OTNFLOW_CONFIG)")
    doctor.set_defaults(run=cmd_doctor)

    schema = commands.add_parser("schema", help="print the JSON Schema of flow files (for editors)")
    schema.add_argument("-o", "--output", help="write it to this file instead (e.g. flow.schema.json)")
    schema.set_defaults(run=cmd_schema)

    init = commands.add_parser("init", help="create a new bot project: config, an example flow, its test")
    init.add_argument("dir", help="the project folder (created if absent; nothing in it is overwritten)")
    init.set_defaults(run=cmd_init)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Expected failures (bad settings, broken flows, missing files, a port in use) end in one line, never a
    traceback; each command handles its own first, this is the net under them."""
    from .flow import FlowError

    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except FlowError as err:
        for diagnostic in err.diagnostics:
            print(diagnostic, file=sys.stderr)
        print(f"otnflow {args.command}: the flows have errors (listed above)", file=sys.stderr)
        return 1
    except (OSError, ValueError) as err:  # ConfigError is a ValueError
        print(f"otnflow {args.command}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    raise SystemExit(main())
