"""The Graph API POST transport (engine/messenger/poster.py) against real servers on loopback: connections kept alive
and bounded, answers framed by length or in chunks, and every way of getting no answer said so, with no connection
left able to hand a late answer to the next POST."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from yarl import URL

from engine.messenger.poster import MAX_ANSWER_BYTES, NoAnswer, Poster
from tests.conftest import free_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Server:
    """A loopback aiohttp server answering every POST with `handler`; it counts the connections it saw."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.peers: set[tuple[str, int]] = set()
        self.in_flight = 0
        self.most_in_flight = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.peers.add(request.transport.get_extra_info("peername") if request.transport else ("", 0))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await self.handler(request)
        finally:
            self.in_flight -= 1


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[tuple[Server, URL]]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler, tls: ssl.SSLContext | None = None) -> tuple[Server, URL]:
        server = Server(handler)
        app = web.Application()
        app.router.add_post("/{tail:.*}", server.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls).start()
        runners.append(runner)
        return server, URL(f"{'https' if tls else 'http'}://127.0.0.1:{runner.addresses[0][1]}")

    yield start
    for runner in runners:
        await runner.cleanup()


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {"path": request.path_qs, "type": request.content_type, "host": request.host, "n": len(body)}
    )


async def test_a_post_carries_its_path_query_and_json_body_and_keeps_its_connection(serve) -> None:  # type: ignore[no-untyped-def]
    server, url = await serve(echo)
    poster = Poster(url)
    answers = [await poster.post("/v21.0/me/messages?access_token=T&x=1", b'{"a": 1}', 5) for _ in range(5)]
    assert answers[0] == (
        200,
        b'{"path": "/v21.0/me/messages?access_token=T&x=1", "type": "application/json", '
        + f'"host": "127.0.0.1:{url.port}", "n": 8}}'.encode(),
    )
    assert len(server.peers) == 1 and poster.open_connections == 1  # five POSTs, one connection
    poster.close()


async def test_a_connection_idle_too_long_is_closed_not_reused(serve) -> None:  # type: ignore[no-untyped-def]
    server, url = await serve(echo)
    poster = Poster(url, idle_seconds=0.2)
    await poster.post("/p", b"{}", 5)
    await poster.post("/p", b"{}", 5)
    assert len(server.peers) == 1
    await asyncio.sleep(0.3)
    await poster.post("/p", b"{}", 5)
    assert len(server.peers) == 2
    await asyncio.sleep(0.01)  # the stale one's close lands
    assert poster.open_connections == 1
    poster.close()


async def test_at_most_limit_connections_are_open_and_every_post_is_answered(serve) -> None:  # type: ignore[no-untyped-def]
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.02)
        return web.json_response({"n": int(await request.text())})

    server, url = await serve(slow)
    poster = Poster(url, limit=3)
    answers = await asyncio.gather(*(poster.post("/p", str(i).encode(), 5) for i in range(12)))
    assert [a for _, a in answers] == [f'{{"n": {i}}}'.encode() for i in range(12)]
    assert server.most_in_flight == 3 and len(server.peers) == 3
    poster.close()


async def test_an_answer_that_closes_its_connection_is_read_and_the_next_post_opens_another(serve) -> None:  # type: ignore[no-untyped-def]
    async def closing(request: web.Request) -> web.Response:
        return web.Response(text="ok", headers={"Connection": "close"})

    server, url = await serve(closing)
    poster = Poster(url)
    assert await poster.post("/p", b"{}", 5) == (200, b"ok")
    assert await poster.post("/p", b"{}", 5) == (200, b"ok")
    assert len(server.peers) == 2
    poster.close()


async def test_a_chunked_answer_is_read_whole(serve) -> None:  # type: ignore[no-untyped-def]
    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=400)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b'{"error": ', b'{"code": 100}', b"}"):
            await response.write(part)
        await response.write_eof()
        return response

    _, url = await serve(chunked)
    poster = Poster(url)
    assert await poster.post("/p", b"{}", 5) == (400, b'{"error": {"code": 100}}')
    assert await poster.post("/p", b"{}", 5) == (400, b'{"error": {"code": 100}}')  # and the connection is reused
    assert poster.open_connections == 1
    poster.close()


async def test_a_timed_out_post_closes_its_connection_so_its_late_answer_reaches_no_one(serve) -> None:  # type: ignore[no-untyped-def]
    async def first_one_late(request: web.Request) -> web.Response:
        body = await request.read()
        if body == b"late":
            await asyncio.sleep(0.5)
        return web.Response(body=body)

    server, url = await serve(first_one_late)
    poster = Poster(url)
    with pytest.raises(TimeoutError):
        await poster.post("/p", b"late", 0.1)
    assert await poster.post("/p", b"next", 5) == (200, b"next")
    assert len(server.peers) == 2  # the late one's connection was not reused
    await asyncio.sleep(0.6)  # its late answer has come by now
    assert poster.open_connections == 1  # it was closed, not left open
    poster.close()


async def test_no_answer_is_said_so_when_refused_cut_off_oversized_or_not_http(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(NoAnswer, match="no connection to the Graph API: ConnectionRefusedError"):
        await Poster(URL(f"http://127.0.0.1:{free_port()}")).post("/p", b"{}", 5)

    async def cut_off(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "100"})
        await response.prepare(request)
        await response.write(b"only part")
        assert request.transport is not None
        request.transport.close()
        return response

    async def oversized(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * (MAX_ANSWER_BYTES + 1))

    for handler, reason in ((cut_off, "closed before a whole answer came"), (oversized, "over 1048576 bytes")):
        _, url = await serve(handler)
        poster = Poster(url)
        with pytest.raises(NoAnswer, match=reason):
            await poster.post("/p", b"{}", 5)
        await asyncio.sleep(0.01)  # the close lands
        assert poster.open_connections == 0

    async def not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()

    garbage = await asyncio.start_server(not_http, "127.0.0.1", 0)
    port = garbage.sockets[0].getsockname()[1]
    with pytest.raises(NoAnswer, match="not HTTP"):
        await Poster(URL(f"http://127.0.0.1:{port}")).post("/p", b"{}", 5)
    garbage.close()


async def test_https_is_spoken_and_the_certificate_checked(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    _, url = await serve(echo, tls)
    trusting = Poster(url, ssl_context=ssl.create_default_context(cafile=str(cert)))
    status, _ = await trusting.post("/p", b"{}", 5)
    assert status == 200
    trusting.close()
    with pytest.raises(NoAnswer, match="CERTIFICATE_VERIFY_FAILED"):
        await Poster(url).post("/p", b"{}", 5)  # the system's roots do not know this certificate
