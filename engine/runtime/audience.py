"""Who a notification reaches. One request, one specific message: a token answers the request the user accepted
("Tell me when the Rioja Gran Reserva 2015 is back"), so a notification reaches a token only when every variable
of that token's request has the same value in the notification. Extra notification variables are only template
variables; requests made without variables are reached by every notification of their topic.

`notification_audience` is the one place that decides it, for the CLI, the admin API, the playground and the
campaign runner alike: which held requests a notification is about, what is wrong with it (a variable the holders'
requests carry but the notification lacks, a value nobody holds), and, on demand, how many users each variant of
the topic would reach.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ..flow import CompiledFlow, Snapshot
from ..flow.compiler import scalar_text
from ..flow.segments import ALWAYS, Segment
from ..policy import MessageKind, Outgoing, PolicySettings, Refusal, decide
from ..store import Store, request_vars
from .policy_check import Gate

PAGE = 500

#: How a variable is asked for: on the command line (`--var product=...`) or in the API's JSON.
Spell = Callable[[str], str]


def spell_cli(name: str) -> str:
    return f"--var {name}=..."


def spell_api(name: str) -> str:
    return f'"vars": {{"{name}": ...}}'


@dataclass(frozen=True, kw_only=True)
class HeldRequest:
    """Requests of one topic made with the same variables, and how many users hold a valid token for them."""

    vars: Mapping[str, str]
    key: str
    holders: int


@dataclass(frozen=True, kw_only=True)
class VariantAudience:
    """The users one variant of the topic would go to."""

    index: int
    when: str  # the variant's segment expression; "" for the default
    users: int


@dataclass(frozen=True, kw_only=True)
class Audience:
    """A notification's audience: what is held, what this notification is about, and what is wrong with it."""

    topic: str
    variables: Mapping[str, str]
    held: tuple[HeldRequest, ...]
    reached: tuple[HeldRequest, ...]  # the held requests whose every variable the notification matches
    missing: tuple[str, ...] = ()  # request variables the notification does not give
    unheld: tuple[tuple[str, str], ...] = ()  # (name, value) the notification gives that no request carries
    variants: tuple[VariantAudience, ...] = ()  # with counting: users per variant, in the topic's order
    refused: Mapping[Refusal, int] = field(default_factory=dict)  # with counting: users the gate would skip, by reason

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(r.key for r in self.reached)

    @property
    def users(self) -> int:
        return sum(v.users for v in self.variants)

    def problem(self, spell: Spell = spell_cli) -> str:
        """Why this notification cannot go ("" when it can), naming the values held and how many hold each."""
        if self.missing:
            names = ", ".join(self.missing)
            asks = " and ".join(spell(name) for name in self.missing)
            return (
                f"topic '{self.topic}': its holders' requests name a {names}; say which this notification is about "
                f"({asks}). Held: {held_listing(self.held)}"
            )
        if self.unheld:
            given = ", ".join(f"{name} {json.dumps(value, ensure_ascii=False)}" for name, value in self.unheld)
            return f"topic '{self.topic}': nobody holds a request for {given}. Held: {held_listing(self.held)}"
        if self.held and not self.reached:
            return (
                f"topic '{self.topic}': no request was made with these values together. Held: {held_listing(self.held)}"
            )
        return ""

    def as_dict(self) -> dict[str, object]:
        return {
            "topic": self.topic,
            "vars": dict(self.variables),
            "users": self.users,
            "variants": [{"variant": v.index, "when": v.when, "users": v.users} for v in self.variants],
            "skipped": dict(self.refused),
            "requests": [{"vars": dict(r.vars), "holders": r.holders} for r in self.reached],
        }


def held_listing(held: Sequence[HeldRequest]) -> str:
    """`product: "Sauvignon 2024" (812), "Rioja Gran Reserva 2015" (97)`: per variable, each value held with how
    many users hold a request for it, most held first."""
    per_name: dict[str, dict[str, int]] = {}
    for request in held:
        for name, value in request.vars.items():
            values = per_name.setdefault(name, {})
            values[value] = values.get(value, 0) + request.holders
    parts = []
    for name in sorted(per_name):
        ranked = sorted(per_name[name].items(), key=lambda item: (-item[1], item[0]))
        parts.append(f"{name}: " + ", ".join(f"{json.dumps(v, ensure_ascii=False)} ({n})" for v, n in ranked))
    without = sum(r.holders for r in held if not r.vars)
    if without:
        parts.append(f"no variables ({without})")
    return "; ".join(parts) or "nothing"


async def held_requests(store: Store, topic: str, now_ms: int) -> tuple[HeldRequest, ...]:
    """The topic's valid tokens by request, most held first (one grouped read over the topic's index range)."""
    held = await store.held_requests(topic, now_ms)
    requests = [HeldRequest(vars=request_vars(key), key=key, holders=n) for key, n in held.items()]
    return tuple(sorted(requests, key=lambda r: (-r.holders, r.key)))


async def notification_audience(
    store: Store,
    flow: CompiledFlow,
    topic: str,
    variables: Mapping[str, object],
    now_ms: int,
    *,
    segment: Segment = ALWAYS,
    only_users: Sequence[str] | None = None,
    count_variants: bool = False,
    policy: PolicySettings | None = None,
    gate: Gate | None = None,
) -> Audience:
    """Who a notification of `topic` with `variables` would reach, and what is wrong with it (`problem()`).

    Without `count_variants` it reads only the topic's held requests (one grouped read): what `notify` checks
    before it starts. With it, it also pages through the reached holders (index ranges, keyset pages), keeps
    those in `segment` (and in `only_users`, if given), and counts per variant of the topic the users it would
    go to; users the policy gate would skip (EU, unreachable, OTN off) are counted in `refused` by reason. Nothing
    is sent, claimed or written: this is `--dry-run` and the playground's "audience per variant"."""
    texts = {
        name: scalar_text(value) if isinstance(value, str | int | float | bool) else str(value)
        for name, value in variables.items()
    }
    held = await held_requests(store, topic, now_ms)
    reached = tuple(r for r in held if all(texts.get(name) == value for name, value in r.vars.items()))
    carried: dict[str, set[str]] = {}
    for request in held:
        for name, value in request.vars.items():
            carried.setdefault(name, set()).add(value)
    missing = tuple(sorted(name for name in carried if name not in texts))
    unheld = tuple(
        (name, texts[name]) for name in sorted(carried) if name in texts and texts[name] not in carried[name]
    )
    audience = Audience(topic=topic, variables=texts, held=held, reached=reached, missing=missing, unheld=unheld)
    if not count_variants:
        return audience
    settings = policy or (gate.settings if gate else PolicySettings())
    counts = [0] * len(flow.spec.topics[topic].variants)
    refused: dict[Refusal, int] = {}
    only = set(only_users) if only_users is not None else None
    async for page in holder_pages(store, topic, audience.keys, now_ms):
        users = await store.load_users([u for u in page if only is None or u in only])
        for user in users.values():
            if not segment.matches(frozenset(user.tags), user.variables):
                continue
            facts = gate.facts(user) if gate else None
            if facts is not None:
                decision = decide(facts, Outgoing(kind=MessageKind.NOTIFICATION, with_token=True), now_ms, settings)
                if decision.reason is not None:  # refused
                    refused[decision.reason] = refused.get(decision.reason, 0) + 1
                    continue
            counts[flow.variant_index(topic, Snapshot(user.state, frozenset(user.tags), user.variables))] += 1
    variants = tuple(
        VariantAudience(index=i, when=v.when_source, users=counts[i])
        for i, v in enumerate(flow.spec.topics[topic].variants)
    )
    return Audience(
        topic=topic,
        variables=texts,
        held=held,
        reached=reached,
        missing=missing,
        unheld=unheld,
        variants=variants,
        refused=refused,
    )


async def holder_pages(
    store: Store, topic: str, keys: Sequence[str], now_ms: int, size: int = PAGE
) -> AsyncIterator[list[str]]:
    """Users holding a valid token for one of the requests `keys`, in user id order, a page at a time: one index
    range per request, merged (memory stays flat whatever the audience)."""
    after = ""
    while keys:
        found: set[str] = set()
        for key in keys:
            found.update(await store.token_holders(topic, key, now_ms, after, size))
        page = sorted(found)[:size]
        if not page:
            return
        yield page
        after = page[-1]


__all__ = [
    "Audience",
    "HeldRequest",
    "VariantAudience",
    "held_listing",
    "held_requests",
    "holder_pages",
    "notification_audience",
    "spell_api",
    "spell_cli",
]
