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

    schema = commands.add_parser("schema", help="print the JSON Schema of flow files (for editors)")
    schema.set_defaults(run=cmd_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
