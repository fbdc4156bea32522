"""Actions through the real path: webhook in, the flow stops at the state's action, the runtime runs it (stubbed
by the harness, or the registered function), the outcome picks the next state, the reply goes out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.flow import FlowOptions, Outcome, Snapshot, UserInput, load_flow
from engine.testing.harness import Bot

FLOWS = Path(__file__).parent / "action_flows"
SIGNATURES = {"check_stock": frozenset({"sku"})}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text('[actions]\ncheck_stock = "tests.runtime.shop_actions:check_stock"\n')
    return path


def test_the_step_stops_at_the_action_and_resume_follows_the_outcome() -> None:
    flow, diagnostics = load_flow(FLOWS / "shop.toml", FlowOptions(actions=SIGNATURES))
    assert flow is not None, diagnostics
    started = flow.step(Snapshot(), UserInput())
    tapped = flow.step(started.snapshot, UserInput(payload="SANCERRE"), {"first_name": "Ann"})
    assert tapped.snapshot.state == "stock" and tapped.replies == ()
    assert tapped.action is not None and tapped.action.args == {"sku": "SL13", "who": "Ann"}
    assert tapped.action.timeout_seconds == 0.5
    ok = flow.resume(tapped.snapshot, Outcome.SUCCESS, 3)
    assert (ok.snapshot.state, [r.text for r in ok.replies]) == ("stock", ["3 left of SL13."])
    assert ok.snapshot.variables["stock"] == 3
    assert flow.resume(tapped.snapshot, Outcome.SUCCESS, 0).snapshot.state == "sold_out"
    assert flow.resume(tapped.snapshot, Outcome.FAILURE).snapshot.state == "sorry"
    assert flow.resume(tapped.snapshot, Outcome.TIMEOUT).snapshot.state == "slow"


async def test_a_stubbed_action_is_called_with_its_arguments_and_the_event_key(config: Path) -> None:
    async with Bot.start(flows=FLOWS, templates=FLOWS, config=config) as bot:
        calls = bot.stub_action("check_stock", 5)
        ann = bot.user("ann", first_name="Ann")
        await ann.says("hi")
        replies = await ann.taps("Sancerre")
        assert [r.text for r in replies] == ["5 left of SL13."]
        assert ann.variables["stock"] == 5
        assert len(calls) == 1 and calls[0].args == {"sku": "SL13", "who": "Ann"}
        assert calls[0].user_id == "ann" and calls[0].idempotency_key.endswith("#action0")
        assert [(c.name, c.context, c.outcome, c.value) for c in bot.action_calls] == [
            ("check_stock", calls[0], Outcome.SUCCESS, 5)
        ]


@pytest.mark.parametrize(
    ("stub", "state", "text"),
    [
        ({"result": 0}, "sold_out", "Sold out, sorry."),
        ({"fails": True}, "sorry", "Our shop is not answering; try again later."),
        ({"times_out": True}, "slow", "The shop is slow today."),
    ],
)
async def test_the_outcome_picks_the_next_state(config: Path, stub: dict[str, Any], state: str, text: str) -> None:
    async with Bot.start(flows=FLOWS, templates=FLOWS, config=config) as bot:
        bot.stub_action("check_stock", **stub)
        ann = bot.user("ann")
        await ann.says("hi")
        assert [r.text for r in await ann.taps("Sancerre")] == [text]
        assert ann.state == state
        assert "stock" not in ann.variables or stub.get("result") == 0


async def test_the_registered_function_runs_and_metrics_count_it(config: Path) -> None:
    async with Bot.start(flows=FLOWS, templates=FLOWS, config=config) as bot:
        ann = bot.user("ann")
        await ann.says("hi")
        assert [r.text for r in await ann.taps("Sancerre")] == ["3 left of SL13."]
        async with bot.session.get(f"{bot.url}/metrics") as response:
            metrics = await response.text()
        assert 'otnflow_actions_total{action="check_stock",outcome="success"} 1.0' in metrics
        assert 'otnflow_action_seconds_count{action="check_stock"} 1.0' in metrics


def test_check_reports_unknown_actions_missing_arguments_targets_and_names(tmp_path: Path) -> None:
    text = (FLOWS / "shop.toml").read_text()
    text = text.replace('who = "{{ user.first_name }}"', 'who = "{{ basket }}"').replace(
        'goto = "sold_out"', 'goto = "gone"'
    )
    (tmp_path / "shop.toml").write_text(text)
    _, unknown = load_flow(tmp_path / "shop.toml", FlowOptions(actions={"check_stok": frozenset()}))
    _, missing = load_flow(tmp_path / "shop.toml", FlowOptions(actions={"check_stock": frozenset({"sku", "qty"})}))
    line = text.splitlines().index(next(t for t in text.splitlines() if t.startswith("action ="))) + 1
    found = {(d.line, d.key, d.message) for d in unknown} | {(d.line, d.key, d.message) for d in missing}
    assert (line, "states.stock.action.name", "unknown action 'check_stock'; did you mean 'check_stok'?") in found
    assert (line, "states.stock.action.args", "action 'check_stock' needs argument(s) qty") in found
    assert any(key == "states.stock.action.on_result[0].goto" and "unknown state 'gone'" in m for _, key, m in found)
    assert any(key == "states.stock.action.args.who" and "undefined variable 'basket'" in m for _, key, m in found)


async def test_an_installed_packages_entry_point_registers_an_action(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    dist = site / "shop_actions-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shop-actions\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[otnflow.actions]\ncheck_stock = tests.runtime.shop_actions:check_stock\n")
    monkeypatch.syspath_prepend(str(site))
    empty = tmp_path / "config.toml"
    empty.write_text("")  # nothing in [actions]: the package's entry point alone registers it
    async with Bot.start(flows=FLOWS, templates=FLOWS, config=empty) as bot:
        ann = bot.user("ann", first_name="Ann")
        await ann.says("hi")
        await ann.taps("Sancerre")
        assert [(c.name, c.outcome) for c in bot.action_calls] == [("check_stock", Outcome.SUCCESS)]
        assert ann.last_reply.text == "3 left of SL13."
