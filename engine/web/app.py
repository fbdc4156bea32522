"""The app factory. Each resource (store, Graph client, dispatcher) is one cleanup_ctx generator, opened in
order at start and closed in reverse at shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence

import aiohttp
from aiohttp import web

from ..config import Settings
from ..flow import CompiledFlow
from ..local.fake_graph import FakeGraph
from ..messenger.client import GraphClient
from ..runtime.assembly import assemble, graph_settings
from ..runtime.clock import Clock, OffsetClock, SystemClock
from ..runtime.conversation import StepMiddleware
from ..runtime.flows import FlowSet, LiveFlows, load_configured_flows
from ..runtime.metrics import Metrics
from ..runtime.sender import SendingHealth
from ..store import Backend, open_store
from . import api, monitoring, reload, webhook
from . import playground as playground_routes
from .deadline import bounded
from .keys import (
    CAMPAIGNS,
    CLOCK,
    DISPATCHER,
    FAKE_GRAPH,
    FLOWS,
    GRAPH,
    GRAPH_URL,
    IDLE_TIMER,
    METRICS,
    MIDDLEWARES,
    SENDING,
    SETTINGS,
    SIMULATED_IDS,
    STORE,
)

log = logging.getLogger("otnflow.web")
PLAYGROUND_REFUSED = (
    "the playground is a local tool and is not served with OTNFLOW_PAGE_TOKEN set: it would let anyone who "
    "reaches it message, reset and read the real users in this store. Unset OTNFLOW_PAGE_TOKEN to run it in local "
    "mode (fake Graph API, local store)"
)


def create_app(
    settings: Settings,
    flows: Mapping[str, CompiledFlow] | None = None,
    clock: Clock | None = None,
    fake_graph: FakeGraph | None = None,
    playground: bool | None = None,
    *,
    store: Backend | None = None,
    middlewares: Sequence[StepMiddleware] = (),
) -> web.Application:
    """Build the server. In local mode (no page token) replies go to a fake Graph API running in-process on
    loopback, the playground page is served, the clock can be moved forward, and flow files are reloaded when they
    change (after they pass the checker). `playground=True` with a page token is a ValueError: the playground
    drives the store it is given, and a live store holds real users and their tokens. `store` replaces the one
    `store.url` names (the app opens it at start and closes it at shutdown); `middlewares` run around each
    conversation step, the first outermost (docs/architecture.md, "Extension points")."""
    if playground and not settings.local_mode:
        raise ValueError(PLAYGROUND_REFUSED)
    # no app middlewares: each route reads its body under the limits itself (deadline.bounded), /api's in JSON
    app = web.Application(client_max_size=settings.server.max_body_bytes)
    app[SETTINGS] = settings
    app[MIDDLEWARES] = tuple(middlewares)
    if store is not None:
        app[STORE] = store
    loaded = flows if flows is not None else load_configured_flows(settings)
    # flows.default checked now, with one clear line, rather than at the first event
    app[FLOWS] = LiveFlows(FlowSet.configured(settings, loaded))
    local = settings.local_mode if playground is None else playground
    app[CLOCK] = clock or (OffsetClock() if local else SystemClock())
    app[METRICS] = Metrics()
    app[SENDING] = SendingHealth()
    if fake_graph is not None or local:
        app[FAKE_GRAPH] = fake_graph or FakeGraph()
    app[SIMULATED_IDS] = settings.server.simulated_user_ids or FAKE_GRAPH in app  # decided once, not per request
    app.cleanup_ctx.extend([_store_ctx, _graph_ctx, _engine, api.campaigns_ctx, monitoring.figures_ctx])
    app.router.add_get("/webhook", bounded(webhook.verify_subscription))
    app.router.add_post("/webhook", bounded(webhook.receive))
    app.router.add_get("/healthz", bounded(monitoring.healthz))
    app.router.add_get("/metrics", bounded(monitoring.metrics))
    api.add_routes(app)
    if local:
        playground_routes.setup(app)
        app.cleanup_ctx.append(reload.watch_ctx)
    return app


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = app[STORE] if STORE in app else open_store(settings.store_url, settings.store.inbox_retention_days)
    await store.open()
    app[STORE] = store
    yield
    await store.close()


async def _graph_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    base_url = settings.graph.url
    runner = None
    if FAKE_GRAPH in app:
        runner = web.AppRunner(app[FAKE_GRAPH].app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        base_url = f"http://127.0.0.1:{port}"
    app[GRAPH_URL] = base_url
    # One session for every user's Graph API calls and HTTP actions: it keeps no cookies, or a cookie a service set
    # while answering for one user would go out with the next user's call.
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100), cookie_jar=aiohttp.DummyCookieJar())
    app[GRAPH] = GraphClient(session, graph_settings(settings, base_url))
    yield
    await app[GRAPH].aclose()
    await session.close()
    if runner is not None:
        await runner.cleanup()


async def _engine(app: web.Application) -> AsyncIterator[None]:
    middlewares: tuple[StepMiddleware, ...] = app[MIDDLEWARES]
    runtime = assemble(
        app[SETTINGS],
        app[FLOWS],
        app[STORE],
        app[GRAPH],
        app[CLOCK],
        app[METRICS],
        app[SENDING],
        middlewares=middlewares,
    )
    app[DISPATCHER] = runtime.dispatcher
    app[CAMPAIGNS] = runtime.campaigns
    app[IDLE_TIMER] = runtime.idle_timer
    resumed = await runtime.dispatcher.start()
    if resumed:
        log.info("resuming work left by the previous run for %d user(s)", resumed)
    idle_checks = asyncio.create_task(runtime.idle_timer.run(), name="hand-over idle timer")
    yield
    idle_checks.cancel()
    await asyncio.gather(idle_checks, return_exceptions=True)
    await runtime.dispatcher.stop()
