"""`connections_sensor` keeps each provider's connection partitions in step with the state store and
starts the first sync of every new connection: its users and contacts, and its live event days (yesterday, today,
tomorrow), so a new connection has events without waiting for the hourly events schedule."""

from collections.abc import Mapping
from datetime import UTC, datetime

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)

from integrations_pipeline.partitions import CONNECTION, DAY, TENANTS, connection_partitions
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.schedules import live_event_days
from integrations_pipeline.store import ConnectionStatus

SYNCABLE = (ConnectionStatus.ACTIVE, ConnectionStatus.NEEDS_REAUTH)
CONNECTIONS_SENSOR_INTERVAL_S = 15
TENANTS_NAME = TENANTS.name or "tenants"
PARTITION_TAG = "dagster/partition"


def build_connections_sensor(
    sync_jobs: dict[str, UnresolvedAssetJobDefinition],
    events_jobs: Mapping[str, UnresolvedAssetJobDefinition] | None = None,
) -> dg.SensorDefinition:
    """`sync_jobs` maps each provider to the job that syncs one of its connections; `events_jobs` to the job that
    syncs one connection's day of events."""
    events_jobs = events_jobs or {}

    @dg.sensor(
        name="connections_sensor",
        minimum_interval_seconds=CONNECTIONS_SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        jobs=[*sync_jobs.values(), *events_jobs.values()],
        description="Adds a partition for every new connection (and removes disconnected ones), then runs its "
        "first sync.",
    )
    def connections_sensor(context: dg.SensorEvaluationContext, integrations: IntegrationsResource) -> dg.SensorResult:
        partition_requests: list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] = []
        run_requests = []
        events_requests: list[tuple[int, dg.RunRequest]] = []  # (the day's place in days_first, the request)
        now = datetime.now(UTC)
        # Runs queue in the order requested: today's events of every new connection right after the users and
        # contacts, so each provider's events table appears with the first few runs; yesterday and tomorrow follow.
        days_first = sorted(live_event_days(now), key=lambda day: day != now.date().isoformat())
        for provider, job in sync_jobs.items():
            partitions_name = connection_partitions(provider).name
            assert partitions_name is not None
            wanted = {c.id: c for c in integrations.store.list_connections(provider=provider, statuses=SYNCABLE)}
            known = set(context.instance.get_dynamic_partitions(partitions_name))
            added = sorted(set(wanted) - known)
            removed = sorted(known - set(wanted))
            if added:
                partition_requests.append(dg.AddDynamicPartitionsRequest(partitions_name, added))
            if removed:
                partition_requests.append(dg.DeleteDynamicPartitionsRequest(partitions_name, removed))
            for connection_id in added:
                if wanted[connection_id].status != ConnectionStatus.ACTIVE:
                    continue
                # Deterministic: the same connection (by creation time) gets one first sync, ever.
                first_sync = f"first-sync:{connection_id}:{wanted[connection_id].created_at.isoformat()}"
                tags = {"provider": provider, "trigger": "new_connection"}
                run_requests.append(
                    dg.RunRequest(job_name=job.name, partition_key=connection_id, run_key=first_sync, tags=tags)
                )
                if provider in events_jobs:
                    events_requests.extend(
                        (
                            rank,
                            dg.RunRequest(
                                job_name=events_jobs[provider].name,
                                partition_key=dg.MultiPartitionKey({CONNECTION: connection_id, DAY: day}),
                                run_key=f"{first_sync}:{day}",
                                tags=tags,
                            ),
                        )
                        for rank, day in enumerate(days_first)
                    )
        run_requests += [request for _, request in sorted(events_requests, key=lambda ranked: ranked[0])]
        tenants = sorted({c.tenant for c in integrations.store.list_connections(statuses=SYNCABLE)})
        known_tenants = set(context.instance.get_dynamic_partitions(TENANTS_NAME))
        if set(tenants) - known_tenants:
            partition_requests.append(
                dg.AddDynamicPartitionsRequest(TENANTS_NAME, sorted(set(tenants) - known_tenants))
            )
        return dg.SensorResult(run_requests=run_requests, dynamic_partitions_requests=partition_requests)

    return connections_sensor
