"""Contract tests: MSAL for Python (Microsoft's own identity library, installed with azure-identity) against the
emulator's Entra ID v2.0 endpoints, over https with a throwaway certificate (MSAL only takes https authorities).

MSAL is built with `instance_discovery=False` (the instance discovery service lives at login.microsoftonline.com and
knows no other host), so it reads `{authority}/v2.0/.well-known/openid-configuration` and uses the endpoints named
there. If the discovery document, the client-credentials grant, the ID token or `client_info` drifted from what
Entra ID sends, MSAL would refuse or build a wrong account, and these tests would fail.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jwt
import msal
import pytest
import requests

from integrations_pipeline.httpserver import BackgroundServer
from integrations_pipeline.sandbox.microsoft import MicrosoftEmulator
from integrations_pipeline_tests.sandbox.conftest import ManualClock
from integrations_pipeline_tests.sandbox.test_microsoft_emulator import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI

GRAPH_DEFAULT = "https://graph.microsoft.com/.default"


@pytest.fixture
def entra(clock: ManualClock, certificate: tuple[Path, Path]) -> Iterator[tuple[MicrosoftEmulator, str]]:
    emulator = MicrosoftEmulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, users=5, contacts=5, events=5)
    cert, key = certificate
    with BackgroundServer(emulator.app, ssl_certfile=str(cert), ssl_keyfile=str(key)) as server:
        yield emulator, server.url.replace("http://", "https://")


@pytest.fixture
def session(certificate: tuple[Path, Path]) -> Iterator[requests.Session]:
    http = requests.Session()
    http.trust_env, http.verify = False, str(certificate[0])  # see test_salesforce_sdk.http_session
    http.headers["Connection"] = "close"
    yield http
    http.close()


def msal_app(url: str, tenant: str, session: requests.Session) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        CLIENT_ID,
        client_credential=CLIENT_SECRET,
        authority=f"{url}/{tenant}",
        http_client=session,
        instance_discovery=False,
    )


def test_discovery_document_names_the_emulators_endpoints(
    entra: tuple[MicrosoftEmulator, str], session: requests.Session
) -> None:
    emulator, url = entra
    config = session.get(f"{url}/{emulator.tenant_id}/v2.0/.well-known/openid-configuration").json()
    assert config["issuer"] == f"{url}/{emulator.tenant_id}/v2.0"
    assert config["token_endpoint"] == f"{url}/{emulator.tenant_id}/oauth2/v2.0/token"
    assert config["id_token_signing_alg_values_supported"] == ["RS256"]
    common = session.get(f"{url}/common/v2.0/.well-known/openid-configuration").json()
    assert common["issuer"] == f"{url}/{{tenantid}}/v2.0"  # multi-tenant: the tenant is a placeholder
    unknown = session.get(f"{url}/no-such-tenant/v2.0/.well-known/openid-configuration")
    assert unknown.status_code == 400 and unknown.json()["error_codes"] == [90002]


def test_acquire_token_for_client_after_admin_consent(
    entra: tuple[MicrosoftEmulator, str], session: requests.Session
) -> None:
    emulator, url = entra
    app = msal_app(url, emulator.tenant_id, session)
    refused = app.acquire_token_for_client(scopes=[GRAPH_DEFAULT])
    assert refused["error"] == "unauthorized_client" and 700016 in refused["error_codes"]  # no consent yet

    consent = session.get(
        f"{url}/organizations/v2.0/adminconsent",
        params={"client_id": CLIENT_ID, "scope": GRAPH_DEFAULT, "redirect_uri": REDIRECT_URI, "state": "s1"},
        allow_redirects=False,
    )
    assert consent.status_code == 302
    assert f"tenant={emulator.tenant_id}" in consent.headers["location"]
    assert "admin_consent=True" in consent.headers["location"] and "state=s1" in consent.headers["location"]

    # A new application object: MSAL remembers an identical failed request for a while and would not re-send it.
    app = msal_app(url, emulator.tenant_id, session)
    result = app.acquire_token_for_client(scopes=[GRAPH_DEFAULT])
    assert result["token_type"].lower() == "bearer" and "refresh_token" not in result, result
    bearer = {"Authorization": f"Bearer {result['access_token']}"}
    users = session.get(f"{url}/v1.0/users", headers=bearer)
    assert users.status_code == 200 and len(users.json()["value"]) == 5  # directory-wide read, app-only
    me = session.get(f"{url}/v1.0/me", headers=bearer)
    assert me.status_code == 400 and "delegated authentication flow" in me.json()["error"]["message"]

    # MSAL itself warns against /common for app-only tokens; Entra ID refuses it.
    form = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    at_common = session.post(f"{url}/common/oauth2/v2.0/token", data=form | {"scope": GRAPH_DEFAULT})
    assert at_common.status_code == 400 and at_common.json()["error"] == "invalid_request"
    wrong_scope = app.acquire_token_for_client(scopes=["User.Read.All"])
    assert wrong_scope["error"] == "invalid_scope" and 1002012 in wrong_scope["error_codes"]


# MSAL recommends response_mode=form_post (the emulator redirects with the code in the query, as a web app asking for
# response_mode=query gets it); the advice is not what is tested here.
@pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended:UserWarning")
def test_authorization_code_flow_returns_a_signed_id_token_and_client_info(
    entra: tuple[MicrosoftEmulator, str], session: requests.Session
) -> None:
    emulator, url = entra
    app = msal_app(url, "organizations", session)
    flow = app.initiate_auth_code_flow(["User.Read", "Contacts.Read"], redirect_uri=REDIRECT_URI, response_mode="query")
    landed = session.get(flow["auth_uri"], allow_redirects=False)
    assert landed.status_code == 302
    response: dict[str, Any] = dict(parse_qsl(urlsplit(landed.headers["location"]).query))

    result = app.acquire_token_by_auth_code_flow(flow, response)

    assert "access_token" in result and "refresh_token" in result, result
    me = emulator.user_records()[0]
    claims = result["id_token_claims"]
    assert (claims["oid"], claims["tid"], claims["preferred_username"]) == (
        me["id"],
        emulator.tenant_id,
        me["userPrincipalName"],
    )
    assert claims["nonce"] == hashlib.sha256(flow["nonce"].encode()).hexdigest()  # MSAL sends the nonce's hash
    (account,) = app.get_accounts()
    assert account["home_account_id"] == f"{me['id']}.{emulator.tenant_id}"  # from client_info
    keys = session.get(f"{url}/organizations/discovery/v2.0/keys").json()["keys"]
    signing_key = jwt.PyJWK(keys[0]).key
    verified = jwt.decode(
        result["id_token"],
        signing_key,
        algorithms=["RS256"],
        audience=CLIENT_ID,
        issuer=f"{url}/{emulator.tenant_id}/v2.0",
    )
    assert verified["oid"] == me["id"]
    silent = app.acquire_token_silent(["User.Read"], account=account, force_refresh=True)
    assert silent is not None and "access_token" in silent  # the rotated refresh token, through MSAL's cache
