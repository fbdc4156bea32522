"""Process metrics, exported in Prometheus format on /metrics. One registry per app, so tests stay isolated."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Self

import prometheus_client
from prometheus_client import CollectorRegistry, generate_latest

_MAX_KINDS_REMEMBERED = 1_000


class _BoundLabels(prometheus_client.metrics.MetricWrapperBase):
    """`labels(...)` remembered per label values. prometheus_client validates the values, converts them and takes a
    lock on every call (~4 us); a turn makes several such calls with a handful of distinct values. The children are
    the library's own (it keeps each one anyway), so what /metrics shows is unchanged."""

    _bound: dict[tuple[object, ...], Self]

    def labels(self, *labelvalues: object, **labelkwargs: object) -> Self:
        if labelkwargs:
            return super().labels(*labelvalues, **labelkwargs)
        try:
            return self._bound[labelvalues]
        except AttributeError:
            self._bound = {}
        except KeyError:
            pass
        child = self._bound[labelvalues] = super().labels(*labelvalues)
        return child

    def remove(self, *labelvalues: Any) -> None:
        self._bound = {}
        super().remove(*labelvalues)

    def remove_by_labels(self, labels: dict[str, str]) -> None:
        self._bound = {}
        super().remove_by_labels(labels)

    def clear(self) -> None:
        self._bound = {}
        super().clear()


class Counter(_BoundLabels, prometheus_client.Counter):
    pass


class Gauge(_BoundLabels, prometheus_client.Gauge):
    pass


class Histogram(_BoundLabels, prometheus_client.Histogram):
    pass


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._kinds_seen: set[str] = set()
        self.events_received = Counter(
            "otnflow_events_received", "Webhook events stored, by kind", ["kind"], registry=self.registry
        )
        self.events_duplicate = Counter(
            "otnflow_events_duplicate", "Webhook events dropped as already stored", registry=self.registry
        )
        self.events_skipped = Counter(
            "otnflow_events_skipped",
            "Webhook items not acted on (echo, receipts, ...)",
            ["reason"],
            registry=self.registry,
        )
        self.events_rejected = Counter(
            "otnflow_events_rejected",
            "Webhook events kept in the dead-letter table (a signed body's broken event), by kind",
            ["kind"],
            registry=self.registry,
        )
        self.events_failed = Counter(
            "otnflow_events_failed", "Events whose handling raised (kept, with the error)", registry=self.registry
        )
        self.webhook_rejected = Counter(
            "otnflow_webhook_rejected", "Webhook requests refused, by HTTP status", ["status"], registry=self.registry
        )
        self.handling_seconds = Histogram(
            "otnflow_handling_seconds",
            "From receipt of an event to its replies being sent",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.sends = Counter("otnflow_sends", "Send API calls by outcome", ["outcome"], registry=self.registry)
        self.handovers = Counter(
            "otnflow_handovers",
            "Hand-overs to a person and returns to the bot (passed, pass_failed, taken, returned, idle, take_back)",
            ["what"],
            registry=self.registry,
        )
        self.policy_refusals = Counter(
            "otnflow_policy_refusals",
            "Messages the policy gate refused, by reason",
            ["kind", "reason"],
            registry=self.registry,
        )
        self.action_seconds = Histogram(
            "otnflow_action_seconds",
            "How long flow actions took, by action",
            ["action"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.actions = Counter(
            "otnflow_actions",
            "Flow action calls by action and outcome (success, failure, timeout)",
            ["action", "outcome"],
            registry=self.registry,
        )
        self.otn = Gauge(
            "otnflow_otn",
            "OTN loop figures per topic (requests, optins, deliveries, re_requests, tokens_held, tokens_expiring_soon)",
            ["topic", "figure"],
            registry=self.registry,
        )
        self.unsubscribed = Gauge(
            "otnflow_unsubscribed_users",
            "Users who unsubscribed (no campaign, no OTN request until they subscribe again)",
            registry=self.registry,
        )

    def count_skipped(self, kind: str, count: int, known: Collection[str]) -> bool:
        """Count skipped webhook items; the label is the kind when it is a known one, else `unknown` (a body's keys
        must not grow the label set). True the first time this process sees the kind: worth a log line."""
        self.events_skipped.labels(kind if kind in known else "unknown").inc(count)
        if kind in self._kinds_seen or len(self._kinds_seen) >= _MAX_KINDS_REMEMBERED:
            return False
        self._kinds_seen.add(kind)
        return True

    def render(self) -> bytes:
        return generate_latest(self.registry)
