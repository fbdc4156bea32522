"""The OTN loop's promises (issue 11), checked by a Hypothesis state machine (tests/model/otn_machine.py) that
drives the real engine on SQLite and on MongoDB (SecantusDB). Bounded for CI and derandomized (the same examples
every run); `OTNFLOW_MODEL_PROFILE=long` runs the longer, random profile of docs/testing-flows.md.

Every promise is checked (`LANDED`); the short replays below are what the machine found before each fix (or the
promise a fix brought), kept as plain tests. A promise whose fix has not landed yet is left out of `LANDED` and
shown instead by such a replay, marked xfail with the missing fix's name."""

from __future__ import annotations

import os
from collections.abc import Callable

from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from tests.conftest import mongo_database_url
from tests.model.otn_machine import DAY_MS, USERS, Checks, OtnMachine

SLOW_OK = [HealthCheck.too_slow, HealthCheck.filter_too_much]
PROFILES = {
    "ci": settings(
        max_examples=12, stateful_step_count=25, deadline=None, derandomize=True, suppress_health_check=SLOW_OK
    ),
    "long": settings(max_examples=400, stateful_step_count=60, deadline=None, suppress_health_check=SLOW_OK),
}
PROFILE = PROFILES[os.environ.get("OTNFLOW_MODEL_PROFILE", "ci")]
#: SQLite runs are cheap (~0.15 s an example): more of them.
SQLITE = settings(PROFILE, max_examples=PROFILE.max_examples * 5)
#: Every promise whose fix is on main.
LANDED = Checks()


def machine(checks: Checks, store_url: str | None = None) -> type[OtnMachine]:
    return type("Machine", (OtnMachine,), {"store_url": store_url, "checks": checks})


def test_otn_loop_promises_on_sqlite() -> None:
    run_state_machine_as_test(machine(LANDED), settings=SQLITE)


def test_otn_loop_promises_on_mongodb(mongo_server: str) -> None:
    url = mongo_database_url(mongo_server, "model_{run}")
    run_state_machine_as_test(machine(LANDED, url), settings=PROFILE)


def replay(checks: Checks, steps: Callable[[OtnMachine], None]) -> None:
    """Run `steps` on a fresh machine, checking every promise after each, as Hypothesis would."""
    state = machine(checks)()
    try:
        state.start(otn_on=True, max_requests=1)
        state.promises_hold()
        steps(state)
    finally:
        state.teardown()


def test_a_token_serves_only_its_own_requests_variables() -> None:
    """issue 11 §1: a Sauvignon campaign does not spend the token bob took for the Rioja."""

    def steps(state: OtnMachine) -> None:
        state.browses(name="ann", choice="White", opt_in=True)
        state.browses(name="bob", choice="Red", opt_in=True)
        state.time_passes(jump=3 * DAY_MS)
        state.notify(campaign=("restock", "", {"product": "Sauvignon"}))
        state.promises_hold()  # bob asked about the Rioja

    replay(LANDED, steps)


def test_stop_stops_everything() -> None:
    """issue 11 §2: ann's token is revoked by "stop"; the campaign after it reaches nobody."""

    def steps(state: OtnMachine) -> None:
        state.browses(name="ann", choice="White", opt_in=True)
        state.says(name="ann", text="stop")
        state.promises_hold()
        state.time_passes(jump=3 * DAY_MS)
        state.notify(campaign=("restock", "", {"product": "Sauvignon"}))
        state.promises_hold()

    replay(LANDED, steps)


def test_who_comes_back_is_asked_and_notified_again() -> None:
    """issue 11 §2: "hi" after "stop" subscribes again; the next request and notification reach the user."""

    def steps(state: OtnMachine) -> None:
        state.browses(name="ann", choice="White", opt_in=True)
        state.says(name="ann", text="stop")
        state.browses(name="ann", choice="White", opt_in=True)
        state.promises_hold()
        state.time_passes(jump=3 * DAY_MS)
        state.notify(campaign=("restock", "", {"product": "Sauvignon"}))
        state.promises_hold()
        notified = [m.text for m in state.running.fake.messages_to("ann") if m.otn_token]
        assert notified == ["[white] Sauvignon is back"]

    replay(LANDED, steps)


def test_a_tap_on_the_notification_at_once_is_re_asked() -> None:
    """issue 11 §3.1, as the machine found it before the fix: the tap came before the batched arm was written."""

    def steps(state: OtnMachine) -> None:
        for name in ("ann", "bob", "cat"):
            state.browses(name=name, choice="News", opt_in=True)
        state.time_passes(jump=3 * DAY_MS)
        state.promises_hold()
        state.notify_and_tap_at_once(campaign=("news", "", {}), name="ann")
        state.promises_hold()

    replay(LANDED, steps)


def test_a_resumed_campaign_item_passes_the_gate_again() -> None:
    """issue 11 §3.4, as the machine found it before the fix: a claimed item was resent to a user now in the EU."""

    def steps(state: OtnMachine) -> None:
        for name in ("ann", "bob", "cat"):
            state.browses(name=name, choice="News", opt_in=True)
        state.time_passes(jump=3 * DAY_MS)
        state.promises_hold()  # killed with sends in flight; everyone moves to the EU; the campaign resumes
        state.server(what="kill_campaign", campaign=("news", "", {}), names=list(USERS), after=1, meanwhile="eu")
        state.promises_hold()

    replay(LANDED, steps)


def test_a_token_expired_since_the_kill_is_never_sent() -> None:
    """issue 11 §3.5, as the machine found it before the fix: Meta refused the expired token resent on resume."""

    def steps(state: OtnMachine) -> None:
        for name in ("ann", "bob", "cat"):
            state.browses(name=name, choice="News", opt_in=True)
        state.time_passes(jump=3 * DAY_MS)
        state.promises_hold()  # killed with sends in flight; a year passes; the campaign resumes
        state.server(what="kill_campaign", campaign=("news", "", {}), names=["ann"], after=1, meanwhile="year")
        state.promises_hold()

    replay(LANDED, steps)
