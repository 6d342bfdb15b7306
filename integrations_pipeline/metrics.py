"""Prometheus metrics: per-process counters for what happens in a process, and a collector that reads the state
database at scrape time for everything that is state.

Counters (requests, webhook verification failures) live in this process: Prometheus scrapes each gateway process
and sums them. Figures that are state (connections, inbox depth, dead letters, deliveries, last syncs) are read
from the database on every scrape by `StateCollector`, so every process reports the same values and none drifts.
"""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from integrations_pipeline.crypto import Keyring
from integrations_pipeline.store.health import Health, state_figures

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "integrations"

# Process-wide, like the events they count; `registry=None` keeps them out of prometheus_client's global registry,
# so embedding apps and tests create as many gateways as they like.
REQUESTS = Counter(
    f"{PREFIX}_gateway_requests",
    "Gateway requests by method, route template and status code.",
    ["method", "route", "status"],
    registry=None,
)
REQUEST_SECONDS = Histogram(
    f"{PREFIX}_gateway_request_duration_seconds",
    "Gateway request latency by method and route template.",
    ["method", "route"],
    registry=None,
)
VERIFICATION_FAILURES = Counter(
    f"{PREFIX}_webhook_verification_failures",
    "Incoming webhook requests refused because their signature, token or client state did not verify.",
    ["source"],
    registry=None,
)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    """Count one gateway request. `route` is the template (`/connections/{connection_id}`), never the raw path."""
    REQUESTS.labels(method=method, route=route, status=str(status)).inc()
    REQUEST_SECONDS.labels(method=method, route=route).observe(seconds)


def record_webhook_verification_failure(source: str) -> None:
    """Count one incoming webhook that failed verification; `source` is the provider (or `standard:<name>`)."""
    VERIFICATION_FAILURES.labels(source=source).inc()


class StateCollector(Collector):
    """Reads the state database on every scrape."""

    def __init__(self, engine: sa.Engine, keyring: Keyring | None = None) -> None:
        self.engine = engine
        self.keyring = keyring  # to judge connections whose secrets cannot be decrypted as /health does

    def describe(self) -> list[Metric]:
        return []  # the families depend on the rows: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        figures = state_figures(self.engine, keyring=self.keyring)
        connections = GaugeMetricFamily(
            f"{PREFIX}_connections",
            "Connections by provider, status and health.",
            labels=["provider", "status", "health"],
        )
        counts: dict[tuple[str, str, str], int] = {}
        for item in figures.connections:
            key = (item.provider, item.status.value, item.health.value)
            counts[key] = counts.get(key, 0) + 1
        for key, count in sorted(counts.items()):
            connections.add_metric(list(key), count)
        yield connections

        per_connection = ["connection_id", "provider"]
        last_sync = GaugeMetricFamily(
            f"{PREFIX}_connection_last_sync_timestamp_seconds",
            "When the connection last synced successfully (Unix time).",
            labels=per_connection,
        )
        lag = GaugeMetricFamily(
            f"{PREFIX}_connection_sync_lag_seconds", "Seconds since the last successful sync.", labels=per_connection
        )
        token_expiry = GaugeMetricFamily(
            f"{PREFIX}_connection_token_expiry_timestamp_seconds",
            "When the stored access token expires (Unix time); refreshed before use.",
            labels=per_connection,
        )
        push_expiry = GaugeMetricFamily(
            f"{PREFIX}_push_subscription_expiry_timestamp_seconds",
            "The soonest expiry among a connection's active push subscriptions (Unix time).",
            labels=per_connection,
        )
        healthy = GaugeMetricFamily(
            f"{PREFIX}_connection_healthy",
            "1 when the connection has no problem, 0 when it has one (see GET /health/integrations).",
            labels=per_connection,
        )
        for item in figures.connections:
            labels = [item.connection_id, item.provider]
            if item.last_sync_at is not None and item.lag_seconds is not None:
                last_sync.add_metric(labels, item.last_sync_at.timestamp())
                lag.add_metric(labels, item.lag_seconds)
            if item.token_expires_at is not None:
                token_expiry.add_metric(labels, item.token_expires_at.timestamp())
            if item.push_expires_at is not None:
                push_expiry.add_metric(labels, item.push_expires_at.timestamp())
            if item.health != Health.OFF:
                healthy.add_metric(labels, 1 if item.health == Health.OK else 0)
        yield from (last_sync, lag, token_expiry, push_expiry, healthy)

        inbox = GaugeMetricFamily(
            f"{PREFIX}_webhook_inbox_events", "Incoming webhook events in the inbox by status.", labels=["status"]
        )
        for status in ("pending", "requested", "done", "dead"):
            inbox.add_metric([status], figures.inbox_by_status.get(status, 0))
        yield inbox
        yield GaugeMetricFamily(
            f"{PREFIX}_dead_letters",
            "Dead-lettered webhook events not yet replayed.",
            value=figures.dead_letters_unreplayed,
        )

        deliveries = GaugeMetricFamily(
            f"{PREFIX}_webhook_deliveries", "Outgoing webhook deliveries by status.", labels=["status"]
        )
        for status in sorted({"pending", "delivered", "failed"} | set(figures.deliveries_by_status)):
            deliveries.add_metric([status], figures.deliveries_by_status.get(status, 0))
        yield deliveries
        attempts = CounterMetricFamily(
            f"{PREFIX}_webhook_delivery_attempts",
            "Outgoing webhook delivery attempts by outcome (success, http_error, no_response).",
            labels=["outcome"],
        )
        for outcome in ("success", "http_error", "no_response"):
            attempts.add_metric([outcome], figures.delivery_attempts_by_outcome.get(outcome, 0))
        yield attempts


def metrics_registry(engine: sa.Engine, keyring: Keyring | None = None) -> CollectorRegistry:
    """This process's counters and the state database's figures, for one app's `/metrics`."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in (REQUESTS, REQUEST_SECONDS, VERIFICATION_FAILURES, StateCollector(engine, keyring)):
        registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
