"""Sensors, one module each: connections (partitions and first syncs), unified (follow-up rebuilds)."""

from integrations_pipeline.sensors.connections import build_connections_sensor
from integrations_pipeline.sensors.unified import build_unified_sensor

__all__ = ["build_connections_sensor", "build_unified_sensor"]
