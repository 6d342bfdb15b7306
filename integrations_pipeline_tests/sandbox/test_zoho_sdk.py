"""Contract tests: Zoho's official Python SDK (zohocrmsdk8-0) against the Zoho emulator over HTTP.

How the SDK is pointed at the emulator: `Initializer.initialize(environment=...)` takes a
`DataCenter.Environment(url, accounts_url, file_upload_url)`. Every CRM call is `environment.url + /crm/v8/...`
(CommonAPIHandler.set_api_url) and every token call POSTs to `environment.accounts_url` verbatim, so accounts_url
is the full token URL (`<emulator>/oauth/v2/token`), as in USDataCenter. After a token call the SDK looks the
returned `api_domain` up with `DataCenter.get`; the emulator's URL is no known data centre, so the custom
environment stays in force. Tokens live in a FileStore under the test's tmp_path, field metadata (the SDK reads
`/crm/v8/settings/fields?module=Contacts`, and Accounts for the Account_Name lookup) under a tmp resource path.

The SDK's own code exchange sends no `code_verifier`, so its grant token is authorized without a PKCE challenge.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
from zohocrmsdk.src.com.zoho.api.authenticator.store.file_store import FileStore
from zohocrmsdk.src.com.zoho.crm.api import HeaderMap, ParameterMap
from zohocrmsdk.src.com.zoho.crm.api.dc.data_center import DataCenter
from zohocrmsdk.src.com.zoho.crm.api.exception import SDKException
from zohocrmsdk.src.com.zoho.crm.api.initializer import Initializer
from zohocrmsdk.src.com.zoho.crm.api.modules import ModulesOperations
from zohocrmsdk.src.com.zoho.crm.api.modules import ResponseWrapper as ModulesResponseWrapper
from zohocrmsdk.src.com.zoho.crm.api.record import APIException, GetRecordsParam, RecordOperations, ResponseWrapper
from zohocrmsdk.src.com.zoho.crm.api.sdk_config import SDKConfig
from zohocrmsdk.src.com.zoho.crm.api.util import Utility

from integrations_pipeline.httpserver import BackgroundServer
from integrations_pipeline.sandbox.zoho import ZohoEmulator
from integrations_pipeline_tests.sandbox.conftest import ManualClock

CLIENT_ID = "1000.SANDBOXCLIENT"
CLIENT_SECRET = "sandbox-zoho-secret"
REDIRECT_URI = "http://127.0.0.1:9/oauth/callback"
SCOPES = (
    "ZohoCRM.modules.ALL,ZohoCRM.users.READ,ZohoCRM.org.READ,ZohoCRM.settings.fields.READ,ZohoCRM.settings.modules.READ"
)
FIELDS = ("First_Name", "Last_Name", "Email", "Phone", "Modified_Time")
CONTACTS = 450


@pytest.fixture
def sandbox(clock: ManualClock) -> Iterator[tuple[ZohoEmulator, str]]:
    emulator = ZohoEmulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, contacts=CONTACTS, events=20, clock=clock)
    with BackgroundServer(emulator.app) as server:
        yield emulator, server.url


@pytest.fixture(autouse=True)
def _fresh_sdk_state() -> Iterator[None]:
    """The SDK keeps the initializer and field caches in class attributes: start and end every test clean."""
    Utility.api_supported_modules = {}
    yield
    Initializer.initializer = None


def grant_code_url(url: str) -> str:
    params = {
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "response_type": "code",
        "scope": SCOPES,
        "access_type": "offline",
        "prompt": "consent",
    }
    return str(httpx.URL(url + "/oauth/v2/auth", params=params))


def grant_code(url: str) -> str:
    response = httpx.get(grant_code_url(url))
    assert response.status_code == 302, response.text
    return httpx.URL(response.headers["location"]).params["code"]


def initialize(
    url: str, token: OAuthToken, tmp_path: Path, *, auto_refresh_fields: bool = False, accounts: str | None = None
) -> None:
    environment = DataCenter.Environment(url, (accounts or url) + "/oauth/v2/token", url)
    resources = tmp_path / "resources"
    resources.mkdir(parents=True, exist_ok=True)
    Initializer.initialize(
        environment=environment,
        token=token,
        store=FileStore(str(tmp_path / "sdk_tokens.txt")),
        sdk_config=SDKConfig(auto_refresh_fields=auto_refresh_fields, pick_list_validation=False),
        resource_path=str(resources),
    )


def all_contacts_through_sdk(per_page: int) -> tuple[list[Any], int]:
    """Page with the SDK's own `next_page_token` until `more_records` is false; returns records and page count."""
    records: list[Any] = []
    pages = 0
    token: str | None = None
    while True:
        params = ParameterMap()
        params.add(GetRecordsParam.fields, ",".join(FIELDS))
        params.add(GetRecordsParam.per_page, per_page)
        params.add(GetRecordsParam.sort_by, "id")
        params.add(GetRecordsParam.sort_order, "asc")
        if token is not None:
            params.add(GetRecordsParam.page_token, token)
        response = RecordOperations("Contacts").get_records(params)
        assert response.get_status_code() == 200
        wrapper = response.get_object()
        assert isinstance(wrapper, ResponseWrapper), wrapper
        records.extend(wrapper.get_data())
        pages += 1
        info = wrapper.get_info()
        if not info.get_more_records():
            return records, pages
        token = info.get_next_page_token()


def initialize_with_a_grant(url: str, tmp_path: Path) -> OAuthToken:
    """The SDK initialized with a fresh grant token, which it redeems."""
    token = OAuthToken(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, grant_token=grant_code(url), redirect_url=REDIRECT_URI
    )
    initialize(url, token, tmp_path)
    return token


def assert_same_contacts(records: list[Any], emulator: ZohoEmulator) -> None:
    expected = emulator.contact_records()
    assert [str(record.get_id()) for record in records] == [item["id"] for item in expected]
    for record, item in zip(records, expected, strict=True):
        for name in ("First_Name", "Last_Name", "Email", "Phone"):
            assert record.get_key_value(name) == item[name]
        modified = record.get_key_value("Modified_Time")
        assert isinstance(modified, datetime)
        assert modified == datetime.fromisoformat(item["Modified_Time"])


def test_sdk_redeems_a_grant_token_and_pages_every_contact_with_page_tokens(
    sandbox: tuple[ZohoEmulator, str], tmp_path: Path
) -> None:
    emulator, url = sandbox
    token = initialize_with_a_grant(url, tmp_path)
    assert emulator.token_requests("authorization_code") == 1
    assert token.get_refresh_token() in emulator.issued_tokens()  # offline access: a refresh token came back

    records, pages = all_contacts_through_sdk(per_page=200)

    assert pages == 3
    assert_same_contacts(records, emulator)
    paths = [entry.path for entry in emulator.request_log]
    assert "/crm/v8/settings/fields" in paths  # the SDK reads the module's field metadata first
    listed = [entry for entry in emulator.request_log if entry.path == "/crm/v8/Contacts"]
    assert [("page_token=" in entry.query) for entry in listed] == [False, True, True]
    assert all(entry.status == 200 for entry in listed)


def test_sdk_refreshes_from_a_refresh_token_and_sees_mutations(
    sandbox: tuple[ZohoEmulator, str], clock: ManualClock, tmp_path: Path
) -> None:
    emulator, url = sandbox
    exchange = httpx.post(
        url + "/oauth/v2/token",
        data={
            "grant_type": "authorization_code",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uri": REDIRECT_URI,
            "code": grant_code(url),
        },
    ).json()
    clock.advance(60)
    emulator.update_contact(emulator.contact_records()[5]["id"], {"Email": "changed.by.test@example.com"})
    emulator.delete_contact(emulator.contact_records()[7]["id"])
    created_id = emulator.create_contact({"Last_Name": "Sdk", "Email": "sdk.created@example.com"})

    token = OAuthToken(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, refresh_token=exchange["refresh_token"])
    initialize(url, token, tmp_path)
    assert emulator.token_requests("refresh_token") == 1
    assert token.get_access_token() != exchange["access_token"]

    records, pages = all_contacts_through_sdk(per_page=150)

    assert pages == 3  # 450 contacts - 1 deleted + 1 created, 150 a page
    assert_same_contacts(records, emulator)
    emails = {record.get_key_value("Email") for record in records}
    assert {"changed.by.test@example.com", "sdk.created@example.com"} <= emails
    assert created_id == str(records[-1].get_id())


def test_sdk_surfaces_zoho_errors_for_missing_fields_and_a_revoked_grant(
    sandbox: tuple[ZohoEmulator, str], tmp_path: Path
) -> None:
    emulator, url = sandbox
    token = initialize_with_a_grant(url, tmp_path)
    params = ParameterMap()
    params.add(GetRecordsParam.per_page, 10)
    response = RecordOperations("Contacts").get_records(params)
    assert response.get_status_code() == 400
    error = response.get_object()
    assert isinstance(error, APIException)
    assert error.get_code().get_value() == "REQUIRED_PARAM_MISSING"
    assert error.get_details()["param_name"] == "fields"

    emulator.revoke_refresh_tokens()
    Initializer.initializer = None
    revoked = OAuthToken(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, refresh_token=token.get_refresh_token())
    with pytest.raises(SDKException) as refused:
        initialize(url, revoked, tmp_path / "second")
    assert "invalid_code" in str(refused.value)


def test_sdk_refreshing_fields_lists_modules_then_reads_every_modules_fields(
    sandbox: tuple[ZohoEmulator, str], tmp_path: Path
) -> None:
    """With auto_refresh_fields the SDK calls GET /settings/modules first, keeps the api_supported modules, and
    reads /settings/fields for each of them: every module listed must answer its fields."""
    emulator, url = sandbox
    token = OAuthToken(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, grant_token=grant_code(url), redirect_url=REDIRECT_URI
    )
    initialize(url, token, tmp_path, auto_refresh_fields=True)
    modules = ModulesOperations().get_modules(ParameterMap(), HeaderMap()).get_object()
    assert isinstance(modules, ModulesResponseWrapper), modules
    listed = {module.get_api_name() for module in modules.get_modules() if module.get_api_supported()}
    assert listed == {"Accounts", "Contacts", "Events"}
    records, _ = all_contacts_through_sdk(per_page=200)
    assert len(records) == CONTACTS
    log = [(entry.path, entry.query, entry.status) for entry in emulator.request_log]
    first_fields = next(index for index, (path, _, _) in enumerate(log) if path == "/crm/v8/settings/fields")
    assert ("/crm/v8/settings/modules", "", 200) in log[:first_fields]  # modules first
    fields_read = {query.split("module=")[1] for path, query, status in log if path == "/crm/v8/settings/fields"}
    assert fields_read == listed
    assert all(status == 200 for path, _, status in log if path.startswith("/crm/v8/settings/"))


def test_sdk_reads_an_eu_account_at_the_eu_origins_only(clock: ManualClock, tmp_path: Path) -> None:
    """The SDK's EU environment: tokens from the EU accounts server, data from the EU API host; the US API host
    refuses that token as Zoho does (INVALID_TOKEN)."""
    emulator = ZohoEmulator(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, contacts=30, events=5, clock=clock, location="eu"
    )
    us, eu_accounts, eu_api = (BackgroundServer(emulator.app) for _ in range(3))
    with us, eu_accounts, eu_api:
        emulator.serve_data_centre("us", accounts_origin=us.url, api_origin=us.url)
        emulator.serve_data_centre("eu", accounts_origin=eu_accounts.url, api_origin=eu_api.url)
        consent = httpx.URL(httpx.get(grant_code_url(us.url)).headers["location"])
        assert (consent.params["location"], consent.params["accounts-server"]) == ("eu", eu_accounts.url)
        token = OAuthToken(
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            grant_token=consent.params["code"],
            redirect_url=REDIRECT_URI,
        )
        initialize(eu_api.url, token, tmp_path, accounts=eu_accounts.url)
        records, _ = all_contacts_through_sdk(per_page=200)
        assert len(records) == 30
        header = {"Authorization": f"Zoho-oauthtoken {token.get_access_token()}"}
        refused = httpx.get(us.url + "/crm/v8/users", headers=header, params={"type": "AllUsers"})
        assert refused.status_code == 401 and refused.json()["code"] == "INVALID_TOKEN"
        at_us_accounts = httpx.post(
            us.url + "/oauth/v2/token",
            data={
                "grant_type": "refresh_token",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "refresh_token": token.get_refresh_token(),
            },
        )
        assert at_us_accounts.json() == {"error": "invalid_code"}


def test_sdk_reads_a_custom_field_added_at_run_time_by_name_and_by_ids(
    sandbox: tuple[ZohoEmulator, str], tmp_path: Path
) -> None:
    emulator, url = sandbox
    initialize_with_a_grant(url, tmp_path)
    emulator.add_custom_field("Contacts", "Churn_Risk", "double")
    first, second = (item["id"] for item in emulator.contact_records()[:2])
    emulator.update_contact(first, {"Churn_Risk": 0.25})
    params = ParameterMap()
    params.add(GetRecordsParam.fields, "Last_Name,Churn_Risk,Customer_Tier")
    params.add(GetRecordsParam.ids, f"{first},{second}")
    response = RecordOperations("Contacts").get_records(params)
    assert response.get_status_code() == 200
    wrapper = response.get_object()
    assert isinstance(wrapper, ResponseWrapper), wrapper
    records = {str(record.get_id()): record for record in wrapper.get_data()}
    assert set(records) == {first, second}
    assert records[first].get_key_value("Churn_Risk") == 0.25
    assert records[second].get_key_value("Customer_Tier") == emulator.contact_records()[1]["Customer_Tier"]
