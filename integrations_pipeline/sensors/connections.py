"""`connections_sensor` keeps each provider's connection partitions in step with the state store and
starts the first sync of every new connection (and, where an events job is given, of its live event days), in
batched runs like the schedules'."""

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)

from integrations_pipeline.partitions import TENANTS, connection_partitions
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.schedules import batch_label, batch_request, consecutive_batches, live_event_days
from integrations_pipeline.store import Connection, ConnectionStatus

SYNCABLE = (ConnectionStatus.ACTIVE, ConnectionStatus.NEEDS_REAUTH)
CONNECTIONS_SENSOR_INTERVAL_S = 15
TENANTS_NAME = TENANTS.name or "tenants"
PARTITION_TAG = "dagster/partition"


def first_sync_digest(connections: Mapping[str, Connection], batch: list[str]) -> str:
    """The batch's connections with their creation times, hashed: a reconnected connection is a new first sync."""
    created = "|".join(f"{key}@{connections[key].created_at.isoformat()}" for key in batch)
    return hashlib.sha256(created.encode()).hexdigest()[:16]


def build_connections_sensor(
    sync_jobs: Mapping[str, UnresolvedAssetJobDefinition],
    events_jobs: Mapping[str, UnresolvedAssetJobDefinition] | None = None,
) -> dg.SensorDefinition:
    """`sync_jobs` maps each provider to the job that syncs its connections; `events_jobs` (optional) to the job that
    syncs its connections' days of events."""
    events_jobs = events_jobs or {}

    @dg.sensor(
        name="connections_sensor",
        minimum_interval_seconds=CONNECTIONS_SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        jobs=[*sync_jobs.values(), *events_jobs.values()],
        description="Adds a partition for every new connection (and removes disconnected ones), then runs its "
        "first sync (up to INTEGRATIONS_SYNC_BATCH_SIZE new connections per run).",
    )
    def connections_sensor(context: dg.SensorEvaluationContext, integrations: IntegrationsResource) -> dg.SensorResult:
        partition_requests: list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] = []
        run_requests = []
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
            # First syncs in batches, like the schedule's: `added` is appended to the partitions in this order, so a
            # batch of it is a range; a connection that needs re-authorization ends a batch rather than joining it.
            first = {key for key in added if wanted[key].status == ConnectionStatus.ACTIVE}
            tags = {"provider": provider, "trigger": "new_connection"}
            for batch in consecutive_batches(added, first, integrations.settings.sync_batch_size):
                # Deterministic: the same connections (by creation time) get one first sync, ever.
                first_sync = f"first-sync:{batch_label(batch)}:{first_sync_digest(wanted, batch)}"
                run_requests.append(batch_request(batch, job_name=job.name, run_key=first_sync, tags=tags))
                if provider in events_jobs:  # the batch x the live days: one rectangle, one run
                    days = live_event_days(datetime.now(UTC))
                    events_key = f"{first_sync}:{days[0]}..{days[-1]}"
                    run_requests.append(
                        batch_request(batch, days, job_name=events_jobs[provider].name, run_key=events_key, tags=tags)
                    )
        tenants = sorted({c.tenant for c in integrations.store.list_connections(statuses=SYNCABLE)})
        known_tenants = set(context.instance.get_dynamic_partitions(TENANTS_NAME))
        if set(tenants) - known_tenants:
            partition_requests.append(
                dg.AddDynamicPartitionsRequest(TENANTS_NAME, sorted(set(tenants) - known_tenants))
            )
        return dg.SensorResult(run_requests=run_requests, dynamic_partitions_requests=partition_requests)

    return connections_sensor
