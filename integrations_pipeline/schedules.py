"""Schedules: a recurring incremental sync of every active connection, per provider."""

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)

from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.store import ConnectionStatus

DEFAULT_SYNC_CRON = "0 * * * *"


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
