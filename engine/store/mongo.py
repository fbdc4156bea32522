"""The MongoDB backend, for several `otnflow serve` processes sharing one database (a replica set, Atlas, or any
MongoDB 6+). Uses PyMongo's native async API (`AsyncMongoClient`), Motor's successor; install with
`pip install otnflow[mongo]`. This module is the only one that imports the driver.

Atomicity:
- Single-document atomic operations (`find_one_and_update`, insert-if-absent on a unique `_id`) carry almost
  everything: the inbox dedupe, per-user leases, outbox status changes, armed requests, token lookups.
- Multi-document transactions are used in exactly three places, each because two kinds of document must change
  together and each kind must stay its own document:
  * `commit_step`: the handled mark on the inbox event, the user, the new outbox rows and the tokens received.
    Outbox rows and tokens are their own documents because senders and campaigns query them across users by
    index (a campaign's audience is an index range over tokens by topic); embedding them in the user document
    would turn those queries into scans. A crash mid-way must leave none of them, or the event would be handled
    twice or its replies lost.
  * `begin_deliveries` and `finish_deliveries`: a campaign item and the token it claims must change together, or a
    crash between them strands the token (claimed by nobody) or the item (sending with no token).
  Transactions need a replica set (a one-node replica set is enough); Atlas and SecantusDB provide one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError
from pymongo.uri_parser import parse_uri

from .base import (
    Campaign,
    Delivery,
    DeliveryResult,
    OtnLogLine,
    OutboxItem,
    OutboxMeta,
    RejectedEvent,
    StatusMark,
    StepWrite,
    StoredEvent,
    Token,
    UserRecord,
    request_vars,
)
from .status import CampaignStatus, OtnLogged, OutboxStatus, TokenStatus

T = TypeVar("T")
SCHEMA_VERSION = 1
_DUPLICATE = 11000


def _token(doc: dict[str, Any]) -> Token:
    return Token(
        token=doc["_id"],
        user_id=doc["user_id"],
        topic=doc["topic"],
        payload=doc["payload"],
        received_ms=doc["received_ms"],
        expires_ms=doc["expires_ms"],
        source_state=doc.get("source_state", ""),
        status=TokenStatus(doc["status"]),
        request_vars=request_vars(doc.get("request_key") or ""),
        title=doc.get("title", ""),
    )


def _token_doc(t: Token) -> dict[str, Any]:
    return {
        "_id": t.token,
        "user_id": t.user_id,
        "topic": t.topic,
        "payload": t.payload,
        "received_ms": t.received_ms,
        "expires_ms": t.expires_ms,
        "source_state": t.source_state,
        "status": t.status,
        "request_key": t.request_key or None,  # None (like a token stored before requests had keys): no variables
        "title": t.title,
    }


def _event(doc: dict[str, Any]) -> StoredEvent:
    return StoredEvent(
        key=doc["_id"],
        user_id=doc["user_id"],
        page_id=doc["page_id"],
        timestamp=doc["timestamp"],
        kind=doc["kind"],
        body=doc["body"],
        received_ms=doc["received_ms"],
    )


def _outbox(doc: dict[str, Any]) -> OutboxItem:
    return OutboxItem(
        key=doc["_id"],
        user_id=doc["user_id"],
        message=doc["message"],
        meta=OutboxMeta.from_data(doc["meta"]),
        status=OutboxStatus(doc["status"]),
        detail=doc.get("detail", ""),
        created_ms=doc["created_ms"],
        seq=0,
        updated_ms=doc.get("updated_ms", 0),
    )


class MongoStore:
    """Handed its driver client, as aiogram's MongoDB storages are (`from_url` builds one); `close` closes it."""

    def __init__(
        self, client: AsyncMongoClient[dict[str, Any]], database: str = "otnflow", inbox_retention_days: float = 7.0
    ) -> None:
        self.client = client
        self.db: AsyncDatabase[dict[str, Any]] = client[database]
        self.retention_seconds = int(inbox_retention_days * 86_400)
        self._order = 0

    @classmethod
    def from_url(cls, url: str, inbox_retention_days: float = 7.0) -> MongoStore:
        """The database named in the URL (`otnflow` if none); the client connects on first use."""
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, serverSelectionTimeoutMS=10_000, tz_aware=True)
        return cls(client, parse_uri(url).get("database") or "otnflow", inbox_retention_days)

    async def open(self) -> None:
        await self.client.admin.command("ping")
        await self._create_indexes()

    async def _create_indexes(self) -> None:
        """Idempotent: create_index is a no-op when the index exists with the same options."""
        db = self.db
        await db.inbox.create_index(
            [("user_id", ASCENDING), ("handled_ms", ASCENDING), ("timestamp", ASCENDING)], name="pending_by_user"
        )
        await db.inbox.create_index(
            "handled_at", expireAfterSeconds=self.retention_seconds, name="handled_ttl"
        )  # only handled events carry handled_at
        await db.outbox.create_index(
            [("user_id", ASCENDING), ("status", ASCENDING), ("order", ASCENDING)], name="pending_by_user"
        )
        await db.outbox.create_index("status", name="by_status")
        await db.outbox.create_index(
            [("user_id", ASCENDING), ("meta.topic", ASCENDING), ("created_ms", ASCENDING)], name="requests_by_user"
        )
        await db.tokens.create_index(
            [("user_id", ASCENDING), ("topic", ASCENDING), ("status", ASCENDING), ("received_ms", ASCENDING)],
            name="claim_by_user",
        )
        await db.tokens.create_index(
            [
                ("topic", ASCENDING),
                ("status", ASCENDING),
                ("request_key", ASCENDING),
                ("user_id", ASCENDING),
                ("expires_ms", ASCENDING),
            ],
            name="audience_by_request",
        )
        await db.otn_log.create_index(
            [("user_id", ASCENDING), ("topic", ASCENDING), ("what", ASCENDING), ("at_ms", ASCENDING)], name="by_user"
        )
        await db.otn_log.create_index([("topic", ASCENDING), ("what", ASCENDING)], name="by_topic")
        await db.armed.create_index([("user_id", ASCENDING), ("armed_ms", ASCENDING)], name="by_user")
        await db.campaign_items.create_index(
            [("campaign_id", ASCENDING), ("status", ASCENDING), ("user_id", ASCENDING)], name="by_status"
        )
        await db.leases.create_index("until_ms", name="by_expiry")
        await db.rejected.create_index("received_ms", name="by_time")
        await db.meta.update_one({"_id": "schema_version"}, {"$setOnInsert": {"value": SCHEMA_VERSION}}, upsert=True)

    async def close(self) -> None:
        await self.client.close()

    async def _transaction(self, work: Callable[[AsyncClientSession], Awaitable[T]]) -> T:
        async with self.client.start_session() as session:
            result: T = await session.with_transaction(work)
            return result

    def _next_order(self, now_ms: int) -> int:
        """Outbox order: time-based and increasing within a process (one process per user at a time: leases)."""
        self._order = max(self._order + 1, now_ms * 1000)
        return self._order

    # -- inbox -----------------------------------------------------------------------------------------------
    async def add_events(self, events: Sequence[StoredEvent]) -> list[StoredEvent]:
        if not events:
            return []
        docs = [
            {
                "_id": e.key,
                "user_id": e.user_id,
                "page_id": e.page_id,
                "timestamp": e.timestamp,
                "kind": e.kind,
                "body": e.body,
                "received_ms": e.received_ms,
                "handled_ms": None,
            }
            for e in events
        ]
        unique = list({d["_id"]: d for d in docs}.values())
        try:
            await self.db.inbox.insert_many(unique, ordered=False)
            duplicates: set[str] = set()
        except BulkWriteError as err:
            duplicates = {
                unique[e["index"]]["_id"] for e in err.details.get("writeErrors", []) if e.get("code") == _DUPLICATE
            }
        seen: set[str] = set()
        new = []
        for event in events:
            if event.key not in duplicates and event.key not in seen:
                seen.add(event.key)
                new.append(event)
        return new

    async def add_rejected(self, rejected: Sequence[RejectedEvent]) -> int:
        new = 0
        for r in rejected:  # a handful at most: one upsert each keeps insert-if-absent simple
            try:
                result = await self.db.rejected.update_one(
                    {"_id": r.key},
                    {
                        "$setOnInsert": {
                            "where": r.where,
                            "kind": r.kind,
                            "reason": r.reason,
                            "body": r.body,
                            "received_ms": r.received_ms,
                        }
                    },
                    upsert=True,
                )
            except DuplicateKeyError:  # the same dead letter stored at the same moment by another request
                continue
            new += result.upserted_id is not None
        return new

    async def rejected_events(self, limit: int = 100) -> list[RejectedEvent]:
        cursor = self.db.rejected.find().sort([("received_ms", DESCENDING), ("_id", DESCENDING)]).limit(limit)
        return [
            RejectedEvent(
                key=d["_id"],
                where=d["where"],
                kind=d["kind"],
                reason=d["reason"],
                body=d["body"],
                received_ms=d["received_ms"],
            )
            async for d in cursor
        ]

    async def pending_events(self, user_id: str, limit: int = 100) -> list[StoredEvent]:
        cursor = (
            self.db.inbox.find({"user_id": user_id, "handled_ms": None})
            .sort([("timestamp", ASCENDING), ("received_ms", ASCENDING)])
            .limit(limit)
        )
        return [_event(doc) async for doc in cursor]

    async def fail_event(self, key: str, error: str, now_ms: int) -> None:
        await self.db.inbox.update_one(
            {"_id": key}, {"$set": {"handled_ms": now_ms, "error": error, "handled_at": _date(now_ms)}}
        )

    async def prune_inbox(self, now_ms: int) -> int:
        return 0  # the handled_ttl index expires handled events on the server

    async def users_with_pending_work(self) -> list[str]:
        users = set(await self.db.inbox.distinct("user_id", {"handled_ms": None}))
        users |= set(await self.db.outbox.distinct("user_id", {"status": {"$in": ["pending", "sending"]}}))
        return sorted(users)

    # -- users -----------------------------------------------------------------------------------------------
    async def load_user(self, user_id: str) -> UserRecord | None:
        doc = await self.db.users.find_one({"_id": user_id})
        return UserRecord.from_data(user_id, doc["data"]) if doc else None

    async def load_for_step(self, user_id: str) -> tuple[UserRecord | None, list[tuple[str, str]]]:
        return await self.load_user(user_id), await self.armed(user_id)

    async def load_users(self, user_ids: Sequence[str]) -> dict[str, UserRecord]:
        if not user_ids:
            return {}
        cursor = self.db.users.find({"_id": {"$in": list(user_ids)}})
        return {doc["_id"]: UserRecord.from_data(doc["_id"], doc["data"]) async for doc in cursor}

    async def put_user(self, user: UserRecord) -> None:
        await self.db.users.update_one({"_id": user.user_id}, {"$set": {"data": user.to_data()}}, upsert=True)

    async def forget_user(self, user_id: str) -> None:
        for name in ("inbox", "outbox", "tokens", "armed", "otn_log", "campaign_items"):
            await self.db[name].delete_many({"user_id": user_id})
        await self.db.users.delete_one({"_id": user_id})
        await self.db.leases.delete_one({"_id": user_id})
        await self.db.unsubscribed.delete_one({"_id": user_id})

    async def commit_step(self, write: StepWrite, now_ms: int) -> bool:
        user = write.user
        rows = [
            {
                "_id": o.key,
                "user_id": o.user_id,
                "message": o.message,
                "meta": o.meta.to_data(),
                "status": o.status,
                "detail": o.detail,
                "created_ms": now_ms,
                "updated_ms": now_ms,
                "order": self._next_order(now_ms),
            }
            for o in write.outbox
        ]

        async def work(session: AsyncClientSession) -> bool:  # see the module docstring: why a transaction
            marked = await self.db.inbox.update_one(
                {"_id": write.event_key, "handled_ms": None},
                {"$set": {"handled_ms": now_ms, "handled_at": _date(now_ms)}},
                session=session,
            )
            if not marked.modified_count:
                return False
            await self.db.users.update_one(
                {"_id": user.user_id}, {"$set": {"data": user.to_data()}}, upsert=True, session=session
            )
            if rows:  # one bulk write for the step's rows, as for its tokens: one round trip each
                await self.db.outbox.bulk_write(
                    [UpdateOne({"_id": row["_id"]}, {"$setOnInsert": row}, upsert=True) for row in rows],
                    session=session,
                )
            if write.tokens:
                await self.db.tokens.bulk_write(
                    [UpdateOne({"_id": t.token}, {"$setOnInsert": _token_doc(t)}, upsert=True) for t in write.tokens],
                    session=session,
                )
            if write.disarm:
                await self.db.armed.delete_many(
                    {"_id": {"$in": [f"{user.user_id}|{t}" for t in write.disarm]}}, session=session
                )
            if write.otn_log:
                await self.db.otn_log.insert_many(
                    [
                        {"user_id": user.user_id, "topic": topic, "what": what, "at_ms": now_ms}
                        for topic, what in write.otn_log
                    ],
                    session=session,
                )
            if write.consent is False:  # unsubscribed: no token of theirs is ever sent, no re-request goes out
                await self.db.tokens.update_many(
                    {"user_id": user.user_id, "status": {"$in": ["valid", "claimed"]}},
                    {"$set": {"status": "revoked"}},
                    session=session,
                )
                await self.db.armed.delete_many({"user_id": user.user_id}, session=session)
                await self.db.unsubscribed.update_one(
                    {"_id": user.user_id}, {"$setOnInsert": {"since_ms": now_ms}}, upsert=True, session=session
                )
            elif write.consent is True:
                await self.db.unsubscribed.delete_one({"_id": user.user_id}, session=session)
            return True

        return await self._transaction(work)

    async def mark_unreachable(self, user_id: str) -> None:
        await self.db.users.update_one({"_id": user_id}, {"$set": {"data.unreachable": True}})

    async def set_thread_owner(self, user_id: str, owner: str, since_ms: int, state: str) -> None:
        update = {"data.thread_owner": owner, "data.handed_over_ms": since_ms, "data.handover_state": state}
        await self.db.users.update_one({"_id": user_id}, {"$set": update})

    async def users_with_human(self, limit: int) -> list[UserRecord]:
        cursor = self.db.users.find({"data.thread_owner": {"$nin": ["", None]}}).limit(limit)
        return [UserRecord.from_data(doc["_id"], doc["data"]) async for doc in cursor]

    # -- outbox ----------------------------------------------------------------------------------------------
    async def pending_outbox(self, user_id: str) -> list[OutboxItem]:
        cursor = self.db.outbox.find({"user_id": user_id, "status": "pending"}).sort("order", ASCENDING)
        return [_outbox(doc) async for doc in cursor]

    async def add_outbox(self, item: OutboxItem, now_ms: int) -> None:
        row = {
            "_id": item.key,
            "user_id": item.user_id,
            "message": item.message,
            "meta": item.meta.to_data(),
            "status": item.status,
            "detail": item.detail,
            "created_ms": now_ms,
            "updated_ms": now_ms,
            "order": self._next_order(now_ms),
        }
        await _ignoring_duplicates(self.db.outbox.update_one({"_id": item.key}, {"$setOnInsert": row}, upsert=True))

    async def set_outbox_status(self, key: str, status: OutboxStatus, detail: str, now_ms: int) -> None:
        await self._set_outbox_statuses((StatusMark(key, status, detail, now_ms),), ())

    def set_outbox_statuses(self, marks: Sequence[StatusMark], logged: Sequence[OtnLogLine] = ()) -> Awaitable[None]:
        return asyncio.ensure_future(self._set_outbox_statuses(marks, logged))

    async def _set_outbox_statuses(self, marks: Sequence[StatusMark], logged: Sequence[OtnLogLine]) -> None:
        """One bulk write for the rows, one insert for the log lines: a round trip each, not a transaction (each
        mark stands alone; one that did not land leaves its row `sending`, uncertain at restart, never resent)."""
        if marks:
            await self.db.outbox.bulk_write(
                [
                    UpdateOne(
                        {"_id": m.key}, {"$set": {"status": m.status, "detail": m.detail, "updated_ms": m.updated_ms}}
                    )
                    for m in marks
                ]
            )
        if logged:
            await self.db.otn_log.insert_many([line._asdict() for line in logged])

    async def recover_in_flight(self, detail: str) -> int:
        result = await self.db.outbox.update_many(
            {"status": "sending"}, {"$set": {"status": "uncertain", "detail": detail}}
        )
        return result.modified_count

    async def recover_user_in_flight(self, user_id: str, detail: str) -> int:
        result = await self.db.outbox.update_many(
            {"user_id": user_id, "status": "sending"}, {"$set": {"status": "uncertain", "detail": detail}}
        )
        return result.modified_count

    async def counts(self) -> dict[str, int]:
        db = self.db
        out = {
            "users": await db.users.count_documents({}),
            "inbox_pending": await db.inbox.count_documents({"handled_ms": None}),
            "inbox_handled": await db.inbox.count_documents({"handled_ms": {"$ne": None}}),
            "inbox_failed": await db.inbox.count_documents({"error": {"$exists": True}}),
            "rejected": await db.rejected.count_documents({}),
        }
        async for row in await db.outbox.aggregate([{"$group": {"_id": "$status", "n": {"$sum": 1}}}]):
            out[f"outbox_{row['_id']}"] = row["n"]
        return out

    # -- leases ----------------------------------------------------------------------------------------------
    async def acquire_lease(self, user_id: str, owner: str, now_ms: int, ttl_ms: int) -> bool:
        try:
            await self.db.leases.find_one_and_update(
                {"_id": user_id, "$or": [{"until_ms": {"$lte": now_ms}}, {"owner": owner}]},
                {"$set": {"owner": owner, "until_ms": now_ms + ttl_ms}},
                upsert=True,
            )
        except DuplicateKeyError:  # the lease exists, held by someone else, not expired
            return False
        return True

    async def release_lease(self, user_id: str, owner: str) -> None:
        await self.db.leases.delete_one({"_id": user_id, "owner": owner})

    async def users_needing_work(self, now_ms: int, limit: int) -> list[str]:
        pipeline: list[dict[str, Any]] = [  # one query, the limit applied on the server
            {"$match": {"handled_ms": None}},
            {"$group": {"_id": "$user_id"}},
            {
                "$unionWith": {
                    "coll": "outbox",
                    "pipeline": [
                        {"$match": {"status": {"$in": ["pending", "sending"]}}},
                        {"$group": {"_id": "$user_id"}},
                    ],
                }
            },
            {"$group": {"_id": "$_id"}},
            {"$lookup": {"from": "leases", "localField": "_id", "foreignField": "_id", "as": "lease"}},
            {"$match": {"lease": {"$not": {"$elemMatch": {"until_ms": {"$gt": now_ms}}}}}},
            {"$limit": limit},
        ]
        return [row["_id"] async for row in await self.db.inbox.aggregate(pipeline)]

    # -- OTN tokens and the loop -----------------------------------------------------------------------------
    async def count_tokens(self, user_id: str, topic: str, now_ms: int, request_key: str | None = None) -> int:
        query: dict[str, Any] = {"user_id": user_id, "topic": topic, "status": "valid", "expires_ms": {"$gt": now_ms}}
        if request_key is not None:
            query["request_key"] = request_key or None
        return await self.db.tokens.count_documents(query)

    async def tokens(self, user_id: str) -> list[Token]:
        cursor = self.db.tokens.find({"user_id": user_id}).sort([("received_ms", ASCENDING), ("_id", ASCENDING)])
        return [_token(doc) async for doc in cursor]

    async def count_otn_log(self, user_id: str, topic: str, what: str, since_ms: int) -> int:
        return await self.db.otn_log.count_documents(
            {"user_id": user_id, "topic": topic, "what": what, "at_ms": {"$gte": since_ms}}
        )

    async def request_counts(
        self, user_id: str, topic: str, since_ms: int, now_ms: int, request_key: str | None = None
    ) -> tuple[int, int]:
        held = await self.count_tokens(user_id, topic, now_ms, request_key)
        since = max(since_ms, await self.last_otn(user_id, topic, OtnLogged.OPTIN) + 1)
        requests = await self.db.outbox.count_documents(
            {
                "user_id": user_id,
                "meta.topic": topic,
                "created_ms": {"$gte": since},
                "meta.kind": "otn_request",
                "status": {"$in": ["pending", "sending", "sent", "uncertain"]},
            }
        )
        return held, requests

    async def last_otn(self, user_id: str, topic: str, what: str) -> int:
        doc = await self.db.otn_log.find_one({"user_id": user_id, "topic": topic, "what": what}, sort=[("at_ms", -1)])
        return int(doc["at_ms"]) if doc else 0

    async def log_otn(self, user_id: str, topic: str, what: str, now_ms: int) -> None:
        await self._set_outbox_statuses((), (OtnLogLine(user_id, topic, what, now_ms),))

    async def arm(self, user_id: str, topic: str, source_state: str, now_ms: int) -> None:
        await _ignoring_duplicates(
            self.db.armed.update_one(
                {"_id": f"{user_id}|{topic}"},
                {
                    "$setOnInsert": {
                        "user_id": user_id,
                        "topic": topic,
                        "source_state": source_state,
                        "armed_ms": now_ms,
                    }
                },
                upsert=True,
            )
        )

    async def armed(self, user_id: str) -> list[tuple[str, str]]:
        cursor = self.db.armed.find({"user_id": user_id}).sort([("armed_ms", ASCENDING), ("topic", ASCENDING)])
        return [(doc["topic"], doc["source_state"]) async for doc in cursor]

    async def otn_stats(self, now_ms: int, soon_ms: int) -> dict[str, dict[str, int]]:
        stats: dict[str, dict[str, int]] = {}
        async for row in await self.db.otn_log.aggregate(
            [{"$group": {"_id": {"topic": "$topic", "what": "$what"}, "n": {"$sum": 1}}}]
        ):
            stats.setdefault(row["_id"]["topic"], {})[row["_id"]["what"]] = row["n"]
        pipeline = [
            {"$match": {"status": "valid", "expires_ms": {"$gt": now_ms}}},
            {
                "$group": {
                    "_id": "$topic",
                    "held": {"$sum": 1},
                    "soon": {"$sum": {"$cond": [{"$lt": ["$expires_ms", soon_ms]}, 1, 0]}},
                }
            },
        ]
        async for row in await self.db.tokens.aggregate(pipeline):
            stats.setdefault(row["_id"], {}).update(tokens_held=row["held"], tokens_expiring_soon=row["soon"])
        holders: list[dict[str, Any]] = [
            {"$match": {"status": "valid", "expires_ms": {"$gt": now_ms}}},
            {"$group": {"_id": {"topic": "$topic", "user": "$user_id"}}},
            {"$group": {"_id": "$_id.topic", "n": {"$sum": 1}}},
        ]
        async for row in await self.db.tokens.aggregate(holders):
            stats.setdefault(row["_id"], {})["token_holders"] = row["n"]
        return stats

    # -- campaigns -------------------------------------------------------------------------------------------
    async def open_campaign(self, campaign: Campaign) -> Campaign:
        doc = None
        for _ in range(50):  # two processes upserting at once: the loser retries until the winner's insert shows
            try:
                doc = await self._open_campaign(campaign)
            except DuplicateKeyError:
                doc = await self.db.campaigns.find_one({"_id": campaign.id})
            if doc is not None:
                break
            await asyncio.sleep(0.02)
        if doc is None:
            raise RuntimeError(f"campaign {campaign.id}: could not be created nor read")
        return Campaign(
            id=doc["_id"],
            topic=doc["topic"],
            segment=doc["segment"],
            vars=doc["vars"],
            created_ms=doc["created_ms"],
            status=CampaignStatus(doc["status"]),
        )

    async def _open_campaign(self, campaign: Campaign) -> dict[str, Any] | None:
        return await self.db.campaigns.find_one_and_update(
            {"_id": campaign.id},
            {
                "$setOnInsert": {
                    "topic": campaign.topic,
                    "segment": campaign.segment,
                    "vars": campaign.vars,
                    "created_ms": campaign.created_ms,
                    "status": campaign.status,
                }
            },
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )

    async def campaigns_by_prefix(self, prefix: str) -> list[Campaign]:
        cursor = self.db.campaigns.find({"_id": {"$regex": f"^{_escape(prefix)}"}})
        found = [
            Campaign(
                id=d["_id"],
                topic=d["topic"],
                segment=d["segment"],
                vars=d["vars"],
                created_ms=d["created_ms"],
                status=CampaignStatus(d["status"]),
            )
            async for d in cursor
        ]
        return sorted(found, key=lambda c: (c.created_ms, c.id))

    async def finish_campaign(self, campaign_id: str, now_ms: int) -> None:
        await self.db.campaigns.update_one({"_id": campaign_id}, {"$set": {"status": "done", "finished_ms": now_ms}})

    async def token_holders(self, topic: str, request_key: str, now_ms: int, after_user: str, limit: int) -> list[str]:
        pipeline: list[dict[str, Any]] = [
            {
                "$match": {
                    "topic": topic,
                    "status": "valid",
                    "request_key": request_key or None,
                    "user_id": {"$gt": after_user},
                    "expires_ms": {"$gt": now_ms},
                }
            },  # the audience_by_request index: a range, never a scan
            {"$group": {"_id": "$user_id"}},
            {"$sort": {"_id": 1}},
            {"$limit": limit},
        ]
        return [row["_id"] async for row in await self.db.tokens.aggregate(pipeline)]

    async def held_requests(self, topic: str, now_ms: int) -> dict[str, int]:
        pipeline: list[dict[str, Any]] = [
            {"$match": {"topic": topic, "status": "valid", "expires_ms": {"$gt": now_ms}}},
            {"$group": {"_id": {"key": "$request_key", "user": "$user_id"}}},
            {"$group": {"_id": "$_id.key", "holders": {"$sum": 1}}},
        ]
        held: dict[str, int] = {}
        async for row in await self.db.tokens.aggregate(pipeline):
            key = row["_id"] or ""
            held[key] = held.get(key, 0) + row["holders"]
        return held

    async def add_campaign_items(
        self, campaign_id: str, user_ids: Sequence[str], skipped: dict[str, str], now_ms: int
    ) -> None:
        items = [(u, "pending", "") for u in user_ids] + [(u, "skipped", r) for u, r in skipped.items()]
        if not items:
            return
        await _ignoring_duplicates(
            self.db.campaign_items.bulk_write(
                [
                    UpdateOne(
                        {"_id": f"{campaign_id}|{user}"},
                        {
                            "$setOnInsert": {
                                "campaign_id": campaign_id,
                                "user_id": user,
                                "status": status,
                                "reason": reason,
                                "updated_ms": now_ms,
                            }
                        },
                        upsert=True,
                    )
                    for user, status, reason in items
                ],
                ordered=False,
            )
        )

    async def pending_items(self, campaign_id: str, after_user: str, limit: int) -> list[str]:
        cursor = (
            self.db.campaign_items.find(
                {"campaign_id": campaign_id, "status": "pending", "user_id": {"$gt": after_user}}, {"user_id": 1}
            )
            .sort("user_id", ASCENDING)
            .limit(limit)
        )
        return [doc["user_id"] async for doc in cursor]

    async def skip_item(self, campaign_id: str, user_id: str, reason: str, now_ms: int) -> None:
        await self.db.campaign_items.update_one(
            {"_id": f"{campaign_id}|{user_id}", "status": "pending"},
            {"$set": {"status": "skipped", "reason": reason, "updated_ms": now_ms}},
        )

    async def begin_deliveries(
        self,
        campaign_id: str,
        topic: str,
        requests: Sequence[tuple[str, dict[str, Any]]],
        now_ms: int,
        claim_ms: int = 120_000,
        request_keys: Sequence[str] = ("",),
        *,
        no_token_reason: str,
    ) -> list[Delivery]:
        if not requests:
            return []
        keys = [key or None for key in request_keys]

        async def work(session: AsyncClientSession) -> list[Delivery]:  # item + token together: module docstring
            claimed = []
            for user_id, message in requests:
                item_id = f"{campaign_id}|{user_id}"
                item = await self.db.campaign_items.find_one({"_id": item_id}, session=session)
                if item is None or item["status"] != "pending":
                    continue
                token = await self.db.tokens.find_one_and_update(
                    {
                        "user_id": user_id,
                        "topic": topic,
                        "status": "valid",
                        "expires_ms": {"$gt": now_ms},
                        "request_key": {"$in": keys},
                    },
                    {"$set": {"status": "claimed", "claimed_by": campaign_id}},
                    sort=[("received_ms", ASCENDING), ("_id", ASCENDING)],
                    return_document=ReturnDocument.AFTER,
                    session=session,
                )
                if token is None:
                    await self.db.campaign_items.update_one(
                        {"_id": item_id},
                        {"$set": {"status": "skipped", "reason": no_token_reason, "updated_ms": now_ms}},
                        session=session,
                    )
                    continue
                await self.db.campaign_items.update_one(
                    {"_id": item_id, "status": "pending"},
                    {
                        "$set": {
                            "status": "sending",
                            "token": token["_id"],
                            "message": json.dumps(message),
                            "claimed_until": now_ms + claim_ms,
                            "updated_ms": now_ms,
                        }
                    },
                    session=session,
                )
                claimed.append(Delivery(campaign_id, user_id, _token({**token, "status": "claimed"}), message))
            return claimed

        return await self._transaction(work)

    async def finish_deliveries(self, finished: Sequence[DeliveryResult], now_ms: int) -> None:
        if not finished:
            return

        async def work(session: AsyncClientSession) -> None:  # item + token together: module docstring
            for f in finished:
                d = f.delivery
                await self.db.campaign_items.update_one(
                    {"_id": f"{d.campaign_id}|{d.user_id}"},
                    {"$set": {"status": f.item_status, "reason": f.reason, "updated_ms": now_ms}},
                    session=session,
                )
                await self.db.tokens.update_one(
                    {"_id": d.token.token}, {"$set": {"status": f.token_status, "used_ms": now_ms}}, session=session
                )
                if f.logged:
                    await self.db.otn_log.insert_one(
                        {"user_id": d.user_id, "topic": d.token.topic, "what": f.logged, "at_ms": now_ms},
                        session=session,
                    )
                if f.arm is not None:
                    topic, source_state = f.arm
                    await self.db.armed.update_one(
                        {"_id": f"{d.user_id}|{topic}"},
                        {
                            "$setOnInsert": {
                                "user_id": d.user_id,
                                "topic": topic,
                                "source_state": source_state,
                                "armed_ms": now_ms,
                            }
                        },
                        upsert=True,
                        session=session,
                    )

        await self._transaction(work)

    async def uncertain_deliveries(self, campaign_id: str, now_ms: int) -> tuple[list[Delivery], int | None]:
        cursor = self.db.campaign_items.find(
            {"campaign_id": campaign_id, "status": "sending", "claimed_until": {"$lte": now_ms}}
        ).sort("user_id", 1)
        items = [item async for item in cursor]
        tokens = {  # the items' tokens in one query, not one per item
            doc["_id"]: _token(doc)
            async for doc in self.db.tokens.find({"_id": {"$in": [item["token"] for item in items]}})
        }
        expired = [
            Delivery(campaign_id, item["user_id"], tokens[item["token"]], json.loads(item["message"]))
            for item in items
            if item["token"] in tokens
        ]
        later = await self.db.campaign_items.find_one(
            {"campaign_id": campaign_id, "status": "sending", "claimed_until": {"$gt": now_ms}},
            sort=[("claimed_until", ASCENDING)],
        )
        return expired, (int(later["claimed_until"]) if later else None)

    async def campaign_item_counts(self, campaign_id: str) -> list[tuple[str, str, int]]:
        pipeline: list[dict[str, Any]] = [
            {"$match": {"campaign_id": campaign_id}},
            {"$group": {"_id": {"status": "$status", "reason": "$reason"}, "n": {"$sum": 1}}},
        ]
        return [
            (row["_id"]["status"], row["_id"].get("reason") or "", row["n"])
            async for row in await self.db.campaign_items.aggregate(pipeline)
        ]

    # -- inspection ------------------------------------------------------------------------------------------
    async def unsubscribed_users(self) -> int:
        return await self.db.unsubscribed.count_documents({})

    async def refused_rows(self, user_id: str | None = None) -> list[OutboxItem]:
        query: dict[str, Any] = {"status": "refused"}
        if user_id is not None:
            query["user_id"] = user_id
        return [_outbox(doc) async for doc in self.db.outbox.find(query).sort("order", ASCENDING)]


async def _ignoring_duplicates(write: Awaitable[Any]) -> None:
    """Insert-if-absent by upsert races when two processes upsert the same `_id` at once: the loser gets a
    duplicate-key error although the document it wanted is there. Anything else is raised."""
    try:
        await write
    except DuplicateKeyError:
        pass
    except BulkWriteError as err:
        if any(e.get("code") != _DUPLICATE for e in err.details.get("writeErrors", [])):
            raise


def _date(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _escape(text: str) -> str:
    return "".join("\\" + c if c in r".^$*+?()[]{}|\/" else c for c in text)
