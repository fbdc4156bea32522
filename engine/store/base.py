"""The Store protocols, one per role, and their plain records.

The runtime sees a `Store`: the roles it works through (inbox, users, outbox, leases, tokens, campaigns). What
people and tests read (counts, a user's tokens, refused messages) is `Inspection`, kept out of the runtime's
protocol. A backend implements both (`Backend`) and only stores and fetches: the rules (what a refused row shows,
how a campaign's counts are keyed, which campaigns belong together) live in `engine/runtime/`.

Promises 2-4 of the design rest on three operations: `add_events` (insert-if-absent: a duplicate is the dedupe),
`commit_step` (user, outbox rows and the event's handled mark in one atomic write: the transactional outbox), and
the outbox status updates around each send.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple, Protocol

from ..immutable import immutable
from .status import CampaignStatus, ItemStatus, OutboxStatus, TokenStatus


@dataclass(kw_only=True)
class UserRecord:
    user_id: str
    page_id: str = ""
    flow: str = ""
    state: str | None = None
    tags: set[str] = field(default_factory=set)
    variables: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] | None = None
    last_interaction_ms: int = 0  # when the user last did something that opens the 24h window
    last_message_ms: int = 0  # when the user last wrote (HUMAN_AGENT's 7 days count from it)
    unreachable: bool = False  # blocked the page / unavailable: never messaged again
    unsubscribed_ms: int = 0  # when the user unsubscribed (0: subscribed): no campaign, no OTN request until undone
    created_ms: int = 0
    # Messenger's Handover Protocol: while `thread_owner` names another app (a person in the Page Inbox), the bot
    # sends nothing. "" is the bot itself.
    thread_owner: str = ""
    handed_over_ms: int = 0  # when the thread left the bot: the idle timeout counts from it (or the agent's reply)
    agent_replied_ms: int = 0  # the last reply a person sent through otnflow (POST /api/agent/reply)
    handover_state: str = ""  # the state that handed over: its `resume` and `take_back` apply when control returns

    @property
    def with_human(self) -> bool:
        return bool(self.thread_owner)

    def to_data(self) -> dict[str, Any]:
        """The record as JSON-ready data (not dataclasses.asdict: its deep copy is measurable on the hot path)."""
        data = {name: getattr(self, name) for name in _USER_FIELDS}
        data["tags"] = sorted(self.tags)
        return data

    @classmethod
    def from_data(cls, user_id: str, data: dict[str, Any]) -> UserRecord:
        """Unknown keys (written by a newer version) are ignored; missing ones take their defaults. The keywords are
        the fields' own names, not the decoded JSON's keys: Python matches those by identity, decoded ones by
        comparing strings, which took a third of this call (docs/architecture.md, Performance)."""
        values = {name: data[name] for name in _USER_FIELDS if name in data}
        values["tags"] = set(values.get("tags", ()))
        return cls(user_id=user_id, **values)


_USER_FIELDS = tuple(f.name for f in fields(UserRecord) if f.name != "user_id")


@immutable(kw_only=True)
class StoredEvent:
    key: str
    user_id: str
    page_id: str
    timestamp: int
    kind: str
    body: str  # the event's own JSON, as Meta sent it
    received_ms: int = 0
    #: (body, the event as the webhook parsed it), when this process's webhook just stored it: the step need not
    #: parse `body` again. Not stored; a copy with another body (a middleware's) is parsed from its body.
    parsed: tuple[str, object] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, kw_only=True)
class RejectedEvent:
    """A dead letter: one event of a signed, well-formed body that could not be accepted, kept with the reason so
    that an operator can see what Meta sent (the body was answered 200: Meta would resend it forever)."""

    key: str  # a hash of the event's JSON: Meta's retries of the same body add nothing
    where: str  # e.g. entry[0].messaging[2]
    kind: str
    reason: str
    body: str  # the event's JSON, size-capped
    received_ms: int = 0


@dataclass(kw_only=True)
class OutboxMeta:
    """What the policy gate needs to know of an outbox row, stored with it (as JSON: the keys below, those left at
    their default omitted, except `kind`, `responding` and `promotional`)."""

    kind: str = "message"  # a policy MessageKind: message or otn_request (token sends are campaigns')
    responding: bool = False  # answers the user's own action
    promotional: bool = True
    tag: str | None = None  # the message tag the flow declared
    topic: str | None = None  # an OTN request's topic
    source_state: str = ""  # an OTN request's state (its otn.vars title the request)
    re_request: bool = False  # the loop's request, armed again when it does not go
    after_optin: bool = False  # a reply to a Notify Me tap: the sender's last gate gives the same reason

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": str(self.kind), "responding": self.responding, "promotional": self.promotional}
        if self.tag:
            data["tag"] = self.tag
        if self.topic is not None:
            data.update(topic=self.topic, source_state=self.source_state)
        if self.re_request:
            data["re_request"] = True
        if self.after_optin:
            data["after_optin"] = True
        return data

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> OutboxMeta:
        """Unknown keys are ignored; missing ones take their defaults."""
        tag, topic = data.get("tag"), data.get("topic")
        return cls(
            kind=str(data.get("kind", "message")),
            responding=bool(data.get("responding", False)),
            promotional=bool(data.get("promotional", True)),
            tag=str(tag) if tag else None,
            topic=str(topic) if topic is not None else None,
            source_state=str(data.get("source_state", "")),
            re_request=bool(data.get("re_request", False)),
            after_optin=bool(data.get("after_optin", False)),
        )


@dataclass(kw_only=True)
class OutboxItem:
    """One message to send. `message` is the Send API `message` object; how it goes (messaging type, tag, OTN
    token) is decided at send time by the policy gate, from `meta`."""

    key: str  # "<event key>#<position>": a replayed event maps to the same keys, so nothing is queued twice
    user_id: str
    message: dict[str, Any]
    meta: OutboxMeta = field(default_factory=OutboxMeta)
    status: OutboxStatus = OutboxStatus.PENDING
    detail: str = ""
    created_ms: int = 0
    seq: int = 0
    updated_ms: int = 0  # when the status last changed


class StatusMark(NamedTuple):
    """An outbox row's new status, written after its send without the sender waiting (a tuple: many a second)."""

    key: str
    status: OutboxStatus
    detail: str
    updated_ms: int


class OtnLogLine(NamedTuple):
    """One line of the OTN log (the `otn_log` table's columns, in its order)."""

    user_id: str
    topic: str
    what: str
    at_ms: int


def request_key(variables: Mapping[str, str]) -> str:
    """The canonical form of a request's variables, stored with each token and indexed with its topic: a
    notification reaches the tokens whose key it matches. "" for a request made without variables."""
    return json.dumps(dict(sorted(variables.items())), ensure_ascii=False, separators=(",", ":")) if variables else ""


def request_vars(key: str) -> dict[str, str]:
    return dict(json.loads(key)) if key else {}


@dataclass(kw_only=True)
class Token:
    """A One-Time Notification token: one message on `topic`, any time before `expires_ms`, once, about what the
    request the user accepted named: its variables (`request_vars`, e.g. {"product": "Rioja 2015"}) and `title`."""

    token: str
    user_id: str
    topic: str
    payload: str
    received_ms: int
    expires_ms: int
    source_state: str = ""  # the flow state whose request the user accepted (its otn.vars title the next request)
    status: TokenStatus = TokenStatus.VALID
    request_vars: dict[str, str] = field(default_factory=dict)  # the asking state's otn.vars, rendered
    title: str = ""  # the Notify Me title the user accepted, rendered

    @property
    def request_key(self) -> str:
        return request_key(self.request_vars)


@dataclass(kw_only=True)
class StepWrite:
    """Everything one handled event changes, written atomically by `commit_step`."""

    event_key: str
    user: UserRecord
    outbox: list[OutboxItem] = field(default_factory=list)
    tokens: list[Token] = field(default_factory=list)  # opt-ins received
    disarm: list[str] = field(default_factory=list)  # armed re-request topics this step consumed
    otn_log: list[tuple[str, str]] = field(default_factory=list)  # (topic, what): optin, request_refused, ...
    consent: bool | None = None  # False: unsubscribed now (revoke the user's tokens, disarm all); True: subscribed


@dataclass(kw_only=True)
class Campaign:
    id: str
    topic: str
    segment: str = ""
    vars: dict[str, Any] = field(default_factory=dict)
    created_ms: int = 0
    status: CampaignStatus = CampaignStatus.RUNNING


@dataclass
class Delivery:
    """A campaign item being delivered: the user, the token claimed for them, and the message (recorded in the
    item before the send: a campaign's items are its outbox)."""

    campaign_id: str
    user_id: str
    token: Token
    message: dict[str, Any]


@dataclass(kw_only=True)
class DeliveryResult:
    """How a delivery ended: the item's status and reason, the token's status, the loop's next request to arm
    (topic, source state) when the user's window was closed, and what to write in the OTN log for the token's
    topic (nothing if empty)."""

    delivery: Delivery
    item_status: ItemStatus
    reason: str
    token_status: TokenStatus
    detail: str = ""
    arm: tuple[str, str] | None = None
    logged: str = ""


class Lifecycle(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...


class InboxStore(Protocol):
    """Meta's events, stored before the webhook answers 200, and the dead letters."""

    async def add_events(self, events: Sequence[StoredEvent]) -> list[StoredEvent]:
        """Insert the events not stored yet, in one atomic write; return those that were new."""
        ...

    async def add_rejected(self, rejected: Sequence[RejectedEvent]) -> int:
        """Keep dead letters, insert-if-absent by key; return how many were new."""
        ...

    async def pending_events(self, user_id: str, limit: int = 100) -> list[StoredEvent]:
        """The user's unhandled events, oldest timestamp first."""
        ...

    async def fail_event(self, key: str, error: str, now_ms: int) -> None:
        """Handling raised: mark the event handled with its error, kept for inspection (never silently dropped)."""
        ...

    async def prune_inbox(self, now_ms: int) -> int:
        """Drop handled events older than the retention (they dedupe Meta's retries until then); MongoDB's TTL index
        does it by itself. Returns how many went."""
        ...

    async def users_with_pending_work(self) -> list[str]:
        """Users with unhandled events or unsent outbox rows: what a restart resumes."""
        ...


class UserStore(Protocol):
    """User records, and the one atomic write of a conversation step."""

    async def load_user(self, user_id: str) -> UserRecord | None: ...

    async def load_users(self, user_ids: Sequence[str]) -> dict[str, UserRecord]: ...

    async def load_for_step(self, user_id: str) -> tuple[UserRecord | None, list[tuple[str, str]]]:
        """The user and their armed re-requests, in one round trip: what a conversation step reads."""
        ...

    async def commit_step(self, write: StepWrite, now_ms: int) -> bool:
        """Atomically: save the user, append the outbox rows, store received tokens, consume armed re-requests,
        log OTN events, mark the event handled. False (and nothing written) when the event was already handled."""
        ...

    async def put_user(self, user: UserRecord) -> None:
        """Save a user record outside any event (admin tools, the playground)."""
        ...

    async def forget_user(self, user_id: str) -> None:
        """Delete everything stored about a user: record, inbox, outbox, tokens, armed requests, OTN log."""
        ...

    async def mark_unreachable(self, user_id: str) -> None: ...

    async def set_thread_owner(self, user_id: str, owner: str, since_ms: int, state: str) -> None:
        """The Handover Protocol moved the user's thread (a pass Meta accepted): who owns it now, since when, and
        the state that handed it over. Only these fields change."""
        ...

    async def users_with_human(self, limit: int) -> list[UserRecord]:
        """Up to `limit` users whose thread another app owns (what the idle timeout looks at)."""
        ...


class OutboxStore(Protocol):
    """Messages to send, each row's status moved around its Send API call."""

    async def pending_outbox(self, user_id: str) -> list[OutboxItem]: ...
    async def add_outbox(self, item: OutboxItem, now_ms: int) -> None: ...
    async def set_outbox_status(self, key: str, status: OutboxStatus, detail: str, now_ms: int) -> None: ...

    def set_outbox_statuses(self, marks: Sequence[StatusMark], logged: Sequence[OtnLogLine] = ()) -> Awaitable[None]:
        """Queue one write of several rows' statuses and the OTN log lines of the requests among them, in the order
        given, behind every write queued before; the awaitable is done when it has landed (or failed). Not a
        coroutine: the sender queues the marks of many sends at once and awaits nothing (flush waits for them)."""
        ...

    async def recover_in_flight(self, detail: str) -> int:
        """At start: rows left 'sending' by a crash become 'uncertain', with `detail` (not resent: see
        docs/architecture.md)."""
        ...


class LeaseStore(Protocol):
    """One process at a time per user, across processes sharing the store."""

    async def acquire_lease(self, user_id: str, owner: str, now_ms: int, ttl_ms: int) -> bool:
        """Take or renew the user's lease; False while another owner's lease has not expired."""
        ...

    async def release_lease(self, user_id: str, owner: str) -> None: ...

    async def recover_user_in_flight(self, user_id: str, detail: str) -> int:
        """Rows of this user left `sending` by a process whose lease expired: `uncertain` with `detail`, never
        resent."""
        ...

    async def users_needing_work(self, now_ms: int, limit: int) -> list[str]:
        """Up to `limit` users with pending events or rows and no live lease: what a process that died left."""
        ...


class TokenStore(Protocol):
    """OTN tokens, the OTN log and the loop's armed re-requests."""

    async def request_counts(
        self, user_id: str, topic: str, since_ms: int, now_ms: int, request_key: str | None = None
    ) -> tuple[int, int]:
        """What anti-nagging needs, in one read: the valid tokens the user holds for the topic (and for the same
        request, `request_key`, if given), and the OTN
        requests for it still unanswered (made since `since_ms` and after the user's last opt-in to the topic).
        Requests are counted from the outbox: queued, in flight, sent or uncertain, so a request counts from the
        commit that queued it, not from a log written after the send."""
        ...

    async def log_otn(self, user_id: str, topic: str, what: str, now_ms: int) -> None: ...

    async def arm(self, user_id: str, topic: str, source_state: str, now_ms: int) -> None:
        """Remember to ask for `topic` again the moment the user engages (the window being closed now)."""
        ...

    async def otn_stats(self, now_ms: int, soon_ms: int) -> dict[str, dict[str, int]]:
        """Per topic: the OTN log's counts by kind, tokens held, tokens expiring before `soon_ms`."""
        ...


class CampaignStore(Protocol):
    """Campaigns and their items: a campaign's items are its outbox."""

    async def open_campaign(self, campaign: Campaign) -> Campaign:
        """Create the campaign, or return the stored one with that id."""
        ...

    async def token_holders(self, topic: str, request_key: str, now_ms: int, after_user: str, limit: int) -> list[str]:
        """Users holding a valid token for the topic whose request was made with `request_key`, by user id after
        `after_user` (keyset pages: an index range, never a scan of all users)."""
        ...

    async def held_requests(self, topic: str, now_ms: int) -> dict[str, int]:
        """The topic's valid tokens grouped by request: request key -> how many users hold one."""
        ...

    async def add_campaign_items(
        self, campaign_id: str, user_ids: Sequence[str], skipped: dict[str, str], now_ms: int
    ) -> None:
        """Items for `user_ids` (pending) and `skipped` (user -> reason), insert-if-absent."""
        ...

    async def pending_items(self, campaign_id: str, after_user: str, limit: int) -> list[str]:
        """Pending items' users after `after_user`, in user id order (keyset pages)."""
        ...

    async def skip_item(self, campaign_id: str, user_id: str, reason: str, now_ms: int) -> None: ...

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
        """In one atomic write, for each (user, message) whose item is pending: claim the user's oldest valid
        token for the topic whose request is one of `request_keys` (what the notification is about), mark the
        item `sending` until `now_ms + claim_ms` and record the message in it (a campaign's items are its
        outbox). Users with no valid token left get their item skipped with `no_token_reason` and no Delivery."""
        ...

    async def finish_deliveries(self, finished: Sequence[DeliveryResult], now_ms: int) -> None:
        """In one atomic write: each item's and token's final status, the OTN log entries (`logged`), the armed
        re-requests."""
        ...

    async def uncertain_deliveries(self, campaign_id: str, now_ms: int) -> tuple[list[Delivery], int | None]:
        """Items left `sending` whose claim expired (their run died), with their token, to settle; and when the
        earliest claim still running expires (None if none), so a resumed run knows how long to wait."""
        ...

    async def campaign_item_counts(self, campaign_id: str) -> list[tuple[str, str, int]]:
        """(status, reason, how many) for each status and reason the campaign's items have."""
        ...

    async def finish_campaign(self, campaign_id: str, now_ms: int) -> None: ...

    async def campaigns_by_prefix(self, prefix: str) -> list[Campaign]:
        """Campaigns whose id starts with `prefix`, oldest first."""
        ...


class Store(Lifecycle, InboxStore, UserStore, OutboxStore, LeaseStore, TokenStore, CampaignStore, Protocol):
    """Everything the runtime (dispatcher, conversation, sender, campaigns) does with the store."""


class Inspection(Protocol):
    """Reads for people and tests (health and metrics, the command line, the playground, the test harness): the
    runtime never calls them."""

    async def counts(self) -> dict[str, int]:
        """Row counts by table and status (and `rejected`: the dead letters), for health checks, metrics, tests."""
        ...

    async def unsubscribed_users(self) -> int:
        """How many users are unsubscribed (`otnflow stats`, /api/stats, /metrics)."""
        ...

    async def rejected_events(self, limit: int = 100) -> list[RejectedEvent]:
        """The newest dead letters first."""
        ...

    async def count_tokens(self, user_id: str, topic: str, now_ms: int, request_key: str | None = None) -> int:
        """Valid, unexpired tokens the user holds for the topic (and for the request `request_key`, if given)."""
        ...

    async def tokens(self, user_id: str) -> list[Token]: ...

    async def count_otn_log(self, user_id: str, topic: str, what: str, since_ms: int) -> int: ...

    async def last_otn(self, user_id: str, topic: str, what: str) -> int:
        """When the log last recorded `what` for the user and topic (0: never)."""
        ...

    async def armed(self, user_id: str) -> list[tuple[str, str]]:
        """(topic, source_state) of the user's armed re-requests, oldest first."""
        ...

    async def refused_rows(self, user_id: str | None = None) -> list[OutboxItem]:
        """Outbox rows with status `refused` (of one user, or of all), in the order they were queued."""
        ...


class Backend(Store, Inspection, Protocol):
    """What a backend implements and `open_store` returns."""


#: Every operation of a backend but open/close: what the test harness cuts off when it kills a process.
OPERATIONS = tuple(
    sorted(
        name
        for role in (InboxStore, UserStore, OutboxStore, LeaseStore, TokenStore, CampaignStore, Inspection)
        for name, value in vars(role).items()
        if not name.startswith("_") and callable(value)
    )
)
