"""Assemble the runtime parts once, the same way for the server and for the CLI."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..config import Settings
from ..flow import CompiledFlow
from ..messenger.client import GraphClient, GraphSettings
from ..store import Store
from .actions import ActionRunner
from .campaigns import CampaignRunner
from .clock import Clock
from .conversation import StepHandler, StepMiddleware
from .dispatcher import Dispatcher, Leases
from .http_actions import HttpActionCaller
from .metrics import Metrics
from .policy_check import Gate
from .sender import OutboxSender, SendingHealth


@dataclass(kw_only=True)
class Runtime:
    """The runtime's parts, wired together once by `assemble`."""

    gate: Gate
    handler: StepHandler
    sender: OutboxSender
    dispatcher: Dispatcher
    campaigns: CampaignRunner


def graph_settings(settings: Settings, base_url: str | None = None) -> GraphSettings:
    return GraphSettings(
        base_url=base_url or settings.graph.url,
        version=settings.graph.version,
        page_token=settings.page_token or "local-page-token",
        app_secret=settings.app_secret,
        timeout_seconds=settings.graph.timeout_seconds,
        max_attempts=settings.graph.max_attempts,
        backoff_base_seconds=settings.graph.backoff_base_seconds,
        backoff_max_seconds=settings.graph.backoff_max_seconds,
    )


def default_flow_name(settings: Settings, flows: Mapping[str, CompiledFlow]) -> str:
    default = settings.flows.default or sorted(flows)[0]
    if default not in flows:
        raise ValueError(f"flows.default: {no_such_flow(default, flows)}")
    return default


def no_such_flow(name: str, flows: Mapping[str, CompiledFlow]) -> str:
    """One line for a flow name that is not loaded: the closest name, and every flow there is."""
    close = difflib.get_close_matches(name, list(flows), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"no flow named '{name}'{hint} (the flows: {', '.join(sorted(flows)) or 'none'})"


def assemble(
    settings: Settings,
    flows: Mapping[str, CompiledFlow],
    store: Store,
    graph: GraphClient,
    clock: Clock,
    metrics: Metrics,
    sending: SendingHealth,
    campaigns_through_dispatcher: bool = True,
    middlewares: Sequence[StepMiddleware] = (),
) -> Runtime:
    gate = Gate(settings.policy, metrics, settings.eu_user_tag)
    http = {
        name: HttpActionCaller(action, graph.session, settings.action_env)
        for name, action in settings.http_actions.items()
    }
    actions = ActionRunner({**settings.action_functions(), **http}, metrics)
    handler = StepHandler(
        flows, default_flow_name(settings, flows), store, graph.profile, clock, gate, middlewares, actions
    )
    sender = OutboxSender(store, graph, clock, metrics, sending, gate)
    leases = Leases.for_this_process(settings.dispatcher.lease_seconds) if settings.leases else None
    dispatcher = Dispatcher(store, handler, sender, metrics, settings.dispatcher.concurrency, leases, clock)
    campaigns = CampaignRunner(
        flows,
        store,
        graph,
        sender,
        gate,
        clock,
        metrics,
        settings.notify.concurrency,
        settings.notify.rate_per_second,
        claim_seconds=settings.notify.claim_seconds,
    )
    if campaigns_through_dispatcher:
        campaigns.run_for_user = dispatcher.run_job
    return Runtime(gate=gate, handler=handler, sender=sender, dispatcher=dispatcher, campaigns=campaigns)
