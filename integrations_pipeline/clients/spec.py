"""ProviderSpec: what differs between providers' OAuth and API origins, as data rather than copies of code."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from integrations_pipeline.settings import ProviderApp

if TYPE_CHECKING:
    import httpx

    from integrations_pipeline.clients.http import ApiClient


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
    # OAuth error codes meaning the grant is gone (the connection needs re-authorization). RFC 6749 says
    # invalid_grant; Zoho answers a revoked refresh token with invalid_code.
    reauth_errors: tuple[str, ...] = ("invalid_grant",)
    auth_scheme: str = "Bearer"
    # Whether a refresh may hand back a new refresh token and retire the old one. A refresh whose answer was lost is
    # re-sent only where the provider documents non-rotating refresh tokens (False); elsewhere the old token may
    # already be spent, and reuse detection (RFC 9700) would revoke the whole grant.
    refresh_tokens_rotate: bool = True
    extra_authorize_params: tuple[tuple[str, str], ...] = ()
    # (api client on the provider's API origin, access token) -> AccountInfo
    describe_account: Callable[[ApiClient, str], AccountInfo] | None = None
    # (api client on the provider's API origin, TokenSet, the OAuth endpoints that issued it) -> whether the provider
    # confirmed the revocation
    revoke: Callable[[ApiClient, Any, OAuthEndpoints], bool] | None = None
    # (api origin, auth transport, the connection's provider_metadata) -> the provider's data client. Providers
    # whose data lives on a per-account host (Zoho's api_domain, Salesforce's instance_url) read it from the
    # metadata, which the gateway stored from the token response.
    build_client: Callable[[str, httpx.Auth, Mapping[str, Any]], ApiClient] | None = None
    # Providers with data centres (Zoho): the callback names the accounts server that must redeem the code and later
    # refresh the token. It arrives through the browser, so only these origins are believed (when the app has a
    # base_url: the sandbox's own origin, paths under it, and the app's accounts_servers).
    accounts_servers: tuple[str, ...] = ()
    # Providers with app-only connections (Microsoft): the one scope of the client-credentials grant, which brings
    # every application permission a tenant's admin consented to. Tokens come per directory tenant, without refresh.
    app_only_scope: str | None = None

    def oauth_endpoints(self, app: ProviderApp, accounts_server: str | None = None) -> OAuthEndpoints:
        """The app's endpoints; token calls go to `accounts_server` instead when the account lives in another
        data centre. Raises ValueError for an accounts server the provider does not have."""
        if app.base_url is None:
            endpoints = OAuthEndpoints(self.authorize_url, self.token_url)
            token_path = urlsplit(self.token_url).path
        else:
            base = str(app.base_url).rstrip("/")
            endpoints = OAuthEndpoints(base + self.sandbox_authorize_path, base + self.sandbox_token_path)
            token_path = self.sandbox_token_path
        if accounts_server is None:
            return endpoints
        server = accounts_server.rstrip("/")
        if app.base_url is None:
            believed = server in self.accounts_servers
        else:
            base = str(app.base_url).rstrip("/")
            sandbox_servers = {str(url).rstrip("/") for url in app.accounts_servers}
            believed = bool(self.accounts_servers) and (
                server == base or server.startswith(base + "/") or server in sandbox_servers
            )
        if not believed:
            raise ValueError(f"{accounts_server!r} is not a {self.display_name} accounts server")
        return OAuthEndpoints(endpoints.authorize_url, server + token_path)

    def api_origin(self, app: ProviderApp) -> str:
        return str(app.base_url).rstrip("/") if app.base_url is not None else self.api_base_url

    def scopes(self, app: ProviderApp) -> list[str]:
        return list(app.scopes) if app.scopes else list(self.default_scopes)


@dataclass(frozen=True)
class SyncRequest:
    """What one sync of one partition asks a connector for."""

    connection_id: str
    # The provider-defined cursor the previous sync of this partition ended with (a timestamp, a sync token, a
    # delta link...), opaque to everyone but the connector. None asks for a full sync of the scope.
    cursor: str | None
    started_at: datetime  # timestamp windows end here, so the next window starts where this one ended
    # Day-partitioned entities (events): the partition's [start, end) in UTC; None for connection-wide entities.
    window: tuple[datetime, datetime] | None = None
    # Connection facts learnt at connect time (api_domain, instance_url, ...): never a secret.
    provider_metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Page:
    """A bounded chunk of normalized records. The last page a connector yields carries the cursor the next
    incremental sync starts from; a sync that finds nothing still yields one (empty) page with it."""

    records: list[Mapping[str, Any]]
    cursor: str | None = None
    # Events: the attendees of this page's events (records.AttendeeRecord), every attendee of each event the page
    # holds, so an attendee a re-fetched event no longer lists can be flagged deleted.
    attendees: list[Mapping[str, Any]] = field(default_factory=list)


def day_page(
    mapped: Iterable[tuple[Any, Mapping[str, Any]]],
    window: tuple[datetime, datetime],
    to_attendees: Callable[[Any, Any], list[Any]],
) -> Page:
    """A page of the (raw event, event record) pairs that start in `window`, with those events' attendees."""
    kept = [(raw, record) for raw, record in mapped if window[0] <= record["start_at"] < window[1]]
    return Page(
        [record for _, record in kept],
        attendees=[person for raw, record in kept for person in to_attendees(raw, record)],
    )


# (data client, request) -> pages. Deletions come back as records with is_deleted=True. A cursor the provider no
# longer accepts raises CursorExpired: the asset then asks again with cursor=None and reconciles deletions.
EntityReader = Callable[[Any, SyncRequest], Iterator[Page]]


@dataclass(frozen=True)
class EntitySpec:
    """How one provider serves one entity: everything the asset factory needs to sync it."""

    provider: str
    entity: str  # users | contacts | events
    columns: tuple[str, ...]
    read: EntityReader
    primary_key: tuple[str, ...] = ("connection_id", "source_id")
    partitioned_by_day: bool = False  # events: one partition per (connection, UTC day of the event's start)
    day_column: str = "start_at"

    @property
    def asset_name(self) -> str:
        return f"{self.provider}_{self.entity}"
