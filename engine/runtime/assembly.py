"""Assemble the runtime parts once, the same way for the server and for the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..config import Settings
from ..messenger.client import GraphClient, GraphSettings
from ..store import Store
from .actions import ActionRunner
from .campaigns import CampaignRunner, run_directly
from .clock import Clock
from .conversation import StepHandler, StepMiddleware
from .dispatcher import Dispatcher, Leases
from .flows import LiveFlows
from .handover import HandoverAlert, HandoverSettings, IdleTimer
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
    idle_timer: IdleTimer


def handover_settings(settings: Settings) -> HandoverSettings:
    """The hand-over's settings (the alert URL came from the environment variable the config names)."""
    return HandoverSettings(
        bot_app_id=settings.graph.app_id,
        idle_minutes=settings.handover.idle_minutes,
        alert_url=settings.handover_alert_url,
    )


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


def assemble(
    settings: Settings,
    flows: LiveFlows,
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
    handovers = handover_settings(settings)
    handler = StepHandler(flows, store, graph.profile, clock, gate, middlewares, actions, handovers)
    sender = OutboxSender(store, graph, clock, metrics, sending, gate, HandoverAlert(handovers.alert_url))
    leases = Leases.for_this_process(settings.dispatcher.lease_seconds) if settings.leases else None
    dispatcher = Dispatcher(store, handler, sender, metrics, settings.dispatcher.concurrency, leases, clock)
    idle_timer = IdleTimer(store, clock, handovers, dispatcher.wake)
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
        # in the server, each user's campaign work runs in their worker, between their events
        run_for_user=dispatcher.run_job if campaigns_through_dispatcher else run_directly,
        claim_seconds=settings.notify.claim_seconds,
    )
    return Runtime(
        gate=gate, handler=handler, sender=sender, dispatcher=dispatcher, campaigns=campaigns, idle_timer=idle_timer
    )
