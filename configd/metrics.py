"""Prometheus metrics of one server instance, in its own registry (two apps in one process never collide)."""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

CONSUL_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0)


class ServerMetrics:
    """Pushes, rejected writes by reason, and the latency of every Consul call (fed by ``ConsulGateway.on_call``)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # Collectors that read their values at scrape time (KV usage, election): the same in every worker process.
        self.extra = CollectorRegistry(auto_describe=False)
        self.writes = Counter(
            "configd_pushes",
            "Accepted writes (pushes, rollbacks, deletes, schema registrations) by action and result",
            ["action", "result"],
            registry=self.registry,
        )
        self.rejections = Counter(
            "configd_rejections",
            "Rejected write attempts by reason",
            ["action", "reason"],
            registry=self.registry,
        )
        self.consul_calls = Histogram(
            "configd_consul_call_seconds",
            "Latency of Consul calls by operation",
            ["operation"],
            buckets=CONSUL_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe_consul_call(self, operation: str, seconds: float) -> None:
        self.consul_calls.labels(operation=operation).observe(seconds)

    def write(self, action: str, result: str) -> None:
        self.writes.labels(action=action, result=result).inc()

    def rejection(self, action: str, reason: str) -> None:
        self.rejections.labels(action=action, reason=reason).inc()

    def render(self) -> bytes:
        """The metrics as Prometheus text: this process's, or every worker's summed when the server runs several
        (``PROMETHEUS_MULTIPROC_DIR`` is then set, and the counters live in files there)."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged) + generate_latest(self.extra)
        return generate_latest(self.registry) + generate_latest(self.extra)
