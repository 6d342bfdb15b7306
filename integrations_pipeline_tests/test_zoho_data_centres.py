"""Zoho data centres: a code is redeemed, and its refresh token refreshed and revoked, at the accounts server the
callback named, and data is read from that data centre's API host; an accounts server the provider does not have is
refused before any secret is sent to it. The stack serves the Zoho emulator as two data centres: US at its base_url,
EU on an accounts origin and an API origin of its own (devstack.serve_zoho_data_centres)."""

import httpx
import pytest
from pydantic import SecretStr

from integrations_pipeline.clients.oauth import ACCOUNTS_SERVER
from integrations_pipeline.clients.zoho import SPEC
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.settings import ProviderApp
from integrations_pipeline.store import ConnectionStatus
from integrations_pipeline_tests.conftest import Stack
from integrations_pipeline_tests.test_refresh import expire_soon

SQLITE_ONLY = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # the store is not what is tested


@SQLITE_ONLY
def test_an_eu_account_is_authorized_refreshed_and_revoked_at_its_own_accounts_server(stack: Stack) -> None:
    zoho = stack.emulators["zoho"]
    zoho.location = "eu"  # the sandbox account now lives in the EU data centre
    eu_accounts, eu_api = zoho.data_centre_origins("eu")
    connection_id = stack.connect("acme", "zoho")
    connection = stack.store.get_connection(connection_id)
    assert connection is not None and connection.status == ConnectionStatus.ACTIVE
    assert connection.provider_metadata[ACCOUNTS_SERVER] == eu_accounts != stack.sandbox_urls["zoho"]
    assert connection.provider_metadata["api_domain"] == eu_api not in (eu_accounts, stack.sandbox_urls["zoho"])

    old_access = expire_soon(stack.store, connection_id)
    with IntegrationsResource().connector("zoho", connection_id) as client:
        assert client.get_json("/crm/v8/users", params={"type": "AllUsers"})["users"]
        assert str(client.http.base_url).rstrip("/") == eu_api  # data from the EU API host
    tokens = stack.store.load_tokens(connection_id)
    assert tokens is not None and tokens.access_token.get_secret_value() != old_access  # refreshed in the EU

    with stack.api() as api:
        disconnected = api.delete(f"/connections/{connection_id}").json()
    assert disconnected["revoked_at_provider"] is True


@SQLITE_ONLY
def test_the_us_accounts_server_refuses_an_eu_grant(stack: Stack) -> None:
    """The emulator is strict about data centres, which is what makes the test above mean something."""
    zoho = stack.emulators["zoho"]
    zoho.location = "eu"
    connection_id = stack.connect("acme", "zoho")
    zoho.location = "us"  # the same grant, now only redeemable at the US server: as if we ignored accounts-server
    expire_soon(stack.store, connection_id)
    with IntegrationsResource().connector("zoho", connection_id) as client, pytest.raises(Exception):  # noqa: B017
        client.get_json("/crm/v8/users", params={"type": "AllUsers"})
    connection = stack.store.get_connection(connection_id)
    assert connection is not None and connection.status == ConnectionStatus.NEEDS_REAUTH


@SQLITE_ONLY
def test_another_data_centres_api_host_refuses_the_token(stack: Stack) -> None:
    """Zoho answers INVALID_TOKEN when a token is used at another data centre's API host (here: the US one)."""
    zoho = stack.emulators["zoho"]
    zoho.location = "eu"
    connection_id = stack.connect("acme", "zoho")
    tokens = stack.store.load_tokens(connection_id)
    assert tokens is not None
    headers = {"Authorization": f"Zoho-oauthtoken {tokens.access_token.get_secret_value()}"}
    at_us = httpx.get(f"{stack.sandbox_urls['zoho']}/crm/v8/users", headers=headers)
    assert at_us.status_code == 401 and at_us.json()["code"] == "INVALID_TOKEN"
    eu_api = zoho.data_centre_origins("eu")[1]
    at_eu = httpx.get(f"{eu_api}/crm/v8/users", headers=headers, params={"type": "AllUsers"})
    assert at_eu.status_code == 200


@SQLITE_ONLY
def test_a_callback_naming_a_foreign_accounts_server_is_refused(stack: Stack) -> None:
    with stack.api() as api:
        started = api.post("/connections/zoho/connect", json={"tenant": "acme"}).json()
        state = dict(part.split("=", 1) for part in started["authorization_url"].split("?", 1)[1].split("&"))["state"]
        refused = api.get(
            "/oauth/zoho/callback",
            params={"state": state, "code": "1000.x", "accounts-server": "https://accounts.evil.example"},
        )
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_accounts_server"
    assert zoho_token_calls(stack) == 0


def zoho_token_calls(stack: Stack) -> int:
    return int(stack.emulators["zoho"].token_requests())


def test_only_zoho_data_centres_are_believed() -> None:
    app = ProviderApp(client_id="id", client_secret=SecretStr("secret"))
    assert SPEC.oauth_endpoints(app, "https://accounts.zoho.eu").token_url == "https://accounts.zoho.eu/oauth/v2/token"
    assert SPEC.oauth_endpoints(app, "https://accounts.zohocloud.ca/").token_url.startswith(
        "https://accounts.zohocloud"
    )
    assert SPEC.oauth_endpoints(app, "https://accounts.zoho.uk").token_url == "https://accounts.zoho.uk/oauth/v2/token"
    assert SPEC.oauth_endpoints(app, "https://accounts.zoho.sa").token_url == "https://accounts.zoho.sa/oauth/v2/token"
    for untrusted in ("https://accounts.zoho.eu.evil.example", "http://accounts.zoho.eu", "https://evil.example"):
        with pytest.raises(ValueError, match="not a Zoho CRM accounts server"):
            SPEC.oauth_endpoints(app, untrusted)
