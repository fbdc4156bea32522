"""The Store protocols and their backends. Each backend module imports its own driver and nothing else's."""

from __future__ import annotations

from .base import (
    OPERATIONS,
    Backend,
    Campaign,
    CampaignStore,
    Delivery,
    DeliveryResult,
    InboxStore,
    Inspection,
    LeaseStore,
    OtnLogLine,
    OutboxItem,
    OutboxMeta,
    OutboxStore,
    RejectedEvent,
    StatusMark,
    StepWrite,
    Store,
    StoredEvent,
    Token,
    TokenStore,
    UserRecord,
    UserStore,
    request_key,
    request_vars,
)
from .status import CampaignStatus, ItemStatus, OtnLogged, OutboxStatus, TokenStatus, refused_request


def open_store(url: str, inbox_retention_days: float = 7.0) -> Backend:
    """`sqlite:///path/file.sqlite3` (the embedded default) or `mongodb://...` (needs `otnflow[mongo]`). The
    MongoDB backend is handed a driver client built from the URL (as aiogram's storages are); `open()` connects."""
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
        return MongoStore.from_url(url, inbox_retention_days)
    raise ValueError(f"unsupported store URL {url.split('://')[0]}://...: use sqlite:///path/to/file.sqlite3")


__all__ = [
    "OPERATIONS",
    "Backend",
    "Campaign",
    "CampaignStatus",
    "CampaignStore",
    "Delivery",
    "DeliveryResult",
    "InboxStore",
    "Inspection",
    "ItemStatus",
    "LeaseStore",
    "OtnLogLine",
    "OtnLogged",
    "OutboxItem",
    "OutboxMeta",
    "OutboxStatus",
    "OutboxStore",
    "RejectedEvent",
    "StatusMark",
    "StepWrite",
    "Store",
    "StoredEvent",
    "Token",
    "TokenStatus",
    "TokenStore",
    "UserRecord",
    "UserStore",
    "open_store",
    "refused_request",
    "request_key",
    "request_vars",
]
