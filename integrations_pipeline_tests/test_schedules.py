"""A schedule tick requests exactly the active connections' partitions, with deterministic run keys."""

from datetime import UTC, datetime

import dagster as dg

from integrations_pipeline.definitions import build_definitions
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.store import ConnectionStatus
from integrations_pipeline_tests.conftest import Stack

TICK = datetime(2026, 3, 10, 14, 0, tzinfo=UTC)


def tick(schedule_name: str) -> list[dg.RunRequest]:
    schedule = build_definitions().resolve_schedule_def(schedule_name)
    with (
        dg.instance_for_test() as instance,
        dg.build_schedule_context(
            instance=instance, scheduled_execution_time=TICK, resources={"integrations": IntegrationsResource()}
        ) as context,
    ):
        return list(schedule(context))


def test_hourly_sync_requests_active_connections_only(stack: Stack) -> None:
    active, broken = stack.connect("acme"), stack.connect("beta")
    with stack.store.locked(broken) as conn:
        stack.store.set_status(conn, broken, ConnectionStatus.NEEDS_REAUTH, "test")
    requests = tick("hubspot_hourly_sync")
    assert [request.partition_key for request in requests] == [active]
    assert requests[0].run_key == f"scheduled:{active}:{TICK.isoformat()}"
    assert tick("hubspot_hourly_sync")[0].run_key == requests[0].run_key  # the same tick, the same key
