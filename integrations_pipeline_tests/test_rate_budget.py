"""One rate-limit budget across parallel syncs: ten syncs, each with its own client and its own state-store engine
(as parallel runs have), against one HubSpot emulator connection whose limit is lowered, over real HTTP; and
incremental syncs against the emulator's search limit (5 per second), which has a bucket of its own."""

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from integrations_pipeline.clients.cursors import timestamp_cursor
from integrations_pipeline.clients.providers import ENTITIES
from integrations_pipeline.clients.spec import SyncRequest
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.sandbox.common import count_status
from integrations_pipeline.store.budget import RateBudgets
from integrations_pipeline_tests.conftest import Stack

WORKERS = 10
CONTACTS = next(spec for spec in ENTITIES if spec.provider == "hubspot" and spec.entity == "contacts")
LIMIT, WINDOW_S = 8, 1.0


def sync_contacts(connection_id: str, *, budget: bool = True, backfill: bool = False, cursor: str | None = None) -> int:
    """A contacts sync (full, or incremental from `cursor`) through the connector a run gets (its own store engine,
    its own HTTP client)."""
    integrations = IntegrationsResource()
    try:
        with integrations.connector("hubspot", connection_id, backfill=backfill) as client:
            if not budget:
                client.limiter = None
            request = SyncRequest(connection_id=connection_id, cursor=cursor, started_at=datetime.now(UTC), window=None)
            return sum(len(page.records) for page in CONTACTS.read(client, request))
    finally:
        integrations.store.engine.dispose()


def in_parallel(task: Callable[[], int], workers: int = WORKERS) -> tuple[list[int], list[BaseException]]:
    results: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run() -> None:
        try:
            outcome = task()
            with lock:
                results.append(outcome)
        except Exception as error:  # collected and asserted on by the caller
            with lock:
                errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a sync hung"
    return results, errors


@pytest.fixture
def connection_id(stack: Stack) -> str:
    connection_id = stack.connect("acme")
    stack.emulator.set_rate_limit(LIMIT, window_s=WINDOW_S)
    # One sync first, as the connection's earlier runs would have: the budget learns the lowered limit from the
    # headers (a brand-new budget starts from HubSpot's documented 100 per 10 s).
    assert sync_contacts(connection_id) == 250
    return connection_id


def test_ten_parallel_syncs_stay_under_the_limit(stack: Stack, connection_id: str) -> None:
    since = len(stack.emulator.request_log)
    results, errors = in_parallel(lambda: sync_contacts(connection_id))
    assert not errors and results == [250] * WORKERS
    # A full read is 5 calls (the live count, 3 live pages, 1 archived page): nothing refused, nothing retried.
    assert len(stack.emulator.request_log) - since == 5 * WORKERS
    assert count_status(stack.emulator.request_log, 429, since) == 0


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_without_the_budget_the_same_syncs_meet_429s(stack: Stack, connection_id: str) -> None:
    """The control: the scenario above really is over the limit, so its zero means the budget held."""
    since = len(stack.emulator.request_log)
    in_parallel(lambda: sync_contacts(connection_id, budget=False))
    assert count_status(stack.emulator.request_log, 429, since) > 0


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_the_budget_follows_a_limit_tightened_mid_run(stack: Stack, connection_id: str) -> None:
    """The emulator halves its limit while ten syncs run: at most the calls already in flight are refused (their
    Retry-After then holds everyone), and once its headers are read the budget keeps to the new limit."""
    tightened_at: list[int] = []
    start = len(stack.emulator.request_log)

    def tighten_after_a_few_calls() -> None:
        deadline = time.monotonic() + 30
        while len(stack.emulator.request_log) < start + WORKERS and time.monotonic() < deadline:
            time.sleep(0.005)  # polling the emulator's log for a condition, with a deadline
        stack.emulator.set_rate_limit(LIMIT // 2, window_s=WINDOW_S)
        tightened_at.append(len(stack.emulator.request_log))

    tightener = threading.Thread(target=tighten_after_a_few_calls)
    tightener.start()
    results, errors = in_parallel(lambda: sync_contacts(connection_id))
    tightener.join()
    assert not errors and results == [250] * WORKERS
    log = stack.emulator.request_log
    assert count_status(log, 429, tightened_at[0]) <= WORKERS
    assert count_status(log, 429, tightened_at[0] + 3 * WORKERS) == 0
    burst = next(state for state in RateBudgets(stack.store).state(connection_id, "hubspot") if state.bucket == "burst")
    assert (burst.limit, burst.window_s) == (LIMIT // 2, WINDOW_S)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_backfill_cannot_take_the_share_kept_for_live_runs(stack: Stack, connection_id: str) -> None:
    """Six backfill syncs at once never hold more than half of any rolling window; a live call still gets in."""
    since = len(stack.emulator.request_log)
    backfills, errors = in_parallel(lambda: sync_contacts(connection_id, backfill=True), workers=6)
    assert not errors and backfills == [250] * 6
    log = stack.emulator.request_log[since:]
    # A full read each: 3 live pages and 1 archived page in the burst window, the live count in the search lane.
    arrivals = sorted(record.at for record in log if not record.path.endswith("/search"))
    assert len(arrivals) == 4 * 6 and len(log) - len(arrivals) == 6
    for index, start in enumerate(arrivals):
        assert sum(1 for at in arrivals[index:] if at < start + WINDOW_S) <= LIMIT // 2
    assert count_status(stack.emulator.request_log, 429, since) == 0


SEARCHERS = 3


def searched_connection(stack: Stack) -> tuple[str, str]:
    """A connection whose contacts were all modified just now, and a cursor from an hour ago: an incremental sync
    reads them through three search pages."""
    connection_id = stack.connect("acme")
    for record in stack.emulator.contact_records(include_archived=False):
        stack.emulator.update_contact(record["id"], {"jobtitle": "Searched"})
    return connection_id, timestamp_cursor(datetime.now(UTC) - timedelta(hours=1))


def search_calls(stack: Stack, since: int) -> list[int]:
    return [record.status for record in stack.emulator.request_log[since:] if record.path.endswith("/search")]


def test_incremental_syncs_keep_to_the_search_limit(stack: Stack) -> None:
    """Parallel incremental syncs search as fast as the search bucket allows (5 per second, with the budget's
    margin) and never meet the emulator's enforced search limit."""
    connection_id, cursor = searched_connection(stack)
    since = len(stack.emulator.request_log)
    results, errors = in_parallel(lambda: sync_contacts(connection_id, cursor=cursor), workers=SEARCHERS)
    assert not errors and results == [250] * SEARCHERS
    assert search_calls(stack, since) == [200] * (1 + 3) * SEARCHERS  # the live count, then three pages each
    assert count_status(stack.emulator.request_log, 429, since) == 0
    buckets = {state.bucket: state for state in RateBudgets(stack.store).state(connection_id, "hubspot")}
    assert (buckets["search"].limit, buckets["search"].window_s) == (5, 1.0)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_without_the_budget_the_same_searches_meet_429s(stack: Stack) -> None:
    """The control: those searches really exceed the search limit, which answers HubSpot's secondly refusal."""
    connection_id, cursor = searched_connection(stack)
    since = len(stack.emulator.request_log)
    in_parallel(lambda: sync_contacts(connection_id, budget=False, cursor=cursor), workers=SEARCHERS)
    assert 429 in search_calls(stack, since)
