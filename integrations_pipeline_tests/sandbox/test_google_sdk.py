"""google-api-python-client, with its packaged discovery documents, driven against the Google emulator: its own
`list_next` paging, its credential refresh on 401 and its retry of 403 rate limits return exactly the emulator's
records.

How `client_options={"api_endpoint": ...}` maps onto each service: the SDK builds every method's URL as
urljoin(base, method path), and api_endpoint replaces base = rootUrl + servicePath wholesale. Directory
(rootUrl https://admin.googleapis.com/, servicePath "", path `admin/directory/v1/users`) and People
(https://people.googleapis.com/, "", `v1/{+resourceName}/connections`) therefore take the emulator's origin plus
"/"; Calendar's servicePath is `calendar/v3/` (paths like `calendars/{calendarId}/events`), so its api_endpoint
must be the origin plus "/calendar/v3/".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from integrations_pipeline_tests.sandbox.conftest import ManualClock
from integrations_pipeline_tests.sandbox.test_google_emulator import (
    CLIENT_ID,
    CLIENT_SECRET,
    PERSON_FIELDS,
    ServedGoogle,
    serve_google,
)


@pytest.fixture
def sandbox(clock: ManualClock) -> Iterator[ServedGoogle]:
    with serve_google(clock, users=31, contacts=77, events=95) as served:
        yield served


def credentials(sandbox: ServedGoogle) -> Credentials:
    """The tokens the emulator issued, with token_uri on the emulator so the SDK's refresh lands there."""
    return Credentials(
        token=sandbox.tokens["access_token"],
        refresh_token=sandbox.tokens["refresh_token"],
        token_uri=f"{sandbox.url}/token",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
    )


_OPEN_SERVICES: list[Any] = []


def service(sandbox: ServedGoogle, name: str, version: str, endpoint_path: str = "/") -> Any:
    built = build(
        name,
        version,
        credentials=credentials(sandbox),
        client_options={"api_endpoint": sandbox.url + endpoint_path},
        static_discovery=True,
        cache_discovery=False,
    )
    _OPEN_SERVICES.append(built)
    return built


@pytest.fixture(autouse=True)
def _close_services() -> Iterator[None]:
    """httplib2 keeps connections open until its service is closed (unclosed sockets fail the suite)."""
    yield
    while _OPEN_SERVICES:
        _OPEN_SERVICES.pop().close()


def collect(collection: Any, request: Any, items_key: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Drive the SDK's own paging (`list_next`) to the end; returns (items, pages)."""
    items: list[dict[str, Any]] = []
    pages: list[dict[str, Any]] = []
    while request is not None:
        page = request.execute()
        pages.append(page)
        items.extend(page.get(items_key, []))
        request = collection.list_next(request, page)
    return items, pages


def test_directory_users_list_next_returns_exactly_the_emulators_users(sandbox: ServedGoogle) -> None:
    sandbox.emulator.schemas.add_field("Employment", "badgeNumber", "INT64")  # a custom field added at run time
    users = service(sandbox, "admin", "directory_v1").users()
    request = users.list(customer="my_customer", maxResults=5, orderBy="email", projection="full")
    listed, pages = collect(users, request, "users")
    assert listed == sandbox.emulator.user_records()
    assert all(user["customSchemas"]["Employment"]["badgeNumber"] for user in listed)
    assert len(pages) == 7
    logged = [record for record in sandbox.emulator.request_log if record.path == "/admin/directory/v1/users"]
    assert len(logged) == 7 and all("alt=json" in record.query for record in logged)


def test_directory_rejects_max_results_above_500_as_http_error(sandbox: ServedGoogle) -> None:
    users = service(sandbox, "admin", "directory_v1").users()
    with pytest.raises(HttpError) as refused:
        users.list(customer="my_customer", maxResults=501).execute()
    assert refused.value.status_code == 400
    assert refused.value.error_details[0]["reason"] == "invalidParameter"


def test_people_full_listing_then_a_sync_token_round(sandbox: ServedGoogle, clock: ManualClock) -> None:
    connections = service(sandbox, "people", "v1").people().connections()

    def listing(**extra: Any) -> Any:
        return connections.list(
            resourceName="people/me", personFields=PERSON_FIELDS, pageSize=10, requestSyncToken=True, **extra
        )

    people, pages = collect(connections, listing(), "connections")
    expected = {person["resourceName"]: person for person in sandbox.emulator.contact_records()}
    assert len(people) == len(expected) == 77 and {person["resourceName"]: person for person in people} == expected
    assert len(pages) == 8 and all("nextSyncToken" not in page for page in pages[:-1])
    sync_token = pages[-1]["nextSyncToken"]

    clock.advance(90)
    names = sorted(expected)
    created = sandbox.emulator.create_contact(given_name="Sdk", family_name="Made", email="sdk@example.com")
    sandbox.emulator.update_contact(names[1], phone="+44 20 7946 0000")
    sandbox.emulator.delete_contact(names[2])
    changes, sync_pages = collect(connections, listing(syncToken=sync_token), "connections")
    current = {person["resourceName"]: person for person in sandbox.emulator.contact_records(include_deleted=True)}
    assert [person["resourceName"] for person in changes] == [created, names[1], names[2]]
    assert changes == [current[name] for name in (created, names[1], names[2])]
    assert changes[2]["metadata"]["deleted"] is True
    assert sync_pages[-1]["nextSyncToken"] != sync_token


def test_people_expired_sync_token_is_a_400_with_expired_sync_token_reason(sandbox: ServedGoogle) -> None:
    connections = service(sandbox, "people", "v1").people().connections()
    _, pages = collect(
        connections,
        connections.list(resourceName="people/me", personFields="names", pageSize=1000, requestSyncToken=True),
        "connections",
    )
    sandbox.emulator.expire_sync_tokens()
    with pytest.raises(HttpError) as expired:
        connections.list(
            resourceName="people/me", personFields="names", requestSyncToken=True, syncToken=pages[-1]["nextSyncToken"]
        ).execute()
    assert expired.value.status_code == 400
    details = json.loads(expired.value.content)["error"]["details"]
    assert details[0]["reason"] == "EXPIRED_SYNC_TOKEN"


def test_calendar_events_list_next_then_a_sync_token_round(sandbox: ServedGoogle, clock: ManualClock) -> None:
    events = service(sandbox, "calendar", "v3", "/calendar/v3/").events()
    listed, pages = collect(events, events.list(calendarId="primary", maxResults=20, singleEvents=True), "items")
    assert listed == sandbox.emulator.event_records(include_cancelled=False)
    assert len(pages) == 5 and "nextSyncToken" in pages[-1]
    assert all("nextSyncToken" not in page for page in pages[:-1])

    clock.advance(45)
    created = sandbox.emulator.create_event(
        summary="SDK sync", start=datetime(2026, 9, 3, 9, tzinfo=UTC), end=datetime(2026, 9, 3, 10, tzinfo=UTC)
    )
    sandbox.emulator.delete_event("ev00000007")
    request = events.list(calendarId="primary", syncToken=pages[-1]["nextSyncToken"], maxResults=1)
    changes, sync_pages = collect(events, request, "items")
    current = {event["id"]: event for event in sandbox.emulator.event_records()}
    assert changes == [current[created], current["ev00000007"]]
    assert changes[1]["status"] == "cancelled" and len(sync_pages) == 2

    sandbox.emulator.expire_sync_tokens()
    with pytest.raises(HttpError) as gone:
        events.list(calendarId="primary", syncToken=sync_pages[-1]["nextSyncToken"]).execute()
    assert gone.value.status_code == 410
    assert gone.value.error_details[0]["reason"] == "fullSyncRequired"


def test_calendar_refuses_a_sync_token_with_time_min_or_hidden_deletions(sandbox: ServedGoogle) -> None:
    events = service(sandbox, "calendar", "v3", "/calendar/v3/").events()
    _, pages = collect(events, events.list(calendarId="primary", maxResults=2500), "items")
    token = pages[-1]["nextSyncToken"]
    with pytest.raises(HttpError) as refused:
        events.list(calendarId="primary", syncToken=token, timeMin="2026-09-01T00:00:00Z").execute()
    assert refused.value.status_code == 400
    with pytest.raises(HttpError) as hidden:  # a sync reports deletions; hiding them is refused
        events.list(calendarId="primary", syncToken=token, showDeleted=False).execute()
    assert hidden.value.status_code == 400 and hidden.value.error_details[0]["reason"] == "invalid"
    assert events.list(calendarId="primary", syncToken=token, showDeleted=True).execute()["items"] == []


def test_the_sdk_refreshes_through_the_emulator_after_a_401(sandbox: ServedGoogle) -> None:
    events = service(sandbox, "calendar", "v3", "/calendar/v3/").events()
    sandbox.emulator.expire_access_tokens()
    page = events.list(calendarId="primary", maxResults=3).execute()
    assert [event["id"] for event in page["items"]] == ["ev00000001", "ev00000002", "ev00000003"]
    assert sandbox.emulator.token_requests("refresh_token") == 1
    statuses = [record.status for record in sandbox.emulator.request_log if record.path.endswith("/events")]
    assert statuses == [401, 200]


def test_the_sdk_retries_a_403_user_rate_limit(clock: ManualClock) -> None:
    with serve_google(clock, events=30, requests_per_minute=1) as sandbox:
        events = service(sandbox, "calendar", "v3", "/calendar/v3/").events()
        assert events.list(calendarId="primary").execute()["items"]
        request = events.list(calendarId="primary", maxResults=2)
        # The SDK's backoff sleeps through its own hook: move the emulator's clock instead of waiting.
        request._sleep = lambda _seconds: clock.advance(61)
        request._rand = lambda: 1.0
        page = request.execute(num_retries=2)
        assert [event["id"] for event in page["items"]] == ["ev00000001", "ev00000002"]
        statuses = [record.status for record in sandbox.emulator.request_log if record.path.endswith("/events")]
        assert statuses == [200, 403, 200]
        with pytest.raises(HttpError) as limited:
            events.list(calendarId="primary").execute()  # no retries asked for: the 403 surfaces
        assert limited.value.status_code == 403
        assert limited.value.error_details[0]["reason"] == "userRateLimitExceeded"
