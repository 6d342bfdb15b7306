"""The normalized records every provider's mapper produces: one schema per entity, shared by all providers.

Columns are listed once here; frames are built with exactly these columns in this order, so a table written
from any provider has the same shape (see docs/data-model.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict


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
    modified_at: datetime
    is_deleted: bool


CONTACT_COLUMNS: tuple[str, ...] = tuple(ContactRecord.__annotations__)
PRIMARY_KEY: tuple[str, ...] = ("connection_id", "source_id")
