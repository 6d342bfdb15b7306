"""read_ahead: the same items in the same order, errors where they happened, bounded, and stoppable."""

import threading
from collections.abc import Iterator

import pytest

from integrations_pipeline.clients.pagination import read_ahead


def test_items_arrive_in_order_and_an_error_surfaces_after_the_items_before_it() -> None:
    def pages() -> Iterator[int]:
        yield from range(5)
        raise ValueError("page 5 failed")

    seen = []
    with pytest.raises(ValueError, match="page 5 failed"):
        for item in read_ahead(pages()):
            seen.append(item)
    assert seen == [0, 1, 2, 3, 4]


def test_the_producer_runs_at_most_depth_items_ahead_and_stops_with_the_consumer() -> None:
    produced: list[int] = []
    closed = threading.Event()

    def pages() -> Iterator[int]:
        try:
            for number in range(1_000):
                produced.append(number)
                yield number
        finally:
            closed.set()

    stream = read_ahead(pages(), depth=2)
    assert [next(stream), next(stream)] == [0, 1]
    stream.close()  # the consumer stops early
    assert closed.wait(timeout=10)
    # Two consumed, at most two queued, and one in the producer's hands when the queue was full.
    assert len(produced) <= 5
