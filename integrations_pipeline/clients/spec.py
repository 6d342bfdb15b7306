"""ProviderSpec: what differs between providers' OAuth and API origins, as data rather than copies of code."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from integrations_pipeline.settings import ProviderApp

if TYPE_CHECKING:
    import httpx

    from integrations_pipeline.clients.http import ApiClient

RecordChunks = Iterator[list[Mapping[str, Any]]]


@dataclass(frozen=True)
class OAuthEndpoints:
    authorize_url: str
    token_url: str


@dataclass(frozen=True)
class AccountInfo:
    """Non-secret facts about an authorized account, learnt right after the code exchange."""

    external_account_id: str | None = None
    granted_scopes: list[str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    display_name: str
    authorize_url: str
    token_url: str
    api_base_url: str
    default_scopes: tuple[str, ...]
    # Paths under the sandbox's single origin, used when the app sets `base_url` (an emulator serves all of it).
    sandbox_authorize_path: str
    sandbox_token_path: str
    scope_separator: str = " "
    auth_scheme: str = "Bearer"
    extra_authorize_params: tuple[tuple[str, str], ...] = ()
    # (api client on the provider's API origin, access token) -> AccountInfo
    describe_account: Callable[[ApiClient, str], AccountInfo] | None = None
    # (api client on the provider's API origin, TokenSet) -> whether the provider confirmed the revocation
    revoke: Callable[[ApiClient, Any], bool] | None = None
    # (api origin, auth transport) -> the provider's data client
    build_client: Callable[[str, httpx.Auth], ApiClient] | None = None

    def oauth_endpoints(self, app: ProviderApp) -> OAuthEndpoints:
        if app.base_url is None:
            return OAuthEndpoints(self.authorize_url, self.token_url)
        base = str(app.base_url).rstrip("/")
        return OAuthEndpoints(base + self.sandbox_authorize_path, base + self.sandbox_token_path)

    def api_origin(self, app: ProviderApp) -> str:
        return str(app.base_url).rstrip("/") if app.base_url is not None else self.api_base_url

    def scopes(self, app: ProviderApp) -> list[str]:
        return list(app.scopes) if app.scopes else list(self.default_scopes)


@dataclass(frozen=True)
class EntitySpec:
    """How one provider serves one entity: everything the asset factory needs to sync it."""

    provider: str
    entity: str
    columns: tuple[str, ...]
    primary_key: tuple[str, ...]
    # (client, connection_id) -> every record, including the provider's deletions, flagged
    read_all: Callable[[Any, str], RecordChunks]
    # (client, connection_id, since, until) -> records changed in [since, until), deletions included
    read_changes: Callable[[Any, str, datetime, datetime], RecordChunks]
    # Incremental windows start this long before the stored cursor: a change committed just before the previous
    # window closed is never missed, and re-reading it is harmless because writes are upserts.
    cursor_overlap: timedelta = timedelta(minutes=5)

    @property
    def asset_name(self) -> str:
        return f"{self.provider}_{self.entity}"
