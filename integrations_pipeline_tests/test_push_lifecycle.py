"""The push-subscription lifecycle end to end against the Graph emulator: the sensor creates a subscription per
entity for a new connection (through the validation handshake), the secret it sent is the stored one, lifecycle
notifications renew or recreate, disconnecting stops them, and a refused subscription leaves the connection polled."""

from __future__ import annotations

import json
from collections.abc import Iterator

import dagster as dg
import httpx
import pytest
from starlette.responses import PlainTextResponse, Response

from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.sandbox.microsoft import MicrosoftEmulator
from integrations_pipeline.sensors.push import build_push_subscriptions_sensor
from integrations_pipeline.store.inbox import InboxStatus, NewEvent, WebhookInbox
from integrations_pipeline.store.push import PushStatus, PushSubscriptions
from integrations_pipeline_tests.conftest import Stack
from integrations_pipeline_tests.sandbox.push_receiver import Received, Receiver, serve_receiver

pytestmark = pytest.mark.e2e


def echo_validation(received: Received) -> Response:
    token = httpx.URL(received.url).params.get("validationToken")
    return PlainTextResponse(token) if token is not None else Response(status_code=202)


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """Stands in for the gateway's public URL (the webhook receiver is another module's work and test)."""
    with serve_receiver() as served:
        served.respond = echo_validation
        monkeypatch.setenv("INTEGRATIONS_PUBLIC_URL", served.url)
        yield served


def tick(instance: dg.DagsterInstance) -> str:
    sensor = build_push_subscriptions_sensor()
    with dg.build_sensor_context(instance=instance, resources={"integrations": IntegrationsResource()}) as context:
        result = sensor(context)
    assert isinstance(result, dg.SkipReason)
    return str(result.skip_message)


def lifecycle(stack: Stack, external_id: str, event: str, event_id: str) -> None:
    payload = {"subscriptionId": external_id, "lifecycleEvent": event}
    WebhookInbox(stack.store).receive([NewEvent("microsoft", event_id, "lifecycle", None, None, None, payload)])


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_create_notify_lifecycle_and_stop(stack: Stack, receiver: Receiver) -> None:
    graph: MicrosoftEmulator = stack.emulators["microsoft"]
    connection_id = stack.connect("acme", "microsoft")
    subscriptions = PushSubscriptions(stack.store)
    with dg.instance_for_test() as instance:
        assert "created 3" in tick(instance)
        rows = {row.entity: row for row in subscriptions.list(connection_id=connection_id)}
        assert sorted(rows) == ["contacts", "events", "users"]
        assert sorted(graph.push.subscription_ids()) == sorted(row.external_id for row in rows.values())
        assert {row.resource for row in rows.values()} == {"me/contacts", "me/events", "users"}
        assert "created 0" in tick(instance)  # nothing left to do: no duplicates

        # A change at Graph reaches the notification URL with the secret the store holds (only as a hash).
        graph.create_contact(givenName="Push", surname="Test")
        graph.push.engine.settle()
        (notification,) = [json.loads(r.body)["value"][0] for r in receiver.requests("/webhooks/microsoft") if r.body]
        assert notification["subscriptionId"] == rows["contacts"].external_id
        assert subscriptions.verify_secret(rows["contacts"].id, notification["clientState"]) is not None

        # reauthorizationRequired renews; subscriptionRemoved recreates; both rows are done afterwards.
        lifecycle(stack, str(rows["events"].external_id), "reauthorizationRequired", "lc-1")
        graph.push.emit_lifecycle(str(rows["users"].external_id), "subscriptionRemoved")
        lifecycle(stack, str(rows["users"].external_id), "subscriptionRemoved", "lc-2")
        summary = tick(instance)
        assert "renewed 1" in summary and "created 1" in summary and "lifecycle events handled 2" in summary
        assert subscriptions.get(rows["users"].id).status == PushStatus.REMOVED  # type: ignore[union-attr]
        replacement = [r for r in subscriptions.list(connection_id=connection_id) if r.entity == "users"]
        assert len(replacement) == 1 and replacement[0].external_id in graph.push.subscription_ids()
        assert WebhookInbox(stack.store).depth().get(InboxStatus.DONE.value) == 2

        # Disconnecting stops every subscription of the connection.
        with stack.api() as api:
            assert api.delete(f"/connections/{connection_id}").status_code in (200, 204)
        assert "stopped 3" in tick(instance)
        assert subscriptions.list(connection_id=connection_id) == []


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_refused_subscriptions_leave_the_connection_polled(stack: Stack, receiver: Receiver) -> None:
    receiver.respond = lambda received: PlainTextResponse("wrong echo")
    connection_id = stack.connect("acme", "microsoft")
    subscriptions = PushSubscriptions(stack.store)
    with dg.instance_for_test() as instance:
        assert "failed 3" in tick(instance)
        failed = subscriptions.list(connection_id=connection_id, statuses=[PushStatus.FAILED])
        assert len(failed) == 3 and all("HTTP 400" in (row.status_reason or "") for row in failed)
        assert "created 0, renewed 0, stopped 0, failed 0" in tick(instance)  # refused ones are not retried
    assert stack.emulators["microsoft"].push.subscription_ids() == []
