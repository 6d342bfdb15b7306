"""The HubSpot emulator over raw HTTP: validation, paging, search, limits, OAuth and mutations.

Expected values are computed independently from `contact_records()` (plain dicts), never from the emulator's
own filtering code, so a wrong filter, cursor or cap in the emulator makes these tests fail.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from oauthlib.oauth2 import InvalidGrantError, WebApplicationClient

from integrations_pipeline.sandbox import EMULATORS
from integrations_pipeline.sandbox.hubspot import HubSpotEmulator
from integrations_pipeline_tests.sandbox.conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    READ_SCOPE,
    REDIRECT_URI,
    SMALL_PORTAL_SIZE,
    ManualClock,
    ServedHubSpot,
    authorize,
    exchange_code,
    pkce_pair,
    refresh,
    run_code_flow,
)

CONTACTS = "/crm/v3/objects/contacts"
SEARCH = f"{CONTACTS}/search"
RATE_LIMIT_HEADERS = (
    "X-HubSpot-RateLimit-Max",
    "X-HubSpot-RateLimit-Remaining",
    "X-HubSpot-RateLimit-Interval-Milliseconds",
    "X-HubSpot-RateLimit-Daily",
    "X-HubSpot-RateLimit-Daily-Remaining",
)


def epoch_ms(iso_timestamp: str) -> int:
    return int(datetime.fromisoformat(iso_timestamp).timestamp() * 1000)


def live_ids(hubspot: ServedHubSpot) -> list[str]:
    return [record["id"] for record in hubspot.emulator.contact_records(include_archived=False)]


def list_all(hubspot: ServedHubSpot, **params: Any) -> list[dict[str, Any]]:
    """Follow `paging.next.after` to the end, checking every page on the way."""
    results: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        response = hubspot.get(CONTACTS, params={**params, **({"after": after} if after else {})})
        assert response.status_code == 200, response.text
        page = response.json()
        results.extend(page["results"])
        if "paging" not in page:
            return results
        after = page["paging"]["next"]["after"]
        assert page["paging"]["next"]["link"].startswith(hubspot.url + CONTACTS)


def search_all(hubspot: ServedHubSpot, body: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    results: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        response = hubspot.post(SEARCH, json={**body, **({"after": after} if after else {})})
        assert response.status_code == 200, response.text
        page = response.json()
        results.extend(page["results"])
        if "paging" not in page:
            return page["total"], results
        after = page["paging"]["next"]["after"]


def assert_hubspot_error(response: httpx.Response, status_code: int, category: str) -> dict[str, Any]:
    assert response.status_code == status_code, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "error"
    assert body["category"] == category
    assert body["correlationId"]
    return body


def assert_oauth_error(response: httpx.Response, hubspot_status: str, rfc6749_error: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert (body["status"], body["error"]) == (hubspot_status, rfc6749_error)
    assert body["message"] == body["error_description"]
    assert body["correlationId"]


# --- generated data -------------------------------------------------------------------------------------------


def test_same_seed_and_size_give_identical_contacts_and_another_seed_does_not() -> None:
    def build(seed: int) -> HubSpotEmulator:
        return HubSpotEmulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, contacts=300, seed=seed)

    assert build(7).contact_records() == build(7).contact_records()
    assert build(7).contact_records() != build(8).contact_records()


def test_generated_contacts_are_plausible_and_in_the_past() -> None:
    records = HubSpotEmulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, contacts=1_000).contact_records()
    now_ms = epoch_ms(datetime.now(UTC).isoformat())
    assert [record["id"] for record in records] == [str(number) for number in range(1, 1_001)]
    assert len({record["properties"]["email"] for record in records}) == 1_000
    for record in records:
        properties = record["properties"]
        assert properties["hs_object_id"] == record["id"]
        assert properties["createdate"] == record["createdAt"] and properties["lastmodifieddate"] == record["updatedAt"]
        for stamp in (properties["createdate"], properties["lastmodifieddate"]):
            assert stamp.endswith("Z") and len(stamp) == len("2025-01-01T00:00:00.000Z")
            assert stamp[:4] in ("2025", "2026")
        created, modified = epoch_ms(properties["createdate"]), epoch_ms(properties["lastmodifieddate"])
        assert created <= modified < now_ms
        assert all(properties[name] for name in ("firstname", "lastname", "phone", "company", "jobtitle"))
        assert record["archived"] is False and record["archivedAt"] is None


def test_registry_maps_hubspot_to_the_emulator() -> None:
    assert EMULATORS["hubspot"] is HubSpotEmulator


# --- list endpoint ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["101", "0", "-1", "abc", "1.5"])
def test_list_rejects_a_limit_outside_1_to_100_or_not_an_integer(hubspot: ServedHubSpot, limit: str) -> None:
    assert_hubspot_error(hubspot.get(CONTACTS, params={"limit": limit}), 400, "VALIDATION_ERROR")


def test_list_defaults_to_ten_results_with_the_default_properties(hubspot: ServedHubSpot) -> None:
    page = hubspot.get(CONTACTS).json()
    assert [result["id"] for result in page["results"]] == [str(number) for number in range(1, 11)]
    assert set(page["results"][0]["properties"]) == {
        "firstname",
        "lastname",
        "email",
        "createdate",
        "lastmodifieddate",
        "hs_object_id",
    }
    assert page["paging"]["next"]["after"] == "11"


@pytest.mark.parametrize("archived", ["False", "false", "True", "true"])
def test_list_accepts_archived_in_either_case(hubspot: ServedHubSpot, archived: str) -> None:
    hubspot.emulator.archive_contact("3")
    response = hubspot.get(CONTACTS, params={"archived": archived, "limit": 100})
    assert response.status_code == 200, response.text
    ids = {result["id"] for result in response.json()["results"]}
    if archived.lower() == "true":
        assert ids == {"3"}
    else:
        assert "3" not in ids and len(ids) == 100


def test_list_rejects_an_archived_value_that_is_not_a_boolean(hubspot: ServedHubSpot) -> None:
    assert_hubspot_error(hubspot.get(CONTACTS, params={"archived": "maybe"}), 400, "VALIDATION_ERROR")


def test_properties_may_be_repeated_and_comma_separated_and_unknown_ones_are_omitted(hubspot: ServedHubSpot) -> None:
    params = httpx.QueryParams([("properties", "email,phone"), ("properties", "company"), ("properties", "no_such")])
    response = hubspot.get(CONTACTS, params=params.merge({"limit": 5}))
    expected = {record["id"]: record for record in hubspot.emulator.contact_records()[:5]}
    for result in response.json()["results"]:
        # HubSpot always adds createdate, hs_object_id and lastmodifieddate to what was asked for.
        wanted = ("email", "phone", "company", "createdate", "hs_object_id", "lastmodifieddate")
        assert result["properties"] == {name: expected[result["id"]]["properties"][name] for name in wanted}


def test_paging_visits_every_live_contact_exactly_once(hubspot: ServedHubSpot) -> None:
    for contact_id in ("1", "8", "9", "57", str(SMALL_PORTAL_SIZE)):
        hubspot.emulator.archive_contact(contact_id)
    visited = [result["id"] for result in list_all(hubspot, limit=7, archived="false")]
    assert len(visited) == len(set(visited)) == SMALL_PORTAL_SIZE - 5
    assert visited == live_ids(hubspot)
    assert all("archivedAt" not in result for result in list_all(hubspot, limit=100))


def test_archived_true_lists_only_archived_contacts_with_archived_at(hubspot: ServedHubSpot) -> None:
    hubspot.clock.advance(60)
    for contact_id in ("12", "4", "100"):
        hubspot.emulator.archive_contact(contact_id)
    archived = list_all(hubspot, archived="true", limit=2)
    assert [result["id"] for result in archived] == ["4", "12", "100"]
    expected_archived_at = datetime.fromtimestamp(hubspot.clock.now, UTC).isoformat(timespec="milliseconds")
    assert all(result["archived"] is True for result in archived)
    assert {result["archivedAt"] for result in archived} == {expected_archived_at.replace("+00:00", "Z")}


def test_get_by_id_and_unknown_id(hubspot: ServedHubSpot) -> None:
    record = hubspot.emulator.contact_records()[41]
    response = hubspot.get(f"{CONTACTS}/{record['id']}", params={"properties": "jobtitle"})
    assert response.json()["properties"]["jobtitle"] == record["properties"]["jobtitle"]
    assert_hubspot_error(hubspot.get(f"{CONTACTS}/999999"), 404, "OBJECT_NOT_FOUND")
    email = record["properties"]["email"]
    assert hubspot.get(f"{CONTACTS}/{email}", params={"idProperty": "email"}).json()["id"] == record["id"]


# --- search --------------------------------------------------------------------------------------------------------


def test_search_window_returns_exactly_the_contacts_modified_inside_it_in_order(hubspot: ServedHubSpot) -> None:
    records = hubspot.emulator.contact_records()
    hubspot.emulator.archive_contact(records[0]["id"])  # archived contacts never appear in search
    modified = sorted(epoch_ms(record["updatedAt"]) for record in records)
    window_start, window_end = modified[40], modified[160]
    expected = sorted(
        (
            (epoch_ms(record["updatedAt"]), int(record["id"]))
            for record in records[1:]
            if window_start <= epoch_ms(record["updatedAt"]) < window_end
        ),
    )
    start_iso = datetime.fromtimestamp(window_start / 1000, UTC).isoformat(timespec="milliseconds")
    body = {
        "filterGroups": [
            {
                "filters": [
                    {"propertyName": "lastmodifieddate", "operator": "GTE", "value": start_iso.replace("+00:00", "Z")},
                    {"propertyName": "lastmodifieddate", "operator": "LT", "value": str(window_end)},
                ]
            }
        ],
        "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
        "properties": ["lastmodifieddate"],
        "limit": 13,
    }
    total, results = search_all(hubspot, body)
    assert total == len(expected) == len(results)
    assert [int(result["id"]) for result in results] == [contact_id for _, contact_id in expected]


def test_search_groups_are_ored_ids_compare_numerically_and_plain_string_sorts_work(hubspot: ServedHubSpot) -> None:
    records = {record["id"]: record for record in hubspot.emulator.contact_records()}
    email_of_7 = records["7"]["properties"]["email"]
    body = {
        "filterGroups": [
            {"filters": [{"propertyName": "hs_object_id", "operator": "GT", "value": "225"}]},
            {"filters": [{"propertyName": "email", "operator": "EQ", "value": email_of_7.upper()}]},
        ],
        "sorts": ["hs_object_id"],
        "limit": 200,
    }
    total, results = search_all(hubspot, body)
    assert [result["id"] for result in results] == ["7", "226", "227", "228", "229", "230"]
    assert total == 6


def test_search_descending_sort_breaks_ties_by_id(hubspot: ServedHubSpot) -> None:
    stage = hubspot.emulator.contact_records()[0]["properties"]["lifecyclestage"]
    body = {
        "filterGroups": [{"filters": [{"propertyName": "lifecyclestage", "operator": "EQ", "value": stage}]}],
        "sorts": [{"propertyName": "lifecyclestage", "direction": "DESCENDING"}],
        "limit": 200,
    }
    _, results = search_all(hubspot, body)
    ids = [int(result["id"]) for result in results]
    assert ids == sorted(ids) and len(ids) > 1


@pytest.mark.parametrize(
    "body",
    [
        {"limit": 201},
        {"filterGroups": [{"filters": [{"propertyName": "email", "operator": "HAS_PROPERTY"}]}] * 6},
        {"filterGroups": [{"filters": [{"propertyName": "email", "operator": "HAS_PROPERTY"}] * 7}]},
        {"filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "GT", "value": "soon"}]}]},
        {"filterGroups": [{"filters": [{"propertyName": "no_such_property", "operator": "EQ", "value": "x"}]}]},
    ],
    ids=["limit-201", "six-groups", "seven-filters", "bad-date", "unknown-property"],
)
def test_search_rejects_requests_hubspot_rejects(hubspot: ServedHubSpot, body: dict[str, Any]) -> None:
    assert_hubspot_error(hubspot.post(SEARCH, json=body), 400, "VALIDATION_ERROR")


def test_search_cannot_page_past_10000_results_but_reports_the_true_total(
    hubspot_factory: Any,
) -> None:
    portal = hubspot_factory(contacts=10_500)
    window = {"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": "2025-01-01T00:00:00Z"}]}
    body = {"filterGroups": [window], "sorts": ["lastmodifieddate"], "limit": 200}

    last_allowed = portal.post(SEARCH, json={**body, "after": "9800"})
    assert last_allowed.status_code == 200, last_allowed.text
    assert last_allowed.json()["total"] == 10_500
    assert len(last_allowed.json()["results"]) == 200
    assert last_allowed.json()["paging"]["next"]["after"] == "10000"

    for after in ("10000", "9900"):
        error = assert_hubspot_error(portal.post(SEARCH, json={**body, "after": after}), 400, "VALIDATION_ERROR")
        assert "10000" in error["message"]


# --- rate limits ------------------------------------------------------------------------------------------------


def test_every_crm_response_carries_rate_limit_headers(hubspot: ServedHubSpot) -> None:
    responses = [
        hubspot.get(CONTACTS),
        hubspot.get(f"{CONTACTS}/1"),
        hubspot.get(f"{CONTACTS}/424242"),
        hubspot.post(SEARCH, json={}),
    ]
    for response in responses:
        assert all(header in response.headers for header in RATE_LIMIT_HEADERS), response.headers
        assert response.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert responses[-1].headers["X-HubSpot-RateLimit-Daily-Remaining"] == str(250_000 - len(responses))


def test_burst_limit_answers_429_with_retry_after_until_the_window_rolls(hubspot_factory: Any) -> None:
    portal: ServedHubSpot = hubspot_factory(burst_limit=3)
    remaining = [portal.get(CONTACTS).headers["X-HubSpot-RateLimit-Remaining"] for _ in range(3)]
    assert remaining == ["2", "1", "0"]

    refused = portal.get(CONTACTS)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "10"
    body = refused.json()
    assert (body["errorType"], body["policyName"]) == ("RATE_LIMIT", "TEN_SECONDLY_ROLLING")
    assert body["message"] == "You have reached your ten_secondly_rolling limit."

    portal.clock.advance(4)
    assert portal.get(CONTACTS).headers["Retry-After"] == "6"
    portal.clock.advance(6)
    assert portal.get(CONTACTS).status_code == 200


def test_disabled_burst_limit_never_refuses_but_still_reports_headers(hubspot: ServedHubSpot) -> None:
    statuses = {hubspot.get(CONTACTS, params={"limit": 1}).status_code for _ in range(150)}
    assert statuses == {200}
    assert hubspot.get(CONTACTS).headers["X-HubSpot-RateLimit-Max"] == "100"


def test_daily_limit_answers_429_daily(hubspot_factory: Any) -> None:
    portal: ServedHubSpot = hubspot_factory(daily_limit=2)
    assert [portal.get(CONTACTS).status_code for _ in range(2)] == [200, 200]
    refused = portal.get(CONTACTS)
    assert refused.status_code == 429 and refused.json()["policyName"] == "DAILY"
    assert int(refused.headers["Retry-After"]) > 0


# --- OAuth ------------------------------------------------------------------------------------------------------


def test_authorize_echoes_state_verbatim_and_refuses_unknown_clients(hubspot: ServedHubSpot) -> None:
    odd_state = "a b&c=d/é?"
    authorize(hubspot.http, state=odd_state)  # asserts the echoed state itself
    unknown = hubspot.http.get(
        "/oauth/authorize", params={"client_id": "someone-else", "redirect_uri": REDIRECT_URI, "scope": READ_SCOPE}
    )
    missing_redirect = hubspot.http.get("/oauth/authorize", params={"client_id": CLIENT_ID, "scope": READ_SCOPE})
    for response in (unknown, missing_redirect):
        assert response.status_code == 400 and "location" not in response.headers


def test_pkce_verifier_must_match_the_challenge(hubspot: ServedHubSpot) -> None:
    verifier, challenge = pkce_pair()
    wrong = exchange_code(hubspot.http, authorize(hubspot.http, code_challenge=challenge), code_verifier="x" * 50)
    assert_oauth_error(wrong, "BAD_CODE_VERIFIER", "invalid_grant")
    missing = exchange_code(hubspot.http, authorize(hubspot.http, code_challenge=challenge))
    assert_oauth_error(missing, "BAD_REQUEST", "invalid_request")
    right = exchange_code(hubspot.http, authorize(hubspot.http, code_challenge=challenge), code_verifier=verifier)
    assert right.status_code == 200


def test_an_authorization_code_works_once(hubspot: ServedHubSpot) -> None:
    code = authorize(hubspot.http)
    assert exchange_code(hubspot.http, code).status_code == 200
    assert_oauth_error(exchange_code(hubspot.http, code), "BAD_AUTH_CODE", "invalid_grant")


def test_an_authorization_code_expires_after_ten_minutes(hubspot: ServedHubSpot) -> None:
    fresh, stale = authorize(hubspot.http), authorize(hubspot.http)
    hubspot.clock.advance(599)
    assert exchange_code(hubspot.http, fresh).status_code == 200
    hubspot.clock.advance(2)
    assert_oauth_error(exchange_code(hubspot.http, stale), "BAD_AUTH_CODE", "invalid_grant")


def test_redirect_uri_must_equal_the_authorize_one(hubspot: ServedHubSpot) -> None:
    response = exchange_code(hubspot.http, authorize(hubspot.http), redirect_uri=REDIRECT_URI + "/")
    assert_oauth_error(response, "BAD_REDIRECT_URI", "invalid_grant")


def test_client_credentials_and_parameters_are_checked(hubspot: ServedHubSpot) -> None:
    code = authorize(hubspot.http)
    assert_oauth_error(exchange_code(hubspot.http, code, client_id="other"), "BAD_CLIENT_ID", "invalid_client")
    assert_oauth_error(exchange_code(hubspot.http, code, client_secret="nope"), "BAD_CLIENT_SECRET", "invalid_client")
    no_code = hubspot.http.post("/oauth/v1/token", data={"grant_type": "authorization_code", "client_id": CLIENT_ID})
    assert_oauth_error(no_code, "BAD_REQUEST", "invalid_request")
    password = hubspot.http.post("/oauth/v1/token", data={"grant_type": "password"})
    assert_oauth_error(password, "BAD_GRANT_TYPE", "unsupported_grant_type")


def test_refresh_keeps_the_same_refresh_token_and_issues_a_new_access_token(hubspot: ServedHubSpot) -> None:
    before = hubspot.emulator.token_requests("refresh_token")
    response = refresh(hubspot.http, hubspot.tokens["refresh_token"])
    assert response.status_code == 200
    refreshed = response.json()
    assert refreshed["refresh_token"] == hubspot.tokens["refresh_token"]
    assert refreshed["access_token"] != hubspot.tokens["access_token"]
    assert (refreshed["token_type"], refreshed["expires_in"]) == ("bearer", 1800)
    assert hubspot.emulator.token_requests("refresh_token") == before + 1
    assert hubspot.get(CONTACTS, access_token=refreshed["access_token"]).status_code == 200


def test_revoked_refresh_tokens_answer_invalid_grant(hubspot: ServedHubSpot) -> None:
    revoke = hubspot.http.delete(f"/oauth/v1/refresh-tokens/{hubspot.tokens['refresh_token']}")
    assert revoke.status_code == 204
    assert_oauth_error(refresh(hubspot.http, hubspot.tokens["refresh_token"]), "BAD_REFRESH_TOKEN", "invalid_grant")

    other = run_code_flow(hubspot.http)
    hubspot.emulator.revoke_refresh_tokens()
    assert_oauth_error(refresh(hubspot.http, other["refresh_token"]), "BAD_REFRESH_TOKEN", "invalid_grant")


def test_oauth_errors_parse_in_a_standard_oauth_library(hubspot: ServedHubSpot) -> None:
    response = refresh(hubspot.http, "not-a-refresh-token")
    with pytest.raises(InvalidGrantError, match="missing or unknown refresh token"):
        WebApplicationClient(CLIENT_ID).parse_request_body_response(response.text)


def test_expired_access_tokens_answer_401_expired_authentication(hubspot: ServedHubSpot) -> None:
    hubspot.emulator.expire_access_tokens()
    expired = assert_hubspot_error(hubspot.get(CONTACTS), 401, "EXPIRED_AUTHENTICATION")
    assert "expired" in expired["message"]
    renewed = refresh(hubspot.http, hubspot.tokens["refresh_token"]).json()
    assert hubspot.get(CONTACTS, access_token=renewed["access_token"]).status_code == 200

    hubspot.clock.advance(1800)  # the renewed token's TTL
    stale = hubspot.get(CONTACTS, access_token=renewed["access_token"])
    assert_hubspot_error(stale, 401, "EXPIRED_AUTHENTICATION")


def test_missing_or_unknown_bearer_tokens_answer_401_invalid_authentication(hubspot: ServedHubSpot) -> None:
    assert_hubspot_error(hubspot.http.get(CONTACTS), 401, "INVALID_AUTHENTICATION")
    assert_hubspot_error(hubspot.get(CONTACTS, headers={"Authorization": "Bearer nope"}), 401, "INVALID_AUTHENTICATION")


def test_a_read_only_token_cannot_write(hubspot: ServedHubSpot) -> None:
    read_only = run_code_flow(hubspot.http, scope=f"oauth {READ_SCOPE}")
    headers = hubspot.auth_headers(read_only["access_token"])
    assert hubspot.http.get(CONTACTS, headers=headers).status_code == 200
    refused = hubspot.http.patch(f"{CONTACTS}/1", headers=headers, json={"properties": {"jobtitle": "CEO"}})
    assert_hubspot_error(refused, 403, "MISSING_SCOPES")


def test_access_token_introspection(hubspot: ServedHubSpot) -> None:
    info = hubspot.http.get(f"/oauth/v1/access-tokens/{hubspot.tokens['access_token']}").json()
    assert info["hub_id"] == 62515 and info["user"] == "sandbox@example.com" and info["token_type"] == "access"
    assert READ_SCOPE in info["scopes"] and info["expires_in"] == 1800
    assert hubspot.http.get("/oauth/v1/access-tokens/unknown").status_code == 404


# --- mutations --------------------------------------------------------------------------------------------------


def test_http_mutations_show_up_in_later_listings_with_a_newer_lastmodifieddate(hubspot: ServedHubSpot) -> None:
    original = hubspot.get(f"{CONTACTS}/5").json()
    hubspot.clock.advance(5)
    now_iso = datetime.fromtimestamp(hubspot.clock.now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    updated = hubspot.patch(f"{CONTACTS}/5", json={"properties": {"jobtitle": "Chief Sandbox Officer"}})
    assert updated.status_code == 200 and updated.json()["properties"]["jobtitle"] == "Chief Sandbox Officer"
    created = hubspot.post(CONTACTS, json={"properties": {"email": "new.person@example.com", "firstname": "New"}})
    assert created.status_code == 201
    new_id = created.json()["id"]
    assert new_id == str(SMALL_PORTAL_SIZE + 1)
    assert hubspot.delete(f"{CONTACTS}/6").status_code == 204

    listed = {result["id"]: result for result in list_all(hubspot, limit=100, properties="jobtitle,firstname")}
    assert listed["5"]["properties"]["jobtitle"] == "Chief Sandbox Officer"
    assert listed["5"]["properties"]["lastmodifieddate"] == listed["5"]["updatedAt"] == now_iso
    assert epoch_ms(now_iso) > epoch_ms(original["properties"]["lastmodifieddate"])
    assert listed[new_id]["properties"]["firstname"] == "New" and listed[new_id]["createdAt"] == now_iso
    assert "6" not in listed
    assert [result["id"] for result in list_all(hubspot, archived="true")] == ["6"]
    assert hubspot.emulator.contact_records()[4]["properties"]["jobtitle"] == "Chief Sandbox Officer"


def test_invalid_writes_are_refused_like_hubspot(hubspot: ServedHubSpot) -> None:
    taken_email = hubspot.emulator.contact_records()[0]["properties"]["email"]
    duplicate = hubspot.post(CONTACTS, json={"properties": {"email": taken_email}})
    assert "Existing ID: 1" in assert_hubspot_error(duplicate, 409, "CONFLICT")["message"]
    unknown = hubspot.patch(f"{CONTACTS}/2", json={"properties": {"favourite_colour": "teal"}})
    assert "PROPERTY_DOESNT_EXIST" in assert_hubspot_error(unknown, 400, "VALIDATION_ERROR")["message"]
    assert_hubspot_error(hubspot.patch(f"{CONTACTS}/424242", json={"properties": {}}), 404, "OBJECT_NOT_FOUND")
    assert_hubspot_error(hubspot.post(CONTACTS, content=b"{not json"), 400, "VALIDATION_ERROR")


def test_request_log_records_every_request_with_its_status(hubspot: ServedHubSpot) -> None:
    hubspot.get(CONTACTS, params={"limit": 2})
    hubspot.get(f"{CONTACTS}/999999")
    assert [(record.method, record.path, record.status) for record in hubspot.emulator.request_log[-2:]] == [
        ("GET", CONTACTS, 200),
        ("GET", f"{CONTACTS}/999999", 404),
    ]
    assert hubspot.emulator.request_log[-2].query == "limit=2"
    assert hubspot.emulator.request_log[0].path == "/oauth/authorize"


# --- scale --------------------------------------------------------------------------------------------------------


def test_a_100000_contact_portal_pages_through_every_id(clock: ManualClock, hubspot_factory: Any) -> None:
    portal: ServedHubSpot = hubspot_factory(contacts=100_000)
    seen: set[str] = set()
    pages = 0
    after = "0"
    while True:
        page = portal.get(CONTACTS, params={"limit": 100, "after": after, "properties": "email"}).json()
        pages += 1
        seen.update(result["id"] for result in page["results"])
        if "paging" not in page:
            break
        after = page["paging"]["next"]["after"]
    assert pages == 1_000
    assert len(seen) == 100_000
    assert seen == {str(number) for number in range(1, 100_001)}
