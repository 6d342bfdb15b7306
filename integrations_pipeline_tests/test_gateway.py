"""The gateway over real HTTP, in front of the HubSpot emulator and a real state store."""

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from integrations_pipeline.gateway import create_app
from integrations_pipeline.httpserver import BackgroundServer
from integrations_pipeline.settings import load_settings
from integrations_pipeline.store.repository import verify_audit_chain
from integrations_pipeline_tests.conftest import API_KEY, HUBSPOT_CLIENT_SECRET, Stack


def start(stack: Stack, body: object, provider: str = "hubspot") -> httpx.Response:
    with stack.api() as api:
        return api.post(f"/connections/{provider}/connect", json=body)


def assert_no_secret(stack: Stack, text: str) -> None:
    tokens = [t for c in stack.store.list_connections() if (t := stack.store.load_tokens(c.id)) is not None]
    secrets = [*stack.client_secrets(), API_KEY, stack.settings.encryption_keys.get_secret_value().split(":")[1]]
    secrets += [token.access_token.get_secret_value() for token in tokens]
    secrets += [token.refresh_token.get_secret_value() for token in tokens if token.refresh_token]
    assert not [secret for secret in secrets if secret in text]


def test_health_ready_and_openapi(stack: Stack) -> None:
    assert httpx.get(f"{stack.gateway_url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{stack.gateway_url}/ready").json() == {"status": "ready"}
    document = httpx.get(f"{stack.gateway_url}/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert {"/connections/{provider}/connect", "/oauth/{provider}/callback", "/connections/{connection_id}"} <= set(
        document["paths"]
    )
    assert "ConnectRequest" in document["components"]["schemas"]


@pytest.mark.parametrize("header", [None, "Bearer wrong-key-wrong-key", "Basic " + API_KEY, API_KEY])
def test_management_endpoints_need_the_api_key(stack: Stack, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = httpx.get(f"{stack.gateway_url}/connections", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["error"] == "unauthorized"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "tenant"),
        ({"tenant": ""}, "tenant"),
        ({"tenant": "../etc"}, "tenant"),
        ({"tenant": "acme", "extra": 1}, "extra"),
        ({"tenant": "acme", "scopes": "not-a-list"}, "scopes"),
        ([1, 2], "body"),
    ],
)
def test_bad_bodies_get_a_4xx_naming_the_field(stack: Stack, body: object, field: str) -> None:
    response = start(stack, body)
    assert response.status_code == 422
    payload = response.json()
    assert payload["error"] == "invalid_body"
    assert any(name == field or name.startswith(field) for name in payload["fields"]) or field == "body"


def test_malformed_json_and_oversized_bodies(stack: Stack) -> None:
    with stack.api() as api:
        broken = api.post(
            "/connections/hubspot/connect", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        huge = api.post("/connections/hubspot/connect", content=b" " * 70_000)
    assert broken.status_code == 422 and broken.json()["error"] == "invalid_body"
    assert huge.status_code == 413 and huge.json()["error"] == "body_too_large"


def test_unknown_provider_and_route(stack: Stack) -> None:
    unknown = start(stack, {"tenant": "acme"}, provider="myspace")
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_provider"
    assert start(stack, {"tenant": "acme"}, provider="..%2F..%2Fetc").status_code == 404
    assert httpx.get(f"{stack.gateway_url}/nope").status_code == 404
    assert httpx.put(f"{stack.gateway_url}/health").status_code == 405


@pytest.mark.parametrize(
    "return_path",
    [
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
        "javascript:alert(1)",
        "http://[evil",  # urlsplit raises ValueError on these two: a 500 once
        "https://\uff03evil.example",
    ],
)
def test_open_redirects_are_refused(stack: Stack, return_path: str) -> None:
    response = start(stack, {"tenant": "acme", "return_path": return_path})
    # The shape rule is the body's schema (422); the allow-list of origins is a setting (400).
    assert response.status_code in (400, 422) and "return_path" in response.json()["fields"]


def test_connect_uses_pkce_and_a_long_state(stack: Stack) -> None:
    response = start(stack, {"tenant": "acme"})
    assert response.status_code == 200
    query = parse_qs(urlsplit(response.json()["authorization_url"]).query)
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) == 43
    assert len(query["state"][0]) >= 22  # 128 bits in URL-safe base64; ours carry 256
    assert query["redirect_uri"] == [f"{stack.gateway_url}/oauth/hubspot/callback"]
    assert_no_secret(stack, response.text)


def test_full_oauth_flow_then_read_and_disconnect(stack: Stack) -> None:
    connection_id = stack.connect("acme")
    assert connection_id == "hubspot-acme"
    with stack.api() as api:
        listed = api.get("/connections", params={"tenant": "acme"})
        one = api.get(f"/connections/{connection_id}")
        assert listed.status_code == one.status_code == 200
        view = one.json()
        assert view["status"] == "active" and view["external_account_id"] == str(stack.emulator.portal_id)
        assert view["token_expires_at"] is not None and view["missing_scopes"] == []
        assert_no_secret(stack, listed.text + one.text)
        assert api.get("/connections/hubspot-nobody").status_code == 404
        refresh_token = stack.store.load_tokens(connection_id).refresh_token.get_secret_value()  # type: ignore[union-attr]
        gone = api.delete(f"/connections/{connection_id}")
    assert gone.status_code == 200
    assert gone.json() == {"id": connection_id, "status": "disconnected", "revoked_at_provider": True}
    assert stack.store.load_tokens(connection_id) is None
    refreshed = httpx.post(
        f"{stack.sandbox_url}/oauth/v1/token",
        data={
            "grant_type": "refresh_token",
            "client_id": "test-hubspot-app",
            "client_secret": HUBSPOT_CLIENT_SECRET,
            "refresh_token": refresh_token,
        },
    )
    assert refreshed.status_code == 400  # revoked at the provider
    actions = [entry.action for entry in stack.store.audit_entries(connection_id=connection_id)]
    assert actions == ["connection.connected", "connection.disconnected"]
    entries = stack.store.audit_entries()
    assert verify_audit_chain(entries) is None
    assert_no_secret(stack, " ".join(entry.model_dump_json() for entry in entries))


def test_a_state_cannot_be_replayed_forged_or_used_for_another_provider(stack: Stack) -> None:
    authorization_url = start(stack, {"tenant": "acme"}).json()["authorization_url"]
    consent = httpx.get(authorization_url)  # the emulator consents and redirects to our callback
    assert consent.status_code == 302
    callback = consent.headers["location"]
    first = httpx.get(callback)
    assert first.status_code == 200 and first.json()["status"] == "active"
    replayed = httpx.get(callback)
    assert replayed.status_code == 400 and replayed.json()["error"] == "invalid_state"
    forged = httpx.get(f"{stack.gateway_url}/oauth/hubspot/callback", params={"state": "x" * 43, "code": "c"})
    assert forged.status_code == 400 and forged.json()["error"] == "invalid_state"
    missing = httpx.get(f"{stack.gateway_url}/oauth/hubspot/callback", params={"code": "c"})
    assert missing.status_code == 400 and missing.json()["error"] == "missing_state"
    state = parse_qs(urlsplit(start(stack, {"tenant": "acme"}).json()["authorization_url"]).query)["state"][0]
    other = httpx.get(f"{stack.gateway_url}/oauth/zoho/callback", params={"state": state, "code": "c"})
    assert other.status_code == 400 and "another provider" in other.json()["message"]


def test_provider_errors_and_bad_codes_are_4xx_and_redirect_home(stack: Stack) -> None:
    started = start(stack, {"tenant": "acme", "return_path": "/settings/integrations"}).json()
    state = parse_qs(urlsplit(started["authorization_url"]).query)["state"][0]
    denied = httpx.get(f"{stack.gateway_url}/oauth/hubspot/callback", params={"state": state, "error": "access_denied"})
    assert denied.status_code == 303
    assert denied.headers["location"] == "/settings/integrations?error=authorization_failed"
    state = parse_qs(urlsplit(start(stack, {"tenant": "acme"}).json()["authorization_url"]).query)["state"][0]
    bad_code = httpx.get(f"{stack.gateway_url}/oauth/hubspot/callback", params={"state": state, "code": "forged"})
    assert bad_code.status_code == 400 and bad_code.json()["error"] == "invalid_code"
    assert stack.store.list_connections() == []


def test_success_redirects_to_the_return_path(stack: Stack) -> None:
    started = start(stack, {"tenant": "beta", "return_path": "/done?from=hubspot"}).json()
    consent = httpx.get(started["authorization_url"])
    landed = httpx.get(consent.headers["location"])
    assert landed.status_code == 303
    assert landed.headers["location"] == "/done?from=hubspot&connection_id=hubspot-beta&status=active"


def test_database_down_is_503_with_retry_after_never_2xx(key_spec: str) -> None:
    # Nothing listens on port 1: every database call fails the way an outage does.
    settings = load_settings(
        state_database_url="postgresql+psycopg2://nobody@127.0.0.1:1/none?connect_timeout=2",
        encryption_keys=key_spec,
        api_key=API_KEY,
        hubspot={"client_id": "app", "client_secret": "secret", "base_url": "http://127.0.0.1:9"},
    )
    with BackgroundServer(create_app(settings)) as gateway:
        ready = httpx.get(f"{gateway.url}/ready")
        connect = httpx.post(
            f"{gateway.url}/connections/hubspot/connect",
            json={"tenant": "acme"},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
    for response in (ready, connect):
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert response.json()["error"] == "database_unavailable"
