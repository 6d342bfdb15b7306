"""Contract tests: Microsoft's official Python SDK (msgraph-sdk 1.65, async, on kiota) against the emulator.

How the SDK is pointed at the sandbox: `GraphRequestAdapter(auth_provider)` builds the SDK's own httpx client with
its default middleware (retry, redirect, URL replace for `/me`, ...), and `adapter.base_url = <emulator>/v1.0`
replaces https://graph.microsoft.com/v1.0 for every request builder.

Plain http: kiota's https-only rule lives in `AzureIdentityAccessTokenProvider` (Azure credentials), not in
`BaseBearerTokenAuthenticationProvider`; a small AccessTokenProvider of our own whose AllowedHostsValidator lists
127.0.0.1 is the supported way to authenticate with a bearer token obtained elsewhere, here from the emulator's
token endpoint. No TLS is needed.

If the emulator drifted from Graph's wire format (`@odata.nextLink`/`@odata.deltaLink`, `@removed`, error bodies),
the SDK's generated models would drop fields or raise, and these comparisons would fail.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from kiota_abstractions.api_error import APIError
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.base_request_configuration import RequestConfiguration

from integrations_pipeline_tests.sandbox.conftest import ManualClock
from integrations_pipeline_tests.sandbox.test_microsoft_emulator import (
    ServedMicrosoft,
    event_bounds,
    refresh,
    serve_microsoft,
)

# The generated request builders still define (and kiota still declares) classes their own generator has deprecated,
# and they warn while being imported: at import here, and lazily inside the SDK as a test walks `client.me...`. The
# suite turns warnings into errors, so DeprecationWarnings raised by those two packages' modules are let through.
SDK_DEPRECATIONS = ("msgraph", "kiota_abstractions")
with warnings.catch_warnings():
    for sdk_module in SDK_DEPRECATIONS:
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=sdk_module)
    from msgraph import GraphRequestAdapter, GraphServiceClient
    from msgraph.generated.users.delta.delta_request_builder import DeltaRequestBuilder as UsersDeltaRequestBuilder
    from msgraph.generated.users.item.calendar_view.delta.delta_request_builder import (
        DeltaRequestBuilder as CalendarViewDeltaRequestBuilder,
    )
    from msgraph.graph_request_adapter import options as GRAPH_ADAPTER_OPTIONS
    from msgraph_core import GraphClientFactory

pytestmark = [pytest.mark.filterwarnings(f"ignore::DeprecationWarning:{module}") for module in SDK_DEPRECATIONS]


class EmulatorToken(AccessTokenProvider):
    """Hands kiota the bearer token we obtained from the emulator's Entra endpoints."""

    def __init__(self, access_token: str) -> None:
        self.access_token = access_token

    async def get_authorization_token(self, uri: str, additional_authentication_context: Any = None) -> str:
        return self.access_token

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return AllowedHostsValidator(["127.0.0.1"])


@asynccontextmanager
async def graph_client(served: ServedMicrosoft, access_token: str | None = None) -> AsyncIterator[GraphServiceClient]:
    """The SDK as an application builds it (GraphRequestAdapter's own middleware options, with the
    `/users/me-token-to-replace` -> `/me` rewrite), on the emulator's origin.

    msgraph-core's AsyncGraphTransport does not forward `aclose` to the transport it wraps, so closing the SDK's
    client leaks its sockets: the connection pool is made and closed here instead."""
    auth = BaseBearerTokenAuthenticationProvider(EmulatorToken(access_token or served.tokens["access_token"]))
    async with httpx.AsyncHTTPTransport() as connection_pool:
        base_client = httpx.AsyncClient(transport=connection_pool, timeout=30.0)
        http_client = GraphClientFactory.create_with_default_middleware(
            options=GRAPH_ADAPTER_OPTIONS, client=base_client
        )
        adapter = GraphRequestAdapter(auth, client=http_client)
        adapter.base_url = f"{served.url}/v1.0"
        yield GraphServiceClient(request_adapter=adapter)


@pytest.fixture
def sandbox(clock: ManualClock) -> Iterator[ServedMicrosoft]:
    with serve_microsoft(clock) as served:
        yield served


async def follow_round(
    first: Callable[[], Awaitable[Any]], with_url: Callable[[str], Awaitable[Any]]
) -> tuple[list[Any], str, int]:
    """The SDK's delta round: `odata_next_link` until a page brings `odata_delta_link`."""
    page = await first()
    items, pages = list(page.value), 1
    while page.odata_next_link:
        assert page.odata_delta_link is None
        page = await with_url(page.odata_next_link)
        items.extend(page.value)
        pages += 1
    assert page.odata_delta_link
    return items, page.odata_delta_link, pages


def test_users_delta_pages_to_exactly_the_tenant_and_follows_the_delta_link(sandbox: ServedMicrosoft) -> None:
    config = RequestConfiguration(
        query_parameters=UsersDeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
            select=["id", "displayName", "mail", "userPrincipalName", "accountEnabled", "createdDateTime", "department"]
        )
    )
    config.headers.add("Prefer", "odata.maxpagesize=5")
    truth = sandbox.emulator.user_records()

    async def scenario() -> tuple[list[Any], int, list[Any]]:
        async with graph_client(sandbox) as client:
            users, delta_link, pages = await follow_round(
                lambda: client.users.delta.get(request_configuration=config),
                lambda url: client.users.delta.with_url(url).get(request_configuration=config),
            )
            sandbox.emulator.update_user(truth[1]["id"], accountEnabled=False)
            sandbox.emulator.delete_user(truth[2]["id"])
            changes, _, _ = await follow_round(
                lambda: client.users.delta.with_url(delta_link).get(),
                lambda url: client.users.delta.with_url(url).get(),
            )
            return users, pages, changes

    users, pages, changes = asyncio.run(scenario())
    assert pages == 3  # 12 users, 5 a page
    assert [user.id for user in users] == [record["id"] for record in truth]
    for user, record in zip(users, truth, strict=True):
        assert (user.display_name, user.mail, user.user_principal_name) == (
            record["displayName"],
            record["mail"],
            record["userPrincipalName"],
        )
        assert user.account_enabled is record["accountEnabled"] and user.department == record["department"]
        assert user.created_date_time == datetime.fromisoformat(record["createdDateTime"])
    assert [change.id for change in changes] == [truth[1]["id"], truth[2]["id"]]
    assert changes[0].account_enabled is False and changes[0].mail == truth[1]["mail"]  # $select kept by the link
    assert changes[1].additional_data["@removed"] == {"reason": "changed"}


def test_contacts_delta_returns_exactly_the_mailbox_then_only_the_changes(sandbox: ServedMicrosoft) -> None:
    config: RequestConfiguration[Any] = RequestConfiguration()
    config.headers.add("Prefer", "odata.maxpagesize=15")
    truth = sandbox.emulator.contact_records()

    async def scenario() -> tuple[list[Any], int, list[Any]]:
        async with graph_client(sandbox) as client:
            contacts, delta_link, pages = await follow_round(
                lambda: client.me.contacts.delta.get(request_configuration=config),
                lambda url: client.me.contacts.delta.with_url(url).get(request_configuration=config),
            )
            sandbox.clock.advance(90)
            sandbox.emulator.update_contact(truth[0]["id"], companyName="SDK Industries")
            sandbox.emulator.delete_contact(truth[1]["id"])
            changes, _, _ = await follow_round(
                lambda: client.me.contacts.delta.with_url(delta_link).get(),
                lambda url: client.me.contacts.delta.with_url(url).get(),
            )
            return contacts, pages, changes

    contacts, pages, changes = asyncio.run(scenario())
    assert pages == 3 and [contact.id for contact in contacts] == [record["id"] for record in truth]
    for contact, record in zip(contacts, truth, strict=True):
        assert (contact.given_name, contact.surname, contact.company_name, contact.job_title) == (
            record["givenName"],
            record["surname"],
            record["companyName"],
            record["jobTitle"],
        )
        assert [email.address for email in contact.email_addresses] == [
            email["address"] for email in record["emailAddresses"]
        ]
        assert contact.business_phones == record["businessPhones"]
        assert contact.last_modified_date_time == datetime.fromisoformat(record["lastModifiedDateTime"])
    assert [change.id for change in changes] == [truth[0]["id"], truth[1]["id"]]
    assert changes[0].company_name == "SDK Industries"
    assert changes[0].last_modified_date_time == datetime.fromtimestamp(int(sandbox.clock.now), UTC)
    assert changes[1].additional_data["@removed"] == {"reason": "deleted"}


def test_calendar_view_delta_for_one_day(sandbox: ServedMicrosoft) -> None:
    day = datetime(2026, 6, 8, tzinfo=UTC)
    config = RequestConfiguration(
        query_parameters=CalendarViewDeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
            start_date_time=day.strftime("%Y-%m-%dT%H:%M:%SZ"),
            end_date_time=(day + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
    )
    config.headers.add("Prefer", "odata.maxpagesize=1")
    expected = {
        record["id"]: record
        for record in sandbox.emulator.event_records()
        if event_bounds(record)[0] < day + timedelta(days=1) and event_bounds(record)[1] > day
    }

    async def scenario() -> tuple[list[Any], int, list[Any]]:
        async with graph_client(sandbox) as client:
            events, delta_link, pages = await follow_round(
                lambda: client.me.calendar_view.delta.get(request_configuration=config),
                lambda url: client.me.calendar_view.delta.with_url(url).get(request_configuration=config),
            )
            sandbox.emulator.delete_event(events[0].id)
            changes, _, _ = await follow_round(
                lambda: client.me.calendar_view.delta.with_url(delta_link).get(),
                lambda url: client.me.calendar_view.delta.with_url(url).get(),
            )
            return events, pages, changes

    events, pages, changes = asyncio.run(scenario())
    assert len(events) >= 2 and pages == len(events) and {event.id for event in events} == set(expected)
    for event in events:
        record = expected[event.id]
        assert event.subject == record["subject"] and event.is_all_day is record["isAllDay"]
        assert (event.start.date_time, event.start.time_zone) == (record["start"]["dateTime"], "UTC")
        assert event.organizer.email_address.address == record["organizer"]["emailAddress"]["address"]
    assert [change.id for change in changes] == [events[0].id]
    assert changes[0].additional_data["@removed"] == {"reason": "deleted"}


def test_retry_handler_waits_out_a_429_and_resends_with_retry_attempt(sandbox: ServedMicrosoft) -> None:
    """The SDK itself sleeps Retry-After (here one real second, the smallest it honours); the test never sleeps."""
    sandbox.emulator.throttle_next(1, retry_after_s=1)

    async def scenario() -> Any:
        async with graph_client(sandbox) as client:
            return await client.me.contacts.delta.get()

    started = time.monotonic()
    page = asyncio.run(scenario())
    assert time.monotonic() - started >= 1.0
    assert [contact.id for contact in page.value] == [r["id"] for r in sandbox.emulator.contact_records()[:10]]
    statuses = [record.status for record in sandbox.emulator.request_log if record.path.endswith("/contacts/delta()")]
    assert statuses == [429, 200]
    assert sandbox.emulator.retry_attempts == [1]


def test_stale_delta_link_and_expired_token_raise_api_errors_with_graph_codes(sandbox: ServedMicrosoft) -> None:
    async def scenario() -> tuple[APIError, APIError]:
        async with graph_client(sandbox) as client:
            _, link, _ = await follow_round(
                client.me.contacts.delta.get, lambda url: client.me.contacts.delta.with_url(url).get()
            )
            sandbox.emulator.expire_sync_tokens()
            with pytest.raises(APIError) as stale:
                await client.me.contacts.delta.with_url(link).get()
            sandbox.emulator.expire_access_tokens()
            with pytest.raises(APIError) as expired:
                await client.users.delta.get()
            return stale.value, expired.value

    stale, expired = asyncio.run(scenario())
    assert stale.response_status_code == 410
    assert stale.error.code == "SyncStateNotFound"  # type: ignore[attr-defined]
    assert expired.response_status_code == 401
    assert expired.error.code == "InvalidAuthenticationToken"  # type: ignore[attr-defined]

    # The rotated token from a refresh works again through a new client.
    rotated = refresh(sandbox.http, sandbox.tokens["refresh_token"]).json()
    assert rotated["refresh_token"] != sandbox.tokens["refresh_token"]

    async def with_rotated_token() -> Any:
        async with graph_client(sandbox, rotated["access_token"]) as client:
            return await client.users.delta.get()

    users = asyncio.run(with_rotated_token())
    assert [user.id for user in users.value] == [record["id"] for record in sandbox.emulator.user_records()]
