"""POSTs to the Graph API over kept-alive HTTP/1.1 connections: the transport of every reply.

A turn's reply is one POST, and aiohttp's client spent 88-140 us of the event loop's CPU on each (a request object, a
response object, a body-writer task, header multidicts: a fifth of a turn). Here a POST is one formatted write on an
idle connection and its answer parsed by httptools (llhttp, in C): 16-25 us. It does only what a Graph API POST
needs: one origin, a JSON body, the whole answer read (at most `MAX_ANSWER_BYTES`), TLS for https, at most `limit`
connections. GETs (profiles) and HTTP actions stay on the app's aiohttp session. Measured in docs/architecture.md
(Performance).

Nothing here retries: a POST that got no answer (the connection failed or closed first, the time ran out) raises,
and the caller decides (`GraphClient` retries it as it retries a 5xx). A connection is reused only after a whole
answer that allows it; one that timed out or failed is closed, so a late answer can never be taken for the next."""

from __future__ import annotations

import asyncio
import ssl
from typing import cast

import httptools
from yarl import URL

MAX_ANSWER_BYTES = 1 << 20  # a Graph API answer is a few hundred bytes; more is not an answer to read
#: A connection idle longer is closed, not reused: a NAT or load balancer may have dropped it without a word, and a
#: POST written into it would wait out the whole timeout (aiohttp's connector keeps idle connections 15 s too).
IDLE_SECONDS = 15.0


class NoAnswer(Exception):
    """The POST got no whole answer: the connection could not be made, broke or closed first, or the answer was not
    HTTP. Whether the Graph API acted on it is unknown."""


class _Connection(asyncio.Protocol):
    """One kept-alive connection: one POST at a time, its answer collected by the parser's callbacks."""

    def __init__(self, pool: Poster) -> None:
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._answer: asyncio.Future[tuple[int, bytes]] | None = None
        self._body: list[bytes] = []
        self._size = 0
        self.reusable = False
        self.idle_since = 0.0  # the loop's time when its last answer came

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        assert self._transport is not None
        self.reusable = False
        self._answer = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        return await self._answer

    def close(self) -> None:
        self.reusable = False
        if self._transport is not None:
            self._transport.close()

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        if self._answer is None:  # bytes no POST asked for: this connection's framing can no longer be trusted
            self._fail(NoAnswer("the Graph API sent bytes that answer no request"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as err:  # a callback's own NoAnswer comes wrapped in it
            cause = err.__context__
            self._fail(cause if isinstance(cause, NoAnswer) else NoAnswer(f"the Graph API's answer is not HTTP: {err}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        self._pool.forget(self)
        reason = f": {exc}" if exc else ""
        self._settle(NoAnswer(f"the connection to the Graph API closed before a whole answer came{reason}"))

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        self._body.clear()
        self._size = 0

    def on_body(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > MAX_ANSWER_BYTES:
            raise NoAnswer(f"the Graph API's answer is over {MAX_ANSWER_BYTES} bytes")  # feed_data raises it
        self._body.append(chunk)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # an informational answer (100 Continue): the real one follows
            return
        self.reusable = self._parser.should_keep_alive()
        self._settle((status, b"".join(self._body)))
        if not self.reusable:
            self.close()

    def _fail(self, error: NoAnswer) -> None:
        self._settle(error)
        self.close()

    def _settle(self, outcome: tuple[int, bytes] | NoAnswer) -> None:
        answer, self._answer = self._answer, None
        if answer is None or answer.done():
            return
        if isinstance(outcome, NoAnswer):
            answer.set_exception(outcome)
        else:
            answer.set_result(outcome)


class Poster:
    """Kept-alive connections to one origin (scheme, host, port), at most `limit` at once; `post` waits for one."""

    def __init__(
        self,
        origin: URL,
        *,
        limit: int = 100,
        ssl_context: ssl.SSLContext | None = None,
        idle_seconds: float = IDLE_SECONDS,
    ) -> None:
        if origin.scheme not in ("http", "https") or not origin.host:
            raise ValueError(f"the Graph API URL must be http(s)://host[:port], not {origin}")
        self._host, self._port = origin.host, origin.port or (443 if origin.scheme == "https" else 80)
        self._https = origin.scheme == "https"
        self._tls = ssl_context  # for https: the system's trusted roots unless given, loaded at the first connection
        self._head = b"Host: %s\r\nContent-Type: application/json\r\nAccept-Encoding: identity\r\n" % (
            origin.host_port_subcomponent or origin.host
        ).encode("ascii")
        self._idle_seconds = idle_seconds
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def post(self, path_and_query: str, body: bytes, timeout: float) -> tuple[int, bytes]:
        """The status and the whole body of the answer to one POST, within `timeout` seconds (TimeoutError), or
        NoAnswer."""
        request = b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s" % (
            path_and_query.encode("ascii"),
            self._head,
            len(body),
            body,
        )
        async with asyncio.timeout(timeout), self._slots:
            connection = self._take_idle() or await self._connect()
            try:
                answer = await connection.exchange(request)
            except BaseException:  # no answer, a timeout or a cancel: a late answer must not reach the next POST
                connection.close()
                raise
        if connection.reusable:
            connection.idle_since = asyncio.get_running_loop().time()
            self._idle.append(connection)
        return answer

    def _take_idle(self) -> _Connection | None:
        """The connection used last, if it has not been idle too long; those idle longer are closed."""
        now = asyncio.get_running_loop().time()
        while self._idle:
            connection = self._idle.pop()
            if now - connection.idle_since < self._idle_seconds:
                return connection
            connection.close()
        return None

    def forget(self, connection: _Connection) -> None:
        """A connection closed (by either side): never handed out again."""
        self._open.discard(connection)
        if connection in self._idle:
            self._idle.remove(connection)

    def close(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._idle.clear()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        if self._https and self._tls is None:
            self._tls = ssl.create_default_context()  # tens of ms to load: not for a client that never POSTs
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(self), self._host, self._port, ssl=self._tls if self._https else None
            )
        except OSError as err:  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
            raise NoAnswer(f"no connection to the Graph API: {type(err).__name__}: {err}") from err
        self._open.add(connection)
        return connection
