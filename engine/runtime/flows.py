"""The flows the runtime runs: loaded from the configured folder, held as one immutable set, replaced whole.

A local-mode reload swaps in a new `FlowSet` (one assignment on `LiveFlows`); it never changes a set in place. A
step or a campaign takes `LiveFlows.current` once and keeps that set to its end, so it sees one consistent set of
flows and one default, whatever a reload does meanwhile.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ..config import Settings
from ..flow import CompiledFlow, Diagnostic, check_paths, load_flows


def load_configured_flows(settings: Settings) -> dict[str, CompiledFlow]:
    """Every flow in `flows.dir`, or FlowError listing every problem of every file: for the server and the CLI."""
    return load_flows([settings.path(settings.flows.dir)], settings.flow_options())


def check_configured_flows(settings: Settings) -> tuple[dict[str, CompiledFlow], list[Diagnostic]]:
    """The flows of `flows.dir` that load, and every finding (a reload keeps the running flows on any error)."""
    return check_paths([settings.path(settings.flows.dir)], settings.flow_options())


def no_such_flow(name: str, flows: Mapping[str, CompiledFlow]) -> str:
    """One line for a flow name that is not loaded: the closest name, and every flow there is."""
    close = difflib.get_close_matches(name, list(flows), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"no flow named '{name}'{hint} (the flows: {', '.join(sorted(flows)) or 'none'})"


@dataclass(frozen=True)
class FlowSet:
    """One consistent set of compiled flows (a read-only mapping) and the flow a new user enters."""

    flows: Mapping[str, CompiledFlow]
    default: str

    @classmethod
    def of(cls, flows: Mapping[str, CompiledFlow], default: str = "") -> FlowSet:
        """`default` as `flows.default` says it ('' for the first flow by name); ValueError naming the setting
        when no such flow is among them."""
        chosen = default or (min(flows) if flows else "")
        if chosen not in flows:
            raise ValueError(f"flows.default: {no_such_flow(chosen, flows)}")
        return cls(MappingProxyType(dict(flows)), chosen)

    @classmethod
    def configured(cls, settings: Settings, flows: Mapping[str, CompiledFlow]) -> FlowSet:
        return cls.of(flows, settings.flows.default)

    def for_user(self, flow_name: str) -> CompiledFlow:
        """The user's flow, or the default one when theirs is not (or no longer) loaded."""
        return self.flows.get(flow_name) or self.flows[self.default]

    def declaring(self, topic: str) -> CompiledFlow | None:
        """The first flow that declares the OTN topic, if any."""
        return next((flow for flow in self.flows.values() if topic in flow.spec.topics), None)

    def topics(self) -> list[str]:
        return sorted({t for flow in self.flows.values() for t in flow.spec.topics})


class LiveFlows:
    """The `FlowSet` in use now. Read `current` once per unit of work; `replace` swaps in a whole new set."""

    def __init__(self, flows: FlowSet) -> None:
        self._current = flows

    @property
    def current(self) -> FlowSet:
        return self._current

    def replace(self, flows: FlowSet) -> None:
        self._current = flows
