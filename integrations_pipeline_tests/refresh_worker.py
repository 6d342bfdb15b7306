"""The body of one refresh-race worker process, kept apart from the tests so that a spawned child imports only
what it needs (the clients and the store), not the whole test suite's fixtures."""

from typing import Any

from integrations_pipeline.clients.auth import TokenSource
from integrations_pipeline.clients.hubspot import SPEC
from integrations_pipeline.clients.oauth import OAuthClient
from integrations_pipeline.settings import load_settings
from integrations_pipeline.store import StateStore, create_store_engine


def token_source(overrides: dict[str, Any], connection_id: str) -> tuple[TokenSource, StateStore]:
    settings = load_settings(**overrides)
    store = StateStore(create_store_engine(settings.state_database_url), settings.keyring())
    return TokenSource(store, OAuthClient(SPEC, settings.provider_app("hubspot")), connection_id), store


def race_for_a_token(overrides: dict[str, Any], connection_id: str, barrier: Any, results: Any) -> None:
    source, store = token_source(overrides, connection_id)
    barrier.wait()
    try:
        results.put(source.access_token())
    except Exception as error:  # reported to the parent, which fails the test with it
        results.put(f"error: {type(error).__name__}: {error}")
    finally:
        source.oauth.api.close()
        store.engine.dispose()
