"""The playground shows each flow action the bot called, how it ended and its result, in the conversation: here
the wine shop's HTTP stock check against the stock service on loopback, answering, then refusing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import served_playground
from tests.stock_service import KEY, StockService


async def test_the_playground_shows_each_action_call_and_its_result(tmp_path: Path) -> None:
    async with StockService.running() as stock:
        env = {"STOCK_API_URL": stock.url, "STOCK_API_KEY": KEY}
        async with served_playground(tmp_path, env) as playground:

            async def act(action: str, **body: object) -> dict[str, Any]:
                status, state = await playground.act(action, user="pat", **body)
                assert status == 200, state
                return state

            async def tap(state: dict[str, Any], title: str) -> dict[str, Any]:
                offered = [q for e in state["transcript"] if e["from"] == "bot" for q in e["quick_replies"]]
                payload = next(q["payload"] for q in reversed(offered) if q["title"] == title)
                return await act("tap", title=title, payload=payload)

            state = await tap(await act("say", text="hi"), "Red")
            state = await tap(state, "Buy a bottle")
            called = [e for e in state["transcript"] if e["from"] == "action"]
            assert [(e["name"], e["outcome"], e["result"]) for e in called] == [("check_stock", "success", 12)]
            assert called[0]["text"].startswith('check_stock(sku="RIOJA19") success in ')
            assert called[0]["text"].endswith(" ms: 12")
            after = state["transcript"][state["transcript"].index(called[0]) + 1]  # the reply that used it
            assert after["text"] == "Lovely choice! 12 left of the Rioja Reserva 2019: here is your link to check out."

            stock.key = "rotated"
            state = await tap(await act("say", text="menu"), "Red")
            state = await tap(state, "Buy a bottle")
            called = [e for e in state["transcript"] if e["from"] == "action"]
            assert [(e["outcome"], e["result"]) for e in called] == [("success", 12), ("failure", None)]
            assert state["state"] == "stock_unknown"
