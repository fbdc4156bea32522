"""What a flow action costs, measured side by side in one run, all on loopback (the stock service from
tests/stock_service.py, the harness's real engine, SQLite file and fake Graph API):

- one HTTP action call (render the templates, the request with its Idempotency-Key, the JSONPath) against the same
  GET made with aiohttp by hand;
- one conversation step into a state that runs the HTTP action, one into a state whose action is stubbed, and one
  into a state with no action.

    python bench/actions.py [--rounds 200]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))  # first: the project's `actions` package, not bench/actions.py

import aiohttp  # noqa: E402
from _common import machine_line  # noqa: E402

from engine.actions import ActionContext  # noqa: E402
from engine.config import load_settings  # noqa: E402
from engine.runtime.http_actions import HttpActionCaller  # noqa: E402
from engine.testing.harness import Bot  # noqa: E402
from tests.stock_service import KEY, StockService  # noqa: E402


async def median_ms(rounds: int, work: Callable[[], Awaitable[object]]) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        await work()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


async def calls(rounds: int, stock: StockService, env: dict[str, str]) -> tuple[float, float]:
    action = load_settings(ROOT / "config.toml", env).http_actions["check_stock"]
    context = ActionContext(user_id="u", tags=frozenset(), vars={}, idempotency_key="k", args={"sku": "RIOJA19"})
    async with aiohttp.ClientSession() as session:
        caller = HttpActionCaller(action, session, env)

        async def by_hand() -> object:
            headers = {"Authorization": f"Bearer {KEY}", "Idempotency-Key": "k"}
            async with session.get(f"{stock.url}/stock/RIOJA19", headers=headers) as response:
                return (await response.json())["available"]

        await caller(context), await by_hand()  # warm the connection
        return await median_ms(rounds, lambda: caller(context)), await median_ms(rounds, by_hand)


async def steps(rounds: int, env: dict[str, str], stubbed: bool) -> tuple[float, float]:
    """Median ms of the step into `bought` (the action) and of the step into `red` (none)."""
    async with Bot.start(config=ROOT / "config.toml", action_env=env) as bot:
        if stubbed:
            bot.stub_action("check_stock", 12)
        user = bot.user("bench")
        into_action, into_plain = [], []
        for _ in range(rounds):
            await user.says("menu")
            started = time.perf_counter()
            await user.taps("Red")
            into_plain.append(time.perf_counter() - started)
            started = time.perf_counter()
            await user.taps("Buy a bottle")
            into_action.append(time.perf_counter() - started)
            assert user.state == "bought", user.state
        return statistics.median(into_action) * 1000, statistics.median(into_plain) * 1000


async def main() -> None:
    rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 200
    print(machine_line("python-jsonpath"))
    async with StockService.running() as stock:
        env = {"STOCK_API_URL": stock.url, "STOCK_API_KEY": KEY}
        action_ms, by_hand_ms = await calls(rounds, stock, env)
        http_step, plain_step = await steps(rounds, env, stubbed=False)
        stub_step, plain_again = await steps(rounds, env, stubbed=True)
    print(f"rounds {rounds} (medians, ms)")
    rows = [
        ("HTTP action call", action_ms, "the same GET by hand", by_hand_ms),
        ("step into the HTTP action's state", http_step, "into a state without action", plain_step),
        ("step into the stubbed action's state", stub_step, "into a state without action", plain_again),
    ]
    for name, ms, other, other_ms in rows:
        print(f"{name:38} {ms:7.2f}   {other:28} {other_ms:7.2f}   ratio {ms / other_ms:5.2f}")


if __name__ == "__main__":
    asyncio.run(main())
