"""Value normalizers every provider's mappers share: records hold None for empty text and aware UTC times."""

from __future__ import annotations

from datetime import UTC, date, datetime, time


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
