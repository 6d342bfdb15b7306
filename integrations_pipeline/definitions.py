"""The one Definitions object: assets, jobs, sensors and schedules built from the provider registry."""

from __future__ import annotations

import dagster as dg

from integrations_pipeline.assets.entities import build_entity_asset
from integrations_pipeline.assets.health import connection_health
from integrations_pipeline.assets.unified import build_unified_asset
from integrations_pipeline.clients.providers import ENTITIES
from integrations_pipeline.jobs import (
    build_sync_jobs,
    build_unified_jobs,
    purge_webhook_inbox_job,
    replay_dead_letters_job,
)
from integrations_pipeline.mapping import ENTITIES as ENTITY_NAMES
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.schedules import build_events_schedule, build_inbox_purge_schedule, build_sync_schedule
from integrations_pipeline.sensors import build_connections_sensor, build_webhook_events_sensor
from integrations_pipeline.sensors.deliveries import build_delivery_sensors
from integrations_pipeline.sensors.health import build_connection_health_sensor
from integrations_pipeline.sensors.push import build_push_subscriptions_sensor
from integrations_pipeline.sensors.rate_limits import build_rate_limit_sensor


def build_definitions() -> dg.Definitions:
    providers = sorted({entity.provider for entity in ENTITIES})
    jobs_by_provider = {
        provider: build_sync_jobs(provider, [entity for entity in ENTITIES if entity.provider == provider])
        for provider in providers
    }
    provider_jobs = [job for jobs in jobs_by_provider.values() for job in jobs.values()]
    # The connections sensor and the hourly schedule drive the connection-partitioned jobs.
    sync_jobs = {provider: jobs[False] for provider, jobs in jobs_by_provider.items() if False in jobs}

    assets = {entity.asset_name: build_entity_asset(entity) for entity in ENTITIES}
    sources = {name: [spec for spec in ENTITIES if spec.entity == name] for name in ENTITY_NAMES}
    unified = [build_unified_asset(name, specs) for name, specs in sources.items() if specs]
    unified_jobs = build_unified_jobs(
        unified, {name: any(spec.partitioned_by_day for spec in specs) for name, specs in sources.items() if specs}
    )
    return dg.Definitions(
        assets=[*assets.values(), *unified, connection_health],
        jobs=[*provider_jobs, *unified_jobs.values(), replay_dead_letters_job, purge_webhook_inbox_job],
        sensors=[
            build_connections_sensor(sync_jobs),
            build_webhook_events_sensor(jobs_by_provider),
            *build_delivery_sensors(provider_jobs),
            build_push_subscriptions_sensor(),
            build_connection_health_sensor(),
            build_rate_limit_sensor(provider_jobs),
        ],
        schedules=[
            build_inbox_purge_schedule(purge_webhook_inbox_job),
            *(
                build_sync_schedule(provider, jobs[False])
                for provider, jobs in jobs_by_provider.items()
                if False in jobs
            ),
            *(
                build_events_schedule(provider, jobs[True])
                for provider, jobs in jobs_by_provider.items()
                if True in jobs
            ),
        ],
        resources={"integrations": IntegrationsResource()},
    )


defs = build_definitions()
