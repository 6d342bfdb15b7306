"""Pure functions that turn records into a partition's frame and fold changes into it.

Frames leave here sorted by primary key with fixed dtypes, so writing the same source twice gives the same
table byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

TIMESTAMP_DTYPE = "datetime64[us, UTC]"


def to_frame(records: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(list(records), columns=list(columns))
    return normalize(frame, columns)


def normalize(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Fixed column order and dtypes: timestamps as UTC microseconds, flags as bool, text as object."""
    frame = frame.loc[:, list(columns)].copy()
    for column in columns:
        if column.endswith("_at"):
            frame[column] = pd.to_datetime(frame[column], utc=True).astype(TIMESTAMP_DTYPE)
        elif column.startswith("is_"):
            frame[column] = frame[column].astype(bool)
        else:
            frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


def _sorted(frame: pd.DataFrame, key: Sequence[str]) -> pd.DataFrame:
    return frame.sort_values(list(key), kind="stable").reset_index(drop=True)


def upsert(current: pd.DataFrame, changes: pd.DataFrame, key: Sequence[str]) -> pd.DataFrame:
    """Current rows, replaced by changed ones with the same key; later duplicates in `changes` win."""
    changes = changes.drop_duplicates(subset=list(key), keep="last")
    if current.empty:
        return _sorted(changes, key)
    changed_keys = pd.MultiIndex.from_frame(changes[list(key)])
    kept = current[~pd.MultiIndex.from_frame(current[list(key)]).isin(changed_keys)]
    combined = pd.concat([kept, changes], ignore_index=True) if not kept.empty else changes
    return _sorted(combined, key)


def replace_all(current: pd.DataFrame | None, fresh: pd.DataFrame, key: Sequence[str]) -> pd.DataFrame:
    """A full resync: the fresh rows, plus rows the provider no longer returns at all, kept and flagged deleted
    (the provider's own deletions already arrive flagged in `fresh`)."""
    fresh = fresh.drop_duplicates(subset=list(key), keep="last")
    if current is None or current.empty:
        return _sorted(fresh, key)
    vanished = current[~pd.MultiIndex.from_frame(current[list(key)]).isin(pd.MultiIndex.from_frame(fresh[list(key)]))]
    if vanished.empty:
        return _sorted(fresh, key)
    vanished = vanished.assign(is_deleted=True)
    return _sorted(pd.concat([fresh, vanished], ignore_index=True), key)


def markdown_preview(frame: pd.DataFrame, rows: int = 10) -> str:
    """A small Markdown table for the Dagster UI (no optional dependency such as tabulate)."""
    head = frame.head(rows)
    lines = ["| " + " | ".join(head.columns) + " |", "|" + "---|" * len(head.columns)]
    for values in head.itertuples(index=False):
        cells = ("" if value is None else str(value).replace("|", "\\|") for value in values)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
