"""Typed failures every connector raises; assets turn them into `dg.Failure`s a person can act on.

A ProviderError's message is stored and logged (Dagster run storage, the audit log, outgoing events), and it often
quotes what the provider sent: every message is scrubbed of credentials here, whoever builds it."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Self

REDACTED = "[redacted]"
# Secrets shorter than this are not searched for: a short value would redact ordinary words.
MIN_SECRET_CHARS = 8
# What a credential looks like wherever it is echoed: an auth scheme and its token, an Authorization header, and
# a JSON, form or query field named like a secret (access_token, refresh_token, client_secret, ...).
_CREDENTIAL_PATTERNS = (
    re.compile(r"\b(Bearer|Basic|Zoho-oauthtoken)(\s+)[A-Za-z0-9\-._~+/]{16,}=*", re.IGNORECASE),
    re.compile(r"""((?<![\w-])Authorization["']?\s*[:=]\s*["']?)([^"'\r\n,;}&]+)""", re.IGNORECASE),
    re.compile(
        r"""(\b\w*(?:token|secret|password|api_?key|code_verifier)["']?\s*[:=]\s*["']?)([^"'\s,;}&]+)""",
        re.IGNORECASE,
    ),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without any of `secrets` and without anything shaped like a credential."""
    for secret in sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    scheme, header, field = _CREDENTIAL_PATTERNS
    text = scheme.sub(lambda match: f"{match[1]}{match[2]}{REDACTED}", text)
    text = header.sub(lambda match: match[1] + REDACTED, text)
    return field.sub(lambda match: match[1] + REDACTED, text)


class ProviderError(Exception):
    """The provider refused or failed a request in a way retrying will not fix."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(redact(message))
        self.status_code = status_code

    def without(self, secrets: Iterable[str]) -> Self:
        """The same error with these exact values (the call's tokens and secrets) removed from its message."""
        self.args = (redact(str(self), secrets),)
        return self


class InvalidField(ProviderError):
    """The provider refused a request naming a field the object no longer has (Salesforce INVALID_FIELD, Zoho
    INVALID_DATA on `fields`): deleted since the catalog was discovered, or hidden from the connected user. Readers
    drop a catalog field refused so and ask again; a field of their own refused fails the sync."""

    def __init__(self, message: str, *, field: str, status_code: int | None = None) -> None:
        super().__init__(message, status_code=status_code)
        self.field = field


class RateLimited(ProviderError):
    """The provider asked us to wait longer than this run may; reschedule instead of spending an attempt."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message, status_code=429)
        self.retry_after_s = retry_after_s


class CursorExpired(ProviderError):
    """The incremental cursor is no longer valid at the provider: a scoped full resync is due."""


class NeedsReauth(ProviderError):
    """The connection's grant is gone (`invalid_grant`, revoked, no refresh token): a person must reconnect."""


class AnswerLost(ProviderError):
    """A request that must not be sent twice reached the wire, and its answer never came (the connection dropped
    or timed out after sending): the provider may or may not have acted on it."""

    def __init__(self, message: str, *, cause: str) -> None:
        super().__init__(message)
        self.cause = cause  # the transport failure's name (ReadTimeout, RemoteProtocolError, ...)


class RefreshAnswerLost(NeedsReauth):
    """A refresh's answer was lost at a provider that rotates refresh tokens: the stored refresh token may have
    been consumed, and presenting it again could revoke the grant (reuse detection). A person must reconnect."""
