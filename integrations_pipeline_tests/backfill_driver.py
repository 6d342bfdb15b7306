"""Drive Dagster backfills in tests the way the daemon does: the daemon's own backfill iteration, with runs
executed synchronously in this process, so a test waits on nothing but Dagster's code."""

import logging
import sys
import time

import dagster as dg
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.backfill import execute_backfill_iteration

from integrations_pipeline.assets.entities import BACKFILL_TAG
from integrations_pipeline.definitions import build_definitions
from integrations_pipeline.partitions import CONNECTION, DAY

# Runs execute synchronously inside the daemon's iteration: the test waits on nothing but Dagster's own code.
IN_PROCESS_RUNS = {
    "run_launcher": {
        "module": "dagster._core.launcher.sync_in_memory_run_launcher",
        "class": "SyncInMemoryRunLauncher",
    },
    "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"},
}
BACKFILL_DEADLINE_S = 300


def execute_backfill(instance: dg.DagsterInstance, backfill_id: str) -> None:
    """Drive the backfill with the daemon's own iteration until it finishes, as `dagster-daemon` would."""
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(executable_path=sys.executable, module_name="integrations_pipeline.definitions")
    )
    logger = logging.getLogger("backfill-test")
    deadline = time.monotonic() + BACKFILL_DEADLINE_S
    with create_test_daemon_workspace_context(InProcessWorkspaceLoadTarget(origin), instance) as workspace:
        while True:
            list(execute_backfill_iteration(workspace, logger))
            backfill = instance.get_backfill(backfill_id)
            assert backfill is not None
            if backfill.status not in (BulkActionStatus.REQUESTED, BulkActionStatus.CANCELING):
                break
            assert time.monotonic() < deadline, f"backfill {backfill_id} still {backfill.status} after the deadline"
    assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS, backfill.status
    failed = instance.get_run_records(
        dg.RunsFilter(tags={BACKFILL_TAG: backfill_id}, statuses=[dg.DagsterRunStatus.FAILURE])
    )
    assert not failed


def sync(instance: dg.DagsterInstance, job: str, key: str | dg.MultiPartitionKey) -> None:
    result = (
        build_definitions()
        .resolve_job_def(job)
        .execute_in_process(partition_key=key, instance=instance, raise_on_error=False)
    )
    assert result.success, [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]  # type: ignore[union-attr]


def events_key(connection_id: str, day: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({CONNECTION: connection_id, DAY: day})
