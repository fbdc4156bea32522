"""`otnflow doctor` against the fake Graph API on loopback: a healthy setup passes, each broken one fails on the
right line with the fix."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.doctor import Doctor, Status, Verdict
from tests.conftest import APP_SECRET, PAGE_TOKEN, VERIFY_TOKEN, Server

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def live_env(monkeypatch: pytest.MonkeyPatch, fake_graph, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    _, graph_url = fake_graph
    for name in [n for n in os.environ if n.startswith("OTNFLOW_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OTNFLOW_APP_SECRET", APP_SECRET)
    monkeypatch.setenv("OTNFLOW_PAGE_TOKEN", PAGE_TOKEN)
    monkeypatch.setenv("OTNFLOW_VERIFY_TOKEN", VERIFY_TOKEN)
    monkeypatch.setenv("OTNFLOW_GRAPH_URL", graph_url)
    monkeypatch.setenv("OTNFLOW_STORE_URL", f"sqlite:///{tmp_path / 'doctor.sqlite3'}")
    return ROOT / "config.toml"


def by_check(verdicts: list[Verdict]) -> dict[str, Verdict]:
    return {v.check: v for v in verdicts}


async def test_healthy_setup_passes_every_check(live_env: Path, server: Server) -> None:
    verdicts = by_check(await Doctor(live_env, f"{server.url}/webhook").run())
    assert {name: v.status for name, v in verdicts.items()} == {
        "config": "ok",
        "flows": "ok",
        "secrets": "ok",
        "page token": "ok",
        "webhook fields": "ok",
        "OTN feature": "ok",
        "store": "ok",
        "webhook URL": "ok",
    }
    assert verdicts["page token"].detail == "belongs to the Page 'Test Page' (106000000000001)"
    assert PAGE_TOKEN not in "".join(str(v) for v in verdicts.values())  # secrets are never printed


def doctor_cli() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "doctor"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


async def test_cli_exit_status_is_zero_only_when_nothing_is_wrong(live_env: Path, fake_graph) -> None:  # type: ignore[no-untyped-def]
    healthy = await asyncio.to_thread(doctor_cli)  # the fake Graph API answers from this test's event loop
    assert healthy.returncode == 0, healthy.stdout
    assert "skip  webhook URL: pass --url" in healthy.stdout
    fake, _ = fake_graph
    fake.features.clear()
    broken = await asyncio.to_thread(doctor_cli)
    assert broken.returncode == 1
    assert "FAIL  OTN feature:" in broken.stdout
    assert broken.stdout.strip().endswith("doctor: 6 ok, 1 skipped, 1 to fix")  # skipped: no --url


async def test_invalid_page_token(live_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTNFLOW_PAGE_TOKEN", "EAAB-expired")
    verdicts = by_check(await Doctor(live_env, None).run())
    assert str(verdicts["page token"]) == (
        "FAIL  page token: Meta says the token is invalid or expired (code 190): generate a new Page access token in "
        "the Meta app's Messenger settings"
    )
    assert verdicts["webhook fields"].status == "skip"


async def test_user_token_where_a_page_token_belongs(
    live_env: Path, monkeypatch: pytest.MonkeyPatch, fake_graph
) -> None:  # type: ignore[no-untyped-def]
    fake, _ = fake_graph
    fake.user_tokens.add("EAAB-user")
    monkeypatch.setenv("OTNFLOW_PAGE_TOKEN", "EAAB-user")
    verdict = by_check(await Doctor(live_env, None).run())["page token"]
    assert verdict.status == "FAIL" and "this is a user access token, not a Page access token" in verdict.detail


async def test_missing_optins_subscription(live_env: Path, fake_graph) -> None:  # type: ignore[no-untyped-def]
    fake, _ = fake_graph
    fake.subscribed_apps[0]["subscribed_fields"] = ["messages", "messaging_postbacks"]
    verdict = by_check(await Doctor(live_env, None).run())["webhook fields"]
    assert str(verdict) == (
        "FAIL  webhook fields: the app is not subscribed to messaging_optins (every OTN opt-in, so every token, would "
        "be lost): add them in the app's Messenger > Webhooks settings"
    )


async def test_no_app_subscribed(live_env: Path, fake_graph) -> None:  # type: ignore[no-untyped-def]
    fake, _ = fake_graph
    fake.subscribed_apps.clear()
    verdict = by_check(await Doctor(live_env, None).run())["webhook fields"]
    assert verdict.status == "FAIL" and verdict.detail.startswith("no app is subscribed to the Page")


async def test_otn_not_granted(live_env: Path, fake_graph) -> None:  # type: ignore[no-untyped-def]
    fake, _ = fake_graph
    fake.features[:] = [{"feature": "one_time_notification", "status": "pending"}]
    verdict = by_check(await Doctor(live_env, None).run())["OTN feature"]
    assert verdict.status == "FAIL"
    assert "(one_time_notification: pending): request it in Page settings > Advanced Messaging" in verdict.detail


async def test_eu_page_with_otn_flows(live_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTNFLOW_POLICY_PAGE_IN_EU", "true")
    verdict = by_check(await Doctor(live_env, None).run())["OTN setting"]
    assert verdict.status == "FAIL" and "config.toml turns OTN off" in verdict.detail


async def test_missing_secrets_are_named_not_shown(live_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTNFLOW_APP_SECRET")
    monkeypatch.delenv("OTNFLOW_VERIFY_TOKEN")
    verdicts = by_check(await Doctor(live_env, "http://127.0.0.1:9/webhook").run())
    assert verdicts["config"].status is Status.OK  # the other checks still run
    assert str(verdicts["secrets"]) == (
        "FAIL  secrets: OTNFLOW_APP_SECRET, OTNFLOW_VERIFY_TOKEN not set: export them before `otnflow serve` "
        "(docs/going-live.md, step 3)"
    )  # all of them at once, not one per run
    assert verdicts["webhook URL"].status is Status.SKIP
    assert verdicts["page token"].status is Status.OK


async def test_unreachable_store(live_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("OTNFLOW_STORE_URL", f"sqlite:///{blocker}/store.sqlite3")
    verdict = by_check(await Doctor(live_env, None).run())["store"]
    assert verdict.status == "FAIL" and "sqlite store unreachable" in verdict.detail


async def test_webhook_url_with_another_verify_token(
    live_env: Path, monkeypatch: pytest.MonkeyPatch, server: Server
) -> None:
    monkeypatch.setenv("OTNFLOW_VERIFY_TOKEN", "not-the-servers")
    verdict = by_check(await Doctor(live_env, f"{server.url}/webhook").run())["webhook URL"]
    assert verdict.status == "FAIL" and "refused the verify token" in verdict.detail


async def test_webhook_url_unreachable(live_env: Path) -> None:
    verdict = by_check(await Doctor(live_env, "http://127.0.0.1:9/webhook").run())["webhook URL"]
    assert verdict.status == "FAIL" and "unreachable" in verdict.detail
