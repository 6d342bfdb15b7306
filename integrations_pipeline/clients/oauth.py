"""OAuth 2.0 authorization code + PKCE S256 against any registered provider, built on oauthlib.

oauthlib prepares request bodies, PKCE values and parses token responses (including RFC 6749 errors);
httpx, through the shared retry policy, carries every call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from oauthlib.oauth2 import WebApplicationClient
from oauthlib.oauth2.rfc6749.errors import OAuth2Error
from pydantic import SecretStr

from integrations_pipeline.clients.errors import AnswerLost, NeedsReauth, ProviderError, RefreshAnswerLost
from integrations_pipeline.clients.http import ApiClient
from integrations_pipeline.clients.spec import AccountInfo, ProviderSpec
from integrations_pipeline.settings import ProviderApp
from integrations_pipeline.store import TokenSet

PKCE_VERIFIER_LENGTH = 64
# Fields of a token response that are safe to keep in plain text as connection metadata.
NON_SECRET_TOKEN_FIELDS = ("api_domain", "instance_url", "id", "issued_at", "token_type")
ACCOUNTS_SERVER = "accounts_server"  # connection metadata: the data centre's accounts server (Zoho)


@dataclass(frozen=True)
class TokenGrant:
    tokens: TokenSet
    granted_scopes: list[str] | None
    metadata: dict[str, Any]


def new_pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    client = WebApplicationClient(client_id="")
    verifier = client.create_code_verifier(PKCE_VERIFIER_LENGTH)
    return verifier, client.create_code_challenge(verifier, "S256")


class OAuthClient:
    def __init__(
        self, spec: ProviderSpec, app: ProviderApp, api: ApiClient | None = None, *, accounts_server: str | None = None
    ) -> None:
        self.spec = spec
        self.app = app
        self.endpoints = spec.oauth_endpoints(app, accounts_server)
        self.api = api or ApiClient(spec.api_origin(app))
        self._oauthlib = WebApplicationClient(client_id=app.client_id)

    @classmethod
    def for_connection(cls, spec: ProviderSpec, app: ProviderApp, metadata: Mapping[str, Any]) -> OAuthClient:
        """A client of its own for one connection: in another data centre (Zoho), token calls go to the accounts
        server its callback named and account calls to its `api_domain`. The caller closes it."""
        accounts_server = metadata.get(ACCOUNTS_SERVER) if spec.accounts_servers else None
        if accounts_server is None:
            return cls(spec, app)
        api = ApiClient(str(metadata.get("api_domain") or spec.api_origin(app)))
        return cls(spec, app, api, accounts_server=str(accounts_server))

    def close(self) -> None:
        self.api.close()

    def authorization_url(self, *, redirect_uri: str, scopes: list[str], state: str, code_challenge: str) -> str:
        # Built here rather than by oauthlib's prepare_request_uri, which refuses the sandbox's http://127.0.0.1.
        params = {
            "response_type": "code",
            "client_id": self.app.client_id,
            "redirect_uri": redirect_uri,
            "scope": self.spec.scope_separator.join(scopes),
            "state": state,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
            **dict(self.spec.extra_authorize_params),
        }
        separator = "&" if "?" in self.endpoints.authorize_url else "?"
        return self.endpoints.authorize_url + separator + urlencode(params)

    def exchange_code(self, *, code: str, redirect_uri: str, code_verifier: str) -> TokenGrant:
        body = self._oauthlib.prepare_request_body(
            code=code,
            redirect_uri=redirect_uri,
            code_verifier=code_verifier,
            client_secret=self.app.client_secret.get_secret_value(),
        )
        # A code is single use (RFC 6749 4.1.2): sent twice, it fails and may revoke what the first use issued.
        return self._token_call(body, previous_refresh_token=None, replay_safe=False)

    def refresh(self, refresh_token: str) -> TokenGrant:
        """Raises RefreshAnswerLost when the answer of a refresh that cannot be re-sent was lost."""
        body = self._oauthlib.prepare_refresh_body(
            refresh_token=refresh_token,
            client_id=self.app.client_id,
            client_secret=self.app.client_secret.get_secret_value(),
        )
        replay_safe = not self.spec.refresh_tokens_rotate
        try:
            return self._token_call(body, previous_refresh_token=refresh_token, replay_safe=replay_safe)
        except AnswerLost as lost:
            raise RefreshAnswerLost(
                f"the answer to a token refresh was lost after {self.spec.display_name} received it ({lost.cause}); "
                f"{self.spec.display_name} may rotate refresh tokens, so the stored one may be spent and is not "
                "sent again (reuse would revoke the grant): reconnect"
            ) from None

    def describe_account(self, access_token: str) -> AccountInfo:
        return self.spec.describe_account(self.api, access_token) if self.spec.describe_account else AccountInfo()

    def revoke(self, tokens: TokenSet) -> bool:
        return self.spec.revoke(self.api, tokens, self.endpoints) if self.spec.revoke else False

    def _token_call(self, body: str, *, previous_refresh_token: str | None, replay_safe: bool) -> TokenGrant:
        response = self.api.request(
            "POST",
            self.endpoints.token_url,
            content=body,
            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
            check_status=False,
            replay_safe=replay_safe,
        )
        try:
            token = self._oauthlib.parse_request_body_response(response.text)
        except Warning as scope_changed:  # oauthlib signals a narrowed scope this way; the token is still good
            token = scope_changed.token  # type: ignore[attr-defined]
        except (OAuth2Error, ValueError) as error:
            code = getattr(error, "error", None) or "unreadable response"
            if code in self.spec.reauth_errors:
                raise NeedsReauth(f"{self.spec.display_name} rejected the grant ({code}): reconnect") from None
            raise ProviderError(
                f"{self.spec.display_name} token endpoint answered HTTP {response.status_code} ({code})",
                status_code=response.status_code,
            ) from None
        expires_in = token.get("expires_in")
        refresh = token.get("refresh_token") or previous_refresh_token  # non-rotating providers omit it
        # oauthlib splits `scope` on spaces; providers with another separator (Zoho: commas) need a second split.
        scope = token.get("scope")
        items = [scope] if isinstance(scope, str) else list(scope or [])
        granted = [part for item in items for part in item.split(self.spec.scope_separator) if part]
        return TokenGrant(
            tokens=TokenSet(
                access_token=SecretStr(token["access_token"]),
                refresh_token=SecretStr(refresh) if refresh else None,
                expires_at=datetime.now(UTC) + timedelta(seconds=int(expires_in)) if expires_in else None,
            ),
            granted_scopes=list(granted) if granted else None,
            metadata={key: token[key] for key in NON_SECRET_TOKEN_FIELDS if key in token},
        )
