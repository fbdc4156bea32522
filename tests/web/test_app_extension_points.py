"""create_app's extension points, through a real server on loopback: a store object given by the caller is the one
used (opened and closed by the app), and per-event middlewares run around each conversation step, in order, and can
enrich the event."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from engine.local import FakeGraph
from engine.runtime.conversation import Step, StepOutcome
from engine.store import StoredEvent, open_store
from engine.testing import ManualClock
from engine.web import create_app
from engine.web.keys import STORE
from tests.conftest import T0, Server, make_settings, message_event, serve_on_loopback

USER = "7100000000000001"


def body_of(*events: dict[str, object]) -> dict[str, object]:
    return {"object": "page", "entry": [{"id": "106000000000001", "time": T0, "messaging": list(events)}]}


async def test_a_given_store_is_used_and_middlewares_wrap_each_step_in_order(
    tmp_path: Path, fake_graph: tuple[FakeGraph, str]
) -> None:
    fake, graph_url = fake_graph
    store = open_store(f"sqlite:///{tmp_path / 'mine.sqlite3'}", 7.0)
    seen: list[str] = []

    async def outer(event: StoredEvent, step: Step) -> StepOutcome:
        seen.append(f"outer>{event.key}")
        handled = await step(event)
        seen.append(f"outer<{handled.user.state}")
        return handled

    async def enrich(event: StoredEvent, step: Step) -> StepOutcome:
        seen.append("enrich")
        return await step(replace(event, body=event.body.replace('"text":"a red please"', '"text":"Red"')))

    settings = make_settings(tmp_path, graph_url)  # its store.url names store.sqlite3: not the one used
    app = create_app(settings, clock=ManualClock(T0), store=store, middlewares=[outer, enrich])
    served = await serve_on_loopback(app)
    server = Server(app, served.url, fake, ManualClock(T0))
    try:
        status, _ = await server.post(body_of(message_event(USER, "m_1", 0, text="hello")))
        assert status == 200
        await server.idle()
        assert app[STORE] is store
        assert seen == ["outer>m_1", "enrich", "outer<welcome"]
        await server.post(body_of(message_event(USER, "m_2", 1000, text="a red please")))  # enriched into a tap
        await server.idle()
        user = await store.load_user(USER)
        assert user is not None and user.state == "red"
        assert seen[3:] == ["outer>m_2", "enrich", "outer<red"]
        assert not (tmp_path / "store.sqlite3").exists()
    finally:
        await server.session.close()
        await served.runner.cleanup()
