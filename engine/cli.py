"""The `otnflow` command: serve, check, graph (and more as the engine grows)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .flow import FlowOptions, check_paths, flow_files
from .flow.graph import to_mermaid
from .flow.loader import read_flow
from .flow.shapes import schema_text


def _flow_options(args: argparse.Namespace) -> FlowOptions:
    return FlowOptions(templates_dir=Path(args.templates))


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
    spec, report = read_flow(Path(args.flow))
    if spec is None:
        for diagnostic in report.diagnostics:
            print(diagnostic, file=sys.stderr)
        return 1
    sys.stdout.write(to_mermaid(spec))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from .config import SECRETS, ConfigError, load_settings
    from .flow import FlowError
    from .logs import setup_logging
    from .web import create_app
    from .web.keys import FLOWS, GRAPH_URL, SETTINGS

    try:
        settings = load_settings(Path(args.config) if args.config else None)
    except ConfigError as err:
        print(f"otnflow: {err}", file=sys.stderr)
        return 2
    setup_logging(
        str(settings["log.level"]),
        str(settings["log.format"]),
        [settings.app_secret, settings.page_token, settings.verify_token, settings.api_token],
    )
    try:
        app = create_app(settings)
    except FlowError as err:
        for diagnostic in err.diagnostics:
            print(diagnostic, file=sys.stderr)
        print("otnflow: the flows have errors (listed above); fix them, `otnflow check` to confirm", file=sys.stderr)
        return 1
    except ValueError as err:
        print(f"otnflow: {err}", file=sys.stderr)
        return 2
    host = args.host or str(settings["server.host"])
    port = args.port if args.port is not None else int(settings["server.port"])

    async def banner(app: web.Application) -> None:
        s = app[SETTINGS]
        flows = app[FLOWS]
        lines = [
            f"otnflow serving on http://{host}:{port}/webhook",
            f"  flows: {', '.join(sorted(flows))}",
            f"  store: {s.store_url}",
        ]
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
    web.run_app(app, host=host, port=port, print=None, access_log=None, shutdown_timeout=5.0)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(schema_text())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otnflow", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check", help="check flow files; print file:line: message for every problem")
    check.add_argument("paths", nargs="*", help="flow files or folders (default: flows/)")
    check.add_argument("--templates", default="templates", help="templates folder (default: templates/)")
    check.add_argument("--strict", action="store_true", help="fail on warnings too")
    check.set_defaults(run=cmd_check)

    graph = commands.add_parser("graph", help="print a flow as a Mermaid state diagram")
    graph.add_argument("flow", help="a flow file")
    graph.set_defaults(run=cmd_graph)

    serve = commands.add_parser("serve", help="run the webhook server (local mode without a page token)")
    serve.add_argument("--config", help="config file (default: config.toml, or $OTNFLOW_CONFIG)")
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    serve.set_defaults(run=cmd_serve)

    schema = commands.add_parser("schema", help="print the JSON Schema of flow files (for editors)")
    schema.set_defaults(run=cmd_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
