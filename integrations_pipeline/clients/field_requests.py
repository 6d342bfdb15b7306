"""Requesting a catalog's fields within an API's limits: refused fields dropped, wide field lists split and merged.

Shared by the connectors whose APIs return only the fields named in the request (Salesforce's SOQL list, Zoho's
`fields`): the first request reads the records' pages with as many fields as one request may name, lookups by id
read the rest, and `merge_by_id` folds them into the page's records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from itertools import chain
from typing import Any, TypeVar

from integrations_pipeline.clients.errors import InvalidField

T = TypeVar("T")


def new_fields(ours: Iterable[str], catalog: Iterable[str], *, case_sensitive: bool = True) -> list[str]:
    """The catalog's fields that are not already ours, in catalog order (SOQL compares names case-insensitively)."""
    fold: Callable[[str], str] = (lambda name: name) if case_sensitive else str.lower
    taken = {fold(name) for name in ours}
    fresh = []
    for name in catalog:
        if fold(name) not in taken:
            taken.add(fold(name))
            fresh.append(name)
    return fresh


def fit_budget(
    head: Sequence[str], more: Iterable[str], budget: int, cost: Callable[[str], int], group_start: int = 0
) -> tuple[list[str], list[list[str]]]:
    """`head` (always named) and as many of `more` as fit one request's `budget` (`cost` per name), then the rest
    of `more` in groups that each fit it too, a group's count starting at `group_start` (what a lookup names
    besides the group, such as its id field)."""
    first: list[str] = list(head)
    groups: list[list[str]] = []
    group, used = first, sum(map(cost, head))
    for name in more:
        if used + cost(name) > budget:
            group, used = [], group_start
            groups.append(group)
        group.append(name)
        used += cost(name)
    return first, groups


def pages_dropping_refused(open_pages: Callable[[], Iterator[T]], catalog_fields: list[str]) -> Iterator[T]:
    """The pages `open_pages()` reads, its first page already read (where an API refuses an unknown field). A catalog
    field the provider refuses (deleted since discovery) is taken out of `catalog_fields`, which `open_pages` reads,
    and the request is sent again: a stale catalog costs a request, not the sync. A field of our own refused still
    fails, as does anything else."""
    while True:
        pages = open_pages()
        try:
            return chain([next(pages)], pages)
        except StopIteration:
            return iter(())
        except InvalidField as refused:
            if refused.field not in catalog_fields:
                raise
            catalog_fields.remove(refused.field)


def merge_by_id(
    records: Iterable[MutableMapping[str, Any]], found: Iterable[Mapping[str, Any]], key: str, skip: str = ""
) -> None:
    """Fold each found record's fields (but `skip`, a bookkeeping key) into the record with the same `key`."""
    by_key = {record[key]: record for record in records}
    for extra in found:
        target = by_key.get(extra.get(key))
        if target is not None:
            target.update((name, value) for name, value in extra.items() if name != skip)
