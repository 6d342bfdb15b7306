"""A schedule tick requests exactly the active connections' partitions, with deterministic run keys."""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from integrations_pipeline.definitions import build_definitions
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.schedules import is_due
from integrations_pipeline.store import ConnectionStatus
from integrations_pipeline_tests.conftest import Stack

TICK = datetime(2026, 3, 10, 14, 0, tzinfo=UTC)


def tick(schedule_name: str, at: datetime = TICK) -> list[dg.RunRequest]:
    schedule = build_definitions().resolve_schedule_def(schedule_name)
    with (
        dg.instance_for_test() as instance,
        dg.build_schedule_context(
            instance=instance, scheduled_execution_time=at, resources={"integrations": IntegrationsResource()}
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


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_tick_requests_exactly_the_due_active_connections(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """acme syncs every 15 minutes, beta hourly (the default), gamma needs re-authorization: never."""
    monkeypatch.setenv("INTEGRATIONS_SYNC_SCHEDULES", json.dumps({"acme": "*/15 * * * *", "gamma": "* * * * *"}))
    acme, beta, gamma = stack.connect("acme"), stack.connect("beta"), stack.connect("gamma")
    google_acme = stack.connect("acme", "google")
    with stack.store.locked(gamma) as conn:
        stack.store.set_status(conn, gamma, ConnectionStatus.NEEDS_REAUTH, "test")

    def partitions(schedule_name: str, minute: int) -> set[str]:
        return {str(r.partition_key) for r in tick(schedule_name, TICK.replace(minute=minute))}

    assert partitions("hubspot_hourly_sync", 0) == {acme, beta}
    assert partitions("hubspot_hourly_sync", 5) == set()
    assert partitions("hubspot_hourly_sync", 15) == {acme}
    assert partitions("google_hourly_sync", 15) == {google_acme}  # the tenant's cron covers all its providers
    assert partitions("google_hourly_sync", 20) == set()

    events = tick("hubspot_hourly_events_sync", TICK)
    keys = {(r.partition_key.keys_by_dimension["connection"], r.partition_key.keys_by_dimension["day"]) for r in events}  # type: ignore[union-attr]
    assert keys == {(c, day) for c in (acme, beta) for day in ("2026-03-09", "2026-03-10", "2026-03-11")}
    assert len({r.run_key for r in events}) == len(events) == 6


def test_is_due_covers_the_interval_since_the_previous_tick() -> None:
    assert is_due("0 * * * *", TICK) and not is_due("0 * * * *", TICK + timedelta(minutes=5))
    assert is_due("7 * * * *", TICK + timedelta(minutes=10)) and not is_due("7 * * * *", TICK + timedelta(minutes=5))
    assert is_due("0 9 * * 1-5", datetime(2026, 3, 10, 9, 0, tzinfo=UTC))  # a Tuesday
    assert not is_due("0 9 * * 1-5", datetime(2026, 3, 14, 9, 0, tzinfo=UTC))  # a Saturday
