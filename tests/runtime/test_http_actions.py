"""HTTP actions through the real path: config.toml declares them, a state runs one, otnflow calls a stock service on
loopback (tests/stock_service.py) through the app's session, and the answer picks the way on. Retries after 5xx
and connection errors, never after a 4xx; the idempotency key on every attempt; secrets never in the logs."""

from __future__ import annotations

import logging
import random
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.actions import ActionContext, ActionFailed
from engine.config import ConfigError, load_settings
from engine.http_actions import HttpAction, HttpActionError, parse_http_action
from engine.runtime.http_actions import HttpActionCaller
from engine.testing.harness import Bot
from tests.stock_service import KEY, StockService

ROOT = Path(__file__).parents[2]
SECRET = KEY  # the bearer key: it must never reach a log line

STOCK_ACTION = {
    "kind": "http",
    "url": "{{ env.STOCK_API_URL }}/stock/{{ args.sku }}",
    "headers": {"Authorization": "Bearer {{ env.STOCK_API_KEY }}"},
    "args": ["sku"],
    "env": ["STOCK_API_URL", "STOCK_API_KEY"],
    "timeout_seconds": 1.0,
    "retries": 2,
    "backoff_seconds": 0.001,
    "result": "$.available",
}


def context(sku: str = "RIOJA19", key: str = "evt-1#action0") -> ActionContext:
    return ActionContext(user_id="rob", tags=frozenset(), vars={}, idempotency_key=key, args={"sku": sku})


def caller(action: HttpAction, session: aiohttp.ClientSession, env: dict[str, str], **kwargs: Any) -> HttpActionCaller:
    async def no_wait(_: float) -> None:
        return None

    return HttpActionCaller(action, session, env, sleep=no_wait, rng=random.Random(7), **kwargs)


# -- the declaration --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        ({"url": "{{ env.STOCK_KEY }}/x"}, ("url",), "reads env.STOCK_KEY, which the action's `env` list does not"),
        ({"url": "http://x/{{ args.id }}"}, ("url",), "reads args.id, which the action's `args` list does not"),
        ({"body": {"who": "{{ user }}"}}, ("body", "who"), "reads unknown name 'user'"),
        ({"headers": {"X": "{{ env.X "}}, ("headers", "X"), "headers.X:"),
        ({"env": ["OTNFLOW_PAGE_TOKEN"]}, ("env",), "otnflow's own secret"),
        ({"method": "FETCH"}, ("method",), "method must be one of"),
        ({"retries": -1}, ("retries",), "retries must be between 0 and 10"),
        ({"result": "$.["}, ("result",), "result: not a JSONPath"),
        ({"timeout": 3}, ("timeout",), "unknown key 'timeout'"),
    ],
)
def test_a_declaration_that_cannot_work_names_its_key(
    change: dict[str, Any], key: tuple[str, ...], message: str
) -> None:
    with pytest.raises(HttpActionError) as caught:
        parse_http_action("check_stock", {**STOCK_ACTION, **change})
    assert caught.value.key == key
    assert message in str(caught.value)


def test_config_toml_reports_an_http_action_problem_with_its_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[actions]\nhold = "shop:hold"\n\n[actions.check_stock]\nkind = "http"\nurl = "http://stock/{{ args.sku }}"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config, {})
    assert str(caught.value).startswith(f"config: {config}:6: actions.check_stock: url reads args.sku")
    config.write_text('[actions.check_stock]\nurl = "http://stock"\n')
    with pytest.raises(ConfigError, match=r":1: actions.check_stock: a table declares an HTTP action: kind"):
        load_settings(config, {})


def test_only_the_named_environment_variables_are_kept_and_the_checker_knows_the_arguments() -> None:
    settings = load_settings(ROOT / "config.toml", {"STOCK_API_KEY": SECRET, "HOME": "/root"})
    assert dict(settings.action_env) == {"STOCK_API_KEY": SECRET}
    assert SECRET not in repr(settings)
    assert settings.action_signatures()["check_stock"] == frozenset({"sku"})
    assert settings.action_signatures()["hold_pair"] == frozenset({"size"})


# -- the calls ----------------------------------------------------------------------------------------------------
async def test_a_call_sends_the_key_and_the_secret_header_and_picks_the_result() -> None:
    action = parse_http_action("check_stock", STOCK_ACTION)
    async with StockService.running() as stock, aiohttp.ClientSession() as session:
        call = caller(action, session, {"STOCK_API_URL": stock.url, "STOCK_API_KEY": SECRET, "OTHER": "x"})
        assert await call(context("RIOJA19")) == 12
        assert await call(context("SAUV24")) == 0
    sent = stock.received[0]
    assert (sent.method, sent.path) == ("GET", "/stock/RIOJA19")
    assert sent.headers["Authorization"] == f"Bearer {SECRET}"
    assert sent.headers["Idempotency-Key"] == "evt-1#action0"


async def test_5xx_answers_are_retried_with_the_same_key_and_4xx_are_not(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    action = parse_http_action("check_stock", STOCK_ACTION)
    async with StockService.running(failures=2) as stock, aiohttp.ClientSession() as session:
        env = {"STOCK_API_URL": stock.url, "STOCK_API_KEY": SECRET}
        assert await caller(action, session, env)(context(key="evt-9#action0")) == 12  # third attempt
        assert [r.headers["Idempotency-Key"] for r in stock.received] == ["evt-9#action0"] * 3
        stock.received.clear()
        stock.failures = 3  # one more than the retries allow
        with pytest.raises(ActionFailed, match=r"GET 127\.0\.0\.1 failed 3 time\(s\), last: HTTP 503"):
            await caller(action, session, env)(context())
        assert len(stock.received) == 3
        stock.received.clear()
        with pytest.raises(ActionFailed, match="answered HTTP 401"):  # a wrong key: asking again changes nothing
            await caller(action, session, {**env, "STOCK_API_KEY": "wrong-key"})(context())
        assert len(stock.received) == 1
        with pytest.raises(ActionFailed, match="answered HTTP 404"):
            await caller(action, session, env)(context("NOPE"))
    assert SECRET not in caplog.text


async def test_connection_errors_are_retried_and_an_unset_variable_fails_at_once() -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    action = parse_http_action("check_stock", STOCK_ACTION)
    async with aiohttp.ClientSession() as session:
        env = {"STOCK_API_URL": f"http://127.0.0.1:{port}", "STOCK_API_KEY": SECRET}
        with pytest.raises(ActionFailed, match=r"failed 3 time\(s\), last: ClientConnectorError"):
            await caller(action, session, env)(context())
        with pytest.raises(
            ActionFailed, match="cannot build the request: 'dict object' has no attribute 'STOCK_API_URL'"
        ):
            await caller(action, session, {"STOCK_API_KEY": SECRET})(context())


async def test_a_slow_service_is_a_timeout_and_a_result_path_that_matches_nothing_a_failure() -> None:
    slow = parse_http_action("check_stock", {**STOCK_ACTION, "timeout_seconds": 0.05, "retries": 0})
    missing = parse_http_action("check_stock", {**STOCK_ACTION, "result": "$.count"})
    async with StockService.running(delay_seconds=0.5) as stock, aiohttp.ClientSession() as session:
        env = {"STOCK_API_URL": stock.url, "STOCK_API_KEY": SECRET}
        with pytest.raises(ActionFailed, match="last: TimeoutError"):
            await caller(slow, session, env)(context())
        stock.delay_seconds = 0
        with pytest.raises(ActionFailed, match=r"result \$\.count matched nothing"):
            await caller(missing, session, env)(context())


# -- through the whole bot ------------------------------------------------------------------------------------------
async def test_the_wine_shop_checks_stock_over_http_and_metrics_and_logs_say_how_it_went(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with StockService.running(failures=1) as stock:
        env = {"STOCK_API_URL": stock.url, "STOCK_API_KEY": SECRET}
        async with Bot.start(config=ROOT / "config.toml", action_env=env) as bot:
            rob = bot.user("rob", first_name="Rob")
            await rob.says("hi")
            await rob.taps("Red")
            await rob.taps("Buy a bottle")  # a 503 first, then 12 bottles
            assert (
                rob.last_reply.text
                == "Lovely choice! 12 left of the Rioja Reserva 2019: here is your link to check out."
            )
            assert [r.headers["Idempotency-Key"] for r in stock.received] == [
                bot.action_calls[0].context.idempotency_key
            ] * 2
            stock.stock["RIOJA19"] = 0
            await rob.taps("Back to the menu")
            await rob.taps("Red")
            await rob.taps("Buy a bottle")
            assert rob.state == "bottle_gone"
            stock.key = "rotated"  # our key is refused now: a 401, no retry, the failure state
            await rob.taps("Menu")
            await rob.taps("Red")
            await rob.taps("Buy a bottle")
            assert rob.state == "stock_unknown"
            assert [str(c.outcome) for c in bot.action_calls] == ["success", "success", "failure"]
            async with bot.session.get(f"{bot.url}/metrics") as response:
                metrics = await response.text()
    assert 'otnflow_actions_total{action="check_stock",outcome="success"} 2.0' in metrics
    assert 'otnflow_actions_total{action="check_stock",outcome="failure"} 1.0' in metrics
    assert 'otnflow_action_seconds_count{action="check_stock"} 3.0' in metrics
    assert "action 'check_stock': GET 127.0.0.1 answered HTTP 401" in caplog.text
    assert SECRET not in caplog.text


async def test_a_cookie_one_user_s_call_was_given_never_goes_out_with_another_user_s_call() -> None:
    """The app's one HTTP session serves every user's actions and the Graph API: a cookie a service sets while
    answering for one user (a session id) must not be kept and sent with the next user's call."""
    async with StockService.running(set_cookie="shop_session=rob-only; Path=/") as stock:
        # by name: aiohttp's cookie jar never keeps cookies of a bare IP address
        env = {"STOCK_API_URL": stock.url.replace("127.0.0.1", "localhost"), "STOCK_API_KEY": SECRET}
        async with Bot.start(config=ROOT / "config.toml", action_env=env) as bot:
            for name in ("rob", "ann"):
                user = bot.user(name)
                await user.says("hi")
                await user.taps("Red")
                await user.taps("Buy a bottle")
    assert len(stock.received) == 2
    assert [r.headers.get("Cookie") for r in stock.received] == [None, None]
