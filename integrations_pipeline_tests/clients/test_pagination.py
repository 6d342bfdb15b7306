"""Pagination helpers. read_ahead: the same items in the same order, errors where they happened, bounded, and
stoppable. peek: only the cursor of a body. fetched_ahead: bodies fetched on the worker, parsed by the caller."""

import json
import threading
from collections.abc import Iterator

import pytest

from integrations_pipeline.clients.pagination import fetched_ahead, peek, read_ahead


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


def test_peek_reads_the_value_at_a_path_and_none_where_a_step_is_missing() -> None:
    body = json.dumps(
        {"results": [{"id": str(n), "paging": "not this one"} for n in range(3)], "paging": {"next": {"after": "3"}}}
    ).encode()
    assert peek(body, ("paging", "next", "after")) == "3"
    assert (
        peek(b'{"results": [], "@odata.nextLink": "https://graph/next"}', ("@odata.nextLink",)) == "https://graph/next"
    )
    assert peek(b'{"results": []}', ("paging", "next", "after")) is None
    assert peek(b'{"info": {"more_records": false}}', ("info",)) == {"more_records": False}


def test_fetched_ahead_parses_on_the_callers_thread_and_closing_it_stops_the_fetching() -> None:
    fetched_on: set[str] = set()
    stopped = threading.Event()

    def bodies() -> Iterator[bytes]:
        try:
            for number in range(1_000):
                fetched_on.add(threading.current_thread().name)
                yield json.dumps({"n": number}).encode()
        finally:
            stopped.set()

    parsed_on: set[str] = set()

    def parse(body: bytes) -> int:
        parsed_on.add(threading.current_thread().name)
        return int(json.loads(body)["n"])

    pages = fetched_ahead(bodies(), parse)
    assert [next(pages) for _ in range(3)] == [0, 1, 2]
    pages.close()
    assert stopped.wait(timeout=10)
    assert parsed_on == {threading.current_thread().name}
    assert fetched_on == {"read-ahead"}
