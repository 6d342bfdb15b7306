"""Typed failures every connector raises; assets turn them into `dg.Failure`s a person can act on."""

from __future__ import annotations


class ProviderError(Exception):
    """The provider refused or failed a request in a way retrying will not fix."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class RateLimited(ProviderError):
    """The provider asked us to wait longer than this run may; reschedule instead of spending an attempt."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message, status_code=429)
        self.retry_after_s = retry_after_s


class CursorExpired(ProviderError):
    """The incremental cursor is no longer valid at the provider: a scoped full resync is due."""


class NeedsReauth(ProviderError):
    """The connection's grant is gone (`invalid_grant`, revoked, no refresh token): a person must reconnect."""
