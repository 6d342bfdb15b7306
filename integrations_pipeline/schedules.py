"""Schedules: recurring incremental syncs of every active connection, per provider, in batched runs.

Hourly by default; a tenant can have its own cron (`INTEGRATIONS_SYNC_SCHEDULES='{"acme": "*/15 * * * *"}'`).
Without overrides the schedules tick on the hour; with any override they tick every five minutes and request runs
only for the connections whose tenant's cron fired since the previous tick. The overrides are read when the code
location loads (the same environment the ticks read), so the UI shows "Every hour" unless a tenant asked otherwise.
Connections that need re-authorization get no run until a person reconnects them.

A tick asks for one run per batch: a maximal stretch of consecutive due connections in the dynamic partition order,
at most `INTEGRATIONS_SYNC_BATCH_SIZE` long, as a partition key range. A connection that is not due (another cron,
needs_reauth, no partition yet) ends a stretch, so it is never inside a range. Range requests carry Dagster's range
tags and no partition key: Dagster validates a single-key request against the whole dynamic partition list, once
per request (quadratic in connections per tick); a range is resolved once, by the run.
"""

import warnings
from collections.abc import Collection, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import dagster as dg
from dagster._core.definitions.partitions.utils.multi import get_tags_from_multi_partition_key
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)
from dagster._utils.schedules import cron_string_iterator, is_valid_cron_string

from integrations_pipeline.partitions import CONNECTION, DAY, connection_partitions
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.settings import SettingsError, load_settings
from integrations_pipeline.store import Connection, ConnectionStatus

DEFAULT_SYNC_CRON = "0 * * * *"
DEFAULT_INTERVAL = timedelta(hours=1)
# With tenant overrides, the schedules wake every 5 minutes: the finest granularity a tenant's own cron can have.
TICK_CRON = "*/5 * * * *"
TICK_INTERVAL = timedelta(minutes=5)
# Day partitions the events sync refreshes, relative to the tick's day: events change around now; older
# and later days are brought up to date by backfills.
LIVE_EVENT_DAYS = (-1, 0, 1)


def is_due(cron: str, tick: datetime, interval: timedelta = TICK_INTERVAL) -> bool:
    """Whether `cron` (UTC) fired in the tick's interval (previous tick, tick]."""
    after_previous_tick = (tick - interval).timestamp() + 1
    return next(cron_string_iterator(after_previous_tick, cron, "UTC")) <= tick


def tick_cron(overrides: Collection[str]) -> tuple[str, timedelta]:
    """The schedules' own cron and interval: hourly unless some tenant has its own cron."""
    return (TICK_CRON, TICK_INTERVAL) if overrides else (DEFAULT_SYNC_CRON, DEFAULT_INTERVAL)


def configured_overrides() -> dict[str, str]:
    """The tenants' own crons as configured for this code location; none when the settings are invalid (the
    tick itself then reports the settings error, where an operator sees it)."""
    try:
        return load_settings().sync_schedules
    except SettingsError:
        return {}


def due_connections(
    context: dg.ScheduleEvaluationContext,
    integrations: IntegrationsResource,
    provider: str,
    interval: timedelta = TICK_INTERVAL,
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
        if is_due(cron, tick, interval):
            due.append(connection)
    return due


def consecutive_batches(order: Sequence[str], wanted: Collection[str], size: int) -> list[list[str]]:
    """Maximal stretches of consecutive `wanted` keys in `order`, at most `size` keys each: a key not wanted
    ends a stretch, so no range built from a batch ever covers it."""
    batches: list[list[str]] = []
    current: list[str] = []
    for key in order:
        if key in wanted:
            current.append(key)
            if len(current) == size:
                batches.append(current)
                current = []
        elif current:
            batches.append(current)
            current = []
    if current:
        batches.append(current)
    return batches


def partition_tags(key: str | dg.MultiPartitionKey) -> dict[str, str]:
    """The tags Dagster would resolve for a single partition key: a request that carries them is not validated
    against the whole partition list again (see the module docstring)."""
    tags = {PARTITION_NAME_TAG: str(key)}
    if isinstance(key, dg.MultiPartitionKey):
        tags |= get_tags_from_multi_partition_key(key)
    return tags


def batch_request(
    connections: Sequence[str],
    days: Sequence[str] = (),
    *,
    run_key: str,
    tags: dict[str, str],
    job_name: str | None = None,
    asset_selection: Sequence[dg.AssetKey] | None = None,
) -> dg.RunRequest:
    """One run over `connections` (consecutive in the partition order) and, for day-partitioned jobs, `days`
    (consecutive): a single partition, or the range from the first key to the last (a rectangle for events)."""
    if days:
        first: str | dg.MultiPartitionKey = dg.MultiPartitionKey({CONNECTION: connections[0], DAY: days[0]})
        last: str | dg.MultiPartitionKey = dg.MultiPartitionKey({CONNECTION: connections[-1], DAY: days[-1]})
    else:
        first, last = connections[0], connections[-1]
    single = first == last
    with warnings.catch_warnings():
        # Dagster's own resolution of a multi-dimensional key adds `dagster/partition/<dimension>` tags and warns
        # that such keys are deprecated for user tags; these are its system tags, as it would set them.
        warnings.simplefilter("ignore", DeprecationWarning)
        return dg.RunRequest(
            job_name=job_name,
            partition_key=first if single else None,
            asset_selection=asset_selection,
            run_key=run_key,
            tags=tags
            | (
                partition_tags(first)
                if single
                else {ASSET_PARTITION_RANGE_START_TAG: str(first), ASSET_PARTITION_RANGE_END_TAG: str(last)}
            ),
        )


def batch_label(connections: Sequence[str]) -> str:
    """The batch's part of a run key: its one connection, or its first and last (unique within a tick, since
    batches never overlap)."""
    return connections[0] if len(connections) == 1 else f"{connections[0]}..{connections[-1]}"


def due_batches(
    context: dg.ScheduleEvaluationContext, integrations: IntegrationsResource, provider: str, interval: timedelta
) -> Iterator[list[str]]:
    """The due connections of the provider in batches, in the order of its dynamic partitions. Due connections
    without a partition yet are left to connections_sensor, which adds the partition and runs the first sync."""
    name = connection_partitions(provider).name
    assert name is not None
    due = {connection.id for connection in due_connections(context, integrations, provider, interval)}
    order = context.instance.get_dynamic_partitions(name)
    yield from consecutive_batches(order, due, integrations.settings.sync_batch_size)


def _every_tick(provider: str, job: UnresolvedAssetJobDefinition, name: str, what: str, cron: str) -> Any:
    """The decorator both schedules share: running by default (also in `make dev`)."""
    when = "every hour" if cron == DEFAULT_SYNC_CRON else "every 5 minutes (some tenants have their own cron)"
    return dg.schedule(
        name=name,
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Incremental sync of {what} of every active {provider} connection, hourly or on its "
        f"tenant's own cron (INTEGRATIONS_SYNC_SCHEDULES), checked {when}; up to INTEGRATIONS_SYNC_BATCH_SIZE "
        "connections per run. Connections that need re-authorization are skipped until a person reconnects them.",
    )


def build_sync_schedule(
    provider: str, job: UnresolvedAssetJobDefinition, overrides: Collection[str] | None = None
) -> dg.ScheduleDefinition:
    cron, interval = tick_cron(configured_overrides() if overrides is None else overrides)

    @_every_tick(provider, job, f"{provider}_hourly_sync", "the users and contacts", cron)
    def sync_schedule(context: dg.ScheduleEvaluationContext, integrations: IntegrationsResource) -> list[dg.RunRequest]:
        tick = context.scheduled_execution_time.isoformat()
        return [
            batch_request(
                batch,
                run_key=f"scheduled:{batch_label(batch)}:{tick}",
                tags={"provider": provider, "trigger": "schedule"},
            )
            for batch in due_batches(context, integrations, provider, interval)
        ]

    return sync_schedule


def live_event_days(tick: datetime) -> list[str]:
    """The day partitions an events sync at `tick` refreshes."""
    return [(tick.date() + timedelta(days=offset)).isoformat() for offset in LIVE_EVENT_DAYS]


def build_events_schedule(
    provider: str, job: UnresolvedAssetJobDefinition, overrides: Collection[str] | None = None
) -> dg.ScheduleDefinition:
    cron, interval = tick_cron(configured_overrides() if overrides is None else overrides)

    @_every_tick(provider, job, f"{provider}_hourly_events_sync", "yesterday's, today's and tomorrow's events", cron)
    def events_schedule(
        context: dg.ScheduleEvaluationContext, integrations: IntegrationsResource
    ) -> list[dg.RunRequest]:
        tick = context.scheduled_execution_time
        days = live_event_days(tick)
        # One run per batch: its connections × the live days, a rectangle of the connection × day partitions.
        return [
            batch_request(
                batch,
                days,
                run_key=f"scheduled:{batch_label(batch)}:{days[0]}..{days[-1]}:{tick.isoformat()}",
                tags={"provider": provider, "trigger": "schedule"},
            )
            for batch in due_batches(context, integrations, provider, interval)
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
