"""Partitions: each provider's connections are a dynamic dimension kept in step with the state store."""

from __future__ import annotations

from functools import cache

import dagster as dg


@cache
def connection_partitions(provider: str) -> dg.DynamicPartitionsDefinition:
    """One definition per provider, so `hubspot_contacts` lists only HubSpot connections."""
    return dg.DynamicPartitionsDefinition(name=f"{provider}_connections")
