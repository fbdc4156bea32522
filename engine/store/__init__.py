"""The Store protocol and its backends. Each backend module imports its own driver and nothing else's."""

from __future__ import annotations

from .base import Campaign, Delivery, Finished, OutboxItem, StepWrite, Store, StoredEvent, Token, UserRecord, UserView


def open_store(url: str) -> Store:
    """`sqlite:///path/file.sqlite3` (the embedded default) or `mongodb://...` (needs `otnflow[mongo]`)."""
    if url.startswith("sqlite:///"):
        from .sqlite import SqliteStore

        return SqliteStore(url.removeprefix("sqlite:///"))
    raise ValueError(f"unsupported store URL {url.split('://')[0]}://...: use sqlite:///path/to/file.sqlite3")


__all__ = [
    "Campaign",
    "Delivery",
    "Finished",
    "OutboxItem",
    "StepWrite",
    "Store",
    "StoredEvent",
    "Token",
    "UserRecord",
    "UserView",
    "open_store",
]
