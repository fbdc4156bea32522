"""How the harness starts a bot: what it makes once per process and reuses (engine/testing/reuse.py: the empty
store is the schema the store itself creates, each bot still starts on its own store, a store_dir keeps its users,
flows compile again when a file changes), and a client that never posts on a connection the server is closing."""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path

import pytest

from engine.store import open_store
from engine.testing import reuse
from engine.testing.harness import Bot
from engine.testing.reuse import COMPILED_FLOWS, scratch_folder
from engine.web.keys import STORE
from tests.conftest import SHOP_FLOW, example_bot

ROOT = Path(__file__).resolve().parents[2]


def schema(path: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT type, name, coalesce(sql, '') FROM sqlite_master ORDER BY type, name").fetchall()
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    return rows


async def test_a_bot_starts_on_its_own_copy_of_the_schema_the_store_creates(tmp_path: Path) -> None:
    made = open_store(f"sqlite:///{tmp_path / 'made.sqlite3'}")
    await made.open()
    await made.close()
    async with example_bot(store_dir=tmp_path / "first") as bot:
        assert schema(tmp_path / "first" / "harness.sqlite3") == schema(tmp_path / "made.sqlite3")
        await bot.user("alice", first_name="Alice").says("hi")
        assert bot.users["alice"].state is not None
    async with example_bot() as bot:  # a new bot: nobody from the test before
        assert await bot.app[STORE].load_user("alice") is None
        assert (await bot.user("alice", first_name="Alice").says("hi"))[0].text.startswith("Hi Alice!")


async def test_a_store_dir_started_on_again_keeps_its_users(tmp_path: Path) -> None:
    async with example_bot(store_dir=tmp_path) as bot:
        await bot.user("alice", first_name="Alice").says("hi")
        state = bot.users["alice"].state
    async with example_bot(store_dir=tmp_path) as bot:
        record = await bot.app[STORE].load_user("alice")
        assert record is not None and record.state == state


async def test_flows_compile_once_and_again_when_a_file_changes(tmp_path: Path) -> None:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "shop.toml").write_text(SHOP_FLOW)
    (tmp_path / "templates").mkdir()
    hello = tmp_path / "templates" / "hello.j2"
    hello.write_text("Good morning!")

    async def greeting() -> str:
        async with Bot.start(tmp_path / "flows", tmp_path / "templates", ROOT / "config.toml", flow="shop") as bot:
            return (await bot.user("ann").says("hi"))[0].text

    assert await greeting() == "Good morning!"
    compiled = COMPILED_FLOWS.compiled
    assert await greeting() == "Good morning!"
    assert COMPILED_FLOWS.compiled == compiled  # the second bot reused the first one's flows
    hello.write_text("Good evening, and welcome!")  # a template the flow reads changes: its size and mtime
    assert await greeting() == "Good evening, and welcome!"
    assert COMPILED_FLOWS.compiled == compiled + 1


async def test_a_step_after_the_loop_was_blocked_past_the_servers_keepalive_still_arrives() -> None:
    # A test that runs `otnflow stats` with subprocess.run blocks the loop for seconds under load: the server then
    # closes the harness's idle connection at the very moment the next step reuses it (Connection reset by peer).
    async with example_bot(server_read_timeout_seconds=0.2) as bot:
        alice = bot.user("alice", first_name="Alice")
        await alice.says("hi")
        time.sleep(0.4)  # the point: the loop is blocked, as by subprocess.run
        assert await alice.says("menu")


async def test_a_bots_store_is_a_sqlite_file_in_ram_where_there_is_room_and_is_gone_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with example_bot() as bot:
        store = Path(bot.settings.store_url.removeprefix("sqlite:///"))
        assert store.exists() and store.parent.parent == Path(scratch_folder() or tempfile.gettempdir())
    assert not store.parent.exists()
    for folder, needed in ((tmp_path / "none", 1), (tmp_path, 2**62)):  # no such folder; not enough room
        monkeypatch.setattr(reuse, "RAM_FOLDER", folder)
        monkeypatch.setattr(reuse, "RAM_NEEDED_BYTES", needed)
        scratch_folder.cache_clear()
        assert scratch_folder() is None
    monkeypatch.setattr(reuse, "RAM_NEEDED_BYTES", 1)
    scratch_folder.cache_clear()
    assert scratch_folder() == str(tmp_path)
    scratch_folder.cache_clear()  # the next test finds the machine's own folder again
