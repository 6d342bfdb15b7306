"""`rate_limit_sensor` runs a sync again once the provider's long wait is over.

A `Retry-After` (or a spent shared budget) longer than a run should wait fails the step without spending a
RetryPolicy attempt, and tags the run with when to come back (assets/entities.py). Dagster's own retry cannot do
this: `RetryRequested` counts as an attempt, and a retry's delay is the policy's, not the provider's. This sensor
looks at recently failed runs with that tag and requests the same job and partitions when the time has come; the
run key (derived from the failed run) makes a re-evaluation never request it twice. A run that is limited again is
tagged again, and comes back again.

A batched run (a range of connections) comes back only for the connections it left unsynced: those with an asset
of the run that planned a materialization of their partition and recorded none. They go out again in batches of
consecutive partitions, like the schedule's, so a connection synced by the first run never sits in a retried range.
"""

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from integrations_pipeline.assets.entities import RATE_LIMITED_TAG, RETRY_AT_TAG
from integrations_pipeline.jobs import sync_job_name
from integrations_pipeline.partitions import CONNECTION, DAY, connection_day_partitions, connection_partitions
from integrations_pipeline.schedules import batch_label, batch_request, consecutive_batches

RATE_LIMIT_SENSOR_INTERVAL_S = 30
LOOKBACK = timedelta(days=2)  # longer than any provider's wait (a daily quota)
RESCHEDULED_FROM_TAG = "integrations/rescheduled_from"
PARTITION_TAG = "dagster/partition"
KEPT_TAGS = ("provider", "trigger")
RETRY_BATCH_SIZE = 1000  # a retried range never grows past the failed run's own range anyway


def unsynced_partitions(instance: dg.DagsterInstance, run: DagsterRun) -> set[str]:
    """Partition keys (strings) that an asset of the run planned to materialize and did not."""
    planned: dict[str, set[dg.AssetKey]] = defaultdict(set)
    done: dict[str, set[dg.AssetKey]] = defaultdict(set)
    for kind, into in (
        (dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED, planned),
        (dg.DagsterEventType.ASSET_MATERIALIZATION, done),
    ):
        for record in instance.get_records_for_run(run.run_id, of_type=kind).records:
            event = record.event_log_entry.dagster_event
            if event is None or event.asset_key is None:
                continue
            if kind == dg.DagsterEventType.ASSET_MATERIALIZATION:
                keys = [event.partition] if event.partition else []
            else:
                data = event.asset_materialization_planned_data
                subset = data.partitions_subset if data is not None else None
                keys = list(subset.get_partition_keys()) if subset is not None else [event.partition or ""]
            for key in keys:
                into[key].add(event.asset_key)
    return {key for key, assets in planned.items() if key and not assets <= done[key]}


def retry_requests(instance: dg.DagsterInstance, run: DagsterRun, tags: dict[str, str]) -> list[dg.RunRequest]:
    """The failed run again: its single partition as it was, or its range's unsynced connections in batches."""
    run_key = f"rate-limited:{run.run_id}"
    start, end = run.tags.get(ASSET_PARTITION_RANGE_START_TAG), run.tags.get(ASSET_PARTITION_RANGE_END_TAG)
    provider = run.tags.get("provider")
    if start is None or end is None or provider is None:
        return [
            dg.RunRequest(job_name=run.job_name, partition_key=run.tags.get(PARTITION_TAG), run_key=run_key, tags=tags)
        ]
    unsynced = unsynced_partitions(instance, run)
    days: list[str] = []
    if run.job_name == sync_job_name(provider, by_day=True):
        by_day = connection_day_partitions(provider)
        first, last = by_day.get_partition_key_from_str(start), by_day.get_partition_key_from_str(end)
        start, end = first.keys_by_dimension[CONNECTION], last.keys_by_dimension[CONNECTION]
        days = [first.keys_by_dimension[DAY], last.keys_by_dimension[DAY]]
        unsynced = {by_day.get_partition_key_from_str(key).keys_by_dimension[CONNECTION] for key in unsynced}
    name = connection_partitions(provider).name
    assert name is not None
    order = instance.get_dynamic_partitions(name)
    if start not in order or end not in order:
        return []  # a connection at the range's edge is gone (disconnected): the schedule takes over
    in_range = order[order.index(start) : order.index(end) + 1]
    return [
        batch_request(batch, days, job_name=run.job_name, run_key=f"{run_key}:{batch_label(batch)}", tags=tags)
        for batch in consecutive_batches(in_range, unsynced, RETRY_BATCH_SIZE)
    ]


def build_rate_limit_sensor(
    jobs: Sequence[UnresolvedAssetJobDefinition], clock: Callable[[], float] = time.time
) -> dg.SensorDefinition:
    """`jobs` are the sync jobs whose rate-limited runs come back; `clock` lets tests move time."""

    @dg.sensor(
        name="rate_limit_sensor",
        minimum_interval_seconds=RATE_LIMIT_SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        jobs=list(jobs),
        description="Runs a sync again when the wait a provider asked for (longer than a run should wait) is over; "
        "a batched run comes back for its unsynced connections only.",
    )
    def rate_limit_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        now = datetime.fromtimestamp(clock(), UTC)
        failed = context.instance.get_runs(
            filters=dg.RunsFilter(
                statuses=[dg.DagsterRunStatus.FAILURE],
                tags={RATE_LIMITED_TAG: "true"},
                updated_after=now - LOOKBACK,
            )
        )
        job_names = {job.name for job in jobs}
        requests = []
        waiting = 0
        for run in failed:
            retry_at = datetime.fromisoformat(run.tags[RETRY_AT_TAG]) if RETRY_AT_TAG in run.tags else now
            if run.job_name not in job_names:
                continue
            if retry_at > now:
                waiting += 1
                continue
            tags = {name: run.tags[name] for name in KEPT_TAGS if name in run.tags} | {RESCHEDULED_FROM_TAG: run.run_id}
            requests += retry_requests(context.instance, run, tags)
        return dg.SensorResult(
            run_requests=requests,
            skip_reason=None if requests else f"{waiting} rate-limited runs still waiting" if waiting else None,
        )

    return rate_limit_sensor
