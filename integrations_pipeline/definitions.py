"""The one Definitions object: assets, jobs, sensors and schedules built from the provider registry."""

from __future__ import annotations

import dagster as dg

from integrations_pipeline.assets.entities import build_entity_asset
from integrations_pipeline.checks import build_freshness_checks
from integrations_pipeline.clients.providers import ENTITIES
from integrations_pipeline.jobs import build_sync_jobs
from integrations_pipeline.resources import IntegrationsResource, WarehouseIOManager
from integrations_pipeline.schedules import build_sync_schedule
from integrations_pipeline.sensors import build_connections_sensor


def build_definitions() -> dg.Definitions:
    providers = sorted({entity.provider for entity in ENTITIES})
    jobs_by_provider = {
        provider: build_sync_jobs(provider, [entity for entity in ENTITIES if entity.provider == provider])
        for provider in providers
    }
    # The sensor and the hourly schedule drive the connection-partitioned job; events have their own cadence.
    sync_jobs = {provider: jobs[False] for provider, jobs in jobs_by_provider.items() if False in jobs}
    assets = {entity.asset_name: build_entity_asset(entity) for entity in ENTITIES}
    freshness_checks, freshness_sensor = build_freshness_checks(
        [assets[entity.asset_name] for entity in ENTITIES if not entity.partitioned_by_day]
    )
    return dg.Definitions(
        assets=list(assets.values()),
        asset_checks=freshness_checks,
        jobs=[job for jobs in jobs_by_provider.values() for job in jobs.values()],
        sensors=[build_connections_sensor(sync_jobs), freshness_sensor],
        schedules=[build_sync_schedule(provider, job) for provider, job in sync_jobs.items()],
        resources={
            "integrations": IntegrationsResource(),
            "io_manager": WarehouseIOManager(database=dg.EnvVar("INTEGRATIONS_WAREHOUSE_PATH")),
        },
    )


defs = build_definitions()
