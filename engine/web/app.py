"""The app factory. Each resource (store, Graph client, dispatcher) is one cleanup_ctx generator, opened in
order at start and closed in reverse at shutdown."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping

import aiohttp
from aiohttp import web

from ..config import Settings
from ..flow import CompiledFlow, FlowOptions, load_flows
from ..messenger.client import GraphClient, GraphSettings
from ..runtime.clock import Clock, SystemClock
from ..runtime.conversation import ConversationHandler
from ..runtime.dispatcher import Dispatcher
from ..runtime.metrics import Metrics
from ..runtime.sender import OutboxSender, SendingState
from ..store import open_store
from ..testing.fake_graph import FakeGraph
from . import ops, webhook
from .keys import CLOCK, DISPATCHER, FAKE_GRAPH, FLOWS, GRAPH, GRAPH_URL, METRICS, SENDING, SETTINGS, STORE

log = logging.getLogger("otnflow.web")


def load_configured_flows(settings: Settings) -> dict[str, CompiledFlow]:
    return load_flows([settings.path("flows.dir")], FlowOptions(templates_dir=settings.path("flows.templates")))


def create_app(
    settings: Settings,
    flows: Mapping[str, CompiledFlow] | None = None,
    clock: Clock | None = None,
    fake_graph: FakeGraph | None = None,
) -> web.Application:
    """Build the server. In local mode (no page token) a fake Graph API runs in-process on loopback."""
    app = web.Application(client_max_size=int(settings["server.max_body_bytes"]))
    app[SETTINGS] = settings
    loaded = dict(flows) if flows is not None else load_configured_flows(settings)
    app[FLOWS] = loaded
    app[CLOCK] = clock or SystemClock()
    app[METRICS] = Metrics()
    app[SENDING] = SendingState()
    if fake_graph is not None or settings.local_mode:
        app[FAKE_GRAPH] = fake_graph or FakeGraph()
    default = settings["flows.default"] or sorted(loaded)[0]
    if default not in loaded:
        raise ValueError(f"flows.default = {default!r} is not a loaded flow; loaded: {', '.join(sorted(loaded))}")
    app.cleanup_ctx.extend([_store_ctx, _graph_ctx, _dispatcher_ctx(default)])
    app.router.add_get("/webhook", webhook.verify_subscription)
    app.router.add_post("/webhook", webhook.receive)
    app.router.add_get("/healthz", ops.healthz)
    app.router.add_get("/metrics", ops.metrics)
    return app


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = open_store(app[SETTINGS].store_url)
    await store.open()
    app[STORE] = store
    yield
    await store.close()


async def _graph_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    base_url = str(settings["graph.url"])
    runner = None
    if settings.local_mode and FAKE_GRAPH in app:
        runner = web.AppRunner(app[FAKE_GRAPH].app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        base_url = f"http://127.0.0.1:{port}"
    app[GRAPH_URL] = base_url
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
    app[GRAPH] = GraphClient(
        session,
        GraphSettings(
            base_url=base_url,
            version=str(settings["graph.version"]),
            page_token=settings.page_token or "local-page-token",
            app_secret=settings.app_secret,
            timeout_seconds=float(settings["graph.timeout_seconds"]),
            max_attempts=int(settings["graph.max_attempts"]),
            backoff_base_seconds=float(settings["graph.backoff_base_seconds"]),
            backoff_max_seconds=float(settings["graph.backoff_max_seconds"]),
        ),
    )
    yield
    await session.close()
    if runner is not None:
        await runner.cleanup()


def _dispatcher_ctx(default_flow: str) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        graph, store, clock, metrics = app[GRAPH], app[STORE], app[CLOCK], app[METRICS]
        flows: dict[str, CompiledFlow] = app[FLOWS]
        handler = ConversationHandler(flows, default_flow, store, graph.profile, clock)
        sender = OutboxSender(store, graph, clock, metrics, app[SENDING])
        dispatcher = Dispatcher(store, handler, sender, metrics, int(app[SETTINGS]["dispatcher.concurrency"]))
        app[DISPATCHER] = dispatcher
        resumed = await dispatcher.start()
        if resumed:
            log.info("resuming work left by the previous run for %d user(s)", resumed)
        yield
        await dispatcher.stop()

    return ctx
