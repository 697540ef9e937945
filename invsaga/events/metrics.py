"""The relay's Prometheus metrics: what it stamped, delivered and failed, and how far each webhook lags.

Temporal's runtime serves the worker's SDK metrics from Rust, where these cannot join them, so the
relay serves its own registry on ``INVSAGA_RELAY_METRICS_PORT``. Webhook labels are webhook ids: an
operator has few, so cardinality stays bounded.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class RelayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.stamped = Counter(
            "invsaga_events_stamped",
            "Outbox rows given a sequence, by source.",
            ["source"],
            registry=self.registry,
        )
        self.unstamped = Gauge(
            "invsaga_events_unstamped",
            "Outbox rows committed but not yet stamped, by source.",
            ["source"],
            registry=self.registry,
        )
        self.active = Gauge(
            "invsaga_relay_active",
            "1 while this process is the active relay of the source.",
            ["source"],
            registry=self.registry,
        )
        self.delivered = Counter(
            "invsaga_webhook_deliveries",
            "Events delivered (a 2xx answer), by webhook and source.",
            ["webhook", "source"],
            registry=self.registry,
        )
        self.failed = Counter(
            "invsaga_webhook_failed_attempts",
            "Delivery attempts that failed (non-2xx, timeout, connection error), by webhook and source.",
            ["webhook", "source"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "invsaga_webhook_lag_seconds",
            "Age of the oldest event the webhook wants and has not received; 0 when it is caught up.",
            ["webhook", "source"],
            registry=self.registry,
        )
        self.backlog = Gauge(
            "invsaga_webhook_backlog_events",
            "Stamped events past the webhook's cursor (of any type), by webhook and source.",
            ["webhook", "source"],
            registry=self.registry,
        )
        self.pruned = Counter(
            "invsaga_events_pruned",
            "Outbox rows deleted after the retention, by source.",
            ["source"],
            registry=self.registry,
        )

    def forget_webhook(self, webhook_id: str, source: str) -> None:
        for gauge in (self.lag, self.backlog):
            with contextlib.suppress(KeyError):
                gauge.remove(webhook_id, source)

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)


#: One per process: the relay's tasks for every source report here.
RELAY_METRICS = RelayMetrics()
