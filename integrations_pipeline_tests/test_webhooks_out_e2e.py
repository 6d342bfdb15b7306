"""A subscriber on 127.0.0.1 hears about a connect, a sync and a failure: real gateway, emulators and Dagster runs,
and the product's own sensors, evaluated by Dagster, record the events and send them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from integrations_pipeline.definitions import build_definitions
from integrations_pipeline.partitions import connection_partitions
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.store import ConnectionStatus, schema
from integrations_pipeline_tests.conftest import Stack
from integrations_pipeline_tests.webhook_receiver import Receiver, running_receiver

pytestmark = pytest.mark.e2e


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as receiver:
        yield receiver


def run_sync(defs: dg.Definitions, instance: dg.DagsterInstance, connection_id: str) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def("hubspot_sync")
    return job.execute_in_process(partition_key=connection_id, instance=instance, raise_on_error=False)


def run_status_event(instance: dg.DagsterInstance, run_id: str, status: dg.DagsterEventType) -> dg.DagsterEvent:
    (record,) = instance.get_records_for_run(run_id, of_type=status).records
    event = record.event_log_entry.dagster_event
    assert event is not None
    return event


def evaluate_run_sensor(
    defs: dg.Definitions, instance: dg.DagsterInstance, name: str, run: dg.ExecuteInProcessResult
) -> None:
    status = dg.DagsterEventType.RUN_SUCCESS if run.success else dg.DagsterEventType.RUN_FAILURE
    with dg.build_run_status_sensor_context(
        sensor_name=name,
        dagster_event=run_status_event(instance, run.run_id, status),
        dagster_instance=instance,
        dagster_run=run.dagster_run,
        resources={"integrations": IntegrationsResource()},
    ) as context:
        defs.resolve_sensor_def(name)(context if run.success else context.for_run_failure())


def evaluate_deliveries(defs: dg.Definitions, instance: dg.DagsterInstance) -> str:
    sensor = defs.resolve_sensor_def("webhook_deliveries_sensor")
    with dg.build_sensor_context(instance=instance, resources={"integrations": IntegrationsResource()}) as context:
        result = sensor(context)
    assert isinstance(result, dg.SkipReason)
    return str(result.skip_message)


def test_a_subscriber_hears_of_a_connect_a_sync_and_a_failure(
    stack: Stack, instance: dg.DagsterInstance, receiver: Receiver
) -> None:
    defs = build_definitions()
    with stack.api() as api:
        created = api.post(
            "/subscriptions",
            json={
                "url": receiver.hook_url,
                "event_types": [
                    "integration.connected",
                    "integration.synced",
                    "integration.error",
                    "integration.needs_reauth",
                ],
            },
        )
        assert created.status_code == 201, created.text
        subscription_id, secret = created.json()["id"], created.json()["secret"]

    # Connect: the gateway records the event with its audit entry; the sensor sends it.
    connection_id = stack.connect("acme")
    assert evaluate_deliveries(defs, instance) == "webhook deliveries: 1 delivered, 0 to retry, 0 failed"
    (connected,) = receiver.of_type("integration.connected", secret)
    assert connected["data"] == {
        "connection_id": connection_id,
        "tenant": "acme",
        "provider": "hubspot",
        "reauthorized": False,
        "granted_scopes": connected["data"]["granted_scopes"],
        "missing_scopes": [],
    }

    # A successful sync: the run status sensor records the counts, the delivery sensor sends them.
    instance.add_dynamic_partitions(str(connection_partitions("hubspot").name), [connection_id])
    synced_run = run_sync(defs, instance, connection_id)
    assert synced_run.success
    for _ in range(2):  # evaluating the same run twice records one event
        evaluate_run_sensor(defs, instance, "webhook_synced_sensor", synced_run)
    evaluate_deliveries(defs, instance)
    (synced,) = receiver.of_type("integration.synced", secret)
    assert synced["data"]["run_id"] == synced_run.run_id and synced["data"]["connection_id"] == connection_id
    assert synced["data"]["counts"]["hubspot_contacts"]["rows_fetched"] == 250
    assert synced["data"]["totals"]["rows_fetched"] >= 250

    # A failure: the provider revoked us. The connection turns needs_reauth, and the run fails for good.
    stack.emulator.revoke_refresh_tokens()
    stack.emulator.expire_access_tokens()
    failed_run = run_sync(defs, instance, connection_id)
    assert not failed_run.success
    evaluate_run_sensor(defs, instance, "webhook_error_sensor", failed_run)
    evaluate_deliveries(defs, instance)
    (needs_reauth,) = receiver.of_type("integration.needs_reauth", secret)
    assert needs_reauth["data"]["connection_id"] == connection_id and needs_reauth["data"]["reason"]
    (error,) = receiver.of_type("integration.error", secret)
    assert error["data"]["run_id"] == failed_run.run_id
    assert "reconnect it through the gateway" in error["data"]["cause"]

    # Every request verified with the reference implementation, and the history shows each attempt.
    assert all(r.verifies_with(secret) for r in receiver.received)
    with stack.api() as api:
        deliveries = api.get(f"/subscriptions/{subscription_id}/deliveries").json()["deliveries"]
    assert sorted(d["event_type"] for d in deliveries) == [
        "integration.connected",
        "integration.error",
        "integration.needs_reauth",
        "integration.synced",
    ]
    assert all(d["status"] == "delivered" and [a["status_code"] for a in d["history"]] == [204] for d in deliveries)
    # The secret is nowhere in Dagster's event log.
    logs = [*instance.all_logs(synced_run.run_id), *instance.all_logs(failed_run.run_id)]
    assert secret not in str(logs)


def test_disconnect_is_announced_and_the_sensor_retries_a_down_subscriber(
    stack: Stack, instance: dg.DagsterInstance, receiver: Receiver
) -> None:
    defs = build_definitions()
    connection_id = stack.connect("acme")
    with stack.api() as api:
        created = api.post(
            "/subscriptions", json={"url": receiver.hook_url, "event_types": ["integration.disconnected"]}
        )
        secret = created.json()["secret"]
        assert api.delete(f"/connections/{connection_id}").status_code == 200
    receiver.answer(503)
    assert evaluate_deliveries(defs, instance) == "webhook deliveries: 0 delivered, 1 to retry, 0 failed"
    assert evaluate_deliveries(defs, instance).startswith("webhook deliveries: 0 delivered, 0 to retry")  # not due
    # The retry is due about 5 s later. Fresh definitions each time, as after a daemon restart: the state is in
    # the outbox, not in the process.
    deadline = time.monotonic() + 30
    while evaluate_deliveries(build_definitions(), instance) != "webhook deliveries: 1 delivered, 0 to retry, 0 failed":
        assert time.monotonic() < deadline, "the retry was never sent"
        threading.Event().wait(0.5)  # poll the due time, not a fixed sleep
    assert len(receiver.received) == 2 and all(r.verifies_with(secret) for r in receiver.received)
    (disconnected, _) = (r.payload(secret) for r in receiver.received)
    assert disconnected["type"] == "integration.disconnected"
    assert disconnected["data"] == {
        "connection_id": connection_id,
        "tenant": "acme",
        "provider": "hubspot",
        "revoked_at_provider": True,
    }


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_batched_run_announces_each_connection_on_its_own(stack: Stack, instance: dg.DagsterInstance) -> None:
    """One run over acme..beta where beta needs re-authorization: acme is announced synced, beta in error."""
    defs = build_definitions()
    acme, beta = stack.connect("acme"), stack.connect("beta")
    with stack.store.locked(beta) as conn:
        stack.store.set_status(conn, beta, ConnectionStatus.NEEDS_REAUTH, "test")
    instance.add_dynamic_partitions(str(connection_partitions("hubspot").name), [acme, beta])
    run = defs.resolve_job_def("hubspot_sync").execute_in_process(
        instance=instance,
        raise_on_error=False,
        tags={ASSET_PARTITION_RANGE_START_TAG: acme, ASSET_PARTITION_RANGE_END_TAG: beta},
    )
    assert not run.success
    for _ in range(2):  # evaluating the same run twice records each event once
        evaluate_run_sensor(defs, instance, "webhook_error_sensor", run)
    events = schema.webhook_events
    with stack.store.engine.connect() as conn:
        rows = conn.execute(sa.select(events.c.type, events.c.connection_id, events.c.data)).all()
    announced = sorted((row.type, row.connection_id) for row in rows if row.data.get("run_id") == run.run_id)
    assert announced == [("integration.error", beta), ("integration.synced", acme)]
    synced = next(row.data for row in rows if row.type == "integration.synced")
    assert synced["counts"]["hubspot_contacts"]["rows_fetched"] == 250
