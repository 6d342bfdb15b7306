"""Pure functions that turn records into compact frames of fixed dtypes, one chunk of a sync at a time (the
warehouse merges them: warehouse.py)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from integrations_pipeline.records import RAW_COLUMN

TIMESTAMP_DTYPE = "datetime64[us, UTC]"


def to_frame(records: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    """Each column straight from the records into its dtype: no pandas type inference, no intermediate frame."""
    rows = records if isinstance(records, list) else list(records)
    return pd.DataFrame(
        {column: _typed(column, _objects([row.get(column) for row in rows])) for column in columns}, copy=False
    )


def concat(frames: Sequence[pd.DataFrame], columns: Sequence[str]) -> pd.DataFrame:
    """Frames of the same normalized columns as one (an empty result keeps the columns and dtypes)."""
    non_empty = [frame for frame in frames if not frame.empty]
    if not non_empty:
        return to_frame([], columns)
    return non_empty[0] if len(non_empty) == 1 else pd.concat(non_empty, ignore_index=True)


def normalize(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Fixed column order and dtypes: timestamps as UTC microseconds, flags as bool, text as object."""
    return pd.DataFrame({column: _typed(column, frame[column]) for column in columns}, index=frame.index, copy=False)


def _objects(values: list[Any]) -> np.ndarray:
    # fromiter keeps every value a scalar (np.array would nest lists) and skips pandas' slower list conversion.
    return np.fromiter(values, dtype=object, count=len(values))


def _typed(column: str, values: np.ndarray | pd.Series) -> Any:
    """One column in its dtype, as an array: no index, so nothing is realigned."""
    if column.endswith("_at"):
        return _utc_timestamps(values)
    if column.startswith("is_"):
        return np.asarray(values).astype(bool)
    if column == RAW_COLUMN:  # one JSON text per record, never shared: hashing them would cost, not save
        return np.asarray(values, dtype=object)
    return _shared_strings(np.asarray(values, dtype=object))


def _utc_timestamps(values: np.ndarray | pd.Series) -> Any:
    # pandas converts datetimes carrying datetime.UTC about 20 times faster than ones carrying another tzinfo
    # class (pydantic's), so aware datetimes are moved to datetime.UTC first; ISO 8601 strings parse as they are.
    if values.dtype == object:
        values = _objects([value.astimezone(UTC) if isinstance(value, datetime) else value for value in values])
    return pd.to_datetime(values, utc=True, format="ISO8601").astype(TIMESTAMP_DTYPE).array


def _shared_strings(values: np.ndarray) -> np.ndarray:
    """Text as objects, missing values as None, and equal strings as one object. CRM columns repeat a lot (owners,
    companies, job titles, first names, stages), and each string parsed from JSON is an object of its own at about
    50 bytes plus its text: sharing them halves a contacts frame (docs/benchmarks.md)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)  # hashes in C; first-seen objects
    pool = np.empty(len(uniques) + 1, dtype=object)  # code -1 (missing) takes the last entry: None
    pool[:-1] = uniques
    return pool.take(codes)


def markdown_preview(frame: pd.DataFrame, rows: int = 10) -> str:
    """A small Markdown table for the Dagster UI (no optional dependency such as tabulate)."""
    head = frame.head(rows)
    lines = ["| " + " | ".join(head.columns) + " |", "|" + "---|" * len(head.columns)]
    for values in head.itertuples(index=False):
        cells = ("" if value is None else str(value).replace("|", "\\|") for value in values)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
