"""/healthz and /metrics cost no store read: the store's figures are read in the background, once at start and
every `server.figures_refresh_seconds`, and a probe or a scrape shows the last reading. Through a real server on
loopback, with a store that counts the calls it gets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.runtime.clock import ManualClock
from engine.store import open_store
from engine.web import create_app
from engine.web.keys import DISPATCHER, FIGURES
from tests.conftest import T0, Server, body_of, make_settings, message_event, serve_on_loopback, wait_until
from tests.spy_store import SpyStore

READS = ("counts", "otn_stats", "unsubscribed_users")  # what the figures read
ALICE = "7100000000000001"


@pytest.fixture
async def spied(tmp_path: Path, fake_graph) -> AsyncIterator[tuple[Server, SpyStore]]:  # type: ignore[no-untyped-def]
    fake, graph_url = fake_graph
    settings = make_settings(tmp_path, graph_url)
    spy = SpyStore(open_store(settings.store_url, 7.0))
    app = create_app(settings, clock=ManualClock(T0), store=spy)  # type: ignore[arg-type]
    served = await serve_on_loopback(app)
    server = Server(app, served.url, fake, ManualClock(T0))
    yield server, spy
    await server.session.close()
    await served.runner.cleanup()


async def _asks_for_restock(server: Server) -> None:
    """Alice says hi, taps White: the wine shop asks her to be notified of the restock (one OTN request)."""
    for i, text in enumerate(("hi", "White"), start=1):
        assert (await server.post(body_of(message_event(ALICE, f"m{i}", i, text))))[0] == 200
        await server.app[DISPATCHER].idle()


def _requests(metrics: str) -> str | None:
    found = [line for line in metrics.splitlines() if line.startswith('otnflow_otn{figure="requests",topic="restock"}')]
    return found[0].split()[-1] if found else None


async def test_a_hundred_probes_and_scrapes_read_the_store_once_and_show_what_happened(spied) -> None:  # type: ignore[no-untyped-def]
    server, spy = spied
    assert [spy.calls[name] for name in READS] == [1, 1, 1]  # the reading at start
    for _ in range(100):
        assert (await server.get("/healthz"))[0] == 200
        assert (await server.get("/metrics"))[0] == 200
    assert [spy.calls[name] for name in READS] == [1, 1, 1]

    await _asks_for_restock(server)
    assert _requests((await server.get("/metrics"))[1]) is None  # as of the last reading: before alice came
    await server.app[FIGURES].refresh()  # what the background task does every server.figures_refresh_seconds
    assert _requests((await server.get("/metrics"))[1]) == "1.0"
    health = json.loads((await server.get("/healthz"))[1])
    assert health["store"]["users"] == 1 and health["store"]["inbox_handled"] == 2, health
    assert health["store_as_of_seconds"] < 5
    assert [spy.calls[name] for name in READS] == [2, 2, 2]


async def test_the_background_task_reads_the_figures_again(tmp_path: Path, fake_graph) -> None:  # type: ignore[no-untyped-def]
    fake, graph_url = fake_graph
    settings = make_settings(tmp_path, graph_url, server_figures_refresh_seconds=0.05)
    app = create_app(settings, clock=ManualClock(T0))
    served = await serve_on_loopback(app)
    server = Server(app, served.url, fake, ManualClock(T0))
    try:
        await _asks_for_restock(server)

        async def counted() -> bool:
            return _requests((await server.get("/metrics"))[1]) == "1.0"

        await wait_until(counted, timeout=10, what="a background reading to count alice's OTN request")
    finally:
        await server.session.close()
        await served.runner.cleanup()


async def test_healthz_answers_503_while_the_store_fails_and_200_once_it_answers_again(spied) -> None:  # type: ignore[no-untyped-def]
    server, spy = spied

    def down() -> None:
        raise OSError("disk I/O error")

    spy.before["counts"] = down
    await server.app[FIGURES].refresh()
    status, text = await server.get("/healthz")
    assert (status, json.loads(text)) == (503, {"status": "error", "store": "OSError: disk I/O error"})
    del spy.before["counts"]
    await server.app[FIGURES].refresh()
    assert (await server.get("/healthz"))[0] == 200


async def test_healthz_answers_503_when_no_reading_came_back_for_a_while(spied) -> None:  # type: ignore[no-untyped-def]
    server, _ = spied
    figures = server.app[FIGURES]
    figures.unresponsive_after = 0.01  # (3 periods, at least 30 s) a read that hangs never fails: silence is the sign
    await asyncio.sleep(0.05)
    status, text = await server.get("/healthz")
    assert status == 503 and "no reading of the store for" in json.loads(text)["store"], text
