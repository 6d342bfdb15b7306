"""One webhook's whole way over real HTTP on 127.0.0.1: a change at the emulator -> its signed notification -> the
gateway verifies and stores it -> webhook_events_sensor requests the run -> Dagster syncs -> the table holds it."""

from collections.abc import Iterator

import dagster as dg
import duckdb
import httpx
import pytest

from integrations_pipeline.definitions import build_definitions
from integrations_pipeline.partitions import connection_partitions
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.sensors.push import build_push_subscriptions_sensor
from integrations_pipeline.store.inbox import WebhookInbox
from integrations_pipeline_tests.conftest import Stack
from integrations_pipeline_tests.sensor_daemon import SensorDaemon

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)]


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def table_ids(stack: Stack, table: str, connection_id: str) -> set[str]:
    with duckdb.connect(str(stack.settings.warehouse_path)) as connection:
        rows = connection.execute(f"SELECT source_id FROM {table} WHERE connection_id = ?", [connection_id])
        return {row[0] for row in rows.fetchall()}


def deliver_through_the_sensor(stack: Stack, instance: dg.DagsterInstance, connection_id: str, entity: str) -> None:
    """The notifications are in the inbox; one tick requests and runs the sync, the next records it done."""
    daemon = SensorDaemon(build_definitions(), instance)
    runs = daemon.tick()
    assert runs and all(run.success for run in runs)
    assert {run.dagster_run.tags["trigger"] for run in runs} == {"webhook"}
    assert {key.path[0] for run in runs for key in run.dagster_run.asset_selection or ()} == {
        f"{connection_id.split('-')[0]}_{entity}"
    }
    daemon.tick()
    assert WebhookInbox(stack.store).depth()["done"] >= 1 and WebhookInbox(stack.store).pending(limit=1) == []


def test_hubspot_contact_created_reaches_the_table(stack: Stack, instance: dg.DagsterInstance) -> None:
    connection_id = stack.connect("acme", "hubspot")
    instance.add_dynamic_partitions(str(connection_partitions("hubspot").name), [connection_id])
    push = stack.emulator.push
    # HubSpot webhooks belong to the app, set up once by its developer (here over the emulator's Webhooks API v3).
    with httpx.Client(base_url=stack.sandbox_url, params={"hapikey": push.developer_api_key}) as developer:
        target = f"{stack.gateway_url}/webhooks/hubspot"
        developer.put(f"/webhooks/v3/{push.app_id}/settings", json={"targetUrl": target}).raise_for_status()
        created = developer.post(
            f"/webhooks/v3/{push.app_id}/subscriptions", json={"eventType": "contact.creation", "active": True}
        )
        created.raise_for_status()

    new_id = stack.emulator.create_contact({"email": "pushed@example.com", "firstname": "Pushed"})
    push.engine.settle()
    (event,) = WebhookInbox(stack.store).pending(limit=10)
    assert (event.connection_id, event.entity, event.payload["source_ids"]) == (connection_id, "contacts", [new_id])

    deliver_through_the_sensor(stack, instance, connection_id, "contacts")
    assert new_id in table_ids(stack, "hubspot.contacts", connection_id)


def test_microsoft_contact_created_reaches_the_table(stack: Stack, instance: dg.DagsterInstance) -> None:
    graph = stack.emulators["microsoft"]
    connection_id = stack.connect("acme", "microsoft")
    instance.add_dynamic_partitions(str(connection_partitions("microsoft").name), [connection_id])
    # The push subscriptions sensor subscribes the connection at Graph (the validation handshake goes through the
    # gateway), then a change is notified with the clientState the gateway checks against the stored hash.
    with dg.build_sensor_context(instance=instance, resources={"integrations": IntegrationsResource()}) as context:
        build_push_subscriptions_sensor()(context)

    new_id = graph.create_contact(givenName="Pushed", surname="Graph")
    graph.push.engine.settle()
    events = WebhookInbox(stack.store).pending(limit=10, kinds=["change"])
    assert [(e.connection_id, e.entity) for e in events] == [(connection_id, "contacts")]
    assert "clientState" not in events[0].payload

    deliver_through_the_sensor(stack, instance, connection_id, "contacts")
    assert new_id in table_ids(stack, "microsoft.contacts", connection_id)


def subscribe(instance: dg.DagsterInstance) -> None:
    """One push-subscriptions tick: subscribes every active connection at its provider, through the gateway."""
    with dg.build_sensor_context(instance=instance, resources={"integrations": IntegrationsResource()}) as context:
        build_push_subscriptions_sensor()(context)


def test_google_directory_user_change_reaches_the_table(stack: Stack, instance: dg.DagsterInstance) -> None:
    google = stack.emulators["google"]
    connection_id = stack.connect("acme", "google")
    instance.add_dynamic_partitions(str(connection_partitions("google").name), [connection_id])
    subscribe(instance)

    user_id = str(google.user_records()[0]["id"])
    google.update_user(user_id, title="Head of Push")
    google.push.engine.settle()
    (event,) = [e for e in WebhookInbox(stack.store).pending(limit=10) if e.entity == "users"]
    assert event.connection_id == connection_id

    deliver_through_the_sensor(stack, instance, connection_id, "users")
    with duckdb.connect(str(stack.settings.warehouse_path)) as connection:
        (title,) = connection.execute(
            "SELECT title FROM google.users WHERE connection_id = ? AND source_id = ?", [connection_id, user_id]
        ).fetchone() or (None,)
    assert title == "Head of Push"


def test_zoho_contact_created_reaches_the_table(stack: Stack, instance: dg.DagsterInstance) -> None:
    zoho = stack.emulators["zoho"]
    connection_id = stack.connect("acme", "zoho")
    instance.add_dynamic_partitions(str(connection_partitions("zoho").name), [connection_id])
    subscribe(instance)

    new_id = zoho.create_contact({"Last_Name": "Pushed", "Email": "pushed@example.com"})
    zoho.push.engine.settle()
    events = WebhookInbox(stack.store).pending(limit=10)
    assert [(e.connection_id, e.entity) for e in events] == [(connection_id, "contacts")]
    assert "token" not in events[0].payload

    deliver_through_the_sensor(stack, instance, connection_id, "contacts")
    assert new_id in table_ids(stack, "zoho.contacts", connection_id)


def test_salesforce_contact_created_reaches_the_table(stack: Stack, instance: dg.DagsterInstance) -> None:
    org = stack.emulators["salesforce"]
    connection_id = stack.connect("acme", "salesforce")
    instance.add_dynamic_partitions(str(connection_partitions("salesforce").name), [connection_id])
    subscribe(instance)

    new_id = org.create_contact({"LastName": "Pushed", "Email": "pushed@example.com"})
    org.push.engine.settle()
    events = WebhookInbox(stack.store).pending(limit=10)
    assert [(e.connection_id, e.entity, e.payload["source_ids"]) for e in events] == [
        (connection_id, "contacts", [new_id])
    ]

    deliver_through_the_sensor(stack, instance, connection_id, "contacts")
    assert new_id in table_ids(stack, "salesforce.contacts", connection_id)
