"""A token belongs to the request the user accepted: a notification reaches a token only when every variable of
that token's request has the same value in it. Through the harness (the wine shop: one asker of the Sauvignon,
one of the Rioja), the admin API, the playground's notify and the `otnflow` command in a subprocess."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.runtime.campaigns import CampaignError
from engine.store import StepWrite, StoredEvent, Token, UserRecord
from engine.store.sqlite import SqliteStore
from engine.testing.harness import API_TOKEN, Bot, BotUser
from engine.web.keys import STORE
from tests.conftest import example_actions, live_env, served_playground

ROOT = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
SAUVIGNON, RIOJA = "Sauvignon 2024", "Rioja Gran Reserva 2015"
YEAR_MS = 365 * 24 * 3_600_000


async def asks_for(bot: Bot, name: str, product: str) -> BotUser:
    user = bot.user(name, first_name=name.title())
    await user.says("hi")
    if product == SAUVIGNON:
        await user.taps("White")
    else:
        await user.taps("Red")
        await user.taps("Older vintages")
    await user.opts_in("restock")
    return user


async def test_the_token_keeps_its_request_and_a_notification_reaches_only_that_request(bot: Bot) -> None:
    alice, rob = await asks_for(bot, "alice", SAUVIGNON), await asks_for(bot, "rob", RIOJA)
    (token,) = rob.tokens("restock")
    assert token.request_vars == {"product": RIOJA}
    assert token.title == f"Tell me when the {RIOJA} is back"
    bot.clock.advance(hours=25)

    report = await bot.notify("restock", product=SAUVIGNON, price="19")  # price: only a template variable
    assert (report.eligible, report.delivered) == (1, 1)
    assert [m.token_user for m in bot.fake.sent if m.otn_token] == ["alice"]
    assert len(rob.tokens("restock")) == 1  # the Rioja asker's only token is not spent on the wrong wine

    report = await bot.notify("restock", product=RIOJA)
    assert (report.eligible, report.delivered) == (1, 1)
    assert rob.last_reply.text.startswith(f"The {RIOJA} is back!")
    assert alice.last_reply.is_notification and SAUVIGNON in alice.last_reply.text
    assert bot.fake.rejected == []


async def test_a_token_for_one_request_does_not_stop_a_request_about_another(bot: Bot) -> None:
    alice = await asks_for(bot, "alice", SAUVIGNON)
    bot.clock.advance(hours=25)  # past the anti-nagging period
    await alice.says("menu")
    await alice.taps("Red")
    replies = await alice.taps("Older vintages")
    assert replies[-1].otn_topic == "restock" and replies[-1].text == f"Tell me when the {RIOJA} is back"
    await alice.opts_in("restock")
    assert sorted(t.request_vars["product"] for t in alice.tokens("restock")) == [RIOJA, SAUVIGNON]


async def test_a_notification_without_the_request_variable_or_with_a_value_nobody_holds_does_not_start(
    bot: Bot,
) -> None:
    for name in ("a1", "a2"):
        await asks_for(bot, name, SAUVIGNON)
    await asks_for(bot, "r1", RIOJA)
    held = f'product: "{SAUVIGNON}" (2), "{RIOJA}" (1)'
    with pytest.raises(CampaignError) as missing:
        await bot.notify("restock")
    assert held in str(missing.value) and "--var product=..." in str(missing.value)
    assert "--var" not in missing.value.api_message and '"vars": {"product": ...}' in missing.value.api_message
    with pytest.raises(CampaignError) as unheld:
        await bot.notify("restock", product="Chablis 2022")
    assert f'nobody holds a request for product "Chablis 2022". Held: {held}' in str(unheld.value)
    assert not [m for m in bot.fake.sent if m.otn_token]
    assert await bot.app[STORE].campaigns_by_prefix("restock") == []


async def test_dry_run_counts_the_audience_per_variant_and_sends_and_claims_nothing(bot: Bot) -> None:
    await asks_for(bot, "wendy", SAUVIGNON)  # likes_white: the white variant
    bea = bot.user("bea")
    await bea.says("hi")
    await bea.taps("Red")
    await bea.taps("Whites too?")  # likes both: the default variant, asked about the Sauvignon
    await bea.opts_in("restock")
    await asks_for(bot, "rob", RIOJA)
    sent = len(bot.fake.sent)

    audience = await bot.dry_run("restock", product=SAUVIGNON)
    assert [(v.when, v.users) for v in audience.variants] == [
        ("likes_white and not likes_red", 1),
        ("likes_red and not likes_white", 0),
        ("", 1),
    ]
    assert audience.users == 2
    assert len(bot.fake.sent) == sent
    tokens = [t for u in ("wendy", "bea", "rob") for t in await bot.app[STORE].tokens(u)]
    assert {t.status for t in tokens} == {"valid"}
    assert await bot.app[STORE].campaigns_by_prefix("restock") == []


async def test_api_refuses_with_the_held_values_worded_for_the_api_and_dry_runs(bot: Bot) -> None:
    await asks_for(bot, "alice", SAUVIGNON)
    await asks_for(bot, "rob", RIOJA)
    async with bot.session.post(f"{bot.url}/api/notify", json={"topic": "restock"}, headers=AUTH) as r:
        assert r.status == 400
        error = (await r.json())["error"]
    assert f'product: "{RIOJA}" (1), "{SAUVIGNON}" (1)' in error  # most held first, then by value
    assert "--var" not in error and '"vars": {"product": ...}' in error
    body = {"topic": "restock", "vars": {"product": "Chablis"}}
    async with bot.session.post(f"{bot.url}/api/notify", json=body, headers=AUTH) as r:
        assert r.status == 400
        assert 'nobody holds a request for product "Chablis"' in (await r.json())["error"]
    body = {"topic": "restock", "vars": {"product": RIOJA}, "dry_run": True}
    async with bot.session.post(f"{bot.url}/api/notify", json=body, headers=AUTH) as r:
        assert r.status == 200
        audience = await r.json()
    assert audience["dry_run"] is True and audience["users"] == 1
    assert [v["users"] for v in audience["variants"]] == [0, 1, 0]
    assert audience["requests"] == [{"vars": {"product": RIOJA}, "holders": 1}]
    assert not [m for m in bot.fake.sent if m.otn_token]
    async with bot.session.get(f"{bot.url}/api/stats", headers=AUTH) as r:
        stats = await r.json()
    assert stats["restock"]["holders"] == 2
    assert sorted(stats["restock"]["by_request"], key=str) == sorted(
        [{"vars": {"product": SAUVIGNON}, "holders": 1}, {"vars": {"product": RIOJA}, "holders": 1}], key=str
    )


async def test_playground_notify_follows_the_same_rules(tmp_path: Path) -> None:
    async with served_playground(tmp_path) as playground:

        async def act(action: str, **body: object) -> tuple[int, dict[str, object]]:
            return await playground.act(action, user="pat", **body)

        await act("say", text="hi")
        _, state = await act("tap", title="White", payload="WHITE")
        request = next(e for e in state["transcript"] if e.get("kind") == "otn_request")  # type: ignore[attr-defined]
        _, state = await act("optin", payload=request["otn_payload"])
        assert state["tokens"][0]["about"] == {"product": SAUVIGNON}  # type: ignore[index]
        status, body = await act("notify", topic="restock", vars={"product": RIOJA})
        assert status == 400
        assert body["error"] == (
            f'topic \'restock\': nobody holds a request for product "{RIOJA}". Held: product: "{SAUVIGNON}" (1)'
        )
        status, body = await act("notify", topic="restock", vars={"product": SAUVIGNON})
        assert status == 200
        assert body["tokens"][0]["status"] == "spent"  # type: ignore[index]


async def seed(path: Path, holders: dict[str, str]) -> None:
    """Users holding a restock token, each for the product given."""
    store = SqliteStore(path)
    await store.open()
    now = int(time.time() * 1000)
    try:
        for user_id, product in holders.items():
            user = UserRecord(user_id=user_id, state="optin_thanks", flow="wine_shop", tags={"likes_white"})
            await store.add_events(
                [
                    StoredEvent(
                        key=f"seed-{user_id}", user_id=user_id, page_id="page", timestamp=now, kind="optin", body="{}"
                    )
                ]
            )
            token = Token(
                token=f"tok-{user_id}",
                user_id=user_id,
                topic="restock",
                payload="otn:restock:sold_out:seed",
                received_ms=now - 1_000,
                expires_ms=now + YEAR_MS,
                source_state="sold_out",
                request_vars={"product": product},
                title=f"Tell me when the {product} is back",
            )
            await store.commit_step(StepWrite(event_key=f"seed-{user_id}", user=user, tokens=[token]), now)
    finally:
        await store.close()


def otnflow(config: Path, graph_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args, "--config", str(config)],
        cwd=ROOT,
        env=live_env(graph_url),
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_cli_notify_lists_held_values_dry_runs_and_stats_shows_holders_per_request(
    tmp_path: Path,
    fake_graph,  # type: ignore[no-untyped-def]
) -> None:
    fake, graph_url = fake_graph
    await seed(tmp_path / "store.sqlite3", {"u1": SAUVIGNON, "u2": SAUVIGNON, "u3": SAUVIGNON, "u4": RIOJA})
    config = tmp_path / "config.toml"
    config.write_text(
        f'[flows]\ndir = "{ROOT / "flows"}"\ntemplates = "{ROOT / "templates"}"\n{example_actions()}'
        f'[store]\nurl = "sqlite:///{tmp_path / "store.sqlite3"}"\n[log]\nlevel = "WARNING"\n'
    )
    missing = await asyncio.to_thread(otnflow, config, graph_url, "notify", "restock")
    assert missing.returncode == 2
    assert f'product: "{SAUVIGNON}" (3), "{RIOJA}" (1)' in missing.stderr and "--var product=..." in missing.stderr
    unheld = await asyncio.to_thread(otnflow, config, graph_url, "notify", "restock", "--var", "product=Chablis")
    assert unheld.returncode == 2 and 'nobody holds a request for product "Chablis"' in unheld.stderr

    dry = await asyncio.to_thread(
        otnflow, config, graph_url, "notify", "restock", "--var", f"product={RIOJA}", "--dry-run"
    )
    assert dry.returncode == 0, dry.stderr
    rows = {line.rsplit("  ", 1)[0].strip(): line.split()[-1] for line in dry.stdout.splitlines() if "  " in line}
    assert rows["variant 1 (likes_white and not likes_red)"] == "1"
    assert rows["variant 3 (default)"] == "0" and rows["would receive"] == "1"
    assert dry.stdout.strip().endswith("dry run: nothing was sent or claimed")
    assert fake.sent == []

    stats = await asyncio.to_thread(otnflow, config, graph_url, "stats", "--json")
    figures = json.loads(stats.stdout)["restock"]
    assert figures["holders"] == 4 and figures["tokens_held"] == 4
    assert figures["by_request"] == [
        {"vars": {"product": SAUVIGNON}, "holders": 3},
        {"vars": {"product": RIOJA}, "holders": 1},
    ]
    table = (await asyncio.to_thread(otnflow, config, graph_url, "stats")).stdout
    assert f'restock product="{SAUVIGNON}": 3 holders' in table

    sent = await asyncio.to_thread(otnflow, config, graph_url, "notify", "restock", "--var", f"product={RIOJA}")
    assert sent.returncode == 0, sent.stderr
    assert [m.otn_token for m in fake.sent] == ["tok-u4"]
