"""The one async Store protocol (users, inbox, outbox) and its plain records.

Promises 2-4 of the design rest on three operations: `add_events` (insert-if-absent: a duplicate is the dedupe),
`commit_step` (user, outbox rows and the event's handled mark in one atomic write: the transactional outbox), and
the outbox status updates around each send.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class UserRecord:
    user_id: str
    page_id: str = ""
    flow: str = ""
    state: str | None = None
    tags: set[str] = field(default_factory=set)
    variables: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] | None = None
    last_interaction_ms: int = 0  # when the user last did something that opens the 24h window
    unreachable: bool = False  # blocked the page / unavailable: never messaged again
    created_ms: int = 0

    def to_data(self) -> dict[str, Any]:
        return {
            "page_id": self.page_id,
            "flow": self.flow,
            "state": self.state,
            "tags": sorted(self.tags),
            "variables": self.variables,
            "profile": self.profile,
            "last_interaction_ms": self.last_interaction_ms,
            "unreachable": self.unreachable,
            "created_ms": self.created_ms,
        }

    @classmethod
    def from_data(cls, user_id: str, data: dict[str, Any]) -> UserRecord:
        return cls(
            user_id,
            data.get("page_id", ""),
            data.get("flow", ""),
            data.get("state"),
            set(data.get("tags", ())),
            dict(data.get("variables", {})),
            data.get("profile"),
            int(data.get("last_interaction_ms", 0)),
            bool(data.get("unreachable", False)),
            int(data.get("created_ms", 0)),
        )


@dataclass(frozen=True)
class StoredEvent:
    key: str
    user_id: str
    page_id: str
    timestamp: int
    kind: str
    body: str  # the event's own JSON, as Meta sent it
    received_ms: int = 0


@dataclass
class OutboxItem:
    """One message to send. `message` is the Send API `message` object; how it goes (messaging type, tag, OTN
    token) is decided at send time by the policy gate, from `meta`."""

    key: str  # "<event key>#<position>": a replayed event maps to the same keys, so nothing is queued twice
    user_id: str
    message: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    status: str = "pending"  # pending, sending, sent, failed, uncertain, skipped, refused
    detail: str = ""
    created_ms: int = 0
    seq: int = 0


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...

    # inbox
    async def add_events(self, events: Sequence[StoredEvent]) -> list[StoredEvent]:
        """Insert the events not stored yet, in one atomic write; return those that were new."""
        ...

    async def pending_events(self, user_id: str, limit: int = 100) -> list[StoredEvent]:
        """The user's unhandled events, oldest timestamp first."""
        ...

    async def fail_event(self, key: str, error: str, now_ms: int) -> None:
        """Handling raised: mark the event handled with its error, kept for inspection (never silently dropped)."""
        ...

    async def users_with_pending_work(self) -> list[str]:
        """Users with unhandled events or unsent outbox rows: what a restart resumes."""
        ...

    # users
    async def load_user(self, user_id: str) -> UserRecord | None: ...

    async def commit_step(self, event_key: str, user: UserRecord, outbox: Sequence[OutboxItem], now_ms: int) -> bool:
        """Atomically: save the user, append the outbox rows, mark the event handled. False (and nothing written)
        when the event was already handled."""
        ...

    async def mark_unreachable(self, user_id: str) -> None: ...

    # outbox
    async def pending_outbox(self, user_id: str) -> list[OutboxItem]: ...
    async def set_outbox_status(self, key: str, status: str, detail: str, now_ms: int) -> None: ...

    async def recover_in_flight(self) -> int:
        """At start: rows left 'sending' by a crash become 'uncertain' (not resent: see docs/architecture.md)."""
        ...

    async def counts(self) -> dict[str, int]:
        """Row counts by table and status, for health checks, metrics and tests."""
        ...
