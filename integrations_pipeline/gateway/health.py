"""`GET /health/integrations` and `GET /metrics`: what an operator (or Prometheus) asks of the gateway.

Both read the state database when asked (integrations_pipeline.store.health), so every gateway process answers
alike; the request counters of `/metrics` are this process's own.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from integrations_pipeline.store.health import ConnectionHealth, Health, connection_health
from integrations_pipeline.store.repository import StateStore, utcnow

SEVERITY = [Health.OK, Health.OFF, Health.WARNING, Health.CRITICAL]  # least to most urgent


class IntegrationHealthView(BaseModel):
    connection_id: str
    tenant: str
    provider: str
    status: str = Field(description="active | needs_reauth | disconnected")
    status_reason: str | None
    health: Health = Field(description="ok | warning | critical | off (disconnected)")
    problems: list[str] = Field(description="why it is not ok, worst first")
    token_expires_at: datetime | None = Field(description="the access token's expiry; refreshed before use")
    last_successful_sync_at: datetime | None
    lag_seconds: float | None = Field(description="seconds since the last successful sync")
    recent_429_rate: float | None = Field(
        description="share of calls refused for a rate limit, this and the previous UTC hour; null without calls"
    )
    rate_limited_until: datetime | None = Field(description="a provider's Retry-After or spent quota, for all runs")
    dead_letters: int = Field(description="webhook events that failed five times and are not replayed yet")
    inbox_pending: int = Field(description="webhook events received and not yet synced")
    push_subscriptions: int = Field(description="active push subscriptions at the provider")
    push_subscription_expires_at: datetime | None = Field(description="the soonest expiry among them")

    @classmethod
    def of(cls, item: ConnectionHealth) -> IntegrationHealthView:
        return cls(
            connection_id=item.connection_id,
            tenant=item.tenant,
            provider=item.provider,
            status=item.status.value,
            status_reason=item.status_reason,
            health=item.health,
            problems=list(item.problems),
            token_expires_at=item.token_expires_at,
            last_successful_sync_at=item.last_sync_at,
            lag_seconds=item.lag_seconds,
            recent_429_rate=item.recent_429_rate,
            rate_limited_until=item.rate_limited_until,
            dead_letters=item.dead_letters,
            inbox_pending=item.inbox_pending,
            push_subscriptions=item.push_subscriptions,
            push_subscription_expires_at=item.push_expires_at,
        )


class IntegrationsHealthResponse(BaseModel):
    status: Health = Field(description="the most urgent health among the connections listed (ok when none)")
    checked_at: datetime
    counts: dict[str, int] = Field(description="connections per health")
    connections: list[IntegrationHealthView]


def integrations_health(store: StateStore, tenant: str | None, provider: str | None) -> IntegrationsHealthResponse:
    now = utcnow()
    with store.engine.connect() as conn:
        report = connection_health(conn, now, store.keyring)
    views = [
        IntegrationHealthView.of(item)
        for item in report
        if (tenant is None or item.tenant == tenant) and (provider is None or item.provider == provider)
    ]
    counts = {health.value: sum(1 for view in views if view.health == health) for health in Health}
    worst = max((view.health for view in views), key=SEVERITY.index, default=Health.OK)
    return IntegrationsHealthResponse(status=worst, checked_at=now, counts=counts, connections=views)
