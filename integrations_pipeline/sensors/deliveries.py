"""Outgoing webhooks from Dagster: two run status sensors turn finished sync runs into `integration.synced` and
`integration.error` events, and `webhook_deliveries_sensor` sends every due delivery. All state is in the outbox
tables, so a restart of the daemon loses nothing: what was due is still due."""

import hashlib
from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_START_TAG

from integrations_pipeline.partitions import CONNECTION, DAY
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.sensors.connections import PARTITION_TAG
from integrations_pipeline.store.events import EventType, record_event
from integrations_pipeline.store.outbox import Outbox
from integrations_pipeline.store.repository import StateStore, utcnow
from integrations_pipeline.webhooks_out.sender import deliver_due

DELIVERIES_SENSOR_INTERVAL_S = 15
COUNTED = ("rows_fetched", "rows_deleted", "dagster/partition_row_count")


def connection_of_run(tags: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(connection id, day) of a sync run, from its partition tags."""
    day = tags.get(f"{PARTITION_TAG}/{DAY}")
    return (tags.get(f"{PARTITION_TAG}/{CONNECTION}") if day else tags.get(PARTITION_TAG)), day


def run_event_id(run_id: str, event_type: EventType, partition: str | None = None) -> str:
    """Deterministic, so a sensor that evaluates the same run twice records one event (per partition of a batch)."""
    scope = f"{run_id}:{event_type.value}" + (f":{partition}" if partition else "")
    return "evt_" + hashlib.sha256(scope.encode()).hexdigest()[:24]


def is_batch(run: dg.DagsterRun) -> bool:
    """A run over a range of partitions (a batch of connections, or days): its events are per partition."""
    return ASSET_PARTITION_RANGE_START_TAG in run.tags


def connection_of_partition(partition: str) -> tuple[str, str | None]:
    """(connection id, day) of a partition key: `connection` or `connection|day` (dimensions in name order)."""
    connection_id, _, day = partition.partition("|")
    return connection_id, day or None


def materialized_by_partition(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict[str, dict[str, int]]]:
    """{partition: {asset: counts}} of a batched run's materializations."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    by_partition: dict[str, dict[str, dict[str, int]]] = {}
    for record in records:
        materialization = record.event_log_entry.asset_materialization
        if materialization is None or materialization.partition is None:
            continue
        by_partition.setdefault(materialization.partition, {})[materialization.asset_key.to_user_string()] = counted(
            materialization.metadata
        )
    return by_partition


def synced_facts(counts: dict[str, dict[str, int]]) -> dict[str, Any]:
    totals = {name: sum(asset.get(name, 0) for asset in counts.values()) for name in ("rows_fetched", "rows_deleted")}
    return {"counts": counts, "totals": totals}


def record_batch_synced(store: StateStore, instance: dg.DagsterInstance, run: dg.DagsterRun) -> None:
    """`integration.synced` for every partition a batched run wrote (also when others of the run failed)."""
    for partition, counts in sorted(materialized_by_partition(instance, run.run_id).items()):
        record_run_event(store, run, EventType.SYNCED, synced_facts(counts), partition=partition)


def failed_partitions(context: dg.RunFailureSensorContext) -> dict[str, str]:
    """{partition: reason} a batched run's steps reported (the asset body's `failed_partitions` metadata)."""
    failed: dict[str, str] = {}
    for step_event in context.get_step_failure_events():
        data = step_event.step_failure_data.user_failure_data
        entry = data.metadata.get("failed_partitions") if data is not None else None
        if entry is not None and isinstance(entry.value, dict):
            failed |= {str(key): str(reason) for key, reason in entry.value.items()}
    return failed


def materialized_counts(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict[str, int]]:
    """Per asset, the row counts its materialization in this run reported."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    counts: dict[str, dict[str, int]] = {}
    for record in records:
        materialization = record.event_log_entry.asset_materialization
        if materialization is None:
            continue
        counts[materialization.asset_key.to_user_string()] = counted(materialization.metadata)
    return counts


def counted(metadata: Mapping[str, Any]) -> dict[str, int]:
    return {name.removeprefix("dagster/partition_"): int(metadata[name].value) for name in COUNTED if name in metadata}


def record_run_event(
    store: StateStore, run: dg.DagsterRun, event_type: EventType, facts: dict[str, Any], partition: str | None = None
) -> str | None:
    """The run's event, or with `partition` the event of one partition of a batched run."""
    connection_id, day = connection_of_partition(partition) if partition else connection_of_run(run.tags)
    connection = store.get_connection(connection_id) if connection_id else None
    if connection is None:
        return None
    data = {
        "connection_id": connection.id,
        "tenant": connection.tenant,
        "provider": connection.provider,
        "run_id": run.run_id,
        "job": run.job_name,
        "day": day,
        **facts,
    }
    with store.write() as conn:
        return record_event(
            conn,
            event_type,
            connection_id=connection.id,
            at=utcnow(),
            data=data,
            event_id=run_event_id(run.run_id, event_type, partition),
        )


def failure_cause(context: dg.RunFailureSensorContext) -> str:
    """The first failed step's own description (our assets say what to do), else the run's failure message."""
    for step_event in context.get_step_failure_events():
        data = step_event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            return data.user_failure_data.description
        if data.error is not None:
            return f"{step_event.step_key}: {data.error.cls_name}: {data.error.message.strip()}"
    return context.failure_event.message or "the run failed; see its logs in Dagster"


def build_delivery_sensors(provider_jobs: list[UnresolvedAssetJobDefinition]) -> list[dg.SensorDefinition]:
    @dg.run_status_sensor(
        name="webhook_synced_sensor",
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=provider_jobs,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Records `integration.synced` (with row counts) for every successful sync run.",
    )
    def webhook_synced_sensor(context: dg.RunStatusSensorContext, integrations: IntegrationsResource) -> None:
        run = context.dagster_run
        if is_batch(run):
            record_batch_synced(integrations.store, context.instance, run)
            return
        counts = materialized_counts(context.instance, run.run_id)
        record_run_event(integrations.store, run, EventType.SYNCED, synced_facts(counts))

    @dg.run_failure_sensor(
        name="webhook_error_sensor",
        monitored_jobs=provider_jobs,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Records `integration.error`, with the cause, for every sync run that failed after its retries.",
    )
    def webhook_error_sensor(context: dg.RunFailureSensorContext, integrations: IntegrationsResource) -> None:
        run = context.dagster_run
        if not is_batch(run):
            record_run_event(integrations.store, run, EventType.ERROR, {"cause": failure_cause(context)})
            return
        # A batch: each failed partition with its own reason, and the partitions it did sync as synced.
        for partition, reason in sorted(failed_partitions(context).items()):
            record_run_event(integrations.store, run, EventType.ERROR, {"cause": reason}, partition=partition)
        record_batch_synced(integrations.store, context.instance, run)

    @dg.sensor(
        name="webhook_deliveries_sensor",
        minimum_interval_seconds=DELIVERIES_SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Sends due webhook deliveries (signed, retried over a day, each attempt recorded).",
    )
    def webhook_deliveries_sensor(
        context: dg.SensorEvaluationContext, integrations: IntegrationsResource
    ) -> dg.SkipReason:
        report = deliver_due(Outbox(integrations.store), integrations.settings.webhook_allowed_networks)
        for error in report.errors:
            context.log.info(error)
        return dg.SkipReason(f"webhook deliveries: {report.summary()}")

    return [webhook_synced_sensor, webhook_error_sensor, webhook_deliveries_sensor]
