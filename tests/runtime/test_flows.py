"""The runtime's flows: one immutable set, replaced whole by a reload; a step keeps the set it started with."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.flow import load_flows
from engine.runtime.clock import ManualClock
from engine.runtime.flows import FlowSet, load_configured_flows
from engine.store import open_store
from engine.web import create_app
from engine.web.keys import DISPATCHER, FLOWS, SETTINGS
from tests.conftest import T0, Server, body_of, make_settings, message_event, serve_on_loopback
from tests.spy_store import SpyStore

ROOT = Path(__file__).resolve().parents[2]


def test_a_flow_set_is_read_only_and_names_a_missing_default(tmp_path: Path) -> None:
    flows = load_configured_flows(make_settings(tmp_path, "http://127.0.0.1:9"))
    chosen = FlowSet.of(flows, "")
    assert chosen.default == min(flows)
    with pytest.raises(TypeError):
        chosen.flows["other"] = flows["wine_shop"]  # type: ignore[index]
    with pytest.raises(ValueError, match=r"flows\.default: no flow named 'wine_shp'; did you mean 'wine_shop'"):
        FlowSet.of(flows, "wine_shp")


async def test_a_step_under_way_keeps_the_flows_it_started_with(tmp_path: Path, fake_graph) -> None:  # type: ignore[no-untyped-def]
    fake, graph_url = fake_graph
    edited = tmp_path / "flows"
    shutil.copytree(ROOT / "flows", edited, ignore=shutil.ignore_patterns("tests"))
    wine = edited / "wine_shop.toml"
    wine.write_text(wine.read_text().replace("Welcome to the cellar.", "Welcome to the new cellar."))
    settings = make_settings(tmp_path, graph_url)
    spy = SpyStore(open_store(settings.store_url, 7.0))
    app = create_app(settings, clock=ManualClock(T0), store=spy)  # type: ignore[arg-type]
    started_with = app[FLOWS].current
    new = FlowSet.configured(settings, load_flows([edited], app[SETTINGS].flow_options()))
    # the reload lands while alice's step waits on the store, after it took its flows
    spy.before["load_for_step"] = lambda: app[FLOWS].replace(new)
    served = await serve_on_loopback(app)
    server = Server(app, served.url, fake, ManualClock(T0))
    try:
        assert (await server.post(body_of(message_event("7100000000000001", "m1", 1, "hi"))))[0] == 200
        await app[DISPATCHER].idle()
        assert app[FLOWS].current is new
        assert "Welcome to the cellar." in (server.texts_to("7100000000000001")[0] or "")
        del spy.before["load_for_step"]
        assert (await server.post(body_of(message_event("7100000000000002", "m2", 2, "hi"))))[0] == 200
        await app[DISPATCHER].idle()
        assert "Welcome to the new cellar." in (server.texts_to("7100000000000002")[0] or "")
        assert "Welcome to the cellar." in (started_with.flows["wine_shop"].spec.states["welcome"].say.text or "")
    finally:
        await server.session.close()
        await served.runner.cleanup()
