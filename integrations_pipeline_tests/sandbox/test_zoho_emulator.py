"""The Zoho emulator over raw HTTP: OAuth (Zoho's 200-with-error wire format), record paging and its 2,000 limit,
page-token expiry, If-Modified-Since, deleted records, search criteria, scopes and API credits.

Expected values are computed from `contact_records()` / `event_records()` (plain dicts), never from the emulator's
own filtering, so a wrong filter, sort or cap makes these tests fail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from integrations_pipeline.httpserver import BackgroundServer
from integrations_pipeline.sandbox.zoho import ZohoEmulator
from integrations_pipeline_tests.sandbox.conftest import ManualClock, pkce_pair

CLIENT_ID = "1000.SANDBOXCLIENT"
CLIENT_SECRET = "sandbox-zoho-secret"
REDIRECT_URI = "http://127.0.0.1:9/oauth/callback"
ALL_SCOPES = "ZohoCRM.modules.ALL,ZohoCRM.users.READ,ZohoCRM.org.READ,ZohoSearch.securesearch.READ"
CONTACTS = "/crm/v8/Contacts"


class Served:
    def __init__(self, emulator: ZohoEmulator, url: str, http: httpx.Client) -> None:
        self.emulator, self.url, self.http = emulator, url, http
        self.tokens = run_code_flow(http)

    def get(self, path: str, *, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Zoho-oauthtoken {token or self.tokens['access_token']}"}
        headers |= kwargs.pop("headers", {})
        return self.http.get(path, headers=headers, **kwargs)


def authorize(
    http: httpx.Client, *, scope: str = ALL_SCOPES, offline: bool = True, challenge: str | None = None
) -> str:
    params = {
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "response_type": "code",
        "scope": scope,
        "state": "opaque/state+value",
    }
    if offline:
        params["access_type"] = "offline"
    if challenge:
        params |= {"code_challenge": challenge, "code_challenge_method": "S256"}
    response = http.get("/oauth/v2/auth", params=params)
    assert response.status_code == 302, response.text
    location = httpx.URL(response.headers["location"])
    assert location.params["state"] == "opaque/state+value"
    assert location.params["accounts-server"] == str(http.base_url).rstrip("/")
    return location.params["code"]


def token_call(http: httpx.Client, **form: str) -> httpx.Response:
    return http.post("/oauth/v2/token", data={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, **form})


def run_code_flow(http: httpx.Client, scope: str = ALL_SCOPES) -> dict[str, Any]:
    verifier, challenge = pkce_pair()
    code = authorize(http, scope=scope, challenge=challenge)
    response = token_call(
        http, grant_type="authorization_code", code=code, redirect_uri=REDIRECT_URI, code_verifier=verifier
    )
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    assert "error" not in body, body
    return body


@pytest.fixture
def zoho_factory(clock: ManualClock) -> Iterator[Callable[..., Served]]:
    with ExitStack() as stack:

        def build(**options: Any) -> Served:
            settings = {"contacts": 230, "events": 120, "users": 6} | options
            emulator = ZohoEmulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, clock=clock, **settings)
            server = stack.enter_context(BackgroundServer(emulator.app))
            http = stack.enter_context(httpx.Client(base_url=server.url, timeout=30))
            return Served(emulator, server.url, http)

        yield build


@pytest.fixture
def zoho(zoho_factory: Callable[..., Served]) -> Served:
    return zoho_factory()


def assert_zoho_error(response: httpx.Response, status_code: int, code: str) -> dict[str, Any]:
    assert response.status_code == status_code, response.text
    body: dict[str, Any] = response.json()
    assert (body["status"], body["code"]) == ("error", code)
    assert isinstance(body["details"], dict) and body["message"]
    return body


def page_through(zoho: Served, params: dict[str, Any], headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        response = zoho.get(CONTACTS, params=params | ({"page_token": token} if token else {}), headers=headers or {})
        if response.status_code in (204, 304):
            assert response.content == b""
            return records
        assert response.status_code == 200, response.text
        body = response.json()
        records.extend(body["data"])
        if not body["info"]["more_records"]:
            assert body["info"]["next_page_token"] is None
            return records
        token = body["info"]["next_page_token"]


def instant(iso: str) -> datetime:
    return datetime.fromisoformat(iso).astimezone(UTC)


# --- data -----------------------------------------------------------------------------------------------------------


def test_same_seed_gives_the_same_org_and_another_seed_does_not() -> None:
    def build(seed: int) -> ZohoEmulator:
        return ZohoEmulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, contacts=200, events=50, seed=seed)

    assert build(3).contact_records() == build(3).contact_records()
    assert build(3).event_records() == build(3).event_records()
    assert build(3).contact_records() != build(4).contact_records()


def test_one_hundred_thousand_contacts_build() -> None:
    emulator = ZohoEmulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, contacts=100_000, events=10)
    assert len(emulator.contact_records()) == 100_000


# --- OAuth ------------------------------------------------------------------------------------------------------------


def test_token_response_carries_api_domain_and_a_refresh_token_only_for_offline_access(zoho: Served) -> None:
    assert zoho.tokens["api_domain"] == zoho.url
    assert (zoho.tokens["token_type"], zoho.tokens["expires_in"]) == ("Bearer", 3600)
    assert zoho.tokens["refresh_token"] in zoho.emulator.issued_tokens()
    online = token_call(
        zoho.http, grant_type="authorization_code", code=authorize(zoho.http, offline=False), redirect_uri=REDIRECT_URI
    ).json()
    assert "access_token" in online and "refresh_token" not in online


def test_token_errors_are_http_200_with_zoho_error_codes(zoho: Served) -> None:
    verifier, challenge = pkce_pair()
    code = authorize(zoho.http, challenge=challenge)
    wrong_verifier = token_call(
        zoho.http, grant_type="authorization_code", code=code, redirect_uri=REDIRECT_URI, code_verifier=verifier + "x"
    )
    assert (wrong_verifier.status_code, wrong_verifier.json()) == (200, {"error": "invalid_code"})
    reused = token_call(
        zoho.http, grant_type="authorization_code", code=code, redirect_uri=REDIRECT_URI, code_verifier=verifier
    )
    assert reused.json() == {"error": "invalid_code"}  # burnt by the failed attempt
    bad_secret = zoho.http.post(
        "/oauth/v2/token",
        data={"grant_type": "refresh_token", "client_id": CLIENT_ID, "client_secret": "nope", "refresh_token": "x"},
    )
    assert bad_secret.json() == {"error": "invalid_client_secret"}
    assert token_call(zoho.http, grant_type="password").json() == {"error": "unsupported_grant_type"}


def test_refresh_does_not_rotate_and_a_revoked_refresh_token_answers_invalid_code(zoho: Served) -> None:
    refresh_token = zoho.tokens["refresh_token"]
    refreshed = token_call(zoho.http, grant_type="refresh_token", refresh_token=refresh_token).json()
    assert "refresh_token" not in refreshed and refreshed["access_token"] != zoho.tokens["access_token"]
    assert zoho.get(CONTACTS, token=refreshed["access_token"], params={"fields": "Email"}).status_code == 200
    revoked = zoho.http.post("/oauth/v2/token/revoke", data={"token": refresh_token})
    assert revoked.json() == {"status": "success"}
    again = token_call(zoho.http, grant_type="refresh_token", refresh_token=refresh_token)
    assert (again.status_code, again.json()) == (200, {"error": "invalid_code"})
    assert zoho.emulator.token_requests("refresh_token") == 2


def test_data_calls_need_a_live_zoho_oauthtoken_with_the_right_scope(zoho: Served, clock: ManualClock) -> None:
    assert_zoho_error(zoho.http.get(CONTACTS, params={"fields": "Email"}), 401, "AUTHENTICATION_FAILURE")
    bearer = zoho.http.get(
        CONTACTS, params={"fields": "Email"}, headers={"Authorization": f"Bearer {zoho.tokens['access_token']}"}
    )
    assert_zoho_error(bearer, 401, "AUTHENTICATION_FAILURE")
    narrow = run_code_flow(zoho.http, scope="ZohoCRM.modules.contacts.READ")
    assert zoho.get(CONTACTS, token=narrow["access_token"], params={"fields": "Email"}).status_code == 200
    search = zoho.get("/crm/v8/Contacts/search", token=narrow["access_token"], params={"criteria": "(Email:equals:x)"})
    assert_zoho_error(search, 401, "OAUTH_SCOPE_MISMATCH")
    assert_zoho_error(zoho.get("/crm/v8/Events", token=narrow["access_token"], params={"fields": "Venue"}), 401,
                      "OAUTH_SCOPE_MISMATCH")  # fmt: skip
    clock.advance(3600)
    assert_zoho_error(zoho.get(CONTACTS, params={"fields": "Email"}), 401, "INVALID_TOKEN")


# --- records ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({}, "REQUIRED_PARAM_MISSING"),
        ({"fields": "Email", "per_page": "201"}, "INVALID_DATA"),
        ({"fields": "Email", "per_page": "0"}, "INVALID_DATA"),
        ({"fields": "Email,Shoe_Size"}, "INVALID_DATA"),
        ({"fields": "Email", "sort_by": "Email"}, "INVALID_DATA"),
        ({"fields": "Email", "page": "1", "page_token": "abc"}, "INVALID_DATA"),
    ],
)
def test_get_records_rejects_what_zoho_rejects(zoho: Served, params: dict[str, str], code: str) -> None:
    body = assert_zoho_error(zoho.get(CONTACTS, params=params), 400, code)
    if code == "REQUIRED_PARAM_MISSING":
        assert body["details"] == {"param_name": "fields"}


def test_page_alone_stops_at_record_2000_and_page_tokens_go_further(zoho_factory: Callable[..., Served]) -> None:
    zoho = zoho_factory(contacts=2_150)
    last_page = zoho.get(CONTACTS, params={"fields": "Email", "page": "10"}).json()
    assert last_page["info"]["more_records"] is True and len(last_page["data"]) == 200
    body = assert_zoho_error(zoho.get(CONTACTS, params={"fields": "Email", "page": "11"}), 400,
                             "DISCRETE_PAGINATION_LIMIT_EXCEEDED")  # fmt: skip
    assert body["details"] == {"limit": 2000}
    records = page_through(zoho, {"fields": "Email", "sort_by": "id"})
    assert [record["id"] for record in records] == [item["id"] for item in zoho.emulator.contact_records()]


def test_sorting_by_modified_time_and_fields_selection(zoho: Served) -> None:
    records = page_through(zoho, {"fields": "Email,Modified_Time", "sort_by": "Modified_Time", "sort_order": "asc"})
    expected = sorted(
        zoho.emulator.contact_records(), key=lambda item: (instant(item["Modified_Time"]), int(item["id"]))
    )
    assert [record["id"] for record in records] == [item["id"] for item in expected]
    assert set(records[0]) == {"Email", "Modified_Time", "id"}
    assert records[0]["Modified_Time"].endswith("+05:30")


def test_an_expired_page_token_answers_expired_value(zoho_factory: Callable[..., Served], clock: ManualClock) -> None:
    zoho = zoho_factory(access_token_ttl_s=10 * 86_400)  # outlive the page tokens
    first = zoho.get(CONTACTS, params={"fields": "Email", "per_page": "100"}).json()
    token = first["info"]["next_page_token"]
    assert instant(first["info"]["page_token_expiry"]) > datetime.now(UTC)
    assert zoho.get(CONTACTS, params={"fields": "Email", "page_token": token}).status_code == 200
    zoho.emulator.expire_page_tokens()
    body = assert_zoho_error(zoho.get(CONTACTS, params={"fields": "Email", "page_token": token}), 400, "EXPIRED_VALUE")
    assert body["details"] == {"param_name": "page_token"}
    fresh = zoho.get(CONTACTS, params={"fields": "Email", "per_page": "100"}).json()["info"]["next_page_token"]
    clock.advance(86_400)
    assert_zoho_error(zoho.get(CONTACTS, params={"fields": "Email", "page_token": fresh}), 400, "EXPIRED_VALUE")


def test_if_modified_since_returns_only_changes_and_304_when_none(zoho: Served, clock: ManualClock) -> None:
    since = datetime.fromtimestamp(clock(), UTC).replace(microsecond=0)
    header = {"If-Modified-Since": since.isoformat()}
    nothing = zoho.get(CONTACTS, params={"fields": "Email"}, headers=header)
    assert (nothing.status_code, nothing.content) == (304, b"")
    clock.advance(10)
    ids = [item["id"] for item in zoho.emulator.contact_records()]
    zoho.emulator.update_contact(ids[3], {"Title": "CFO"})
    created = zoho.emulator.create_contact({"Last_Name": "New", "Email": "new@example.com"})
    changed = page_through(zoho, {"fields": "Title,Email", "sort_by": "Modified_Time"}, header)
    assert [(record["id"], record["Title"]) for record in changed] == [(ids[3], "CFO"), (created, None)]


def test_deleted_records_list_with_deleted_time(zoho: Served, clock: ManualClock) -> None:
    assert zoho.get(f"{CONTACTS}/deleted", params={"type": "all"}).status_code == 204
    ids = [item["id"] for item in zoho.emulator.contact_records()]
    clock.advance(5)
    zoho.emulator.delete_contact(ids[10])
    clock.advance(5)
    zoho.emulator.delete_contact(ids[0])
    body = zoho.get(f"{CONTACTS}/deleted", params={"type": "all"}).json()
    assert [record["id"] for record in body["data"]] == [ids[10], ids[0]]
    assert [instant(record["deleted_time"]).timestamp() for record in body["data"]] == [int(clock()) - 5, int(clock())]
    assert body["info"]["more_records"] is False
    assert ids[10] not in {record["id"] for record in page_through(zoho, {"fields": "Email"})}
    assert_zoho_error(zoho.get(f"{CONTACTS}/deleted", params={"type": "gone"}), 400, "INVALID_DATA")


# --- search, users, credits ------------------------------------------------------------------------------------------


def test_search_between_returns_exactly_the_events_starting_in_the_range(zoho: Served) -> None:
    low, high = "2025-06-10T00:00:00+00:00", "2025-06-12T11:59:59+00:00"
    response = zoho.get("/crm/v8/Events/search", params={"criteria": f"(Start_DateTime:between:{low},{high})"})
    found = sorted(record["id"] for record in response.json()["data"])
    expected = sorted(
        item["id"]
        for item in zoho.emulator.event_records()
        if instant(low) <= instant(item["Start_DateTime"]) <= instant(high)
    )
    assert found == expected and expected


def test_search_criteria_combine_and_bad_criteria_are_invalid_query(zoho: Served) -> None:
    events = zoho.emulator.event_records()
    title = events[4]["Event_Title"]
    criteria = f"((Event_Title:equals:{title})and(Start_DateTime:greater_equal:2025-01-01T00:00:00+00:00))"
    found = zoho.get("/crm/v8/Events/search", params={"criteria": criteria}).json()["data"]
    assert [record["id"] for record in found] == [events[4]["id"]]
    for bad in ("Start_DateTime:between:x", "(Nope:equals:1)", "(Start_DateTime:starts_with:2025)"):
        assert_zoho_error(zoho.get("/crm/v8/Events/search", params={"criteria": bad}), 400, "INVALID_QUERY")
    assert zoho.get("/crm/v8/Events/search", params={"criteria": "(Venue:equals:Mars)"}).status_code == 204


def test_users_by_type_and_fields_metadata(zoho: Served) -> None:
    users = zoho.emulator.user_records()
    zoho.emulator.delete_user(users[2]["id"])
    active = zoho.get("/crm/v8/users", params={"type": "ActiveUsers"}).json()["users"]
    assert [user["id"] for user in active] == [
        u["id"] for u in users if u["status"] == "active" and u["id"] != users[2]["id"]
    ]
    deleted = zoho.get("/crm/v8/users", params={"type": "DeletedUsers"}).json()["users"]
    assert [user["id"] for user in deleted] == [users[2]["id"]]
    current = zoho.get("/crm/v8/users", params={"type": "CurrentUser"}).json()["users"]
    assert [user["id"] for user in current] == [users[0]["id"]]
    assert_zoho_error(zoho.get("/crm/v8/users", params={"type": "Robots"}), 400, "INVALID_DATA")


def test_daily_credits_run_out_with_too_many_requests_and_come_back_next_day(
    zoho_factory: Callable[..., Served], clock: ManualClock
) -> None:
    zoho = zoho_factory(daily_credits=3, access_token_ttl_s=10 * 86_400)
    statuses = [zoho.get(CONTACTS, params={"fields": "Email", "per_page": "1"}).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert_zoho_error(zoho.get(CONTACTS, params={"fields": "Email"}), 429, "TOO_MANY_REQUESTS")
    assert zoho.emulator.credits_used() == 3
    clock.advance(86_400)
    response = zoho.get(CONTACTS, params={"fields": "Email", "per_page": "1"})
    assert (response.status_code, response.headers["X-RATELIMIT-REMAINING"]) == (200, "2")


def test_custom_fields_are_described_selected_by_name_added_and_removed_at_run_time(zoho: Served) -> None:
    metadata_token = run_code_flow(zoho.http, scope="ZohoCRM.settings.fields.READ")["access_token"]

    def described() -> dict[str, dict[str, Any]]:
        answer = zoho.get("/crm/v8/settings/fields", token=metadata_token, params={"module": "Contacts"})
        return {field["api_name"]: field for field in answer.json()["fields"]}

    assert described()["Lead_Score"]["custom_field"] and not described()["Email"]["custom_field"]
    zoho.emulator.add_custom_field("Contacts", "Churn_Risk", "double")
    assert described()["Churn_Risk"]["data_type"] == "double"
    records = page_through(zoho, {"fields": "Churn_Risk,Lead_Score"})
    assert len(records) == 230 and all(set(record) == {"Churn_Risk", "Lead_Score", "id"} for record in records)
    ids = [record["id"] for record in records[:3]]
    by_id = zoho.get(CONTACTS, params={"ids": ",".join(reversed(ids)), "fields": "Churn_Risk"}).json()
    assert [record["id"] for record in by_id["data"]] == list(reversed(ids))
    assert [record["Churn_Risk"] for record in by_id["data"]] == [
        record["Churn_Risk"] for record in reversed(records[:3])
    ]

    too_many_ids = ",".join(str(number) for number in range(101))
    assert_zoho_error(zoho.get(CONTACTS, params={"ids": too_many_ids, "fields": "Email"}), 400, "LIMIT_EXCEEDED")
    too_many_fields = ",".join(f"Survey_{number}" for number in range(51))
    assert_zoho_error(zoho.get(CONTACTS, params={"fields": too_many_fields}), 400, "LIMIT_EXCEEDED")
    zoho.emulator.remove_custom_field("Contacts", "Churn_Risk")
    refused = assert_zoho_error(zoho.get(CONTACTS, params={"fields": "Email,Churn_Risk"}), 400, "INVALID_DATA")
    assert refused["details"] == {"api_name": "Churn_Risk", "param_name": "fields"}
