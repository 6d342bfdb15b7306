"""The emulators' push side: one delivery engine that sends a provider's notifications from a background thread.

Each emulator whose real provider pushes (HubSpot, Microsoft Graph, Google, Zoho, Salesforce) keeps its own
subscriptions and wire format in a `*Push` class of its own module and hands each notification to a
`DeliveryEngine`: a queue drained by one daemon thread that POSTs with the standard library (the sandbox imports no
HTTP client), judges the answer the provider's way (2xx, or Salesforce's SOAP `<Ack>true</Ack>`), and retries on
the provider's schedule, compressed by `time_scale` for tests. Fault knobs add what real senders do: deliver a
notification twice, or hold a few back and send them in reverse order. `settle()` waits, on a condition rather
than a sleep, until every delivery has succeeded or given up.
"""

from __future__ import annotations

import heapq
import http.client
import itertools
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

DEFAULT_TIMEOUT_S = 10.0
SETTLE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RetrySchedule:
    """Waits (in the provider's real seconds) before each retry; its length is the number of retries."""

    delays_s: tuple[float, ...]

    @classmethod
    def exponential(cls, first_s: float, retries: int, *, cap_s: float, within_s: float | None = None) -> RetrySchedule:
        """Doubling waits from `first_s`, each at most `cap_s`, stopping once the total would pass `within_s`."""
        delays: list[float] = []
        for attempt in range(retries):
            delay = min(first_s * 2**attempt, cap_s)
            if within_s is not None and sum(delays) + delay > within_s:
                break
            delays.append(delay)
        return cls(tuple(delays))


NO_RETRY = RetrySchedule(())


@dataclass(frozen=True)
class Request:
    """One attempt's bytes: rebuilt per attempt, since some senders stamp the attempt number and time in it."""

    body: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Attempt:
    """What the engine saw for one POST, for tests to inspect (never the body's secrets: only the outcome)."""

    label: str
    url: str
    number: int
    status: int | None  # None: no HTTP answer (refused, timed out)
    accepted: bool


def accept_2xx(status: int, body: bytes) -> bool:
    return 200 <= status < 300


@dataclass
class Delivery:
    url: str
    build: Callable[[int], Request]
    """attempt number (1 = first) -> the request to send"""
    schedule: RetrySchedule = NO_RETRY
    accepted: Callable[[int, bytes], bool] = accept_2xx
    retryable: Callable[[int | None], bool] = lambda status: True
    """given a refused attempt's status (None: no answer), whether the provider tries again (Google: 5xx only)"""
    timeout_s: float = DEFAULT_TIMEOUT_S
    label: str = ""
    attempt: int = 0
    duplicate: bool = False


@dataclass(order=True)
class _Due:
    at: float
    order: int
    delivery: Delivery = field(compare=False)


def post(url: str, request: Request, timeout_s: float) -> tuple[int, bytes]:
    """POST with the standard library; raises OSError (http.client errors included) when no answer comes."""
    parts = urlsplit(url)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(parts.hostname or "127.0.0.1", parts.port, timeout=timeout_s)
    try:
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        connection.request("POST", target, body=request.body, headers=dict(request.headers))
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class DeliveryEngine:
    """A queue of notifications and one daemon thread that delivers them; thread-safe.

    `time_scale` multiplies every retry wait (1.0 = the provider's real schedule; tests pass e.g. 0.0001 so a day of
    retries takes under ten seconds). The thread starts with the first delivery, so an emulator nobody subscribes to
    runs none.
    """

    def __init__(self, *, time_scale: float = 1.0, send: Callable[[str, Request, float], tuple[int, bytes]] = post):
        self.time_scale = time_scale
        self.attempts: list[Attempt] = []
        self._send = send
        self._condition = threading.Condition()
        self._queue: list[_Due] = []
        self._order = itertools.count()
        self._outstanding = 0
        self._held: list[Delivery] = []
        self._hold_count = 0
        self._duplicates_left = 0
        self._thread: threading.Thread | None = None

    # --- fault knobs ---------------------------------------------------------------------------------------------

    def duplicate_next(self, count: int = 1) -> None:
        """The next `count` notifications are delivered twice (the second after the first was accepted)."""
        with self._condition:
            self._duplicates_left += count

    def reorder_next(self, count: int) -> None:
        """Hold the next `count` notifications and release them together in reverse order (out-of-order delivery).
        `settle()` releases a partial batch."""
        with self._condition:
            self._hold_count = count

    # --- the queue ---------------------------------------------------------------------------------------------

    def enqueue(self, delivery: Delivery) -> None:
        with self._condition:
            self._outstanding += 1
            if self._duplicates_left:
                self._duplicates_left -= 1
                delivery.duplicate = True
            if self._hold_count:
                self._held.append(delivery)
                if len(self._held) >= self._hold_count:
                    self._release_held()
                return
            self._schedule(delivery, 0.0)

    def settle(self, timeout_s: float = SETTLE_TIMEOUT_S) -> None:
        """Wait until every notification so far was accepted or gave up; TimeoutError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._condition:
            if self._held:
                self._release_held()
            while self._outstanding:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self._outstanding} notification(s) still in flight after {timeout_s} s")
                self._condition.wait(remaining)

    @property
    def outstanding(self) -> int:
        with self._condition:
            return self._outstanding

    def attempts_for(self, label_prefix: str = "") -> list[Attempt]:
        with self._condition:
            return [attempt for attempt in self.attempts if attempt.label.startswith(label_prefix)]

    def _release_held(self) -> None:
        held, self._held, self._hold_count = self._held, [], 0
        for delivery in reversed(held):
            self._schedule(delivery, 0.0)

    def _schedule(self, delivery: Delivery, delay_s: float) -> None:
        heapq.heappush(self._queue, _Due(time.monotonic() + delay_s, next(self._order), delivery))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sandbox-push", daemon=True)
            self._thread.start()
        self._condition.notify_all()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._queue or self._queue[0].at > time.monotonic():
                    self._condition.wait(self._queue[0].at - time.monotonic() if self._queue else None)
                delivery = heapq.heappop(self._queue).delivery
            self._attempt(delivery)

    def _attempt(self, delivery: Delivery) -> None:
        delivery.attempt += 1
        request = delivery.build(delivery.attempt)
        try:
            status: int | None
            status, body = self._send(delivery.url, request, delivery.timeout_s)
            accepted = delivery.accepted(status, body)
        except (OSError, http.client.HTTPException):
            status, accepted = None, False
        with self._condition:
            self.attempts.append(Attempt(delivery.label, delivery.url, delivery.attempt, status, accepted))
            retries_used = delivery.attempt - 1
            if accepted and delivery.duplicate:
                delivery.duplicate = False
                delivery.attempt -= 1  # the same notification again, as a sender that lost the ack sends it
                self._schedule(delivery, 0.0)
            elif not accepted and retries_used < len(delivery.schedule.delays_s) and delivery.retryable(status):
                self._schedule(delivery, delivery.schedule.delays_s[retries_used] * self.time_scale)
            else:
                self._outstanding -= 1
                self._condition.notify_all()
