"""The metrics' remembered label children (metrics.py) count exactly what prometheus_client's own would."""

from __future__ import annotations

from engine.runtime.metrics import Metrics


def _sample(metrics: Metrics, line_start: str) -> str:
    return next(line for line in metrics.render().decode().splitlines() if line.startswith(line_start))


def test_a_remembered_child_counts_in_the_rendered_metrics() -> None:
    metrics = Metrics()
    metrics.sends.labels("sent").inc()
    metrics.sends.labels("sent").inc()
    metrics.sends.labels(outcome="sent").inc()  # the keyword form reaches the same child
    metrics.sends.labels("retry").inc()
    assert _sample(metrics, 'otnflow_sends_total{outcome="sent"}') == 'otnflow_sends_total{outcome="sent"} 3.0'
    assert _sample(metrics, 'otnflow_sends_total{outcome="retry"}') == 'otnflow_sends_total{outcome="retry"} 1.0'
    assert metrics.sends.labels("sent") is metrics.sends.labels("sent")


def test_a_removed_child_is_not_remembered() -> None:
    metrics = Metrics()
    metrics.otn.labels("restock", "requests").set(4)
    metrics.otn.remove("restock", "requests")
    metrics.otn.labels("restock", "requests").inc()  # a fresh child, shown again, from zero
    assert _sample(metrics, 'otnflow_otn{figure="requests"') == 'otnflow_otn{figure="requests",topic="restock"} 1.0'
    metrics.otn.clear()
    metrics.otn.labels("restock", "requests").inc()
    assert _sample(metrics, 'otnflow_otn{figure="requests"') == 'otnflow_otn{figure="requests",topic="restock"} 1.0'
