"""Sensors, one module each: connections (partitions and first syncs), webhooks (inbox events into runs). The
unified tables need no sensor: each provider sync carries its changes on to them in its own write."""

from integrations_pipeline.sensors.connections import build_connections_sensor
from integrations_pipeline.sensors.webhooks import build_webhook_events_sensor

__all__ = ["build_connections_sensor", "build_webhook_events_sensor"]
