"""How long a 200-state flow takes to load, check and compile, and what one transition costs on the shared
machine versus a machine built per event (and versus transitions' add_model/remove_model binding).

    python bench/compile.py [--states 200] [--repeat 2000]

Prints one table; every figure is measured in this run, side by side.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_line

from engine.flow import FlowOptions, Snapshot, UserInput, load_flow
from engine.flow.compiler import CompiledFlow, _Conversation
from engine.flow.loader import read_flow
from engine.flow.templates import make_environment


def big_flow(states: int) -> str:
    """A flow with `states` states, each with a template, tags, three quick replies and a guarded regex rule;
    every 50th state asks for an OTN."""
    parts = ['[flow]\nname = "big"\nstart = "s0"\n', '[[keywords]]\nwords = ["menu"]\ngoto = "s0"\n']
    parts.append(
        '[topics.news]\ntitle = "News about {{ thing }}"\n[[topics.news.variants]]\nwhen = "t1"\nsay = "A"\n'
        '[[topics.news.variants]]\nsay = "B"\n'
    )
    for i in range(states):
        nxt, prev = (i + 1) % states, (i - 1) % states
        otn = f'otn = {{ topic = "news", vars = {{ thing = "s{i}" }} }}\n' if i % 50 == 0 else ""
        parts.append(
            f'[states.s{i}]\nsay = "State {i} for {{{{ user.first_name }}}}"\ntag = ["t{i % 7}"]\n{otn}'
            f'quick_replies = [\n  {{ title = "Next", goto = "s{nxt}", tag = ["n{i % 5}"] }},\n'
            f'  {{ title = "Back", goto = "s{prev}" }},\n  {{ title = "Home", goto = "s0" }},\n]\n'
            f'[[states.s{i}.on]]\nregex = "^go {i}$"\nwhen = "t{i % 7} and not churned"\ngoto = "s{nxt}"\n'
        )
    return "\n".join(parts)


class Bindable(_Conversation):
    """add_model writes trigger methods onto the model, which needs a __dict__."""


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds per call over `repeat` calls, in batches to keep timer overhead out."""
    batch = max(1, repeat // 20)
    samples = []
    for _ in range(20):
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter() - start) / batch)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--states", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.toml"
        path.write_text(big_flow(args.states))
        flow, diagnostics = load_flow(path, FlowOptions())
        assert flow is not None, diagnostics[:5]
        spec, _ = read_flow(path)
        assert spec is not None
        env = make_environment(None)
        load_s = timed(lambda: read_flow(path), 20)
        full_s = timed(lambda: load_flow(path, FlowOptions()), 20)
        compile_s = timed(lambda: CompiledFlow(spec, env), 20)

    snapshot = Snapshot("s10", frozenset({"t3"}), {})
    tap = UserInput(payload="NEXT")

    def shared_transition() -> None:
        convo = _Conversation(snapshot, None, {})
        flow._fire(convo, "tap:NEXT")

    def per_event_machine() -> None:
        machine = CompiledFlow(spec, env).machine  # what "one machine per user per event" would cost
        convo = _Conversation(snapshot, None, {})
        machine.events["tap:NEXT"].trigger(convo)

    def add_remove_model() -> None:
        convo = Bindable(snapshot, None, {})
        flow.machine.add_model(convo, initial=snapshot.state)
        flow.machine.events["tap:NEXT"].trigger(convo)
        flow.machine.remove_model(convo)

    def whole_step() -> None:
        flow.step(snapshot, tap, {"first_name": "Ann"})

    shared = timed(shared_transition, args.repeat)
    add_remove = timed(add_remove_model, args.repeat // 4)
    per_event = timed(per_event_machine, 10)
    step = timed(whole_step, args.repeat)

    print(machine_line())
    print(
        f"flow: {args.states} states, {sum(len(e.transitions) for e in flow.machine.events.values())} "
        f"transition sources, {len(flow.machine.events)} triggers"
    )
    print(f"{'what':<52}{'time':>14}")
    print(f"{'parse + shape-check + build spec':<52}{load_s * 1e3:>11.2f} ms")
    print(f"{'load + check + compile (load_flow)':<52}{full_s * 1e3:>11.2f} ms")
    print(f"{'compile only (build the transitions machine)':<52}{compile_s * 1e3:>11.2f} ms")
    print(f"{'one transition, shared machine (Event.trigger)':<52}{shared * 1e6:>11.1f} µs")
    print(f"{'one transition, shared machine + add/remove_model':<52}{add_remove * 1e6:>11.1f} µs")
    print(f"{'one transition, machine built per event':<52}{per_event * 1e6:>11.1f} µs")
    print(f"{'one whole step (match, transition, render reply)':<52}{step * 1e6:>11.1f} µs")
    print(f"ratio per-event machine / shared machine: {per_event / shared:,.0f}x")
    print(f"ratio add/remove_model / shared machine:  {add_remove / shared:,.1f}x")


if __name__ == "__main__":
    main()
