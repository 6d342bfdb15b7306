"""One connection's data client, outside Dagster too: the gateway and the CLI discover field catalogs with it, and
the Dagster resource (resources.IntegrationsResource.connector) opens its connectors through it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from integrations_pipeline.clients.auth import ConnectionAuth, TokenSource
from integrations_pipeline.clients.http import ApiClient
from integrations_pipeline.clients.oauth import OAuthClient
from integrations_pipeline.clients.providers import PROVIDERS
from integrations_pipeline.clients.ratelimits import BudgetLimiter, pinned_window, windows_for
from integrations_pipeline.settings import Settings
from integrations_pipeline.store import StateStore
from integrations_pipeline.store.budget import LIVE_SHARE, RateBudgets


class NoConnector(Exception):
    """The provider has no data connector (its spec builds no client)."""


@contextmanager
def open_connector(
    settings: Settings, store: StateStore, provider: str, connection_id: str, *, share: float = LIVE_SHARE
) -> Iterator[ApiClient]:
    """The provider's data client for one connection; its transport refreshes tokens through the store, and every
    call asks the connection's shared rate-limit budget first (for `share` of it: backfills take less)."""
    spec = PROVIDERS[provider]
    if spec.build_client is None:
        raise NoConnector(f"{spec.display_name} has no data connector yet")
    app = settings.provider_app(provider)
    connection = store.get_connection(connection_id)
    metadata = connection.provider_metadata if connection is not None else {}
    oauth = OAuthClient.for_connection(spec, app, metadata)  # refreshes at the connection's data centre
    tokens = TokenSource(store, oauth, connection_id)
    client = spec.build_client(spec.api_origin(app), ConnectionAuth(tokens, spec.auth_scheme), metadata)
    client.limiter = BudgetLimiter(
        RateBudgets(store),
        connection_id,
        provider,
        windows_for(provider, app.rate_limit, app.rate_window_s),
        share=share,
        pinned=pinned_window(provider, app.rate_limit, app.rate_window_s),
    )
    try:
        yield client
    finally:
        client.close()
        oauth.close()
