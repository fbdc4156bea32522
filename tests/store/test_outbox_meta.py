"""An outbox row's meta is typed in Python and stored as the same JSON as before (no data migration)."""

from __future__ import annotations

from engine.store import OutboxMeta


def test_a_message_row_stores_the_keys_it_always_did() -> None:
    meta = OutboxMeta(kind="message", responding=True, promotional=False, tag="ACCOUNT_UPDATE")
    assert meta.to_data() == {"kind": "message", "responding": True, "promotional": False, "tag": "ACCOUNT_UPDATE"}
    assert OutboxMeta.from_data(meta.to_data()) == meta


def test_a_request_row_keeps_topic_state_and_the_re_request_mark() -> None:
    meta = OutboxMeta(kind="otn_request", topic="restock", source_state="sold_out", re_request=True)
    data = meta.to_data()
    assert data == {
        "kind": "otn_request",
        "responding": False,
        "promotional": True,
        "topic": "restock",
        "source_state": "sold_out",
        "re_request": True,
    }
    assert OutboxMeta.from_data(data) == meta


def test_rows_written_before_are_read_with_defaults_and_unknown_keys_ignored() -> None:
    assert OutboxMeta.from_data({}) == OutboxMeta()
    assert OutboxMeta.from_data({"kind": "otn_request", "topic": "t", "later": 1}).topic == "t"
