"""The Microsoft Graph emulator over raw HTTP: Entra OAuth edge cases, delta paging and cursors, throttling and
Graph's error shapes.

Expected values come from `*_records()` (the emulator's truth as plain dicts) and from mutations made here, never
from the emulator's own delta bookkeeping, so a wrong page, token or removal makes these tests fail. The serving
helpers here are shared with the SDK and connector tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from integrations_pipeline.httpserver import BackgroundServer
from integrations_pipeline.sandbox.microsoft import MicrosoftEmulator
from integrations_pipeline_tests.sandbox.conftest import ManualClock, pkce_pair

CLIENT_ID = "sandbox-graph-client"
CLIENT_SECRET = "sandbox-graph-secret"
REDIRECT_URI = "http://127.0.0.1:9/oauth/callback"
AUTHORIZE = "/common/oauth2/v2.0/authorize"
TOKEN = "/common/oauth2/v2.0/token"
ALL_SCOPES = "offline_access User.Read User.Read.All Contacts.Read Calendars.Read"
USERS_DELTA = "/v1.0/users/delta()"
CONTACTS_DELTA = "/v1.0/me/contacts/delta()"
EVENTS_DELTA = "/v1.0/me/calendarView/delta()"
SMALL: dict[str, Any] = {"users": 12, "contacts": 40, "events": 60}


@dataclass
class ServedMicrosoft:
    emulator: MicrosoftEmulator
    url: str
    clock: ManualClock
    http: httpx.Client
    tokens: dict[str, Any] = field(default_factory=dict)

    def get(self, path: str, *, access_token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {access_token or self.tokens['access_token']}"}
        headers |= kwargs.pop("headers", {})
        return self.http.get(path, headers=headers, **kwargs)

    def delta_round(
        self, start: str, *, params: dict[str, str] | None = None, page_size: int | None = None
    ) -> tuple[list[dict[str, Any]], str, int]:
        """Follow one delta round to its end: (items, delta link, pages)."""
        headers = {"Prefer": f"odata.maxpagesize={page_size}"} if page_size else {}
        items: list[dict[str, Any]] = []
        url: str | None = start
        pages = 0
        while url:
            response = self.get(url, params=params if pages == 0 else None, headers=headers)
            assert response.status_code == 200, response.text
            body = response.json()
            pages += 1
            items.extend(body["value"])
            if page_size:
                assert len(body["value"]) <= page_size
            if "@odata.deltaLink" in body:
                assert "@odata.nextLink" not in body
                return items, body["@odata.deltaLink"], pages
            url = body["@odata.nextLink"]
            assert url.startswith(self.url + start.split("?")[0]) and "$skiptoken=" in url
        raise AssertionError("unreachable")


def authorize(
    http: httpx.Client, *, scope: str = ALL_SCOPES, state: str = "state-123", code_challenge: str | None = None
) -> str:
    params = {
        "client_id": CLIENT_ID,
        "response_type": "code",
        "redirect_uri": REDIRECT_URI,
        "scope": scope,
        "state": state,
    }
    if code_challenge is not None:
        params |= {"code_challenge": code_challenge, "code_challenge_method": "S256"}
    response = http.get(AUTHORIZE, params=params, follow_redirects=False)
    assert response.status_code == 302, response.text
    location = httpx.URL(response.headers["location"])
    assert str(location.copy_with(query=None)) == REDIRECT_URI
    assert location.params["state"] == state
    return location.params["code"]


def exchange_code(http: httpx.Client, code: str, **overrides: str) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uri": REDIRECT_URI,
        "code": code,
    } | overrides
    return http.post(TOKEN, data=form)


def refresh(http: httpx.Client, refresh_token: str) -> httpx.Response:
    form = {
        "grant_type": "refresh_token",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": refresh_token,
    }
    return http.post(TOKEN, data=form)


def run_code_flow(http: httpx.Client, *, scope: str = ALL_SCOPES) -> dict[str, Any]:
    verifier, challenge = pkce_pair()
    response = exchange_code(http, authorize(http, scope=scope, code_challenge=challenge), code_verifier=verifier)
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


@contextmanager
def serve_microsoft(clock: ManualClock, **options: Any) -> Iterator[ServedMicrosoft]:
    """A fresh small tenant (throttling off unless asked) with tokens for every scope already obtained."""
    emulator = MicrosoftEmulator(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        clock=clock,
        **({"requests_per_window": None} | SMALL | options),
    )
    with BackgroundServer(emulator.app) as server, httpx.Client(base_url=server.url, timeout=30.0) as http:
        served = ServedMicrosoft(emulator, server.url, clock, http)
        served.tokens = run_code_flow(http)
        yield served


@pytest.fixture
def graph(clock: ManualClock) -> Iterator[ServedMicrosoft]:
    with serve_microsoft(clock) as served:
        yield served


def assert_graph_error(response: httpx.Response, status_code: int, code: str) -> dict[str, Any]:
    assert response.status_code == status_code, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert set(error["innerError"]) >= {"date", "request-id"}
    return error


def assert_aad_error(response: httpx.Response, status_code: int, error: str, aadsts: int) -> None:
    assert response.status_code == status_code, response.text
    body = response.json()
    assert body["error"] == error
    assert body["error_description"].startswith(f"AADSTS{aadsts}: ")
    assert body["error_codes"] == [aadsts]
    assert all(value is not None for value in body.values())


def day_view(day: datetime) -> dict[str, str]:
    return {
        "startDateTime": day.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "endDateTime": (day + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def event_bounds(record: dict[str, Any]) -> tuple[datetime, datetime]:
    start = datetime.fromisoformat(record["start"]["dateTime"][:26]).replace(tzinfo=UTC)
    end = datetime.fromisoformat(record["end"]["dateTime"][:26]).replace(tzinfo=UTC)
    return start, end


# --- data -----------------------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_records_and_another_seed_does_not() -> None:
    def build(seed: int) -> MicrosoftEmulator:
        return MicrosoftEmulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, seed=seed, **SMALL)

    first, again, other = build(3), build(3), build(4)
    assert first.user_records() == again.user_records() and first.contact_records() == again.contact_records()
    assert first.event_records() == again.event_records()
    assert first.contact_records() != other.contact_records() and first.user_records() != other.user_records()


def test_hundred_thousand_contacts_build_and_page(clock: ManualClock) -> None:
    emulator = MicrosoftEmulator(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, contacts=100_000, events=10, clock=clock
    )
    with BackgroundServer(emulator.app) as server, httpx.Client(base_url=server.url) as http:
        served = ServedMicrosoft(emulator, server.url, clock, http, run_code_flow(http))
        first = served.get(CONTACTS_DELTA, headers={"Prefer": "odata.maxpagesize=999"})
        second = served.get(first.json()["@odata.nextLink"], headers={"Prefer": "odata.maxpagesize=999"})
    assert len(first.json()["value"]) == len(second.json()["value"]) == 999


# --- OAuth ----------------------------------------------------------------------------------------------------------


def test_token_response_has_no_nulls_and_only_offline_access_brings_a_refresh_token(graph: ServedMicrosoft) -> None:
    tokens = graph.tokens
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == tokens["ext_expires_in"] == 3599
    assert tokens["refresh_token"] and all(value is not None for value in tokens.values())
    assert tokens["scope"].split() == ["User.Read", "User.Read.All", "Contacts.Read", "Calendars.Read"]
    without_offline = run_code_flow(graph.http, scope="https://graph.microsoft.com/Contacts.Read")
    assert "refresh_token" not in without_offline and without_offline["scope"] == "Contacts.Read"


def test_state_is_echoed_verbatim_and_bad_authorize_requests_are_refused(graph: ServedMicrosoft) -> None:
    state = "a b&c=d/é"
    authorize(graph.http, state=state)
    unknown = graph.http.get(AUTHORIZE, params={"client_id": "nobody", "redirect_uri": REDIRECT_URI})
    assert unknown.status_code == 400 and "AADSTS700016" in unknown.text
    wrong_type = graph.http.get(
        AUTHORIZE,
        params={"client_id": CLIENT_ID, "redirect_uri": REDIRECT_URI, "response_type": "token", "scope": "x"},
    )
    assert httpx.URL(wrong_type.headers["location"]).params["error"] == "unsupported_response_type"


def test_pkce_verifier_must_match_and_codes_are_single_use(graph: ServedMicrosoft) -> None:
    verifier, challenge = pkce_pair()
    code = authorize(graph.http, code_challenge=challenge)
    assert_aad_error(exchange_code(graph.http, code, code_verifier=verifier + "x"), 400, "invalid_grant", 501481)
    assert_aad_error(exchange_code(graph.http, code, code_verifier=verifier), 400, "invalid_grant", 70000)
    code = authorize(graph.http, code_challenge=challenge)
    assert exchange_code(graph.http, code, code_verifier=verifier).status_code == 200
    assert_aad_error(exchange_code(graph.http, code, code_verifier=verifier), 400, "invalid_grant", 70000)


def test_code_expires_after_ten_minutes_and_redirect_uri_must_match(graph: ServedMicrosoft) -> None:
    code = authorize(graph.http)
    graph.clock.advance(601)
    assert_aad_error(exchange_code(graph.http, code), 400, "invalid_grant", 70000)
    code = authorize(graph.http)
    assert_aad_error(exchange_code(graph.http, code, redirect_uri=REDIRECT_URI + "/x"), 400, "invalid_grant", 70000)


def test_client_errors_use_entra_codes(graph: ServedMicrosoft) -> None:
    code = authorize(graph.http)
    assert_aad_error(exchange_code(graph.http, code, client_secret="wrong"), 401, "invalid_client", 7000215)
    assert_aad_error(exchange_code(graph.http, code, client_id="nobody"), 400, "unauthorized_client", 700016)
    assert_aad_error(graph.http.post(TOKEN, data={"client_id": CLIENT_ID}), 400, "invalid_request", 900144)
    assert_aad_error(
        graph.http.post(TOKEN, data={"grant_type": "password", "client_id": CLIENT_ID}),
        400,
        "unsupported_grant_type",
        70003,
    )
    assert graph.emulator.token_requests("authorization_code") == 3  # the fixture's flow and two failures


def test_refresh_tokens_rotate_and_a_redeemed_one_is_refused(graph: ServedMicrosoft) -> None:
    first = graph.tokens["refresh_token"]
    rotated = refresh(graph.http, first)
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()["refresh_token"]
    assert second != first and rotated.json()["access_token"] != graph.tokens["access_token"]
    assert_aad_error(refresh(graph.http, first), 400, "invalid_grant", 70000)
    assert refresh(graph.http, second).status_code == 200
    graph.emulator.revoke_refresh_tokens()
    assert_aad_error(refresh(graph.http, rotated.json()["refresh_token"]), 400, "invalid_grant", 70000)
    issued = graph.emulator.issued_tokens()
    assert {first, second, graph.tokens["access_token"]} <= issued


def test_client_secret_may_come_as_http_basic(graph: ServedMicrosoft) -> None:
    form = {"grant_type": "refresh_token", "refresh_token": graph.tokens["refresh_token"]}
    response = graph.http.post(TOKEN, data=form, auth=(CLIENT_ID, CLIENT_SECRET))
    assert response.status_code == 200, response.text


# --- authentication and errors ------------------------------------------------------------------------------------


def test_missing_expired_and_unknown_tokens_get_401_invalid_authentication_token(graph: ServedMicrosoft) -> None:
    missing = graph.http.get(USERS_DELTA)
    assert assert_graph_error(missing, 401, "InvalidAuthenticationToken")["message"] == "Access token is empty."
    assert missing.headers["WWW-Authenticate"].startswith("Bearer ")
    assert_graph_error(graph.get(USERS_DELTA, access_token="not-a-token"), 401, "InvalidAuthenticationToken")
    graph.clock.advance(3600)
    expired = graph.get(USERS_DELTA)
    assert "expired" in assert_graph_error(expired, 401, "InvalidAuthenticationToken")["message"]


def test_expire_access_tokens_knob(graph: ServedMicrosoft) -> None:
    assert graph.get(USERS_DELTA).status_code == 200
    graph.emulator.expire_access_tokens()
    assert_graph_error(graph.get(USERS_DELTA), 401, "InvalidAuthenticationToken")


def test_scopes_are_enforced_per_resource(graph: ServedMicrosoft) -> None:
    contacts_only = run_code_flow(graph.http, scope="offline_access Contacts.Read")["access_token"]
    assert graph.get(CONTACTS_DELTA, access_token=contacts_only).status_code == 200
    assert_graph_error(graph.get(USERS_DELTA, access_token=contacts_only), 403, "Authorization_RequestDenied")
    assert_graph_error(
        graph.get(EVENTS_DELTA, access_token=contacts_only, params=day_view(datetime(2026, 6, 3, tzinfo=UTC))),
        403,
        "ErrorAccessDenied",
    )


def test_another_users_contacts_are_denied_and_own_id_works(graph: ServedMicrosoft) -> None:
    other = graph.emulator.user_records()[1]["id"]
    assert_graph_error(graph.get(f"/v1.0/users/{other}/contacts/delta()"), 403, "ErrorAccessDenied")
    own = graph.get(f"/v1.0/users/{graph.emulator.me_id}/contacts/delta()")
    assert own.status_code == 200 and len(own.json()["value"]) == 10


def test_unknown_segment_is_graphs_bad_request(graph: ServedMicrosoft) -> None:
    assert_graph_error(graph.get("/v1.0/users/nothing/here"), 400, "BadRequest")


def test_me_describes_the_signed_in_user(graph: ServedMicrosoft) -> None:
    me = graph.get("/v1.0/me").json()
    truth = graph.emulator.user_records()[0]
    assert me["id"] == graph.emulator.me_id == truth["id"]
    assert me["userPrincipalName"] == truth["userPrincipalName"] and "accountEnabled" not in me


# --- delta paging and cursors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("function", ["delta()", "delta", "microsoft.graph.delta()"])
def test_users_delta_pages_every_user_once_and_links_echo_the_function_form(
    graph: ServedMicrosoft, function: str
) -> None:
    path = f"/v1.0/users/{function}"
    items, delta_link, pages = graph.delta_round(path, page_size=5)
    assert [item["id"] for item in items] == [record["id"] for record in graph.emulator.user_records()]
    assert pages == 3 and delta_link.startswith(f"{graph.url}{path}?$deltatoken=")
    # Without $select Graph sends its default property set, which lacks accountEnabled and createdDateTime.
    assert "accountEnabled" not in items[0] and items[0]["userPrincipalName"]


def test_prefer_maxpagesize_is_applied_and_reported(graph: ServedMicrosoft) -> None:
    response = graph.get(CONTACTS_DELTA, headers={"Prefer": 'odata.maxpagesize=7, outlook.timezone="UTC"'})
    assert response.headers["Preference-Applied"] == "odata.maxpagesize=7"
    assert len(response.json()["value"]) == 7
    default = graph.get(CONTACTS_DELTA)
    assert len(default.json()["value"]) == 10 and "Preference-Applied" not in default.headers
    assert_graph_error(graph.get(CONTACTS_DELTA, headers={"Prefer": "odata.maxpagesize=zero"}), 400, "BadRequest")


def test_select_is_carried_by_the_tokens(graph: ServedMicrosoft) -> None:
    items, delta_link, _ = graph.delta_round(USERS_DELTA, params={"$select": "id,mail,accountEnabled"}, page_size=4)
    assert all(set(item) == {"id", "mail", "accountEnabled"} for item in items)
    user_id = items[2]["id"]
    graph.emulator.update_user(user_id, accountEnabled=False)
    changes, _, _ = graph.delta_round(delta_link)
    assert changes == [{"id": user_id, "mail": items[2]["mail"], "accountEnabled": False}]
    unknown = graph.get(USERS_DELTA, params={"$select": "id,favouriteColour"})
    assert_graph_error(unknown, 400, "Request_BadRequest")
    directory = graph.delta_round(USERS_DELTA, params={"$select": "id,department,employeeId,city"}, page_size=50)[0]
    assert all(item["department"] and item["employeeId"] and item["city"] is None for item in directory)
    contacts, _, _ = graph.delta_round(CONTACTS_DELTA, params={"$select": "id,department,personalNotes"})
    assert contacts and all(set(item) == {"id", "@odata.etag", "department", "personalNotes"} for item in contacts)
    assert_graph_error(graph.get(CONTACTS_DELTA, params={"$select": "id,shoeSize"}), 400, "RequestBroker--ParseUri")


def test_contacts_delta_link_returns_exactly_the_changes_and_removals(graph: ServedMicrosoft) -> None:
    items, delta_link, _ = graph.delta_round(CONTACTS_DELTA, page_size=15)
    assert items == graph.emulator.contact_records()
    graph.clock.advance(120)
    records = graph.emulator.contact_records()
    graph.emulator.update_contact(records[4]["id"], jobTitle="Chief Tester")
    graph.emulator.delete_contact(records[9]["id"])
    created = graph.emulator.create_contact(givenName="New", surname="Person", emailAddress="new@example.com")
    changes, next_link, pages = graph.delta_round(delta_link, page_size=15)
    assert pages == 1
    by_id = {record["id"]: record for record in graph.emulator.contact_records()}
    assert changes == [
        by_id[records[4]["id"]],
        {"id": records[9]["id"], "@removed": {"reason": "deleted"}},
        by_id[created],
    ]
    stamp = datetime.fromtimestamp(graph.clock.now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert by_id[created]["lastModifiedDateTime"] == by_id[records[4]["id"]]["lastModifiedDateTime"] == stamp
    assert by_id[records[4]["id"]]["jobTitle"] == "Chief Tester"
    assert graph.delta_round(next_link)[0] == []  # nothing changed since


def test_user_deletions_carry_changed_or_deleted_reasons(graph: ServedMicrosoft) -> None:
    _, delta_link, _ = graph.delta_round(USERS_DELTA)
    soft, hard = (record["id"] for record in graph.emulator.user_records()[3:5])
    graph.emulator.delete_user(soft)
    graph.emulator.delete_user(hard, permanently=True)
    changes, _, _ = graph.delta_round(delta_link)
    assert changes == [
        {"id": soft, "@removed": {"reason": "changed"}},
        {"id": hard, "@removed": {"reason": "deleted"}},
    ]


def test_stale_tokens_are_410_with_the_resource_family_code(graph: ServedMicrosoft) -> None:
    first_page = graph.get(USERS_DELTA, headers={"Prefer": "odata.maxpagesize=2"}).json()
    _, contacts_link, _ = graph.delta_round(CONTACTS_DELTA, page_size=50)
    _, users_link, _ = graph.delta_round(USERS_DELTA)
    graph.emulator.expire_sync_tokens()
    assert_graph_error(graph.get(users_link), 410, "resyncRequired")
    assert_graph_error(graph.get(first_page["@odata.nextLink"]), 410, "resyncRequired")
    assert_graph_error(graph.get(contacts_link), 410, "SyncStateNotFound")
    assert_graph_error(graph.get(CONTACTS_DELTA + "?$deltatoken=made-up"), 410, "SyncStateNotFound")


def test_delta_tokens_age_out_with_the_clock(clock: ManualClock) -> None:
    with serve_microsoft(clock, delta_token_ttl_s=3600) as graph:
        _, delta_link, _ = graph.delta_round(CONTACTS_DELTA, page_size=50)
        graph.clock.advance(1800)
        assert graph.get(delta_link).status_code == 200
        graph.clock.advance(1801)
        graph.tokens = refresh(graph.http, graph.tokens["refresh_token"]).json()
        assert_graph_error(graph.get(delta_link), 410, "SyncStateNotFound")


def test_deltatoken_latest_returns_no_items_and_a_working_link(graph: ServedMicrosoft) -> None:
    body = graph.get(CONTACTS_DELTA + "?$deltatoken=latest").json()
    assert body["value"] == [] and "@odata.deltaLink" in body
    graph.clock.advance(5)
    graph.emulator.update_contact(graph.emulator.contact_records()[0]["id"], companyName="Later Inc")
    assert [item["companyName"] for item in graph.delta_round(body["@odata.deltaLink"])[0]] == ["Later Inc"]


# --- calendar view --------------------------------------------------------------------------------------------------


def test_calendar_view_needs_a_window(graph: ServedMicrosoft) -> None:
    assert_graph_error(graph.get(EVENTS_DELTA), 400, "ErrorInvalidParameter")
    backwards = {"startDateTime": "2026-06-05T00:00:00Z", "endDateTime": "2026-06-04T00:00:00Z"}
    assert_graph_error(graph.get(EVENTS_DELTA, params=backwards), 400, "ErrorInvalidParameter")
    garbled = {"startDateTime": "yesterday", "endDateTime": "2026-06-04T00:00:00Z"}
    assert_graph_error(graph.get(EVENTS_DELTA, params=garbled), 400, "ErrorInvalidParameter")


def test_calendar_view_returns_exactly_the_events_overlapping_the_window(graph: ServedMicrosoft) -> None:
    day = datetime(2026, 6, 4, tzinfo=UTC)
    items, _, _ = graph.delta_round(EVENTS_DELTA, params=day_view(day), page_size=2)
    expected = [
        record["id"]
        for record in graph.emulator.event_records()
        if event_bounds(record)[0] < day + timedelta(days=1) and event_bounds(record)[1] > day
    ]
    assert expected and sorted(item["id"] for item in items) == sorted(expected)


def test_calendar_view_delta_reports_changes_inside_and_events_leaving_the_window(graph: ServedMicrosoft) -> None:
    day = datetime(2026, 6, 10, tzinfo=UTC)
    items, delta_link, _ = graph.delta_round(EVENTS_DELTA, params=day_view(day))
    inside = [item["id"] for item in items]
    assert len(inside) >= 2
    outside = next(r["id"] for r in graph.emulator.event_records() if event_bounds(r)[0] > day + timedelta(days=3))
    graph.clock.advance(60)
    graph.emulator.update_event(inside[0], subject="Renamed")
    graph.emulator.update_event(inside[1], start=day + timedelta(days=5), end=day + timedelta(days=5, hours=1))
    graph.emulator.update_event(outside, subject="Elsewhere")  # not in this view: must not appear
    added = graph.emulator.create_event(subject="Added", start=day + timedelta(hours=9), end=day + timedelta(hours=10))
    changes, _, _ = graph.delta_round(delta_link)
    assert [(change["id"], change.get("subject"), change.get("@removed")) for change in changes] == [
        (inside[0], "Renamed", None),
        (inside[1], None, {"reason": "deleted"}),
        (added, "Added", None),
    ]
    assert changes[0]["lastModifiedDateTime"].endswith("Z") and len(changes[0]["lastModifiedDateTime"]) == 28


# --- throttling -------------------------------------------------------------------------------------------------------


def test_forced_throttle_answers_429_with_retry_after_then_recovers(graph: ServedMicrosoft) -> None:
    graph.emulator.throttle_next(2, retry_after_s=7)
    for _ in range(2):
        throttled = graph.get(CONTACTS_DELTA)
        assert_graph_error(throttled, 429, "ApplicationThrottled")
        assert throttled.headers["Retry-After"] == "7"
    assert graph.get(CONTACTS_DELTA).status_code == 200


def test_sliding_window_limit_refuses_until_the_window_moves(clock: ManualClock) -> None:
    with serve_microsoft(clock, requests_per_window=3, rate_window_s=60) as graph:
        assert [graph.get(USERS_DELTA).status_code for _ in range(3)] == [200, 200, 200]
        refused = graph.get(USERS_DELTA)
        assert_graph_error(refused, 429, "TooManyRequests")
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        graph.clock.advance(61)
        assert graph.get(USERS_DELTA).status_code == 200
