"""Group commit for webhook intake: the events of concurrent requests land in one transaction.

Each verified request hands its `Landing` to `GroupCommit.land` and waits. One writer thread takes every landing
queued so far, resolves the provider accounts they name (one indexed query for the group), inserts all their events
(one statement, duplicates skipped by the inbox) and commits; only then is each request's wait over, so nothing is
acknowledged before it is committed. While one group commits, the next one gathers: under load a transaction carries
many requests, alone a request waits for its own commit only.

A group that fails because of one request (a value the database refuses, say) is retried one landing per
transaction, so only that request fails (a 5xx: its sender retries) and the others land; a database that does not
answer (`DATABASE_UNAVAILABLE`) fails the whole group at once (503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa

from integrations_pipeline.store import ConnectionStatus, StateStore
from integrations_pipeline.store.inbox import NewEvent, WebhookInbox

logger = logging.getLogger(__name__)
# Database trouble that means "try again later" (503 + Retry-After), never a bug to hide.
DATABASE_UNAVAILABLE = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)
LIVE_CONNECTION = (ConnectionStatus.ACTIVE, ConnectionStatus.NEEDS_REAUTH)
MAX_GROUP_EVENTS = 5000  # one transaction's events; a request carries at most 1000


@dataclass(frozen=True)
class Landing:
    """One request's share of a group commit: `events` builds its inbox events (a pure function, run in the writer)
    from {account id: live connection id} of the `provider` accounts it names (HubSpot portals); a request whose
    connection is already known names none. `size`: the events it carries, to bound a transaction."""

    events: Callable[[Mapping[str, str]], Sequence[NewEvent]]
    size: int
    provider: str | None = None
    accounts: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Landed:
    events: int  # built by the landing (the request's others were ignored)
    stored: int  # new in the inbox (the rest were duplicates)


@dataclass
class _Waiting:
    landing: Landing
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Landed]
    outcome: Landed | BaseException | None = field(default=None)


class GroupCommit:
    """The writer thread and its queue; `close` lands what is queued, then stops the thread."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.inbox = WebhookInbox(store)
        self.groups = 0  # transactions committed or attempted, for tests and benchmarks
        self._queue: queue.SimpleQueue[_Waiting | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="webhook-group-commit", daemon=True)
        self._thread.start()

    async def land(self, landing: Landing) -> Landed:
        """Wait until the landing's events are committed; the database's error when they could not be."""
        if self._closed:
            raise RuntimeError("the webhook intake is closed")
        loop = asyncio.get_running_loop()
        waiting = _Waiting(landing, loop, loop.create_future())
        self._queue.put(waiting)
        return await waiting.future

    def queued(self) -> int:
        """Landings waiting for the writer (not counting the group it is committing)."""
        return self._queue.qsize()

    def close(self) -> None:
        self._closed = True
        self._queue.put(None)
        self._thread.join()

    # -- the writer thread -----------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group, events = [first], first.landing.size
            stop = False
            while events < MAX_GROUP_EVENTS:
                try:
                    waiting = self._queue.get_nowait()
                except queue.Empty:
                    break
                if waiting is None:
                    stop = True
                    break
                group.append(waiting)
                events += waiting.landing.size
            self._commit(group)
            if stop:
                return

    def _commit(self, group: list[_Waiting]) -> None:
        try:
            for waiting, landed in zip(group, self._transaction([w.landing for w in group]), strict=True):
                waiting.outcome = landed
        except DATABASE_UNAVAILABLE as unavailable:
            for waiting in group:
                waiting.outcome = unavailable
        except Exception as failure:
            if len(group) == 1:
                group[0].outcome = failure
            else:  # find the request that failed the group: each alone, so the others still land
                name = type(failure).__name__  # the type only: a database's message may quote the payload
                logger.warning("a webhook group commit failed (%s); landing its requests one by one", name)
                for waiting in group:
                    self._commit([waiting])
                return
        self._settle(group)

    def _transaction(self, landings: Sequence[Landing]) -> list[Landed]:
        self.groups += 1
        with self.store.write() as conn:
            accounts: dict[str, set[str]] = {}
            for landing in landings:
                if landing.provider is not None:
                    accounts.setdefault(landing.provider, set()).update(landing.accounts)
            resolved = {
                provider: self.store.connections_by_account(provider, named, LIVE_CONNECTION, conn)
                for provider, named in accounts.items()
            }
            batches = [landing.events(resolved.get(landing.provider or "", {})) for landing in landings]
            stored = self.inbox.insert(conn, batches)
        return [Landed(len(events), count) for events, count in zip(batches, stored, strict=True)]

    @staticmethod
    def _settle(group: list[_Waiting]) -> None:
        """Hand each outcome to its request's event loop (one wake-up per loop and group)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Waiting]] = {}
        for waiting in group:
            by_loop.setdefault(waiting.loop, []).append(waiting)
        for loop, waitings in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
                loop.call_soon_threadsafe(_resolve, waitings)


def _resolve(waitings: list[_Waiting]) -> None:
    for waiting in waitings:
        if waiting.future.done():  # the request was cancelled (its client left)
            continue
        if isinstance(waiting.outcome, BaseException):
            waiting.future.set_exception(waiting.outcome)
        else:
            assert waiting.outcome is not None
            waiting.future.set_result(waiting.outcome)
