"""Real-shaped webhook bodies from other Messenger libraries' test suites (tests/fixtures/library_webhooks/, each
with its source in index.json and README.md), every one posted signed to a real server on loopback: 200 always;
what each holds is stored, skipped by kind, or kept as a dead letter, exactly as index.json expects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.messenger.events import SKIPPED_KINDS
from engine.web.keys import STORE
from tests.conftest import Server

CORPUS = Path(__file__).parents[1] / "fixtures" / "library_webhooks"
INDEX: list[dict[str, Any]] = json.loads((CORPUS / "index.json").read_text())


def test_the_corpus_covers_at_least_three_libraries_and_every_file_is_indexed() -> None:
    assert len({entry["repository"] for entry in INDEX}) >= 3
    assert sorted(entry["file"] for entry in INDEX) == sorted(
        p.name for p in CORPUS.glob("*.json") if p.name != "index.json"
    )


@pytest.mark.parametrize("entry", INDEX, ids=[entry["file"] for entry in INDEX])
async def test_every_library_fixture_gets_200_and_the_expected_fate(server: Server, entry: dict[str, Any]) -> None:
    raw = (CORPUS / entry["file"]).read_bytes()
    assert await server.post(None, raw=raw) == (200, "EVENT_RECEIVED")
    await server.idle()
    expect = entry["expect"]
    counts = await server.counts()
    assert counts["inbox_pending"] + counts["inbox_handled"] == expect.get("stored", 0)
    assert counts.get("inbox_failed", 0) == 0
    assert counts["rejected"] == expect.get("rejected", 0)
    if "reason" in expect:
        (dead,) = await server.app[STORE].rejected_events()
        assert expect["reason"] in dead.reason
    _, metrics = await server.get("/metrics")
    for kind, n in expect.get("skipped", {}).items():
        label = kind if kind in SKIPPED_KINDS else "unknown"
        assert f'otnflow_events_skipped_total{{reason="{label}"}} {float(n)}' in metrics, (kind, metrics)
