"""Token refresh: exactly one provider call per expiry across processes, 401 handling, invalid_grant, and the
failure paths: a refresh answer lost after the provider committed it, many workers on a revoked grant, tokens
that cannot be decrypted. Against token endpoints that rotate refresh tokens and reject their reuse."""

import multiprocessing
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from integrations_pipeline.clients.auth import ConnectionAuth, TokenSource
from integrations_pipeline.clients.errors import NeedsReauth
from integrations_pipeline.clients.hubspot import CONTACTS, HubSpotClient
from integrations_pipeline.crypto import Keyring, generate_key_entry
from integrations_pipeline.sandbox.common import OAuthAuthorizationServer
from integrations_pipeline.store import ConnectionStatus, StateStore, TokenSet, schema
from integrations_pipeline.store.events import EventType
from integrations_pipeline_tests.conftest import Stack
from integrations_pipeline_tests.refresh_worker import race_for_a_token, race_in_threads, token_source

WORKERS = 20
THREADS = 50
PROCESSES, THREADS_PER_PROCESS = 4, 6


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
    apps = {provider: stack.settings.provider_app(provider) for provider in stack.emulators}
    return {
        "state_database_url": stack.settings.state_database_url,
        "encryption_keys": stack.settings.encryption_keys.get_secret_value(),  # type: ignore[union-attr]
        **{
            provider: {
                "client_id": app.client_id,
                "client_secret": app.client_secret.get_secret_value(),
                "base_url": str(app.base_url),
            }
            for provider, app in apps.items()
        },
    }


def token_server(stack: Stack, provider: str) -> OAuthAuthorizationServer:
    """The emulator's OAuth core, whose switches (rotation, reuse detection, a lost answer) these tests turn."""
    return stack.emulators[provider]._oauth  # type: ignore[no-any-return]


@contextmanager
def own_token_source(stack: Stack, connection_id: str, provider: str = "hubspot") -> Iterator[TokenSource]:
    """A token source with its own store and HTTP client, as another process would have."""
    source, store = token_source(settings_overrides(stack), connection_id, provider)
    try:
        yield source
    finally:
        source.oauth.api.close()
        store.engine.dispose()


def race_in_processes(stack: Stack, connection_id: str, processes: int, threads: int = 1) -> list[str]:
    """`processes` spawned processes of `threads` workers each ask for a token at once: what each worker got."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    arguments = (settings_overrides(stack), connection_id, barrier, results, threads)
    workers = [context.Process(target=race_for_a_token, args=arguments) for _ in range(processes)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=600) for _ in range(processes * threads)]  # a loaded machine spawns slowly
    for worker in workers:
        worker.join(timeout=60)
    return outcomes


def assert_one_transition(stack: Stack, connection_id: str, outcomes: list[str], cause: str) -> None:
    """Every worker was told to reconnect, the provider was asked once, and the transition left one audit entry
    and one outgoing event."""
    assert all(outcome.startswith("error: NeedsReauth") for outcome in outcomes), outcomes
    assert stack.emulator.token_requests("refresh_token") == 1
    assert [detail["cause"] for detail in reauth_audits(stack, connection_id)] == [cause]
    assert reauth_events(stack, connection_id) == 1


def reauth_audits(stack: Stack, connection_id: str) -> list[dict[str, Any]]:
    entries = stack.store.audit_entries(connection_id=connection_id, action="connection.needs_reauth")
    return [entry.detail for entry in entries]


def reauth_events(stack: Stack, connection_id: str) -> int:
    events = schema.webhook_events
    query = sa.select(sa.func.count()).where(
        (events.c.connection_id == connection_id) & (events.c.type == EventType.NEEDS_REAUTH.value)
    )
    with stack.store.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def test_twenty_processes_needing_a_refresh_make_exactly_one_token_call(stack: Stack) -> None:
    connection_id = stack.connect()
    old_access = expire_soon(stack.store, connection_id)
    calls_before = stack.emulator.token_requests("refresh_token")
    tokens = race_in_processes(stack, connection_id, WORKERS)
    assert not [token for token in tokens if token.startswith("error:")], tokens
    assert len(set(tokens)) == 1 and tokens[0] != old_access
    assert stack.emulator.token_requests("refresh_token") - calls_before == 1
    refreshed = [e for e in stack.store.audit_entries(connection_id=connection_id) if e.action == "token.refreshed"]
    assert len(refreshed) == 1


def test_a_401_refreshes_once_and_retries_once(stack: Stack) -> None:
    connection_id = stack.connect()
    stack.emulator.expire_access_tokens()  # the provider revoked it early; our store still thinks it is fresh
    with (
        own_token_source(stack, connection_id) as source,
        HubSpotClient(stack.sandbox_url, auth=ConnectionAuth(source)) as client,
    ):
        first_page = next(iter(client.iter_objects(CONTACTS)))
        assert len(first_page) == 100
    assert stack.emulator.token_requests("refresh_token") == 1


def test_invalid_grant_marks_the_connection_and_stops_calling_the_provider(stack: Stack) -> None:
    connection_id = stack.connect()
    expire_soon(stack.store, connection_id)
    stack.emulator.revoke_refresh_tokens()
    with own_token_source(stack, connection_id) as source:
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


def test_a_lost_refresh_answer_is_not_sent_again_and_is_recorded_as_lost(stack: Stack) -> None:
    """Microsoft rotates refresh tokens: once the provider committed a refresh whose answer never came, the stored
    refresh token is spent, and presenting it again would revoke the grant."""
    connection_id = stack.connect(provider="microsoft")
    server, microsoft = token_server(stack, "microsoft"), stack.emulators["microsoft"]
    server.reject_reused_refresh_tokens = True
    expire_soon(stack.store, connection_id)
    spent = stack.store.load_tokens(connection_id).refresh_token.get_secret_value()  # type: ignore[union-attr]
    server.drop_next_token_answer = True
    with own_token_source(stack, connection_id, "microsoft") as source:
        with pytest.raises(NeedsReauth, match="answer to a token refresh was lost") as lost:
            source.access_token()
        assert spent in server.retired_refresh_tokens  # the provider did commit the refresh whose answer was lost
        assert microsoft.token_requests("refresh_token") == 1
        with pytest.raises(NeedsReauth, match="needs_reauth"):
            source.access_token()  # and no later attempt either
    assert microsoft.token_requests("refresh_token") == 1
    connection = stack.store.get_connection(connection_id)
    assert connection is not None and connection.status == ConnectionStatus.NEEDS_REAUTH
    reason = connection.status_reason or ""
    assert "was lost" in reason and "reconnect" in reason
    assert "invalid_grant" not in reason + str(lost.value) and "rejected" not in reason
    assert reauth_audits(stack, connection_id) == [{"reason": reason, "cause": "refresh_answer_lost"}]
    assert reauth_events(stack, connection_id) == 1


def test_a_lost_refresh_answer_at_a_non_rotating_provider_is_sent_again(stack: Stack) -> None:
    """HubSpot documents refresh tokens that do not rotate: the same refresh may safely be sent twice."""
    connection_id = stack.connect()
    old_access = expire_soon(stack.store, connection_id)
    token_server(stack, "hubspot").drop_next_token_answer = True
    with own_token_source(stack, connection_id) as source:
        assert source.access_token() != old_access
    assert stack.emulator.token_requests("refresh_token") == 2  # the lost one, then the one answered
    connection = stack.store.get_connection(connection_id)
    assert connection is not None and connection.status == ConnectionStatus.ACTIVE
    assert reauth_audits(stack, connection_id) == []


def test_fifty_threads_on_a_revoked_grant_make_one_token_call_and_one_transition(stack: Stack) -> None:
    connection_id = stack.connect()
    expire_soon(stack.store, connection_id)
    stack.emulator.revoke_refresh_tokens()
    outcomes = race_in_threads(stack.store, settings_overrides(stack), connection_id, THREADS)
    assert len(outcomes) == THREADS
    assert_one_transition(stack, connection_id, outcomes, "grant_rejected")


def test_processes_on_a_revoked_grant_make_one_token_call_and_one_transition(stack: Stack) -> None:
    connection_id = stack.connect()
    expire_soon(stack.store, connection_id)
    stack.emulator.revoke_refresh_tokens()
    outcomes = race_in_processes(stack, connection_id, PROCESSES, THREADS_PER_PROCESS)
    assert_one_transition(stack, connection_id, outcomes, "grant_rejected")


def test_rotation_with_reuse_detection_still_refreshes_once_per_expiry(stack: Stack) -> None:
    connection_id = stack.connect(provider="microsoft")
    token_server(stack, "microsoft").reject_reused_refresh_tokens = True
    for expiry in (1, 2):
        expire_soon(stack.store, connection_id)
        outcomes = race_in_threads(stack.store, settings_overrides(stack), connection_id, THREADS, "microsoft")
        assert len(set(outcomes)) == 1 and not outcomes[0].startswith("error"), outcomes[0]
        assert stack.emulators["microsoft"].token_requests("refresh_token") == expiry
    connection = stack.store.get_connection(connection_id)
    assert connection is not None and connection.status == ConnectionStatus.ACTIVE


def test_undecryptable_tokens_mark_the_connection_once_without_calling_the_provider(stack: Stack) -> None:
    connection_id = stack.connect()
    unknown_key = Keyring.from_spec(generate_key_entry("other1"))
    elsewhere = StateStore(stack.store.engine, unknown_key)  # a process whose keyring lacks the key (test1)
    outcomes = race_in_threads(elsewhere, settings_overrides(stack), connection_id, WORKERS)
    assert stack.emulator.token_requests("refresh_token") == 0
    connection = stack.store.get_connection(connection_id)
    assert connection is not None and connection.status == ConnectionStatus.NEEDS_REAUTH
    reason = connection.status_reason or ""
    assert "cannot be decrypted" in reason and "'test1'" in reason and "INTEGRATIONS_ENCRYPTION_KEYS" in reason
    assert all(outcome.startswith("error: NeedsReauth") for outcome in outcomes), outcomes
    assert [detail["cause"] for detail in reauth_audits(stack, connection_id)] == ["undecryptable_tokens"]
    assert reauth_events(stack, connection_id) == 1
