"""The Zoho connector against the Zoho emulator over real HTTP, plus unit tests of its pure mappers.

Expected records are mapped here by hand from the emulator's raw truth (`contact_records()` and friends), not with
the connector's mappers, so a wrong field, time zone or filter in the connector fails these tests.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from integrations_pipeline.clients import zoho
from integrations_pipeline.clients.cursors import timestamp_cursor
from integrations_pipeline.clients.errors import CursorExpired, NeedsReauth
from integrations_pipeline.clients.oauth import OAuthClient, new_pkce_pair
from integrations_pipeline.clients.spec import Page, SyncRequest
from integrations_pipeline.httpserver import BackgroundServer
from integrations_pipeline.records import CONTACT_COLUMNS, EVENT_COLUMNS, USER_COLUMNS
from integrations_pipeline.sandbox.zoho import ZohoEmulator
from integrations_pipeline.settings import ProviderApp
from integrations_pipeline.store import TokenSet

CLIENT_ID = "1000.CONNECTORTEST"
CLIENT_SECRET = "connector-test-secret"
REDIRECT_URI = "http://127.0.0.1:9/callback"
CONNECTION = "conn-zoho-1"
DAY = date(2025, 6, 10)


class ManualClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ZohoTokenAuth(httpx.Auth):
    """Sets Zoho's header from a token obtained through the emulator's OAuth endpoints."""

    def __init__(self, access_token: str) -> None:
        self.access_token = access_token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Zoho-oauthtoken {self.access_token}"
        yield request


@dataclass
class Connected:
    emulator: ZohoEmulator
    url: str
    clock: ManualClock
    client: zoho.ZohoClient
    metadata: dict[str, Any]

    def request(self, cursor: str | None = None, window: tuple[datetime, datetime] | None = None) -> SyncRequest:
        started_at = datetime.fromtimestamp(self.clock(), UTC)
        return SyncRequest(CONNECTION, cursor, started_at, window, self.metadata)

    def data_calls(self) -> list[str]:
        return [f"{entry.path} {entry.status}" for entry in self.emulator.request_log if entry.path.startswith("/crm/")]


def connect(url: str) -> dict[str, Any]:
    """Authorize with the connector's own SPEC (scopes, separator, extra parameters) and redeem through OAuthClient."""
    app = ProviderApp(client_id=CLIENT_ID, client_secret=SecretStr(CLIENT_SECRET), base_url=url)
    oauth = OAuthClient(zoho.SPEC, app)
    verifier, challenge = new_pkce_pair()
    consent = oauth.authorization_url(
        redirect_uri=REDIRECT_URI, scopes=zoho.SPEC.scopes(app), state="s" * 32, code_challenge=challenge
    )
    location = httpx.URL(httpx.get(consent).headers["location"])
    grant = oauth.exchange_code(code=location.params["code"], redirect_uri=REDIRECT_URI, code_verifier=verifier)
    assert grant.tokens.refresh_token is not None  # access_type=offline made it through
    assert grant.granted_scopes is None  # Zoho's token response does not name the granted scopes
    return {"grant": grant, "oauth": oauth}


@pytest.fixture
def sandbox() -> Iterator[Connected]:
    clock = ManualClock()
    emulator = ZohoEmulator(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, contacts=430, events=150, users=7, clock=clock
    )
    with BackgroundServer(emulator.app) as server:
        connection = connect(server.url)
        connection["oauth"].api.close()
        grant = connection["grant"]
        assert grant.metadata["api_domain"] == server.url
        auth = ZohoTokenAuth(grant.tokens.access_token.get_secret_value())
        assert zoho.SPEC.build_client is not None
        client = zoho.SPEC.build_client("http://127.0.0.1:9", auth, grant.metadata)  # the api_domain wins
        assert isinstance(client, zoho.ZohoClient)
        with client:
            yield Connected(emulator, server.url, clock, client, dict(grant.metadata))


def drain(pages: Iterator[Page]) -> tuple[list[dict[str, Any]], str | None]:
    records: list[dict[str, Any]] = []
    all_pages = list(pages)
    for page in all_pages:
        records.extend(dict(record) for record in page.records)
    assert all(page.cursor is None for page in all_pages[:-1])
    return records, all_pages[-1].cursor


def utc(iso: str | None) -> datetime | None:
    return datetime.fromisoformat(iso).astimezone(UTC) if iso else None


def expected_contact(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "connection_id": CONNECTION,
        "source_id": raw["id"],
        "email": raw["Email"],
        "first_name": raw["First_Name"],
        "last_name": raw["Last_Name"],
        "phone": raw["Phone"],
        "company": raw["Account_Name"]["name"] if raw["Account_Name"] else None,
        "job_title": raw["Title"],
        "created_at": utc(raw["Created_Time"]),
        "modified_at": utc(raw["Modified_Time"]),
        "is_deleted": False,
    }


def expected_event(raw: dict[str, Any]) -> dict[str, Any]:
    local_start, local_end = datetime.fromisoformat(raw["Start_DateTime"]), datetime.fromisoformat(raw["End_DateTime"])
    if raw["All_day"]:
        start = datetime(local_start.year, local_start.month, local_start.day, tzinfo=UTC)
        end = datetime(local_end.year, local_end.month, local_end.day, tzinfo=UTC)
    else:
        start, end = local_start.astimezone(UTC), local_end.astimezone(UTC)
    return {
        "connection_id": CONNECTION,
        "source_id": raw["id"],
        "title": raw["Event_Title"],
        "organizer_email": raw["Owner"]["email"],
        "start_at": start,
        "end_at": end,
        "is_all_day": raw["All_day"],
        "location": raw["Venue"],
        "created_at": utc(raw["Created_Time"]),
        "modified_at": utc(raw["Modified_Time"]),
        "is_deleted": False,
    }


def day_window(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


# --- contacts ---------------------------------------------------------------------------------------------------------


def test_full_sync_returns_every_contact_mapped_and_a_cursor(sandbox: Connected) -> None:
    records, cursor = drain(zoho.read_contacts(sandbox.client, sandbox.request()))
    expected = [expected_contact(raw) for raw in sandbox.emulator.contact_records()]
    assert sorted(records, key=lambda r: r["source_id"]) == expected
    assert all(tuple(record) == CONTACT_COLUMNS for record in records)
    assert cursor == timestamp_cursor(datetime.fromtimestamp(sandbox.clock(), UTC))
    listed = [call for call in sandbox.data_calls() if call.startswith("/crm/v8/Contacts ")]
    assert listed == ["/crm/v8/Contacts 200"] * 3  # 430 contacts, 200 a page, with page tokens


def test_incremental_sync_returns_exactly_the_changes_and_deletions(sandbox: Connected) -> None:
    _, cursor = drain(zoho.read_contacts(sandbox.client, sandbox.request()))
    sandbox.clock.advance(600)
    ids = [raw["id"] for raw in sandbox.emulator.contact_records()]
    sandbox.emulator.update_contact(ids[20], {"Email": "updated@example.com"})
    created = sandbox.emulator.create_contact({"Last_Name": "Created", "Account_Name": "Newco"})
    sandbox.emulator.delete_contact(ids[40])
    sandbox.clock.advance(400)  # past the cursor overlap, so a later read does not see these again
    calls_before = len(sandbox.data_calls())

    records, next_cursor = drain(zoho.read_contacts(sandbox.client, sandbox.request(cursor)))

    truth = {raw["id"]: raw for raw in sandbox.emulator.contact_records()}
    live = [record for record in records if not record["is_deleted"]]
    assert live == [expected_contact(truth[ids[20]]), expected_contact(truth[created])]
    assert live[1]["company"] == "Newco"
    tombstones = [record for record in records if record["is_deleted"]]
    assert [(record["source_id"], record["email"]) for record in tombstones] == [(ids[40], None)]
    assert tombstones[0]["modified_at"] == datetime.fromtimestamp(int(sandbox.clock() - 400), UTC)
    assert sandbox.data_calls()[calls_before:] == ["/crm/v8/Contacts 200", "/crm/v8/Contacts/deleted 200"]
    assert next_cursor is not None and next_cursor != cursor

    sandbox.clock.advance(600)
    quiet, _ = drain(zoho.read_contacts(sandbox.client, sandbox.request(next_cursor)))
    assert quiet == []
    assert sandbox.data_calls()[-2:] == ["/crm/v8/Contacts 304", "/crm/v8/Contacts/deleted 304"]


def test_an_expired_page_token_mid_read_raises_cursor_expired(sandbox: Connected) -> None:
    sandbox.emulator.expire_page_tokens(from_now_on=True)  # the first page's token is expired when it is used
    pages = zoho.read_contacts(sandbox.client, sandbox.request())
    first = next(pages)
    assert len(first.records) == 200
    with pytest.raises(CursorExpired):
        next(pages)


# --- users and events ---------------------------------------------------------------------------------------------


def test_users_full_then_incremental_with_deleted_users(sandbox: Connected) -> None:
    records, cursor = drain(zoho.read_users(sandbox.client, sandbox.request()))
    raw_users = sandbox.emulator.user_records()
    assert [record["source_id"] for record in records] == [user["id"] for user in raw_users]
    assert all(tuple(record) == USER_COLUMNS for record in records)
    first = records[0]
    assert (first["email"], first["is_active"], first["is_deleted"]) == (raw_users[0]["email"], True, False)
    assert first["modified_at"] == utc(raw_users[0]["Modified_Time"])
    assert [record["is_active"] for record in records] == [user["status"] == "active" for user in raw_users]

    sandbox.clock.advance(600)
    sandbox.emulator.delete_user(raw_users[3]["id"])
    sandbox.emulator.update_user(raw_users[1]["id"], last_name="Renamed")
    sandbox.clock.advance(400)  # past the cursor overlap, so a later read does not see these again
    changed, _ = drain(zoho.read_users(sandbox.client, sandbox.request(cursor)))
    assert [(r["source_id"], r["last_name"], r["is_deleted"]) for r in changed] == [
        (raw_users[1]["id"], "Renamed", False),
        (raw_users[3]["id"], raw_users[3]["last_name"], True),
    ]


def test_a_day_window_returns_exactly_the_events_starting_that_utc_day(sandbox: Connected) -> None:
    window = day_window(DAY)
    records, cursor = drain(zoho.read_events(sandbox.client, sandbox.request(window=window)))
    expected = [expected_event(raw) for raw in sandbox.emulator.event_records()]
    todays = [event for event in expected if window[0] <= event["start_at"] < window[1]]
    assert sorted(records, key=lambda r: r["source_id"]) == todays
    assert any(event["is_all_day"] for event in todays) and len(todays) >= 3
    assert all(tuple(record) == EVENT_COLUMNS for record in records)
    assert cursor is not None
    assert {call.split()[0] for call in sandbox.data_calls()} <= {"/crm/v8/org", "/crm/v8/Events/search"}


def test_incremental_day_read_fetches_only_that_days_changes(sandbox: Connected) -> None:
    window = day_window(DAY)
    _, cursor = drain(zoho.read_events(sandbox.client, sandbox.request(window=window)))
    sandbox.clock.advance(600)
    other_day = sandbox.emulator.create_event(
        {
            "Event_Title": "Elsewhere",
            "Start_DateTime": "2025-06-20T10:00:00+00:00",
            "End_DateTime": "2025-06-20T11:00:00+00:00",
        }
    )
    late_evening = sandbox.emulator.create_event(
        # 23:30 UTC on DAY is already the next calendar day in the org's +05:30 zone: it still belongs to DAY.
        {
            "Event_Title": "Late call",
            "Start_DateTime": "2025-06-11T05:00:00+05:30",
            "End_DateTime": "2025-06-11T05:30:00+05:30",
        }
    )
    all_day = sandbox.emulator.create_event(
        {"Event_Title": "Offsite", "All_day": True, "Start_DateTime": "2025-06-10T00:00:00+05:30",
         "End_DateTime": "2025-06-11T00:00:00+05:30"}
    )  # fmt: skip
    sandbox.clock.advance(400)  # past the cursor overlap, so a later read does not see these again

    records, _ = drain(zoho.read_events(sandbox.client, sandbox.request(cursor, window)))

    assert other_day not in {record["source_id"] for record in records}
    assert sorted(record["source_id"] for record in records) == sorted([late_evening, all_day])
    by_id = {record["source_id"]: record for record in records}
    assert by_id[late_evening]["start_at"] == datetime(2025, 6, 10, 23, 30, tzinfo=UTC)
    assert by_id[all_day]["start_at"] == datetime(2025, 6, 10, tzinfo=UTC) and by_id[all_day]["is_all_day"]


# --- OAuth and account ----------------------------------------------------------------------------------------------


def test_describe_account_refresh_and_revoke_through_the_spec(sandbox: Connected) -> None:
    connection = connect(sandbox.url)
    oauth: OAuthClient = connection["oauth"]
    tokens: TokenSet = connection["grant"].tokens
    account = oauth.describe_account(tokens.access_token.get_secret_value())
    assert account.external_account_id == "60012345678"
    assert account.metadata["zgid"] == "60012345679"
    refreshed = oauth.refresh(tokens.refresh_token.get_secret_value())  # type: ignore[union-attr]
    assert refreshed.tokens.refresh_token == tokens.refresh_token  # no rotation: the old one is kept
    assert refreshed.metadata["api_domain"] == sandbox.url
    assert oauth.revoke(tokens) is True
    assert oauth.revoke(tokens) is False
    oauth.api.close()


def test_a_revoked_refresh_token_needs_reauthorization(sandbox: Connected) -> None:
    """Zoho answers a revoked refresh token with HTTP 200 and `error=invalid_code`, not RFC 6749's invalid_grant:
    the spec's reauth_errors make the product treat it as a grant that is gone."""
    app = ProviderApp(client_id=CLIENT_ID, client_secret=SecretStr(CLIENT_SECRET), base_url=sandbox.url)
    oauth = OAuthClient(zoho.SPEC, app)
    sandbox.emulator.revoke_refresh_tokens()
    with pytest.raises(NeedsReauth, match="invalid_code"):
        oauth.refresh("a-revoked-refresh-token")
    oauth.api.close()


# --- pure mappers --------------------------------------------------------------------------------------------------


def test_to_contact_maps_lookups_offsets_and_blanks() -> None:
    raw = zoho.ZohoContact.model_validate(
        {
            "id": "42",
            "First_Name": "",
            "Last_Name": "Okafor",
            "Email": "a@b.example",
            "Phone": None,
            "Title": "CTO",
            "Account_Name": {"name": "Acme", "id": "9"},
            "Created_Time": "2025-03-01T10:00:00+05:30",
            "Modified_Time": "2025-03-02T00:15:00-08:00",
            "Unknown_Field": 1,
        }
    )
    record = zoho.to_contact(raw, "c1")
    assert record == {
        "connection_id": "c1",
        "source_id": "42",
        "email": "a@b.example",
        "first_name": None,
        "last_name": "Okafor",
        "phone": None,
        "company": "Acme",
        "job_title": "CTO",
        "created_at": datetime(2025, 3, 1, 4, 30, tzinfo=UTC),
        "modified_at": datetime(2025, 3, 2, 8, 15, tzinfo=UTC),
        "is_deleted": False,
    }


def test_to_deleted_contact_is_a_tombstone_stamped_with_the_deletion_time() -> None:
    raw = zoho.ZohoDeletedRecord.model_validate(
        {"id": "7", "deleted_time": "2025-05-05T12:00:00+05:30", "type": "recycle"}
    )
    record = zoho.to_deleted_contact(raw, "c1")
    assert (record["source_id"], record["is_deleted"], record["email"]) == ("7", True, None)
    assert record["modified_at"] == datetime(2025, 5, 5, 6, 30, tzinfo=UTC)


def test_to_event_puts_all_day_events_at_utc_midnight_of_their_local_date() -> None:
    timed = zoho.ZohoEvent.model_validate(
        {"id": "1", "Event_Title": "Call", "Start_DateTime": "2025-06-11T02:00:00+05:30",
         "End_DateTime": "2025-06-11T03:00:00+05:30", "All_day": False, "Venue": "",
         "Owner": {"name": "Ada", "id": "5", "email": "ada@org.example"}}
    )  # fmt: skip
    record = zoho.to_event(timed, "c1")
    assert record["start_at"] == datetime(2025, 6, 10, 20, 30, tzinfo=UTC)
    assert (record["location"], record["organizer_email"], record["is_all_day"]) == (None, "ada@org.example", False)
    all_day = zoho.ZohoEvent.model_validate(
        {"id": "2", "Start_DateTime": "2025-06-11T00:00:00+05:30", "End_DateTime": "2025-06-12T00:00:00+05:30",
         "All_day": True}
    )  # fmt: skip
    record = zoho.to_event(all_day, "c1")
    assert (record["start_at"], record["end_at"]) == (
        datetime(2025, 6, 11, tzinfo=UTC),
        datetime(2025, 6, 12, tzinfo=UTC),
    )


def test_to_user_flags_active_and_deleted() -> None:
    for status, active, deleted in (("active", True, False), ("disabled", False, False), ("deleted", False, True)):
        raw = zoho.ZohoUser.model_validate({"id": "3", "status": status, "email": "u@org.example"})
        record = zoho.to_user(raw, "c1")
        assert (record["is_active"], record["is_deleted"], record["title"]) == (active, deleted, None)
