"""`connection_health_sensor`: observes `connection_health` with every connection's health as metadata.

It reads the same facts as `GET /health/integrations` (integrations_pipeline.store.health) and records an
observation on every tick, so the asset is never older than one sensor interval: lag, expiries and problems shown
in the UI are current within a minute, and the observation history shows when each changed.
"""

from datetime import datetime

import dagster as dg

from integrations_pipeline.assets.health import CONNECTION_HEALTH
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.store.health import ConnectionHealth, Health, connection_health
from integrations_pipeline.store.repository import utcnow

HEALTH_SENSOR_INTERVAL_S = 60


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "-"


def _lag(seconds: float | None) -> str:
    if seconds is None:
        return "never synced"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def health_table(report: list[ConnectionHealth]) -> str:
    """A Markdown table, one row per connection, worst first."""
    order = [Health.CRITICAL, Health.WARNING, Health.OK, Health.OFF]
    lines = [
        "| connection | health | status | token expires | last successful sync | lag | 429 rate | dead letters "
        "| push expires | problems |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for item in sorted(report, key=lambda item: (order.index(item.health), item.connection_id)):
        rate = f"{item.recent_429_rate:.0%}" if item.recent_429_rate is not None else "-"
        problems = "; ".join(item.problems).replace("|", "/") or "-"
        lines.append(
            f"| {item.connection_id} | {item.health.value} | {item.status.value} | {_when(item.token_expires_at)} "
            f"| {_when(item.last_sync_at)} | {_lag(item.lag_seconds)} | {rate} | {item.dead_letters} "
            f"| {_when(item.push_expires_at)} | {problems} |"
        )
    return "\n".join(lines)


def health_observation(report: list[ConnectionHealth]) -> dg.AssetObservation:
    counts = {health.value: sum(1 for item in report if item.health == health) for health in Health}
    metadata: dict[str, dg.RawMetadataValue] = {
        "connections": dg.MetadataValue.int(len(report)),
        **{f"{health} connections": dg.MetadataValue.int(count) for health, count in counts.items()},
        "dead letters": dg.MetadataValue.int(sum(item.dead_letters for item in report)),
        "needing attention": dg.MetadataValue.text(
            ", ".join(item.connection_id for item in report if item.health in (Health.CRITICAL, Health.WARNING))
            or "none"
        ),
        "report": dg.MetadataValue.md(health_table(report)),
    }
    return dg.AssetObservation(asset_key=CONNECTION_HEALTH, metadata=metadata)


def build_connection_health_sensor() -> dg.SensorDefinition:
    @dg.sensor(
        name="connection_health_sensor",
        minimum_interval_seconds=HEALTH_SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Observes connection_health each minute: every connection's health from the state store.",
    )
    def connection_health_sensor(
        context: dg.SensorEvaluationContext, integrations: IntegrationsResource
    ) -> dg.SensorResult:
        now = utcnow()
        store = integrations.store
        with store.engine.connect() as conn:
            report = connection_health(conn, now, store.keyring)
        attention = sum(1 for item in report if item.health in (Health.CRITICAL, Health.WARNING))
        context.log.info(f"{len(report)} connections, {attention} needing attention")
        return dg.SensorResult(asset_events=[health_observation(report)])

    return connection_health_sensor
