"""The rate-limit budget repository on SQLite and PostgreSQL: rolling windows, provider feedback, backfill share."""

import threading

import pytest

from integrations_pipeline.store import StateStore, create_store_engine
from integrations_pipeline.store.budget import (
    BACKFILL_SHARE,
    SAFETY_MARGIN_S,
    Observation,
    RateBudgets,
    Window,
)

BURST = Window("burst", limit=10, window_s=10.0)
DAILY = Window("daily", limit=1_000, window_s=86_400.0)
CONNECTION = "hubspot-acme"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def budgets(store: StateStore, clock: Clock) -> RateBudgets:
    return RateBudgets(store, clock)


def take(budgets: RateBudgets, calls: int, share: float = 1.0) -> list[float]:
    return [budgets.acquire(CONNECTION, "hubspot", [BURST, DAILY], share=share) for _ in range(calls)]


def test_grants_up_to_the_limit_then_waits_for_the_window_to_roll(budgets: RateBudgets, clock: Clock) -> None:
    assert take(budgets, 10) == [0.0] * 10
    wait = budgets.acquire(CONNECTION, "hubspot", [BURST, DAILY])
    # The first slot leaves after the window, its slot width and the safety margin: never early.
    assert BURST.window_s + SAFETY_MARGIN_S <= wait <= BURST.window_s + BURST.window_s / 10 + SAFETY_MARGIN_S
    clock.now += wait
    assert budgets.acquire(CONNECTION, "hubspot", [BURST, DAILY]) == 0.0
    states = {state.bucket: state for state in budgets.state(CONNECTION, "hubspot")}
    assert states["burst"].used == 1 and states["daily"].used == 11


def test_no_rolling_window_ever_holds_more_than_the_limit(budgets: RateBudgets, clock: Clock) -> None:
    """Calls asked for every 0.3 s for a minute: whatever the spacing, any 10 s holds at most 10 grants."""
    granted: list[float] = []
    for _ in range(200):
        if budgets.acquire(CONNECTION, "hubspot", [BURST]) == 0.0:
            granted.append(clock.now)
        clock.now += 0.3
    assert len(granted) >= 40  # throughput stays close to the limit (60 s at 10 per ~11 s)
    for index, start in enumerate(granted):
        assert sum(1 for at in granted[index:] if at < start + BURST.window_s) <= BURST.limit


def test_a_backfill_cannot_take_the_reserved_share(budgets: RateBudgets) -> None:
    wait = BURST.window_s + SAFETY_MARGIN_S  # until the first slot leaves the window
    assert take(budgets, 10, share=BACKFILL_SHARE) == [0.0] * 5 + [pytest.approx(wait, abs=1.0)] * 5
    assert take(budgets, 5) == [0.0] * 5  # the reserved half is still there for live runs
    assert budgets.acquire(CONNECTION, "hubspot", [BURST, DAILY]) > 0


def test_provider_headers_correct_limit_window_and_usage(budgets: RateBudgets, clock: Clock) -> None:
    take(budgets, 2)
    # The provider tightened the limit to 4 and counts 3 calls (one not ours): one call left.
    budgets.observe(CONNECTION, "hubspot", [BURST], [Observation("burst", limit=4, window_s=2.0, used=3)])
    assert [s.limit for s in budgets.state(CONNECTION, "hubspot") if s.bucket == "burst"] == [4]
    assert take(budgets, 2)[0] == 0.0
    assert budgets.acquire(CONNECTION, "hubspot", [BURST]) > 0
    clock.now += 2.0 + 2.0 / 10 + SAFETY_MARGIN_S
    assert budgets.acquire(CONNECTION, "hubspot", [BURST]) == 0.0


def test_retry_after_and_exhaustion_block_every_caller(budgets: RateBudgets, clock: Clock) -> None:
    budgets.observe(CONNECTION, "hubspot", [BURST], [Observation("burst", retry_after_s=30)])
    assert budgets.acquire(CONNECTION, "hubspot", [BURST]) == pytest.approx(30)
    assert budgets.acquire("hubspot-other", "hubspot", [BURST]) == 0.0  # budgets are per connection
    clock.now += 30
    assert budgets.acquire(CONNECTION, "hubspot", [BURST, DAILY]) == 0.0
    # A quota refused without a Retry-After (Salesforce's REQUEST_LIMIT_EXCEEDED): full until the window frees.
    budgets.observe(CONNECTION, "hubspot", [DAILY], [Observation("daily", exhausted=True)])
    assert budgets.acquire(CONNECTION, "hubspot", [BURST, DAILY]) > 86_000


@pytest.mark.parametrize("workers", [8])
def test_concurrent_callers_with_their_own_engines_share_one_budget(
    store: StateStore, store_url: str, workers: int
) -> None:
    """Each worker has its own engine, as parallel runs do: the grants add up to exactly the limit."""
    window = Window("burst", limit=25, window_s=3_600.0)
    granted: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        engine = create_store_engine(store_url)
        mine = RateBudgets(StateStore(engine, store.keyring))
        count = sum(1 for _ in range(10) if mine.acquire(CONNECTION, "hubspot", [window]) == 0.0)
        engine.dispose()
        with lock:
            granted.append(count)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == window.limit
    assert RateBudgets(store).state(CONNECTION, "hubspot")[0].used == window.limit


def test_a_lease_takes_an_eighth_of_the_room_at_most_and_counts_at_once(budgets: RateBudgets, clock: Clock) -> None:
    window = Window("burst", limit=100, window_s=10.0)
    leases = [budgets.lease(CONNECTION, "hubspot", [window], up_to=50)[0] for _ in range(6)]
    # 100 left: 12; then 88 left: 11; 77: 9; 68: 8; 60: 7; 53: 6. Never more than an eighth of what is left.
    assert leases == [12, 11, 9, 8, 7, 6]
    assert budgets.state(CONNECTION, "hubspot")[0].used == sum(leases)
    # Near the end of the window calls go one at a time, and none beyond the limit.
    tail = [budgets.lease(CONNECTION, "hubspot", [window], up_to=50)[0] for _ in range(60)]
    assert tail[-20:] == [0] * 20 and set(tail[tail.index(1) :]) <= {0, 1}
    assert budgets.state(CONNECTION, "hubspot")[0].used == 100
    granted, wait = budgets.lease(CONNECTION, "hubspot", [window], up_to=50)
    assert granted == 0 and wait > 0


def test_calls_and_refusals_are_counted_per_hour_for_the_recent_429_rate(budgets: RateBudgets, clock: Clock) -> None:
    window = Window("burst", limit=100, window_s=10.0)
    granted = sum(budgets.lease(CONNECTION, "hubspot", [window], up_to=50)[0] for _ in range(4))
    budgets.observe(CONNECTION, "hubspot", [window], [Observation("burst", retry_after_s=1.0)], refused=True)
    budgets.observe(CONNECTION, "hubspot", [window], [Observation("burst", used=40)])  # not a refusal
    assert budgets.recent_calls(CONNECTION, "hubspot") == (granted, 1)
    clock.now += 2 * 3600  # two hours on: the counts are no longer recent
    assert budgets.recent_calls(CONNECTION, "hubspot") == (0, 0)
