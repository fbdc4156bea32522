"""A campaign killed with SIGKILL halfway and run again: every eligible user gets exactly one message and no token
is used twice, checked against the fake Graph API's own record. Also the CLI's summary and `otnflow stats`."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from engine.store import StepWrite, StoredEvent, Token, UserRecord
from engine.store.sqlite import SqliteStore
from tests.conftest import example_actions, live_env, wait_until

ROOT = Path(__file__).resolve().parents[2]
USERS = 240
YEAR_MS = 365 * 24 * 3_600_000


async def seed(path: Path, fake) -> None:  # type: ignore[no-untyped-def]
    """USERS wine lovers, each holding one restock token that the fake Graph API issued."""
    store = SqliteStore(path)
    await store.open()
    now = int(time.time() * 1000)
    try:
        for i in range(USERS):
            user_id = f"u{i:04d}"
            token = fake.issue_token(user_id, "otn:restock:sold_out:seed", now - 86_400_000)
            tags = {"likes_white"} if i % 2 else {"likes_red"}
            user = UserRecord(
                user_id=user_id,
                state="optin_thanks",
                tags=tags,
                flow="wine_shop",
                last_interaction_ms=now - 3 * 86_400_000,
                profile={"first_name": f"User{i}"},
            )
            await store.add_events(
                [StoredEvent(key=f"seed-{i}", user_id=user_id, page_id="page", timestamp=now, kind="optin", body="{}")]
            )
            await store.commit_step(
                StepWrite(
                    event_key=f"seed-{i}",
                    user=user,
                    tokens=[
                        Token(
                            token=token,
                            user_id=user_id,
                            topic="restock",
                            payload="otn:restock:sold_out:seed",
                            received_ms=now - 86_400_000,
                            expires_ms=now - 86_400_000 + YEAR_MS,
                            source_state="sold_out",
                        )
                    ],
                ),
                now,
            )
    finally:
        await store.close()


def otnflow(config: Path, graph_url: str, *args: str) -> subprocess.Popen[str]:
    env = live_env(graph_url)
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", *args, "--config", str(config)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_campaign_killed_halfway_then_rerun_sends_each_user_exactly_one(tmp_path: Path, fake_graph) -> None:  # type: ignore[no-untyped-def]
    fake, graph_url = fake_graph
    fake.clock = lambda: int(time.time() * 1000)  # Meta's rules on: unknown, used or expired tokens are refused
    fake.delay = 0.01
    await seed(tmp_path / "store.sqlite3", fake)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[flows]\ndir = "{ROOT / "flows"}"\ntemplates = "{ROOT / "templates"}"\n{example_actions()}'
        f'[store]\nurl = "sqlite:///{tmp_path / "store.sqlite3"}"\n'
        '[notify]\nconcurrency = 16\nrate_per_second = 300.0\nclaim_seconds = 1.5\n[log]\nlevel = "WARNING"\n'
    )
    first = otnflow(config, graph_url, "notify", "restock", "--var", "product=Sauvignon 2024")
    try:
        await wait_until(lambda: len(fake.sent) >= USERS // 3, timeout=30, what="a third of the campaign")
    finally:
        first.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.wait, 10)
    assert len(fake.sent) < USERS, "the kill came too late to test anything"

    second = otnflow(config, graph_url, "notify", "restock", "--var", "product=Sauvignon 2024")
    out, err = await asyncio.to_thread(second.communicate, None, 60)
    assert second.returncode == 0, err

    per_user = Counter(m.token_user for m in fake.sent)
    assert set(per_user) == {f"u{i:04d}" for i in range(USERS)}  # every eligible user...
    assert max(per_user.values()) == 1  # ...exactly one message
    tokens = Counter(fake.tokens_used())
    assert len(tokens) == USERS and max(tokens.values()) == 1  # no token accepted twice
    # the summary table of the resumed run
    assert "delivered" in out and "restock-" in out
    delivered = int(next(line.split()[-1] for line in out.splitlines() if line.startswith("delivered ")))
    assert delivered == USERS  # the resumed run counts the first run's deliveries too
    # segmented texts: white lovers got the white variant
    white = next(m for m in fake.sent if m.token_user == "u0001")
    assert white.body["message"]["text"].startswith("The Sauvignon 2024 is back, User1! Crisp")

    stats = otnflow(config, graph_url, "stats")
    table, _ = await asyncio.to_thread(stats.communicate, None, 30)
    header, row, unsubscribed = table.strip().splitlines()
    assert unsubscribed == "unsubscribed users: 0"
    assert header.split() == [
        "topic",
        "requests",
        "optins",
        "optin_rate",
        "deliveries",
        "re_requests",
        "tokens_held",
        "holders",
        "tokens_expiring_soon",
    ]
    assert row.split()[0] == "restock" and row.split()[4] == str(USERS)
