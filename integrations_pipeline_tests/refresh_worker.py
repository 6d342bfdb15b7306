"""The body of one refresh-race worker process, kept apart from the tests so that a spawned child imports only
what it needs (the clients and the store), not the whole test suite's fixtures."""

import threading
from typing import Any

from integrations_pipeline.clients.auth import TokenSource
from integrations_pipeline.clients.oauth import OAuthClient
from integrations_pipeline.clients.providers import PROVIDERS
from integrations_pipeline.settings import load_settings
from integrations_pipeline.store import StateStore, create_store_engine


def open_store(overrides: dict[str, Any]) -> StateStore:
    settings = load_settings(**overrides)
    return StateStore(create_store_engine(settings.state_database_url), settings.keyring())


def token_source(
    overrides: dict[str, Any], connection_id: str, provider: str = "hubspot", store: StateStore | None = None
) -> tuple[TokenSource, StateStore]:
    """A worker's own token source (and its own store unless one is shared), as a sync run builds it."""
    settings = load_settings(**overrides)
    store = store or open_store(overrides)
    oauth = OAuthClient(PROVIDERS[provider], settings.provider_app(provider))
    return TokenSource(store, oauth, connection_id), store


def ask_for_a_token(source: TokenSource) -> str:
    try:
        return source.access_token()
    except Exception as error:  # reported to the test, which asserts on it
        return f"error: {type(error).__name__}: {error}"
    finally:
        source.oauth.api.close()


def race_in_threads(
    store: StateStore, overrides: dict[str, Any], connection_id: str, threads: int, provider: str = "hubspot"
) -> list[str]:
    """`threads` workers, each with its own token source, ask for a token at the same moment."""
    sources = [token_source(overrides, connection_id, provider, store)[0] for _ in range(threads)]
    start = threading.Barrier(threads)
    results: list[str] = []

    def worker(source: TokenSource) -> None:
        start.wait()
        results.append(ask_for_a_token(source))

    running = [threading.Thread(target=worker, args=(source,)) for source in sources]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    return results


def race_for_a_token(
    overrides: dict[str, Any],
    connection_id: str,
    barrier: Any,
    results: Any,
    threads: int = 1,
    provider: str = "hubspot",
) -> None:
    """One process of a race: `threads` workers of its own, released together with the other processes."""
    store = open_store(overrides)
    try:
        barrier.wait()
        for token in race_in_threads(store, overrides, connection_id, threads, provider):
            results.put(token)
    finally:
        store.engine.dispose()
