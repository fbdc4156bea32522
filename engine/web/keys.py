"""Typed application state keys (aiohttp's AppKey)."""

from __future__ import annotations

from aiohttp import web

from ..config import Settings
from ..local.fake_graph import FakeGraph
from ..messenger.client import GraphClient
from ..runtime.campaigns import CampaignRunner
from ..runtime.clock import Clock
from ..runtime.conversation import StepMiddleware
from ..runtime.dispatcher import Dispatcher
from ..runtime.flows import LiveFlows
from ..runtime.handover import IdleTimer
from ..runtime.metrics import Metrics
from ..runtime.sender import SendingHealth
from ..store import Backend
from .figures import StoreFigures

SETTINGS = web.AppKey("settings", Settings)
FLOWS = web.AppKey("flows", LiveFlows)
CLOCK = web.AppKey("clock", Clock)
METRICS = web.AppKey("metrics", Metrics)
STORE = web.AppKey("store", Backend)
GRAPH = web.AppKey("graph", GraphClient)
FAKE_GRAPH = web.AppKey("fake_graph", FakeGraph)
#: The webhook accepts readable user ids ("alice"): `server.simulated_user_ids`, or local mode (a fake Graph API).
SIMULATED_IDS = web.AppKey("simulated_ids", bool)
GRAPH_URL = web.AppKey("graph_url", str)
SENDING = web.AppKey("sending", SendingHealth)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
CAMPAIGNS = web.AppKey("campaigns", CampaignRunner)
IDLE_TIMER = web.AppKey("idle_timer", IdleTimer)
MIDDLEWARES: web.AppKey[tuple[StepMiddleware, ...]] = web.AppKey("middlewares")
FIGURES = web.AppKey("figures", StoreFigures)
