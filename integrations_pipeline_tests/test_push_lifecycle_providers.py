"""Push lifecycle for Google, Zoho, Salesforce and HubSpot with real sensor evaluation: the sensor creates what each
provider needs at its emulator, a change there reaches the real gateway (verified with the secret the sensor sent)
and lands in the inbox, renewal follows each provider's way, and disconnecting stops the provider's side."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import httpx
import pytest

from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.sensors.push import PushLifecycle, build_push_subscriptions_sensor
from integrations_pipeline.store.inbox import InboxEvent, WebhookInbox
from integrations_pipeline.store.push import PushStatus, PushSubscriptions
from integrations_pipeline_tests.conftest import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)]


def tick(instance: dg.DagsterInstance) -> str:
    sensor = build_push_subscriptions_sensor()
    with dg.build_sensor_context(instance=instance, resources={"integrations": IntegrationsResource()}) as context:
        result = sensor(context)
    assert isinstance(result, dg.SkipReason)
    return str(result.skip_message)


def reconcile_at(later: timedelta) -> str:
    """One reconciliation as if `later` had passed (the emulator's push clock is moved by the test to match)."""
    return PushLifecycle(IntegrationsResource(), datetime.now(UTC) + later).run().summary()


def inbox_events(stack: Stack, source: str) -> list[InboxEvent]:
    return [event for event in WebhookInbox(stack.store).pending(limit=1000) if event.source == source]


def disconnect(stack: Stack, connection_id: str) -> None:
    with stack.api() as api:
        assert api.delete(f"/connections/{connection_id}").status_code in (200, 204)


def assert_left_to_expire(subscriptions: PushSubscriptions, connection_id: str) -> None:
    """Disconnecting revoked the grant, so the provider's side cannot be stopped with it: the rows are removed
    (their secrets no longer verify, so the gateway refuses what still arrives) and the provider lets them lapse."""
    rows = subscriptions.list(connection_id=connection_id, statuses=None)
    assert rows and all(row.status == PushStatus.REMOVED for row in rows)
    assert subscriptions.list(connection_id=connection_id) == []


def test_google_channels_notify_the_gateway_and_renew_by_replacement(stack: Stack) -> None:
    google = stack.emulators["google"]
    connection_id = stack.connect("acme", "google")
    subscriptions = PushSubscriptions(stack.store)
    with dg.instance_for_test() as instance:
        assert "created 2" in tick(instance)
        rows = {row.entity: row for row in subscriptions.list(connection_id=connection_id)}
        assert sorted(rows) == ["events", "users"]
        assert sorted(google.push.channel_ids()) == sorted(row.id for row in rows.values())  # channel id = ours

        google.create_event(
            summary="Pushed", start=datetime(2026, 10, 1, 9, tzinfo=UTC), end=datetime(2026, 10, 1, 10, tzinfo=UTC)
        )
        google.push.engine.settle()
        (event,) = inbox_events(stack, "google")  # the `sync` handshakes were acknowledged, not stored
        assert (event.connection_id, event.entity, event.payload["resource_state"]) == (
            connection_id,
            "events",
            "exists",
        )
        assert all(a.accepted for a in google.push.engine.attempts)

        # Past half of the directory channel's six hours: a new channel, then the old one stops.
        google.push.clock = lambda: time.time() + 4 * 3600
        summary = reconcile_at(timedelta(hours=4))
        assert "renewed 1" in summary and "failed 0" in summary
        replacement = {row.entity: row for row in subscriptions.list(connection_id=connection_id)}
        assert replacement["users"].id != rows["users"].id and replacement["events"].id == rows["events"].id
        assert subscriptions.get(rows["users"].id).status == PushStatus.REMOVED  # type: ignore[union-attr]
        assert sorted(google.push.channel_ids()) == sorted([rows["events"].id, replacement["users"].id])

        disconnect(stack, connection_id)
        assert "stopped 2" in tick(instance)
        assert_left_to_expire(subscriptions, connection_id)


def test_zoho_channel_for_contacts_and_events_renewed_in_place(stack: Stack) -> None:
    zoho = stack.emulators["zoho"]
    connection_id = stack.connect("acme", "zoho")
    subscriptions = PushSubscriptions(stack.store)
    with dg.instance_for_test() as instance:
        assert "created 1" in tick(instance)
        (row,) = subscriptions.list(connection_id=connection_id)
        assert zoho.push.channel_ids() == [int(str(row.external_id))]

        contact_id = zoho.create_contact({"Last_Name": "Pushed"})
        zoho.create_event(
            {
                "Event_Title": "Pushed",
                "Start_DateTime": "2026-10-01T09:00:00+00:00",
                "End_DateTime": "2026-10-01T10:00:00+00:00",
            }
        )
        zoho.push.engine.settle()
        events = inbox_events(stack, "zoho")
        assert sorted(event.entity or "" for event in events) == ["contacts", "events"]
        contact = next(event for event in events if event.entity == "contacts")
        assert contact.connection_id == connection_id and contact.payload["source_ids"] == [contact_id]
        assert "token" not in contact.payload

        zoho.push.clock = lambda: time.time() + 13 * 3600
        assert "renewed 1" in reconcile_at(timedelta(hours=13))
        renewed = subscriptions.get(row.id)
        assert renewed is not None and renewed.external_id == row.external_id and renewed.expires_at > row.expires_at

        disconnect(stack, connection_id)
        assert "stopped 1" in tick(instance)
        assert_left_to_expire(subscriptions, connection_id)


def test_salesforce_endpoint_registered_in_the_sandbox(stack: Stack) -> None:
    salesforce = stack.emulators["salesforce"]
    connection_id = stack.connect("acme", "salesforce")
    subscriptions = PushSubscriptions(stack.store)
    with dg.instance_for_test() as instance:
        assert "created 1" in tick(instance)
        (row,) = subscriptions.list(connection_id=connection_id)
        assert sorted(str(row.external_id).split(",")) == sorted(salesforce.push.message_ids())
        assert len(salesforce.push.message_ids()) == 3  # Contact, Event, User

        contact_id = salesforce.create_contact({"LastName": "Pushed"})
        salesforce.push.engine.settle()
        (event,) = inbox_events(stack, "salesforce")
        assert (event.connection_id, event.entity) == (connection_id, "contacts")
        assert event.payload["source_ids"] == [contact_id]
        assert [a.accepted for a in salesforce.push.engine.attempts] == [True]  # the gateway's Ack was understood

        disconnect(stack, connection_id)
        assert "stopped 1" in tick(instance)
        assert_left_to_expire(subscriptions, connection_id)


def test_hubspot_app_webhooks_set_once_and_events_mapped_by_portal(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    hubspot = stack.emulators["hubspot"]
    monkeypatch.setenv("INTEGRATIONS_HUBSPOT__APP_ID", str(hubspot.push.app_id))
    monkeypatch.setenv("INTEGRATIONS_HUBSPOT__DEVELOPER_API_KEY", hubspot.push.developer_api_key)
    with dg.instance_for_test() as instance:
        assert "created 0" in tick(instance)  # no portal connected yet: nothing to point anywhere
        assert hubspot.push.target_url is None
        connection_id = stack.connect("acme", "hubspot")
        assert "created 9" in tick(instance)  # the target URL and eight subscriptions
        assert hubspot.push.target_url == f"{stack.gateway_url}/webhooks/hubspot"
        assert "created 0" in tick(instance)  # idempotent

        contact_id = hubspot.create_contact({"firstname": "Pushed", "email": "pushed@example.com"})
        hubspot.push.engine.settle()
        events = inbox_events(stack, "hubspot")
        assert events and {event.connection_id for event in events} == {connection_id}
        assert {event.entity for event in events} == {"contacts"}
        assert any(event.payload["source_ids"] == [str(contact_id)] for event in events)


def test_salesforce_endpoint_command_prints_a_verifiable_url_once(stack: Stack) -> None:
    from click.testing import CliRunner

    from integrations_pipeline.cli import main

    connection_id = stack.connect("acme", "salesforce")
    runner = CliRunner()
    first = runner.invoke(main, ["salesforce-endpoint", connection_id])
    second = runner.invoke(main, ["salesforce-endpoint", connection_id])
    assert first.exit_code == second.exit_code == 0, first.output
    url = httpx.URL(second.output.strip())
    assert url.path == "/webhooks/salesforce"
    subscriptions = PushSubscriptions(stack.store)
    assert subscriptions.verify_secret(url.params["subscription"], url.params["token"]) is not None
    old = httpx.URL(first.output.strip())
    assert subscriptions.verify_secret(old.params["subscription"], old.params["token"]) is None  # replaced
    unknown = runner.invoke(main, ["salesforce-endpoint", "nope"])
    assert unknown.exit_code == 1 and "no Salesforce connection" in unknown.output
