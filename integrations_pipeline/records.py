"""The normalized records every provider's mapper produces: one schema per entity, shared by all providers.

Columns are listed once here; frames are built with exactly these columns in this order, so a table written
from any provider has the same shape (docs/data-model.md describes each column).
"""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict


class UserRecord(TypedDict):
    connection_id: str
    source_id: str
    email: str | None
    first_name: str | None
    last_name: str | None
    title: str | None
    is_active: bool
    created_at: datetime | None
    modified_at: datetime | None
    is_deleted: bool


class ContactRecord(TypedDict):
    connection_id: str
    source_id: str
    email: str | None
    first_name: str | None
    last_name: str | None
    phone: str | None
    company: str | None
    job_title: str | None
    created_at: datetime | None
    modified_at: datetime | None
    is_deleted: bool


class EventRecord(TypedDict):
    connection_id: str
    source_id: str
    title: str | None
    organizer_email: str | None
    start_at: datetime  # UTC; all-day events start at midnight UTC of their date. The day partition is its date.
    end_at: datetime | None
    is_all_day: bool
    location: str | None
    created_at: datetime | None
    modified_at: datetime | None
    is_deleted: bool


class AttendeeRecord(TypedDict):
    """One person invited to an event: a child row of the event, keyed by (connection_id, event_source_id, email)."""

    connection_id: str
    event_source_id: str
    email: str
    name: str | None
    response_status: str  # one of RESPONSE_STATUSES
    is_organizer: bool
    start_at: datetime  # the event's start: attendees are partitioned by day like their event
    is_deleted: bool  # the event was deleted, or a re-fetch of it no longer lists the attendee


RESPONSE_STATUSES = ("accepted", "declined", "tentative", "needs_action", "unknown")

USER_COLUMNS: tuple[str, ...] = tuple(UserRecord.__annotations__)
CONTACT_COLUMNS: tuple[str, ...] = tuple(ContactRecord.__annotations__)
EVENT_COLUMNS: tuple[str, ...] = tuple(EventRecord.__annotations__)
ATTENDEE_COLUMNS: tuple[str, ...] = tuple(AttendeeRecord.__annotations__)
PRIMARY_KEY: tuple[str, ...] = ("connection_id", "source_id")
ATTENDEE_KEY: tuple[str, ...] = ("connection_id", "event_source_id", "email")
ATTENDEES = "event_attendees"  # the child table of every provider's events, and the unified one

# The unified tables put every provider of a tenant together: these columns first, then the entity's columns,
# then the tenant's mapped columns (which may not reuse any of these names).
UNIFIED_KEY_COLUMNS: tuple[str, ...] = ("tenant", "provider")
ENTITY_COLUMNS: dict[str, tuple[str, ...]] = {
    "users": USER_COLUMNS,
    "contacts": CONTACT_COLUMNS,
    "events": EVENT_COLUMNS,
}

# What each column holds, for the Dagster UI's column schema (docs/data-model.md says the same at more length).
COLUMN_DESCRIPTIONS: dict[str, str] = {
    "connection_id": "`{provider}-{tenant}`: the connection (the Dagster partition) the row came through",
    "source_id": "the record's id at the provider",
    "email": "email address",
    "first_name": "first name",
    "last_name": "last name",
    "title": "job title (users) or the event's title (events)",
    "is_active": "the user can sign in at the provider",
    "phone": "phone number, as the provider holds it",
    "company": "company name",
    "job_title": "job title",
    "organizer_email": "the organizer's email address",
    "start_at": "start (UTC; all-day events at midnight UTC of their date): its day is the day partition",
    "end_at": "end (UTC)",
    "is_all_day": "an all-day event",
    "location": "location text",
    "created_at": "creation time at the provider (UTC), where it says",
    "modified_at": "last modification at the provider (UTC)",
    "is_deleted": "deleted, archived or cancelled at the provider, or no longer returned by a full resync",
    "event_source_id": "the event's id at the provider (its source_id in events)",
    "name": "the attendee's display name, where the provider gives one",
    "response_status": "the attendee's answer: accepted, declined, tentative, needs_action or unknown",
    "is_organizer": "the attendee organizes the event",
    "tenant": "the tenant the connection belongs to",
    "provider": "the provider the row came from",
    "mapped": "the tenant's own columns (its field mapping for this provider) as a JSON object",
}
