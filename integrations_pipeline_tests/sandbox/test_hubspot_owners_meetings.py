"""Owners and meetings in the HubSpot emulator: raw HTTP (limits, paging, search, scopes, writes) and the official
SDK (hubspot-api-client 12.0.0) driven against it.

Expected values are computed here from `owner_records()` / `meeting_records()` (plain dicts), never with the
emulator's own filtering code, so a wrong filter, cursor or cap in the emulator makes these tests fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hubspot import HubSpot
from hubspot.crm.objects.meetings import (
    ApiException,
    Filter,
    FilterGroup,
    PublicObjectSearchRequest,
    SimplePublicObjectInput,
    SimplePublicObjectInputForCreate,
)

from integrations_pipeline.httpserver import BackgroundServer
from integrations_pipeline.sandbox.hubspot import HubSpotEmulator
from integrations_pipeline_tests.sandbox.conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    READ_SCOPE,
    WRITE_SCOPE,
    ManualClock,
    ServedHubSpot,
    run_code_flow,
)

OWNERS_SCOPE = "crm.objects.owners.read"
OWNERS = "/crm/v3/owners/"
MEETINGS = "/crm/v3/objects/meetings"
MEETING_SEARCH = f"{MEETINGS}/search"
OWNER_COUNT = 11
MEETING_COUNT = 1_500


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def assert_hubspot_error(response: httpx.Response, status_code: int, category: str) -> None:
    assert response.status_code == status_code, response.text
    body = response.json()
    assert (body["status"], body["category"]) == ("error", category) and body["correlationId"]


@pytest.fixture
def portal(clock: ManualClock) -> Iterator[ServedHubSpot]:
    """A portal with owners and meetings, and a token holding the contacts and owners scopes."""
    emulator = HubSpotEmulator(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        contacts=20,
        owners=OWNER_COUNT,
        meetings=MEETING_COUNT,
        burst_limit=None,
        search_limit=None,
        clock=clock,
    )
    with BackgroundServer(emulator.app) as server, httpx.Client(base_url=server.url, timeout=30.0) as http:
        served = ServedHubSpot(emulator, server.url, clock, http)
        served.tokens = run_code_flow(http, scope=f"oauth {READ_SCOPE} {WRITE_SCOPE} {OWNERS_SCOPE}")
        yield served


@pytest.fixture
def sdk(portal: ServedHubSpot) -> HubSpot:
    return HubSpot(access_token=portal.tokens["access_token"], host=portal.url)


def follow(portal: ServedHubSpot, path: str, **params: Any) -> list[dict[str, Any]]:
    """Follow `paging.next.after` to the end."""
    results: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        response = portal.get(path, params={**params, **({"after": after} if after else {})})
        assert response.status_code == 200, response.text
        page = response.json()
        results.extend(page["results"])
        if "paging" not in page:
            return results
        after = page["paging"]["next"]["after"]


def day_window(records: list[dict[str, Any]]) -> tuple[str, str]:
    """The UTC day of the 100th meeting's start, as ISO strings of HubSpot's shape (which sort chronologically)."""
    start = datetime.fromisoformat(records[100]["properties"]["hs_meeting_start_time"]).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    return iso(start), iso(start + timedelta(days=1))


# --- generated data ---------------------------------------------------------------------------------------------


def test_generated_owners_and_meetings_are_deterministic_plausible_and_spread_over_2025_2026() -> None:
    def build(seed: int) -> HubSpotEmulator:
        return HubSpotEmulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, contacts=1, meetings=600, seed=seed)

    first, again, other = build(7), build(7), build(8)
    assert first.meeting_records() == again.meeting_records() and first.owner_records() == again.owner_records()
    assert first.meeting_records() != other.meeting_records()
    owner_ids = {owner["id"] for owner in first.owner_records()}
    meetings = first.event_records()
    assert len(meetings) == 600 and len({meeting["id"] for meeting in meetings}) == 600
    starts = [meeting["properties"]["hs_meeting_start_time"] for meeting in meetings]
    assert {start[:4] for start in starts} == {"2025", "2026"}
    now = iso(datetime.now(UTC))
    all_day = 0
    for meeting in meetings:
        properties = meeting["properties"]
        assert properties["hubspot_owner_id"] in owner_ids and properties["hs_meeting_title"]
        assert properties["hs_createdate"] == meeting["createdAt"] <= meeting["updatedAt"] < now
        assert properties["hs_lastmodifieddate"] == meeting["updatedAt"]
        assert properties["hs_meeting_start_time"] < properties["hs_meeting_end_time"]
        all_day += properties["hs_meeting_start_time"].endswith("T00:00:00.000Z") and (
            datetime.fromisoformat(properties["hs_meeting_end_time"])
            - datetime.fromisoformat(properties["hs_meeting_start_time"])
        ) == timedelta(days=1)
    assert 0 < all_day < 100


# --- owners -------------------------------------------------------------------------------------------------------


def test_owners_answer_with_and_without_the_trailing_slash_in_hubspot_shape(portal: ServedHubSpot) -> None:
    with_slash = portal.get(OWNERS).json()
    without_slash = portal.get(OWNERS.rstrip("/")).json()
    assert with_slash["results"] == without_slash["results"] == portal.emulator.user_records()
    owner = with_slash["results"][0]
    assert set(owner) >= {"id", "email", "firstName", "lastName", "userId", "createdAt", "updatedAt", "archived"}
    assert owner["teams"][0]["primary"] is True and owner["type"] == "PERSON"
    assert "paging" not in with_slash


def test_owner_paging_visits_every_owner_once_and_limits_are_enforced(portal: ServedHubSpot) -> None:
    visited = follow(portal, OWNERS, limit=3, archived="False")
    assert [owner["id"] for owner in visited] == [owner["id"] for owner in portal.emulator.user_records()]
    assert portal.get(OWNERS, params={"limit": 500}).status_code == 200
    for limit in ("501", "0", "x"):
        assert_hubspot_error(portal.get(OWNERS, params={"limit": limit}), 400, "VALIDATION_ERROR")
    assert_hubspot_error(portal.get(OWNERS, params={"archived": "perhaps"}), 400, "VALIDATION_ERROR")


def test_archived_owners_are_listed_only_with_archived_true(portal: ServedHubSpot) -> None:
    owner_id = portal.emulator.user_records()[4]["id"]
    portal.clock.advance(120)
    portal.emulator.archive_owner(owner_id)
    live = follow(portal, OWNERS, archived="false")
    archived = follow(portal, OWNERS, archived="true")
    assert owner_id not in {owner["id"] for owner in live} and len(live) == OWNER_COUNT - 1
    assert [owner["id"] for owner in archived] == [owner_id]
    assert archived[0]["archived"] is True and archived[0]["userId"] is None
    assert archived[0]["updatedAt"] == iso(datetime.fromtimestamp(portal.clock.now, UTC))
    assert portal.get(f"{OWNERS}{owner_id}").status_code == 404
    assert portal.get(f"{OWNERS}{owner_id}", params={"archived": "true"}).json()["id"] == owner_id


def test_owners_need_the_owners_scope_and_meetings_the_contacts_scope(portal: ServedHubSpot) -> None:
    contacts_only = run_code_flow(portal.http, scope=f"oauth {READ_SCOPE}")["access_token"]
    owners_only = run_code_flow(portal.http, scope=f"oauth {OWNERS_SCOPE}")["access_token"]
    assert_hubspot_error(portal.get(OWNERS, access_token=contacts_only), 403, "MISSING_SCOPES")
    assert portal.get(OWNERS, access_token=owners_only).status_code == 200
    assert_hubspot_error(portal.get(MEETINGS, access_token=owners_only), 403, "MISSING_SCOPES")
    assert portal.get(MEETINGS, access_token=contacts_only).status_code == 200
    write = portal.post(MEETINGS, access_token=contacts_only, json={"properties": {"hs_timestamp": "0"}})
    assert_hubspot_error(write, 403, "MISSING_SCOPES")


# --- meetings: list and search ------------------------------------------------------------------------------------


def test_meeting_list_pages_every_live_meeting_with_hubspot_defaults(portal: ServedHubSpot) -> None:
    for meeting_id in [record["id"] for record in portal.emulator.meeting_records()[5:8]]:
        portal.emulator.archive_meeting(meeting_id)
    first = portal.get(MEETINGS).json()
    assert len(first["results"]) == 10
    assert set(first["results"][0]["properties"]) == {"hs_createdate", "hs_lastmodifieddate", "hs_object_id"}
    visited = follow(portal, MEETINGS, limit=100, archived="False", properties="hs_meeting_title")
    expected = portal.emulator.meeting_records(include_archived=False)
    assert [meeting["id"] for meeting in visited] == [record["id"] for record in expected]
    assert visited[0]["properties"]["hs_meeting_title"] == expected[0]["properties"]["hs_meeting_title"]
    assert len(follow(portal, MEETINGS, archived="true")) == 3
    assert_hubspot_error(portal.get(MEETINGS, params={"limit": 101}), 400, "VALIDATION_ERROR")


def test_meeting_search_by_start_window_and_modified_since_returns_exactly_the_match(portal: ServedHubSpot) -> None:
    records = portal.emulator.meeting_records()
    day_start, day_end = day_window(records)
    in_day = [record for record in records if day_start <= record["properties"]["hs_meeting_start_time"] < day_end]
    modified_since = max(record["updatedAt"] for record in in_day)  # at least one match, usually fewer than all
    expected = sorted(
        (record["properties"]["hs_meeting_start_time"], int(record["id"]))
        for record in records
        if day_start <= record["properties"]["hs_meeting_start_time"] < day_end
        and record["updatedAt"] >= modified_since
    )
    for window_only in (True, False):
        filters = [
            {"propertyName": "hs_meeting_start_time", "operator": "GTE", "value": day_start},
            {"propertyName": "hs_meeting_start_time", "operator": "LT", "value": day_end},
        ]
        if not window_only:
            filters.append({"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": modified_since})
        body = {"filterGroups": [{"filters": filters}], "sorts": ["hs_meeting_start_time"], "limit": 1}
        seen: list[int] = []
        after: str | None = None
        while True:
            page = portal.post(MEETING_SEARCH, json={**body, **({"after": after} if after else {})}).json()
            seen.extend(int(result["id"]) for result in page["results"])
            if "paging" not in page:
                break
            after = page["paging"]["next"]["after"]
        wanted = [
            int(record["id"])
            for record in sorted(records, key=lambda r: (r["properties"]["hs_meeting_start_time"], int(r["id"])))
            if day_start <= record["properties"]["hs_meeting_start_time"] < day_end
        ]
        assert seen == (wanted if window_only else [meeting_id for _, meeting_id in expected])
        assert seen and page["total"] == len(seen)


def test_meeting_search_rejects_contact_properties_and_stops_at_10000(
    portal: ServedHubSpot, clock: ManualClock
) -> None:
    unknown = {"filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": "0"}]}]}
    assert_hubspot_error(portal.post(MEETING_SEARCH, json=unknown), 400, "VALIDATION_ERROR")
    large = HubSpotEmulator(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        contacts=1,
        meetings=10_050,
        burst_limit=None,
        search_limit=None,
        clock=clock,
    )
    with BackgroundServer(large.app) as server, httpx.Client(base_url=server.url, timeout=30.0) as http:
        headers = {"Authorization": f"Bearer {run_code_flow(http)['access_token']}"}
        last_allowed = http.post(MEETING_SEARCH, headers=headers, json={"limit": 100, "after": 9_900})
        assert last_allowed.status_code == 200 and last_allowed.json()["total"] == 10_050
        assert "paging" in last_allowed.json()
        past_cap = http.post(MEETING_SEARCH, headers=headers, json={"limit": 100, "after": 10_000})
        assert_hubspot_error(past_cap, 400, "VALIDATION_ERROR")


# --- meetings: writes ---------------------------------------------------------------------------------------------


def test_meeting_writes_stamp_the_clock_and_show_up_in_listings(portal: ServedHubSpot) -> None:
    portal.clock.advance(90)
    now = iso(datetime.fromtimestamp(portal.clock.now, UTC))
    start = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    created = portal.post(
        MEETINGS,
        json={
            "properties": {
                "hs_meeting_title": "Sandbox sync",
                "hs_meeting_start_time": str(int(start.timestamp() * 1000)),
            }
        },
    )
    assert created.status_code == 201, created.text
    meeting = created.json()
    assert meeting["properties"]["hs_meeting_start_time"] == meeting["properties"]["hs_timestamp"] == iso(start)
    assert meeting["properties"]["hs_lastmodifieddate"] == meeting["createdAt"] == now

    portal.clock.advance(30)
    updated = portal.patch(f"{MEETINGS}/{meeting['id']}", json={"properties": {"hs_meeting_location": "Room 4"}})
    assert updated.json()["properties"]["hs_meeting_location"] == "Room 4"
    assert updated.json()["updatedAt"] == iso(datetime.fromtimestamp(portal.clock.now, UTC))
    assert portal.delete(f"{MEETINGS}/{meeting['id']}").status_code == 204
    assert portal.get(f"{MEETINGS}/{meeting['id']}").status_code == 404
    archived = portal.get(f"{MEETINGS}/{meeting['id']}", params={"archived": "true"}).json()
    assert archived["archived"] is True and archived["archivedAt"] == updated.json()["updatedAt"]
    assert portal.delete(f"{MEETINGS}/999").status_code == 404


@pytest.mark.parametrize(
    "properties",
    [
        {"hs_meeting_title": "no time at all"},
        {"hs_meeting_start_time": "next tuesday"},
        {"hs_timestamp": "0", "hs_lastmodifieddate": "0"},
        {"hs_timestamp": "0", "no_such_property": "x"},
    ],
)
def test_invalid_meeting_writes_are_refused(portal: ServedHubSpot, properties: dict[str, str]) -> None:
    assert_hubspot_error(portal.post(MEETINGS, json={"properties": properties}), 400, "VALIDATION_ERROR")


def test_purge_forgets_records_archived_more_than_90_days_ago(portal: ServedHubSpot) -> None:
    old_meeting = portal.emulator.meeting_records()[0]["id"]
    portal.emulator.archive_meeting(old_meeting)
    portal.emulator.archive_contact("3")
    portal.clock.advance(timedelta(days=91).total_seconds())
    recent_meeting = portal.emulator.meeting_records()[1]["id"]
    portal.emulator.archive_meeting(recent_meeting)
    assert portal.emulator.purge_archived() == 2
    portal.tokens = run_code_flow(portal.http, scope=f"oauth {READ_SCOPE}")  # 91 days outlived the old token
    assert [meeting["id"] for meeting in follow(portal, MEETINGS, archived="true")] == [recent_meeting]
    assert follow(portal, "/crm/v3/objects/contacts", archived="true") == []


# --- the official SDK -------------------------------------------------------------------------------------------


def test_sdk_owner_paging_returns_exactly_the_emulators_owners(portal: ServedHubSpot, sdk: HubSpot) -> None:
    portal.emulator.archive_owner(portal.emulator.user_records()[2]["id"])
    expected = portal.emulator.user_records(include_archived=False)
    seen, after = [], None
    while True:
        page = sdk.crm.owners.owners_api.get_page(limit=4, after=after, archived=False)
        seen.extend(page.results)
        if page.paging is None:
            break
        after = page.paging.next.after
    assert [owner.id for owner in seen] == [record["id"] for record in expected]
    for owner, record in zip(seen, expected, strict=True):
        assert (owner.email, owner.first_name, owner.last_name, owner.user_id) == (
            record["email"],
            record["firstName"],
            record["lastName"],
            record["userId"],
        )
        assert iso(owner.updated_at) == record["updatedAt"] and owner.teams[0].name == record["teams"][0]["name"]
    archived = sdk.crm.owners.owners_api.get_page(archived=True)
    assert [owner.id for owner in archived.results] == [portal.emulator.user_records()[-1]["id"]]
    assert [owner.id for owner in sdk.crm.owners.get_all()] == [record["id"] for record in expected]
    assert all(r.path == "/crm/v3/owners/" for r in portal.emulator.request_log if "owners" in r.path)


def test_sdk_meeting_get_page_and_get_all_return_exactly_the_live_meetings(portal: ServedHubSpot, sdk: HubSpot) -> None:
    portal.emulator.archive_meeting(portal.emulator.meeting_records()[9]["id"])
    expected = portal.emulator.meeting_records(include_archived=False)
    wanted = ["hs_meeting_title", "hs_meeting_start_time", "hs_meeting_end_time", "hubspot_owner_id"]
    seen, after = [], None
    while True:
        page = sdk.crm.objects.meetings.basic_api.get_page(limit=100, after=after, properties=wanted, archived=False)
        seen.extend(page.results)
        if page.paging is None:
            break
        after = page.paging.next.after
    every = sdk.crm.objects.get_all("meetings", properties=wanted)
    assert [meeting.id for meeting in seen] == [meeting.id for meeting in every] == [r["id"] for r in expected]
    names = {*wanted, "hs_createdate", "hs_lastmodifieddate", "hs_object_id"}
    for meeting, record in zip(seen, expected, strict=True):
        assert meeting.properties == {name: record["properties"][name] for name in names}
        assert iso(meeting.updated_at) == record["updatedAt"] and meeting.archived is False


def test_sdk_meeting_search_and_writes(portal: ServedHubSpot, sdk: HubSpot, clock: ManualClock) -> None:
    records = portal.emulator.meeting_records()
    day_start, day_end = day_window(records)
    expected = [
        record["id"]
        for record in sorted(records, key=lambda r: (r["properties"]["hs_meeting_start_time"], int(r["id"])))
        if day_start <= record["properties"]["hs_meeting_start_time"] < day_end
    ]
    window = FilterGroup(
        filters=[
            Filter(property_name="hs_meeting_start_time", operator="GTE", value=day_start),
            Filter(property_name="hs_meeting_start_time", operator="LT", value=day_end),
        ]
    )
    request = PublicObjectSearchRequest(filter_groups=[window], sorts=["hs_meeting_start_time"], limit=100)
    found = sdk.crm.objects.meetings.search_api.do_search(public_object_search_request=request)
    assert [meeting.id for meeting in found.results] == expected and found.total == len(expected)

    basic_api = sdk.crm.objects.meetings.basic_api
    clock.advance(45)
    created = basic_api.create(
        simple_public_object_input_for_create=SimplePublicObjectInputForCreate(
            properties={"hs_timestamp": "2026-05-04T09:00:00Z", "hs_meeting_title": "From the SDK"}
        )
    )
    updated = basic_api.update(
        meeting_id=created.id,
        simple_public_object_input=SimplePublicObjectInput(properties={"hs_meeting_outcome": "COMPLETED"}),
    )
    basic_api.archive(meeting_id=expected[0])
    by_id = {record["id"]: record for record in portal.emulator.meeting_records()}
    assert by_id[created.id]["properties"]["hs_meeting_title"] == "From the SDK"
    assert by_id[created.id]["properties"]["hs_meeting_outcome"] == updated.properties["hs_meeting_outcome"]
    assert by_id[expected[0]]["archived"] is True
    with pytest.raises(ApiException) as missing:
        basic_api.get_by_id(meeting_id=expected[0])
    assert missing.value.status == 404
