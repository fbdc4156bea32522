"""Flows as config files: load and check TOML flow files, compile them to shared state machines.

flow, diagnostics = load_flow(Path("flows/wine_shop.toml"), templates_dir=Path("templates"))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checks import Limits, check_flow, check_tags_set
from .compiler import ActionCall, Arrival, CompiledFlow, HandoverCall, Match, Reply, Snapshot, StepResult, UserInput
from .diagnostics import Diagnostic, FlowError, Reporter, Severity
from .loader import read_flow
from .spec import FlowSpec, Outcome
from .templates import make_environment

__all__ = [
    "ActionCall",
    "Arrival",
    "CompiledFlow",
    "Diagnostic",
    "FlowError",
    "FlowOptions",
    "FlowSpec",
    "HandoverCall",
    "Limits",
    "Match",
    "Outcome",
    "Reply",
    "Severity",
    "Snapshot",
    "StepResult",
    "UserInput",
    "check_paths",
    "flow_files",
    "load_flow",
    "load_flows",
]


@dataclass(frozen=True)
class FlowOptions:
    templates_dir: Path | None = None
    limits: Limits = field(default_factory=Limits)
    otn_available: bool = True
    tags_set_elsewhere: frozenset[str] = frozenset()  # set outside any flow (the EU tag): never "unset"
    template_filters: Mapping[str, Callable[..., Any]] = field(default_factory=dict)  # config's and packages'
    template_globals: Mapping[str, Any] = field(default_factory=dict)
    actions: Mapping[str, frozenset[str]] | None = None  # registered actions -> required arguments (None: unchecked)


def load_flow(path: Path, options: FlowOptions = FlowOptions()) -> tuple[CompiledFlow | None, list[Diagnostic]]:
    """Load, check and compile one flow file. The flow is None when any error was found."""
    _, flow, report = _load(path, options)
    return flow, sorted(report.diagnostics)


def _load(path: Path, options: FlowOptions) -> tuple[FlowSpec | None, CompiledFlow | None, Reporter]:
    spec, report = read_flow(path)
    env = make_environment(options.templates_dir, options.template_filters, options.template_globals)
    if spec is not None:
        check_flow(spec, report, env, options.limits, options.otn_available, options.actions)
    if spec is None or any(d.is_error for d in report.diagnostics):
        return spec, None, report
    return spec, CompiledFlow(spec, env), report


def flow_files(paths: Iterable[Path]) -> list[Path]:
    """Expand folders to the `*.toml` files directly inside them (sub-folders hold conversation tests)."""
    found: list[Path] = []
    for path in paths:
        found.extend(sorted(path.glob("*.toml")) if path.is_dir() else [path])
    return found


def check_paths(
    paths: Iterable[Path], options: FlowOptions = FlowOptions()
) -> tuple[dict[str, CompiledFlow], list[Diagnostic]]:
    """Load every flow under `paths`; also report flow names used twice, and tags some flow tests that no flow
    ever sets."""
    flows: dict[str, CompiledFlow] = {}
    first_file: dict[str, str] = {}
    loaded: list[tuple[FlowSpec, Reporter]] = []
    reports: list[Reporter] = []
    for file in flow_files(paths):
        spec, flow, report = _load(file, options)
        reports.append(report)
        if spec is not None:
            loaded.append((spec, report))
        if flow is None:
            continue
        name = flow.spec.name
        if name in first_file:
            report.diagnostics.append(
                Diagnostic(
                    file=str(file),
                    line=1,
                    message=f"flow name '{name}' is already used by {first_file[name]}",
                    key="flow.name",
                )
            )
            continue
        first_file[name] = str(file)
        flows[name] = flow
    check_tags_set(loaded, options.tags_set_elsewhere)
    return flows, [d for report in reports for d in sorted(report.diagnostics)]


def load_flows(paths: Iterable[Path], options: FlowOptions = FlowOptions()) -> dict[str, CompiledFlow]:
    """For the server: every flow, or FlowError listing every problem of every file."""
    paths = list(paths)
    missing = [Diagnostic(file=str(p), line=1, message="no such flows folder or file") for p in paths if not p.exists()]
    if missing:
        raise FlowError(missing)
    flows, diagnostics = check_paths(paths, options)
    errors = [d for d in diagnostics if d.is_error]
    if errors:
        raise FlowError(errors)
    if not flows:
        raise FlowError(
            [Diagnostic(file=", ".join(str(p) for p in paths), line=1, message="no flow files (*.toml) found")]
        )
    return flows
