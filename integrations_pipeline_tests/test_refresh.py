"""Token refresh: exactly one provider call per expiry across processes, 401 handling, invalid_grant."""

import multiprocessing
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from integrations_pipeline.clients.auth import ConnectionAuth
from integrations_pipeline.clients.errors import NeedsReauth
from integrations_pipeline.clients.hubspot import HubSpotClient
from integrations_pipeline.store import ConnectionStatus, StateStore, TokenSet
from integrations_pipeline_tests.conftest import Stack
from integrations_pipeline_tests.refresh_worker import race_for_a_token, token_source

WORKERS = 20


def expire_soon(store: StateStore, connection_id: str) -> str:
    """Pretend time has passed: the stored access token now has one minute left (inside the 5-minute margin)."""
    tokens = store.load_tokens(connection_id)
    assert tokens is not None
    with store.locked(connection_id) as conn:
        store.save_tokens(
            conn,
            connection_id,
            TokenSet(
                access_token=tokens.access_token,
                refresh_token=tokens.refresh_token,
                expires_at=datetime.now(UTC) + timedelta(minutes=1),
            ),
        )
    return tokens.access_token.get_secret_value()


def settings_overrides(stack: Stack) -> dict[str, Any]:
    app = stack.settings.provider_app("hubspot")
    return {
        "state_database_url": stack.settings.state_database_url,
        "encryption_keys": stack.settings.encryption_keys.get_secret_value(),  # type: ignore[union-attr]
        "hubspot": {
            "client_id": app.client_id,
            "client_secret": app.client_secret.get_secret_value(),
            "base_url": str(app.base_url),
        },
    }


def test_twenty_processes_needing_a_refresh_make_exactly_one_token_call(stack: Stack) -> None:
    connection_id = stack.connect()
    old_access = expire_soon(stack.store, connection_id)
    calls_before = stack.emulator.token_requests("refresh_token")
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(WORKERS), context.Queue()
    workers = [
        context.Process(target=race_for_a_token, args=(settings_overrides(stack), connection_id, barrier, results))
        for _ in range(WORKERS)
    ]
    for worker in workers:
        worker.start()
    tokens = [results.get(timeout=600) for _ in workers]  # generous: a loaded 2-core machine spawns slowly
    for worker in workers:
        worker.join(timeout=60)
    assert not [token for token in tokens if token.startswith("error:")], tokens
    assert len(set(tokens)) == 1 and tokens[0] != old_access
    assert stack.emulator.token_requests("refresh_token") - calls_before == 1
    refreshed = [e for e in stack.store.audit_entries(connection_id=connection_id) if e.action == "token.refreshed"]
    assert len(refreshed) == 1


def test_a_401_refreshes_once_and_retries_once(stack: Stack) -> None:
    connection_id = stack.connect()
    source, store = token_source(settings_overrides(stack), connection_id)
    stack.emulator.expire_access_tokens()  # the provider revoked it early; our store still thinks it is fresh
    with HubSpotClient(stack.sandbox_url, auth=ConnectionAuth(source)) as client:
        first_page = next(iter(client.iter_contacts()))
        assert len(first_page) == 100
    assert stack.emulator.token_requests("refresh_token") == 1
    source.oauth.api.close()
    store.engine.dispose()


def test_invalid_grant_marks_the_connection_and_stops_calling_the_provider(stack: Stack) -> None:
    connection_id = stack.connect()
    expire_soon(stack.store, connection_id)
    stack.emulator.revoke_refresh_tokens()
    source, store = token_source(settings_overrides(stack), connection_id)
    with pytest.raises(NeedsReauth, match="needs re-authorization"):
        source.access_token()
    connection = stack.store.get_connection(connection_id)
    assert connection is not None and connection.status == ConnectionStatus.NEEDS_REAUTH
    assert "invalid_grant" in (connection.status_reason or "")
    calls = stack.emulator.token_requests("refresh_token")
    with pytest.raises(NeedsReauth, match="needs_reauth"):
        source.access_token()
    assert stack.emulator.token_requests("refresh_token") == calls  # no hammering
    assert [e.action for e in stack.store.audit_entries(connection_id=connection_id)][-1] == "connection.needs_reauth"
    with httpx.Client(
        base_url=stack.gateway_url, headers={"Authorization": "Bearer test-api-key-0123456789abcdef"}
    ) as api:
        assert api.get(f"/connections/{connection_id}").json()["status"] == "needs_reauth"
    stack.connect()  # reconnecting through OAuth heals it
    healed = stack.store.get_connection(connection_id)
    assert healed is not None and healed.status == ConnectionStatus.ACTIVE
    source.oauth.api.close()
    store.engine.dispose()
