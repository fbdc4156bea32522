"""The playground is never an open door: refused with a page token; in local mode its API answers only its own
page (token embedded in the page, same origin, a host no DNS rebinding can name, JSON only), and bad inputs are a
400 naming the field, never a 500."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.cli import main
from engine.config import load_settings
from engine.web import create_app
from tests.conftest import APP_SECRET, PAGE_TOKEN, VERIFY_TOKEN, Loopback, serve_on_loopback

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[Loopback]:
    settings = load_settings(
        ROOT / "config.toml",
        {"OTNFLOW_STORE_URL": f"sqlite:///{tmp_path / 'pg.sqlite3'}", "OTNFLOW_LOG_LEVEL": "ERROR"},
    )
    served = await serve_on_loopback(create_app(settings))
    yield served
    await served.runner.cleanup()


async def page_token(session: aiohttp.ClientSession, url: str) -> str:
    """The token the page embeds ('' when it embeds none)."""
    async with session.get(f"{url}/playground") as r:
        assert r.status == 200
        found = re.search(r'<meta name="playground-token" content="([^"]+)">', await r.text())
    return found.group(1) if found else ""


def test_a_page_token_refuses_the_playground(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    env = {"OTNFLOW_PAGE_TOKEN": PAGE_TOKEN, "OTNFLOW_APP_SECRET": APP_SECRET, "OTNFLOW_VERIFY_TOKEN": VERIFY_TOKEN}
    settings = load_settings(ROOT / "config.toml", {**env, "OTNFLOW_STORE_URL": f"sqlite:///{tmp_path / 'l.db'}"})
    with pytest.raises(ValueError, match="the playground is a local tool"):
        create_app(settings, playground=True)
    assert not any(r.resource.canonical.startswith("/playground") for r in create_app(settings).router.routes())

    for name, value in {**env, "OTNFLOW_STORE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}.items():
        monkeypatch.setenv(name, value)
    assert main(["serve", "--playground", "--config", str(ROOT / "config.toml")]) == 2
    err = capsys.readouterr().err
    assert "otnflow: the playground is a local tool and is not served with OTNFLOW_PAGE_TOKEN set" in err


async def test_the_api_answers_only_its_own_page(local: Loopback) -> None:
    async with aiohttp.ClientSession() as session:
        token = await page_token(session, local.url)
        assert len(token) >= 40
        async with session.get(f"{local.url}/playground") as r:
            assert r.headers["Cache-Control"] == "no-store"  # the token is not kept in a shared cache
            assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]  # nor the page framed
        say = f"{local.url}/playground/api/say"
        good = {"X-Playground-Token": token}
        refused: list[tuple[dict[str, str], Any]] = [
            ({}, {"json": {"user": "eve", "text": "hi"}}),  # no token
            ({"X-Playground-Token": "guess"}, {"json": {"user": "eve", "text": "hi"}}),
            ({"X-Playground-Token": "\udcff"}, {"json": {"user": "eve", "text": "hi"}}),  # not UTF-8
            # the "simple" cross-site request a form or fetch(no-cors) can send without a preflight
            ({**good, "Content-Type": "text/plain"}, {"data": '{"user": "eve", "text": "hi"}'}),
            ({**good, "Origin": "http://evil.example"}, {"json": {"user": "eve", "text": "hi"}}),
            ({**good, "Origin": "null"}, {"json": {"user": "eve", "text": "hi"}}),
            ({**good, "Sec-Fetch-Site": "cross-site"}, {"json": {"user": "eve", "text": "hi"}}),
            ({**good, "Host": "rebound.evil.example:8080"}, {"json": {"user": "eve", "text": "hi"}}),
        ]
        for headers, body in refused:
            if "\udcff" in headers.get("X-Playground-Token", ""):
                continue  # aiohttp's client cannot send it; the raw-bytes case is in the next test
            async with session.post(say, headers=headers, **body) as r:
                assert r.status == 403, headers
                assert "error" in await r.json()
        for path in ("state?user=alice", "diagram?user=alice"):
            async with session.get(f"{local.url}/playground/api/{path}") as r:
                assert r.status == 403
            async with session.get(f"{local.url}/playground/api/{path}", headers={**good, "Host": "a.example"}) as r:
                assert r.status == 403
        async with session.get(f"{local.url}/playground", headers={"Host": "rebound.evil.example"}) as r:
            assert r.status == 403  # a rebound name cannot even read the page (and its token)

        async with session.get(f"{local.url}/playground/api/state?user=eve", headers=good) as r:
            assert (await r.json())["transcript"] == []  # nothing refused above reached the flow
        own = {**good, "Origin": local.url, "Sec-Fetch-Site": "same-origin"}
        async with session.post(say, headers=own, json={"user": "eve", "text": "hi"}) as r:
            assert r.status == 200
            assert [e["from"] for e in (await r.json())["transcript"]] == ["user", "bot"]
        for host in ("localhost", "[::1]:8080", "127.0.0.1"):
            async with session.get(f"{local.url}/playground/api/state", headers={**good, "Host": host}) as r:
                assert r.status == 200, host


async def test_a_header_that_is_not_utf8_is_refused_not_a_500(local: Loopback) -> None:
    import asyncio

    port = int(local.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /playground/api/state HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Playground-Token: \xff\xfe\r\n"
        b"Connection: close\r\n\r\n"
    )
    status = (await reader.readline()).split()[1]
    writer.close()
    assert status == b"403"


@pytest.mark.parametrize(
    ("action", "body", "field"),
    [
        ("advance", {"hours": "inf"}, "hours"),
        ("advance", {"hours": -5}, "hours"),
        ("advance", {"days": -1}, "days"),
        ("advance", {"days": 1e308}, "days"),
        ("advance", {"hours": None}, "hours"),
        ("notify", {"topic": "restock", "vars": 5}, "vars"),
        ("notify", {"topic": "restock", "vars": {"product": [1]}}, "vars.product"),
        ("notify", {"topic": 7}, "topic"),
        ("notify", {"topic": "restock", "to": "everyone"}, "to"),
        ("say", {"text": {"a": 1}}, "text"),
        ("say", {"user": 5, "text": "hi"}, "user"),
        ("tap", {"title": "x", "postback": "yes"}, "postback"),
        ("flow", {"flow": ["wine_shop"]}, "flow"),
    ],
)
async def test_bad_inputs_are_a_400_naming_the_field(local: Loopback, action: str, body: Any, field: str) -> None:
    async with aiohttp.ClientSession() as session:
        headers = {"X-Playground-Token": await page_token(session, local.url)}
        async with session.post(f"{local.url}/playground/api/{action}", json=body, headers=headers) as r:
            assert r.status == 400, await r.text()
            answer = await r.json()
        assert answer["field"] == field
        assert f"'{field}'" in answer["error"]


async def test_bodies_that_are_not_json_objects_are_a_400(local: Loopback) -> None:
    async with aiohttp.ClientSession() as session:
        headers = {"X-Playground-Token": await page_token(session, local.url), "Content-Type": "application/json"}
        for raw in (b"[1, 2]", b'"advance"', b"5", b"{", b'{"hours": Infinity}', b'{"hours": NaN}', b"\xff"):
            async with session.post(f"{local.url}/playground/api/advance", data=raw, headers=headers) as r:
                assert r.status == 400, raw
                assert "body" in (await r.json())["error"]
        async with session.post(f"{local.url}/playground/api/fly", json={}, headers=headers) as r:
            assert r.status == 404
        async with session.post(f"{local.url}/playground/api/advance", json={"hours": 2}, headers=headers) as r:
            assert r.status == 200
            assert (await r.json())["transcript"][-1]["text"] == "clock moved 2 h forward"
