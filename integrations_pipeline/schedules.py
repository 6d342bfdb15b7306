"""Schedules: recurring incremental syncs of every active connection, per provider.

Hourly by default; a tenant can have its own cron (`INTEGRATIONS_SYNC_SCHEDULES='{"acme": "*/15 * * * *"}'`).
The schedules tick every five minutes and request runs only for the connections whose tenant's cron fired since
the previous tick, so an override takes effect without redeploying definitions. Connections that need
re-authorization get no run until a person reconnects them.
"""

from datetime import datetime, timedelta
from typing import Any

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster._utils.schedules import cron_string_iterator, is_valid_cron_string

from integrations_pipeline.partitions import CONNECTION, DAY
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.store import Connection, ConnectionStatus

DEFAULT_SYNC_CRON = "0 * * * *"
# How often the schedules wake up: the finest granularity a tenant's own cron can have.
TICK_CRON = "*/5 * * * *"
TICK_INTERVAL = timedelta(minutes=5)
# Day partitions the events sync refreshes, relative to the tick's day: events change around now; older
# and later days are brought up to date by backfills.
LIVE_EVENT_DAYS = (-1, 0, 1)


def is_due(cron: str, tick: datetime) -> bool:
    """Whether `cron` (UTC) fired in the tick's interval (previous tick, tick]."""
    after_previous_tick = (tick - TICK_INTERVAL).timestamp() + 1
    return next(cron_string_iterator(after_previous_tick, cron, "UTC")) <= tick


def due_connections(
    context: dg.ScheduleEvaluationContext, integrations: IntegrationsResource, provider: str
) -> list[Connection]:
    """The provider's active connections whose tenant's schedule (its own cron, or hourly) is due at this tick."""
    tick = context.scheduled_execution_time
    overrides = integrations.settings.sync_schedules
    due = []
    for connection in integrations.store.list_connections(provider=provider, statuses=(ConnectionStatus.ACTIVE,)):
        cron = overrides.get(connection.tenant, DEFAULT_SYNC_CRON)
        if not is_valid_cron_string(cron):
            context.log.error(f"tenant {connection.tenant}: schedule {cron!r} is not a valid cron; using hourly")
            cron = DEFAULT_SYNC_CRON
        if is_due(cron, tick):
            due.append(connection)
    return due


def _every_tick(provider: str, job: UnresolvedAssetJobDefinition, name: str, what: str) -> Any:
    """The decorator both schedules share: woken every 5 minutes, running by default (also in `make dev`)."""
    return dg.schedule(
        name=name,
        job=job,
        cron_schedule=TICK_CRON,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Incremental sync of {what} of every active {provider} connection, hourly or on its "
        "tenant's own cron (INTEGRATIONS_SYNC_SCHEDULES; checked every 5 minutes); connections that need "
        "re-authorization are skipped until a person reconnects them.",
    )


def build_sync_schedule(provider: str, job: UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    @_every_tick(provider, job, f"{provider}_hourly_sync", "the users and contacts")
    def sync_schedule(context: dg.ScheduleEvaluationContext, integrations: IntegrationsResource) -> list[dg.RunRequest]:
        tick = context.scheduled_execution_time.isoformat()
        return [
            dg.RunRequest(
                partition_key=connection.id,
                run_key=f"scheduled:{connection.id}:{tick}",
                tags={"provider": provider, "trigger": "schedule"},
            )
            for connection in due_connections(context, integrations, provider)
        ]

    return sync_schedule


def live_event_days(tick: datetime) -> list[str]:
    """The day partitions an events sync at `tick` refreshes."""
    return [(tick.date() + timedelta(days=offset)).isoformat() for offset in LIVE_EVENT_DAYS]


def build_events_schedule(provider: str, job: UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    @_every_tick(provider, job, f"{provider}_hourly_events_sync", "yesterday's, today's and tomorrow's events")
    def events_schedule(
        context: dg.ScheduleEvaluationContext, integrations: IntegrationsResource
    ) -> list[dg.RunRequest]:
        tick = context.scheduled_execution_time
        return [
            dg.RunRequest(
                partition_key=dg.MultiPartitionKey({CONNECTION: connection.id, DAY: day}),
                run_key=f"scheduled:{connection.id}:{day}:{tick.isoformat()}",
                tags={"provider": provider, "trigger": "schedule"},
            )
            for connection in due_connections(context, integrations, provider)
            for day in live_event_days(tick)
        ]

    return events_schedule


PURGE_CRON = "30 3 * * *"


def build_inbox_purge_schedule(job: dg.JobDefinition) -> dg.ScheduleDefinition:
    """Daily: done webhook events older than the dedup window go (dead and pending ones stay)."""
    return dg.ScheduleDefinition(
        name="webhook_inbox_purge",
        job=job,
        cron_schedule=PURGE_CRON,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Purges done webhook events received before the dedup window (8 days).",
    )
