"""Value normalizers every provider's mappers share: records hold None for empty text and aware UTC times."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

from pydantic import BaseModel


def text_or_none(value: str | None) -> str | None:
    """Providers send unset strings as null or as "": both are None in a record."""
    return value or None


def as_utc(moment: datetime | None) -> datetime | None:
    """An aware datetime moved to UTC; a naive one is taken to be UTC already."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def utc_midnight(day: date) -> datetime:
    """Where an all-day event starts in the records: midnight UTC of its date."""
    return datetime.combine(day, time.min, tzinfo=UTC)


def raw_json(model: BaseModel) -> str:
    """A record's `raw` column: the provider's record as parsed (models keep unknown keys: `extra="allow"`), dumped
    as JSON text in Rust by pydantic; the fields the provider did not send stay absent."""
    return model.model_dump_json(by_alias=True, exclude_unset=True)
