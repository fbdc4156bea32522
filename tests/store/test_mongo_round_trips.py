"""How many commands the MongoDB backend sends for the operations whose cost grows with their input: counted by
a PyMongo command listener on the client the store is handed (a real server: SecantusDB on loopback)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.monitoring import CommandFailedEvent, CommandListener, CommandStartedEvent, CommandSucceededEvent

from engine.store import Campaign, OutboxItem, StepWrite, StoredEvent, Token, UserRecord
from engine.store.mongo import MongoStore
from tests.conftest import mongo_database_url


class Commands(CommandListener):
    def __init__(self) -> None:
        self.seen: Counter[tuple[str, str]] = Counter()

    def started(self, event: CommandStartedEvent) -> None:
        target = event.command.get(event.command_name)
        self.seen[(event.command_name, target if isinstance(target, str) else "")] += 1

    def succeeded(self, event: CommandSucceededEvent) -> None: ...
    def failed(self, event: CommandFailedEvent) -> None: ...

    def on(self, collection: str) -> Counter[str]:
        """Commands sent on one collection, by name (find, update, aggregate...), since the last `clear`."""
        return Counter({name: n for (name, target), n in self.seen.items() if target == collection})


@pytest.fixture
async def counted(mongo_server: str) -> AsyncIterator[tuple[MongoStore, Commands]]:
    commands = Commands()
    name = f"otnflow_test_{uuid.uuid4().hex[:12]}"
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_database_url(mongo_server, name), event_listeners=[commands]
    )
    store = MongoStore(client, name)  # handed its client: the listener sees every command the store sends
    await store.open()
    commands.seen.clear()
    yield store, commands
    await store.close()


def event(key: str, user: str) -> StoredEvent:
    return StoredEvent(key=key, user_id=user, page_id="page", timestamp=1, kind="message", body="{}", received_ms=0)


async def test_a_step_writes_its_outbox_rows_and_tokens_in_one_command_each(
    counted: tuple[MongoStore, Commands],
) -> None:
    store, commands = counted
    await store.add_events([event("a", "u1")])
    commands.seen.clear()
    rows = [OutboxItem(key=f"a#{i}", user_id="u1", message={"text": str(i)}) for i in range(20)]
    tokens = [
        Token(token=f"t{i}", user_id="u1", topic="restock", payload="p", received_ms=1, expires_ms=10_000)
        for i in range(5)
    ]
    assert await store.commit_step(
        StepWrite(event_key="a", user=UserRecord(user_id="u1"), outbox=rows, tokens=tokens), 10
    )
    assert commands.on("outbox") == {"update": 1}
    assert commands.on("tokens") == {"update": 1}
    assert len(await store.pending_outbox("u1")) == 20 and len(await store.tokens("u1")) == 5


async def test_users_needing_work_is_one_query_with_its_limit(counted: tuple[MongoStore, Commands]) -> None:
    store, commands = counted
    await store.add_events([event(f"e{i}", f"u{i}") for i in range(30)])
    assert await store.acquire_lease("u0", "A", 1_000, 500)
    commands.seen.clear()
    found = await store.users_needing_work(1_200, 7)
    assert len(found) == 7 and "u0" not in found
    assert sum(commands.seen.values()) == 1 and commands.on("inbox") == {"aggregate": 1}


async def test_uncertain_deliveries_read_their_tokens_in_one_query(counted: tuple[MongoStore, Commands]) -> None:
    store, commands = counted
    users = [f"u{i:02}" for i in range(12)]
    await store.add_events([event(f"e{u}", u) for u in users])
    for u in users:
        await store.commit_step(
            StepWrite(
                event_key=f"e{u}",
                user=UserRecord(user_id=u),
                tokens=[Token(token=f"t{u}", user_id=u, topic="r", payload="p", received_ms=1, expires_ms=10**9)],
            ),
            1,
        )
    await store.open_campaign(Campaign(id="c", topic="r", segment="", vars={}, created_ms=1))
    await store.add_campaign_items("c", users, {}, 2)
    claimed = await store.begin_deliveries("c", "r", [(u, {"text": u}) for u in users], 3, 100, no_token_reason="x")
    assert len(claimed) == 12
    commands.seen.clear()
    expired, later = await store.uncertain_deliveries("c", 1_000)
    assert [(d.user_id, d.token.token, d.message) for d in expired] == [(u, f"t{u}", {"text": u}) for u in users]
    assert later is None
    assert commands.on("tokens") == {"find": 1}
