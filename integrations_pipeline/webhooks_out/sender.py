"""The sender: take due deliveries from the outbox, sign, POST with a 15 s timeout to the checked address without
following redirects, and record every attempt with what the policy makes of it."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx

from integrations_pipeline.clients.http import parse_retry_after
from integrations_pipeline.store.events import DeliveryStatus
from integrations_pipeline.store.outbox import AttemptResult, DueDelivery, Outbox, origin_of
from integrations_pipeline.store.repository import utcnow
from integrations_pipeline.webhooks_out.destinations import (
    DestinationRefused,
    IPNetwork,
    Resolver,
    check_destination,
    resolve,
)
from integrations_pipeline.webhooks_out.policy import next_attempt_at, outcome_of
from integrations_pipeline.webhooks_out.signing import signed_headers

TIMEOUT_S = 15.0
EXCERPT_BYTES = 500
BATCH = 20
# A claimed delivery is not claimed again for this long, well past the timeout, unless its attempt is recorded.
LEASE = timedelta(minutes=2)
# One sensor evaluation stops claiming after this long: Dagster cancels evaluations that take over 60 s.
TIME_BUDGET_S = 40.0
ACTOR = "webhook-deliveries"
USER_AGENT = "integrations-pipeline-webhooks/1"

logger = logging.getLogger(__name__)


@dataclass
class DeliveryReport:
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return f"{self.delivered} delivered, {self.retrying} to retry, {self.failed} failed"


def encode(body: dict[str, object]) -> bytes:
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


class Sender:
    """One httpx client for a batch. It ignores proxy variables: a proxy would connect to a name, not to the
    address that was checked."""

    def __init__(
        self,
        allowed: Sequence[IPNetwork],
        *,
        resolver: Resolver = resolve,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.allowed = allowed
        self.resolver = resolver
        self.clock = clock  # the signature's timestamp is the real sending time, whatever `now` schedules by
        self.http = httpx.Client(
            timeout=TIMEOUT_S, follow_redirects=False, trust_env=False, headers={"user-agent": USER_AGENT}
        )

    def close(self) -> None:
        self.http.close()

    def attempt(self, due: DueDelivery, now: datetime) -> AttemptResult:
        body = encode(due.body)
        started = time.monotonic()
        status_code: int | None = None
        excerpt: str | None = None
        retry_after: float | None = None
        error: str | None = None
        try:
            destination = check_destination(due.url, self.allowed, self.resolver)
            secrets = [secret.get_secret_value() for secret in due.secrets]
            headers = signed_headers(secrets, due.event_id, int(self.clock()), body)
            url = httpx.URL(due.url)
            headers["host"] = url.netloc.decode("ascii")
            pinned = url.copy_with(host=str(destination.address))
            with self.http.stream(
                "POST", pinned, content=body, headers=headers, extensions={"sni_hostname": destination.host}
            ) as response:
                status_code = response.status_code
                excerpt = _excerpt(response)
                retry_after = parse_retry_after(response.headers.get("retry-after"))
            if 300 <= status_code < 400:
                location = response.headers.get("location", "")
                target = origin_of(location) if "//" in location else "a path"
                error = f"HTTP {status_code} redirect (to {target}): not followed"
            elif not 200 <= status_code < 300:
                error = f"HTTP {status_code}"
        except DestinationRefused as refused:
            error = f"destination refused: {refused}"
        except httpx.TimeoutException:
            error = f"no answer within {TIMEOUT_S:.0f} s"
        except httpx.HTTPError as failure:
            error = f"{type(failure).__name__}: could not deliver to {origin_of(due.url)}"
        latency_ms = round((time.monotonic() - started) * 1000)
        status = outcome_of(status_code)
        retry_at = None
        if status is None:
            retry_at = next_attempt_at(due.attempts + 1, now, retry_after)
            status = DeliveryStatus.PENDING if retry_at else DeliveryStatus.FAILED
        return AttemptResult(
            attempted_at=now,
            status_code=status_code,
            latency_ms=latency_ms,
            error=error,
            response_excerpt=excerpt,
            status=status,
            next_attempt_at=retry_at,
            disable_subscription=status_code == 410,
        )


def _excerpt(response: httpx.Response) -> str | None:
    """At most EXCERPT_BYTES of the answer: a receiver can send anything, of any size."""
    collected = b""
    for chunk in response.iter_raw(EXCERPT_BYTES):
        collected += chunk
        if len(collected) >= EXCERPT_BYTES:
            break
    return collected[:EXCERPT_BYTES].decode("utf-8", "replace") or None


def deliver_due(
    outbox: Outbox,
    allowed: Sequence[IPNetwork],
    *,
    now: datetime | None = None,
    resolver: Resolver = resolve,
    time_budget_s: float = TIME_BUDGET_S,
) -> DeliveryReport:
    """Send every delivery due at `now` (default: the current time), batch after batch, within the time budget.
    Tests pass `now` to walk a retry schedule of a day without waiting for it."""
    report = DeliveryReport()
    started = time.monotonic()
    sender = Sender(allowed, resolver=resolver)
    try:
        while time.monotonic() - started < time_budget_s:
            moment = now or utcnow()
            batch = outbox.claim_due(moment, limit=BATCH, lease=LEASE)
            for due in batch:
                result = sender.attempt(due, moment)
                outbox.record_attempt(due, result, actor=ACTOR)
                if result.status == DeliveryStatus.DELIVERED:
                    report.delivered += 1
                elif result.status == DeliveryStatus.PENDING:
                    report.retrying += 1
                else:
                    report.failed += 1
                if result.error:
                    # The origin only: a URL's path or query may carry the receiver's own credential.
                    report.errors.append(f"{due.delivery_id} to {origin_of(due.url)}: {result.error}")
                    logger.info("webhook delivery %s to %s: %s", due.delivery_id, origin_of(due.url), result.error)
            if len(batch) < BATCH:
                break
    finally:
        sender.close()
    return report
