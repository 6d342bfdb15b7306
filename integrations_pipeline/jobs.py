"""Sync jobs per provider: one for its connection-partitioned entities (users, contacts), one for its
day-partitioned ones (events), since a Dagster job has a single partitioning."""

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from integrations_pipeline.clients.spec import EntitySpec


def sync_job_name(provider: str, by_day: bool = False) -> str:
    return f"{provider}_events_sync" if by_day else f"{provider}_sync"


def build_sync_jobs(provider: str, entities: list[EntitySpec]) -> dict[bool, UnresolvedAssetJobDefinition]:
    """{partitioned_by_day: job} for the provider's entities."""
    jobs = {}
    for by_day in sorted({entity.partitioned_by_day for entity in entities}):
        names = [entity.asset_name for entity in entities if entity.partitioned_by_day == by_day]
        jobs[by_day] = dg.define_asset_job(
            name=sync_job_name(provider, by_day),
            selection=dg.AssetSelection.assets(*names),
            description=f"Sync {', '.join(names)} for one {'connection and day' if by_day else 'connection'}.",
        )
    return jobs


def build_unified_jobs(
    unified_assets: list[dg.AssetsDefinition], by_day: dict[str, bool]
) -> dict[bool, UnresolvedAssetJobDefinition]:
    """{partitioned_by_day: job} for the unified assets (by tenant, or by tenant and day)."""
    jobs = {}
    for day_partitioned in sorted(set(by_day.values())):
        names = [name for name, flag in by_day.items() if flag == day_partitioned]
        jobs[day_partitioned] = dg.define_asset_job(
            name="unified_events_sync" if day_partitioned else "unified_sync",
            selection=dg.AssetSelection.assets(*names),
            description=f"Rebuild {', '.join(names)} for one tenant{' and day' if day_partitioned else ''}.",
        )
    return jobs
