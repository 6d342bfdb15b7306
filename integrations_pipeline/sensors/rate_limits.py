"""`rate_limit_sensor` runs a sync again once the provider's long wait is over.

A `Retry-After` (or a spent shared budget) longer than a run should wait fails the step without spending a
RetryPolicy attempt, and tags the run with when to come back (assets/entities.py). Dagster's own retry cannot do
this: `RetryRequested` counts as an attempt, and a retry's delay is the policy's, not the provider's. This sensor
looks at recently failed runs with that tag and requests the same job and partition when the time has come; the
run key (one per failed run) makes a re-evaluation never request it twice. A run that is limited again is tagged
again, and comes back again.
"""

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from integrations_pipeline.assets.entities import RATE_LIMITED_TAG, RETRY_AT_TAG

RATE_LIMIT_SENSOR_INTERVAL_S = 30
LOOKBACK = timedelta(days=2)  # longer than any provider's wait (a daily quota)
RESCHEDULED_FROM_TAG = "integrations/rescheduled_from"
PARTITION_TAG = "dagster/partition"
KEPT_TAGS = ("provider", "trigger")


def build_rate_limit_sensor(
    jobs: Sequence[UnresolvedAssetJobDefinition], clock: Callable[[], float] = time.time
) -> dg.SensorDefinition:
    """`jobs` are the sync jobs whose rate-limited runs come back; `clock` lets tests move time."""

    @dg.sensor(
        name="rate_limit_sensor",
        minimum_interval_seconds=RATE_LIMIT_SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        jobs=list(jobs),
        description="Runs a sync again when the wait a provider asked for (longer than a run should wait) is over.",
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
            requests.append(
                dg.RunRequest(
                    job_name=run.job_name,
                    partition_key=run.tags.get(PARTITION_TAG),
                    run_key=f"rate-limited:{run.run_id}",
                    tags={
                        **{name: run.tags[name] for name in KEPT_TAGS if name in run.tags},
                        RESCHEDULED_FROM_TAG: run.run_id,
                    },
                )
            )
        return dg.SensorResult(
            run_requests=requests,
            skip_reason=None if requests else f"{waiting} rate-limited runs still waiting" if waiting else None,
        )

    return rate_limit_sensor
