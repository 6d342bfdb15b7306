"""The Google Workspace connector against the emulator over real HTTP (full and incremental syncs of users,
contacts and day-partitioned events, stale cursors, rate limits, OAuth hooks), plus unit tests of the mappers.

Expected records are computed from the emulator's own raw records (its truth, in Google's shapes) through the
pure mappers, and the events of a day are selected here independently of the connector's filtering.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Generator, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import SecretStr

from integrations_pipeline.clients.errors import CursorExpired, NeedsReauth, ProviderError
from integrations_pipeline.clients.google import (
    ENTITIES,
    PERSON_FIELDS,
    SPEC,
    CalendarEvent,
    DirectoryUser,
    GoogleClient,
    Person,
    read_contacts,
    read_events,
    read_users,
    to_contact,
    to_event,
    to_user,
)
from integrations_pipeline.clients.http import ApiClient
from integrations_pipeline.clients.oauth import OAuthClient, new_pkce_pair
from integrations_pipeline.clients.spec import Page, SyncRequest
from integrations_pipeline.records import CONTACT_COLUMNS, EVENT_COLUMNS, USER_COLUMNS
from integrations_pipeline.settings import ProviderApp
from integrations_pipeline.store import TokenSet
from integrations_pipeline_tests.clients import RawOf
from integrations_pipeline_tests.sandbox.conftest import ManualClock
from integrations_pipeline_tests.sandbox.test_google_emulator import (
    CALENDAR_SCOPE,
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    ServedGoogle,
    serve_google,
)

CONNECTION_ID = "conn-google-1"
DAY = date(2026, 9, 8)
WINDOW = (datetime(2026, 9, 8, tzinfo=UTC), datetime(2026, 9, 9, tzinfo=UTC))


class BearerAuth(httpx.Auth):
    """Sets the Authorization header from a token the test obtained through the emulator's OAuth endpoints."""

    def __init__(self, access_token: str) -> None:
        self.access_token = access_token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.access_token}"
        yield request


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(time.time())


@pytest.fixture
def google(clock: ManualClock) -> Iterator[ServedGoogle]:
    with serve_google(clock, users=23, contacts=2_300, events=150, event_days=10) as served:
        yield served


@pytest.fixture
def client(google: ServedGoogle, clock: ManualClock) -> Iterator[GoogleClient]:
    # Retries "sleep" by moving the emulator's clock a minute, past its per-minute quota window.
    with GoogleClient(
        google.url, auth=BearerAuth(google.tokens["access_token"]), sleep=lambda _s: clock.advance(61)
    ) as api:
        yield api


def now(clock: ManualClock) -> datetime:
    return datetime.fromtimestamp(clock.now, UTC)


def sync(reader: Any, client: GoogleClient, request: SyncRequest) -> tuple[list[dict[str, Any]], list[Page]]:
    pages = list(reader(client, request))
    return [dict(record) for page in pages for record in page.records], pages


def api_requests(google: ServedGoogle, path_end: str) -> int:
    return sum(1 for record in google.emulator.request_log if record.path.endswith(path_end))


def instant(moment: dict[str, str]) -> datetime:
    if "date" in moment:
        return datetime.combine(date.fromisoformat(moment["date"]), datetime.min.time(), UTC)
    return datetime.fromisoformat(moment["dateTime"]).astimezone(UTC)


def expected_day(google: ServedGoogle) -> list[dict[str, Any]]:
    """Every event (cancelled ones included) whose UTC start falls on DAY, mapped."""
    return [
        dict(to_event(CalendarEvent.model_validate(event), CONNECTION_ID))
        for event in google.emulator.event_records()
        if WINDOW[0] <= instant(event["start"]) < WINDOW[1]
    ]


def by_id(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {record["source_id"]: record for record in records}


# --- spec ----------------------------------------------------------------------------------------------------------


def test_spec_declares_googles_endpoints_and_offline_incremental_consent() -> None:
    assert SPEC.name == "google"
    assert SPEC.authorize_url == "https://accounts.google.com/o/oauth2/v2/auth"
    assert SPEC.token_url == "https://oauth2.googleapis.com/token"
    assert dict(SPEC.extra_authorize_params) == {
        "access_type": "offline",
        "include_granted_scopes": "true",
        "prompt": "consent",
    }
    assert [(entity.entity, entity.partitioned_by_day) for entity in ENTITIES] == [
        ("users", False),
        ("contacts", False),
        ("events", True),
    ]
    assert [entity.columns for entity in ENTITIES] == [USER_COLUMNS, CONTACT_COLUMNS, EVENT_COLUMNS]


def test_build_client_uses_each_apis_real_host_for_the_default_origin_and_one_origin_otherwise() -> None:
    assert SPEC.build_client is not None
    with SPEC.build_client(SPEC.api_base_url, BearerAuth("x"), {}) as real:
        assert isinstance(real, GoogleClient)
        assert real.users_url == "https://admin.googleapis.com/admin/directory/v1/users"
        assert real.connections_url == "https://people.googleapis.com/v1/people/me/connections"
        assert real.events_url == "https://www.googleapis.com/calendar/v3/calendars/primary/events"
    with SPEC.build_client("http://127.0.0.1:9999/", BearerAuth("x"), {}) as sandbox:
        assert isinstance(sandbox, GoogleClient)
        assert {urlsplit(url).netloc for url in (sandbox.users_url, sandbox.connections_url, sandbox.events_url)} == {
            "127.0.0.1:9999"
        }


# --- users ---------------------------------------------------------------------------------------------------------


def test_users_full_read_returns_every_user_mapped_and_deleted_ones_flagged(
    google: ServedGoogle, client: GoogleClient, clock: ManualClock
) -> None:
    clock.advance(30)
    gone = google.emulator.user_records()[5]["id"]
    google.emulator.delete_user(gone)
    records, pages = sync(read_users, client, SyncRequest(CONNECTION_ID, None, now(clock)))
    raw = google.emulator.user_records(include_deleted=True)
    assert by_id(records) == {
        user["id"]: dict(to_user(DirectoryUser.model_validate(user), CONNECTION_ID)) for user in raw
    }
    assert len(records) == 23 and by_id(records)[gone]["is_deleted"] is True
    assert sum(record["is_deleted"] for record in records) == 1
    assert pages[-1].cursor is None and pages[-1].records == []
    assert api_requests(google, "/admin/directory/v1/users") == 2  # live users, then recently deleted ones


def test_users_page_at_500_a_request(google_factory_users: ServedGoogle, clock: ManualClock) -> None:
    google = google_factory_users
    with GoogleClient(google.url, auth=BearerAuth(google.tokens["access_token"])) as api:
        records, pages = sync(read_users, api, SyncRequest(CONNECTION_ID, None, now(clock)))
    assert len(records) == 1_050 and len(pages) == 3 + 1 + 1
    queries = [parse_qs(r.query) for r in google.emulator.request_log if r.path.endswith("/users")]
    assert all(query["maxResults"] == ["500"] and query["orderBy"] == ["email"] for query in queries)


@pytest.fixture
def google_factory_users(clock: ManualClock) -> Iterator[ServedGoogle]:
    with serve_google(clock, users=1_050, contacts=10, events=10) as served:
        yield served


# --- contacts ------------------------------------------------------------------------------------------------------


def test_contacts_full_sync_returns_every_contact_mapped_and_a_sync_token_cursor(
    google: ServedGoogle, client: GoogleClient, clock: ManualClock
) -> None:
    records, pages = sync(read_contacts, client, SyncRequest(CONNECTION_ID, None, now(clock)))
    expected = {
        person["resourceName"]: dict(to_contact(Person.model_validate(person), CONNECTION_ID))
        for person in google.emulator.contact_records()
    }
    assert len(records) == len(expected) == 2_300 and by_id(records) == expected
    assert len(pages) == math.ceil(2_300 / 1000) + 1  # one Page per provider page, then the cursor
    assert pages[-1].cursor is not None and json.loads(pages[-1].cursor)["sync_token"]
    assert all(page.cursor is None for page in pages[:-1])


def test_contacts_incremental_sync_returns_exactly_the_changes(
    google: ServedGoogle, client: GoogleClient, clock: ManualClock
) -> None:
    emulator = google.emulator
    _, pages = sync(read_contacts, client, SyncRequest(CONNECTION_ID, None, now(clock)))
    cursor = pages[-1].cursor
    clock.advance(300)
    names = [person["resourceName"] for person in emulator.contact_records()]
    created = emulator.create_contact(given_name="Ines", family_name="Moreau", email="ines@example.com", company="")
    emulator.update_contact(names[10], email="new.address@example.com")
    emulator.delete_contact(names[11])
    before = api_requests(google, "/connections")

    changes, change_pages = sync(read_contacts, client, SyncRequest(CONNECTION_ID, cursor, now(clock)))
    assert api_requests(google, "/connections") - before == 1  # only the changes travelled
    assert [record["source_id"] for record in changes] == [created, names[10], names[11]]
    assert changes[0]["first_name"] == "Ines" and changes[0]["company"] is None
    assert changes[1]["email"] == "new.address@example.com" and changes[1]["is_deleted"] is False
    assert changes[2]["is_deleted"] is True and abs(changes[2]["modified_at"].timestamp() - clock.now) < 0.002
    next_cursor = change_pages[-1].cursor
    assert next_cursor is not None and next_cursor != cursor
    quiet, _ = sync(read_contacts, client, SyncRequest(CONNECTION_ID, next_cursor, now(clock)))
    assert quiet == []


def test_a_stale_contacts_cursor_raises_cursor_expired(
    google: ServedGoogle, client: GoogleClient, clock: ManualClock
) -> None:
    _, pages = sync(read_contacts, client, SyncRequest(CONNECTION_ID, None, now(clock)))
    google.emulator.expire_sync_tokens()
    with pytest.raises(CursorExpired, match="EXPIRED_SYNC_TOKEN"):
        list(read_contacts(client, SyncRequest(CONNECTION_ID, pages[-1].cursor, now(clock))))


# --- events --------------------------------------------------------------------------------------------------------


def test_a_day_partition_returns_exactly_the_events_starting_that_day(
    google: ServedGoogle, client: GoogleClient, clock: ManualClock
) -> None:
    emulator = google.emulator
    clock.advance(60)
    # Edge cases: one crossing into the day from the evening before (not ours), one at 00:00 UTC that is still the
    # previous evening in Phoenix (ours), an all-day event on the day (ours) and a deleted one (ours, flagged).
    crossing = emulator.create_event(
        summary="Late", start=WINDOW[0] - timedelta(minutes=30), end=WINDOW[0] + timedelta(minutes=30)
    )
    midnight = emulator.create_event(
        summary="Phoenix", start=WINDOW[0], end=WINDOW[0] + timedelta(hours=1), time_zone="America/Phoenix"
    )
    all_day = emulator.create_event(summary="Holiday", start=DAY, end=DAY + timedelta(days=1))
    deleted = emulator.create_event(summary="Dropped", start=WINDOW[0] + timedelta(hours=9), end=WINDOW[1])
    emulator.delete_event(deleted)

    records, pages = sync(read_events, client, SyncRequest(CONNECTION_ID, None, now(clock), window=WINDOW))
    expected = expected_day(google)
    assert by_id(records) == by_id(expected) and len(records) == len(expected)
    assert crossing not in by_id(records) and {midnight, all_day, deleted} <= set(by_id(records))
    assert by_id(records)[all_day]["is_all_day"] is True and by_id(records)[all_day]["start_at"] == WINDOW[0]
    assert by_id(records)[midnight]["start_at"] == WINDOW[0]
    assert by_id(records)[deleted]["is_deleted"] is True
    assert json.loads(pages[-1].cursor or "{}") == {"modified_since": now(clock).isoformat()}


def test_events_incremental_sync_of_a_day_fetches_only_that_days_changes(
    google: ServedGoogle, client: GoogleClient, clock: ManualClock
) -> None:
    emulator = google.emulator
    _, pages = sync(read_events, client, SyncRequest(CONNECTION_ID, None, now(clock), window=WINDOW))
    in_day = [event["id"] for event in emulator.event_records() if WINDOW[0] <= instant(event["start"]) < WINDOW[1]]
    other_day = next(event["id"] for event in emulator.event_records() if instant(event["start"]) >= WINDOW[1])
    clock.advance(1800)  # within the access token's hour
    emulator.update_event(in_day[0], summary="Moved agenda")
    emulator.delete_event(in_day[1])
    emulator.update_event(other_day, summary="Not this partition")
    created = emulator.create_event(
        summary="New", start=WINDOW[0] + timedelta(hours=20), end=WINDOW[0] + timedelta(hours=21)
    )
    before = api_requests(google, "/events")

    changes, change_pages = sync(
        read_events, client, SyncRequest(CONNECTION_ID, pages[-1].cursor, now(clock), window=WINDOW)
    )
    assert api_requests(google, "/events") - before == 1
    assert sorted(record["source_id"] for record in changes) == sorted([in_day[0], in_day[1], created])
    assert by_id(changes)[in_day[0]]["title"] == "Moved agenda"
    assert by_id(changes)[in_day[1]]["is_deleted"] is True
    assert by_id(changes) == {key: value for key, value in by_id(expected_day(google)).items() if key in by_id(changes)}
    query = parse_qs(google.emulator.request_log[-1].query)
    assert query["showDeleted"] == ["true"] and query["timeMin"] == ["2026-09-08T00:00:00Z"]
    assert "syncToken" not in query  # window reads by updatedMin: no syncToken for showDeleted to clash with
    assert datetime.fromisoformat(query["updatedMin"][0]) == now(clock) - timedelta(seconds=1800, minutes=5)
    assert change_pages[-1].cursor is not None


def test_a_stale_events_cursor_raises_cursor_expired(
    google: ServedGoogle, client: GoogleClient, clock: ManualClock
) -> None:
    _, pages = sync(read_events, client, SyncRequest(CONNECTION_ID, None, now(clock), window=WINDOW))
    google.emulator.expire_sync_tokens()
    with pytest.raises(CursorExpired, match="updatedMinTooLongAgo"):
        list(read_events(client, SyncRequest(CONNECTION_ID, pages[-1].cursor, now(clock), window=WINDOW)))


def test_events_need_a_window(client: GoogleClient, clock: ManualClock) -> None:
    with pytest.raises(ValueError, match="day partition"):
        list(read_events(client, SyncRequest(CONNECTION_ID, None, now(clock))))


# --- errors and limits ---------------------------------------------------------------------------------------------


def test_a_403_rate_limit_is_retried_and_other_403s_are_not(clock: ManualClock) -> None:
    with serve_google(clock, users=5, contacts=5, events=5, requests_per_minute=1) as google:
        with GoogleClient(
            google.url, auth=BearerAuth(google.tokens["access_token"]), sleep=lambda _s: clock.advance(61)
        ) as api:
            list(read_users(api, SyncRequest(CONNECTION_ID, None, now(clock))))
            assert api.stats.retries == 1  # the second request (deleted users) met the quota once
        statuses = [record.status for record in google.emulator.request_log if record.path.endswith("/users")]
        assert statuses == [200, 403, 200]
    with serve_google(clock, users=5, contacts=5, events=5) as google:
        narrow = _token_for(google, CALENDAR_SCOPE)
        with GoogleClient(google.url, auth=BearerAuth(narrow)) as api:
            with pytest.raises(ProviderError) as refused:
                list(read_users(api, SyncRequest(CONNECTION_ID, None, now(clock))))
            assert refused.value.status_code == 403 and api.stats.retries == 0


def _token_for(google: ServedGoogle, scope: str) -> str:
    """An access token for just `scope`, through the emulator's authorize and token endpoints."""
    response = google.http.get(
        "/o/oauth2/v2/auth",
        params={"client_id": CLIENT_ID, "redirect_uri": REDIRECT_URI, "response_type": "code", "scope": scope},
    )
    code = httpx.URL(response.headers["location"]).params["code"]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uri": REDIRECT_URI,
    }
    token: str = google.http.post("/token", data=form).json()["access_token"]
    return token


def test_an_expired_access_token_is_needs_reauth_for_the_transport_to_handle(
    google: ServedGoogle, client: GoogleClient, clock: ManualClock
) -> None:
    google.emulator.expire_access_tokens()
    with pytest.raises(NeedsReauth):
        list(read_contacts(client, SyncRequest(CONNECTION_ID, None, now(clock))))


# --- OAuth hooks through the shared OAuth client -------------------------------------------------------------------


def test_oauth_client_connects_incrementally_describes_and_revokes(google: ServedGoogle) -> None:
    app = ProviderApp(client_id=CLIENT_ID, client_secret=SecretStr(CLIENT_SECRET), base_url=google.url)
    oauth = OAuthClient(SPEC, app)
    try:
        verifier, challenge = new_pkce_pair()
        url = oauth.authorization_url(
            redirect_uri=REDIRECT_URI, scopes=[CALENDAR_SCOPE], state="s-1", code_challenge=challenge
        )
        assert url.startswith(google.url + "/o/oauth2/v2/auth?")
        query = parse_qs(urlsplit(url).query)
        assert query["access_type"] == ["offline"] and query["include_granted_scopes"] == ["true"]
        redirect = google.http.get(url.removeprefix(google.url), follow_redirects=False)
        code = httpx.URL(redirect.headers["location"]).params["code"]
        grant = oauth.exchange_code(code=code, redirect_uri=REDIRECT_URI, code_verifier=verifier)
        # The fixture's earlier grant is folded in: connecting Calendar alone keeps Directory and Contacts.
        assert grant.granted_scopes is not None and len(grant.granted_scopes) == 5
        assert grant.tokens.refresh_token is not None and grant.metadata == {"token_type": "Bearer"}

        account = oauth.describe_account(grant.tokens.access_token.get_secret_value())
        assert account.external_account_id and account.metadata == {"email": google.emulator.owner_email}
        assert sorted(account.granted_scopes or []) == sorted(grant.granted_scopes)

        refreshed = oauth.refresh(grant.tokens.refresh_token.get_secret_value())
        assert refreshed.tokens.refresh_token == grant.tokens.refresh_token  # Google does not rotate

        assert oauth.revoke(grant.tokens) is True
        assert oauth.revoke(grant.tokens) is False
        with pytest.raises(NeedsReauth):
            oauth.refresh(grant.tokens.refresh_token.get_secret_value())
        revokes = [record for record in google.emulator.request_log if record.path == "/revoke"]
        assert revokes and all(record.query == "" for record in revokes)  # the token travelled in the body
    finally:
        oauth.api.close()


def test_describe_account_reports_a_refused_token_without_echoing_it(google: ServedGoogle) -> None:
    assert SPEC.describe_account is not None
    with ApiClient(google.url) as api, pytest.raises(ProviderError) as refused:
        SPEC.describe_account(api, "ya29.secret-looking-token")
    assert "ya29" not in str(refused.value)


def test_revoke_falls_back_to_the_access_token(google: ServedGoogle) -> None:
    assert SPEC.revoke is not None
    tokens = TokenSet(access_token=SecretStr(google.tokens["access_token"]), refresh_token=None, expires_at=None)
    app = ProviderApp(client_id=CLIENT_ID, client_secret=SecretStr(CLIENT_SECRET), base_url=google.url)
    with ApiClient(google.url) as api:
        assert SPEC.revoke(api, tokens, SPEC.oauth_endpoints(app)) is True
    assert google.emulator.granted_scopes() == ()


# --- pure mappers --------------------------------------------------------------------------------------------------


def test_to_user_maps_names_title_activity_and_deletion() -> None:
    raw = DirectoryUser.model_validate(
        {
            "id": "1001",
            "primaryEmail": "ada@example.com",
            "name": {"givenName": "Ada", "familyName": "Lovelace"},
            "organizations": [{"title": "Analyst"}, {"title": "CTO", "primary": True}],
            "suspended": True,
            "creationTime": "2025-02-03T04:05:06.000Z",
            "unknownField": {"ignored": True},
        }
    )
    record = to_user(raw, "c1")
    assert record == {
        "connection_id": "c1",
        "source_id": "1001",
        "email": "ada@example.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "title": "CTO",
        "is_active": False,
        "created_at": datetime(2025, 2, 3, 4, 5, 6, tzinfo=UTC),
        "modified_at": None,
        "is_deleted": False,
        "raw": RawOf(raw.model_dump(by_alias=True), must=["id", "unknownField"]),  # unknown fields are kept
    }
    deleted = to_user(DirectoryUser.model_validate({"id": "2", "deletionTime": "2026-01-01T00:00:00Z"}), "c1")
    assert deleted["is_deleted"] is True and deleted["is_active"] is False and deleted["title"] is None
    assert deleted["modified_at"] == datetime(2026, 1, 1, tzinfo=UTC) and deleted["email"] is None


def test_to_contact_prefers_primary_entries_and_flags_deletions() -> None:
    raw = Person.model_validate(
        {
            "resourceName": "people/c42",
            "metadata": {
                "sources": [
                    {"type": "CONTACT", "updateTime": "2026-03-01T10:00:00.5Z"},
                    {"type": "PROFILE", "updateTime": "2026-02-01T10:00:00Z"},
                ]
            },
            "names": [{"givenName": "Old"}, {"metadata": {"primary": True}, "givenName": "Zoe", "familyName": "Xu"}],
            "emailAddresses": [{"value": "zoe@example.com"}],
            "phoneNumbers": [{"value": ""}],
            "organizations": [{"name": "Acme", "title": "CTO"}],
        }
    )
    record = to_contact(raw, "c1")
    assert (record["first_name"], record["last_name"], record["email"]) == ("Zoe", "Xu", "zoe@example.com")
    assert record["phone"] is None and (record["company"], record["job_title"]) == ("Acme", "CTO")
    assert record["modified_at"] == datetime(2026, 3, 1, 10, 0, 0, 500_000, tzinfo=UTC)
    assert record["created_at"] is None and record["is_deleted"] is False
    gone = to_contact(
        Person.model_validate({"resourceName": "people/c7", "metadata": {"deleted": True, "sources": []}}), "c1"
    )
    assert gone["is_deleted"] is True and gone["email"] is None and gone["modified_at"] is None


def test_to_event_converts_to_utc_and_treats_all_day_as_midnight_utc() -> None:
    zoned = to_event(
        CalendarEvent.model_validate(
            {
                "id": "e1",
                "status": "confirmed",
                "summary": "Standup",
                "organizer": {"email": "o@example.com"},
                "start": {"dateTime": "2026-09-08T01:30:00+05:30", "timeZone": "Asia/Kolkata"},
                "end": {"dateTime": "2026-09-08T02:00:00+05:30"},
                "updated": "2026-08-01T00:00:00Z",
            }
        ),
        "c1",
    )
    assert zoned["start_at"] == datetime(2026, 9, 7, 20, 0, tzinfo=UTC) and zoned["start_at"].tzinfo is UTC
    assert zoned["end_at"] == datetime(2026, 9, 7, 20, 30, tzinfo=UTC)
    assert zoned["is_all_day"] is False and zoned["organizer_email"] == "o@example.com" and zoned["location"] is None
    all_day = to_event(
        CalendarEvent.model_validate({"id": "e2", "start": {"date": "2026-09-08"}, "end": {"date": "2026-09-09"}}), "c1"
    )
    assert all_day["start_at"] == WINDOW[0] and all_day["end_at"] == WINDOW[1] and all_day["is_all_day"] is True


def test_to_event_places_a_timeless_cancellation_in_the_requested_day() -> None:
    bare = CalendarEvent.model_validate({"id": "e3", "status": "cancelled"})
    record = to_event(bare, "c1", fallback_start=WINDOW[0])
    assert record["is_deleted"] is True and record["start_at"] == WINDOW[0] and record["end_at"] is None
    with pytest.raises(ProviderError, match="no start"):
        to_event(bare, "c1")


def test_rate_limit_detection_reads_the_403_reason() -> None:
    request = httpx.Request("GET", "http://127.0.0.1/calendar/v3/calendars/primary/events")

    def error(status: int, reason: str) -> httpx.Response:
        body = {"error": {"code": status, "message": "m", "errors": [{"reason": reason}], "status": "X"}}
        return httpx.Response(status, json=body, request=request)

    with GoogleClient("http://127.0.0.1:9") as api:
        assert api.is_rate_limited(error(403, "rateLimitExceeded"))
        assert api.is_rate_limited(error(403, "userRateLimitExceeded"))
        assert not api.is_rate_limited(error(403, "insufficientPermissions"))
        assert not api.is_rate_limited(httpx.Response(403, text="<html>", request=request))
        with pytest.raises(CursorExpired):
            api.raise_for_status(error(410, "fullSyncRequired"))
        with pytest.raises(ProviderError) as bad:
            api.raise_for_status(error(400, "invalidParameter"))
        assert not isinstance(bad.value, CursorExpired)


def test_a_sync_token_round_keeps_the_person_fields_it_began_with(
    google: ServedGoogle, client: GoogleClient, clock: ManualClock
) -> None:
    """People wants a sync-token request's parameters to repeat the first call's: a catalog growing mid-round (or a
    cursor from before the mask was kept) does not change the mask until the next full read."""
    since = len(google.emulator.request_log)
    first = SyncRequest(CONNECTION_ID, None, now(clock), fields=("names", "biographies"))
    _, pages = sync(read_contacts, client, first)
    cursor = pages[-1].cursor
    assert cursor is not None and json.loads(cursor)["person_fields"].endswith(",biographies")
    sync(read_contacts, client, SyncRequest(CONNECTION_ID, cursor, now(clock), fields=("names", "biographies", "urls")))
    legacy = json.dumps({"sync_token": json.loads(cursor)["sync_token"]})
    sync(read_contacts, client, SyncRequest(CONNECTION_ID, legacy, now(clock), fields=("urls",)))
    masks = [
        parse_qs(record.query)["personFields"][0]
        for record in google.emulator.request_log[since:]
        if record.path.endswith("/connections")
    ]
    assert masks[-3:] == [PERSON_FIELDS + ",biographies", PERSON_FIELDS + ",biographies", PERSON_FIELDS]
