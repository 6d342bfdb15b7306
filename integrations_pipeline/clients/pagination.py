"""Pagination strategies shared by every connector: small objects that know where the next cursor is."""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any

from integrations_pipeline.clients.http import ApiClient


def dig(document: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at `path` inside nested mappings, or None where any step is missing."""
    value: Any = document
    for step in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(step)
    return value


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
    ) -> Generator[dict[str, Any], None, None]:
        cursor: Any = None
        while True:
            query: list[tuple[str, Any]] = list(params.items() if isinstance(params, Mapping) else params or [])
            body = dict(json) if json is not None else None
            if cursor is not None:
                if self.in_body and body is not None:
                    body[self.param] = cursor
                else:
                    query.append((self.param, cursor))
            page: dict[str, Any] = api.request(method, url, params=query, json=body).json()
            yield page
            cursor = dig(page, self.path)
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
        next_url: str | None = url
        query: Mapping[str, Any] | None = params
        while next_url:
            page: dict[str, Any] = api.request("GET", next_url, params=query, headers=headers).json()
            yield page
            next_url, query = dig(page, self.path), None
