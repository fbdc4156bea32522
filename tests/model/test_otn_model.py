"""The OTN loop's promises (issue 11), checked by a Hypothesis state machine driving the real engine on SQLite and
on MongoDB (SecantusDB). Bounded for CI; `OTNFLOW_MODEL_PROFILE=long` runs the longer profile of
docs/testing-flows.md."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from tests.conftest import mongo_database_url
from tests.model.otn_machine import Checks, OtnMachine

SLOW_OK = [HealthCheck.too_slow, HealthCheck.filter_too_much]
PROFILES = {
    "ci": settings(
        max_examples=12, stateful_step_count=25, deadline=None, derandomize=True, suppress_health_check=SLOW_OK
    ),
    "long": settings(max_examples=400, stateful_step_count=60, deadline=None, suppress_health_check=SLOW_OK),
}
PROFILE = PROFILES[os.environ.get("OTNFLOW_MODEL_PROFILE", "ci")]
CHECKS = Checks(request_variables=False, consent=False)


def machine(store_url: str | None, checks: Checks) -> type[OtnMachine]:
    return type("Machine", (OtnMachine,), {"store_url": store_url, "checks": checks})


def test_otn_loop_promises_on_sqlite() -> None:
    run_state_machine_as_test(machine(None, CHECKS), settings=PROFILE)


def test_otn_loop_promises_on_mongodb(mongo_server: str) -> None:
    url = mongo_database_url(mongo_server, "model_{run}")
    run_state_machine_as_test(machine(url, CHECKS), settings=PROFILE)
