"""Hostile and odd webhook bodies on a real server on loopback (issue 12 §2): never a 500, whole-body problems
answered 400/403/413, and inside a signed body each event judged alone: good ones stored and answered, broken ones
kept in the dead-letter table, counted and listed, kinds otnflow does not act on skipped."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from urllib.parse import urlsplit

import pytest

from engine.cli import main as cli_main
from engine.messenger.signature import sign
from engine.web.keys import SETTINGS, STORE
from tests.conftest import APP_SECRET, T0, Server, body_of, message_event

USER = "7100000000000001"
PAGE = "106000000000001"


async def raw_post(server: Server, body: bytes, signature: bytes) -> int:
    """POST /webhook over a bare socket, so the header can carry bytes an HTTP client would refuse to send."""
    url = urlsplit(server.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    writer.write(
        b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"X-Hub-Signature-256: " + signature + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    return int(status_line.split()[1])


@pytest.mark.parametrize("header", ["sha256=é".encode(), b"sha256=\xff\xfe", "sha256=🍾".encode()])
async def test_a_non_ascii_signature_header_is_403_not_500(server: Server, header: bytes) -> None:
    body = json.dumps(body_of(message_event(USER, "m_1", 1, text="hi"))).encode()
    assert await raw_post(server, body, header) == 403
    assert await raw_post(server, body, sign(body, APP_SECRET).encode()) == 200  # and the server keeps answering


async def metric(server: Server, line_start: str) -> float:
    _, text = await server.get("/metrics")
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(line_start)]
    return sum(values)


async def test_one_broken_event_does_not_lose_the_good_one_beside_it(server: Server) -> None:
    good = message_event(USER, "m_good", 1, text="hi")
    broken = {"sender": {"id": USER}, "recipient": {"id": PAGE}, "timestamp": T0, "message": {"text": "no mid"}}
    body = body_of(broken, good)
    for _ in range(2):  # Meta's retry of the same body changes nothing
        assert await server.post(body) == (200, "EVENT_RECEIVED")
    await server.idle()
    counts = await server.counts()
    assert (counts["inbox_handled"], counts["rejected"]) == (1, 1)
    assert len(server.texts_to(USER)) == 1  # the good event got its answer
    (dead,) = await server.app[STORE].rejected_events()
    assert dead.where == "entry[0].messaging[0]" and dead.kind == "message"
    assert dead.reason == "entry[0].messaging[0].message.mid must be a non-empty string, not missing"
    assert json.loads(dead.body) == broken
    assert await metric(server, 'otnflow_events_rejected_total{kind="message"}') == 2  # counted per receipt


@pytest.mark.parametrize(
    ("field", "literal", "reason"),
    [
        ("timestamp", "1" + "0" * 30, "outside 2004..9999"),
        ("timestamp", "true", "must be an integer (ms), not a boolean"),
        ("timestamp", "-1", "outside 2004..9999"),
        ("timestamp", "1e400", "must be an integer (ms), not float inf"),
        ("sender", '{"id": "7100\'; DROP TABLE users;--"}', "sender.id must be digits"),
        ("sender", '{"id": 1' + "0" * 40 + "}", "sender.id must be digits"),
    ],
)
async def test_values_outside_sane_ranges_are_dead_letters_never_500(
    server: Server, field: str, literal: str, reason: str
) -> None:
    broken = message_event(USER, "m_bad", 0, text="x")
    broken[field] = "@@"
    raw = json.dumps(body_of(broken, message_event(USER, "m_ok", 1, text="hi"))).replace('"@@"', literal).encode()
    assert await server.post(None, raw=raw) == (200, "EVENT_RECEIVED")
    await server.idle()
    (dead,) = await server.app[STORE].rejected_events()
    assert reason in dead.reason
    assert (await server.counts())["inbox_handled"] == 1


async def test_lone_surrogates_in_text_and_mid_are_stored_and_answered(server: Server) -> None:
    raw = json.dumps(body_of(message_event(USER, "m_\ud83d", 1, text="hi \ud83d"))).encode()  # ASCII, \ud83d escaped
    assert b"\\ud83d" in raw
    assert await server.post(None, raw=raw) == (200, "EVENT_RECEIVED")
    await server.idle()
    assert (await server.counts())["inbox_handled"] == 1
    assert len(server.texts_to(USER)) == 1
    with sqlite3.connect(server.app[SETTINGS].store_url.removeprefix("sqlite:///")) as db:
        (body,) = db.execute("SELECT body FROM inbox").fetchone()
    assert json.loads(body)["message"] == {"mid": "m_\ufffd", "text": "hi \ufffd"}


async def test_json_nested_100k_deep_is_400_and_the_server_keeps_answering(server: Server) -> None:
    raw = b'{"object":"page","entry":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    status, text = await server.post(None, raw=raw)
    assert (status, text) == (400, "malformed webhook body: body is not JSON we can read: nested too deeply")
    assert (await server.get("/healthz"))[0] == 200


async def test_real_events_meta_sends_are_never_refused(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    """Delivery receipts without a timestamp, checkbox-plugin opt-ins (user_ref, no sender), Page-level events
    without a sender: skipped and counted; the text batched with them is answered."""
    caplog.set_level(logging.INFO, logger="otnflow.webhook")
    delivery = {"sender": {"id": USER}, "recipient": {"id": PAGE}, "delivery": {"mids": ["m_x"], "watermark": T0}}
    checkbox = {"recipient": {"id": PAGE}, "timestamp": T0, "optin": {"ref": "cart", "user_ref": "u-123"}}
    block = {
        "recipient": {"id": PAGE},
        "timestamp": T0,
        "policy_enforcement": {"action": "block", "reason": "The bot violated our Platform Policies"},
    }
    roles = {"recipient": {"id": PAGE}, "timestamp": T0, "app_roles": {"123456789": ["automation"]}}
    text = message_event(USER, "m_text", 1, text="hi")
    for _ in range(2):
        assert await server.post(body_of(delivery, checkbox, block, roles, text)) == (200, "EVENT_RECEIVED")
    await server.idle()
    assert (await server.counts())["inbox_handled"] == 1
    assert (await server.counts())["rejected"] == 0
    assert len(server.texts_to(USER)) == 1
    for kind in ("delivery", "optin_user_ref", "policy_enforcement", "app_roles"):
        assert await metric(server, f'otnflow_events_skipped_total{{reason="{kind}"}}') == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        warnings.count(
            f"Meta reported a policy enforcement on page {PAGE}: action 'block', reason: The bot violated our Platform "
            "Policies (see the Page's Support Inbox; a blocked Page cannot send)"
        )
        == 2
    )
    first_seen = [r.getMessage() for r in caplog.records if "are not acted on" in r.getMessage()]
    assert len(first_seen) == 4  # one line per kind, the first time only


async def test_a_new_kind_is_counted_as_unknown_and_named_once_in_the_log(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="otnflow.webhook")
    kinds = [
        {"sender": {"id": USER}, "recipient": {"id": PAGE}, "timestamp": T0, f"new_kind_{i}": {}} for i in range(3)
    ]
    for _ in range(2):
        assert (await server.post(body_of(*kinds)))[0] == 200
    assert await metric(server, 'otnflow_events_skipped_total{reason="unknown"}') == 6
    named = [r.getMessage() for r in caplog.records if "are not acted on" in r.getMessage()]
    assert sorted(named) == [
        f"webhook events of kind 'new_kind_{i}' are not acted on: skipped (otnflow_events_skipped_total)"
        for i in range(3)
    ]


async def test_otnflow_inbox_rejected_lists_the_dead_letters(
    server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = message_event(USER, "m_bad", 0, text="x")
    broken["timestamp"] = -1
    assert (await server.post(body_of(broken)))[0] == 200
    settings = server.app[SETTINGS]
    monkeypatch.setenv("OTNFLOW_STORE_URL", settings.store_url)
    for name in ("OTNFLOW_PAGE_TOKEN", "OTNFLOW_APP_SECRET", "OTNFLOW_VERIFY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    capsys.readouterr()
    code = await asyncio.to_thread(cli_main, ["inbox", "--rejected", "--config", str(settings.root / "config.toml")])
    out = capsys.readouterr().out
    assert code == 0
    assert "entry[0].messaging[0].timestamp -1 is outside 2004..9999" in out
    assert '"timestamp":-1' in out
    code = await asyncio.to_thread(cli_main, ["inbox", "--config", str(settings.root / "config.toml")])
    assert "rejected: 1" in capsys.readouterr().out
