"""Partitions: each provider's connections are a dynamic dimension kept in step with the state store; events
add a UTC day dimension (the day each event starts)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache

import dagster as dg

CONNECTION = "connection"
DAY = "day"
FIRST_DAY = "2025-01-01"
# Calendars hold future events: day partitions reach this far past today.
DAYS_AHEAD = 90
DAYS = dg.DailyPartitionsDefinition(start_date=FIRST_DAY, end_offset=DAYS_AHEAD, timezone="UTC")


@cache
def connection_partitions(provider: str) -> dg.DynamicPartitionsDefinition:
    """One definition per provider, so `hubspot_contacts` lists only HubSpot connections."""
    return dg.DynamicPartitionsDefinition(name=f"{provider}_connections")


TENANT = "tenant"
TENANTS = dg.DynamicPartitionsDefinition(name="tenants")
TENANT_DAYS = dg.MultiPartitionsDefinition({TENANT: TENANTS, DAY: DAYS})


@cache
def connection_day_partitions(provider: str) -> dg.MultiPartitionsDefinition:
    return dg.MultiPartitionsDefinition({CONNECTION: connection_partitions(provider), DAY: DAYS})


def day_window(day: str) -> tuple[datetime, datetime]:
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    return start, start + timedelta(days=1)
