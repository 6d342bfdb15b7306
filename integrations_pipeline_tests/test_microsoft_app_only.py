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
