"""Unified `users`, `contacts` and `events`: every provider of a tenant together, each provider's rows shaped by
the tenant's field mapping for that provider. One table per entity in schema `unified`; the tenant's mapped
columns travel in the JSON column `mapped`, since tenants map different columns and a table has one schema."""

import json
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pandas as pd

from integrations_pipeline.clients.spec import EntitySpec
from integrations_pipeline.frames import markdown_preview, normalize
from integrations_pipeline.mapping import Entity, apply_rules
from integrations_pipeline.partitions import DAY, TENANT, TENANT_DAYS, TENANTS, day_window
from integrations_pipeline.records import ENTITY_COLUMNS, UNIFIED_KEY_COLUMNS
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.store import ConnectionStatus

MAPPED_COLUMN = "mapped"
UNIFIED_SCHEMA = "unified"


def unified_columns(entity: str) -> tuple[str, ...]:
    return (*UNIFIED_KEY_COLUMNS, *ENTITY_COLUMNS[entity], MAPPED_COLUMN)


def shape(rows: pd.DataFrame, tenant: str, provider: str, rules: dict[str, Any]) -> pd.DataFrame:
    """A provider's rows for the unified table: key columns first, mapped values as one JSON object per row."""
    if rules:
        mapped = apply_rules(rows, rules)[sorted(rules)].to_dict("records")
        as_json = [json.dumps(values, default=str, sort_keys=True) for values in mapped]
    else:
        as_json = ["{}"] * len(rows)
    return rows.assign(tenant=tenant, provider=provider, **{MAPPED_COLUMN: as_json})


def build_unified_asset(entity: Entity, sources: list[EntitySpec]) -> dg.AssetsDefinition:
    by_day = any(spec.partitioned_by_day for spec in sources)
    columns = unified_columns(entity)

    @dg.asset(
        name=entity,
        group_name="unified",
        partitions_def=TENANT_DAYS if by_day else TENANTS,
        deps=[dg.AssetDep(spec.asset_name, partition_mapping=dg.AllPartitionMapping()) for spec in sources],
        metadata={
            "schema": UNIFIED_SCHEMA,
            "partition_expr": {TENANT: "tenant", DAY: "start_at"} if by_day else "tenant",
        },
        kinds={"duckdb"},
        description=f"Every provider's {entity} of one tenant in `{UNIFIED_SCHEMA}.{entity}`, with the tenant's "
        f"mapped columns as JSON in `{MAPPED_COLUMN}` (set them with PUT /tenants/{{tenant}}/mappings/{{provider}}).",
    )
    def unified_asset(context: dg.AssetExecutionContext, integrations: IntegrationsResource) -> Iterator[dg.Output]:
        if by_day:
            keys = context.partition_key.keys_by_dimension  # type: ignore[union-attr]
            tenant, window = keys[TENANT], day_window(keys[DAY])
        else:
            tenant, window = str(context.partition_key), None
        store = integrations.store
        connections = [
            c for c in store.list_connections() if c.tenant == tenant and c.status != ConnectionStatus.DISCONNECTED
        ]
        frames, rows_by_provider = [], {}
        for spec in sources:
            connection_ids = [c.id for c in connections if c.provider == spec.provider]
            rows = (
                integrations.read_partition(f"{spec.provider}.{spec.entity}", connection_ids, window)
                if connection_ids
                else None
            )
            if rows is None or rows.empty:
                continue
            rules = store.get_mapping(tenant, spec.provider).rules(entity)
            frames.append(shape(rows, tenant, spec.provider, rules))
            rows_by_provider[spec.provider] = len(rows)
        frame = (
            normalize(pd.concat(frames, ignore_index=True), columns)
            if frames
            else normalize(pd.DataFrame(columns=list(columns)), columns)
        )
        yield dg.Output(
            frame,
            metadata={
                "rows_by_provider": dg.MetadataValue.json(rows_by_provider),
                "preview": dg.MetadataValue.md(markdown_preview(frame)),
            },
        )

    return unified_asset
