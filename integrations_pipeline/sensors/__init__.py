"""Sensors, one module each: connections (partitions and first syncs), unified (follow-up rebuilds), webhooks (inbox
events into runs)."""

from integrations_pipeline.sensors.connections import build_connections_sensor
from integrations_pipeline.sensors.unified import build_unified_sensor
from integrations_pipeline.sensors.webhooks import build_webhook_events_sensor

__all__ = ["build_connections_sensor", "build_unified_sensor", "build_webhook_events_sensor"]
