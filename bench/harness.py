"""How long a 20-step conversation test takes with the flow-test harness (real engine, real SQLite file, fake Graph
API, all on loopback), and where the time goes: the bot's start and the steps, side by side.

    python bench/harness.py [--runs 30]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))  # first: the project's `actions` package, not bench/actions.py

from _common import machine_line  # noqa: E402

from engine.testing.conversations import ConversationFile, ConversationRunner, load_conversations  # noqa: E402

TWENTY_STEPS = """
[conversation]
flows = "{flows}"
templates = "{templates}"
config = "{config}"

[[test]]
name = "twenty steps round the wine shop and the OTN loop"
user = {{ id = "alice", first_name = "Alice" }}
steps = [
  {{ says = "hi" }},
  {{ expect = {{ reply = "Hi Alice! Welcome to the cellar. Red or white tonight?" }} }},
  {{ taps = "Red" }},
  {{ expect = {{ tags = ["likes_red"] }} }},
  {{ taps = "Menu" }},
  {{ taps = "White" }},
  {{ expect = {{ otn_request = "restock", state = "sold_out" }} }},
  {{ opts_in = "restock" }},
  {{ expect = {{ tokens = {{ restock = 1 }} }} }},
  {{ taps = "Menu" }},
  {{ says = "something odd" }},
  {{ expect = {{ reply_matches = "^Sorry" }} }},
  {{ advance = "25h" }},
  {{ notify = "restock", vars = {{ product = "Sauvignon 2024" }} }},
  {{ expect = {{ notification = true, delivered = 1 }} }},
  {{ taps = "Show me" }},
  {{ expect = {{ otn_request = "restock" }} }},
  {{ opts_in = "restock" }},
  {{ says = "stop" }},
  {{ expect = {{ tags = ["churned"], state = "goodbye" }} }},
]
"""


async def measure(file: ConversationFile, runs: int) -> tuple[list[float], list[float]]:
    runner = ConversationRunner()
    runner.flows(file)  # flows compile once per suite, as in `otnflow test` and the pytest plugin
    totals, starts = [], []
    for _ in range(runs):
        result = await runner.run(file, file.tests[0])
        assert result.passed, result.failure
        totals.append(result.seconds)
        from engine.testing.harness import Bot

        t0 = time.perf_counter()
        async with Bot.start(file.flows_dir, file.templates_dir, config=file.config, compiled=runner.flows(file)):
            pass
        starts.append(time.perf_counter() - t0)
    return totals, starts


def main() -> None:
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 30
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "test_twenty.toml"
        path.write_text(
            TWENTY_STEPS.format(flows=ROOT / "flows", templates=ROOT / "templates", config=ROOT / "config.toml")
        )
        file = load_conversations(path)
        steps = len(file.tests[0].steps)
        totals, starts = asyncio.run(measure(file, runs))
    total, start = statistics.median(totals) * 1000, statistics.median(starts) * 1000
    print(machine_line())
    print(f"{steps}-step conversation test, {runs} runs (median):")
    print(f"  whole test          {total:7.1f} ms")
    print(f"  bot start + stop    {start:7.1f} ms")
    print(f"  the steps           {total - start:7.1f} ms  ({(total - start) / steps:.2f} ms a step)")
    print(f"  p90 whole test      {sorted(totals)[int(len(totals) * 0.9)] * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
