"""An opt-in for a topic no flow declares (a payload from an old flow, another tool, or none at all): its token is
kept under "(unknown)" with the payload it came with, the loop's figures get no stray topic (no `topic=""` metrics
label), and the warning is logged once per topic, not per opt-in."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from engine.runtime.conversation import UNKNOWN_TOPIC
from engine.testing.harness import PAGE_ID, Bot
from engine.web.keys import FIGURES

ROOT = Path(__file__).resolve().parents[2]


def optin(user: str, payload: str, token: str, at: int) -> dict[str, object]:
    event = {
        "sender": {"id": user},
        "recipient": {"id": PAGE_ID},
        "timestamp": at,
        "optin": {"type": "one_time_notif_req", "payload": payload, "one_time_notif_token": token},
    }
    return {"object": "page", "entry": [{"id": PAGE_ID, "time": at, "messaging": [event]}]}


async def test_optins_for_undeclared_topics_are_kept_as_unknown_with_their_payload(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with Bot.start(config=ROOT / "config.toml") as bot:
        ann = bot.user("ann", first_name="Ann")
        await ann.says("hi")
        now = bot.clock.now_ms()
        with caplog.at_level(logging.WARNING, logger="otnflow.conversation"):
            await bot.post(optin("ann", "", "tok-empty", now + 1))
            await bot.post(optin("ann", "mystery:42", "tok-mystery-1", now + 2))
            await bot.post(optin("ann", "", "tok-empty-again", now + 3))
        await ann.refresh()
        kept = sorted((t.token, t.topic, t.payload) for t in ann.tokens())
        assert kept == [
            ("tok-empty", UNKNOWN_TOPIC, ""),
            ("tok-empty-again", UNKNOWN_TOPIC, ""),
            ("tok-mystery-1", UNKNOWN_TOPIC, "mystery:42"),
        ]
        warned = [r.getMessage() for r in caplog.records if "no flow declares" in r.getMessage()]
        assert warned == [  # once per topic, not per opt-in
            "OTN token for topic '', which no flow declares: kept as (unknown)",
            "OTN token for topic 'mystery:42', which no flow declares: kept as (unknown)",
        ]
        await bot.app[FIGURES].refresh()  # /metrics shows the last reading of the store (every 15 s)
        async with bot.session.get(f"{bot.url}/metrics") as response:
            metrics = await response.text()
        assert 'topic=""' not in metrics
        assert 'otnflow_otn{figure="tokens_held",topic="(unknown)"} 3.0' in metrics
        assert 'otnflow_otn{figure="optins",topic="(unknown)"} 0.0' in metrics  # not an opt-in of the loop
