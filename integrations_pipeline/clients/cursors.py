"""Timestamp cursors, for providers whose incremental reads filter on a modification time (HubSpot, Zoho,
Salesforce). Token-based providers (Google sync tokens, Graph delta links) keep their own opaque strings."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from integrations_pipeline.clients.spec import SyncRequest

# Windows start this long before the stored cursor: a change committed at the provider just before the previous
# window closed is never missed, and reading it twice is harmless because writes are upserts.
CURSOR_OVERLAP = timedelta(minutes=5)


def timestamp_cursor(moment: datetime, **extra: str | int) -> str:
    """`extra`: what a connector keeps beside the window start (`modified_since` ignores it)."""
    return json.dumps({"modified_since": moment.astimezone(UTC).isoformat(), **extra})


def modified_since(request: SyncRequest, overlap: timedelta = CURSOR_OVERLAP) -> datetime | None:
    """Where an incremental window starts, or None for a full sync."""
    if request.cursor is None:
        return None
    return datetime.fromisoformat(json.loads(request.cursor)["modified_since"]) - overlap
