"""Auth lives in the transport: an httpx.Auth that adds the connection's token, refreshes it ahead of expiry
under a per-connection lock, and retries once on a 401. Connectors never see refresh logic."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import sqlalchemy as sa

from integrations_pipeline.clients.errors import NeedsReauth, RefreshAnswerLost
from integrations_pipeline.clients.oauth import OAuthClient
from integrations_pipeline.crypto import DecryptionError
from integrations_pipeline.store import Connection, ConnectionStatus, StateStore, TokenSet

REFRESH_MARGIN = timedelta(minutes=5)


def needs_refresh(tokens: TokenSet, now: datetime | None = None) -> bool:
    if tokens.expires_at is None:
        return False
    return tokens.expires_at - (now or datetime.now(UTC)) < REFRESH_MARGIN


@dataclass(frozen=True)
class Reauth:
    """Why a connection now needs a person: recorded once, by the one worker that saw it happen."""

    cause: str  # grant_rejected | refresh_answer_lost | no_refresh_token | undecryptable_tokens
    reason: str


def undecryptable(error: DecryptionError) -> Reauth:
    return Reauth(
        "undecryptable_tokens",
        f"its stored tokens cannot be decrypted ({error}): put that key back in INTEGRATIONS_ENCRYPTION_KEYS for "
        "every process (gateway and Dagster alike), or reconnect to store new tokens",
    )


class TokenSource:
    """Hands out a connection's current access token, refreshing it so that exactly one refresh per expiry
    reaches the provider, however many threads or processes ask at once. A failure that needs a person (a
    rejected grant, a lost refresh answer, undecryptable tokens) is recorded once: one status change, one audit
    entry, one event, and every other waiter reads it from the store instead of calling the provider."""

    def __init__(self, store: StateStore, oauth: OAuthClient, connection_id: str, *, actor: str = "sync") -> None:
        self.store = store
        self.oauth = oauth
        self.connection_id = connection_id
        self.actor = actor
        # Kept between requests until it nears expiry: reading and decrypting the store on every page cost a
        # sync about 1 ms a request. The store stays the truth for refreshes, which always re-read it under lock.
        self._current: TokenSet | None = None

    def access_token(self) -> str:
        try:
            tokens = self._current or self._load()
        except DecryptionError:
            # Not retryable: recorded under the lock like any other transition, by the first worker to get there.
            return self._refresh(rejected_access_token=None)
        if not needs_refresh(tokens):
            self._current = tokens
            return tokens.access_token.get_secret_value()
        return self._refresh(rejected_access_token=None)

    def after_unauthorized(self, rejected_access_token: str) -> str:
        """A 401 on a data call: refresh once, unless another worker already replaced the token."""
        return self._refresh(rejected_access_token=rejected_access_token)

    def known_secrets(self) -> list[str]:
        """What an error message quoting the provider must never repeat."""
        tokens = [self._current.access_token, self._current.refresh_token] if self._current else []
        return [secret.get_secret_value() for secret in (*tokens, self.oauth.app.client_secret) if secret]

    def _load(self) -> TokenSet:
        self._check_active(self.store.get_connection(self.connection_id))
        tokens = self.store.load_tokens(self.connection_id)
        if tokens is None:
            raise NeedsReauth(f"connection {self.connection_id} has no tokens: reconnect it")
        return tokens

    def _check_active(self, connection: Connection | None) -> None:
        if connection is None or connection.status != ConnectionStatus.ACTIVE:
            state = connection.status.value if connection else "missing"
            why = f" ({connection.status_reason})" if connection and connection.status_reason else ""
            raise NeedsReauth(f"connection {self.connection_id} is {state}{why}: reconnect it before syncing")

    def _refresh(self, *, rejected_access_token: str | None) -> str:
        with self.store.locked(self.connection_id) as conn:
            outcome = self._refresh_locked(conn, rejected_access_token)
            if isinstance(outcome, Reauth):
                # Committed with the lock's transaction, then raised below: the status must survive the failure.
                self.store.set_status(conn, self.connection_id, ConnectionStatus.NEEDS_REAUTH, outcome.reason)
                self.store.audit(
                    conn,
                    "connection.needs_reauth",
                    actor=self.actor,
                    connection_id=self.connection_id,
                    detail={"reason": outcome.reason, "cause": outcome.cause},
                )
        if isinstance(outcome, Reauth):
            self._current = None
            raise NeedsReauth(f"connection {self.connection_id} needs re-authorization: {outcome.reason}")
        self._current = outcome
        return outcome.access_token.get_secret_value()

    def _refresh_locked(self, conn: sa.Connection, rejected_access_token: str | None) -> TokenSet | Reauth:
        """Under the lock, what other workers did while we waited comes first: a status they changed (raised,
        nothing written: they recorded it), then tokens they refreshed. Only then is the provider asked."""
        self._check_active(self.store.get_connection(self.connection_id, conn))
        try:
            tokens = self.store.load_tokens(self.connection_id, conn)
        except DecryptionError as error:
            return undecryptable(error)
        if tokens is None:
            raise NeedsReauth(f"connection {self.connection_id} has no tokens: reconnect it")
        current = tokens.access_token.get_secret_value()
        already_refreshed = current != rejected_access_token if rejected_access_token else not needs_refresh(tokens)
        if already_refreshed:
            return tokens
        if tokens.refresh_token is None:
            return Reauth("no_refresh_token", "the access token expired and the provider issued no refresh token")
        try:
            grant = self.oauth.refresh(tokens.refresh_token.get_secret_value())
        except RefreshAnswerLost as lost:
            return Reauth("refresh_answer_lost", str(lost))
        except NeedsReauth as rejected:
            return Reauth("grant_rejected", str(rejected))
        # The rotated refresh token is committed before the new access token is used anywhere.
        self.store.save_tokens(conn, self.connection_id, grant.tokens)
        self.store.audit(
            conn,
            "token.refreshed",
            actor=self.actor,
            connection_id=self.connection_id,
            detail={"expires_at": grant.tokens.expires_at.isoformat() if grant.tokens.expires_at else None},
        )
        return grant.tokens


class ConnectionAuth(httpx.Auth):
    def __init__(self, tokens: TokenSource, scheme: str = "Bearer") -> None:
        self.tokens = tokens
        self.scheme = scheme

    def known_secrets(self) -> list[str]:
        return self.tokens.known_secrets()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.tokens.access_token()
        request.headers["Authorization"] = f"{self.scheme} {token}"
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = f"{self.scheme} {self.tokens.after_unauthorized(token)}"
            yield request
