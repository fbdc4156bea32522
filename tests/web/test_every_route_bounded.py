"""Every route reads its body under the read deadline (issue 12 §3). The app has no middlewares (deadline.py says
why): each route's handler is wrapped in `deadline.bounded` where it is added, so a route added without it would
let one client hold a connection, and a handler, for as long as it drips bytes. This walks every route of the
production app and of the local app with its playground, sends each a body that stops short, and checks that the
server closes every connection soon after the read timeout. On loopback, bounded in count and time."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import aiohttp
from aiohttp import hdrs, web

from engine.config import load_settings
from engine.web.app import create_app
from tests.conftest import ROOT, Server, serve_on_loopback
from tests.web.test_slow_clients import _trickle

READ_TIMEOUT = 0.5
API_TOKEN = "route-test-api-token"
PROMISED = 64  # the body's announced length; 8 bytes are sent, then nothing


def _requests(app: web.Application) -> list[tuple[str, str]]:
    """A (method, path) that reaches each route: placeholders filled, any-method routes asked with PUT."""
    wanted = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix", "")
        path = re.sub(r"\{[^}]*\}", "x", path) + ("/x" if "prefix" in info else "")
        method = "PUT" if route.method == hdrs.METH_ANY else route.method
        if method != hdrs.METH_HEAD:
            wanted.append((method, path))
    return wanted


def _short_request(method: str, path: str, credentials: str) -> bytes:
    """The headers (with what gets past each route's guard) and 8 bytes of a body announced longer."""
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f'{credentials}Content-Length: {PROMISED}\r\n\r\n{{"a": 1,'
    ).encode()


async def _check_every_route(app: web.Application, url: str, playground_token: str = "") -> None:
    wanted = _requests(app)
    assert len(wanted) >= 5, wanted
    credentials = f"Authorization: Bearer {API_TOKEN}\r\nX-Playground-Token: {playground_token}\r\n"
    deadline = time.monotonic() + READ_TIMEOUT + 5
    closed = await asyncio.gather(
        *(_trickle(url, _short_request(method, path, credentials), b"", deadline) for method, path in wanted)
    )
    held = [f"{method} {path}" for (method, path), after in zip(wanted, closed, strict=True) if after is None]
    assert not held, f"connections still open {READ_TIMEOUT + 5} s after a short body: {held}"


async def test_every_route_of_the_server_cuts_a_short_body(server_factory) -> None:  # type: ignore[no-untyped-def]
    server: Server = await server_factory(server_read_timeout_seconds=str(READ_TIMEOUT), api_token=API_TOKEN)
    await _check_every_route(server.app, server.url)


async def test_every_route_of_the_local_app_and_playground_cuts_a_short_body(tmp_path: Path) -> None:
    settings = load_settings(
        ROOT / "config.toml",
        {
            "OTNFLOW_STORE_URL": f"sqlite:///{tmp_path / 'pg.sqlite3'}",
            "OTNFLOW_LOG_LEVEL": "WARNING",
            "OTNFLOW_SERVER_READ_TIMEOUT_SECONDS": str(READ_TIMEOUT),
            "OTNFLOW_API_TOKEN": API_TOKEN,
        },
    )
    app = create_app(settings)
    served = await serve_on_loopback(app)
    try:
        assert any("/playground" in path for _, path in _requests(app))
        async with aiohttp.ClientSession() as session, session.get(f"{served.url}/playground") as page:
            found = re.search(r'<meta name="playground-token" content="([^"]+)">', await page.text())
        assert found is not None
        await _check_every_route(app, served.url, found.group(1))
    finally:
        await served.runner.cleanup()
