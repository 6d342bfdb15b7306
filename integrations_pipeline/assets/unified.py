"""Unified `users`, `contacts` and `events`: every provider of a tenant together, each provider's rows shaped by
the tenant's field mapping for that provider. One table per entity in schema `unified`; the tenant's mapped
columns travel in the JSON column `mapped`, since tenants map different columns and a table has one schema.

Provider syncs keep these tables current themselves: each merge carries the rows it changed on to the unified
table in the same transaction, and a changed mapping rewrites that connection's rows there (warehouse.py). This
asset is the explicit rebuild of a tenant's partition (and the lineage from the provider tables), in SQL; rebuilding
`events` rebuilds the same day of `unified.event_attendees` with it."""

from collections.abc import Iterator
from dataclasses import replace

import dagster as dg

from integrations_pipeline.assets.entities import table_metadata, unified_follow
from integrations_pipeline.clients.spec import EntitySpec
from integrations_pipeline.mapping import Entity
from integrations_pipeline.partitions import DAY, TENANT, TENANT_DAYS, TENANTS, day_window
from integrations_pipeline.records import ATTENDEE_COLUMNS, ATTENDEE_KEY, ATTENDEES
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.store import ConnectionStatus
from integrations_pipeline.warehouse import (
    MAPPED_COLUMN,
    UNIFIED_SCHEMA,
    PartitionSlice,
    UnifiedSource,
)


def build_unified_asset(entity: Entity, sources: list[EntitySpec]) -> dg.AssetsDefinition:
    by_day = any(spec.partitioned_by_day for spec in sources)
    table = f"{UNIFIED_SCHEMA}.{entity}"

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
        description=f"Every provider's {entity} of one tenant in `{table}`, with the tenant's mapped columns as "
        f"JSON in `{MAPPED_COLUMN}` (set them with PUT /tenants/{{tenant}}/mappings/{{provider}}). Provider syncs "
        "update it as they write; materializing it rebuilds the tenant's partition from the provider tables.",
    )
    def unified_asset(
        context: dg.AssetExecutionContext, integrations: IntegrationsResource
    ) -> Iterator[dg.MaterializeResult]:
        if by_day:
            keys = context.partition_key.keys_by_dimension  # type: ignore[union-attr]
            tenant, window = keys[TENANT], day_window(keys[DAY])
        else:
            tenant, window = str(context.partition_key), None
        store, warehouse = integrations.store, integrations.warehouse
        live = [c for c in store.list_connections() if c.tenant == tenant and c.status != ConnectionStatus.DISCONNECTED]
        pairs = [(spec, connection) for spec in sources for connection in live if connection.provider == spec.provider]
        follows = {spec.provider: unified_follow(store, entity, tenant, spec.provider) for spec, _ in pairs}
        unified_sources = [
            UnifiedSource(f"{spec.provider}.{spec.entity}", spec.columns, connection.id, follows[spec.provider])
            for spec, connection in pairs
        ]
        # Events' attendees are their child table: the same connections and day, shaped by no mapping (as the
        # events sync writes them).
        attendee_sources = [
            UnifiedSource(
                f"{spec.provider}.{ATTENDEES}",
                ATTENDEE_COLUMNS,
                connection.id,
                replace(follows[spec.provider], entity=ATTENDEES, rules={}),
                ATTENDEE_KEY,
            )
            for spec, connection in pairs
        ]
        children = {ATTENDEES: attendee_sources} if entity == "events" and attendee_sources else None
        rows = warehouse.rebuild_unified(entity, tenant, window, unified_sources, children)
        context.log.info(f"{table} {context.partition_key}: rebuilt from {len(unified_sources)} sources, {rows} rows")
        if not unified_sources:  # no live connection: nothing to show (the table may not even exist)
            yield dg.MaterializeResult(metadata={"dagster/partition_row_count": 0})
            return
        part = PartitionSlice(table, tenant, window, owner_column="tenant")
        summary = warehouse.summarize(part, ("connection_id", "source_id"), ("tenant", "provider"))
        yield dg.MaterializeResult(metadata=table_metadata(table, summary, warehouse.kind))

    return unified_asset
