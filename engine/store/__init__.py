"""The Store protocol and its backends. Each backend module imports its own driver and nothing else's."""

from __future__ import annotations

from .base import (
    Campaign,
    Delivery,
    Finished,
    OutboxItem,
    RejectedEvent,
    StepWrite,
    Store,
    StoredEvent,
    Token,
    UserRecord,
    UserView,
    request_key,
    request_vars,
)


def open_store(url: str, inbox_retention_days: float = 7.0) -> Store:
    """`sqlite:///path/file.sqlite3` (the embedded default) or `mongodb://...` (needs `otnflow[mongo]`)."""
    if url.startswith("sqlite:///"):
        from .sqlite import SqliteStore

        return SqliteStore(url.removeprefix("sqlite:///"), inbox_retention_days)
    if url.startswith(("mongodb://", "mongodb+srv://")):
        try:
            from .mongo import MongoStore
        except ImportError as err:
            raise ValueError(
                f"store.url is a MongoDB URL but the driver is missing ({err}): pip install 'otnflow[mongo]'"
            ) from None
        return MongoStore(url, inbox_retention_days)
    raise ValueError(f"unsupported store URL {url.split('://')[0]}://...: use sqlite:///path/to/file.sqlite3")


__all__ = [
    "Campaign",
    "Delivery",
    "Finished",
    "OutboxItem",
    "RejectedEvent",
    "StepWrite",
    "Store",
    "StoredEvent",
    "Token",
    "UserRecord",
    "UserView",
    "open_store",
    "request_key",
    "request_vars",
]
