"""App-only Microsoft connections: an organisation's administrator grants admin consent, the operator connects the
tenant with `connections connect-app-only`, and syncs read the whole directory's users with client-credentials
tokens (no refresh token; a new token when the old one expires), against the Microsoft emulator over HTTP."""

from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from click.testing import CliRunner

from integrations_pipeline.cli import main
from integrations_pipeline.clients.providers import ENTITIES
from integrations_pipeline.clients.spec import SyncRequest
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.store import ConnectionStatus
from integrations_pipeline_tests.conftest import Stack
from integrations_pipeline_tests.test_refresh import expire_soon

SQLITE_ONLY = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # the store is not what is tested
READERS = {spec.entity: spec.read for spec in ENTITIES if spec.provider == "microsoft"}


def connect_app_only(directory_tenant: str) -> tuple[int, str]:
    arguments = ["connections", "connect-app-only", "microsoft", "--tenant", "acme", "--directory-tenant"]
    result = CliRunner().invoke(main, [*arguments, directory_tenant])
    assert "Traceback" not in result.output
    return result.exit_code, result.output


@SQLITE_ONLY
def test_admin_consent_then_app_only_syncs_of_the_directory(stack: Stack) -> None:
    graph = stack.emulators["microsoft"]
    code, output = connect_app_only(graph.tenant_id)
    assert code == 1 and "admin consent" in output  # no consent yet: the operator gets the URL to send
    consent_url = output[output.index("http") :].split()[0]
    assert urlsplit(consent_url).path == f"/{graph.tenant_id}/v2.0/adminconsent"
    consented = httpx.get(consent_url)  # the administrator agrees; Entra sends them back with the tenant id
    assert consented.status_code == 302
    landing = parse_qs(urlsplit(consented.headers["location"]).query)
    assert (landing["admin_consent"], landing["tenant"]) == (["True"], [graph.tenant_id])

    assert connect_app_only(graph.tenant_id) == (0, f"microsoft-acme\tactive\tapp-only for {graph.tenant_id}\n")
    connection = stack.store.get_connection("microsoft-acme")
    assert connection is not None and connection.status == ConnectionStatus.ACTIVE
    assert connection.provider_metadata == {"auth_mode": "app_only", "directory_tenant_id": graph.tenant_id}
    tokens = stack.store.load_tokens("microsoft-acme")
    assert tokens is not None and tokens.refresh_token is None

    expire_soon(stack.store, "microsoft-acme")
    request = SyncRequest("microsoft-acme", None, datetime.now(UTC), window=None)
    with IntegrationsResource().connector("microsoft", "microsoft-acme") as client:
        users = [record for page in READERS["users"](client, request) for record in page.records]
        contacts = [record for page in READERS["contacts"](client, request) for record in page.records]
    assert sorted(user["source_id"] for user in users) == sorted(user["id"] for user in graph.user_records())
    assert contacts == []  # no signed-in mailbox: the directory only
    assert graph.token_requests("client_credentials") == 3  # refused, connected, renewed on expiry
    renewed = stack.store.load_tokens("microsoft-acme")
    assert renewed is not None and renewed.access_token != tokens.access_token


@SQLITE_ONLY
def test_a_directory_tenant_that_is_not_a_tenant_is_refused(stack: Stack) -> None:
    code, output = connect_app_only("../common")
    assert code == 1 and "not a Microsoft 365 directory tenant" in output
    assert stack.emulators["microsoft"].token_requests("client_credentials") == 0


def start_admin_consent(stack: Stack, directory_tenant: str) -> str:
    with stack.api() as api:
        started = api.post(
            "/connections/microsoft/admin-consent", json={"tenant": "acme", "directory_tenant": directory_tenant}
        )
    assert started.status_code == 200, started.text
    return str(started.json()["authorization_url"])


def land(consent_url: str) -> httpx.Response:
    """The administrator's browser: Entra's admin consent page, then its redirect to the gateway's landing."""
    consented = httpx.get(consent_url)
    assert consented.status_code == 302, consented.text
    return httpx.get(consented.headers["location"])


@SQLITE_ONLY
def test_the_admin_consent_landing_connects_the_directory_app_only(stack: Stack) -> None:
    graph = stack.emulators["microsoft"]
    consent_url = start_admin_consent(stack, graph.tenant_id)
    assert parse_qs(urlsplit(consent_url).query)["redirect_uri"] == [
        f"{stack.gateway_url}/oauth/microsoft/adminconsent"
    ]

    consented = httpx.get(consent_url)
    landing_url = consented.headers["location"]
    assert parse_qs(urlsplit(landing_url).query)["admin_consent"] == ["True"]
    landed = httpx.get(landing_url)
    assert landed.status_code == 200, landed.text
    assert (landed.json()["id"], landed.json()["status"]) == ("microsoft-acme", "active")
    connection = stack.store.get_connection("microsoft-acme")
    assert connection is not None
    assert connection.provider_metadata == {"auth_mode": "app_only", "directory_tenant_id": graph.tenant_id}

    replayed = httpx.get(landing_url)  # the state is single-use
    assert (replayed.status_code, replayed.json()["error"]) == (400, "invalid_state")
    assert "already used" in replayed.json()["message"]
    assert graph.token_requests("client_credentials") == 1


@SQLITE_ONLY
def test_a_refused_or_misdirected_admin_consent_connects_nothing(stack: Stack) -> None:
    graph = stack.emulators["microsoft"]
    graph.admin_cancels_consent = True
    consent_url = start_admin_consent(stack, graph.tenant_id)
    denied = land(consent_url)
    assert (denied.status_code, denied.json()["error"]) == (400, "admin_consent_denied")
    assert "permission_denied: The admin canceled the request" in denied.json()["message"]
    graph.admin_cancels_consent = False
    retried = httpx.get(consent_url, follow_redirects=True)  # the state went with the refusal: start again
    assert (retried.status_code, retried.json()["error"]) == (400, "invalid_state")

    landing = f"{stack.gateway_url}/oauth/microsoft/adminconsent"
    consent_refused = {"error": "permission_denied", "error_description": "The admin canceled the request"}
    stateless_refusal = httpx.get(landing, params=consent_refused)  # as Entra's documentation shows it: no state
    assert (stateless_refusal.status_code, stateless_refusal.json()["error"]) == (400, "admin_consent_denied")

    with stack.api() as api:  # a sign-in state is not an admin consent state
        sign_in = api.post("/connections/microsoft/connect", json={"tenant": "acme"}).json()["authorization_url"]
    sign_in_state = parse_qs(urlsplit(sign_in).query)["state"][0]
    misused = httpx.get(landing, params={"admin_consent": "True", "tenant": graph.tenant_id, "state": sign_in_state})
    assert (misused.status_code, misused.json()["error"]) == (400, "invalid_state")

    stateless = httpx.get(landing, params={"admin_consent": "True", "tenant": graph.tenant_id})
    assert (stateless.status_code, stateless.json()["error"]) == (400, "missing_state")
    assert "connect-app-only" in stateless.json()["message"]
    with stack.api() as api:
        bad_tenant = api.post(
            "/connections/microsoft/admin-consent", json={"tenant": "acme", "directory_tenant": "../x"}
        )
        sign_in_only = api.post("/connections/hubspot/admin-consent", json={"tenant": "acme", "directory_tenant": "x"})
    assert (bad_tenant.status_code, sign_in_only.json()["error"]) == (422, "app_only_unsupported")
    assert stack.store.get_connection("microsoft-acme") is None
    assert graph.token_requests("client_credentials") == 0
