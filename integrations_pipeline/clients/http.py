"""The one HTTP policy of every connector: explicit timeouts, retries on 429/5xx/transport errors only,
`Retry-After` honoured, full-jitter exponential backoff, an optional shared rate-limit budget asked before every
call, and a tally of calls and rate-limit headroom.

A request that must not take effect twice (`replay_safe=False`: a code exchange, a refresh at a provider that
rotates refresh tokens) is re-sent only when it provably never left: a connect failure or a pool timeout. An answer
lost after sending raises AnswerLost, and a 5xx is handed back as the provider's answer.

Every ProviderError leaving a client is scrubbed of the call's credentials (its Authorization header, secret-named
body and query fields) and of the secrets its auth transport holds, whatever the provider echoed back."""

from __future__ import annotations

import functools
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, Self, runtime_checkable
from urllib.parse import parse_qsl

import httpx

from integrations_pipeline.clients.errors import AnswerLost, NeedsReauth, ProviderError, RateLimited, redact

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
TIMEOUT = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
RETRYABLE_TRANSPORT_ERRORS = (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, httpx.TimeoutException)
# Failures before a single byte of the request was written: re-sending cannot make anything happen twice.
UNSENT_TRANSPORT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
SECRET_FIELD_ENDINGS = ("token", "secret", "password", "code", "code_verifier", "assertion")
ERROR_EXCERPT_CHARS = 300

# httpx logs every request URL at INFO, and some provider endpoints carry a token in the path (HubSpot's token
# introspection and revocation): whoever turns INFO logging on must not turn on a token leak with it.
for _logger_name in ("httpx", "httpcore"):
    logging.getLogger(_logger_name).setLevel(logging.WARNING)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process: loading the CA bundle costs tens of milliseconds per client, and a
    sync builds a few clients per connection. SSLContext is safe to share between clients and threads."""
    return httpx.create_ssl_context()


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    # A Retry-After beyond this is not waited out inside the run: RateLimited lets the orchestrator reschedule.
    max_retry_after_s: float = 120.0

    def backoff(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Full jitter: uniform in [0, min(max, base * 2^attempt)]."""
        return rng() * min(self.max_delay_s, self.base_delay_s * 2**attempt)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class RateLimiter(Protocol):
    """A rate-limit budget shared beyond this client (clients/ratelimits.py keeps it in the state store)."""

    def acquire(self) -> float:
        """Take one call from the budget: 0.0, or the seconds to wait before asking again (nothing taken)."""

    def observe(self, response: httpx.Response, *, refused: bool) -> None:
        """Feed what the provider said; `refused` when it refused the call for a rate limit."""


@dataclass
class CallStats:
    """What a sync spent at the provider, for the materialization's metadata."""

    api_calls: int = 0
    retries: int = 0
    rate_limit_headers: dict[str, str] = field(default_factory=dict)
    budget_wait_s: float = 0.0
    """Time spent waiting for the shared rate-limit budget before calls."""


class ApiClient:
    """A provider's HTTP session: base URL, auth transport, retry policy and call statistics."""

    rate_limit_header_prefixes: tuple[str, ...] = ()

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.http = httpx.Client(
            base_url=base_url, auth=auth, timeout=TIMEOUT, headers=dict(headers or {}), verify=_tls_context()
        )
        self._auth = auth
        self.retry = retry or RetryPolicy()
        self.stats = CallStats()
        # A paginator's worker thread and its caller may both send calls: stats and the limiter's lease are shared.
        self._bookkeeping = threading.Lock()
        self._sleep = sleep
        # Provider clients are built by their spec's factory; whoever runs the sync may set a limiter afterwards.
        self.limiter = limiter

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(
        self, method: str, url: str, *, check_status: bool = True, replay_safe: bool = True, **kwargs: Any
    ) -> httpx.Response:
        """Send with the retry policy; return a 2xx/3xx response or raise a typed error.

        `check_status=False` hands non-retryable 4xx responses back to the caller (OAuth error bodies).
        `replay_safe=False` for a request that must not take effect twice (see the module's docstring)."""
        try:
            return self._send(method, url, check_status=check_status, replay_safe=replay_safe, **kwargs)
        except ProviderError as error:
            raise error.without(self._secrets_of(kwargs)) from None

    def _send(self, method: str, url: str, *, check_status: bool, replay_safe: bool, **kwargs: Any) -> httpx.Response:
        for attempt in range(self.retry.max_attempts):
            last_attempt = attempt == self.retry.max_attempts - 1
            self._wait_for_budget(method, url)
            try:
                with self._bookkeeping:
                    self.stats.api_calls += 1
                response = self.http.request(method, url, **kwargs)
            except RETRYABLE_TRANSPORT_ERRORS as error:
                if not replay_safe and not isinstance(error, UNSENT_TRANSPORT_ERRORS):
                    raise AnswerLost(
                        f"{method} {url}: the answer was lost after the request was sent ({type(error).__name__}); "
                        "not sent again, since the provider may already have acted on it",
                        cause=type(error).__name__,
                    ) from None
                if last_attempt:
                    raise ProviderError(
                        f"{method} {url}: {type(error).__name__} after {attempt + 1} attempts"
                    ) from None
                self._pause(self.retry.backoff(attempt))
                continue
            refused = response.status_code == 429 or self.is_rate_limited(response)
            with self._bookkeeping:
                self._remember_rate_limits(response)
                if self.limiter is not None:
                    self.limiter.observe(response, refused=refused)
            # A refusal for a rate limit did nothing; a 5xx to a request that must not run twice is its answer.
            retryable = refused or (replay_safe and response.status_code in RETRYABLE_STATUS)
            if not retryable:
                return self.raise_for_status(response) if check_status else response
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if retry_after is not None and retry_after > self.retry.max_retry_after_s:
                raise RateLimited(
                    f"{method} {url}: provider asked to wait {retry_after:.0f} s", retry_after_s=retry_after
                )
            if last_attempt:
                break
            self._pause(retry_after if retry_after is not None else self.retry.backoff(attempt))
        if response.status_code == 429 or self.is_rate_limited(response):
            raise RateLimited(
                f"{method} {url}: still rate limited after {self.retry.max_attempts} attempts",
                retry_after_s=parse_retry_after(response.headers.get("Retry-After")) or self.retry.max_delay_s,
            )
        raise ProviderError(
            f"{method} {url}: HTTP {response.status_code} after {self.retry.max_attempts} attempts",
            status_code=response.status_code,
        )

    def get_json(self, url: str, **kwargs: Any) -> Any:
        return self.request("GET", url, **kwargs).json()

    def is_rate_limited(self, response: httpx.Response) -> bool:
        """Providers that signal rate limits without a 429 (Google's 403 rateLimitExceeded) override this."""
        return False

    def raise_for_status(self, response: httpx.Response) -> httpx.Response:
        if response.status_code == 401:
            raise NeedsReauth(f"{response.request.method} {response.request.url.path}: the provider answered 401")
        if response.status_code >= 400:
            # Scrubbed before it is cut: a token split at the cut would leave its first part behind.
            excerpt = redact(response.text, self._secrets_of({}, response.request))[:ERROR_EXCERPT_CHARS]
            raise ProviderError(
                f"{response.request.method} {response.request.url.path}: HTTP {response.status_code}: {excerpt}",
                status_code=response.status_code,
            )
        return response

    def _secrets_of(self, kwargs: Mapping[str, Any], request: httpx.Request | None = None) -> set[str]:
        """Every credential this call carried or its auth transport holds: what an error message must not quote."""
        found = set(self._auth.known_secrets()) if isinstance(self._auth, HoldsSecrets) else set()
        headers = {**self.http.headers, **dict(kwargs.get("headers") or {})}
        found |= _secret_values(headers, kwargs.get("data"), kwargs.get("params"))
        content = kwargs.get("content")
        if isinstance(content, str | bytes):
            found |= _secret_values({}, parse_qsl(content if isinstance(content, str) else content.decode()), None)
        if request is not None:
            found |= _secret_values(dict(request.headers), parse_qsl(request.content.decode(errors="replace")), None)
            found |= _secret_values({}, None, list(request.url.params.multi_items()))
        return found

    def _wait_for_budget(self, method: str, url: str) -> None:
        """Wait until the shared budget grants this call; a wait beyond what a run may spend reschedules it."""
        if self.limiter is None:
            return
        waited = 0.0
        while (wait := self._acquire(self.limiter)) > 0:
            if waited + wait > self.retry.max_retry_after_s:
                raise RateLimited(
                    f"{method} {url}: the rate-limit budget shared by this connection's runs is spent "
                    f"for another {wait:.0f} s",
                    retry_after_s=wait,
                )
            self._sleep(wait)
            waited += wait
            with self._bookkeeping:
                self.stats.budget_wait_s += wait

    def _acquire(self, limiter: RateLimiter) -> float:
        with self._bookkeeping:
            return limiter.acquire()

    def _pause(self, seconds: float) -> None:
        with self._bookkeeping:
            self.stats.retries += 1
        self._sleep(seconds)

    def _remember_rate_limits(self, response: httpx.Response) -> None:
        for name, value in response.headers.items():
            if name.lower().startswith(self.rate_limit_header_prefixes):
                self.stats.rate_limit_headers[name.lower()] = value


@runtime_checkable
class HoldsSecrets(Protocol):
    """An auth transport that can say which secrets it sends (clients/auth.py's ConnectionAuth)."""

    def known_secrets(self) -> Iterable[str]: ...


def _secret_values(headers: Mapping[str, str], *fields: Any) -> set[str]:
    """The Authorization header's credential, and every value of a secret-named form, JSON or query field."""
    found = set()
    for name, value in headers.items():
        if name.lower() in ("authorization", "proxy-authorization"):
            found |= {value, value.partition(" ")[2]}
    for items in fields:
        pairs = items.items() if isinstance(items, Mapping) else (items or [])
        found |= {
            str(value)
            for name, value in pairs
            if isinstance(name, str) and name.lower().endswith(SECRET_FIELD_ENDINGS) and value
        }
    return found
