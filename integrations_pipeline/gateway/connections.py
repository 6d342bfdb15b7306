"""Connecting, re-authorizing and disconnecting tenants' accounts: the OAuth flow's server side."""

from __future__ import annotations

import logging
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode, urlsplit

from integrations_pipeline.clients.errors import NeedsReauth, ProviderError
from integrations_pipeline.clients.http import ApiClient
from integrations_pipeline.clients.oauth import ACCOUNTS_SERVER, OAuthClient, new_pkce_pair
from integrations_pipeline.clients.providers import get_provider
from integrations_pipeline.clients.spec import AccountInfo
from integrations_pipeline.crypto import DecryptionError
from integrations_pipeline.settings import Settings, SettingsError
from integrations_pipeline.store import (
    Connection,
    InvalidState,
    StateStore,
    connection_id_for,
)
from integrations_pipeline.store.events import EventType, record_event
from integrations_pipeline.store.repository import utcnow

ACTOR = "gateway"
logger = logging.getLogger(__name__)


class GatewayError(Exception):
    """A refusal with an HTTP status, a stable code and a message a person can act on."""

    def __init__(self, status: int, code: str, message: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or {}


@dataclass(frozen=True)
class AuthorizationStart:
    authorization_url: str
    state_expires_at: datetime


@dataclass(frozen=True)
class CallbackOutcome:
    connection: Connection | None
    redirect_to: str | None
    error: GatewayError | None = None


def check_return_path(return_path: str | None, allowed_origins: list[str]) -> str | None:
    """A relative path (never `//host` or a backslash trick) or a URL on an allow-listed origin."""
    if return_path is None:
        return None
    try:
        parts = urlsplit(return_path)
    except ValueError:  # "http://[x", a netloc that changes under NFKC normalization
        parts = urlsplit("invalid://")
    if not parts.scheme and not parts.netloc:
        if return_path.startswith("/") and not return_path.startswith(("//", "/\\")) and "\\" not in return_path:
            return return_path
    elif f"{parts.scheme}://{parts.netloc}".lower() in {origin.lower() for origin in allowed_origins}:
        return return_path
    raise GatewayError(
        400,
        "invalid_return_path",
        "return_path must be a relative path like /settings/integrations or a URL on an allow-listed origin",
        {"return_path": "not a relative path nor an allow-listed origin"},
    )


def _event_facts(connection: Connection) -> dict[str, str]:
    return {"connection_id": connection.id, "tenant": connection.tenant, "provider": connection.provider}


def _with_query(url: str, **params: str) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(params)


class ConnectionService:
    def __init__(self, settings: Settings, store: StateStore) -> None:
        self.settings = settings
        self.store = store
        self._oauth_clients: dict[str, OAuthClient] = {}

    def close(self) -> None:
        for client in self._oauth_clients.values():
            client.api.close()

    def oauth_client(self, provider: str) -> OAuthClient:
        spec = get_provider(provider)
        if spec is None:
            raise GatewayError(404, "unknown_provider", f"unknown provider {provider!r}")
        if provider not in self._oauth_clients:
            try:
                app = self.settings.provider_app(provider)
            except SettingsError as error:
                raise GatewayError(404, "provider_not_enabled", str(error)) from None
            self._oauth_clients[provider] = OAuthClient(spec, app, ApiClient(spec.api_origin(app)))
        return self._oauth_clients[provider]

    def redirect_uri(self, provider: str) -> str:
        return f"{str(self.settings.public_url).rstrip('/')}/oauth/{provider}/callback"

    def start(
        self, provider: str, tenant: str, return_path: str | None, scopes: list[str] | None
    ) -> AuthorizationStart:
        oauth = self.oauth_client(provider)
        return_path = check_return_path(return_path, self.settings.allowed_return_origins)
        requested = sorted(set(scopes or oauth.spec.scopes(oauth.app)))
        verifier, challenge = new_pkce_pair()
        redirect_uri = self.redirect_uri(provider)
        state, expires_at = self.store.create_oauth_state(
            tenant=tenant,
            provider=provider,
            redirect_uri=redirect_uri,
            return_path=return_path,
            scopes=requested,
            code_verifier=verifier,
        )
        url = oauth.authorization_url(
            redirect_uri=redirect_uri, scopes=requested, state=state, code_challenge=challenge
        )
        return AuthorizationStart(authorization_url=url, state_expires_at=expires_at)

    def complete(
        self,
        provider: str,
        *,
        state: str | None,
        code: str | None,
        error: str | None,
        accounts_server: str | None = None,
    ) -> CallbackOutcome:
        """Consume the state, exchange the code, store the connection. Refusals come back in the outcome when the
        browser has somewhere to go, and are raised otherwise. `accounts_server` is the data centre's accounts
        server a provider with data centres (Zoho) names in the callback; the code must be redeemed there."""
        oauth = self.oauth_client(provider)
        if not state:
            raise GatewayError(400, "missing_state", "the callback has no state; start the connection again")
        try:
            pending = self.store.consume_oauth_state(state, provider)
        except InvalidState as invalid:
            raise GatewayError(400, "invalid_state", str(invalid)) from None
        except DecryptionError:  # the state's PKCE verifier, stored encrypted, cannot be read back
            raise GatewayError(
                400, "invalid_state", "this authorization state cannot be read (were the keys changed?); start again"
            ) from None
        try:
            if error or not code:
                reason = f"the provider reported {error!r}" if error else "the callback has no authorization code"
                raise GatewayError(400, "authorization_failed", f"authorization did not complete: {reason}")
            region = {ACCOUNTS_SERVER: accounts_server} if accounts_server and oauth.spec.accounts_servers else {}
            try:
                regional = OAuthClient.for_connection(oauth.spec, oauth.app, region)
            except ValueError as untrusted:
                raise GatewayError(400, "invalid_accounts_server", str(untrusted)) from None
            with closing(regional):
                try:
                    grant = regional.exchange_code(
                        code=code,
                        redirect_uri=pending.redirect_uri,
                        code_verifier=pending.code_verifier.get_secret_value(),
                    )
                except NeedsReauth:
                    raise GatewayError(400, "invalid_code", "the provider rejected the authorization code") from None
                except ProviderError as failure:
                    raise GatewayError(502, "provider_error", f"{oauth.spec.display_name} failed: {failure}") from None
            # Account facts come from the account's own data centre (its api_domain), where there is one.
            with closing(
                OAuthClient.for_connection(oauth.spec, oauth.app, {**grant.metadata, **region})
            ) as account_oauth:
                try:
                    account = account_oauth.describe_account(grant.tokens.access_token.get_secret_value())
                except ProviderError:
                    account = AccountInfo()  # the connection works without it; it is only for display
            connection_id = connection_id_for(pending.tenant, provider)
            with self.store.locked(connection_id) as conn:
                existing = self.store.get_connection(connection_id)
                granted = account.granted_scopes or grant.granted_scopes or pending.scopes
                # Incremental authorization: asking for Directory later must not forget that Calendar was wanted.
                requested = set(pending.scopes) | set(existing.requested_scopes if existing else ())
                connection = self.store.save_connection(
                    conn,
                    tenant=pending.tenant,
                    provider=provider,
                    requested_scopes=sorted(requested),
                    granted_scopes=granted,
                    tokens=grant.tokens,
                    external_account_id=account.external_account_id,
                    provider_metadata={**grant.metadata, **account.metadata, **region},
                )
                self.store.audit(
                    conn,
                    "connection.reauthorized" if existing else "connection.connected",
                    actor=ACTOR,
                    tenant=pending.tenant,
                    provider=provider,
                    connection_id=connection_id,
                    detail={"granted_scopes": connection.granted_scopes, "missing_scopes": connection.missing_scopes},
                )
                record_event(
                    conn,
                    EventType.CONNECTED,
                    connection_id=connection_id,
                    at=connection.updated_at,
                    data={
                        **_event_facts(connection),
                        "reauthorized": existing is not None,
                        "granted_scopes": connection.granted_scopes,
                        "missing_scopes": connection.missing_scopes,
                    },
                )
        except GatewayError as refusal:
            if pending.return_path is None:
                raise
            redirect = _with_query(pending.return_path, error=refusal.code)
            return CallbackOutcome(connection=None, redirect_to=redirect, error=refusal)
        redirect_to = (
            _with_query(pending.return_path, connection_id=connection.id, status=connection.status.value)
            if pending.return_path
            else None
        )
        return CallbackOutcome(connection=connection, redirect_to=redirect_to)

    def disconnect(self, connection_id: str) -> tuple[Connection, bool]:
        connection = self.store.get_connection(connection_id)
        if connection is None:
            raise GatewayError(404, "unknown_connection", f"no connection {connection_id!r}")
        revoked = False
        try:
            tokens = self.store.load_tokens(connection_id)
        except DecryptionError as unreadable:  # still disconnectable: the tokens are deleted without being read
            logger.warning("disconnect %s: revoke skipped, tokens not decryptable: %s", connection_id, unreadable)
            tokens = None
        if tokens is not None and get_provider(connection.provider) is not None:
            try:
                shared = self.oauth_client(connection.provider)
                with closing(
                    OAuthClient.for_connection(shared.spec, shared.app, connection.provider_metadata)
                ) as oauth:
                    revoked = oauth.revoke(tokens)
            except (GatewayError, ProviderError, ValueError):
                revoked = False  # the tokens are deleted here either way
        with self.store.locked(connection_id) as conn:
            self.store.disconnect(conn, connection_id)
            self.store.audit(
                conn,
                "connection.disconnected",
                actor=ACTOR,
                tenant=connection.tenant,
                provider=connection.provider,
                connection_id=connection_id,
                detail={"revoked_at_provider": revoked},
            )
            record_event(
                conn,
                EventType.DISCONNECTED,
                connection_id=connection_id,
                at=utcnow(),
                data={**_event_facts(connection), "revoked_at_provider": revoked},
            )
        updated = self.store.get_connection(connection_id)
        assert updated is not None
        return updated, revoked
