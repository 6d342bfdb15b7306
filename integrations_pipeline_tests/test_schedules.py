"""A schedule tick requests the due active connections in batched runs: ranges of consecutive due partitions that
never cover a connection that is not due, with deterministic run keys, accepted by Dagster's own evaluation."""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from integrations_pipeline.definitions import build_definitions
from integrations_pipeline.partitions import connection_partitions
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.schedules import DEFAULT_SYNC_CRON, TICK_CRON, consecutive_batches, is_due
from integrations_pipeline.store import ConnectionStatus, StateStore, TokenSet
from integrations_pipeline.store.repository import utcnow

TICK = datetime(2026, 3, 10, 14, 0, tzinfo=UTC)
# In partition order. gamma needs re-authorization; eps syncs every 15 minutes; the others hourly.
TENANTS = ("acme", "beta", "gamma", "delta", "eps", "zeta")


def tick(instance: dg.DagsterInstance, schedule_name: str, at: datetime = TICK) -> list[dg.RunRequest]:
    """One evaluation the way the daemon runs it: Dagster resolves (and would validate) every request."""
    definitions = build_definitions()
    schedule = definitions.resolve_schedule_def(schedule_name)
    with dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=at,
        resources={"integrations": IntegrationsResource()},
        repository_def=definitions.get_repository_def(),
    ) as context:
        data = schedule.evaluate_tick(context)
    return list(data.run_requests or [])


def spans(requests: list[dg.RunRequest]) -> list[tuple[str, str]]:
    """(first, last) partition of each request: a single key is its own span."""
    return [
        (r.tags[ASSET_PARTITION_RANGE_START_TAG], r.tags[ASSET_PARTITION_RANGE_END_TAG])
        if r.partition_key is None
        else (str(r.partition_key), str(r.partition_key))
        for r in requests
    ]


@pytest.fixture
def tenants(store: StateStore, store_url: str, key_spec: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """TENANTS connected to HubSpot, their partitions added in that order, and batches of at most 2."""
    monkeypatch.setenv("INTEGRATIONS_STATE_DATABASE_URL", store_url)
    monkeypatch.setenv("INTEGRATIONS_ENCRYPTION_KEYS", key_spec)
    monkeypatch.setenv("INTEGRATIONS_SYNC_SCHEDULES", json.dumps({"eps": "*/15 * * * *"}))
    monkeypatch.setenv("INTEGRATIONS_SYNC_BATCH_SIZE", "2")
    tokens = TokenSet(access_token="a", refresh_token="r", expires_at=utcnow() + timedelta(hours=1))
    ids = []
    with store.write() as conn:
        for tenant in TENANTS:
            scopes = ["crm.objects.contacts.read"]
            ids.append(
                store.save_connection(
                    conn,
                    tenant=tenant,
                    provider="hubspot",
                    requested_scopes=scopes,
                    granted_scopes=scopes,
                    tokens=tokens,
                ).id
            )
        store.set_status(conn, ids[2], ConnectionStatus.NEEDS_REAUTH, "test")
    return ids


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_tick_batches_consecutive_due_connections_and_never_covers_another(
    tenants: list[str], store: StateStore
) -> None:
    acme, beta, gamma, delta, eps, zeta = tenants
    with dg.instance_for_test() as instance:
        # zeta's partition comes before eps's, and one partition names no connection at all.
        order = [acme, beta, gamma, delta, "hubspot-gone", zeta, eps]
        instance.add_dynamic_partitions(str(connection_partitions("hubspot").name), order)

        hourly = tick(instance, "hubspot_hourly_sync")
        assert spans(hourly) == [(acme, beta), (delta, delta), (zeta, eps)]
        assert hourly[1].tags["dagster/partition"] == delta  # a single partition stays a plain partition run
        assert [r.run_key for r in hourly] == [
            f"scheduled:{acme}..{beta}:{TICK.isoformat()}",
            f"scheduled:{delta}:{TICK.isoformat()}",
            f"scheduled:{zeta}..{eps}:{TICK.isoformat()}",
        ]
        assert [r.run_key for r in tick(instance, "hubspot_hourly_sync")] == [r.run_key for r in hourly]
        assert all(r.tags["provider"] == "hubspot" for r in hourly)

        assert spans(tick(instance, "hubspot_hourly_sync", TICK.replace(minute=15))) == [(eps, eps)]
        assert tick(instance, "hubspot_hourly_sync", TICK.replace(minute=5)) == []

        events = tick(instance, "hubspot_hourly_events_sync")
        assert spans(events) == [
            (f"{acme}|2026-03-09", f"{beta}|2026-03-11"),
            (f"{delta}|2026-03-09", f"{delta}|2026-03-11"),
            (f"{zeta}|2026-03-09", f"{eps}|2026-03-11"),
        ]
        assert len({r.run_key for r in events}) == 3


def test_the_schedules_tick_hourly_unless_a_tenant_has_its_own_cron(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_definitions().resolve_schedule_def("hubspot_hourly_sync").cron_schedule == DEFAULT_SYNC_CRON
    monkeypatch.setenv("INTEGRATIONS_SYNC_SCHEDULES", json.dumps({"acme": "*/15 * * * *"}))
    assert build_definitions().resolve_schedule_def("zoho_hourly_events_sync").cron_schedule == TICK_CRON


def test_consecutive_batches_are_maximal_and_bounded() -> None:
    order = list("abcdefgh")
    assert consecutive_batches(order, set("abcdfgh"), 2) == [["a", "b"], ["c", "d"], ["f", "g"], ["h"]]
    assert consecutive_batches(order, set("aceg"), 100) == [["a"], ["c"], ["e"], ["g"]]
    assert consecutive_batches(order, set(), 3) == []


def test_is_due_covers_the_interval_since_the_previous_tick() -> None:
    assert is_due("0 * * * *", TICK) and not is_due("0 * * * *", TICK + timedelta(minutes=5))
    assert is_due("7 * * * *", TICK + timedelta(minutes=10)) and not is_due("7 * * * *", TICK + timedelta(minutes=5))
    assert is_due("0 9 * * 1-5", datetime(2026, 3, 10, 9, 0, tzinfo=UTC))  # a Tuesday
    assert not is_due("0 9 * * 1-5", datetime(2026, 3, 14, 9, 0, tzinfo=UTC))  # a Saturday
    assert is_due("0 * * * *", TICK, timedelta(hours=1))


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_first_syncs_of_new_connections_are_batched_like_the_schedule(tenants: list[str]) -> None:
    acme, beta, _needs_reauth, delta, eps, zeta = tenants
    definitions = build_definitions()
    with (
        dg.instance_for_test() as instance,
        dg.build_sensor_context(
            instance=instance,
            repository_def=definitions.get_repository_def(),
            resources={"integrations": IntegrationsResource()},
        ) as context,
    ):
        data = definitions.resolve_sensor_def("connections_sensor").evaluate_tick(context)
    (added, _tenants) = data.dynamic_partitions_requests or []
    assert list(added.partition_keys) == sorted(tenants)  # appended in this order: each batch below is a range
    requests = [r for r in data.run_requests or [] if r.job_name == "hubspot_sync"]
    assert spans(requests) == [(acme, beta), (delta, eps), (zeta, zeta)]  # gamma (needs_reauth) ends a batch
    assert all(r.run_key and r.run_key.startswith("first-sync:") for r in requests)
