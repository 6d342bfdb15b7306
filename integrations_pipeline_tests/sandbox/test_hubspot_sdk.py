"""Contract tests: HubSpot's official Python SDK (hubspot-api-client 12.0.0) against the emulator over HTTP.

If the emulator drifted from HubSpot's wire format (field names, paging shape, status codes, token response),
the SDK's generated models would refuse to deserialize or these comparisons would fail.

How the SDK takes a host: `HubSpot(**config)` copies every keyword onto each generated API package's
`Configuration` with `setattr`, and `Configuration.host` has a setter, so `HubSpot(host=server.url)` points
OAuth and CRM calls alike at the sandbox (paths such as /oauth/v1/token and /crm/v3/... are appended).

The SDK's `tokens_api.create` has no `code_verifier` parameter (it raises ApiTypeError for unknown keywords),
so the SDK cannot redeem a PKCE-bound code; the SDK flow below authorizes without a challenge.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hubspot import HubSpot
from hubspot.crm.associations.v4 import (
    BatchInputPublicFetchAssociationsBatchRequest,
    PublicFetchAssociationsBatchRequest,
)
from hubspot.crm.contacts import (
    ApiException,
    BatchReadInputSimplePublicObjectId,
    Filter,
    FilterGroup,
    PublicObjectSearchRequest,
    SimplePublicObjectId,
    SimplePublicObjectInput,
    SimplePublicObjectInputForCreate,
)
from hubspot.oauth import ApiException as OAuthApiException
from hubspot.oauth import ApiTypeError

from integrations_pipeline_tests.sandbox.conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    ManualClock,
    ServedHubSpot,
    authorize,
    pkce_pair,
    serve_hubspot,
)

LISTED_PROPERTIES = ["email", "firstname", "lastname", "company", "lifecyclestage"]


@pytest.fixture
def sandbox(clock: ManualClock) -> Iterator[ServedHubSpot]:
    with serve_hubspot(clock) as served:
        yield served


@pytest.fixture
def sdk_tokens(sandbox: ServedHubSpot) -> Any:
    """Tokens obtained through the SDK's own OAuth API (the consent redirect is read with plain httpx)."""
    code = authorize(sandbox.http)
    return HubSpot(host=sandbox.url).oauth.tokens_api.create(
        grant_type="authorization_code",
        code=code,
        redirect_uri=REDIRECT_URI,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
    )


@pytest.fixture
def client(sandbox: ServedHubSpot, sdk_tokens: Any) -> HubSpot:
    return HubSpot(access_token=sdk_tokens.access_token, host=sandbox.url)


def expected_properties(record: dict[str, Any], requested: list[str]) -> dict[str, Any]:
    """What HubSpot returns for `requested`: those plus createdate, hs_object_id and lastmodifieddate."""
    names = {*requested, "createdate", "hs_object_id", "lastmodifieddate"}
    return {name: record["properties"][name] for name in names}


def test_sdk_code_exchange_returns_a_usable_token_pair(sandbox: ServedHubSpot, sdk_tokens: Any) -> None:
    assert sdk_tokens.token_type == "bearer" and sdk_tokens.expires_in == 1800
    assert sdk_tokens.access_token and sdk_tokens.refresh_token
    info = HubSpot(host=sandbox.url).oauth.access_tokens_api.get(sdk_tokens.access_token)
    assert (info.hub_id, info.token_type) == (62515, "access")
    assert "crm.objects.contacts.read" in info.scopes


def test_sdk_cannot_send_a_code_verifier_so_a_pkce_bound_code_is_refused(sandbox: ServedHubSpot) -> None:
    _, challenge = pkce_pair()
    code = authorize(sandbox.http, code_challenge=challenge)
    tokens_api = HubSpot(host=sandbox.url).oauth.tokens_api
    with pytest.raises(ApiTypeError, match="code_verifier"):
        tokens_api.create(grant_type="authorization_code", code=code, code_verifier="v" * 43)
    with pytest.raises(OAuthApiException) as refused:
        tokens_api.create(
            grant_type="authorization_code",
            code=code,
            redirect_uri=REDIRECT_URI,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
        )
    assert refused.value.status == 400
    assert json.loads(refused.value.body)["error"] == "invalid_request"


def test_get_all_returns_exactly_the_live_contacts(sandbox: ServedHubSpot, client: HubSpot) -> None:
    for contact_id in ("2", "3", "150"):
        sandbox.emulator.archive_contact(contact_id)
    # Passing archived=False makes the SDK send `archived=False` with a capital F, as real callers do.
    contacts = client.crm.contacts.get_all(properties=LISTED_PROPERTIES, archived=False)
    expected = sandbox.emulator.contact_records(include_archived=False)
    assert [contact.id for contact in contacts] == [record["id"] for record in expected]
    for contact, record in zip(contacts, expected, strict=True):
        assert contact.properties == expected_properties(record, LISTED_PROPERTIES)
        assert contact.archived is False
        assert contact.updated_at.isoformat(timespec="milliseconds").replace("+00:00", "Z") == record["updatedAt"]
    paged_requests = [r for r in sandbox.emulator.request_log if r.path == "/crm/v3/objects/contacts"]
    assert len(paged_requests) == 3  # 227 live contacts, 100 per page
    assert all("archived=False" in r.query for r in paged_requests)


def test_search_with_a_lastmodifieddate_window_pages_to_the_expected_ids(
    sandbox: ServedHubSpot, client: HubSpot
) -> None:
    records = sandbox.emulator.contact_records()
    modified = sorted(record["updatedAt"] for record in records)
    window_start, window_end = modified[25], modified[190]  # ISO strings of equal shape sort chronologically
    expected = sorted(
        (record["updatedAt"], int(record["id"]))
        for record in records
        if window_start <= record["updatedAt"] < window_end
    )
    window = FilterGroup(
        filters=[
            Filter(property_name="lastmodifieddate", operator="GTE", value=window_start),
            Filter(property_name="lastmodifieddate", operator="LT", value=window_end),
        ]
    )
    seen: list[str] = []
    totals: set[int] = set()
    after: str | None = None
    while True:
        request = PublicObjectSearchRequest(
            filter_groups=[window],
            sorts=["lastmodifieddate"],
            properties=["email", "lastmodifieddate"],
            limit=40,
            after=after,
        )
        page = client.crm.contacts.search_api.do_search(public_object_search_request=request)
        totals.add(page.total)
        seen.extend(result.id for result in page.results)
        if page.paging is None:
            break
        after = page.paging.next.after
    assert totals == {len(expected)}
    assert seen == [str(contact_id) for _, contact_id in expected]


def test_search_has_its_own_per_second_limit(clock: ManualClock) -> None:
    """Five searches per second per account, refused with HubSpot's secondly-limit body and no Retry-After; list
    calls in the same second are not refused (search is exempt from the 10-second window and has its own)."""
    with serve_hubspot(clock, search_limit=5, burst_limit=100) as served:
        client = HubSpot(access_token=served.tokens["access_token"], host=served.url)
        search = PublicObjectSearchRequest(filter_groups=[], limit=1)
        for _ in range(5):
            client.crm.contacts.search_api.do_search(public_object_search_request=search)
        with pytest.raises(ApiException) as refused:
            client.crm.contacts.search_api.do_search(public_object_search_request=search)
        assert refused.value.status == 429 and "Retry-After" not in (refused.value.headers or {})
        body = json.loads(refused.value.body)
        assert body["message"] == "You have reached your secondly limit." and body["category"] == "RATE_LIMITS"
        assert client.crm.contacts.basic_api.get_page(limit=1).results  # other calls are not held back
        clock.advance(1.0)
        assert client.crm.contacts.search_api.do_search(public_object_search_request=search).total == 230


def test_basic_api_create_update_archive_change_the_portal(
    sandbox: ServedHubSpot, client: HubSpot, clock: ManualClock
) -> None:
    basic_api = client.crm.contacts.basic_api
    clock.advance(30)
    created = basic_api.create(
        simple_public_object_input_for_create=SimplePublicObjectInputForCreate(
            properties={"email": "sdk.created@example.com", "firstname": "Sdk", "lastname": "Created"}
        )
    )
    updated = basic_api.update(
        contact_id="10", simple_public_object_input=SimplePublicObjectInput(properties={"company": "SDK Industries"})
    )
    basic_api.archive(contact_id="11")

    records = {record["id"]: record for record in sandbox.emulator.contact_records()}
    assert records[created.id]["properties"]["email"] == "sdk.created@example.com"
    assert records[created.id]["archived"] is False
    assert records["10"]["properties"]["company"] == updated.properties["company"] == "SDK Industries"
    assert records["10"]["updatedAt"] == updated.updated_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert records["11"]["archived"] is True

    fetched = basic_api.get_by_id(contact_id=created.id, properties=["firstname"])
    assert fetched.properties["firstname"] == "Sdk"
    with pytest.raises(ApiException) as missing:
        basic_api.get_by_id(contact_id="11")
    assert missing.value.status == 404


def test_meeting_attendees_through_the_associations_and_batch_read_apis(
    sandbox: ServedHubSpot, client: HubSpot
) -> None:
    """What the connector asks for each page of meetings: their contacts (v4 associations batch read: results for
    the meetings that have some, a 207 error per meeting without), then those contacts (batch read, 100 at most)."""
    meetings = [record["id"] for record in sandbox.emulator.meeting_records(include_archived=False)[:40]]
    request = BatchInputPublicFetchAssociationsBatchRequest(
        inputs=[PublicFetchAssociationsBatchRequest(id=meeting_id) for meeting_id in meetings]
    )
    answer = client.crm.associations.v4.batch_api.get_page("meetings", "contacts", request)
    read = {result._from.id: [to.to_object_id for to in result.to] for result in answer.results}
    expected = {m: ids for m in meetings if (ids := sandbox.emulator.meeting_contact_ids(m))}
    assert read == expected and read
    assert {kind.type_id for result in answer.results for to in result.to for kind in to.association_types} == {200}
    unattended = sorted(set(meetings) - set(expected))
    assert sorted(e.context["fromObjectId"][0] for e in answer.errors) == unattended and unattended

    contact_ids = sorted({contact_id for ids in read.values() for contact_id in ids}, key=int)
    batch = client.crm.contacts.batch_api.read(
        BatchReadInputSimplePublicObjectId(
            inputs=[SimplePublicObjectId(id=contact_id) for contact_id in [*contact_ids, "999999"]],
            properties=["email", "firstname"],
            properties_with_history=[],
        )
    )
    truth = {record["id"]: record["properties"] for record in sandbox.emulator.contact_records()}
    assert {c.id: c.properties["email"] for c in batch.results} == {i: truth[i]["email"] for i in contact_ids}
    assert [error.context["ids"] for error in batch.errors] == [["999999"]]
    with pytest.raises(ApiException) as too_many:
        client.crm.contacts.batch_api.read(
            BatchReadInputSimplePublicObjectId(
                inputs=[SimplePublicObjectId(id=str(n)) for n in range(1, 102)],
                properties=[],
                properties_with_history=[],
            )
        )
    assert too_many.value.status == 400 and "100" in json.loads(too_many.value.body)["message"]


def test_refresh_through_the_sdk_keeps_the_refresh_token_and_works(sandbox: ServedHubSpot, sdk_tokens: Any) -> None:
    sandbox.emulator.expire_access_tokens()
    with pytest.raises(ApiException) as expired:
        HubSpot(access_token=sdk_tokens.access_token, host=sandbox.url).crm.contacts.basic_api.get_page(limit=1)
    assert expired.value.status == 401
    assert json.loads(expired.value.body)["category"] == "EXPIRED_AUTHENTICATION"

    refreshed = HubSpot(host=sandbox.url).oauth.tokens_api.create(
        grant_type="refresh_token",
        refresh_token=sdk_tokens.refresh_token,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
    )
    assert refreshed.refresh_token == sdk_tokens.refresh_token
    assert refreshed.access_token != sdk_tokens.access_token
    assert sandbox.emulator.token_requests("refresh_token") == 1
    page = HubSpot(access_token=refreshed.access_token, host=sandbox.url).crm.contacts.basic_api.get_page(limit=1)
    assert [contact.id for contact in page.results] == ["1"]
    assert page.paging.next.after == "2"
    assert httpx.URL(page.paging.next.link).host == "127.0.0.1"
