"""Auth lives in the transport: an httpx.Auth that adds the connection's token, refreshes it ahead of expiry
under a per-connection lock, and retries once on a 401. Connectors never see refresh logic."""

from __future__ import annotations

from collections.abc import Generator
from datetime import UTC, datetime, timedelta

import httpx

from integrations_pipeline.clients.errors import NeedsReauth
from integrations_pipeline.clients.oauth import OAuthClient
from integrations_pipeline.store import ConnectionStatus, StateStore, TokenSet

REFRESH_MARGIN = timedelta(minutes=5)


def needs_refresh(tokens: TokenSet, now: datetime | None = None) -> bool:
    if tokens.expires_at is None:
        return False
    return tokens.expires_at - (now or datetime.now(UTC)) < REFRESH_MARGIN


class TokenSource:
    """Hands out a connection's current access token, refreshing it so that exactly one refresh per expiry
    reaches the provider, however many threads or processes ask at once."""

    def __init__(self, store: StateStore, oauth: OAuthClient, connection_id: str, *, actor: str = "sync") -> None:
        self.store = store
        self.oauth = oauth
        self.connection_id = connection_id
        self.actor = actor
        # Kept between requests until it nears expiry: reading and decrypting the store on every page cost a
        # sync about 1 ms a request. The store stays the truth for refreshes, which always re-read it under lock.
        self._current: TokenSet | None = None

    def access_token(self) -> str:
        tokens = self._current or self._load()
        if not needs_refresh(tokens):
            self._current = tokens
            return tokens.access_token.get_secret_value()
        return self._refresh(rejected_access_token=None)

    def after_unauthorized(self, rejected_access_token: str) -> str:
        """A 401 on a data call: refresh once, unless another worker already replaced the token."""
        return self._refresh(rejected_access_token=rejected_access_token)

    def _load(self) -> TokenSet:
        connection = self.store.get_connection(self.connection_id)
        if connection is None or connection.status != ConnectionStatus.ACTIVE:
            state = connection.status.value if connection else "missing"
            raise NeedsReauth(f"connection {self.connection_id} is {state}: reconnect it before syncing")
        tokens = self.store.load_tokens(self.connection_id)
        if tokens is None:
            raise NeedsReauth(f"connection {self.connection_id} has no tokens: reconnect it")
        return tokens

    def _refresh(self, *, rejected_access_token: str | None) -> str:
        reauth_reason: str | None = None
        with self.store.locked(self.connection_id) as conn:
            # Re-read under the lock: another worker may have refreshed while we waited for it.
            tokens = self.store.load_tokens(self.connection_id, conn)
            if tokens is None:
                raise NeedsReauth(f"connection {self.connection_id} has no tokens: reconnect it")
            current = tokens.access_token.get_secret_value()
            already_refreshed = current != rejected_access_token if rejected_access_token else not needs_refresh(tokens)
            if already_refreshed:
                self._current = tokens
                return current
            try:
                grant = self.oauth.renew(tokens)  # refresh token, or client credentials for app-only connections
            except NeedsReauth as error:
                reauth_reason = str(error)
            if reauth_reason is not None:
                # Committed with the lock's transaction, then raised below: the status must survive the failure.
                self.store.set_status(conn, self.connection_id, ConnectionStatus.NEEDS_REAUTH, reauth_reason)
                self.store.audit(
                    conn,
                    "connection.needs_reauth",
                    actor=self.actor,
                    connection_id=self.connection_id,
                    detail={"reason": reauth_reason},
                )
            else:
                # The rotated refresh token is committed before the new access token is used anywhere.
                self.store.save_tokens(conn, self.connection_id, grant.tokens)
                self.store.audit(
                    conn,
                    "token.refreshed",
                    actor=self.actor,
                    connection_id=self.connection_id,
                    detail={"expires_at": grant.tokens.expires_at.isoformat() if grant.tokens.expires_at else None},
                )
        if reauth_reason is not None:
            self._current = None
            raise NeedsReauth(f"connection {self.connection_id} needs re-authorization: {reauth_reason}")
        self._current = grant.tokens
        return grant.tokens.access_token.get_secret_value()


class ConnectionAuth(httpx.Auth):
    def __init__(self, tokens: TokenSource, scheme: str = "Bearer") -> None:
        self.tokens = tokens
        self.scheme = scheme

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.tokens.access_token()
        request.headers["Authorization"] = f"{self.scheme} {token}"
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = f"{self.scheme} {self.tokens.after_unauthorized(token)}"
            yield request
