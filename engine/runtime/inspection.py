"""What people and tests see of the store: the messages the policy gate refused, with their text, and one user's
record, tokens and refusals. The backends hand back plain rows; what a row shows is decided here."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ..store import Backend, Inspection, OutboxItem, Token, UserRecord


@dataclass(frozen=True, kw_only=True)
class UserView:
    record: UserRecord | None
    tokens: list[Token]
    refused: list[dict[str, Any]]


def message_text(message: dict[str, Any]) -> str | None:
    """The words a Send API `message` shows: its text, or its template's text or title."""
    payload = message.get("attachment", {}).get("payload", {})
    text = message.get("text") or payload.get("text") or payload.get("title")
    return str(text) if text is not None else None


def refused_message(row: OutboxItem) -> dict[str, Any]:
    """A refused outbox row as shown to people: user_id, kind, topic, reason, text, at."""
    return {
        "user_id": row.user_id,
        "kind": row.meta.kind,
        "topic": row.meta.topic,
        "reason": row.detail,
        "text": message_text(row.message),
        "at": row.updated_ms,
    }


async def refused_messages(store: Inspection, user_id: str | None = None) -> list[dict[str, Any]]:
    """Messages the policy gate refused (of one user, or of all), in the order they were queued."""
    return [refused_message(row) for row in await store.refused_rows(user_id)]


async def inspect_user(store: Backend, user_id: str) -> UserView:
    """A user's record, tokens and refused messages: three reads, not one snapshot (tests, the playground). They
    are queued together, so SQLite's reader thread runs them as one batch: one hand-off and one loop wake-up, not
    three (the flow-test harness reads this after every step)."""
    record, tokens, refused = await asyncio.gather(
        store.load_user(user_id), store.tokens(user_id), store.refused_rows(user_id)
    )
    return UserView(record=record, tokens=tokens, refused=[refused_message(row) for row in refused])
