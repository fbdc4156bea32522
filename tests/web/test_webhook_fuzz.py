"""Property tests (issue 12 §5): Hypothesis generates webhook bodies, valid and broken shapes, any unicode (lone
surrogates included), any JSON types and sizes, right and wrong signatures, and posts them to one real server on
loopback. Whatever comes: the answer is 200, 400, 403 or 413 and the server keeps answering; every valid event of a
body answered 200 is stored exactly once, even when Meta's retry brings the body again.

Bounded in CI (EXAMPLES, a few seconds); `OTNFLOW_FUZZ=long pytest tests/web/test_webhook_fuzz.py` runs 2,000
examples (about 20 s here)."""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.messenger.signature import sign
from engine.web.keys import SETTINGS
from tests.conftest import APP_SECRET, T0, Server

PAGE = "106000000000001"
EXAMPLES = 2_000 if os.environ.get("OTNFLOW_FUZZ") == "long" else 40
ANSWERS = {200, 400, 403, 413}

any_text = st.text(st.characters(exclude_categories=()), max_size=40)  # lone surrogates included
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)


@dataclass
class Body:
    events: list[Any] = field(default_factory=list)
    valid_mids: list[str] = field(default_factory=list)


@st.composite
def good_event(draw: st.DrawFn, body: Body) -> dict[str, Any]:
    mid = f"m_{uuid.uuid4().hex}"  # unique across examples: the server outlives them
    body.valid_mids.append(mid)
    message: dict[str, Any] = {"mid": mid}
    if draw(st.booleans()):
        message["text"] = draw(any_text)
    if draw(st.booleans()):
        message["quick_reply"] = {"payload": draw(any_text)}
    if draw(st.booleans()):
        message["extra"] = draw(json_value)  # what a handled kind does not read is not judged
    sender = draw(st.sampled_from(["7100000000000001", "7100000000000002", 7100000000000003]))
    return {
        "sender": {"id": sender},
        "recipient": {"id": PAGE},
        "timestamp": T0 + draw(st.integers(0, 10**9)),
        "message": message,
    }


@st.composite
def broken_event(draw: st.DrawFn) -> Any:
    event = {
        "sender": {"id": "7100000000000009"},
        "recipient": {"id": PAGE},
        "timestamp": T0,
        "message": {"mid": f"m_{uuid.uuid4().hex}"},
    }
    where = draw(st.sampled_from(["timestamp", "sender", "recipient", "message", "mid", "text", "whole"]))
    value = draw(json_value | st.integers(min_value=-(10**40), max_value=10**40))
    if where == "whole":
        return value
    if where in ("mid", "text"):
        if where == "mid" and isinstance(value, str) and value:
            value = None  # a non-empty string would be a valid mid
        event["message"][where] = value
        if where == "text" and (value is None or isinstance(value, str)):
            event["message"]["text"] = 12345  # keep it broken
    else:
        event[where] = value
    return event


@st.composite
def skipped_event(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["delivery", "read", "app_roles", "policy_enforcement", "standby", "brand_new"]))
    return {"recipient": {"id": PAGE}, kind: draw(json_value)}


@st.composite
def webhook(draw: st.DrawFn) -> tuple[bytes, dict[str, str], list[str], bool]:
    """(raw body, headers, the valid events' mids, whether the body must be accepted)."""
    body = Body()
    shape = draw(st.sampled_from(["events", "events", "events", "any_json", "garbage"]))
    if shape == "events":
        events = draw(st.lists(st.one_of(good_event(body), broken_event(), skipped_event()), max_size=6))
        entries = [{"id": PAGE, "time": T0, "messaging": events}]
        raw = json.dumps({"object": "page", "entry": entries}).encode()
    elif shape == "any_json":
        raw = json.dumps(draw(json_value)).encode()
    else:
        raw = draw(st.binary(max_size=200))
    signature = draw(st.sampled_from(["right", "right", "right", "wrong", "missing"]))
    headers = {"Content-Type": "application/json"}
    if signature == "right":
        headers["X-Hub-Signature-256"] = sign(raw, APP_SECRET)
    elif signature == "wrong":
        headers["X-Hub-Signature-256"] = draw(st.sampled_from(["sha256=" + "0" * 64, "sha256=nothex", "", "sha1=x"]))
    must_accept = shape == "events" and signature == "right"
    return raw, headers, body.valid_mids if must_accept else [], must_accept


def _stored(server: Server, mids: list[str]) -> dict[str, int]:
    with sqlite3.connect(server.app[SETTINGS].store_url.removeprefix("sqlite:///")) as db:
        marks = ",".join("?" * len(mids))
        rows = db.execute(f"SELECT key, count(*) FROM inbox WHERE key IN ({marks}) GROUP BY key", mids).fetchall()
    return dict(rows)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # a fresh clone, CI: nothing written beside the tests
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=webhook(), retry=st.booleans())
async def test_any_body_gets_200_400_403_or_413_and_valid_events_are_stored_once(
    server: Server, case: tuple[bytes, dict[str, str], list[str], bool], retry: bool
) -> None:
    raw, headers, valid_mids, must_accept = case
    for _ in range(2 if retry else 1):
        async with server.session.post(f"{server.url}/webhook", data=raw, headers=headers) as response:
            assert response.status in ANSWERS, (response.status, await response.text())
            status = response.status
    if must_accept:
        assert status == 200
    assert (await server.get("/healthz"))[0] == 200  # and it keeps answering
    if status == 200 and valid_mids:
        assert _stored(server, valid_mids) == dict.fromkeys(valid_mids, 1)
