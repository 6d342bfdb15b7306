"""Pagination strategies shared by every connector: small objects that know where the next cursor is and fetch
pages ahead of the caller on a worker thread (`fetched_ahead`, over the generic `read_ahead`)."""

from __future__ import annotations

import contextlib
import functools
import json as json_module
import queue
import threading
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import TypeAdapter
from typing_extensions import TypedDict

from integrations_pipeline.clients.http import ApiClient

T = TypeVar("T")


def dig(document: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at `path` inside nested mappings, or None where any step is missing."""
    value: Any = document
    for step in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(step)
    return value


@functools.cache
def _peeker(path: tuple[str, ...]) -> TypeAdapter[Any]:
    shape: Any = Any
    typed_dict: Any = TypedDict  # built at run time from `path`, which static typing cannot follow
    for step in reversed(path):  # the functional form admits keys such as "@odata.nextLink"
        shape = typed_dict("_Step", {step: shape}, total=False)
    return TypeAdapter(shape)


def peek(body: bytes, path: tuple[str, ...]) -> Any:
    """The value at `path` in a JSON body, without building the rest: the parser skips every other member (a
    page's records) in place, a quarter of the cost of parsing the page. None where a step is missing."""
    return dig(_peeker(path).validate_json(body), path)


# Raw pages a paginator's worker may hold for its caller: enough that fetching goes on while the caller frames a chunk
# of records (tens of milliseconds), yet under a megabyte of bodies.
READ_AHEAD_PAGES = 16


def fetched_ahead(bodies: Iterator[bytes], parse: Callable[[bytes], T]) -> Generator[T, None, None]:
    """Each body parsed, with the fetching on a worker thread (`read_ahead`): a paginator's worker only sends
    requests and peeks at each body's cursor, so the caller's parsing and mapping of a page overlaps with the
    provider serving the next ones instead of delaying the next request (docs/benchmarks.md)."""
    with contextlib.closing(read_ahead(bodies, depth=READ_AHEAD_PAGES)) as ahead:
        for body in ahead:
            yield parse(body)


@dataclass(frozen=True)
class CursorPaginator:
    """The next cursor sits at `path` in each page and goes back as `param` (query string, or JSON body for
    search endpoints); a page without one is the last (HubSpot `paging.next.after`)."""

    path: tuple[str, ...]
    param: str
    in_body: bool = False

    def pages(
        self,
        api: ApiClient,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        json: Mapping[str, Any] | None = None,
        parse: Callable[[bytes], Mapping[str, Any]] | None = None,
    ) -> Generator[Mapping[str, Any], None, None]:
        """Each page as a document (fetched ahead): `parse` turns the raw body into one (a pydantic
        `validate_json`, which parses and validates in one pass), else plain JSON."""
        return fetched_ahead(self._bodies(api, method, url, params, json), parse or json_module.loads)

    def _bodies(
        self,
        api: ApiClient,
        method: str,
        url: str,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None,
        json: Mapping[str, Any] | None,
    ) -> Iterator[bytes]:
        cursor: Any = None
        while True:
            query: list[tuple[str, Any]] = list(params.items() if isinstance(params, Mapping) else params or [])
            body = dict(json) if json is not None else None
            if cursor is not None:
                if self.in_body and body is not None:
                    body[self.param] = cursor
                else:
                    query.append((self.param, cursor))
            content = api.request(method, url, params=query, json=body).content
            yield content
            cursor = peek(content, self.path)
            if not cursor:
                return


@dataclass(frozen=True)
class NextLinkPaginator:
    """Each page names the next one as a URL (absolute or relative to the API origin) at `path`, followed verbatim
    with no parameters of ours (Graph `@odata.nextLink`, Salesforce `nextRecordsUrl`). The last page lacks it
    and may carry a resume link elsewhere (Graph `@odata.deltaLink`), which the caller reads from that page."""

    path: tuple[str, ...]

    def pages(
        self,
        api: ApiClient,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Generator[dict[str, Any], None, None]:
        """Each page as a JSON document (fetched ahead)."""
        return fetched_ahead(self._bodies(api, url, params, headers), json_module.loads)

    def _bodies(
        self, api: ApiClient, url: str, params: Mapping[str, Any] | None, headers: Mapping[str, str] | None
    ) -> Iterator[bytes]:
        next_url: str | None = url
        query: Mapping[str, Any] | None = params
        while next_url:
            content = api.request("GET", next_url, params=query, headers=headers).content
            yield content
            next_url, query = peek(content, self.path), None


_DONE = object()


def read_ahead(items: Iterator[T], depth: int = 2) -> Generator[T, None, None]:
    """`items`, produced on a worker thread up to `depth` ahead of the consumer, so the provider's response time
    overlaps with the caller's work on earlier pages (framing, writing) instead of adding to it. Memory stays
    bounded by `depth` items; an exception in the producer is raised to the consumer at the same place in the
    sequence; a consumer that stops early stops the producer (after at most the item it is producing)."""
    handoff: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stopped = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stopped.is_set():
                    try:
                        handoff.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stopped.is_set():
                    return
            handoff.put((_DONE, None))
        except BaseException as error:
            handoff.put((_DONE, error))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item, error = handoff.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stopped.set()
        while worker.is_alive():  # drain so a producer blocked on a full queue sees `stopped`
            with contextlib.suppress(queue.Empty):
                handoff.get(timeout=0.1)
        worker.join()
