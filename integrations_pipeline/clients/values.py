"""Value normalizers every provider's mappers share: records hold None for empty text and aware UTC times."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time

from integrations_pipeline.records import AttendeeRecord, EventRecord


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


# (email, name, the provider's response word, is organizer) as a mapper reads it from the provider's event
Invitee = tuple[str | None, str | None, str | None, bool]


def attendee_records(
    event: EventRecord,
    people: Iterable[Invitee],
    statuses: Mapping[str, str],
) -> list[AttendeeRecord]:
    """An event's attendees from (email, name, the provider's response word, is organizer): the response word
    normalized through `statuses` (anything else is "unknown"), emails lowercased, people without an email and
    repeats of one email dropped (the key is the email). A deleted event's attendees are deleted with it."""
    records: dict[str, AttendeeRecord] = {}
    for email, name, response, is_organizer in people:
        address = (email or "").strip().lower()
        if not address or address in records:
            continue
        records[address] = AttendeeRecord(
            connection_id=event["connection_id"],
            event_source_id=event["source_id"],
            email=address,
            name=text_or_none(name),
            response_status=statuses.get(response or "", "unknown"),
            is_organizer=is_organizer,
            start_at=event["start_at"],
            is_deleted=event["is_deleted"],
        )
    return list(records.values())
