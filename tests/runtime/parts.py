"""The runtime's parts wired as the server wires them (`runtime/assembly.assemble`), with no web app around them: a
real SQLite file, the fake Graph API on loopback, a ManualClock. The unit tests of the dispatcher, the outbox
sender and the step handler drive these parts directly; what they observe goes through a step middleware (the
extension point) or the store's file."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from engine.local import FakeGraph
from engine.messenger.client import GraphClient
from engine.messenger.events import parse_webhook
from engine.runtime.assembly import Runtime, assemble, graph_settings
from engine.runtime.conversation import Step, StepMiddleware, StepOutcome
from engine.runtime.flows import FlowSet, LiveFlows, load_configured_flows
from engine.runtime.metrics import Metrics
from engine.runtime.sender import SendingHealth
from engine.store import Backend, StoredEvent, open_store
from engine.testing import ManualClock
from engine.web.webhook import inbox_events
from tests.conftest import T0, body_of, make_settings, message_event

ROOT = Path(__file__).resolve().parents[2]
ECHO_FLOWS = ROOT / "tests" / "fixtures" / "flows"  # echo.toml: every message answered "echo: <text>"


@dataclass
class Parts:
    runtime: Runtime
    store: Backend
    store_path: Path
    fake: FakeGraph
    clock: ManualClock
    metrics: Metrics

    async def receive(self, user: str, *texts: str, at: int = 0) -> list[StoredEvent]:
        """Store one message per text as the webhook stores them (parsed, judged, one inbox write), the texts
        1 ms apart from `at` ms after T0; the events stored."""
        events = [message_event(user, f"m_{user}_{at + i}", at + i, text) for i, text in enumerate(texts)]
        parsed = parse_webhook(body_of(*events), simulated_ids=True)
        return await self.store.add_events(inbox_events(parsed, self.clock.now_ms()))

    def texts_to(self, user: str) -> list[str | None]:
        return [m.text for m in self.fake.messages_to(user)]

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Read the store's SQLite file from another connection: what is committed, as an operator would see it."""
        with sqlite3.connect(self.store_path) as db:
            return db.execute(sql, args).fetchall()

    def outbox(self, user: str) -> list[tuple[str, str]]:
        """The user's outbox rows as (status, detail), in the order they were queued."""
        return self.rows("SELECT status, detail FROM outbox WHERE user_id = ? ORDER BY seq", user)

    def inbox(self, user: str) -> list[tuple[str, bool, str | None]]:
        """The user's inbox events as (key, handled, error), oldest first."""
        found = self.rows(
            "SELECT key, handled_ms IS NOT NULL, error FROM inbox WHERE user_id = ? ORDER BY timestamp", user
        )
        return [(key, bool(handled), error) for key, handled, error in found]


@dataclass
class StepLog:
    """A step middleware that records each step's user and text as it starts, how many steps run at once (per
    user and overall), and can hold steps at a gate until the test opens it."""

    started: list[tuple[str, str]] = field(default_factory=list)
    running: dict[str, int] = field(default_factory=dict)
    most_at_once: int = 0
    most_at_once_per_user: int = 0
    gate: asyncio.Event | None = None  # when set (not None), steps wait until it opens
    before: Callable[[str, str], Awaitable[None]] | None = None  # a test's hook, run once the gate is open

    async def __call__(self, event: StoredEvent, step: Step) -> StepOutcome:
        text = str(json.loads(event.body).get("message", {}).get("text", ""))
        self.started.append((event.user_id, text))
        self.running[event.user_id] = self.running.get(event.user_id, 0) + 1
        self.most_at_once = max(self.most_at_once, sum(self.running.values()))
        self.most_at_once_per_user = max(self.most_at_once_per_user, self.running[event.user_id])
        try:
            if self.gate is not None:
                await asyncio.wait_for(self.gate.wait(), 10)
            if self.before is not None:
                await self.before(event.user_id, text)
            await asyncio.sleep(0.001)  # a step takes a moment: room for another to start, were that allowed
            return await step(event)
        finally:
            self.running[event.user_id] -= 1

    @property
    def in_flight(self) -> int:
        return sum(self.running.values())

    def texts_of(self, user: str) -> list[str]:
        return [text for who, text in self.started if who == user]


PartsFactory = Callable[..., Awaitable[Parts]]


@asynccontextmanager
async def runtime_parts(
    tmp_path: Path,
    fake: FakeGraph,
    graph_url: str,
    *,
    middlewares: Sequence[StepMiddleware] = (),
    store: Backend | None = None,
    **settings: Any,
) -> AsyncIterator[Parts]:
    """The parts over the echo flow (or `flows_dir`/`flows_default` in `settings`), a SQLite file under
    tmp_path (or `store`, opened here), the clock at T0."""
    options: dict[str, Any] = {"flows_dir": ECHO_FLOWS, "flows_default": "echo", **settings}
    config = make_settings(tmp_path, graph_url, **options)
    flows = LiveFlows(FlowSet.configured(config, load_configured_flows(config)))
    path = Path(config.store_url.removeprefix("sqlite:///"))
    backend = store or open_store(config.store_url)
    await backend.open()
    clock, metrics = ManualClock(T0), Metrics()
    try:
        async with aiohttp.ClientSession() as session, aclosing(GraphClient(session, graph_settings(config))) as graph:
            runtime = assemble(config, flows, backend, graph, clock, metrics, SendingHealth(), middlewares=middlewares)
            try:
                yield Parts(runtime, backend, path, fake, clock, metrics)
            finally:
                await runtime.dispatcher.stop(timeout=5)
    finally:
        await backend.close()
