"""Pure functions that turn records into a partition's frame and fold changes into it.

Frames leave here sorted by primary key with fixed dtypes, so writing the same source twice gives the same
table byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

TIMESTAMP_DTYPE = "datetime64[us, UTC]"


def to_frame(records: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    """Build object columns without pandas' per-cell type inference, then convert each column explicitly."""
    rows = records if isinstance(records, list) else list(records)
    raw = pd.DataFrame({column: pd.Series([row.get(column) for row in rows], dtype=object) for column in columns})
    return normalize(raw, columns)


def concat(frames: Sequence[pd.DataFrame], columns: Sequence[str]) -> pd.DataFrame:
    """Frames of the same normalized columns as one (an empty result keeps the columns and dtypes)."""
    non_empty = [frame for frame in frames if not frame.empty]
    if not non_empty:
        return to_frame([], columns)
    return non_empty[0] if len(non_empty) == 1 else pd.concat(non_empty, ignore_index=True)


def _utc_timestamps(values: pd.Series) -> pd.Series:
    # pandas converts datetimes carrying datetime.UTC about 20 times faster than ones carrying another tzinfo
    # class (pydantic's), so aware datetimes are moved to datetime.UTC first; ISO 8601 strings parse as they are.
    if values.dtype == object:
        values = pd.Series(
            [value.astimezone(UTC) if isinstance(value, datetime) else value for value in values],
            index=values.index,
            dtype=object,
        )
    return pd.to_datetime(values, utc=True, format="ISO8601").astype(TIMESTAMP_DTYPE)


def normalize(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Fixed column order and dtypes: timestamps as UTC microseconds, flags as bool, text as object."""
    frame = frame.loc[:, list(columns)].copy()
    for column in columns:
        if column.endswith("_at"):
            frame[column] = _utc_timestamps(frame[column])
        elif column.startswith("is_"):
            frame[column] = frame[column].astype(bool)
        else:
            frame[column] = _shared_strings(frame[column])
    return frame


def _shared_strings(values: pd.Series) -> pd.Series:
    """Text as objects, missing values as None, and equal strings as one object. CRM columns repeat a lot (owners,
    companies, job titles, first names, stages), and each string parsed from JSON is an object of its own at about
    50 bytes plus its text: sharing them halves a contacts frame (docs/benchmarks.md)."""
    codes, uniques = pd.factorize(values.astype(object), use_na_sentinel=True)  # hashes in C; first-seen objects
    pool = np.empty(len(uniques) + 1, dtype=object)  # code -1 (missing) takes the last entry: None
    pool[:-1] = uniques
    return pd.Series(pool.take(codes), index=values.index, dtype=object)


def _sorted(frame: pd.DataFrame, key: Sequence[str]) -> pd.DataFrame:
    return frame.sort_values(list(key), kind="stable", ignore_index=True)


def _last_per_key(frame: pd.DataFrame, key: Sequence[str]) -> pd.DataFrame:
    """Drop all but the last row of each key; no copy when every key is unique already (the usual case)."""
    duplicated = frame.duplicated(subset=list(key), keep="last")
    return frame[~duplicated] if duplicated.any() else frame


def upsert(current: pd.DataFrame, changes: pd.DataFrame, key: Sequence[str]) -> pd.DataFrame:
    """Current rows, replaced by changed ones with the same key; later duplicates in `changes` win."""
    changes = _last_per_key(changes, key)
    if current.empty:
        return _sorted(changes, key)
    changed_keys = pd.MultiIndex.from_frame(changes[list(key)])
    kept = current[~pd.MultiIndex.from_frame(current[list(key)]).isin(changed_keys)]
    combined = pd.concat([kept, changes], ignore_index=True) if not kept.empty else changes
    return _sorted(combined, key)


def replace_all(current: pd.DataFrame | None, fresh: pd.DataFrame, key: Sequence[str]) -> pd.DataFrame:
    """A full resync: the fresh rows, plus rows the provider no longer returns at all, kept and flagged deleted
    (the provider's own deletions already arrive flagged in `fresh`)."""
    fresh = _last_per_key(fresh, key)
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
