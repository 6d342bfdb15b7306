"""Connecting, re-authorizing and disconnecting tenants' accounts: the OAuth flow's server side."""

from __future__ import annotations

import logging
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import sqlalchemy as sa

from integrations_pipeline.clients.errors import NeedsReauth, ProviderError
from integrations_pipeline.clients.http import ApiClient
from integrations_pipeline.clients.oauth import (
    ACCOUNTS_SERVER,
    APP_ONLY,
    AUTH_MODE,
    DIRECTORY_TENANT,
    OAuthClient,
    TokenGrant,
    new_pkce_pair,
)
from integrations_pipeline.clients.providers import get_provider
from integrations_pipeline.clients.spec import AccountInfo
from integrations_pipeline.crypto import DecryptionError
from integrations_pipeline.settings import Settings, SettingsError
from integrations_pipeline.store import (
    Connection,
    ConnectionStatus,
    InvalidState,
    PendingAuthorization,
    StateStore,
    connection_id_for,
    schema,
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


def account_change(existing: Connection | None, account: AccountInfo) -> dict[str, str] | None:
    """The provider account a reconnect would switch the connection from and to; None when it stays, when either is
    unknown, or when the connection was disconnected (a disconnected tenant may connect any account)."""
    if existing is None or existing.status == ConnectionStatus.DISCONNECTED:
        return None
    before, after = existing.external_account_id, account.external_account_id
    if before is None or after is None or before == after:
        return None
    return {"previous_account": before, "new_account": after}


def account_mismatch(connection_id: str, change: dict[str, str]) -> GatewayError:
    return GatewayError(
        409,
        "account_mismatch",
        f"connection {connection_id} belongs to provider account {change['previous_account']}, and this "
        f"authorization was for account {change['new_account']}: nothing was changed. Disconnect it first "
        f"(DELETE /connections/{connection_id}), or connect again with replace_account=true to switch accounts",
    )


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
        self,
        provider: str,
        tenant: str,
        return_path: str | None,
        scopes: list[str] | None,
        replace_account: bool = False,
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
            replace_account=replace_account,
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
        pending = self._consume_state(state, provider)
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
            connection = self._save(
                pending.tenant,
                provider,
                requested=pending.scopes,
                granted=account.granted_scopes or grant.granted_scopes or pending.scopes,
                grant=grant,
                account=account,
                metadata={**grant.metadata, **account.metadata, **region},
                replace_account=pending.replace_account,
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

    def _consume_state(self, state: str, provider: str) -> PendingAuthorization:
        try:
            return self.store.consume_oauth_state(state, provider)
        except InvalidState as invalid:
            raise GatewayError(400, "invalid_state", str(invalid)) from None
        except DecryptionError:  # the state's secret part, stored encrypted, cannot be read back
            raise GatewayError(
                400, "invalid_state", "this authorization state cannot be read (were the keys changed?); start again"
            ) from None

    def _refuse_unconfirmed_account_change(self, connection_id: str, account: AccountInfo, confirmed: bool) -> None:
        """Before storing anything: a reconnect through another provider account than the connection's is refused,
        and the refusal audited, unless the connect request confirmed it (`replace_account`)."""
        existing = self.store.get_connection(connection_id)
        change = account_change(existing, account)
        if change is None or existing is None or confirmed:
            return
        with self.store.locked("audit_log") as conn:
            self._audit(conn, "connection.account_replace_refused", existing, change)
        raise account_mismatch(connection_id, change)

    def _audit(self, conn: sa.Connection, action: str, connection: Connection, detail: dict[str, Any]) -> None:
        self.store.audit(
            conn,
            action,
            actor=ACTOR,
            tenant=connection.tenant,
            provider=connection.provider,
            connection_id=connection.id,
            detail=detail,
        )

    def _account_change(
        self, conn: sa.Connection, existing: Connection | None, account: AccountInfo, confirmed: bool
    ) -> dict[str, str] | None:
        """Under the connection's lock: a confirmed account change drops the old account's sync cursors (they mean
        nothing in the new one) and returns its facts for the audit; None when the account stays."""
        change = account_change(existing, account)
        if change is None or existing is None:
            return None
        if not confirmed:  # another reconnect changed the account since the check above
            raise account_mismatch(existing.id, change)
        conn.execute(schema.sync_cursors.delete().where(schema.sync_cursors.c.connection_id == existing.id))
        return change

    def _save(
        self,
        tenant: str,
        provider: str,
        *,
        requested: list[str],
        granted: list[str],
        grant: TokenGrant,
        account: AccountInfo,
        metadata: dict[str, Any],
        replace_account: bool = False,
    ) -> Connection:
        """Store the connection with its tokens (encrypted at rest), audit it and announce it, in one transaction.
        A different provider account than the stored one is refused unless `replace_account` confirms it."""
        connection_id = connection_id_for(tenant, provider)
        self._refuse_unconfirmed_account_change(connection_id, account, replace_account)
        with self.store.locked(connection_id) as conn:
            existing = self.store.get_connection(connection_id)
            replaced = self._account_change(conn, existing, account, replace_account)
            # Incremental authorization: asking for Directory later must not forget that Calendar was wanted.
            wanted = set(requested) | set(existing.requested_scopes if existing else ())
            connection = self.store.save_connection(
                conn,
                tenant=tenant,
                provider=provider,
                requested_scopes=sorted(wanted),
                granted_scopes=granted,
                tokens=grant.tokens,
                external_account_id=account.external_account_id,
                provider_metadata=metadata,
            )
            facts: dict[str, Any] = {
                "granted_scopes": connection.granted_scopes,
                "missing_scopes": connection.missing_scopes,
            }
            if metadata.get(AUTH_MODE) == APP_ONLY:
                facts[AUTH_MODE] = APP_ONLY
            if replaced is not None:
                self._audit(conn, "connection.account_replaced", connection, replaced)
            self.store.audit(
                conn,
                "connection.reauthorized" if existing else "connection.connected",
                actor=ACTOR,
                tenant=tenant,
                provider=provider,
                connection_id=connection_id,
                detail=facts,
            )
            record_event(
                conn,
                EventType.CONNECTED,
                connection_id=connection_id,
                at=connection.updated_at,
                data={**_event_facts(connection), "reauthorized": existing is not None, **facts},
            )
        return connection

    def admin_consent_redirect_uri(self, provider: str) -> str:
        """Where Entra ID sends the administrator back after admin consent (`admin_consent_landing`)."""
        return f"{str(self.settings.public_url).rstrip('/')}/oauth/{provider}/adminconsent"

    def admin_consent_url(self, provider: str, directory_tenant: str, state: str | None = None) -> str:
        """Where an administrator of `directory_tenant` grants the app its application permissions (Entra ID's
        admin consent endpoint); afterwards `connect_app_only` can get tokens for that tenant. With a `state`
        (`start_admin_consent`), the landing connects the tenant; without one, the operator connects it."""
        oauth = self.app_only_client(provider, directory_tenant)
        with closing(oauth):
            authority = oauth.endpoints.authorize_url.split("/common/", 1)[0]
            params = {
                "client_id": oauth.app.client_id,
                "scope": oauth.spec.app_only_scope or "",
                "redirect_uri": self.admin_consent_redirect_uri(provider),
                **({"state": state} if state else {}),
            }
            return f"{authority}/{directory_tenant}/v2.0/adminconsent?{urlencode(params)}"

    def start_admin_consent(self, provider: str, tenant: str, directory_tenant: str) -> AuthorizationStart:
        """A single-use state bound to `tenant`, `provider` and `directory_tenant`, and the admin consent URL that
        carries it. Admin consent redeems no code, so the state's encrypted secret (a PKCE verifier in the sign-in
        flow) holds the directory tenant: the landing connects that directory, whatever the redirect says."""
        with closing(self.app_only_client(provider, directory_tenant)) as oauth:  # refuses a bad tenant first
            scope = oauth.spec.app_only_scope or ""
        state, expires_at = self.store.create_oauth_state(
            tenant=tenant,
            provider=provider,
            redirect_uri=self.admin_consent_redirect_uri(provider),
            return_path=None,
            scopes=[scope],
            code_verifier=directory_tenant,
        )
        url = self.admin_consent_url(provider, directory_tenant, state)
        return AuthorizationStart(authorization_url=url, state_expires_at=expires_at)

    def complete_admin_consent(
        self, provider: str, *, state: str | None, granted: bool, error: str | None, error_description: str | None
    ) -> Connection:
        """Where Entra ID's admin consent lands: consume the state, then connect its directory app-only. Entra's
        refusal (`error`, `error_description`) may come without the state; it is answered as a refusal all the same."""
        self.app_only_provider(provider)  # an unknown or disabled provider is refused before the state is used
        pending = self._consume_state(state, provider) if state else None
        if pending is not None and pending.redirect_uri != self.admin_consent_redirect_uri(provider):
            raise GatewayError(400, "invalid_state", "this state was issued for signing in, not for admin consent")
        if pending is None and not error:  # consent through a URL without a state (the CLI's advice)
            raise GatewayError(
                400,
                "missing_state",
                "admin consent landed without a state, so the gateway cannot tell which tenant to connect: if the "
                "administrator consented, connect with `integrations-pipeline connections connect-app-only`; or "
                f"start again with POST /connections/{provider}/admin-consent",
            )
        if pending is None or error or not granted:
            reason = f"{error}: {error_description or 'no description'}" if error else "no consent was granted"
            raise GatewayError(
                400,
                "admin_consent_denied",
                f"the administrator did not grant admin consent ({reason}); start the admin consent again "
                f"(POST /connections/{provider}/admin-consent) and ask a Global or Privileged Role Administrator",
            )
        return self.connect_app_only(provider, pending.tenant, pending.code_verifier.get_secret_value())

    def app_only_provider(self, provider: str) -> OAuthClient:
        """The provider's shared client, if it is enabled and has app-only connections (Microsoft)."""
        shared = self.oauth_client(provider)
        if shared.spec.app_only_scope is None:
            raise GatewayError(400, "app_only_unsupported", f"{shared.spec.display_name} has no app-only connections")
        return shared

    def app_only_client(self, provider: str, directory_tenant: str) -> OAuthClient:
        shared = self.app_only_provider(provider)
        try:
            return OAuthClient(shared.spec, shared.app, directory_tenant=directory_tenant)
        except ValueError as invalid:
            raise GatewayError(400, "invalid_directory_tenant", str(invalid)) from None

    def connect_app_only(self, provider: str, tenant: str, directory_tenant: str) -> Connection:
        """An app-only connection (Microsoft): tokens by the client-credentials grant for `directory_tenant`, whose
        administrator consented to the app's application permissions (directory-wide reads of users). It has no
        refresh token; the connector asks for a new token when the old one expires."""
        with closing(self.app_only_client(provider, directory_tenant)) as oauth:
            try:
                grant = oauth.client_credentials()
            except (NeedsReauth, ProviderError):
                url = self.admin_consent_url(provider, directory_tenant)
                raise GatewayError(
                    400,
                    "admin_consent_required",
                    f"{oauth.spec.display_name} gave no app-only token for {directory_tenant}: an administrator of "
                    f"that tenant must grant admin consent at {url}, then connect again",
                ) from None
        scope = oauth.spec.app_only_scope or ""
        return self._save(
            tenant,
            provider,
            requested=[scope],
            granted=[scope],
            grant=grant,
            account=AccountInfo(external_account_id=directory_tenant),
            metadata={AUTH_MODE: APP_ONLY, DIRECTORY_TENANT: directory_tenant},
        )

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
            self._audit(conn, "connection.disconnected", connection, {"revoked_at_provider": revoked})
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
