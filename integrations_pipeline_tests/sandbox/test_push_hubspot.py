"""HubSpot webhooks from the emulator: app settings and subscriptions behind the developer API key, and signed,
batched notifications (v3 signature recomputed here independently), retried, duplicated and reordered on request."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from integrations_pipeline.httpserver import BackgroundServer
from integrations_pipeline.sandbox.hubspot import HubSpotEmulator
from integrations_pipeline_tests.sandbox.conftest import CLIENT_ID, CLIENT_SECRET, ManualClock, run_code_flow
from integrations_pipeline_tests.sandbox.push_receiver import Receiver, serve_receiver

CONTACTS = "/crm/v3/objects/contacts"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serve_receiver() as served:
        yield served


@pytest.fixture
def hubspot(clock: ManualClock) -> Iterator[tuple[HubSpotEmulator, httpx.Client]]:
    emulator = HubSpotEmulator(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, contacts=20, clock=clock, push_time_scale=0.00001
    )
    with BackgroundServer(emulator.app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        yield emulator, http


def webhooks(emulator: HubSpotEmulator, http: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    params = {"hapikey": emulator.push.developer_api_key}
    return http.request(method, f"/webhooks/v3/{emulator.app_id}{path}", params=params, **kwargs)


def subscribe(emulator: HubSpotEmulator, http: httpx.Client, target_url: str) -> None:
    response = webhooks(emulator, http, "PUT", "/settings", json={"targetUrl": target_url})
    assert response.status_code == 200, response.text
    for event_type, property_name in (
        ("contact.creation", None),
        ("contact.propertyChange", "email"),
        ("contact.deletion", None),
    ):
        body = {"eventType": event_type, "active": True} | ({"propertyName": property_name} if property_name else {})
        created = webhooks(emulator, http, "POST", "/subscriptions", json=body)
        assert created.status_code == 201, created.text


def expected_signature(method: str, url: str, body: bytes, timestamp: str) -> str:
    digest = hmac.new(
        CLIENT_SECRET.encode(), method.encode() + url.encode() + body + timestamp.encode(), hashlib.sha256
    )
    return base64.b64encode(digest.digest()).decode()


def test_settings_and_subscriptions_need_the_developer_key(hubspot: tuple[HubSpotEmulator, httpx.Client]) -> None:
    emulator, http = hubspot
    path = f"/webhooks/v3/{emulator.app_id}/subscriptions"
    assert http.get(path).status_code == 401
    assert http.get(path, params={"hapikey": "wrong"}).status_code == 401
    assert (
        http.get("/webhooks/v3/1/subscriptions", params={"hapikey": emulator.push.developer_api_key}).status_code == 404
    )
    refused = webhooks(emulator, http, "POST", "/subscriptions", json={"eventType": "contact.propertyChange"})
    assert refused.status_code == 400  # propertyChange needs a propertyName
    assert webhooks(emulator, http, "POST", "/subscriptions", json={"eventType": "deal.nope"}).status_code == 400
    assert webhooks(emulator, http, "PUT", "/settings", content=b"{").status_code == 400
    first = webhooks(emulator, http, "POST", "/subscriptions", json={"eventType": "contact.creation"})
    assert first.status_code == 201 and first.json()["active"] is False
    assert webhooks(emulator, http, "POST", "/subscriptions", json={"eventType": "contact.creation"}).status_code == 409
    listed = webhooks(emulator, http, "GET", "/subscriptions").json()["results"]
    assert [s["eventType"] for s in listed] == ["contact.creation"]
    subscription_id = listed[0]["id"]
    assert webhooks(emulator, http, "PATCH", f"/subscriptions/{subscription_id}", json={"active": True}).json()[
        "active"
    ]
    assert webhooks(emulator, http, "DELETE", f"/subscriptions/{subscription_id}").status_code == 204
    assert webhooks(emulator, http, "GET", "/subscriptions").json()["results"] == []


def test_a_change_sends_signed_batched_events(
    hubspot: tuple[HubSpotEmulator, httpx.Client], receiver: Receiver, clock: ManualClock
) -> None:
    emulator, http = hubspot
    target = f"{receiver.url}/webhooks/hubspot?x=1"
    subscribe(emulator, http, target)
    contact_id = emulator.create_contact({"email": "new@example.com", "firstname": "New"})
    emulator.update_contact(contact_id, {"email": "changed@example.com", "lastname": "Other"})
    emulator.archive_contact(contact_id)
    emulator.push.engine.settle()

    requests = receiver.requests()
    assert len(requests) == 3
    kinds = []
    for received in requests:
        timestamp = received.headers["x-hubspot-request-timestamp"]
        assert received.url == target
        assert received.headers["x-hubspot-signature-v3"] == expected_signature(
            "POST", target, received.body, timestamp
        )
        assert abs(int(timestamp) - clock() * 1000) < 1000
        (event,) = json.loads(received.body)
        assert event["portalId"] == emulator.portal_id and event["appId"] == emulator.app_id
        assert event["objectId"] == int(contact_id) and event["attemptNumber"] == 0
        kinds.append((event["subscriptionType"], event.get("propertyName"), event.get("propertyValue")))
    assert kinds == [
        ("contact.creation", None, None),
        ("contact.propertyChange", "email", "changed@example.com"),  # lastname has no subscription
        ("contact.deletion", None, None),
    ]


def test_a_change_over_http_notifies_too(hubspot: tuple[HubSpotEmulator, httpx.Client], receiver: Receiver) -> None:
    emulator, http = hubspot
    subscribe(emulator, http, f"{receiver.url}/hook")
    tokens = run_code_flow(http)
    created = http.post(
        CONTACTS,
        json={"properties": {"email": "http@example.com"}},
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )
    assert created.status_code == 201, created.text
    emulator.push.engine.settle()
    assert json.loads(receiver.requests()[0].body)[0]["objectId"] == int(created.json()["id"])


def test_failures_are_retried_with_attempt_numbers(
    hubspot: tuple[HubSpotEmulator, httpx.Client], receiver: Receiver
) -> None:
    emulator, http = hubspot
    subscribe(emulator, http, f"{receiver.url}/hook")
    receiver.fail_next(3)
    emulator.create_contact({"email": "retry@example.com"})
    emulator.push.engine.settle()
    attempts = [json.loads(r.body)[0]["attemptNumber"] for r in receiver.requests()]
    assert attempts == [0, 1, 2, 3]
    event_ids = {json.loads(r.body)[0]["eventId"] for r in receiver.requests()}
    assert len(event_ids) == 1  # one event, retried


def test_gives_up_after_ten_retries(hubspot: tuple[HubSpotEmulator, httpx.Client], receiver: Receiver) -> None:
    emulator, http = hubspot
    subscribe(emulator, http, f"{receiver.url}/hook")
    receiver.fail_next(50)
    emulator.create_contact({"email": "never@example.com"})
    emulator.push.engine.settle()
    assert len(receiver.requests()) == 11


def test_duplicates_and_reordering_on_request(
    hubspot: tuple[HubSpotEmulator, httpx.Client], receiver: Receiver
) -> None:
    emulator, http = hubspot
    subscribe(emulator, http, f"{receiver.url}/hook")
    emulator.push.engine.duplicate_next(1)
    emulator.push.engine.reorder_next(3)
    created = [emulator.create_contact({"email": f"c{n}@example.com"}) for n in range(3)]
    emulator.push.engine.settle()
    object_ids = [json.loads(r.body)[0]["objectId"] for r in receiver.requests()]
    first = int(created[0])
    # Reversed order; the first change (duplicated) arrives twice, with the same eventId both times.
    assert object_ids == [int(created[2]), int(created[1]), first, first]
    duplicated = [
        json.loads(r.body)[0]["eventId"] for r in receiver.requests() if json.loads(r.body)[0]["objectId"] == first
    ]
    assert len(set(duplicated)) == 1


def test_no_target_url_sends_nothing(hubspot: tuple[HubSpotEmulator, httpx.Client]) -> None:
    emulator, _ = hubspot
    emulator.create_contact({"email": "quiet@example.com"})
    emulator.push.engine.settle(timeout_s=1)
    assert emulator.push.engine.attempts == []
