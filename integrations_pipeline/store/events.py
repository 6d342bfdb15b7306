"""The outbox's write side: an event is recorded in the transaction of the change it reports, and fanned out at
once into one pending delivery per active subscription that wants its type. Nothing is sent here; the delivery
sensor sends what is due. Core: the repository itself records `integration.needs_reauth` through this module."""

from __future__ import annotations

import secrets
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from integrations_pipeline.store import schema


class EventType(StrEnum):
    CONNECTED = "integration.connected"
    DISCONNECTED = "integration.disconnected"
    SYNCED = "integration.synced"
    ERROR = "integration.error"
    NEEDS_REAUTH = "integration.needs_reauth"


class SubscriptionStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"  # the receiver answered 410 Gone


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # every attempt failed, or the subscription was disabled


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def record_event(
    conn: sa.Connection,
    event_type: EventType,
    *,
    data: dict[str, Any],
    at: datetime,
    connection_id: str | None = None,
    event_id: str | None = None,
) -> str | None:
    """Insert the event and its deliveries inside `conn`'s transaction; return its id, or None when an event with
    this deterministic `event_id` was recorded before (a sensor evaluating the same run twice). `data` holds facts
    only, never a secret: it is stored and sent as it is."""
    events = schema.webhook_events
    if event_id is not None and conn.execute(sa.select(events.c.id).where(events.c.id == event_id)).first():
        return None
    event_id = event_id or new_id("evt")
    conn.execute(
        events.insert().values(
            id=event_id, type=event_type.value, connection_id=connection_id, data=data, occurred_at=at
        )
    )
    subscriptions = schema.webhook_subscriptions
    wanted = [
        row.id
        for row in conn.execute(
            sa.select(subscriptions.c.id, subscriptions.c.event_types).where(
                subscriptions.c.status == SubscriptionStatus.ACTIVE.value
            )
        )
        if event_type.value in row.event_types
    ]
    if wanted:
        conn.execute(
            schema.webhook_deliveries.insert(),
            [
                {
                    "id": new_id("dlv"),
                    "subscription_id": subscription_id,
                    "event_id": event_id,
                    "replay_of": None,
                    "status": DeliveryStatus.PENDING.value,
                    "attempts": 0,
                    "next_attempt_at": at,
                    "last_error": None,
                    "created_at": at,
                    "updated_at": at,
                }
                for subscription_id in wanted
            ],
        )
    return event_id
