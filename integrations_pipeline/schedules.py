"""Schedules: recurring incremental syncs of every active connection, per provider."""

from datetime import datetime, timedelta

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from integrations_pipeline.partitions import CONNECTION, DAY
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.store import ConnectionStatus

DEFAULT_SYNC_CRON = "0 * * * *"
# Day partitions the hourly events sync refreshes, relative to the tick's day: events change around now; older
# and later days are brought up to date by backfills.
LIVE_EVENT_DAYS = (-1, 0, 1)


def build_sync_schedule(provider: str, job: UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=f"{provider}_hourly_sync",
        job=job,
        cron_schedule=DEFAULT_SYNC_CRON,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Incremental sync of every active {provider} connection; connections that need "
        "re-authorization are skipped until a person reconnects them.",
    )
    def sync_schedule(context: dg.ScheduleEvaluationContext, integrations: IntegrationsResource) -> list[dg.RunRequest]:
        tick = context.scheduled_execution_time.isoformat()
        return [
            dg.RunRequest(
                partition_key=connection.id,
                run_key=f"scheduled:{connection.id}:{tick}",
                tags={"provider": provider, "trigger": "schedule"},
            )
            for connection in integrations.store.list_connections(
                provider=provider, statuses=(ConnectionStatus.ACTIVE,)
            )
        ]

    return sync_schedule


def live_event_days(tick: datetime) -> list[str]:
    """The day partitions an events sync at `tick` refreshes."""
    return [(tick.date() + timedelta(days=offset)).isoformat() for offset in LIVE_EVENT_DAYS]


def build_events_schedule(provider: str, job: UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=f"{provider}_hourly_events_sync",
        job=job,
        cron_schedule=DEFAULT_SYNC_CRON,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Incremental sync of yesterday's, today's and tomorrow's {provider} events for every active "
        "connection.",
    )
    def events_schedule(
        context: dg.ScheduleEvaluationContext, integrations: IntegrationsResource
    ) -> list[dg.RunRequest]:
        tick = context.scheduled_execution_time
        connections = integrations.store.list_connections(provider=provider, statuses=(ConnectionStatus.ACTIVE,))
        return [
            dg.RunRequest(
                partition_key=dg.MultiPartitionKey({CONNECTION: connection.id, DAY: day}),
                run_key=f"scheduled:{connection.id}:{day}:{tick.isoformat()}",
                tags={"provider": provider, "trigger": "schedule"},
            )
            for connection in connections
            for day in live_event_days(tick)
        ]

    return events_schedule
