"""Google push from the emulator: watch and stop for Calendar events and Directory users, the X-Goog headers of the
sync message and of changes made over HTTP, retries of 5xx only, duplicates and reordering, and refusals."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest

from integrations_pipeline.httpserver import BackgroundServer
from integrations_pipeline.sandbox.google import GoogleEmulator
from integrations_pipeline_tests.sandbox.conftest import ManualClock
from integrations_pipeline_tests.sandbox.push_receiver import Received, Receiver, serve_receiver
from integrations_pipeline_tests.sandbox.test_google_emulator import CLIENT_ID, CLIENT_SECRET, SMALL, run_code_flow

WRITE_SCOPES = "openid https://www.googleapis.com/auth/calendar https://www.googleapis.com/auth/admin.directory.user"
EVENTS = "/calendar/v3/calendars/primary/events"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serve_receiver() as served:
        yield served


@pytest.fixture
def google(clock: ManualClock) -> Iterator[tuple[GoogleEmulator, httpx.Client]]:
    emulator = GoogleEmulator(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, clock=clock, push_time_scale=1e-4, **SMALL
    )
    with BackgroundServer(emulator.app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        tokens = run_code_flow(http, scope=WRITE_SCOPES)
        http.headers["Authorization"] = f"Bearer {tokens['access_token']}"
        yield emulator, http


def channel(receiver: Receiver, clock: ManualClock, channel_id: str = "chan-1", **overrides: Any) -> dict[str, Any]:
    expiration = int((clock() + 3600) * 1000)
    return {
        "id": channel_id,
        "type": "web_hook",
        "address": f"{receiver.url}/webhooks/google",
        "token": "channel-token",
        "expiration": expiration,
    } | overrides


def headers_of(received: Received) -> dict[str, str]:
    return {name: value for name, value in received.headers.items() if name.startswith("x-goog-")}


def an_event(summary: str = "Pushed") -> dict[str, Any]:
    return {
        "summary": summary,
        "start": {"dateTime": "2026-10-01T09:00:00Z"},
        "end": {"dateTime": "2026-10-01T10:00:00Z"},
    }


def test_calendar_watch_sync_then_exists_with_increasing_numbers(
    google: tuple[GoogleEmulator, httpx.Client], receiver: Receiver, clock: ManualClock
) -> None:
    emulator, http = google
    created = http.post(f"{EVENTS}/watch", json=channel(receiver, clock))
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["kind"] == "api#channel" and body["id"] == "chan-1" and body["token"] == "channel-token"
    assert body["resourceUri"].endswith("/calendar/v3/calendars/primary/events?alt=json") and body["resourceId"]
    assert body["expiration"] == str(channel(receiver, clock)["expiration"])

    inserted = http.post(EVENTS, json=an_event())
    assert inserted.status_code == 200 and inserted.json()["summary"] == "Pushed"
    event_id = inserted.json()["id"]
    assert http.patch(f"{EVENTS}/{event_id}", json={"summary": "Renamed"}).status_code == 200
    assert http.delete(f"{EVENTS}/{event_id}").status_code == 204
    emulator.push.engine.settle()

    received = receiver.requests("/webhooks/google")
    assert [headers_of(r)["x-goog-resource-state"] for r in received] == ["sync", "exists", "exists", "exists"]
    assert [int(headers_of(r)["x-goog-message-number"]) for r in received] == [1, 2, 3, 4]
    first = headers_of(received[0])
    assert first["x-goog-channel-id"] == "chan-1" and first["x-goog-channel-token"] == "channel-token"
    assert first["x-goog-resource-id"] == body["resourceId"] and first["x-goog-resource-uri"] == body["resourceUri"]
    expiration = parsedate_to_datetime(first["x-goog-channel-expiration"])
    assert expiration == datetime.fromtimestamp(int(body["expiration"]) // 1000, UTC)
    assert all(r.body == b"" and r.method == "POST" for r in received)

    # Stopped: no more messages; a second stop of the same channel is 404.
    stop = {"id": "chan-1", "resourceId": body["resourceId"]}
    assert http.post("/calendar/v3/channels/stop", json=stop).status_code == 204
    assert http.post("/calendar/v3/channels/stop", json=stop).status_code == 404
    http.post(EVENTS, json=an_event("Unheard"))
    emulator.push.engine.settle()
    assert len(receiver.requests("/webhooks/google")) == 4


def test_directory_watch_names_the_event_and_carries_the_user(
    google: tuple[GoogleEmulator, httpx.Client], receiver: Receiver, clock: ManualClock
) -> None:
    emulator, http = google
    user = emulator.user_records()[0]
    watched = http.post(
        "/admin/directory/v1/users/watch",
        params={"customer": "my_customer", "event": "update"},
        json=channel(receiver, clock, "users-update"),
    )
    assert watched.status_code == 200, watched.text
    everything = http.post(
        "/admin/directory/v1/users/watch", params={"customer": "my_customer"}, json=channel(receiver, clock, "all")
    )
    assert everything.status_code == 200
    patched = http.patch(f"/admin/directory/v1/users/{user['primaryEmail']}", json={"suspended": True})
    assert patched.status_code == 200 and patched.json()["suspended"] is True
    assert http.delete(f"/admin/directory/v1/users/{user['id']}").status_code == 204
    emulator.push.engine.settle()

    by_channel: dict[str, list[str]] = {}
    for r in receiver.requests():
        by_channel.setdefault(r.headers["x-goog-channel-id"], []).append(r.headers["x-goog-resource-state"])
    assert by_channel == {"users-update": ["sync", "update"], "all": ["sync", "update", "delete"]}
    update = next(r for r in receiver.requests() if r.headers["x-goog-resource-state"] == "update")
    assert httpx.Response(200, content=update.body).json() == {
        "kind": "admin#directory#user",
        "id": user["id"],
        "etag": patched.json()["etag"],
        "primaryEmail": user["primaryEmail"],
    }
    stop = {"id": "all", "resourceId": everything.json()["resourceId"]}
    assert http.post("/admin/directory_v1/channels/stop", json=stop).status_code == 204
    assert emulator.push.channel_ids() == ["users-update"]


def test_retries_5xx_with_the_same_number_but_not_4xx(
    google: tuple[GoogleEmulator, httpx.Client], receiver: Receiver, clock: ManualClock
) -> None:
    emulator, http = google
    assert http.post(f"{EVENTS}/watch", json=channel(receiver, clock)).status_code == 200
    emulator.push.engine.settle()
    receiver.fail_next(3, status=503)
    http.post(EVENTS, json=an_event())
    emulator.push.engine.settle()
    numbers = [r.headers["x-goog-message-number"] for r in receiver.requests()[1:]]
    assert numbers == ["2", "2", "2", "2"]  # three 503s, then accepted: one message, four attempts

    receiver.fail_next(1, status=404)
    http.post(EVENTS, json=an_event())
    emulator.push.engine.settle()
    assert [r.headers["x-goog-message-number"] for r in receiver.requests()[5:]] == ["3"]  # 4xx: not retried
    assert [a.accepted for a in emulator.push.engine.attempts_for("google:chan-1:3")] == [False]


def test_duplicates_and_reordering_on_request(
    google: tuple[GoogleEmulator, httpx.Client], receiver: Receiver, clock: ManualClock
) -> None:
    emulator, http = google
    assert http.post(f"{EVENTS}/watch", json=channel(receiver, clock)).status_code == 200
    emulator.push.engine.settle()
    emulator.push.engine.duplicate_next(1)
    http.post(EVENTS, json=an_event())
    emulator.push.engine.settle()
    assert [r.headers["x-goog-message-number"] for r in receiver.requests()[1:]] == ["2", "2"]

    emulator.push.engine.reorder_next(3)
    for summary in ("a", "b", "c"):
        http.post(EVENTS, json=an_event(summary))
    emulator.push.engine.settle()
    assert [r.headers["x-goog-message-number"] for r in receiver.requests()[3:]] == ["5", "4", "3"]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"address": None}, "required"),
        ({"address": "http://example.com/hook"}, "push.webhookUrlNotHttps"),
        ({"type": "email"}, "invalid"),
        ({"id": "x" * 65}, "invalid"),
        ({"expiration": 1}, "invalid"),
    ],
)
def test_refusals(
    google: tuple[GoogleEmulator, httpx.Client],
    receiver: Receiver,
    clock: ManualClock,
    overrides: dict[str, Any],
    reason: str,
) -> None:
    emulator, http = google
    refused = http.post(f"{EVENTS}/watch", json=channel(receiver, clock) | overrides)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["errors"][0]["reason"] == reason
    assert emulator.push.channel_ids() == []


def test_duplicate_ids_lifetimes_and_scopes(
    google: tuple[GoogleEmulator, httpx.Client], receiver: Receiver, clock: ManualClock
) -> None:
    emulator, http = google
    assert http.post(f"{EVENTS}/watch", json=channel(receiver, clock)).status_code == 200
    again = http.post(f"{EVENTS}/watch", json=channel(receiver, clock))
    assert again.status_code == 400 and again.json()["error"]["errors"][0]["reason"] == "channelIdNotUnique"

    week_and_a_bit = int((clock() + timedelta(days=7, minutes=1).total_seconds()) * 1000)
    too_long = http.post(f"{EVENTS}/watch", json=channel(receiver, clock, "c2", expiration=week_and_a_bit))
    assert too_long.status_code == 400
    directory_day = int((clock() + 86_400) * 1000)
    too_long_users = http.post(
        "/admin/directory/v1/users/watch",
        params={"customer": "my_customer"},
        json=channel(receiver, clock, "c3", expiration=directory_day),
    )
    assert too_long_users.status_code == 400
    default = http.post(
        f"{EVENTS}/watch", json={k: v for k, v in channel(receiver, clock, "c4").items() if k != "expiration"}
    )
    assert int(default.json()["expiration"]) == int(clock() * 1000) + 7 * 86_400_000

    # An expired channel is gone: nothing is sent on it.
    clock.advance(7 * 86_400 + 1)
    assert emulator.push.channel_ids() == []

    # Writing needs a read-write scope.
    read_only = run_code_flow(
        http, scope="https://www.googleapis.com/auth/calendar.readonly", include_granted_scopes="false"
    )
    refused = http.post(EVENTS, json=an_event(), headers={"Authorization": f"Bearer {read_only['access_token']}"})
    assert refused.status_code == 403
