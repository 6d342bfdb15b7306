"""Graph change notifications from the emulator: the validation handshake, limits, renewal and deletion, and
notifications for changes made over HTTP, retried after failures, plus lifecycle notifications."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.responses import PlainTextResponse, Response

from integrations_pipeline.httpserver import BackgroundServer
from integrations_pipeline.sandbox.microsoft import MicrosoftEmulator
from integrations_pipeline_tests.sandbox.conftest import ManualClock
from integrations_pipeline_tests.sandbox.push_receiver import Received, Receiver, serve_receiver
from integrations_pipeline_tests.sandbox.test_microsoft_emulator import CLIENT_ID, CLIENT_SECRET, SMALL, run_code_flow

SCOPES = "offline_access User.Read User.Read.All Contacts.ReadWrite Calendars.ReadWrite"


def echo_validation(received: Received) -> Response:
    token = httpx.URL(received.url).params.get("validationToken")
    if token is not None:
        return PlainTextResponse(token)
    return Response(status_code=202)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serve_receiver() as served:
        served.respond = echo_validation
        yield served


@pytest.fixture
def graph(clock: ManualClock) -> Iterator[tuple[MicrosoftEmulator, httpx.Client]]:
    emulator = MicrosoftEmulator(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        clock=clock,
        requests_per_window=None,
        push_time_scale=1e-5,
        **SMALL,
    )
    with BackgroundServer(emulator.app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        tokens = run_code_flow(http, scope=SCOPES)
        http.headers["Authorization"] = f"Bearer {tokens['access_token']}"
        yield emulator, http


def subscription_body(receiver: Receiver, clock: ManualClock, **overrides: Any) -> dict[str, Any]:
    expires = datetime.fromtimestamp(clock(), UTC) + timedelta(minutes=4000)
    return {
        "changeType": "created,updated,deleted",
        "notificationUrl": f"{receiver.url}/webhooks/microsoft",
        "lifecycleNotificationUrl": f"{receiver.url}/webhooks/microsoft/lifecycle",
        "resource": "me/contacts",
        "expirationDateTime": expires.isoformat(),
        "clientState": "secret-state",
    } | overrides


def notifications(receiver: Receiver, path: str = "/webhooks/microsoft") -> list[dict[str, Any]]:
    return [
        json.loads(r.body)["value"][0]
        for r in receiver.requests()
        if "validationToken" not in r.url and httpx.URL(r.url).path == path
    ]


def test_subscription_needs_the_validation_echo(
    graph: tuple[MicrosoftEmulator, httpx.Client], receiver: Receiver, clock: ManualClock
) -> None:
    emulator, http = graph
    receiver.respond = lambda received: PlainTextResponse("not the token")
    refused = http.post("/v1.0/subscriptions", json=subscription_body(receiver, clock))
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "ValidationError"
    validation = receiver.requests()[0]
    assert "validationToken=" in validation.url
    receiver.respond = echo_validation
    created = http.post("/v1.0/subscriptions", json=subscription_body(receiver, clock))
    assert created.status_code == 201, created.text
    assert emulator.push.subscription_ids() == [created.json()["id"]]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"expirationDateTime": "2000-01-01T00:00:00Z"}, "future"),
        ({"resource": "me/events", "minutes": 4231}, "4230 minutes"),
        ({"clientState": "x" * 129}, "128"),
        ({"resource": "me/mailFolders"}, "not supported"),
        ({"changeType": "renamed"}, "changeType"),
    ],
)
def test_limits_are_enforced(
    graph: tuple[MicrosoftEmulator, httpx.Client],
    receiver: Receiver,
    clock: ManualClock,
    overrides: dict[str, Any],
    message: str,
) -> None:
    _, http = graph
    minutes = overrides.pop("minutes", None)
    if minutes is not None:
        overrides["expirationDateTime"] = (
            datetime.fromtimestamp(clock(), UTC) + timedelta(minutes=minutes)
        ).isoformat()
    response = http.post("/v1.0/subscriptions", json=subscription_body(receiver, clock, **overrides))
    assert response.status_code == 400 and message in response.json()["error"]["message"]


def test_users_may_live_longer(
    graph: tuple[MicrosoftEmulator, httpx.Client], receiver: Receiver, clock: ManualClock
) -> None:
    _, http = graph
    expires = (datetime.fromtimestamp(clock(), UTC) + timedelta(minutes=41_000)).isoformat()
    body = subscription_body(receiver, clock, resource="users", expirationDateTime=expires)
    assert http.post("/v1.0/subscriptions", json=body).status_code == 201


def test_changes_over_http_notify_with_client_state_and_retries(
    graph: tuple[MicrosoftEmulator, httpx.Client], receiver: Receiver, clock: ManualClock
) -> None:
    emulator, http = graph
    subscription = http.post("/v1.0/subscriptions", json=subscription_body(receiver, clock)).json()
    receiver.fail_next(2, status=503)
    created = http.post("/v1.0/me/contacts", json={"givenName": "Ada", "emailAddresses": [{"address": "a@x.io"}]})
    assert created.status_code == 201, created.text
    contact_id = created.json()["id"]
    assert http.patch(f"/v1.0/me/contacts/{contact_id}", json={"jobTitle": "CTO"}).status_code == 200
    assert http.delete(f"/v1.0/me/contacts/{contact_id}").status_code == 204
    assert http.delete(f"/v1.0/me/contacts/{contact_id}").status_code == 404
    emulator.push.engine.settle()
    received = notifications(receiver)
    assert len(received) == 5  # two failed tries, retried: three delivered (retries may overtake later changes)
    accepted = [attempt for attempt in emulator.push.engine.attempts if attempt.accepted]
    assert len(accepted) == 3
    assert sorted({n["changeType"] for n in received}) == ["created", "deleted", "updated"]
    first = next(n for n in received if n["changeType"] == "created")
    assert first["subscriptionId"] == subscription["id"] and first["clientState"] == "secret-state"
    assert first["tenantId"] == emulator.tenant_id
    assert first["resourceData"] == {
        "@odata.type": "#Microsoft.Graph.Contact",
        "@odata.id": f"Users/{emulator.me_id}/Contacts/{contact_id}",
        "id": contact_id,
    }
    # events are a different resource: no notification on this subscription
    event = {"subject": "x", "start": {"dateTime": "2026-09-02T10:00:00", "timeZone": "UTC"}}
    event["end"] = {"dateTime": "2026-09-02T11:00:00", "timeZone": "UTC"}
    assert http.post("/v1.0/me/events", json=event).status_code == 201
    emulator.push.engine.settle()
    assert len(notifications(receiver)) == 5


def test_renew_delete_and_expiry(
    graph: tuple[MicrosoftEmulator, httpx.Client], receiver: Receiver, clock: ManualClock
) -> None:
    _, http = graph
    subscription_id = http.post("/v1.0/subscriptions", json=subscription_body(receiver, clock)).json()["id"]
    later = (datetime.fromtimestamp(clock(), UTC) + timedelta(minutes=4200)).isoformat()
    renewed = http.patch(f"/v1.0/subscriptions/{subscription_id}", json={"expirationDateTime": later})
    assert renewed.status_code == 200 and renewed.json()["expirationDateTime"].startswith(later[:19])
    too_far = (datetime.fromtimestamp(clock(), UTC) + timedelta(days=5)).isoformat()
    assert http.patch(f"/v1.0/subscriptions/{subscription_id}", json={"expirationDateTime": too_far}).status_code == 400
    clock.advance(4201 * 60)
    http.headers["Authorization"] = f"Bearer {run_code_flow(http, scope=SCOPES)['access_token']}"  # the old one expired
    assert http.get(f"/v1.0/subscriptions/{subscription_id}").status_code == 404
    again = http.post("/v1.0/subscriptions", json=subscription_body(receiver, clock)).json()["id"]
    assert http.delete(f"/v1.0/subscriptions/{again}").status_code == 204
    assert http.get("/v1.0/subscriptions").json()["value"] == []


def test_lifecycle_notifications(
    graph: tuple[MicrosoftEmulator, httpx.Client], receiver: Receiver, clock: ManualClock
) -> None:
    emulator, http = graph
    subscription_id = http.post("/v1.0/subscriptions", json=subscription_body(receiver, clock)).json()["id"]
    for event in ("reauthorizationRequired", "missed", "subscriptionRemoved"):
        emulator.push.emit_lifecycle(subscription_id, event)
    emulator.push.engine.settle()
    received = notifications(receiver, "/webhooks/microsoft/lifecycle")
    assert [n["lifecycleEvent"] for n in received] == ["reauthorizationRequired", "missed", "subscriptionRemoved"]
    assert all(n["clientState"] == "secret-state" and n["subscriptionId"] == subscription_id for n in received)
    assert emulator.push.subscription_ids() == []
