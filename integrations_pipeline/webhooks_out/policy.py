"""When to try again: the Standard Webhooks schedule (8 attempts spread over about 27.6 h), each wait stretched by
up to 20 % of jitter so receivers recovering from an outage are not hit by every sender at once, and never sooner
than a `Retry-After` asks (up to a day)."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta

from integrations_pipeline.store.events import DeliveryStatus

# The wait after attempt n (1-based) before attempt n + 1; one entry fewer than there are attempts.
RETRY_DELAYS = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
JITTER = 0.2
MAX_RETRY_AFTER = timedelta(days=1)


def next_attempt_at(
    attempts_made: int,
    now: datetime,
    retry_after_s: float | None = None,
    rng: Callable[[], float] = random.random,
) -> datetime | None:
    """When to try after `attempts_made` failed attempts, or None when that was the last one."""
    if attempts_made >= MAX_ATTEMPTS:
        return None
    delay = RETRY_DELAYS[attempts_made - 1] * (1 + JITTER * rng())
    if retry_after_s is not None:
        delay = max(delay, min(timedelta(seconds=retry_after_s), MAX_RETRY_AFTER))
    return now + delay


def outcome_of(status_code: int | None) -> DeliveryStatus | None:
    """DELIVERED on 2xx, FAILED for good on 410 Gone, None (try again) on anything else, redirects included."""
    if status_code is not None and 200 <= status_code < 300:
        return DeliveryStatus.DELIVERED
    if status_code == 410:
        return DeliveryStatus.FAILED
    return None
