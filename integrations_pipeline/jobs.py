"""One sync job per provider: all of its entity assets for one connection partition (partitioning is inferred
from the selected assets)."""

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition


def sync_job_name(provider: str) -> str:
    return f"{provider}_sync"


def build_sync_job(provider: str) -> UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        name=sync_job_name(provider),
        selection=dg.AssetSelection.groups(provider),
        description=f"Sync every {provider} entity for one connection.",
    )
