"""The Salesforce emulator over raw HTTP: SOQL validation, paging, cursors, limits, the delete log and OAuth.

Expected values are computed from `contact_records()` and friends (plain dicts), never from the emulator's own
query code, so a wrong filter, order, page size or locator in the emulator makes these tests fail.

The helpers at the top are shared with the SDK and connector tests of this provider.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from integrations_pipeline.httpserver import BackgroundServer
from integrations_pipeline.sandbox.salesforce import (
    SOQL_MAX_CHARS,
    SalesforceApiError,
    SalesforceEmulator,
    parse_soql,
)
from integrations_pipeline_tests.sandbox.conftest import ManualClock, pkce_pair

CLIENT_ID = "sandbox-salesforce-client"
CLIENT_SECRET = "sandbox-salesforce-secret"
REDIRECT_URI = "http://127.0.0.1:9/oauth/callback"  # never contacted: the helpers read the 302 Location
DATA = "/services/data/v67.0"
TOKEN_PATH = "/services/oauth2/token"
SMALL_ORG = {"users": 12, "contacts": 450, "events": 160, "api_request_limit": None}


@dataclass
class ServedSalesforce:
    emulator: SalesforceEmulator
    url: str
    clock: ManualClock
    http: httpx.Client
    tokens: dict[str, Any] = field(default_factory=dict)

    def headers(self, access_token: str | None = None, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {access_token or self.tokens['access_token']}", **extra}

    def get(self, path: str, *, access_token: str | None = None, **kwargs: Any) -> httpx.Response:
        kwargs["headers"] = self.headers(access_token, **kwargs.get("headers", {}))
        return self.http.get(path, **kwargs)

    def soql(self, query: str, *, resource: str = "query", **kwargs: Any) -> httpx.Response:
        return self.get(f"{DATA}/{resource}", params={"q": query}, **kwargs)


def authorize(
    http: httpx.Client, *, state: str = "state-123", code_challenge: str | None = None, scope: str | None = None
) -> str:
    params = {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": REDIRECT_URI, "state": state}
    if scope is not None:
        params["scope"] = scope
    if code_challenge is not None:
        params |= {"code_challenge": code_challenge, "code_challenge_method": "S256"}
    response = http.get("/services/oauth2/authorize", params=params, follow_redirects=False)
    assert response.status_code == 302, response.text
    location = httpx.URL(response.headers["location"])
    assert str(location.copy_with(query=None)) == REDIRECT_URI
    assert location.params["state"] == state
    return location.params["code"]


def exchange_code(
    http: httpx.Client, code: str, *, code_verifier: str | None = None, client_secret: str = CLIENT_SECRET
) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "client_id": CLIENT_ID,
        "client_secret": client_secret,
        "redirect_uri": REDIRECT_URI,
        "code": code,
    }
    if code_verifier is not None:
        form["code_verifier"] = code_verifier
    return http.post(TOKEN_PATH, data=form)


def refresh(http: httpx.Client, refresh_token: str) -> httpx.Response:
    form = {
        "grant_type": "refresh_token",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": refresh_token,
    }
    return http.post(TOKEN_PATH, data=form)


def run_code_flow(http: httpx.Client, *, scope: str | None = "api refresh_token") -> dict[str, Any]:
    verifier, challenge = pkce_pair()
    response = exchange_code(http, authorize(http, code_challenge=challenge, scope=scope), code_verifier=verifier)
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


@contextmanager
def serve_salesforce(clock: ManualClock, **options: Any) -> Iterator[ServedSalesforce]:
    """A fresh org served on 127.0.0.1 (pass ssl_certfile/ssl_keyfile for https) and tokens for it."""
    server_options = {name: options.pop(name) for name in ("ssl_certfile", "ssl_keyfile") if name in options}
    certfile = server_options.get("ssl_certfile")
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=certfile) if certfile else True
    emulator = SalesforceEmulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, clock=clock, **SMALL_ORG | options)
    with BackgroundServer(emulator.app, **server_options) as server:
        url = server.url.replace("http://", "https://") if server_options else server.url
        with httpx.Client(base_url=url, timeout=30.0, verify=verify) as http:
            served = ServedSalesforce(emulator, url, clock, http)
            served.tokens = run_code_flow(http)
            yield served


def wire_ms(value: str) -> int:
    """Salesforce's `2026-01-01T12:00:00.000+0000` as epoch milliseconds."""
    return int(datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp() * 1000)


def soql_literal(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def salesforce_error(response: httpx.Response, status_code: int, error_code: str) -> str:
    assert response.status_code == status_code, response.text
    body = response.json()
    assert isinstance(body, list) and body[0]["errorCode"] == error_code, body
    message: str = body[0]["message"]
    return message


def query_everything(sf: ServedSalesforce, soql: str, *, resource: str = "query", batch: int | None = None) -> Any:
    """Follow nextRecordsUrl verbatim; returns (records, pages, totalSize of each page)."""
    headers = {"Sforce-Query-Options": f"batchSize={batch}"} if batch else {}
    response = sf.soql(soql, resource=resource, headers=headers)
    pages, records, totals = 0, [], set()
    while True:
        assert response.status_code == 200, response.text
        page = response.json()
        pages += 1
        records += page["records"]
        totals.add(page["totalSize"])
        if page["done"]:
            assert "nextRecordsUrl" not in page
            return records, pages, totals
        assert page["nextRecordsUrl"].startswith(f"{DATA}/query/01g")
        response = sf.get(page["nextRecordsUrl"], headers=headers)


@pytest.fixture
def sf(clock: ManualClock) -> Iterator[ServedSalesforce]:
    with serve_salesforce(clock) as served:
        yield served


# --- SOQL and paging --------------------------------------------------------------------------------------------------


def test_query_accepts_both_url_shapes_and_reports_api_usage(sf: ServedSalesforce) -> None:
    plus = sf.get(f"{DATA}/query/?q=SELECT+Id,+Email+FROM+Contact+LIMIT+5")
    percent = sf.get(f"{DATA}/query?q=SELECT%20Id,%20Email%20FROM%20Contact%20LIMIT%205")
    assert plus.status_code == percent.status_code == 200
    assert plus.json() == percent.json()
    expected = [
        {"attributes": record["attributes"], "Id": record["Id"], "Email": record["Email"]}
        for record in sf.emulator.contact_records()[:5]
    ]
    assert plus.json() == {"totalSize": 5, "done": True, "records": expected}
    assert expected[0]["attributes"] == {"type": "Contact", "url": f"{DATA}/sobjects/Contact/{expected[0]['Id']}"}
    assert plus.headers["Sforce-Limit-Info"] == "api-usage=1/15000"
    assert percent.headers["Sforce-Limit-Info"] == "api-usage=2/15000"


def test_paging_follows_next_records_url_with_the_requested_batch_size(sf: ServedSalesforce) -> None:
    records, pages, totals = query_everything(sf, "SELECT Id, Account.Name FROM Contact", batch=200)
    expected = sf.emulator.contact_records()
    assert [record["Id"] for record in records] == [record["Id"] for record in expected]
    assert [record["Account"] for record in records] == [record["Account"] for record in expected]
    assert (pages, totals) == (3, {450})  # 200 + 200 + 50
    _, default_pages, _ = query_everything(sf, "SELECT Id FROM Contact")
    _, clamped_pages, _ = query_everything(sf, "SELECT Id FROM Contact", batch=50)  # a preference, clamped to 200
    assert (default_pages, clamped_pages) == (1, 3)
    assert sf.emulator.open_query_locators() == 0  # a cursor read to the end is closed


def test_where_and_order_by_select_exactly_the_window(sf: ServedSalesforce) -> None:
    records = sf.emulator.contact_records()
    stamps = sorted(wire_ms(record["SystemModstamp"]) for record in records)
    since, until = stamps[40] // 1000 * 1000, stamps[400] // 1000 * 1000
    expected = sorted(
        (wire_ms(record["SystemModstamp"]), record["Id"])
        for record in records
        if since <= wire_ms(record["SystemModstamp"]) < until
    )
    soql = (
        f"select Id, systemmodstamp from contact where SystemModstamp >= {soql_literal(since)} "
        f"and SystemModstamp < {soql_literal(until)} order by SystemModstamp asc"
    )
    found, _, totals = query_everything(sf, soql, batch=200)
    assert [(wire_ms(record["SystemModstamp"]), record["Id"]) for record in found] == expected
    assert totals == {len(expected)} and "SystemModstamp" in found[0]  # canonical field names in records
    newest, _, _ = query_everything(sf, "SELECT Id FROM Contact ORDER BY SystemModstamp DESC LIMIT 3")
    by_stamp = sorted(((wire_ms(record["SystemModstamp"]), record["Id"]) for record in records), reverse=True)
    assert [record["Id"] for record in newest] == [record_id for _, record_id in by_stamp[:3]]


def test_count_answers_the_total_without_records(sf: ServedSalesforce) -> None:
    live = len(sf.emulator.contact_records(include_deleted=False))
    assert sf.soql("SELECT COUNT() FROM Contact").json() == {"totalSize": live, "done": True, "records": []}
    assert sf.soql("select count() from Contact LIMIT 7").json()["totalSize"] == 7


def test_relative_date_literals_resolve_against_the_org_clock(sf: ServedSalesforce, clock: ManualClock) -> None:
    records = sf.emulator.contact_records()
    newest_ms = max(wire_ms(record["SystemModstamp"]) for record in records)
    clock.now = newest_ms / 1000 + 86_400 * 3  # three days after the last modification
    today = datetime.fromtimestamp(clock.now, UTC).date()

    def modified_day(record: dict[str, Any]) -> Any:
        return datetime.fromtimestamp(wire_ms(record["SystemModstamp"]) / 1000, UTC).date()

    for days in (3, 10, 40):
        soql = f"SELECT COUNT() FROM Contact WHERE SystemModstamp = LAST_N_DAYS:{days}"
        expected = sum(1 for record in records if today - timedelta(days=days) <= modified_day(record))
        assert sf.soql(soql).json()["totalSize"] == expected
    assert sf.soql("SELECT COUNT() FROM Contact WHERE SystemModstamp = LAST_N_DAYS:2").json()["totalSize"] == 0
    assert sf.soql("SELECT COUNT() FROM Contact WHERE SystemModstamp < TODAY").json()["totalSize"] == len(records)
    assert sf.soql("SELECT COUNT() FROM Contact WHERE CreatedDate > YESTERDAY").json()["totalSize"] == 0
    events = sf.emulator.event_records()
    first_day = min(date.fromisoformat(event["ActivityDate"]) for event in events)
    clock.now = datetime(first_day.year, first_day.month, first_day.day, 12, tzinfo=UTC).timestamp()
    expected = sum(1 for event in events if date.fromisoformat(event["ActivityDate"]) == first_day)
    assert sf.soql("SELECT COUNT() FROM Event WHERE ActivityDate = TODAY").json()["totalSize"] == expected


def test_versions_limits_and_describe(sf: ServedSalesforce) -> None:
    versions = sf.http.get("/services/data/").json()  # no session needed
    assert versions[0] == {"label": "Summer '14", "url": "/services/data/v31.0", "version": "31.0"}
    assert {"label": "Summer '25", "url": "/services/data/v64.0", "version": "64.0"} in versions
    assert versions[-1]["version"] == "67.0" and versions[-1]["label"] == "Summer '26"
    limits = sf.get(f"{DATA}/limits/").json()
    assert limits["DailyApiRequests"] == {"Max": 15000, "Remaining": 14999}  # this call spent one
    assert sf.get("/services/data/v68.0/limits").status_code == 404
    describe = sf.get(f"{DATA}/sobjects/Contact/describe").json()
    assert describe["name"] == "Contact" and describe["keyPrefix"] == "003" and describe["queryable"] is True
    fields = {entry["name"]: entry for entry in describe["fields"]}
    assert fields["Email"]["type"] == "email" and fields["Email"]["soapType"] == "xsd:string"
    assert fields["AccountId"]["referenceTo"] == ["Account"] and fields["AccountId"]["relationshipName"] == "Account"
    assert fields["SystemModstamp"]["type"] == "datetime" and fields["SystemModstamp"]["updateable"] is False
    assert fields["Id"]["label"] == "Contact ID"
    assert describe["urls"]["describe"] == f"{DATA}/sobjects/Contact/describe"
    assert salesforce_error(sf.get(f"{DATA}/sobjects/Lead/describe"), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("soql", "error_code", "fragment"),
    [
        ("SELECT Id FORM Contact", "MALFORMED_QUERY", "unexpected token: 'FORM'"),
        ("SELECT Id FROM Contact WHERE", "MALFORMED_QUERY", "unexpected end of query"),
        ("SELECT Id FROM Contact WHERE Email = 'a' OR Email = 'b'", "MALFORMED_QUERY", "unexpected token: 'OR'"),
        ("SELECT Id FROM Contact LIMIT many", "MALFORMED_QUERY", "unexpected token: 'many'"),
        ("", "MALFORMED_QUERY", "A query string has to be specified"),
        ("SELECT Shoe FROM Contact", "INVALID_FIELD", "No such column 'Shoe' on entity 'Contact'"),
        ("SELECT Id FROM User WHERE IsDeleted = false", "INVALID_FIELD", "No such column 'IsDeleted' on entity 'User'"),
        ("SELECT Id FROM Contact WHERE SystemModstamp > '2026-01-01'", "INVALID_FIELD", "must be of type dateTime"),
        ("SELECT Id FROM Contact WHERE IsDeleted = 1", "INVALID_FIELD", "must be of type boolean"),
        ("SELECT Id FROM Lead", "INVALID_TYPE", "sObject type 'Lead' is not supported"),
        ("SELECT Id FROM Contact WHERE CreatedDate = LAST_N_FORTNIGHTS:2", "MALFORMED_QUERY", "LAST_N_FORTNIGHTS:2"),
    ],
)
def test_bad_soql_is_refused_in_salesforce_error_shape(
    sf: ServedSalesforce, soql: str, error_code: str, fragment: str
) -> None:
    assert fragment in salesforce_error(sf.soql(soql), 400, error_code)


def test_query_all_returns_deleted_rows_and_query_does_not(sf: ServedSalesforce, clock: ManualClock) -> None:
    clock.advance(60)
    doomed = [record["Id"] for record in sf.emulator.contact_records()[10:13]]
    for contact_id in doomed:
        sf.emulator.delete_contact(contact_id)
    live, _, _ = query_everything(sf, "SELECT Id, IsDeleted FROM Contact")
    everything, _, _ = query_everything(sf, "SELECT Id, IsDeleted FROM Contact", resource="queryAll")
    assert {record["Id"] for record in everything} - {record["Id"] for record in live} == set(doomed)
    assert {record["Id"] for record in everything if record["IsDeleted"]} == set(doomed)
    deleted_only, _, _ = query_everything(sf, "SELECT Id FROM Contact WHERE IsDeleted = true", resource="queryAll")
    assert sorted(record["Id"] for record in deleted_only) == sorted(doomed)
    # Deleting stamps SystemModstamp with the clock, which is how incremental readers notice deletions.
    stamped = {record["Id"]: record["SystemModstamp"] for record in sf.emulator.contact_records()}
    assert {wire_ms(stamped[contact_id]) for contact_id in doomed} == {int(clock() * 1000)}


def test_events_of_one_day_include_all_day_events_stored_at_midnight(sf: ServedSalesforce) -> None:
    day = datetime(2026, 7, 14, tzinfo=UTC)
    all_day = sf.emulator.create_event({"Subject": "Offsite", "StartDateTime": day, "IsAllDayEvent": True})
    late = sf.emulator.create_event(
        {"Subject": "Late", "StartDateTime": day - timedelta(minutes=1), "EndDateTime": day + timedelta(minutes=30)}
    )
    start, end = (
        soql_literal(int(day.timestamp() * 1000)),
        soql_literal(int((day + timedelta(days=1)).timestamp() * 1000)),
    )
    soql = f"SELECT Id, IsAllDayEvent, ActivityDate, StartDateTime, Owner.Email FROM Event WHERE StartDateTime >= {start} AND StartDateTime < {end}"  # noqa: E501
    found, _, _ = query_everything(sf, soql)
    live_events = sf.emulator.event_records(include_deleted=False)
    expected = {record["Id"] for record in live_events if record["StartDateTime"].startswith("2026-07-14T")}
    assert {record["Id"] for record in found} == expected and all_day in expected and late not in expected
    offsite = next(record for record in found if record["Id"] == all_day)
    assert (offsite["IsAllDayEvent"], offsite["ActivityDate"]) == (True, "2026-07-14")
    assert offsite["StartDateTime"] == "2026-07-14T00:00:00.000+0000"
    assert offsite["Owner"]["Email"] == sf.emulator.user_records()[0]["Email"]


def test_event_relations_in_an_in_list_follow_invitations_and_their_events(
    sf: ServedSalesforce, clock: ManualClock
) -> None:
    events = [record["Id"] for record in sf.emulator.event_records(include_deleted=False)[:40]]
    soql = (
        "SELECT Id, EventId, RelationId, Relation.Email, Status FROM EventRelation "
        f"WHERE EventId IN ({', '.join(repr(event_id) for event_id in events)})"
    )
    found, _, _ = query_everything(sf, soql)
    expected = [
        record for record in sf.emulator.event_relation_records(include_deleted=False) if record["EventId"] in events
    ]
    assert [record["RelationId"] for record in found] == [record["RelationId"] for record in expected] and found
    assert {record["Relation"]["attributes"]["type"] for record in found} == {"Name"}
    assert {record["RelationId"][:3] for record in found} >= {"005", "003"}  # users and contacts are invited

    # Uninviting, answering and inviting are changes of the event: its SystemModstamp moves.
    clock.advance(60)
    invitee = next(record for record in expected if record["IsInvitee"] and not record["IsParent"])
    sf.emulator.delete_event_relation(invitee["Id"])
    stamped = {record["Id"]: record["SystemModstamp"] for record in sf.emulator.event_records()}
    assert wire_ms(stamped[invitee["EventId"]]) == int(clock() * 1000)
    after, _, _ = query_everything(sf, soql)
    assert [record["Id"] for record in after] == [record["Id"] for record in found if record["Id"] != invitee["Id"]]
    # Deleting an event deletes its relations with it (queryAll still sees them, flagged).
    sf.emulator.delete_event(events[0])
    gone, _, _ = query_everything(sf, f"SELECT Id FROM EventRelation WHERE EventId = '{events[0]}'")
    flagged, _, _ = query_everything(
        sf, f"SELECT Id, IsDeleted FROM EventRelation WHERE EventId = '{events[0]}'", resource="queryAll"
    )
    assert gone == [] and flagged and all(record["IsDeleted"] for record in flagged)


def test_a_request_uri_over_16384_bytes_is_refused_with_414(sf: ServedSalesforce) -> None:
    def in_list(count: int) -> str:
        ids = ", ".join(f"'00UDn{number:010d}AAA'" for number in range(count))
        return f"SELECT Id FROM EventRelation WHERE EventId IN ({ids})"

    assert sf.soql(in_list(500)).status_code == 200  # about 13 KB once URL-encoded
    refused = sf.soql(in_list(700))
    assert refused.status_code == 414 and "16384" in refused.text
    assert sf.soql("SELECT Id FROM EventRelation WHERE EventId IN ()").status_code == 400


def test_an_idle_query_locator_expires(sf: ServedSalesforce, clock: ManualClock) -> None:
    first = sf.soql("SELECT Id FROM Contact", headers={"Sforce-Query-Options": "batchSize=200"}).json()
    second = sf.get(first["nextRecordsUrl"]).json()
    clock.advance(15 * 60 + 1)
    stale = sf.get(second["nextRecordsUrl"])
    assert salesforce_error(stale, 400, "INVALID_QUERY_LOCATOR") == "invalid query locator"
    forged = sf.get(first["nextRecordsUrl"].replace("-200", "-9999"))
    salesforce_error(forged, 400, "INVALID_QUERY_LOCATOR")


# --- limits and sessions ---------------------------------------------------------------------------------------------


def test_the_rolling_api_allowance_refuses_with_request_limit_exceeded(clock: ManualClock) -> None:
    with serve_salesforce(clock, api_request_limit=3) as sf:
        usage = [sf.soql("SELECT Id FROM User LIMIT 1").headers["Sforce-Limit-Info"] for _ in range(3)]
        assert usage == ["api-usage=1/3", "api-usage=2/3", "api-usage=3/3"]
        refused = sf.soql("SELECT Id FROM User LIMIT 1")
        assert salesforce_error(refused, 403, "REQUEST_LIMIT_EXCEEDED") == "TotalRequests Limit exceeded."
        assert refused.headers["Sforce-Limit-Info"] == "api-usage=3/3"
        clock.advance(24 * 3600)  # the allowance is a rolling 24 hours (the 2-hour session is long gone too)
        fresh = refresh(sf.http, sf.tokens["refresh_token"]).json()["access_token"]
        assert sf.soql("SELECT Id FROM User LIMIT 1", access_token=fresh).status_code == 200


def test_an_expired_or_unknown_session_is_invalid_session_id(sf: ServedSalesforce) -> None:
    sf.emulator.expire_access_tokens()
    for token in (sf.tokens["access_token"], "00D!forged"):
        message = salesforce_error(sf.soql("SELECT Id FROM User", access_token=token), 401, "INVALID_SESSION_ID")
        assert message == "Session expired or invalid"
    assert salesforce_error(sf.http.get(f"{DATA}/query", params={"q": "x"}), 401, "INVALID_SESSION_ID")


# --- the delete log ---------------------------------------------------------------------------------------------------


def test_the_delete_log_lists_deletions_until_the_recycle_bin_is_emptied(
    sf: ServedSalesforce, clock: ManualClock
) -> None:
    before = datetime.fromtimestamp(clock(), UTC)
    clock.advance(120)
    victim = sf.emulator.contact_records()[5]["Id"]
    sf.emulator.delete_contact(victim)
    clock.advance(120)
    window = {"start": before.isoformat(), "end": datetime.fromtimestamp(clock(), UTC).isoformat()}
    log = sf.get(f"{DATA}/sobjects/Contact/deleted/", params=window).json()
    assert [entry["id"] for entry in log["deletedRecords"]] == [victim]
    assert wire_ms(log["earliestDateAvailable"]) < before.timestamp() * 1000

    sf.emulator.expire_sync_tokens()
    log = sf.get(f"{DATA}/sobjects/Contact/deleted/", params=window).json()
    assert log["deletedRecords"] == []
    assert wire_ms(log["earliestDateAvailable"]) == int(clock() * 1000)  # cursors older than this are stale
    everything, _, _ = query_everything(sf, "SELECT Id FROM Contact", resource="queryAll")
    assert victim not in {record["Id"] for record in everything}
    missing = sf.get(f"{DATA}/sobjects/Contact/deleted/", params={"start": window["start"]})
    assert "end" in salesforce_error(missing, 400, "MISSING_ARGUMENT")


def test_deletions_older_than_fifteen_days_are_purged(sf: ServedSalesforce, clock: ManualClock) -> None:
    victim = sf.emulator.event_records()[0]["Id"]
    sf.emulator.delete_event(victim)
    assert any(record["Id"] == victim for record in sf.emulator.event_records())
    clock.advance(15 * 86_400 + 1)
    sf.tokens = refresh(sf.http, sf.tokens["refresh_token"]).json()
    everything, _, _ = query_everything(sf, "SELECT Id FROM Event", resource="queryAll")
    assert victim not in {record["Id"] for record in everything}


# --- OAuth ------------------------------------------------------------------------------------------------------------


def test_token_response_has_salesforce_fields_and_a_valid_signature(sf: ServedSalesforce) -> None:
    tokens = sf.tokens
    assert "expires_in" not in tokens and tokens["token_type"] == "Bearer"
    assert tokens["instance_url"] == sf.url and tokens["scope"] == "api refresh_token"
    admin = sf.emulator.user_records()[0]["Id"]
    assert tokens["id"] == f"{sf.url}/id/{sf.emulator.org_id}/{admin}"
    expected = hmac.new(CLIENT_SECRET.encode(), (tokens["id"] + tokens["issued_at"]).encode(), hashlib.sha256)
    assert base64.b64decode(tokens["signature"]) == expected.digest()
    assert {tokens["access_token"], tokens["refresh_token"]} <= sf.emulator.issued_tokens()
    info = sf.get("/services/oauth2/userinfo").json()
    assert (info["sub"], info["organization_id"]) == (tokens["id"], sf.emulator.org_id)


def test_no_refresh_token_without_the_refresh_token_scope(sf: ServedSalesforce) -> None:
    tokens = run_code_flow(sf.http, scope="api")
    assert "refresh_token" not in tokens and tokens["scope"] == "api"


def test_state_is_echoed_verbatim_and_codes_are_single_use(sf: ServedSalesforce) -> None:
    state = "a+b/c=d&e " + secrets.token_urlsafe(16)
    code = authorize(sf.http, state=state)
    assert exchange_code(sf.http, code).status_code == 200
    replay = exchange_code(sf.http, code)
    assert (replay.status_code, replay.json()["error"]) == (400, "invalid_grant")


def test_pkce_verifier_is_checked(sf: ServedSalesforce) -> None:
    verifier, challenge = pkce_pair()
    wrong = exchange_code(sf.http, authorize(sf.http, code_challenge=challenge), code_verifier=verifier + "x")
    assert wrong.status_code == 400
    assert wrong.json() == {"error": "invalid_grant", "error_description": "invalid code verifier"}
    bad_secret = exchange_code(sf.http, authorize(sf.http), client_secret="nope")
    assert bad_secret.json() == {"error": "invalid_client", "error_description": "invalid client credentials"}


def test_refresh_does_not_rotate_by_default(sf: ServedSalesforce) -> None:
    """Rotation is the connected app's opt-in setting: by default a refresh answers no new refresh token and the
    same one keeps working."""
    for _ in range(2):
        refreshed = refresh(sf.http, sf.tokens["refresh_token"])
        assert refreshed.status_code == 200 and "refresh_token" not in refreshed.json()
        assert sf.soql("SELECT Id FROM User LIMIT 1", access_token=refreshed.json()["access_token"]).status_code == 200


@pytest.fixture
def rotating_sf(clock: ManualClock) -> Iterator[ServedSalesforce]:
    """An org whose connected app has "Enable Refresh Token Rotation" switched on."""
    with serve_salesforce(clock, rotate_refresh_tokens=True) as served:
        yield served


def test_refresh_rotates_and_reusing_an_old_refresh_token_revokes_the_grant(rotating_sf: ServedSalesforce) -> None:
    sf = rotating_sf
    first = sf.tokens
    second = refresh(sf.http, first["refresh_token"]).json()
    assert second["refresh_token"] != first["refresh_token"] and "expires_in" not in second
    third = refresh(sf.http, second["refresh_token"]).json()
    assert sf.soql("SELECT Id FROM User LIMIT 1", access_token=third["access_token"]).status_code == 200

    replayed = refresh(sf.http, first["refresh_token"])  # a leaked or raced old token comes back
    assert replayed.json() == {"error": "invalid_grant", "error_description": "expired access/refresh token"}
    # ... and the whole grant is gone: the newest refresh token and the live session with it.
    assert refresh(sf.http, third["refresh_token"]).json()["error"] == "invalid_grant"
    assert sf.soql("SELECT Id FROM User", access_token=third["access_token"]).status_code == 401
    assert sf.emulator.token_requests("refresh_token") == 4
    # Other grants are untouched.
    other = run_code_flow(sf.http)
    assert refresh(sf.http, other["refresh_token"]).status_code == 200


def test_revoke_takes_the_grant_and_revoke_refresh_tokens_knob(sf: ServedSalesforce) -> None:
    revoked = sf.http.post("/services/oauth2/revoke", data={"token": sf.tokens["refresh_token"]})
    assert revoked.status_code == 200
    assert sf.soql("SELECT Id FROM User").status_code == 401
    again = sf.http.post("/services/oauth2/revoke", data={"token": sf.tokens["refresh_token"]})
    assert again.status_code == 400
    other = run_code_flow(sf.http)
    sf.emulator.revoke_refresh_tokens()
    assert refresh(sf.http, other["refresh_token"]).json()["error"] == "invalid_grant"


# --- size -------------------------------------------------------------------------------------------------------------


def test_a_hundred_thousand_contacts_build_deterministically_and_page(clock: ManualClock) -> None:
    emulator = SalesforceEmulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, contacts=100_000, clock=clock)
    again = SalesforceEmulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, contacts=100_000, clock=clock)
    assert emulator.contact_records()[-1] == again.contact_records()[-1]  # deterministic for a seed
    with BackgroundServer(emulator.app) as server, httpx.Client(base_url=server.url, timeout=60.0) as http:
        tokens = run_code_flow(http)
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        page = http.get(f"{DATA}/queryAll", params={"q": "SELECT Id, Email FROM Contact"}, headers=bearer).json()
        assert (page["totalSize"], len(page["records"]), page["done"]) == (100_000, 2000, False)


def test_a_soql_statement_over_100000_characters_is_malformed() -> None:
    """Reachable at Salesforce through a composite body only: by GET the 16,384-byte URI limit comes first."""
    with pytest.raises(SalesforceApiError) as refused:
        parse_soql("SELECT Id FROM Contact WHERE Email = '" + "x" * SOQL_MAX_CHARS + "'", date(2026, 1, 1))
    assert refused.value.error_code == "MALFORMED_QUERY" and "100000 characters" in refused.value.message
