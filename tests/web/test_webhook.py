"""The webhook on a real server on loopback: signatures, malformed bodies, every event kind, batches, duplicates,
ordering, racing taps. Graph API calls go to the fake Graph API, also on loopback."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from engine.flow import FlowOptions, Snapshot, UserInput, load_flow
from engine.messenger.signature import sign
from engine.web.keys import SETTINGS, STORE
from tests.conftest import APP_SECRET, ROOT, VERIFY_TOKEN, Server, body_of, message_event, webhook_fixture

USER = "7100000000000001"
FIXTURE_NAMES = sorted(p.name for p in (Path(__file__).parents[1] / "fixtures" / "webhooks").glob("*.json"))


async def test_verification_handshake(server: Server) -> None:
    ok = await server.get(f"/webhook?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444")
    assert ok == (200, "1158201444")
    assert (await server.get("/webhook?hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1"))[0] == 403
    assert (await server.get(f"/webhook?hub.mode=other&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1"))[0] == 403


@pytest.mark.parametrize("header", [None, "sha256=" + "0" * 64, "sha256=nothex", "md5=abc"])
async def test_bad_or_missing_signature_is_403_and_stores_nothing(server: Server, header: str | None) -> None:
    raw = json.dumps(webhook_fixture("text.json")).encode()
    headers = {"X-Hub-Signature-256": header} if header else {}
    async with server.session.post(f"{server.url}/webhook", data=raw, headers=headers) as response:
        assert response.status == 403
    await server.idle()
    assert (await server.counts())["inbox_pending"] + (await server.counts())["inbox_handled"] == 0
    assert server.fake.sent == []


async def test_signature_with_another_secret_is_refused(server: Server) -> None:
    status, _ = await server.post(webhook_fixture("text.json"), secret="not-the-app-secret")
    assert status == 403


async def test_sha1_is_only_a_configured_fallback(server_factory) -> None:  # type: ignore[no-untyped-def]
    raw = json.dumps(webhook_fixture("text.json")).encode()
    sha1 = {"X-Hub-Signature": sign(raw, APP_SECRET, "sha1")}
    strict = await server_factory()
    async with strict.session.post(f"{strict.url}/webhook", data=raw, headers=sha1) as response:
        assert response.status == 403
    lenient = await server_factory(server_allow_sha1_signature="true")
    async with lenient.session.post(f"{lenient.url}/webhook", data=raw, headers=sha1) as response:
        assert response.status == 200


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "body is not JSON"),
        (b"[]", "body must be a JSON object"),
        (b'{"object": "page", "entry": {}}', "'entry' must be a list"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"object": "page", "entry": [], "x": Infinity}', "Infinity is not JSON"),
    ],
)
async def test_malformed_body_is_400_naming_the_problem(server: Server, raw: bytes, message: str) -> None:
    status, text = await server.post(None, raw=raw)
    assert status == 400
    assert message in text


async def test_oversized_body_is_413(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = await server_factory(server_max_body_bytes="2000")
    body = body_of(message_event(USER, "m_big", 1, text="x" * 5000))
    status, _ = await server.post(body)
    assert status == 413
    assert (await server.counts())["inbox_pending"] == 0
    assert 'otnflow_webhook_rejected_total{status="413"} 1.0' in (await server.get("/metrics"))[1]


@pytest.mark.parametrize("name", FIXTURE_NAMES)
async def test_every_sample_webhook_is_accepted_and_never_crashes(server: Server, name: str) -> None:
    status, text = await server.post(webhook_fixture(name))
    assert (status, text) == (200, "EVENT_RECEIVED")
    await server.idle()
    counts = await server.counts()
    assert counts.get("inbox_failed", 0) == 0
    replied = len(server.fake.sent) > 0
    # what deserves an answer gets one; echoes, receipts, standby and feed changes get none
    expected_reply = name in {
        "text.json",
        "quick_reply.json",
        "postback.json",
        "postback_old_no_mid.json",
        "attachment_image.json",
        "referral.json",
        "batch.json",
    }
    assert replied is expected_reply, (name, server.fake.sent)


async def test_non_ascii_signed_both_escaped_and_raw(server: Server) -> None:
    event = message_event(USER, "m_accent", 0, text="Crémant 🍾")
    escaped = json.dumps(body_of(event)).encode()  # Meta's form: \u00e9 escapes
    raw = json.dumps(body_of(message_event(USER, "m_accent2", 1, text="Crémant 🍾")), ensure_ascii=False).encode()
    assert b"\\u00e9" in escaped and "é".encode() in raw
    assert (await server.post(None, raw=escaped))[0] == 200
    assert (await server.post(None, raw=raw))[0] == 200
    await server.idle()
    assert (await server.counts())["inbox_handled"] == 2


async def test_batch_handles_every_entry_and_event(server: Server) -> None:
    status, _ = await server.post(webhook_fixture("batch.json"))
    assert status == 200
    await server.idle()
    assert (await server.counts())["inbox_handled"] == 3
    # user 1 said "one" (enters the start state) then "two" (not understood there): two replies, in that order
    first = server.texts_to("7100000000000001")
    assert len(first) == 2 and first[0] is not None and first[0].startswith("Hi Test!")
    assert first[1] == 'Sorry, I didn\'t get that. Tap an option below, or type "menu".'
    assert len(server.texts_to("7100000000000002")) == 1


async def test_the_same_delivery_three_times_yields_one_reply(server: Server) -> None:
    body = webhook_fixture("text.json")
    results = await asyncio.gather(*(server.post(body) for _ in range(3)))
    assert [status for status, _ in results] == [200, 200, 200]
    await server.idle()
    assert len(server.fake.sent) == 1
    counts = await server.counts()
    assert counts["inbox_handled"] == 1
    _, metrics = await server.get("/metrics")
    assert "otnflow_events_duplicate_total 2.0" in metrics


async def test_events_of_one_user_are_handled_in_timestamp_order(server: Server) -> None:
    # one batch, listed newest first: "hi" (t=1) enters welcome, the White tap (t=2) needs welcome to work
    batch = body_of(
        message_event(USER, "m_2", 2_000, text="White", payload="WHITE"), message_event(USER, "m_1", 1_000, text="hi")
    )
    assert (await server.post(batch))[0] == 200
    await server.idle()
    texts = server.texts_to(USER)
    assert texts[0] is not None and texts[0].startswith("Hi Test!")
    assert texts[1] == "Fresh and crisp it is. Our star white is the Sauvignon 2024..."


async def test_an_older_event_arriving_late_is_still_handled(server: Server) -> None:
    await server.post(body_of(message_event(USER, "m_new", 5_000, text="hi")))
    await server.idle()
    await server.post(body_of(message_event(USER, "m_old", 4_000, text="menu")))
    await server.idle()
    assert (await server.counts())["inbox_handled"] == 2
    assert len(server.texts_to(USER)) == 2


async def test_fast_taps_racing_keep_state_consistent(server: Server) -> None:
    flow, _ = load_flow(ROOT / "flows" / "wine_shop.toml", FlowOptions(templates_dir=ROOT / "templates"))
    assert flow is not None
    taps = [("hi", None)] + [("Red", "RED"), ("Menu", "MENU"), ("White", "WHITE"), ("Menu", "MENU")] * 5
    events = [message_event(USER, f"m_tap{i}", 10_000 + i, text=t, payload=p) for i, (t, p) in enumerate(taps)]
    # all posted at once, each in its own request, in a shuffled order
    order = list(reversed(events[::2])) + events[1::2]
    results = await asyncio.gather(*(server.post(body_of(e)) for e in order))
    assert all(status == 200 for status, _ in results)
    await server.idle()
    counts = await server.counts()
    assert counts["inbox_handled"] == len(taps)
    # Serializability: replaying the events in the order the server handled them (the outbox order, read from
    # the real SQLite file) gives exactly the replies that reached the fake Graph API, and the stored state.
    with sqlite3.connect(server.app[SETTINGS].store_url.removeprefix("sqlite:///")) as db:
        rows = db.execute("SELECT key, message, status FROM outbox ORDER BY seq").fetchall()
    keys = [key for key, _, _ in rows]
    handled_order = list(dict.fromkeys(key.split("#")[0] for key in keys))
    assert sorted(handled_order) == sorted(e["message"]["mid"] for e in events)
    by_mid = {e["message"]["mid"]: (t, p) for e, (t, p) in zip(events, taps, strict=True)}
    snapshot, expected_texts = Snapshot(), []
    for mid in handled_order:
        text, payload = by_mid[mid]
        result = flow.step(snapshot, UserInput(text, payload), {"first_name": "Test", "last_name": "User"})
        snapshot = result.snapshot
        expected_texts.extend(r.text for r in result.replies)
    queued = [json.loads(m).get("text") or json.loads(m)["attachment"]["payload"].get("title") for _, m, _ in rows]
    assert queued == expected_texts
    # what reached the fake Graph API: every queued row but those the policy gate refused (repeated OTN requests)
    assert server.texts_to(USER) == [t for t, (_, _, status) in zip(queued, rows, strict=True) if status != "refused"]
    assert {status for _, _, status in rows} <= {"sent", "refused"}
    user = await server.app[STORE].load_user(USER)
    assert user is not None
    assert (user.state, user.tags) == (snapshot.state, set(snapshot.tags))
