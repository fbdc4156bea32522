"""How long a 20-step conversation test takes with the flow-test harness (real engine, real SQLite file, fake Graph
API, all on loopback), and where the time goes: the bot's start and the steps. Side by side: a bot started as the
harness starts one (the empty store and compiled flows made once per process, engine/testing/reuse.py) and one that
makes its own schema and compiles its own flows, as each did before.

    python bench/harness.py [--runs 30]
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))  # first: the project's `actions` package, not bench/actions.py

from _common import machine_line  # noqa: E402

from engine.config import load_settings  # noqa: E402
from engine.runtime.flows import load_configured_flows  # noqa: E402
from engine.testing.conversations import ConversationFile, ConversationRunner, load_conversations  # noqa: E402
from engine.testing.harness import Bot  # noqa: E402

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


@dataclass
class Timings:
    """Wall-clock and CPU seconds (the process's, store threads included) of each run."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @asynccontextmanager
    async def timed(self) -> AsyncIterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.wall.append(time.perf_counter() - wall)
        self.cpu.append(time.process_time() - cpu)

    def ms(self, which: str = "wall") -> float:
        return statistics.median(getattr(self, which)) * 1000


async def measure(file: ConversationFile, runs: int) -> dict[str, Timings]:
    """The test, a bot started and stopped as each test starts one, and (side by side) one that makes its own
    schema and compiles its flows, as every bot did before the harness reused them (engine/testing/reuse.py)."""
    runner = ConversationRunner()
    runner.flows(file)  # flows compile once per suite, as in `otnflow test` and the pytest plugin
    timings = {"test": Timings(), "start": Timings(), "fresh": Timings()}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(runs):
            async with timings["test"].timed():
                result = await runner.run(file, file.tests[0])
            assert result.passed, result.failure
            async with timings["start"].timed(), Bot.start(file.flows_dir, file.templates_dir, config=file.config):
                pass
            async with timings["fresh"].timed():
                settings = load_settings(file.config, {"OTNFLOW_FLOWS_TEMPLATES": str(file.templates_dir)})
                own = load_configured_flows(settings)
                store = f"sqlite:///{tmp}/fresh-{run}.sqlite3"  # not the harness's file: the store makes its schema
                async with Bot.start(
                    file.flows_dir, file.templates_dir, config=file.config, compiled=own, store_url=store
                ):
                    pass
    return timings


def main() -> None:
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 30
    logging.disable(logging.WARNING)  # each start warns that the example's stock service is not configured
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "test_twenty.toml"
        path.write_text(
            TWENTY_STEPS.format(flows=ROOT / "flows", templates=ROOT / "templates", config=ROOT / "config.toml")
        )
        file = load_conversations(path)
        steps = len(file.tests[0].steps)
        timings = asyncio.run(measure(file, runs))
    test, start, fresh = timings["test"], timings["start"], timings["fresh"]
    print(machine_line())
    print(f"{steps}-step conversation test, {runs} runs (median; CPU: the process's, store threads included):")
    print(f"  whole test          {test.ms():7.1f} ms   CPU {test.ms('cpu'):6.1f} ms")
    print(f"  bot start + stop    {start.ms():7.1f} ms   CPU {start.ms('cpu'):6.1f} ms")
    steps_ms = test.ms() - start.ms()
    print(
        f"  the steps           {steps_ms:7.1f} ms   CPU {test.ms('cpu') - start.ms('cpu'):6.1f} ms  "
        f"({steps_ms / steps:.2f} ms a step)"
    )
    print(f"  p90 whole test      {sorted(test.wall)[int(len(test.wall) * 0.9)] * 1000:7.1f} ms")
    print("side by side, bot start + stop:")
    print(f"  reusing the empty store and the compiled flows   {start.ms():7.1f} ms   CPU {start.ms('cpu'):6.1f} ms")
    print(f"  its own schema and flow compilation (as before)  {fresh.ms():7.1f} ms   CPU {fresh.ms('cpu'):6.1f} ms")
    print(f"  ratio                                            {fresh.ms() / start.ms():7.1f}x")


if __name__ == "__main__":
    main()
