"""`unified_sensor`: after a provider sync succeeds, refresh that tenant's unified partition."""

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)

from integrations_pipeline.partitions import CONNECTION, DAY, TENANT
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.sensors.connections import PARTITION_TAG


def build_unified_sensor(
    provider_jobs: list[UnresolvedAssetJobDefinition], unified_jobs: dict[bool, UnresolvedAssetJobDefinition]
) -> dg.SensorDefinition:
    """After a provider sync succeeds, refresh that tenant's unified partition (and day, for events)."""

    @dg.run_status_sensor(
        name="unified_sensor",
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=provider_jobs,
        request_jobs=list(unified_jobs.values()),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Rebuilds a tenant's unified users, contacts or events after any of its connections synced.",
    )
    def unified_sensor(
        context: dg.RunStatusSensorContext, integrations: IntegrationsResource
    ) -> dg.RunRequest | dg.SkipReason:
        tags = context.dagster_run.tags
        day = tags.get(f"{PARTITION_TAG}/{DAY}")
        connection_id = tags.get(f"{PARTITION_TAG}/{CONNECTION}") if day else tags.get(PARTITION_TAG)
        connection = integrations.store.get_connection(connection_id) if connection_id else None
        job = unified_jobs.get(day is not None)
        if connection is None or job is None:
            return dg.SkipReason(f"run {context.dagster_run.run_id} has no connection partition to follow up")
        key = dg.MultiPartitionKey({TENANT: connection.tenant, DAY: day}) if day else connection.tenant
        return dg.RunRequest(
            job_name=job.name,
            partition_key=key,
            run_key=f"unified:{context.dagster_run.run_id}",
            tags={"trigger": "provider_sync", "source_run": context.dagster_run.run_id},
        )

    return unified_sensor
