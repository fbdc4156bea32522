"""Notification campaigns: deliver a topic to every user holding a valid OTN token, one message each, chosen by
the user's segment, then arm the loop's next request.

A campaign is a stored record with one item per eligible user, so a run killed at any point resumes when run
again (the same topic, segment and vars name the same campaign; once it finished, running it again starts a new
one) without sending anyone a second message:
- an item is `pending`, then `sending` (its token claimed and its outbox row recorded, in one write), then
  `delivered`, `failed` or `skipped`, each with a reason;
- an item left `sending` by a crash is resent with the **same** token: Meta refuses a token's second use, so if
  the first attempt had reached Meta the retry is refused and the item counts as delivered, and if it had not,
  the retry delivers it. Either way the user gets exactly one message and no token serves twice. The resend passes
  the policy gate again first, like every token send: an expired token is never sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from typing import Any, TypeVar

from ..flow import CompiledFlow, Snapshot
from ..flow.segments import ALWAYS, Segment, parse_segment
from ..messenger.client import GraphClient
from ..messenger.errors import Outcome
from ..messenger.outbound import send_body
from ..policy import MessageKind, Outgoing, Refusal, window_open
from ..store import (
    Campaign,
    CampaignStatus,
    Delivery,
    DeliveryResult,
    ItemStatus,
    OtnLogged,
    OutboxStatus,
    Store,
    TokenStatus,
    UserRecord,
    request_key,
)
from .audience import Audience, holder_pages, notification_audience, spell_api, spell_cli
from .clock import Clock
from .flows import LiveFlows
from .metrics import Metrics
from .policy_check import Gate
from .replies import reply_to_outbox
from .sender import OutboxSender

log = logging.getLogger("otnflow.notify")
T = TypeVar("T")
RunForUser = Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]]
Progress = Callable[[int, int], None]
PAGE = 500
CHUNK = 64  # tokens claimed per write


class ItemReason(StrEnum):
    """Why a campaign item ended as it did, besides the gate's refusals (`Refusal`) and a failed send's outcome
    (`Outcome`): stored as the item's reason, the same plain words as before the enum."""

    UNKNOWN_USER = "unknown_user"  # skipped: the user was forgotten meanwhile
    CONFIRMED_BY_TOKEN_REUSE = "confirmed_by_token_reuse"  # delivered: a resend's refusal shows the first went out


NO_VALID_TOKEN = Refusal.NO_VALID_TOKEN  # an item's skip reason: its user's tokens were all used or expired meanwhile


def item_counts(rows: Sequence[tuple[str, str, int]]) -> dict[str, int]:
    """A campaign's item counts keyed by `status` and by `status:reason` (from the store's grouped rows)."""
    counts: dict[str, int] = {}
    for status, reason, n in rows:
        counts[status] = counts.get(status, 0) + n
        if reason:
            counts[f"{status}:{reason}"] = n
    return counts


async def campaign_counts(store: Store, campaign_id: str) -> dict[str, int]:
    return item_counts(await store.campaign_item_counts(campaign_id))


async def campaign_runs(store: Store, base_id: str) -> list[Campaign]:
    """The runs of one notification, oldest first: `base_id`, then `base_id.2`, `base_id.3`..."""
    found = await store.campaigns_by_prefix(base_id)
    return [
        c for c in found if c.id == base_id or (c.id.startswith(base_id + ".") and c.id[len(base_id) + 1 :].isdigit())
    ]


class CampaignError(ValueError):
    """The campaign cannot start: unknown topic, bad segment, missing variables, a value nobody holds. The message
    says which, worded for the command line; `api_message` says the same for the admin API and the playground."""

    def __init__(self, message: str, api_message: str | None = None) -> None:
        super().__init__(message)
        self.api_message = api_message or message


@dataclass(kw_only=True)
class CampaignReport:
    campaign: Campaign
    eligible: int
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    stopped: str = ""  # why the run stopped early (sending stopped), if it did

    @property
    def delivered(self) -> int:
        return self.counts.get(ItemStatus.DELIVERED, 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign.id,
            "topic": self.campaign.topic,
            "segment": self.campaign.segment,
            "vars": self.campaign.vars,
            "eligible": self.eligible,
            "counts": self.counts,
            "seconds": round(self.seconds, 3),
            "stopped": self.stopped,
        }


class RateLimiter:
    """At most `rate` acquisitions per second, smoothly (one slot every 1/rate seconds)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(now, self._next) + self.interval
        if wait > 0:
            await asyncio.sleep(wait)


def campaign_id(topic: str, segment: str, variables: Mapping[str, Any]) -> str:
    digest = hashlib.sha1(json.dumps([topic, segment, sorted(variables.items())]).encode()).hexdigest()[:10]
    return f"{topic}-{digest}"


def _refuse(audience: Audience) -> None:
    """A notification that is about no held request (a variable missing, a value nobody holds) does not start."""
    if audience.problem():
        raise CampaignError(audience.problem(spell_cli), audience.problem(spell_api))


def _check_params(flow: CompiledFlow, topic: str, variables: Mapping[str, Any]) -> None:
    missing = [p for p in flow.spec.topics[topic].params if p not in variables]
    if missing:
        needs = f"topic '{topic}' needs {', '.join(missing)}"
        raise CampaignError(f"{needs}: pass {spell_cli(missing[0])}", f"{needs}: give {spell_api(missing[0])}")


async def run_directly(user_id: str, job: Callable[[], Awaitable[T]]) -> T:
    """Run a user's campaign job at once (the command line: no worker per user to run it in)."""
    return await job()


class CampaignRunner:
    def __init__(
        self,
        flows: LiveFlows,
        store: Store,
        client: GraphClient,
        sender: OutboxSender,
        gate: Gate,
        clock: Clock,
        metrics: Metrics,
        concurrency: int = 32,
        rate_per_second: float = 250.0,
        run_for_user: RunForUser = run_directly,
        claim_seconds: float = 120.0,
    ) -> None:
        self.flows = flows  # a run takes its topic's flow once, at its start: a reload changes the next run
        self.store = store
        self.client = client
        self.sender = sender
        self.gate = gate
        self.clock = clock
        self.metrics = metrics
        self.concurrency = concurrency
        self.limiter = RateLimiter(rate_per_second)
        self.run_for_user = run_for_user
        self.claim_ms = int(claim_seconds * 1000)  # how long a claimed item is this run's before others settle it

    def flow_for_topic(self, topic: str) -> CompiledFlow:
        flows = self.flows.current
        flow = flows.declaring(topic)
        if flow is None:
            raise CampaignError(f"unknown topic '{topic}'; topics: {', '.join(flows.topics()) or 'none'}")
        return flow

    def prepare(
        self, topic: str, segment: str, variables: Mapping[str, Any], name: str | None
    ) -> tuple[CompiledFlow, Segment, Campaign]:
        flow = self.flow_for_topic(topic)
        try:
            chosen = parse_segment(segment) if segment else ALWAYS
        except ValueError as err:
            raise CampaignError(f"invalid segment expression {segment!r}: {err}") from None
        campaign = Campaign(
            id=name or campaign_id(topic, segment, variables),
            topic=topic,
            segment=segment,
            vars=dict(variables),
            created_ms=self.clock.now_ms(),
        )
        return flow, chosen, campaign

    async def run(
        self,
        topic: str,
        segment: str = "",
        variables: Mapping[str, Any] | None = None,
        name: str | None = None,
        progress: Progress | None = None,
        only_users: Sequence[str] | None = None,
    ) -> CampaignReport:
        """Deliver `topic` to every token holder in the segment (or only to `only_users`, e.g. the playground's)."""
        return await self.execute(await self.open(topic, segment, variables or {}, name), progress, only_users)

    async def open(self, topic: str, segment: str, variables: Mapping[str, Any], name: str | None) -> Campaign:
        """Check the request and store the campaign (or find the unfinished one to resume). A new campaign must be
        about requests someone holds (`notification_audience`); a resumed one carries on regardless."""
        flow, _, campaign = self.prepare(topic, segment, variables, name)
        campaign, resumed = await self._resume_or_new(campaign)
        if not resumed:
            _refuse(await notification_audience(self.store, flow, topic, variables, self.clock.now_ms()))
        _check_params(flow, topic, variables)
        return await self.store.open_campaign(campaign)

    async def dry_run(
        self,
        topic: str,
        segment: str = "",
        variables: Mapping[str, Any] | None = None,
        only_users: Sequence[str] | None = None,
    ) -> Audience:
        """The audience per variant of a notification, nothing sent, claimed or stored (`notify --dry-run`)."""
        flow, chosen, _ = self.prepare(topic, segment, variables or {}, None)
        audience = await notification_audience(
            self.store,
            flow,
            topic,
            variables or {},
            self.clock.now_ms(),
            segment=chosen,
            only_users=only_users,
            count_variants=True,
            gate=self.gate,
        )
        _refuse(audience)
        _check_params(flow, topic, variables or {})
        return audience

    async def execute(
        self, campaign: Campaign, progress: Progress | None = None, only_users: Sequence[str] | None = None
    ) -> CampaignReport:
        started = time.monotonic()
        flow = self.flow_for_topic(campaign.topic)
        chosen = parse_segment(campaign.segment) if campaign.segment else ALWAYS
        await self._settle_expired_claims(flow, campaign, wait=False)
        audience = await notification_audience(self.store, flow, campaign.topic, campaign.vars, self.clock.now_ms())
        eligible = await self._select_audience(campaign, audience.keys, chosen, only_users)
        stopped = await self._deliver_all(flow, campaign, audience.keys, progress)
        if not stopped:
            await self._settle_expired_claims(flow, campaign, wait=True)
        await self.sender.flush()  # the loop's requests' status writes: the report and `done` are final
        counts = await campaign_counts(self.store, campaign.id)
        if not stopped:
            await self.store.finish_campaign(campaign.id, self.clock.now_ms())
        report = CampaignReport(
            campaign=campaign, eligible=eligible, counts=counts, seconds=time.monotonic() - started, stopped=stopped
        )
        log.info("campaign %s: %s", campaign.id, json.dumps(report.as_dict()))
        return report

    async def _settle_expired_claims(self, flow: CompiledFlow, campaign: Campaign, wait: bool) -> None:
        """Items another run left `sending`: once its claim expires (the run died), resend with the same token.
        With `wait`, wait for the claims still running (bounded by claim_seconds) so the run ends settled."""
        while True:
            expired, later = await self.store.uncertain_deliveries(campaign.id, self.clock.now_ms())
            for delivery in expired:
                await self.run_for_user(delivery.user_id, partial(self._settle_uncertain, flow, campaign, delivery))
            if not wait or later is None:
                return
            # another live run's claims: look again shortly (it may finish them well before they expire)
            await asyncio.sleep(min(max(later - self.clock.now_ms(), 0) / 1000 + 0.05, 0.5))

    async def _resume_or_new(self, campaign: Campaign) -> tuple[Campaign, bool]:
        """The same notification run again resumes its unfinished campaign (True); once finished, a run starts
        anew."""
        earlier = await campaign_runs(self.store, campaign.id)
        if earlier and earlier[-1].status == CampaignStatus.RUNNING:
            return earlier[-1], True
        if earlier:
            campaign.id = f"{campaign.id}.{len(earlier) + 1}"
        return campaign, False

    async def _select_audience(
        self, campaign: Campaign, keys: Sequence[str], segment: Segment, only: Sequence[str] | None
    ) -> int:
        """Items for every holder of a request the campaign is about, in the segment, one page of index ranges at
        a time (never a full scan)."""
        eligible, now = 0, self.clock.now_ms()
        async for page in holder_pages(self.store, campaign.topic, keys, now, PAGE):
            if only is not None:
                page = [u for u in page if u in only]
            users = await self.store.load_users(page)
            chosen = [u for u in page if u in users and segment.matches(frozenset(users[u].tags), users[u].variables)]
            eligible += len(chosen)
            await self.store.add_campaign_items(campaign.id, chosen, {}, now)
        return eligible

    async def _deliver_all(
        self, flow: CompiledFlow, campaign: Campaign, keys: Sequence[str], progress: Progress | None
    ) -> str:
        """Pending items page by page (keyset on user id: memory stays flat whatever the audience), each page's
        users read in one go, tokens claimed a chunk at a time in one write each, `concurrency` sends in flight,
        each outcome written in the user's turn (with SQLite's group commit, concurrent outcomes share a
        transaction)."""
        queue: asyncio.Queue[tuple[UserRecord, Delivery] | None] = asyncio.Queue(maxsize=self.concurrency * 2)
        done = 0
        total = (await campaign_counts(self.store, campaign.id)).get(ItemStatus.PENDING, 0)

        def advance(count: int) -> None:
            nonlocal done
            done += count
            if progress:
                progress(done, total)

        async def worker() -> None:
            while (item := await queue.get()) is not None:
                user, delivery = item
                if not self.sender.health.halt_reason:
                    job = partial(self._deliver, flow, campaign, keys, user, delivery)
                    await self.run_for_user(user.user_id, job)
                advance(1)

        workers = [asyncio.create_task(worker()) for _ in range(self.concurrency)]
        after = ""
        while not self.sender.health.halt_reason and (page := await self.store.pending_items(campaign.id, after, PAGE)):
            after = page[-1]
            users = await self.store.load_users(page)
            for start in range(0, len(page), CHUNK):
                chunk = page[start : start + CHUNK]
                claimed = await self._claim(flow, campaign, keys, chunk, users)
                advance(len(chunk) - len(claimed))
                for delivery in claimed:
                    await queue.put((users[delivery.user_id], delivery))
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
        return self.sender.health.halt_reason

    async def _claim(
        self,
        flow: CompiledFlow,
        campaign: Campaign,
        keys: Sequence[str],
        user_ids: list[str],
        users: Mapping[str, UserRecord],
    ) -> list[Delivery]:
        """Gate and render each user's notification, then claim their tokens in one write."""
        now = self.clock.now_ms()
        requests = []
        for user_id in user_ids:
            user = users.get(user_id)
            decision = self.gate.check(
                self.gate.facts(user), Outgoing(kind=MessageKind.NOTIFICATION, with_token=True), now
            )
            if user is None or not decision.allowed:
                await self.store.skip_item(campaign.id, user_id, decision.reason or ItemReason.UNKNOWN_USER, now)
                continue
            snapshot = Snapshot(user.state, frozenset(user.tags), user.variables)
            reply = flow.notification(campaign.topic, snapshot, campaign.vars, user.profile)
            requests.append((user_id, reply_to_outbox(reply, "", user_id, responding=False).message))
        return await self.store.begin_deliveries(
            campaign.id,
            campaign.topic,
            requests,
            now,
            self.claim_ms,
            request_keys=keys,
            no_token_reason=NO_VALID_TOKEN,
        )

    async def _deliver(
        self, flow: CompiledFlow, campaign: Campaign, keys: Sequence[str], user: UserRecord, delivery: Delivery
    ) -> None:
        """Send a claimed token; when Meta says it is invalid, claim the user's next one and try again. The user is
        read again first: this runs in their turn, and they may have unsubscribed since the claim."""
        user = await self.store.load_user(user.user_id) or user
        while not await self._send(flow, campaign, user, delivery, retry=False):
            now = self.clock.now_ms()
            claimed = await self.store.begin_deliveries(
                campaign.id,
                campaign.topic,
                [(user.user_id, delivery.message)],
                now,
                self.claim_ms,
                request_keys=keys,
                no_token_reason=NO_VALID_TOKEN,
            )
            if not claimed:
                return
            delivery = claimed[0]

    async def _settle_uncertain(self, flow: CompiledFlow, campaign: Campaign, delivery: Delivery) -> None:
        """Resend an item a dead run left `sending`, with the same token, if the gate still allows it today."""
        user = await self.store.load_user(delivery.user_id)
        if user is None:  # forgotten meanwhile: nothing to send to
            finished = DeliveryResult(
                delivery=delivery,
                item_status=ItemStatus.SKIPPED,
                reason=ItemReason.UNKNOWN_USER,
                token_status=TokenStatus.VALID,
            )
            await self.store.finish_deliveries([finished], self.clock.now_ms())
            return
        await self._send(flow, campaign, user, delivery, retry=True)

    async def _send(
        self,
        flow: CompiledFlow,
        campaign: Campaign,
        user: UserRecord,
        delivery: Delivery,
        retry: bool,
    ) -> bool:
        """Send one claimed token. True when the item is settled; False to try the user's next token. The gate
        decides once more right before the Send API call (an item resumed after a crash may have outlived its
        token, or its user may have become unreachable or tagged EU): a refusal settles the item `skipped` with the
        reason and leaves the token unused by this run."""
        decision = self.gate.check(
            self.gate.facts(user),
            Outgoing(kind=MessageKind.NOTIFICATION, with_token=True, token_expires_ms=delivery.token.expires_ms),
            self.clock.now_ms(),
        )
        if decision.reason is not None:  # refused; an unsubscribed user's tokens were revoked: they stay so
            finished = DeliveryResult(
                delivery=delivery,
                item_status=ItemStatus.SKIPPED,
                reason=decision.reason,
                token_status=TokenStatus.REVOKED if decision.unsubscribed else TokenStatus.VALID,
            )
            await self.store.finish_deliveries([finished], self.clock.now_ms())
            return True
        await self.limiter.acquire()
        result = await self.client.send(send_body(None, delivery.message, otn_token=delivery.token.token))
        self.metrics.sends.labels(result.outcome.value).inc()
        now = self.clock.now_ms()
        outcome = result.outcome
        if outcome is Outcome.SENT or (retry and outcome is Outcome.POLICY_BLOCKED):
            # On a retry, a refusal means Meta already took this token: the first attempt got through.
            reason = "" if outcome is Outcome.SENT else ItemReason.CONFIRMED_BY_TOKEN_REUSE
            topic = flow.next_topic(campaign.topic)
            window = window_open(self.gate.facts(user), now, self.gate.settings)
            arm = None if window else (topic, delivery.token.source_state)
            # Written before the user's turn ends (this runs in it): their next event finds the request armed.
            # Should the process die before the write, the item stays `sending`, and a resumed campaign resends it
            # with the same token, which Meta refuses if it was used: the item then counts delivered, never twice.
            await self.store.finish_deliveries(
                [
                    DeliveryResult(
                        delivery=delivery,
                        item_status=ItemStatus.DELIVERED,
                        reason=reason,
                        token_status=TokenStatus.SPENT,
                        detail=result.message_id or "",
                        arm=arm,
                        logged=OtnLogged.DELIVERY,
                    )
                ],
                now,
            )
            if window:  # the loop: the window is open, so the next request goes at once
                await self._request_again(flow, campaign, user, topic, delivery.token.source_state, now)
            return True
        if outcome is Outcome.POLICY_BLOCKED:  # the token is invalid, used or expired at Meta: try the next one
            invalid = DeliveryResult(
                delivery=delivery,
                item_status=ItemStatus.PENDING,
                reason="",
                token_status=TokenStatus.INVALID,
                detail=result.detail,
            )
            await self.store.finish_deliveries([invalid], now)
            return False
        if outcome in (Outcome.BAD_TOKEN, Outcome.PERMISSION):  # nothing was spent: the item waits for a re-run
            unsent = DeliveryResult(
                delivery=delivery,
                item_status=ItemStatus.PENDING,
                reason="",
                token_status=TokenStatus.VALID,
                detail=result.detail,
            )
            await self.store.finish_deliveries([unsent], now)
            self.sender.health.halt_reason = f"{outcome.value}: {result.detail}"
            log.critical("SENDING STOPPED during campaign %s: %s", campaign.id, result.detail)
            return True
        token_status = TokenStatus.SPENT if result.reached_meta else TokenStatus.VALID
        await self.store.finish_deliveries(
            [
                DeliveryResult(
                    delivery=delivery,
                    item_status=ItemStatus.FAILED,
                    reason=outcome.value,
                    token_status=token_status,
                    detail=result.detail,
                )
            ],
            now,
        )
        if outcome is Outcome.UNREACHABLE:
            await self.store.mark_unreachable(user.user_id)
        return True

    async def _request_again(
        self, flow: CompiledFlow, campaign: Campaign, user: UserRecord, topic: str, source_state: str, now: int
    ) -> None:
        snapshot = Snapshot(user.state, frozenset(user.tags), user.variables)
        request = flow.otn_request(topic, source_state, snapshot, user.profile, campaign.vars)
        item = reply_to_outbox(request, f"campaign:{campaign.id}:{user.user_id}:request", user.user_id, False)
        item.meta.re_request = True
        asked = request_key(dict(request.otn_vars))
        facts = await self.gate.request_facts(self.store, user, topic, now, request_key=asked)
        decision = self.gate.check(facts, Outgoing(kind=MessageKind.OTN_REQUEST), now)
        if decision.reason is not None:  # refused
            item.status, item.detail = OutboxStatus.REFUSED, decision.reason
        await self.store.add_outbox(item, now)
        if decision.allowed:
            await self.sender.send(user, [item])
