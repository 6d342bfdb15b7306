"""Contract tests: simple-salesforce 1.12 (the de facto official Python client) against the emulator over https.

simple-salesforce builds every URL as `https://{host}/services/data/v{version}/...`, so the emulator is served
with TLS here: a self-signed certificate for 127.0.0.1 made at test time, trusted through a requests.Session whose
`verify` names it. `query_all` / `query_all_iter` follow `nextRecordsUrl` themselves, so these tests prove the
emulator's paging, record shape, errors and `Sforce-Limit-Info` header are what the SDK expects.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
)

from integrations_pipeline_tests.sandbox.conftest import ManualClock
from integrations_pipeline_tests.sandbox.test_salesforce_emulator import ServedSalesforce, serve_salesforce

SMALL_BATCH = {"Sforce-Query-Options": "batchSize=200"}  # forces several pages out of a small org
CONTACT_FIELDS = ["Id", "Email", "LastName", "Account", "IsDeleted", "SystemModstamp"]


@pytest.fixture
def sandbox(clock: ManualClock, certificate: tuple[Path, Path]) -> Iterator[ServedSalesforce]:
    cert_path, key_path = certificate
    with serve_salesforce(clock, ssl_certfile=str(cert_path), ssl_keyfile=str(key_path)) as served:
        yield served


# Connection: close on every SDK request: a pooled keep-alive socket stays open for as long as anything (such as a
# caught exception's traceback) references its response, and the server's shutdown would wait for it.


@pytest.fixture
def http_session(certificate: tuple[Path, Path]) -> Iterator[requests.Session]:
    session = requests.Session()
    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE from the environment override `session.verify` unless the
    # session ignores the environment, so trust_env=False keeps the self-signed certificate in charge.
    session.trust_env = False
    session.verify = str(certificate[0])
    session.headers["Connection"] = "close"  # see the note above
    yield session
    session.close()


@pytest.fixture
def sf(sandbox: ServedSalesforce, http_session: requests.Session) -> Salesforce:
    return Salesforce(
        instance_url=sandbox.tokens["instance_url"],
        session_id=sandbox.tokens["access_token"],
        session=http_session,
        version="67.0",
    )


def error_body(error: Exception) -> Any:
    """The decoded JSON the SDK attaches to its exceptions (`content`, typed loosely by the SDK)."""
    return getattr(error, "content", None)


def without_attributes(record: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in record.items() if name != "attributes"}


def expected_contacts(sandbox: ServedSalesforce, *, include_deleted: bool) -> list[dict[str, Any]]:
    return [
        {"attributes": record["attributes"], **{name: record[name] for name in CONTACT_FIELDS}}
        for record in sandbox.emulator.contact_records(include_deleted=include_deleted)
    ]


def test_the_instance_url_is_https_and_the_sdk_targets_it(sandbox: ServedSalesforce, sf: Salesforce) -> None:
    assert sandbox.tokens["instance_url"].startswith("https://127.0.0.1:")
    assert sf.base_url == sandbox.tokens["instance_url"] + "/services/data/v67.0/"


def test_query_all_pages_to_exactly_the_live_contacts(sandbox: ServedSalesforce, sf: Salesforce) -> None:
    sandbox.emulator.delete_contact(sandbox.emulator.contact_records()[3]["Id"])
    soql = "SELECT Id, Email, LastName, Account.Name, IsDeleted, SystemModstamp FROM Contact"
    result = sf.query_all(soql, headers=SMALL_BATCH)
    assert result["totalSize"] == 449
    assert result["records"] == expected_contacts(sandbox, include_deleted=False)
    queries = [record for record in sandbox.emulator.request_log if "/query" in record.path]
    assert len(queries) == 3  # 200 + 200 + 49, the last two through nextRecordsUrl
    assert queries[0].path.endswith("/query/") and "+" in queries[0].query  # the SDK's URL shape
    assert sf.api_usage["api-usage"].used == 3


def test_query_all_with_include_deleted_uses_query_all(sandbox: ServedSalesforce, sf: Salesforce) -> None:
    doomed = [record["Id"] for record in sandbox.emulator.contact_records()[100:104]]
    for contact_id in doomed:
        sandbox.emulator.delete_contact(contact_id)
    records = list(
        sf.query_all_iter(
            "SELECT Id, Email, LastName, Account.Name, IsDeleted, SystemModstamp FROM Contact",
            include_deleted=True,
            headers=SMALL_BATCH,
        )
    )
    assert records == expected_contacts(sandbox, include_deleted=True)
    assert [record["Id"] for record in records if record["IsDeleted"]] == doomed
    assert any(record.path.endswith("/queryAll/") for record in sandbox.emulator.request_log)


def test_events_of_a_day_through_the_sdk(sandbox: ServedSalesforce, sf: Salesforce) -> None:
    soql = (
        "SELECT Id, Subject, StartDateTime, IsAllDayEvent FROM Event "
        "WHERE StartDateTime >= 2026-07-01T00:00:00Z AND StartDateTime < 2026-07-02T00:00:00Z ORDER BY StartDateTime"
    )
    records = [without_attributes(record) for record in sf.query_all_iter(soql)]
    expected = sorted(
        (
            {name: record[name] for name in ("Id", "Subject", "StartDateTime", "IsAllDayEvent")}
            for record in sandbox.emulator.event_records(include_deleted=False)
            if record["StartDateTime"].startswith("2026-07-01T")
        ),
        key=lambda record: (record["StartDateTime"], record["Id"]),
    )
    assert records == expected and records


def test_event_relations_of_a_page_of_events_through_the_sdk(sandbox: ServedSalesforce, sf: Salesforce) -> None:
    """What the connector asks for each page of events: the invitations of those events, by EventId IN (...), with
    the polymorphic Relation's name and email."""
    fields = ["EventId", "RelationId", "Status", "RespondedDate", "Response", "IsInvitee", "IsParent", "IsWhat"]
    events = [record["Id"] for record in sandbox.emulator.event_records(include_deleted=False)[:60]]
    soql = (
        f"SELECT {', '.join(fields)}, Relation.Name, Relation.Email FROM EventRelation "
        f"WHERE EventId IN ({', '.join(repr(event_id) for event_id in events)})"
    )
    records = sf.query_all(soql)["records"]
    expected = [
        {"attributes": record["attributes"], **{name: record[name] for name in fields}, "Relation": record["Relation"]}
        for record in sandbox.emulator.event_relation_records(include_deleted=False)
        if record["EventId"] in events
    ]
    assert records == expected and records
    assert {record["Status"] for record in records} == {"New", "Accepted", "Declined"}
    account = next(record for record in records if record["IsWhat"])
    assert account["Relation"]["Email"] is None and "/sobjects/Account/" in account["Relation"]["attributes"]["url"]


def test_sobject_writes_and_the_delete_log(sandbox: ServedSalesforce, sf: Salesforce, clock: ManualClock) -> None:
    contacts: Any = sf.Contact  # SFType, reached through __getattr__ (typed as a bulk handler union by the stubs)
    started = datetime.fromtimestamp(clock(), UTC)
    clock.advance(60)
    created = contacts.create({"LastName": "Sdk", "Email": "sdk@example.com"})
    assert created["success"] is True
    assert contacts.update(created["id"], {"Title": "Tester"}) == 204
    victim = sandbox.emulator.contact_records()[0]["Id"]
    assert contacts.delete(victim) == 204
    records = {record["Id"]: record for record in sandbox.emulator.contact_records()}
    assert (records[created["id"]]["Email"], records[created["id"]]["Title"]) == ("sdk@example.com", "Tester")
    assert records[victim]["IsDeleted"] is True
    assert contacts.get(created["id"])["LastName"] == "Sdk"
    clock.advance(60)
    log = contacts.deleted(started, datetime.fromtimestamp(clock(), UTC))
    assert [entry["id"] for entry in log["deletedRecords"]] == [victim]
    with pytest.raises(SalesforceMalformedRequest) as refused:
        contacts.create({"Shoe": "x", "LastName": "y"})
    assert error_body(refused.value)[0]["errorCode"] == "INVALID_FIELD"


def test_describe_limits_count_and_date_literals_through_the_sdk(
    sandbox: ServedSalesforce, sf: Salesforce, http_session: requests.Session
) -> None:
    versions = http_session.get(sandbox.tokens["instance_url"] + "/services/data/").json()
    assert {"64.0", "65.0", "66.0", "67.0"} <= {entry["version"] for entry in versions}
    contacts: Any = sf.Contact
    describe = contacts.describe()
    assert describe["name"] == "Contact"
    assert {"Id", "Email", "AccountId", "SystemModstamp"} <= {entry["name"] for entry in describe["fields"]}
    assert sf.limits()["DailyApiRequests"]["Max"] == 15000
    live = len(sandbox.emulator.contact_records(include_deleted=False))
    assert sf.query("SELECT COUNT() FROM Contact") == {"totalSize": live, "done": True, "records": []}
    # A window reaching back to the org's creation (2025-01-01) holds every contact.
    window = (datetime.fromtimestamp(sandbox.clock(), UTC) - datetime(2025, 1, 1, tzinfo=UTC)).days + 1
    assert sf.query(f"SELECT COUNT() FROM Contact WHERE SystemModstamp = LAST_N_DAYS:{window}")["totalSize"] == live
    assert sf.query("SELECT COUNT() FROM Contact WHERE SystemModstamp > TODAY")["totalSize"] == 0


def test_errors_map_onto_the_sdk_exceptions(clock: ManualClock, certificate: tuple[Path, Path]) -> None:
    cert_path, key_path = certificate
    session = requests.Session()
    session.trust_env, session.verify = False, str(cert_path)  # see http_session for why trust_env is off
    session.headers["Connection"] = "close"
    with serve_salesforce(clock, ssl_certfile=str(cert_path), ssl_keyfile=str(key_path), api_request_limit=2) as box:
        tokens = box.tokens
        sf = Salesforce(
            instance_url=tokens["instance_url"], session_id=tokens["access_token"], session=session, version="67.0"
        )
        with pytest.raises(SalesforceMalformedRequest) as malformed:
            sf.query("SELECT Id FORM Contact")
        assert error_body(malformed.value)[0]["errorCode"] == "MALFORMED_QUERY"
        sf.query("SELECT Id FROM User LIMIT 1")
        with pytest.raises(SalesforceRefusedRequest) as limited:
            sf.query("SELECT Id FROM User LIMIT 1")
        assert error_body(limited.value)[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
        box.emulator.expire_access_tokens()
        with pytest.raises(SalesforceExpiredSession) as expired:
            sf.query("SELECT Id FROM User LIMIT 1")
        assert error_body(expired.value) == [
            {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
        ]
    session.close()


def test_custom_fields_through_the_sdk_selected_by_name_added_and_removed_at_run_time(
    sandbox: ServedSalesforce, sf: Salesforce
) -> None:
    contacts: Any = sf.Contact
    custom = {entry["name"]: entry for entry in contacts.describe()["fields"] if entry["custom"]}
    assert custom["Lead_Score__c"]["type"] == "double" and custom["Tier__c"]["picklistValues"]
    first, second = (record["Id"] for record in sandbox.emulator.contact_records(include_deleted=False)[:2])
    answer = sf.query(f"SELECT Id, Tier__c FROM Contact WHERE Id IN ('{first}', '{second}')")
    assert answer["totalSize"] == 2
    assert all(set(record) == {"attributes", "Id", "Tier__c"} for record in answer["records"])  # only those asked

    sandbox.emulator.add_custom_field("Contact", "Churn_Risk__c", "double")
    contacts.update(first, {"Churn_Risk__c": 0.25})
    assert "Churn_Risk__c" in {entry["name"] for entry in contacts.describe()["fields"]}
    assert sf.query(f"SELECT Churn_Risk__c FROM Contact WHERE Id = '{first}'")["records"][0]["Churn_Risk__c"] == 0.25
    sandbox.emulator.remove_custom_field("Contact", "Churn_Risk__c")
    with pytest.raises(SalesforceMalformedRequest) as refused:
        sf.query("SELECT Id, Churn_Risk__c FROM Contact")
    assert error_body(refused.value)[0]["errorCode"] == "INVALID_FIELD"
    assert "No such column 'Churn_Risk__c'" in error_body(refused.value)[0]["message"]
