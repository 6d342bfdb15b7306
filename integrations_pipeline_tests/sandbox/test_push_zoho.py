"""Zoho notifications from the emulator: enable, list, renew (PATCH), replace (PUT), disable watch channels; the
notification body for records written over HTTP; retries, duplicates, reordering; refusals and the scope."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from integrations_pipeline.httpserver import BackgroundServer
from integrations_pipeline.sandbox.zoho import ZohoEmulator
from integrations_pipeline_tests.sandbox.conftest import ManualClock
from integrations_pipeline_tests.sandbox.push_receiver import Receiver, serve_receiver
from integrations_pipeline_tests.sandbox.test_zoho_emulator import CLIENT_ID, CLIENT_SECRET, run_code_flow

SCOPES = "ZohoCRM.modules.ALL,ZohoCRM.notifications.ALL"
WATCH = "/crm/v8/actions/watch"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serve_receiver() as served:
        yield served


@pytest.fixture
def zoho(clock: ManualClock) -> Iterator[tuple[ZohoEmulator, httpx.Client]]:
    emulator = ZohoEmulator(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, clock=clock, contacts=50, events=20, push_time_scale=1e-4
    )
    with BackgroundServer(emulator.app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        tokens = run_code_flow(http, scope=SCOPES)
        http.headers["Authorization"] = f"Zoho-oauthtoken {tokens['access_token']}"
        yield emulator, http


def expiry(clock: ManualClock, **delta: float) -> str:
    return (datetime.fromtimestamp(clock(), UTC) + timedelta(**delta)).isoformat()


def watch_item(receiver: Receiver, clock: ManualClock, **overrides: Any) -> dict[str, Any]:
    return {
        "channel_id": 1000000068001,
        "events": ["Contacts.all", "Events.all"],
        "channel_expiry": expiry(clock, hours=12),
        "token": "zoho-channel-token",
        "notify_url": f"{receiver.url}/webhooks/zoho",
    } | overrides


def sign_in_again(http: httpx.Client) -> None:
    """After the clock moved past the access token's hour."""
    http.headers["Authorization"] = f"Zoho-oauthtoken {run_code_flow(http, scope=SCOPES)['access_token']}"


def notifications(receiver: Receiver) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in receiver.requests("/webhooks/zoho")]


def test_enable_write_and_receive_each_operation(
    zoho: tuple[ZohoEmulator, httpx.Client], receiver: Receiver, clock: ManualClock
) -> None:
    emulator, http = zoho
    enabled = http.post(WATCH, json={"watch": [watch_item(receiver, clock, return_affected_field_values=True)]})
    assert enabled.status_code == 200, enabled.text
    (result,) = enabled.json()["watch"]
    assert (result["code"], result["status"]) == ("SUCCESS", "success")
    assert sorted(e["resource_name"] for e in result["details"]["events"]) == ["Contacts", "Events"]
    assert {e["channel_id"] for e in result["details"]["events"]} == {"1000000068001"}

    created = http.post("/crm/v8/Contacts", json={"data": [{"Last_Name": "Pushed", "Email": "p@example.com"}]})
    assert created.status_code == 201, created.text
    contact_id = created.json()["data"][0]["details"]["id"]
    updated = http.put("/crm/v8/Contacts", json={"data": [{"id": contact_id, "Title": "CTO"}]})
    assert updated.status_code == 200 and updated.json()["data"][0]["message"] == "record updated"
    assert http.delete("/crm/v8/Contacts", params={"ids": contact_id}).status_code == 200
    emulator.push.engine.settle()

    received = notifications(receiver)
    assert [n["operation"] for n in received] == ["insert", "update", "delete"]
    for notification in received:
        assert notification["module"] == "Contacts" and notification["ids"] == [contact_id]
        assert notification["channel_id"] == "1000000068001" and notification["token"] == "zoho-channel-token"
        assert notification["resource_uri"].endswith("/crm/v8/Contacts")
        assert isinstance(notification["server_time"], int)
    assert received[1]["affected_fields"] == [{contact_id: ["Title"]}]
    assert received[1]["affected_values"] == [{"record_id": contact_id, "values": {"Title": "CTO"}}]
    assert receiver.requests()[0].headers["content-type"] == "application/json"


def test_list_renew_replace_and_disable(
    zoho: tuple[ZohoEmulator, httpx.Client], receiver: Receiver, clock: ManualClock
) -> None:
    emulator, http = zoho
    assert http.get(WATCH).status_code == 204
    assert http.post(WATCH, json={"watch": [watch_item(receiver, clock)]}).status_code == 200
    listed = http.get(WATCH).json()["watch"]
    assert sorted(entry["resource_name"] for entry in listed) == ["Contacts", "Events"]
    assert {tuple(entry["events"]) for entry in listed} == {("Contacts.all",), ("Events.all",)}

    # Renewal: PATCH changes only channel_expiry; the token stays.
    clock.advance(8 * 3600)
    sign_in_again(http)
    renewed = http.patch(
        WATCH, json={"watch": [{"channel_id": "1000000068001", "channel_expiry": expiry(clock, hours=23)}]}
    )
    assert renewed.status_code == 200, renewed.text
    clock.advance(10 * 3600)  # past the first expiry, inside the renewed one
    assert emulator.push.channel_ids() == [1000000068001]
    emulator.create_contact({"Last_Name": "After renewal"})
    emulator.push.engine.settle()
    assert notifications(receiver)[-1]["token"] == "zoho-channel-token"
    sign_in_again(http)

    # PUT replaces every detail: only Events edits now, without a token.
    replaced = http.put(
        WATCH,
        json={"watch": [{"channel_id": 1000000068001, "events": ["Events.edit"], "notify_url": receiver.url + "/z"}]},
    )
    assert replaced.status_code == 200
    emulator.create_contact({"Last_Name": "Unheard"})
    emulator.push.engine.settle()
    assert len(notifications(receiver)) == 1

    disabled = http.delete(WATCH, params={"channel_ids": "1000000068001"})
    assert disabled.status_code == 200 and disabled.json()["watch"][0]["status"] == "success"
    assert emulator.push.channel_ids() == []
    assert http.delete(WATCH, params={"channel_ids": "1000000068001"}).status_code == 400


def test_retries_duplicates_and_reordering(
    zoho: tuple[ZohoEmulator, httpx.Client], receiver: Receiver, clock: ManualClock
) -> None:
    emulator, http = zoho
    assert http.post(WATCH, json={"watch": [watch_item(receiver, clock)]}).status_code == 200
    receiver.fail_next(2)
    first = emulator.create_contact({"Last_Name": "Retried"})
    emulator.push.engine.settle()
    assert [n["ids"] for n in notifications(receiver)] == [[first]] * 3
    assert [a.accepted for a in emulator.push.engine.attempts_for("zoho:")] == [False, False, True]

    emulator.push.engine.duplicate_next(1)
    second = emulator.create_contact({"Last_Name": "Twice"})
    emulator.push.engine.settle()
    emulator.push.engine.reorder_next(2)
    third = emulator.create_contact({"Last_Name": "Third"})
    fourth = emulator.create_contact({"Last_Name": "Fourth"})
    emulator.push.engine.settle()
    assert [n["ids"][0] for n in notifications(receiver)[3:]] == [second, second, fourth, third]


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"token": "t" * 51}, "INVALID_DATA"),
        ({"channel_expiry": "2000-01-01T00:00:00+00:00"}, "INVALID_DATA"),
        ({"channel_id": "not-a-long"}, "INVALID_DATA"),
        ({"events": ["Deals.all"]}, "INVALID_DATA"),
        ({"events": []}, "MANDATORY_NOT_FOUND"),
        ({"notify_url": None}, "MANDATORY_NOT_FOUND"),
    ],
)
def test_refusals(
    zoho: tuple[ZohoEmulator, httpx.Client],
    receiver: Receiver,
    clock: ManualClock,
    overrides: dict[str, Any],
    code: str,
) -> None:
    emulator, http = zoho
    refused = http.post(WATCH, json={"watch": [watch_item(receiver, clock, **overrides)]})
    assert refused.status_code == 400, refused.text
    assert refused.json()["watch"][0]["code"] == code
    assert emulator.push.channel_ids() == []


def test_expiry_limit_duplicates_and_scope(
    zoho: tuple[ZohoEmulator, httpx.Client], receiver: Receiver, clock: ManualClock
) -> None:
    emulator, http = zoho
    too_far = http.post(WATCH, json={"watch": [watch_item(receiver, clock, channel_expiry=expiry(clock, hours=25))]})
    assert too_far.status_code == 400
    assert http.post(WATCH, json={"watch": [watch_item(receiver, clock)]}).status_code == 200
    duplicate = http.post(WATCH, json={"watch": [watch_item(receiver, clock)]})
    assert duplicate.status_code == 400 and duplicate.json()["watch"][0]["code"] == "DUPLICATE_DATA"
    mixed = http.post(
        WATCH, json={"watch": [watch_item(receiver, clock, channel_id=7), watch_item(receiver, clock, token="x" * 60)]}
    )
    assert mixed.status_code == 207
    assert sorted(emulator.push.channel_ids()) == [7, 1000000068001]

    without_scope = run_code_flow(http, scope="ZohoCRM.modules.ALL")
    refused = http.get(WATCH, headers={"Authorization": f"Zoho-oauthtoken {without_scope['access_token']}"})
    assert refused.status_code == 401 and refused.json()["code"] == "OAUTH_SCOPE_MISMATCH"
    read_only = run_code_flow(http, scope="ZohoCRM.modules.contacts.READ")
    cannot_write = http.post(
        "/crm/v8/Contacts",
        json={"data": [{"Last_Name": "x"}]},
        headers={"Authorization": f"Zoho-oauthtoken {read_only['access_token']}"},
    )
    assert cannot_write.status_code == 401
