"""A simulated month of a wine shop's Messenger bot, through the real engine (the flow-test harness: signed webhooks
in, the fake Graph API enforcing Meta's rules out, a clock moved hour by hour).

Users visit with a daily probability, say hi, pick red or white, reach the sold-out wine and tap Notify Me with
some probability; a restock campaign goes out every few days; notified users engage after a while (or never); the
server is killed (as SIGKILL would) in the middle of two campaigns and restarted, and the campaign resumed. Some
users opted in a year ago, so tokens expire during the month.

    .venv/bin/python bench/simulate.py                          # 10,000 users, 30 days, SQLite
    .venv/bin/python bench/simulate.py --users 1000 --mongo     # MongoDB (SecantusDB on loopback, or
                                                                # OTNFLOW_BENCH_MONGODB_URL)

It prints the figures docs/architecture.md quotes: sends the fake refused (must be 0), deliveries, the share of
deliveries whose next request went out once the user engaged (must be 100%), the delay from engagement to
re-request (wall clock), tokens expired unused, the policy gate's refusals by reason, and the wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))  # first: the project's `actions` package, not bench/actions.py

from _common import machine_line, start_secantus  # noqa: E402

from engine.local.fake_graph import SentMessage  # noqa: E402
from engine.runtime.campaigns import CampaignError  # noqa: E402
from engine.runtime.inspection import refused_messages  # noqa: E402
from engine.testing.harness import PAGE_ID, Bot  # noqa: E402
from engine.web.keys import STORE  # noqa: E402

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
YEAR_MS = 365 * DAY_MS
BATCH = 100  # events per webhook body, as Meta batches them
PRODUCTS = ("Sauvignon 2024", "Rioja Gran Reserva 2015")


@dataclass
class Figures:
    engaged_at: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))  # user -> engagement times
    posted_wall: dict[tuple[str, int], float] = field(default_factory=dict)  # (user, event ms) -> wall time posted
    kills: list[int] = field(default_factory=list)
    campaigns: list[dict[str, Any]] = field(default_factory=list)


class Month:
    def __init__(self, bot: Bot, rng: random.Random, args: argparse.Namespace) -> None:
        self.bot, self.rng, self.args = bot, rng, args
        self.users = [f"u{i:05d}" for i in range(args.users)]
        self.figures = Figures()
        self.seen = 0
        self.last_choices: dict[str, dict[str, str]] = {}  # user -> title -> payload of the latest choices
        self.last_request: dict[str, str] = {}  # user -> payload of the latest OTN request not tapped yet
        self.engage_at: dict[int, list[str]] = defaultdict(list)  # tick hour -> users who tap "Show me" then

    # -- what users do: batches of signed webhook events ------------------------------------------------------
    async def post(self, events: list[tuple[str, dict[str, Any]]], opens_window: bool = True) -> None:
        now = self.bot.clock.advance(seconds=1)
        wall = time.time()  # the fake stamps what it receives with time.time() too
        for start in range(0, len(events), BATCH):
            messaging = []
            for user, payload in events[start : start + BATCH]:
                messaging.append({"sender": {"id": user}, "recipient": {"id": PAGE_ID}, "timestamp": now, **payload})
                if opens_window:
                    self.bot.fake.saw(user, now)
                    self.figures.engaged_at[user].append(now)
                    self.figures.posted_wall[(user, now)] = wall
            body = {"object": "page", "entry": [{"id": PAGE_ID, "time": now, "messaging": messaging}]}
            await self.bot.post(body)
        self.read_replies()

    def read_replies(self) -> None:
        """Index what the bot sent since last time: each user's latest choices and latest request."""
        for sent in self.bot.fake.sent[self.seen :]:
            user = sent.user_id or ""
            message = sent.body.get("message", {})
            quick = {q["title"]: q["payload"] for q in message.get("quick_replies", [])}
            if quick:
                self.last_choices[user] = quick
            attachment = message.get("attachment", {}).get("payload", {})
            if attachment.get("template_type") == "one_time_notif_req":
                self.last_request[user] = attachment["payload"]
            if sent.otn_token and self.rng.random() < self.args.engage:
                later = self.hour() + 1 + int(self.rng.expovariate(1 / self.args.engage_hours))
                self.engage_at[later].append(user)
        self.seen = len(self.bot.fake.sent)

    def hour(self) -> int:
        return (self.bot.clock.now_ms() - self.start_ms) // HOUR_MS

    async def says(self, users: list[str], text: str) -> None:
        await self.post([(u, {"message": {"mid": self.bot.mid(), "text": text}}) for u in users])

    async def taps(self, users: list[str], title: str) -> list[str]:
        events = []
        for user in users:
            payload = self.last_choices.get(user, {}).get(title)
            if payload is not None:
                events.append(
                    (user, {"message": {"mid": self.bot.mid(), "text": title, "quick_reply": {"payload": payload}}})
                )
        await self.post(events)
        return [user for user, _ in events]

    async def opt_in(self, users: list[str]) -> None:
        events = []
        for user in users:
            payload = self.last_request.pop(user, None)
            if payload is None:
                continue
            token = self.bot.fake.issue_token(user, payload, self.bot.clock.now_ms())
            optin = {"type": "one_time_notif_req", "payload": payload, "one_time_notif_token": token}
            events.append((user, {"optin": optin}))
        await self.post(events, opens_window=False)

    async def visits(self, users: list[str]) -> None:
        """hi -> Red (then Older vintages) or White -> the sold-out wine's request -> maybe Notify Me."""
        if not users:
            return
        await self.says(users, "hi")
        reds = [u for u in users if self.rng.random() < 0.5]
        whites = [u for u in users if u not in set(reds)]
        await self.taps(reds, "Red")
        await self.taps(reds, "Older vintages")
        await self.taps(whites, "White")
        await self.opt_in([u for u in users if self.rng.random() < self.args.optin])

    # -- what the shop does -----------------------------------------------------------------------------------
    async def campaign(self, product: str, kill: bool) -> None:
        bot = self.bot
        self.bot.clock.advance(seconds=1)
        if kill:
            before = len(bot.fake.sent)
            bot.fake.delay = 0.002
            task = asyncio.create_task(bot.notify("restock", product=product))
            for _ in range(20_000):
                if task.done() or len(bot.fake.sent) - before >= 40:
                    break
                await asyncio.sleep(0.001)
            self.figures.kills.append(bot.clock.now_ms())
            await bot.restart(kill=True)
            bot.fake.delay = 0.0
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, CampaignError):
                await task
        try:
            report = await bot.notify("restock", product=product)
            self.figures.campaigns.append({"product": product, "killed": kill, **report.counts})
        except CampaignError as err:
            self.figures.campaigns.append({"product": product, "error": str(err)})
        self.read_replies()

    async def prehistory(self) -> None:
        """A tenth of the users visited about a year ago: some of their tokens expire during the month."""
        early = self.rng.sample(self.users, len(self.users) // 10)
        for days_before in (375, 360, 345, 335):
            part = early[: len(early) // 4]
            early = early[len(part) :]
            await self.visits(part)
            self.bot.clock.advance(days=15 if days_before > 335 else 0)
        self.bot.clock.advance(days=335 - 1)

    async def run(self) -> None:
        self.start_ms = self.bot.clock.now_ms()
        await self.prehistory()
        self.start_ms = self.bot.clock.now_ms()
        per_hour = self.args.visit / 24
        campaigns = 0
        for hour in range(self.args.days * 24):
            target = self.start_ms + hour * HOUR_MS
            if self.bot.clock.now_ms() < target:
                self.bot.clock.advance(seconds=(target - self.bot.clock.now_ms()) / 1000)
            visiting = [u for u in self.users if self.rng.random() < per_hour]
            await self.visits(visiting)
            engaging = sorted(set(self.engage_at.pop(hour, [])))
            await self.taps(engaging, "Show me")
            if hour % (24 * self.args.every) == 10:  # 10:00 on campaign days
                campaigns += 1
                await self.campaign(PRODUCTS[campaigns % 2], kill=campaigns in self.args.kill_at)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def request_topic(sent: SentMessage) -> bool:
    payload = sent.body.get("message", {}).get("attachment", {}).get("payload", {})
    return payload.get("template_type") == "one_time_notif_req"


async def report(month: Month, wall: float) -> None:
    bot, figures = month.bot, month.figures
    fake = bot.fake
    deliveries = [m for m in fake.sent if m.otn_token]
    requests: dict[str, list[SentMessage]] = defaultdict(list)
    for sent in fake.sent:
        if request_topic(sent):
            requests[sent.user_id or ""].append(sent)
    gate_rows = await refused_messages(bot.app[STORE])
    limited: dict[str, list[int]] = defaultdict(list)  # when the gate refused a user's request for the request limit
    for row in gate_rows:
        if row["kind"] == "otn_request" and row["reason"] == "request_limit":
            limited[row["user_id"]].append(row["at"])
    re_asked, due_count, held_back, delays = 0, 0, 0, []
    for delivery in deliveries:
        user = delivery.token_user or ""
        engaged = figures.engaged_at.get(user, [])
        window = any(0 <= delivery.at_ms - e < DAY_MS for e in engaged)
        due = delivery.at_ms if window else min((e for e in engaged if e > delivery.at_ms), default=None)
        if due is None:
            continue  # never engaged again (yet): nothing is owed
        holds = any(
            t.user_id == user and not t.used and t.issued_ms + YEAR_MS > due and t.issued_ms < due
            for t in fake.issued.values()
        )
        if holds or any(delivery.at_ms <= k <= due for k in figures.kills):
            continue  # the gate refuses a request while a token is held; a kill may leave one `uncertain`
        asked = [r for r in requests[user] if due <= r.at_ms < due + HOUR_MS]
        if not asked and any(due <= at < due + HOUR_MS for at in limited[user]):
            held_back += 1  # anti-nagging: another request for the topic is still unanswered; it stays armed
            continue
        due_count += 1
        if asked:
            re_asked += 1
            if not window and (user, due) in figures.posted_wall:
                delays.append((asked[0].at - figures.posted_wall[(user, due)]) * 1000)
    end = bot.clock.now_ms()
    expired = [t for t in fake.issued.values() if not t.used and t.issued_ms + YEAR_MS <= end]
    reuse = "one-time notification token already used"
    refused = Counter(r["error"] for r in fake.rejected)
    confirmations = refused.pop(reuse, 0)
    gate = Counter(r["reason"] for r in gate_rows)
    share = 100.0 * re_asked / due_count if due_count else float("nan")
    median = statistics.median(delays) if delays else float("nan")
    lines = [
        f"users {len(month.users)}, days {month.args.days}, campaigns {len(figures.campaigns)}, "
        f"kills {len(figures.kills)}, tokens issued {len(fake.issued)}",
        f"sends refused by the fake: {sum(refused.values())} {dict(refused)}",
        f"  resends on resume that Meta refused as already used (sent before the kill): {confirmations}",
        f"deliveries: {len(deliveries)}",
        f"deliveries re-asked at once or at the user's first engagement: {re_asked}/{due_count} = {share:.1f}%",
        f"  re-requests the gate held back for the request limit (another request for the topic unanswered; "
        f"they stay armed): {held_back}",
        f"engagement -> re-request delay (wall): median {median:.1f} ms, p99 {percentile(delays, 0.99):.1f} ms "
        f"({len(delays)} engagements)",
        f"tokens expired unused: {len(expired)}",
        f"policy gate refusals by reason: {dict(gate)}",
    ]
    print(machine_line("pymongo"))
    print("\n".join(lines))
    for campaign in figures.campaigns:
        print(f"  campaign {campaign}")
    print(f"wall time: {wall:.1f} s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--visit", type=float, default=0.05, help="probability a user visits on a given day")
    parser.add_argument("--optin", type=float, default=0.4, help="probability a visitor taps Notify Me")
    parser.add_argument("--engage", type=float, default=0.6, help="probability a notified user engages")
    parser.add_argument("--engage-hours", type=float, default=12.0, help="mean hours before they do")
    parser.add_argument("--every", type=int, default=3, help="days between campaigns")
    parser.add_argument("--kill-at", type=int, nargs="*", default=[3, 7], help="campaigns killed mid-way")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--mongo", action="store_true", help="MongoDB (SecantusDB on loopback) instead of SQLite")
    args = parser.parse_args()
    logging.getLogger("otnflow").setLevel(logging.ERROR)  # the kills' "uncertain" and "already used" lines
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # the killed campaign's orphaned tasks
    settings: dict[str, Any] = {"notify_rate_per_second": 0, "notify_claim_seconds": 5, "log_level": "ERROR"}
    secantus = None
    if args.mongo:
        base, secantus = start_secantus()
        settings.update(store_url=f"{base}/simulate?directConnection=true", dispatcher_lease_seconds=5)
    started = time.monotonic()
    try:
        async with Bot.start(ROOT / "flows", ROOT / "templates", config=ROOT / "config.toml", **settings) as bot:
            month = Month(bot, random.Random(args.seed), args)
            await month.run()
            await report(month, time.monotonic() - started)
    finally:
        if secantus is not None:
            secantus.terminate()


if __name__ == "__main__":
    asyncio.run(main())
