"""What each provider says about its rate limits, read into budget observations, and the limiter that makes every
request of every run ask the shared budget (store/budget.py) first.

The limits below are where a budget starts before the provider has said anything; the first response's headers
replace them where the provider advertises its limits (HubSpot, Salesforce, Zoho). Google and Microsoft Graph
advertise none: an operator sets theirs (INTEGRATIONS_<PROVIDER>__RATE_LIMIT, __RATE_WINDOW_S), and their refusals
(Retry-After, rateLimitExceeded) block every run until they pass.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

from integrations_pipeline.clients.http import parse_retry_after
from integrations_pipeline.store.budget import LEASE_TTL_S, LIVE_SHARE, Observation, RateBudgets, Window

BURST, WINDOW, DAILY, SEARCH = "burst", "window", "daily", "search"
DAY_S = 86_400.0

DEFAULT_WINDOWS: dict[str, tuple[Window, ...]] = {
    # 100 per rolling 10 s per app and portal, and a daily quota (headers X-HubSpot-RateLimit-*).
    "hubspot": (Window(BURST, 100, 10.0), Window(DAILY, 250_000, DAY_S)),
    # Per user per minute; Calendar's documented default is 600 (Directory and People allow more).
    "google": (Window(WINDOW, 600, 60.0),),
    # Outlook resources: 10,000 per 10 minutes per app and mailbox.
    "microsoft": (Window(WINDOW, 10_000, 600.0),),
    # The org's rolling 24-hour allowance (Sforce-Limit-Info: api-usage=used/limit).
    "salesforce": (Window(DAILY, 15_000, DAY_S),),
    # Credits per day per org; X-RATELIMIT-LIMIT / X-RATELIMIT-REMAINING report them.
    "zoho": (Window(DAILY, 5_000, DAY_S),),
}

SEARCH_WINDOWS: dict[str, Window] = {
    # HubSpot's CRM search endpoints: 5 requests per second per account, a limit of their own. Searches are exempt
    # from the 10-second burst window (HubSpot's OpenAPI: x-hubspot-rate-limit-exemptions ten-secondly) but count
    # toward the day. Refused with "You have reached your secondly limit." and no Retry-After.
    "hubspot": Window(SEARCH, 5, 1.0),
}


def is_search(provider: str, method: str, url: str) -> bool:
    """A call to a search endpoint of a provider whose searches have their own limit (POST .../search)."""
    return provider in SEARCH_WINDOWS and method == "POST" and urlsplit(url).path.rstrip("/").endswith("/search")


def search_windows(provider: str, windows: tuple[Window, ...]) -> tuple[Window, ...]:
    """The buckets a search call takes from: the search limit instead of the burst window, and the daily quota."""
    return (SEARCH_WINDOWS[provider], *(window for window in windows if window.bucket != BURST))


# Calls taken from the budget per transaction: a sync paging as fast as it can makes one store round trip per
# LEASE_CALLS requests instead of one per request; parallel runs still share each window, since leased calls count.
LEASE_CALLS = 50

_SFORCE_USAGE = re.compile(r"api-usage=(\d+)/(\d+)")


def windows_for(provider: str, limit: int | None = None, window_s: float | None = None) -> tuple[Window, ...]:
    """The provider's budget buckets; an operator's limit or window replaces those of the first bucket."""
    first, *rest = DEFAULT_WINDOWS[provider]
    first = Window(first.bucket, limit or first.limit, window_s or first.window_s)
    return (first, *rest)


def pinned_window(provider: str, limit: int | None, window_s: float | None) -> Observation | None:
    """An operator's limit holds against a budget that already learned another one (and against headers)."""
    if limit is None and window_s is None:
        return None
    first = windows_for(provider, limit, window_s)[0]
    return Observation(first.bucket, limit=first.limit, window_s=first.window_s)


def _int(headers: httpx.Headers, name: str) -> int | None:
    value = headers.get(name, "").strip()
    return int(value) if value.isdigit() else None


def _used(limit: int | None, remaining: int | None) -> int | None:
    return None if limit is None or remaining is None else max(limit - remaining, 0)


def _hubspot(headers: httpx.Headers) -> list[Observation]:
    observations = []
    burst_limit, interval_ms = (
        _int(headers, "X-HubSpot-RateLimit-Max"),
        _int(headers, "X-HubSpot-RateLimit-Interval-Milliseconds"),
    )
    if burst_limit is not None:
        observations.append(
            Observation(
                BURST,
                limit=burst_limit,
                window_s=interval_ms / 1000 if interval_ms else None,
                used=_used(burst_limit, _int(headers, "X-HubSpot-RateLimit-Remaining")),
            )
        )
    daily_limit = _int(headers, "X-HubSpot-RateLimit-Daily")
    if daily_limit is not None:
        observations.append(
            Observation(
                DAILY, limit=daily_limit, used=_used(daily_limit, _int(headers, "X-HubSpot-RateLimit-Daily-Remaining"))
            )
        )
    return observations


def _salesforce(headers: httpx.Headers) -> list[Observation]:
    match = _SFORCE_USAGE.search(headers.get("Sforce-Limit-Info", ""))
    return [Observation(DAILY, limit=int(match[2]), used=int(match[1]))] if match else []


def _zoho(headers: httpx.Headers) -> list[Observation]:
    limit = _int(headers, "X-RATELIMIT-LIMIT")
    return [Observation(DAILY, limit=limit, used=_used(limit, _int(headers, "X-RATELIMIT-REMAINING")))] if limit else []


HEADER_READERS: dict[str, Callable[[httpx.Headers], list[Observation]]] = {
    "hubspot": _hubspot,
    "salesforce": _salesforce,
    "zoho": _zoho,
}


def _refused_bucket(provider: str, response: httpx.Response) -> str:
    """Which limit a refusal spent: HubSpot names its policy (its search limit says "secondly"); Salesforce and Zoho
    refuse on the daily allowance."""
    if provider == "hubspot":
        if b'"DAILY"' in response.content:
            return DAILY
        return SEARCH if b"your secondly limit" in response.content else BURST
    return DEFAULT_WINDOWS[provider][0].bucket


def read_signals(provider: str, response: httpx.Response, *, refused: bool) -> list[Observation]:
    """Observations from one response: advertised limits and usage, and for a refusal (429, Google's 403
    rateLimitExceeded, Salesforce's REQUEST_LIMIT_EXCEEDED) its Retry-After, or else the limit counts as spent."""
    reader = HEADER_READERS.get(provider)
    observations = reader(response.headers) if reader else []
    if refused:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        bucket = _refused_bucket(provider, response)
        observations.append(
            Observation(bucket, retry_after_s=retry_after) if retry_after else Observation(bucket, exhausted=True)
        )
    return observations


class BudgetLimiter:
    """ApiClient's RateLimiter over the shared budget of one (connection, provider).

    A provider whose searches have a limit of their own (HubSpot) has two lanes: searches take from the search and
    daily buckets, every other call from the provider's usual ones; each lane keeps its own lease.
    Calls are leased up to LEASE_CALLS at a time and spent within LEASE_TTL_S, or forfeited. A refusal is written at
    once and ends the lease, so other runs stop before their next call; ordinary headers ride along with the next
    lease (only the latest counts, since older ones are staler), and a lease ends early when the provider reports
    less room than it holds, so what the headers say reaches the budget before the lease is spent."""

    def __init__(
        self,
        budgets: RateBudgets,
        connection_id: str,
        provider: str,
        windows: tuple[Window, ...],
        *,
        share: float = LIVE_SHARE,
        pinned: Observation | None = None,
    ) -> None:
        self.budgets = budgets
        self.pinned = pinned
        self.connection_id = connection_id
        self.provider = provider
        self.windows = windows
        self.share = share
        self._pending: list[Observation] = []
        # Lane (searching or not) -> [calls leased, monotonic time the lease ends].
        self._leases: dict[bool, list[float]] = {False: [0, 0.0], True: [0, 0.0]}
        searches = search_windows(provider, windows) if provider in SEARCH_WINDOWS else windows
        self._lanes = {False: windows, True: searches}
        self._all_windows = (*windows, *(window for window in searches if window not in windows))

    def acquire(self, method: str, url: str) -> float:
        searching = is_search(self.provider, method, url)
        lease = self._leases[searching]
        if lease[0] > 0 and time.monotonic() < lease[1]:
            lease[0] -= 1
            return 0.0
        pending, self._pending = self._pending, []
        if self.pinned is not None:
            pending.append(self.pinned)  # last, so it wins over what the headers said
        granted, wait = self.budgets.lease(
            self.connection_id,
            self.provider,
            self._lanes[searching],
            up_to=LEASE_CALLS,
            share=self.share,
            observations=pending,
        )
        if granted:
            lease[0], lease[1] = granted - 1, time.monotonic() + LEASE_TTL_S
        return wait

    def observe(self, response: httpx.Response, *, refused: bool) -> None:
        observations = read_signals(self.provider, response, refused=refused)
        lease = self._leases[is_search(self.provider, response.request.method, str(response.request.url))]
        if refused:
            lease[0] = 0
            self.budgets.observe(self.connection_id, self.provider, self._all_windows, observations, refused=True)
            return
        self._pending = observations
        if any(o.limit is not None and o.used is not None and o.limit - o.used <= lease[0] for o in observations):
            lease[0] = 0  # the provider has less room than this lease assumed: the next call asks the budget
