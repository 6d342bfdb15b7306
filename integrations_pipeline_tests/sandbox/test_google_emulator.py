"""The Google Workspace emulator over raw HTTP: OAuth (incremental authorization, revocation, tokeninfo), limits and
errors, paging, sync tokens and their expiry for Directory users, People connections and Calendar events.

Expected values come from the emulator's inspection methods (plain dicts in Google's shapes) filtered here
independently, never from the emulator's own filtering code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from integrations_pipeline.httpserver import BackgroundServer
from integrations_pipeline.sandbox.google import GoogleEmulator
from integrations_pipeline_tests.sandbox.conftest import ManualClock, pkce_pair

CLIENT_ID = "sandbox-google-client.apps.googleusercontent.com"
CLIENT_SECRET = "sandbox-google-secret"
REDIRECT_URI = "http://127.0.0.1:9/oauth/callback"
DIRECTORY_SCOPE = "https://www.googleapis.com/auth/admin.directory.user.readonly"
CONTACTS_SCOPE = "https://www.googleapis.com/auth/contacts.readonly"
CALENDAR_SCOPE = "https://www.googleapis.com/auth/calendar.readonly"
ALL_SCOPES = f"openid email {DIRECTORY_SCOPE} {CONTACTS_SCOPE} {CALENDAR_SCOPE}"
USERS = "/admin/directory/v1/users"
CONNECTIONS = "/v1/people/me/connections"
EVENTS = "/calendar/v3/calendars/primary/events"
PERSON_FIELDS = "names,emailAddresses,phoneNumbers,organizations,metadata"
SMALL: dict[str, Any] = {"users": 23, "contacts": 140, "events": 120, "event_days": 20}


@dataclass
class ServedGoogle:
    emulator: GoogleEmulator
    url: str
    clock: ManualClock
    http: httpx.Client
    tokens: dict[str, Any] = field(default_factory=dict)

    def get(self, path: str, *, access_token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {access_token or self.tokens['access_token']}"}
        return self.http.get(path, headers=headers, **kwargs)


def authorize(http: httpx.Client, *, scope: str = ALL_SCOPES, state: str = "state-123", **extra: str) -> str:
    """The consent step (auto-approved); returns the code from the redirect after checking state came back."""
    params = {
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "response_type": "code",
        "scope": scope,
        "state": state,
        **extra,
    }
    response = http.get("/o/oauth2/v2/auth", params=params, follow_redirects=False)
    assert response.status_code == 302, response.text
    location = httpx.URL(response.headers["location"])
    assert str(location.copy_with(query=None)) == REDIRECT_URI
    assert location.params["state"] == state
    return location.params["code"]


def exchange(http: httpx.Client, code: str, *, code_verifier: str | None = None, **overrides: str) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uri": REDIRECT_URI,
        **({"code_verifier": code_verifier} if code_verifier else {}),
        **overrides,
    }
    return http.post("/token", data=form)


def refresh(http: httpx.Client, refresh_token: str, *, client_secret: str = CLIENT_SECRET) -> httpx.Response:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": CLIENT_ID,
        "client_secret": client_secret,
    }
    return http.post("/token", data=form)


def run_code_flow(http: httpx.Client, *, scope: str = ALL_SCOPES, **extra: str) -> dict[str, Any]:
    """Authorization code + PKCE with offline access, as the gateway asks for it; returns the token response."""
    verifier, challenge = pkce_pair()
    params = {"access_type": "offline", "prompt": "consent", "include_granted_scopes": "true"} | extra
    code = authorize(http, scope=scope, code_challenge=challenge, code_challenge_method="S256", **params)
    response = exchange(http, code, code_verifier=verifier)
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


@contextmanager
def serve_google(clock: ManualClock, **options: Any) -> Iterator[ServedGoogle]:
    """A fresh emulator on 127.0.0.1 and a client already holding tokens for every scope."""
    emulator = GoogleEmulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, clock=clock, **(SMALL | options))
    with BackgroundServer(emulator.app) as server, httpx.Client(base_url=server.url, timeout=30.0) as http:
        served = ServedGoogle(emulator, server.url, clock, http)
        served.tokens = run_code_flow(http)
        yield served


@pytest.fixture
def google(clock: ManualClock) -> Iterator[ServedGoogle]:
    with serve_google(clock) as served:
        yield served


@pytest.fixture
def google_factory(clock: ManualClock) -> Iterator[Callable[..., ServedGoogle]]:
    with ExitStack() as stack:
        yield lambda **options: stack.enter_context(serve_google(clock, **options))


def assert_google_error(response: httpx.Response, code: int, reason: str) -> dict[str, Any]:
    """Google's error body: code, message, status, and the reason in errors[] or a details[] ErrorInfo."""
    assert response.status_code == code, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code and error["message"] and error["status"]
    reasons = {item["reason"] for item in [*error.get("errors", []), *error.get("details", [])]}
    assert reason in reasons, reasons
    return error


def list_all(
    google: ServedGoogle, path: str, items_key: str, **params: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Follow nextPageToken to the end; returns (items, pages) so tests can look at where tokens appeared."""
    items: list[dict[str, Any]] = []
    pages: list[dict[str, Any]] = []
    page_token: str | None = None
    while True:
        response = google.get(path, params={**params, **({"pageToken": page_token} if page_token else {})})
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        items.extend(page.get(items_key, []))
        page_token = page.get("nextPageToken")
        if not page_token:
            return items, pages


def instant(moment: dict[str, str]) -> datetime:
    """An event time in UTC, computed here from Google's `date` / `dateTime` independently of the emulator."""
    if "date" in moment:
        return datetime.combine(date.fromisoformat(moment["date"]), datetime.min.time(), UTC)
    return datetime.fromisoformat(moment["dateTime"]).astimezone(UTC)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- generated data ----------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_data_and_another_seed_does_not() -> None:
    def build(seed: int) -> GoogleEmulator:
        return GoogleEmulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, seed=seed, **SMALL)

    first, again, other = build(3), build(3), build(4)
    assert first.user_records() == again.user_records() and first.user_records() != other.user_records()
    assert first.contact_records() == again.contact_records() != other.contact_records()
    assert first.event_records() == again.event_records() != other.event_records()


def test_a_hundred_thousand_contacts_build_and_page(clock: ManualClock) -> None:
    with serve_google(clock, contacts=100_000) as google:
        params = {"personFields": PERSON_FIELDS, "pageSize": 1000}
        first = google.get(CONNECTIONS, params=params).json()
        second = google.get(CONNECTIONS, params=params | {"pageToken": first["nextPageToken"]}).json()
    assert first["totalItems"] == 100_000 and len(first["connections"]) == len(second["connections"]) == 1000


def test_generated_timestamps_are_in_the_past_and_events_mix_all_day_and_zoned(google: ServedGoogle) -> None:
    now = datetime.fromtimestamp(google.clock.now, UTC)
    events = google.emulator.event_records()
    assert all(datetime.fromisoformat(event["updated"]) < now for event in events)
    assert any("date" in event["start"] for event in events)
    offsets = {event["start"]["dateTime"][19:] for event in events if "dateTime" in event["start"]}
    assert {"Z", "+09:00", "+05:30", "-07:00"} <= offsets
    assert all(datetime.fromisoformat(user["creationTime"]) < now for user in google.emulator.user_records())


# --- OAuth -------------------------------------------------------------------------------------------------------


def test_code_flow_answers_googles_token_shape(google: ServedGoogle) -> None:
    tokens = google.tokens
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 3599
    assert tokens["access_token"].startswith("ya29.") and tokens["refresh_token"].startswith("1//")
    assert tokens["scope"].split() == ALL_SCOPES.split()
    assert {tokens["access_token"], tokens["refresh_token"]} <= google.emulator.issued_tokens()


def test_state_is_echoed_verbatim(google: ServedGoogle) -> None:
    state = "tenant=acme&x=ä/+ 1"
    authorize(google.http, state=state)


def test_a_wrong_code_verifier_is_invalid_grant_and_burns_the_code(google: ServedGoogle) -> None:
    verifier, challenge = pkce_pair()
    code = authorize(google.http, code_challenge=challenge, code_challenge_method="S256")
    refused = exchange(google.http, code, code_verifier=verifier + "x")
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    again = exchange(google.http, code, code_verifier=verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_a_pkce_code_without_verifier_and_a_mismatched_redirect_are_refused(google: ServedGoogle) -> None:
    _, challenge = pkce_pair()
    code = authorize(google.http, code_challenge=challenge, code_challenge_method="S256")
    assert exchange(google.http, code).json()["error"] == "invalid_request"
    code = authorize(google.http)
    mismatched = exchange(google.http, code, redirect_uri="http://127.0.0.1:9/other")
    assert mismatched.status_code == 400 and mismatched.json()["error"] == "redirect_uri_mismatch"


def test_client_errors_use_googles_status_codes(google: ServedGoogle) -> None:
    code = authorize(google.http)
    bad_secret = exchange(google.http, code, client_secret="nope")
    assert bad_secret.status_code == 401 and bad_secret.json() == {
        "error": "invalid_client",
        "error_description": "Unauthorized",
    }
    unsupported = google.http.post("/token", data={"grant_type": "password", "client_id": CLIENT_ID})
    assert unsupported.status_code == 400 and unsupported.json()["error"] == "unsupported_grant_type"
    unknown = google.http.get(
        "/o/oauth2/v2/auth",
        params={"client_id": "nobody", "redirect_uri": REDIRECT_URI, "response_type": "code", "scope": "email"},
    )
    assert unknown.status_code == 401
    assert google.emulator.token_requests() == 3 and google.emulator.token_requests("password") == 1


def test_incremental_authorization_returns_the_union_of_grants(google_factory: Callable[..., ServedGoogle]) -> None:
    verifier, challenge = pkce_pair()
    fresh = google_factory()
    fresh.http.post("/revoke", data={"token": fresh.tokens["refresh_token"]})  # the user starts with no grant
    assert fresh.emulator.granted_scopes() == ()
    first = run_code_flow(fresh.http, scope=CALENDAR_SCOPE)
    assert first["scope"] == CALENDAR_SCOPE
    later = run_code_flow(fresh.http, scope=DIRECTORY_SCOPE)
    assert set(later["scope"].split()) == {CALENDAR_SCOPE, DIRECTORY_SCOPE}
    # Both APIs work with the later token: connecting Directory did not lose Calendar.
    assert fresh.get(EVENTS, access_token=later["access_token"]).status_code == 200
    assert fresh.get(USERS, access_token=later["access_token"], params={"customer": "my_customer"}).status_code == 200
    # Without include_granted_scopes the token carries only what was asked for.
    code = authorize(fresh.http, scope=CONTACTS_SCOPE, code_challenge=challenge, code_challenge_method="S256")
    narrow = exchange(fresh.http, code, code_verifier=verifier).json()
    assert narrow["scope"] == CONTACTS_SCOPE
    assert_google_error(fresh.get(EVENTS, access_token=narrow["access_token"]), 403, "insufficientPermissions")


def test_refresh_tokens_come_only_with_offline_access_and_again_only_on_prompted_consent(google: ServedGoogle) -> None:
    online = exchange(google.http, authorize(google.http)).json()
    assert "refresh_token" not in online and online["access_token"]
    repeat_offline = exchange(google.http, authorize(google.http, access_type="offline")).json()
    assert "refresh_token" not in repeat_offline  # the user consented before and was not prompted again
    prompted = exchange(google.http, authorize(google.http, access_type="offline", prompt="consent")).json()
    assert prompted["refresh_token"].startswith("1//")


def test_refresh_returns_a_new_access_token_and_no_refresh_token(google: ServedGoogle) -> None:
    google.emulator.expire_access_tokens()
    expired = google.get(EVENTS)
    error = assert_google_error(expired, 401, "authError")
    assert error["status"] == "UNAUTHENTICATED"
    assert 'error="invalid_token"' in expired.headers["www-authenticate"]
    refreshed = refresh(google.http, google.tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    body = refreshed.json()
    assert "refresh_token" not in body and body["token_type"] == "Bearer" and body["expires_in"] == 3599
    assert body["scope"].split() == ALL_SCOPES.split()
    assert google.get(EVENTS, access_token=body["access_token"]).status_code == 200
    assert google.emulator.token_requests("refresh_token") == 1


def test_access_tokens_expire_with_the_clock(google: ServedGoogle) -> None:
    google.clock.advance(3598)
    assert google.get(EVENTS).status_code == 200
    google.clock.advance(2)
    assert_google_error(google.get(EVENTS), 401, "authError")


def test_revoking_the_refresh_token_in_the_form_body_ends_the_grant(google: ServedGoogle) -> None:
    revoked = google.http.post("/revoke", data={"token": google.tokens["refresh_token"]})
    assert revoked.status_code == 200
    assert_google_error(google.get(EVENTS), 401, "authError")
    again = refresh(google.http, google.tokens["refresh_token"])
    assert again.status_code == 400 and again.json() == {
        "error": "invalid_grant",
        "error_description": "Token has been expired or revoked.",
    }
    twice = google.http.post("/revoke", data={"token": google.tokens["refresh_token"]})
    assert twice.status_code == 400 and twice.json()["error"] == "invalid_token"
    assert google.emulator.granted_scopes() == ()


def test_revoking_an_access_token_revokes_its_refresh_token_too(google: ServedGoogle) -> None:
    assert google.http.post("/revoke", data={"token": google.tokens["access_token"]}).status_code == 200
    assert refresh(google.http, google.tokens["refresh_token"]).json()["error"] == "invalid_grant"


def test_revoke_refresh_tokens_knob_makes_refresh_invalid_grant(google: ServedGoogle) -> None:
    google.emulator.revoke_refresh_tokens()
    assert refresh(google.http, google.tokens["refresh_token"]).json()["error"] == "invalid_grant"


def test_tokeninfo_describes_the_token_from_a_bearer_header(google: ServedGoogle) -> None:
    info = google.http.post("/tokeninfo", headers={"Authorization": f"Bearer {google.tokens['access_token']}"})
    assert info.status_code == 200
    body = info.json()
    assert body["scope"].split() == ALL_SCOPES.split() and body["aud"] == CLIENT_ID
    assert body["sub"] and body["email"] == google.emulator.owner_email and body["access_type"] == "offline"
    calendar_only = exchange(google.http, authorize(google.http, scope=CALENDAR_SCOPE)).json()
    anonymous = google.http.get("/tokeninfo", params={"access_token": calendar_only["access_token"]}).json()
    assert "sub" not in anonymous and "email" not in anonymous
    invalid = google.http.post("/tokeninfo", data={"access_token": "ya29.nope"})
    assert invalid.status_code == 400 and invalid.json()["error"] == "invalid_token"


def test_calls_without_a_token_are_401_and_missing_scopes_are_a_403_that_is_not_a_rate_limit(
    google: ServedGoogle,
) -> None:
    assert_google_error(google.http.get(EVENTS), 401, "authError")
    directory_only = exchange(google.http, authorize(google.http, scope=DIRECTORY_SCOPE)).json()
    error = assert_google_error(
        google.get(CONNECTIONS, access_token=directory_only["access_token"]), 403, "insufficientPermissions"
    )
    reasons = {item["reason"] for item in error["errors"]}
    assert not reasons & {"rateLimitExceeded", "userRateLimitExceeded"}


def test_rate_limits_answer_403_user_rate_limit_on_calendar_and_429_on_people(
    google_factory: Callable[..., ServedGoogle],
) -> None:
    google = google_factory(requests_per_minute=2)
    assert google.get(EVENTS).status_code == 200
    assert google.get(EVENTS).status_code == 200
    assert_google_error(google.get(EVENTS), 403, "userRateLimitExceeded")
    people = assert_google_error(google.get(CONNECTIONS, params={"personFields": "names"}), 429, "rateLimitExceeded")
    assert people["status"] == "RESOURCE_EXHAUSTED"
    google.clock.advance(60)
    assert google.get(EVENTS).status_code == 200


# --- Directory users ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_results", ["501", "0", "-3", "ten"])
def test_users_reject_max_results_outside_1_to_500(google: ServedGoogle, max_results: str) -> None:
    response = google.get(USERS, params={"customer": "my_customer", "maxResults": max_results})
    assert_google_error(response, 400, "invalidParameter")


def test_users_need_a_customer_or_domain_and_reject_bad_enums(google: ServedGoogle) -> None:
    assert_google_error(google.get(USERS), 400, "badRequest")
    bad_order = google.get(USERS, params={"customer": "my_customer", "orderBy": "lastLogin"})
    assert_google_error(bad_order, 400, "invalidParameter")
    assert google.get(USERS, params={"customer": "my_customer", "maxResults": 500}).status_code == 200


def test_users_page_by_email_with_a_default_of_100_and_full_projection(
    google_factory: Callable[..., ServedGoogle],
) -> None:
    google = google_factory(users=230)
    first = google.get(USERS, params={"customer": "my_customer"}).json()
    assert first["kind"] == "admin#directory#users" and len(first["users"]) == 100 and first["nextPageToken"]
    params = {"customer": "my_customer", "maxResults": 9, "orderBy": "email", "projection": "full"}
    users, pages = list_all(google, USERS, "users", **params)
    expected = google.emulator.user_records()
    assert users == expected  # projection=full renders exactly the emulator's records, customSchemas included
    assert [user["primaryEmail"] for user in users] == sorted(user["primaryEmail"] for user in expected)
    assert len(pages) == 26 and "nextPageToken" not in pages[-1]
    basic = google.get(USERS, params={"customer": "my_customer", "maxResults": 1}).json()["users"][0]
    assert "customSchemas" not in basic


def test_users_descending_and_by_family_name(google: ServedGoogle) -> None:
    params = {"customer": "my_customer", "maxResults": 500}
    descending = google.get(USERS, params=params | {"orderBy": "email", "sortOrder": "DESCENDING"}).json()["users"]
    emails = [user["primaryEmail"] for user in descending]
    assert emails == sorted(emails, reverse=True)
    by_family = google.get(USERS, params=params | {"orderBy": "familyName"}).json()["users"]
    families = [user["name"]["familyName"].lower() for user in by_family]
    assert families == sorted(families)


def test_deleted_users_leave_the_live_listing_and_show_with_show_deleted(google: ServedGoogle) -> None:
    victims = [user["id"] for user in google.emulator.user_records()[3:5]]
    google.clock.advance(30)
    for user_id in victims:
        google.emulator.delete_user(user_id)
    live, _ = list_all(google, USERS, "users", customer="my_customer", maxResults=500)
    assert {user["id"] for user in live} == {user["id"] for user in google.emulator.user_records()}
    assert not {user["id"] for user in live} & set(victims) and len(live) == SMALL["users"] - 2
    deleted = google.get(USERS, params={"customer": "my_customer", "showDeleted": "true"}).json()["users"]
    assert sorted(user["id"] for user in deleted) == sorted(victims)
    for user in deleted:
        assert abs(datetime.fromisoformat(user["deletionTime"]).timestamp() - google.clock.now) < 0.002


def test_a_page_token_only_continues_its_own_listing(google: ServedGoogle) -> None:
    token = google.get(USERS, params={"customer": "my_customer", "maxResults": 5}).json()["nextPageToken"]
    changed = google.get(
        USERS, params={"customer": "my_customer", "maxResults": 5, "orderBy": "givenName", "pageToken": token}
    )
    assert_google_error(changed, 400, "invalidParameter")
    garbage = google.get(USERS, params={"customer": "my_customer", "pageToken": "not-a-token"})
    assert_google_error(garbage, 400, "invalidParameter")


# --- People connections ------------------------------------------------------------------------------------------


def test_person_fields_are_required_and_validated(google: ServedGoogle) -> None:
    missing = assert_google_error(google.get(CONNECTIONS), 400, "badRequest")
    assert missing["status"] == "INVALID_ARGUMENT"
    assert_google_error(google.get(CONNECTIONS, params={"personFields": "names,shoeSize"}), 400, "badRequest")
    assert_google_error(google.get("/v1/people/c123/connections", params={"personFields": "names"}), 400, "badRequest")


def test_page_size_is_1_to_1000_and_0_means_the_default_100(google_factory: Callable[..., ServedGoogle]) -> None:
    google = google_factory(contacts=1_100)
    too_big = google.get(CONNECTIONS, params={"personFields": "names", "pageSize": 1001})
    assert_google_error(too_big, 400, "invalidParameter")
    default = google.get(CONNECTIONS, params={"personFields": "names", "pageSize": 0}).json()
    assert len(default["connections"]) == 100 and default["totalItems"] == 1_100
    biggest = google.get(CONNECTIONS, params={"personFields": "names", "pageSize": 1000}).json()
    assert len(biggest["connections"]) == 1000


def test_connections_page_in_last_modified_order_and_render_only_the_requested_fields(google: ServedGoogle) -> None:
    people, pages = list_all(google, CONNECTIONS, "connections", personFields=PERSON_FIELDS, pageSize=30)
    expected = google.emulator.contact_records()
    by_name = {person["resourceName"]: person for person in expected}
    assert sorted(person["resourceName"] for person in people) == sorted(by_name)
    assert people == [by_name[person["resourceName"]] for person in people]
    modified = [person["metadata"]["sources"][0]["updateTime"] for person in people]
    assert modified == sorted(modified)
    assert all("nextSyncToken" not in page for page in pages)  # none was requested
    names_only = google.get(CONNECTIONS, params={"personFields": "names", "pageSize": 1}).json()["connections"][0]
    assert set(names_only) == {"resourceName", "etag", "names"}


def test_a_sync_round_returns_exactly_the_changes_with_deletions_flagged(google: ServedGoogle) -> None:
    emulator = google.emulator
    params = {"personFields": PERSON_FIELDS, "pageSize": 50, "requestSyncToken": "true"}
    _, pages = list_all(google, CONNECTIONS, "connections", **params)
    assert all("nextSyncToken" not in page for page in pages[:-1]) and pages[-1]["nextSyncToken"]
    sync_token = pages[-1]["nextSyncToken"]

    google.clock.advance(120)
    live = [person["resourceName"] for person in emulator.contact_records()]
    created = emulator.create_contact(given_name="Noor", family_name="Haddad", email="noor@example.com")
    emulator.update_contact(live[4], title="Chief Cartographer")
    emulator.delete_contact(live[9])
    emulator.update_contact(live[20], company="Later Corp")
    emulator.update_contact(live[4], company="Twice Changed")  # changed twice: comes back once, latest state

    changes, sync_pages = list_all(
        google, CONNECTIONS, "connections", **(params | {"pageSize": 2, "syncToken": sync_token})
    )
    assert len(sync_pages) == 2 and "nextSyncToken" in sync_pages[-1]
    assert [person["resourceName"] for person in changes] == [created, live[9], live[20], live[4]]
    deleted = changes[1]
    assert deleted["metadata"]["deleted"] is True and "names" not in deleted
    current = {person["resourceName"]: person for person in emulator.contact_records()}
    assert changes[3] == current[live[4]] and changes[3]["organizations"][0]["name"] == "Twice Changed"
    assert live[9] not in current

    quiet, _ = list_all(google, CONNECTIONS, "connections", **(params | {"syncToken": sync_pages[-1]["nextSyncToken"]}))
    assert quiet == []


def test_people_sync_tokens_expire_after_seven_days_with_a_400_expired_sync_token(google: ServedGoogle) -> None:
    params = {"personFields": "names", "pageSize": 1000, "requestSyncToken": "true"}
    token = google.get(CONNECTIONS, params=params).json()["nextSyncToken"]
    google.clock.advance(6 * 86_400)
    refresh_token = google.tokens["refresh_token"]
    google.tokens = refresh(google.http, refresh_token).json()  # the hour-long access token has expired
    assert google.get(CONNECTIONS, params=params | {"syncToken": token}).status_code == 200
    google.clock.advance(86_400 + 1)
    google.tokens = refresh(google.http, refresh_token).json()
    error = assert_google_error(
        google.get(CONNECTIONS, params=params | {"syncToken": token}), 400, "EXPIRED_SYNC_TOKEN"
    )
    assert error["status"] == "FAILED_PRECONDITION"


def test_expire_sync_tokens_knob_makes_every_token_stale(google: ServedGoogle) -> None:
    people_params = {"personFields": "names", "pageSize": 1000, "requestSyncToken": "true"}
    people_token = google.get(CONNECTIONS, params=people_params).json()["nextSyncToken"]
    _, pages = list_all(google, EVENTS, "items", maxResults=2500)
    calendar_token = pages[-1]["nextSyncToken"]
    google.emulator.expire_sync_tokens()
    stale_people = google.get(CONNECTIONS, params=people_params | {"syncToken": people_token})
    assert_google_error(stale_people, 400, "EXPIRED_SYNC_TOKEN")
    assert_google_error(google.get(EVENTS, params={"syncToken": calendar_token}), 410, "fullSyncRequired")
    assert_google_error(google.get(EVENTS, params={"syncToken": "CPnever-issued"}), 410, "fullSyncRequired")


# --- Calendar events ---------------------------------------------------------------------------------------------


def test_events_page_with_next_page_token_then_a_sync_token_on_the_last_page(google: ServedGoogle) -> None:
    google.emulator.delete_event("ev00000005")
    events, pages = list_all(google, EVENTS, "items", maxResults=25, alt="json")
    expected = google.emulator.event_records(include_cancelled=False)
    assert events == expected
    assert len(pages) == 5
    assert all(page["nextPageToken"] and "nextSyncToken" not in page for page in pages[:-1])
    assert "nextPageToken" not in pages[-1] and pages[-1]["nextSyncToken"]
    assert pages[0]["kind"] == "calendar#events" and pages[0]["timeZone"] == "UTC"


def test_events_max_results_must_be_positive_and_is_capped_at_2500(google_factory: Callable[..., ServedGoogle]) -> None:
    google = google_factory(events=2_600)
    assert_google_error(google.get(EVENTS, params={"maxResults": 0}), 400, "invalidParameter")
    page = google.get(EVENTS, params={"maxResults": 5000}).json()
    assert len(page["items"]) == 2500 and page["nextPageToken"]
    assert len(google.get(EVENTS).json()["items"]) == 250  # the default


def test_events_reject_other_alt_values_and_unknown_calendars(google: ServedGoogle) -> None:
    assert_google_error(google.get(EVENTS, params={"alt": "proto"}), 400, "invalidParameter")
    assert_google_error(google.get("/calendar/v3/calendars/someone-else/events"), 404, "notFound")


@pytest.mark.parametrize("clashing", ["updatedMin", "timeMin", "timeMax", "orderBy"])
def test_sync_token_cannot_be_combined_with_filters_or_ordering(google: ServedGoogle, clashing: str) -> None:
    _, pages = list_all(google, EVENTS, "items", maxResults=2500)
    value = "updated" if clashing == "orderBy" else "2026-09-01T00:00:00Z"
    response = google.get(EVENTS, params={"syncToken": pages[-1]["nextSyncToken"], clashing: value})
    assert_google_error(response, 400, "invalid")


def test_order_by_start_time_needs_single_events(google: ServedGoogle) -> None:
    assert_google_error(google.get(EVENTS, params={"orderBy": "startTime"}), 400, "badRequest")
    items = google.get(EVENTS, params={"orderBy": "startTime", "singleEvents": "true", "maxResults": 2500}).json()
    starts = [instant(event["start"]) for event in items["items"]]
    assert starts == sorted(starts)


def test_time_min_bounds_the_end_and_time_max_the_start(google: ServedGoogle) -> None:
    time_min = datetime(2026, 9, 7, tzinfo=UTC)
    time_max = time_min + timedelta(days=1)
    crossing = google.emulator.create_event(
        summary="Late call", start=time_min - timedelta(minutes=30), end=time_min + timedelta(minutes=30)
    )
    ending_at_min = google.emulator.create_event(summary="Early", start=time_min - timedelta(hours=1), end=time_min)
    starting_at_max = google.emulator.create_event(
        summary="Next day", start=time_max, end=time_max + timedelta(hours=1)
    )
    events, _ = list_all(
        google, EVENTS, "items", timeMin=rfc3339(time_min), timeMax=rfc3339(time_max), maxResults=7, singleEvents="true"
    )
    expected = [
        event
        for event in google.emulator.event_records(include_cancelled=False)
        if instant(event["end"]) > time_min and instant(event["start"]) < time_max
    ]
    assert expected and [event["id"] for event in events] == [event["id"] for event in expected]
    returned = {event["id"] for event in events}
    assert crossing in returned and ending_at_min not in returned and starting_at_max not in returned
    no_offset = google.get(EVENTS, params={"timeMin": "2026-09-07T00:00:00"})
    assert_google_error(no_offset, 400, "badRequest")


def test_deleted_events_show_as_cancelled_only_when_asked_for(google: ServedGoogle) -> None:
    google.clock.advance(60)
    google.emulator.delete_event("ev00000003")
    default = google.get(EVENTS, params={"maxResults": 2500}).json()["items"]
    assert "ev00000003" not in {event["id"] for event in default}
    shown = google.get(EVENTS, params={"maxResults": 2500, "showDeleted": "true"}).json()["items"]
    cancelled = [event for event in shown if event["status"] == "cancelled"]
    assert [event["id"] for event in cancelled] == ["ev00000003"]


def test_updated_min_returns_exactly_the_changes_including_deletions(google: ServedGoogle) -> None:
    emulator = google.emulator
    google.clock.advance(600)
    since = datetime.fromtimestamp(google.clock.now, UTC)
    google.clock.advance(60)
    created = emulator.create_event(
        summary="Board meeting", start=datetime(2026, 9, 9, 15, tzinfo=UTC), end=datetime(2026, 9, 9, 16, tzinfo=UTC)
    )
    emulator.update_event("ev00000010", summary="Renamed")
    emulator.delete_event("ev00000011")
    changed = google.get(EVENTS, params={"updatedMin": rfc3339(since), "maxResults": 2500}).json()["items"]
    assert sorted(event["id"] for event in changed) == sorted([created, "ev00000010", "ev00000011"])
    assert {event["id"]: event["status"] for event in changed}["ev00000011"] == "cancelled"


def test_updated_min_before_what_calendar_remembers_is_410(google: ServedGoogle) -> None:
    before = rfc3339(datetime.fromtimestamp(google.clock.now - 60, UTC))
    assert google.get(EVENTS, params={"updatedMin": before}).status_code == 200
    google.emulator.expire_sync_tokens()
    assert_google_error(google.get(EVENTS, params={"updatedMin": before}), 410, "updatedMinTooLongAgo")
    google.clock.advance(60)
    later = rfc3339(datetime.fromtimestamp(google.clock.now, UTC))
    assert google.get(EVENTS, params={"updatedMin": later}).status_code == 200


def test_a_calendar_sync_round_pages_through_changes_then_goes_quiet(google: ServedGoogle) -> None:
    emulator = google.emulator
    _, pages = list_all(google, EVENTS, "items", maxResults=2500, singleEvents="true")
    sync_token = pages[-1]["nextSyncToken"]
    google.clock.advance(30)
    first = emulator.create_event(summary="Offsite", start=date(2026, 9, 15), end=date(2026, 9, 17))
    emulator.update_event("ev00000001", location="Room Hopper")
    emulator.delete_event("ev00000002")
    changes, sync_pages = list_all(google, EVENTS, "items", syncToken=sync_token, maxResults=2, singleEvents="true")
    assert [event["id"] for event in changes] == [first, "ev00000001", "ev00000002"]
    assert [event["status"] for event in changes] == ["confirmed", "confirmed", "cancelled"]
    assert changes[0]["start"] == {"date": "2026-09-15"} and changes[0]["end"] == {"date": "2026-09-17"}
    current = {event["id"]: event for event in emulator.event_records()}
    assert changes == [current[event["id"]] for event in changes]
    assert len(sync_pages) == 2 and "nextSyncToken" in sync_pages[-1]
    quiet, _ = list_all(google, EVENTS, "items", syncToken=sync_pages[-1]["nextSyncToken"])
    assert quiet == []
