"""The rules the runtime applies to the rows a backend returns (the backends only store and fetch)."""

from __future__ import annotations

from pathlib import Path

from engine.runtime.campaigns import campaign_runs, item_counts
from engine.runtime.inspection import message_text, refused_message
from engine.store import Campaign, OutboxItem, OutboxMeta, OutboxStatus, open_store


def test_item_counts_by_status_and_by_status_and_reason() -> None:
    rows = [("delivered", "", 3), ("skipped", "segment", 2), ("skipped", "no_valid_token", 1), ("failed", "", 1)]
    assert item_counts(rows) == {
        "delivered": 3,
        "skipped": 3,
        "skipped:segment": 2,
        "skipped:no_valid_token": 1,
        "failed": 1,
    }
    assert item_counts([]) == {}


def test_the_text_of_a_message_text_template_or_title() -> None:
    assert message_text({"text": "hi"}) == "hi"
    assert message_text({"attachment": {"payload": {"template_type": "button", "text": "pick"}}}) == "pick"
    otn = {"attachment": {"payload": {"template_type": "one_time_notif_req", "title": "Restock?"}}}
    assert message_text(otn) == "Restock?"
    assert message_text({"attachment": {"type": "image", "payload": {"url": "x"}}}) is None


def test_a_refused_row_as_people_see_it() -> None:
    row = OutboxItem(
        key="e#0",
        user_id="u1",
        message={"text": "no"},
        meta=OutboxMeta(kind="otn_request", topic="t"),
        status=OutboxStatus.REFUSED,
        detail="nagging",
    )
    row.updated_ms = 42
    assert refused_message(row) == {
        "user_id": "u1",
        "kind": "otn_request",
        "topic": "t",
        "reason": "nagging",
        "text": "no",
        "at": 42,
    }
    assert refused_message(OutboxItem(key="e#1", user_id="u1", message={"text": "x"}))["kind"] == "message"


async def test_the_runs_of_a_notification_are_its_id_and_its_numbered_reruns(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 's.sqlite3'}")
    await store.open()
    try:
        for n, name in enumerate(["news", "news.2", "news.3", "newsletter", "news.x", "news.2.1"]):
            await store.open_campaign(Campaign(id=name, topic="news", segment="", vars={}, created_ms=n))
        assert [c.id for c in await campaign_runs(store, "news")] == ["news", "news.2", "news.3"]
    finally:
        await store.close()
