"""Shared fixtures: a fake Graph API and a real otnflow server, both on loopback, plus helpers to sign and post."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import aioresponses.core
import pytest
from aiohttp import ClientResponse, web

from engine.config import LOCAL_SECRET, Settings, load_settings
from engine.local import FakeGraph
from engine.messenger.signature import sign
from engine.testing import ManualClock
from engine.testing.harness import Bot
from engine.web import create_app
from engine.web.deadline import server_options
from engine.web.keys import DISPATCHER, SETTINGS, STORE

pytest_plugins = ["pytester"]

# --- aioresponses shim -------------------------------------------------------------------------------------
# aioresponses 0.7.9 builds ClientResponse without the `stream_writer` argument that aiohttp 3.14 requires
# (upstream pnuckowski/aioresponses#289, fix not merged yet). Give it a response class that supplies a stand-in
# writer. Remove this block once an aioresponses release passes stream_writer itself.
if "stream_writer" in inspect.signature(ClientResponse.__init__).parameters:

    class _CompatClientResponse(ClientResponse):
        def __init__(self, method: str, url: Any, *, stream_writer: Any = None, **kwargs: Any) -> None:
            if stream_writer is None:
                stream_writer = SimpleNamespace(output_size=0)
            super().__init__(method, url, stream_writer=stream_writer, **kwargs)

    aioresponses.core.ClientResponse = _CompatClientResponse  # type: ignore[misc]

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "webhooks"
LOCAL_FIXTURES = Path(__file__).parent / "fixtures"
APP_SECRET = "test-app-secret"
PAGE_TOKEN = "test-page-token"
VERIFY_TOKEN = "test-verify-token"


def example_actions() -> str:
    """config.toml's `[actions]` part, for tests that write a config of their own around the example flows (which
    call those actions: without them the flows do not load)."""
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    start = text.index("[actions]\n")
    return text[start : text.index("\n[", text.index("[actions.check_stock]")) + 1]


def webhook_fixture(name: str) -> dict[str, Any]:
    """A sample body from ../shared/fixtures/webhooks (copied under tests/fixtures/webhooks when shared/ is absent)."""
    for folder in (FIXTURES, LOCAL_FIXTURES / "webhooks"):
        path = folder / name
        if path.exists():
            return json.loads(path.read_text())  # type: ignore[no-any-return]
    raise FileNotFoundError(name)


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll `condition` every 10 ms, bounded in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Loopback:
    url: str
    runner: web.AppRunner


async def serve_on_loopback(app: web.Application) -> Loopback:
    options = server_options(app[SETTINGS]) if SETTINGS in app else {}  # the read timeout, as `otnflow serve`
    runner = web.AppRunner(app, access_log=None, **options)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return Loopback(f"http://127.0.0.1:{runner.addresses[0][1]}", runner)


@dataclass
class Playground:
    """The local playground served on loopback, and a client holding the token its page embeds."""

    url: str
    session: aiohttp.ClientSession
    headers: dict[str, str]

    async def act(self, action: str, **body: Any) -> tuple[int, dict[str, Any]]:
        """POST /playground/api/<action>: the status and the JSON answer (the user's state, or an error)."""
        async with self.session.post(f"{self.url}/playground/api/{action}", json=body, headers=self.headers) as r:
            answer: dict[str, Any] = await r.json()
            return r.status, answer

    async def done(self, action: str, **body: Any) -> dict[str, Any]:
        """`act`, which must succeed: the user's state after it."""
        status, state = await self.act(action, **body)
        assert status == 200, state
        return state


@asynccontextmanager
async def served_playground(tmp_path: Path, environ: dict[str, str] | None = None) -> AsyncIterator[Playground]:
    """The example bot in local mode (config.toml, a SQLite file under tmp_path) with its playground; `environ`
    adds environment variables (those the HTTP actions read)."""
    settings = load_settings(
        ROOT / "config.toml",
        {
            "OTNFLOW_STORE_URL": f"sqlite:///{tmp_path / 'pg.sqlite3'}",
            "OTNFLOW_LOG_LEVEL": "WARNING",
            **(environ or {}),
        },
    )
    served = await serve_on_loopback(create_app(settings))
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{served.url}/playground") as r:
                found = re.search(r'<meta name="playground-token" content="([^"]+)">', await r.text())
            assert found is not None
            yield Playground(served.url, session, {"X-Playground-Token": found.group(1)})
    finally:
        await served.runner.cleanup()


def example_bot(**settings: Any) -> AbstractAsyncContextManager[Bot]:
    """The example flows and templates with config.toml under the flow-test harness; `settings` override
    config.toml (e.g. `notify_concurrency=1`)."""
    return Bot.start(ROOT / "flows", ROOT / "templates", config=ROOT / "config.toml", **settings)


async def local_serve_replies(url: str, what: str) -> None:
    """`otnflow serve` in local mode at `url`: wait until /healthz answers, post a signed text message sent now
    (inside the 24h window), and wait until its one reply has reached the in-process fake Graph API."""
    async with aiohttp.ClientSession() as session:

        async def up() -> bool:
            try:
                async with session.get(f"{url}/healthz") as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await wait_until(up, timeout=20, what=what)
        body = webhook_fixture("text.json")
        body["entry"][0]["messaging"][0]["timestamp"] = int(time.time() * 1000)
        raw = json.dumps(body).encode()
        headers = {"X-Hub-Signature-256": sign(raw, LOCAL_SECRET)}
        async with session.post(f"{url}/webhook", data=raw, headers=headers) as response:
            assert response.status == 200

        async def replied() -> bool:
            async with session.get(f"{url}/healthz") as response:
                return (await response.json())["store"].get("outbox_sent", 0) == 1

        await wait_until(replied, timeout=10, what=f"the reply of {what} to reach the in-process fake Graph API")


async def stop_serve(process: Any) -> str:
    """SIGTERM an `otnflow serve` subprocess started with piped text output; its output once it has exited."""
    import signal

    process.send_signal(signal.SIGTERM)
    output, _ = await asyncio.to_thread(process.communicate, None, 20)
    return str(output)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[str]:
    """A MongoDB to test against: $OTNFLOW_TEST_MONGODB_URL, else SecantusDB started on a loopback port (a
    MongoDB-wire-compatible server, a test-only dependency; tests/secantus_server.py). Yields a base URL without a
    database."""
    import importlib.util
    import os
    import subprocess

    given = os.environ.get("OTNFLOW_TEST_MONGODB_URL")
    if given:
        yield given.rstrip("/")
        return
    if importlib.util.find_spec("secantus") is None:
        pytest.skip("no MongoDB: set OTNFLOW_TEST_MONGODB_URL or install the dev extra (secantusdb)")
    port = free_port()
    process = subprocess.Popen(  # its transactions live 5 s, not 60: tests/secantus_server.py says why
        [sys.executable, str(Path(__file__).parent / "secantus_server.py"), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"mongodb://127.0.0.1:{port}"
    try:
        from pymongo import MongoClient

        client: MongoClient[dict[str, Any]] = MongoClient(url, serverSelectionTimeoutMS=500, directConnection=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.admin.command("ping")
                break
            except Exception:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"SecantusDB did not start on {url}") from None
                time.sleep(0.1)
        client.close()
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def live_env(graph_url: str) -> dict[str, str]:
    """The environment of an `otnflow` subprocess in live mode against the fake Graph API at `graph_url`."""
    import os

    return {
        **os.environ,
        "OTNFLOW_APP_SECRET": APP_SECRET,
        "OTNFLOW_PAGE_TOKEN": PAGE_TOKEN,
        "OTNFLOW_VERIFY_TOKEN": VERIFY_TOKEN,
        "OTNFLOW_GRAPH_URL": graph_url,
        "OTNFLOW_SERVER_SIMULATED_USER_IDS": "true",  # these tests' users are user0, user1...
    }


def start_serve(config: Path, graph_url: str, log: Path, *args: str) -> Any:
    """`otnflow serve --config CONFIG [ARGS]` as a real process, its output appended to `log`."""
    import subprocess

    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "serve", "--config", str(config), *args],
            cwd=ROOT,
            env=live_env(graph_url),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def mongo_database_url(base: str, name: str) -> str:
    """A fresh database per test on the shared server."""
    return f"{base}/{name}?directConnection=true"


@pytest.fixture(params=["sqlite", "mongo"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store on each backend: a SQLite file under tmp_path, a new database on the test MongoDB."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'backend.sqlite3'}"
    return mongo_database_url(request.getfixturevalue("mongo_server"), f"otnflow_test_{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def fake_graph() -> AsyncIterator[tuple[FakeGraph, str]]:
    fake = FakeGraph(page_token=PAGE_TOKEN, timeout_delay=2.0)
    served = await serve_on_loopback(fake.app())
    yield fake, served.url
    await served.runner.cleanup()


def make_settings(tmp_path: Path, graph_url: str, **overrides: Any) -> Settings:
    env = {
        "OTNFLOW_APP_SECRET": APP_SECRET,
        "OTNFLOW_PAGE_TOKEN": PAGE_TOKEN,
        "OTNFLOW_VERIFY_TOKEN": VERIFY_TOKEN,
        "OTNFLOW_GRAPH_URL": graph_url,
        "OTNFLOW_STORE_URL": f"sqlite:///{tmp_path / 'store.sqlite3'}",
        "OTNFLOW_GRAPH_BACKOFF_BASE_SECONDS": "0.001",
        "OTNFLOW_GRAPH_BACKOFF_MAX_SECONDS": "0.01",
        "OTNFLOW_GRAPH_TIMEOUT_SECONDS": "1.0",
    }
    env.update({f"OTNFLOW_{k.upper()}": str(v) for k, v in overrides.items()})
    return load_settings(ROOT / "config.toml", env)


class Server:
    """A running otnflow app on loopback, with helpers to post signed webhooks and inspect its store."""

    def __init__(self, app: web.Application, url: str, fake: FakeGraph, clock: ManualClock) -> None:
        self.app, self.url, self.fake, self.clock = app, url, fake, clock
        self.session = aiohttp.ClientSession()

    async def post(
        self, body: Any, *, secret: str = APP_SECRET, raw: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, str]:
        data = raw if raw is not None else json.dumps(body).encode()
        sent_headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(data, secret)}
        sent_headers.update(headers or {})
        async with self.session.post(f"{self.url}/webhook", data=data, headers=sent_headers) as response:
            return response.status, await response.text()

    async def get(self, path: str) -> tuple[int, str]:
        async with self.session.get(f"{self.url}{path}") as response:
            return response.status, await response.text()

    async def idle(self) -> None:
        await asyncio.sleep(0)
        await self.app[DISPATCHER].idle()

    async def counts(self) -> dict[str, int]:
        return await self.app[STORE].counts()

    def texts_to(self, user_id: str) -> list[str | None]:
        return [m.text for m in self.fake.messages_to(user_id)]


@pytest.fixture
async def server_factory(
    tmp_path: Path, fake_graph: tuple[FakeGraph, str]
) -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    fake, graph_url = fake_graph
    started: list[tuple[Server, Loopback]] = []

    async def start(**overrides: Any) -> Server:
        clock = ManualClock(T0)
        app = create_app(make_settings(tmp_path, graph_url, **overrides), clock=clock)
        served = await serve_on_loopback(app)
        server = Server(app, served.url, fake, clock)
        started.append((server, served))
        return server

    yield start
    for server, served in started:
        await server.session.close()
        await served.runner.cleanup()


@pytest.fixture
async def server(server_factory: Callable[..., Awaitable[Server]]) -> Server:
    return await server_factory()


#: The smallest flow: one state that says hello.j2 and ends (tests that write their own flows folder).
SHOP_FLOW = """[flow]
name = "shop"
start = "hello"

[states.hello]
template = "hello.j2"
end = true
"""

T0 = 1_764_240_000_000  # the test clock's start, and the sample webhooks' timestamp


def message_event(
    user: str,
    mid: str,
    at: int,
    text: str | None = None,
    payload: str | None = None,
    page: str = "106000000000001",
) -> dict[str, Any]:
    """A message event `at` ms after T0 (the servers' ManualClock starts at T0)."""
    message: dict[str, Any] = {"mid": mid}
    if text is not None:
        message["text"] = text
    if payload is not None:
        message["quick_reply"] = {"payload": payload}
    return {"sender": {"id": user}, "recipient": {"id": page}, "timestamp": T0 + at, "message": message}


def body_of(*events: dict[str, Any], page: str = "106000000000001") -> dict[str, Any]:
    return {"object": "page", "entry": [{"id": page, "time": 1, "messaging": list(events)}]}
