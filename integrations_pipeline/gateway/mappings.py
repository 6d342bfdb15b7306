"""Reading, validating, merging and previewing tenants' field mappings (the gateway's and the CLI's one way)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from integrations_pipeline.clients.catalog import mapping_sources
from integrations_pipeline.clients.providers import get_provider
from integrations_pipeline.gateway.connections import GatewayError
from integrations_pipeline.mapping import (
    ENTITIES,
    RAW_COLUMN,
    MappingUpdate,
    ProviderMapping,
    ValueType,
    apply_rules,
    merge,
    target_types,
    validate_update,
)
from integrations_pipeline.records import ENTITY_COLUMNS, UNIFIED_KEY_COLUMNS
from integrations_pipeline.store import StateStore, connection_id_for

ACTOR = "gateway"
MAX_SAMPLE_RECORDS = 20
# (provider, entity, connection id) -> the connection's stored rows in the warehouse, or None. The gateway sits
# below the warehouse layer, so whoever starts it (the CLI) hands this in.
StoredRows = Callable[[str, str, str], pd.DataFrame | None]


class MappingView(BaseModel):
    tenant: str
    provider: str
    mapping: ProviderMapping


class PreviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    changes: MappingUpdate = Field(default_factory=MappingUpdate, description="unsaved changes to try")
    samples: dict[str, list[dict[str, Any]]] = Field(
        default_factory=dict, description="records per entity to transform; synthetic ones when absent"
    )


class PreviewResponse(BaseModel):
    mapping: ProviderMapping
    preview: dict[str, list[dict[str, Any]]]
    types: dict[str, dict[str, ValueType]] = Field(
        default_factory=dict, description="per entity, the type each target column holds"
    )
    sources: dict[str, str] = Field(
        default_factory=dict, description="per entity: `stored` rows of the connection, `samples` or `synthetic`"
    )


def reserved_columns() -> dict[str, frozenset[str]]:
    return {entity: frozenset(UNIFIED_KEY_COLUMNS + columns) for entity, columns in ENTITY_COLUMNS.items()}


class MappingService:
    def __init__(self, store: StateStore, stored_rows: StoredRows | None = None) -> None:
        self.store = store
        self.stored_rows = stored_rows

    def _check_provider(self, provider: str) -> None:
        if get_provider(provider) is None:
            raise GatewayError(404, "unknown_provider", f"unknown provider {provider!r}")

    def _validated(self, tenant: str, provider: str, update: MappingUpdate) -> None:
        problems = validate_update(update, mapping_sources(self.store, tenant, provider), reserved_columns(), provider)
        if problems:
            raise GatewayError(422, "invalid_mapping", f"the mapping is invalid: {', '.join(problems)}", problems)

    def get(self, tenant: str, provider: str) -> MappingView:
        self._check_provider(provider)
        return MappingView(tenant=tenant, provider=provider, mapping=self.store.get_mapping(tenant, provider))

    def update(self, tenant: str, provider: str, update: MappingUpdate, actor: str = ACTOR) -> MappingView:
        """Validate before anything is saved, then merge into the stored mapping under the tenant's lock."""
        self._check_provider(provider)
        self._validated(tenant, provider, update)
        with self.store.locked(f"mapping:{tenant}:{provider}") as conn:
            merged = merge(self.store.get_mapping(tenant, provider), update)
            self.store.save_mapping(conn, tenant, provider, merged)
            self.store.audit(
                conn,
                "mapping.changed",
                actor=actor,
                tenant=tenant,
                provider=provider,
                detail={
                    entity: {
                        target: rule.model_dump(mode="json") if rule else None
                        for target, rule in getattr(update, entity).items()
                    }
                    for entity in ENTITIES
                    if getattr(update, entity)
                },
            )
        return MappingView(tenant=tenant, provider=provider, mapping=merged)

    def _rows(self, tenant: str, provider: str, entity: str) -> pd.DataFrame | None:
        if self.stored_rows is None:
            return None
        rows = self.stored_rows(provider, entity, connection_id_for(tenant, provider))
        return rows.head(MAX_SAMPLE_RECORDS) if rows is not None and not rows.empty else None

    def preview(self, tenant: str, provider: str, request: PreviewRequest) -> PreviewResponse:
        """The mapping applied to the request's samples, else to the connection's stored rows, else to synthetic
        records (one per entity, every normalized column set to a sample text)."""
        self._check_provider(provider)
        self._validated(tenant, provider, request.changes)
        mapping = merge(self.store.get_mapping(tenant, provider), request.changes)
        fields = mapping_sources(self.store, tenant, provider)
        response = PreviewResponse(mapping=mapping, preview={})
        for entity in ENTITIES:
            rules = mapping.rules(entity)
            if not rules and entity not in request.samples:
                continue
            if entity in request.samples:
                frame, origin = pd.DataFrame.from_records(request.samples[entity][:MAX_SAMPLE_RECORDS]), "samples"
            elif (stored := self._rows(tenant, provider, entity)) is not None:
                frame, origin = stored, "stored"
            else:
                synthetic = {column: f" Sample {column} " for column in sorted(fields[entity].columns)}
                frame, origin = pd.DataFrame.from_records([synthetic]), "synthetic"
            columns = {rule.source for rule in rules.values() if rule.source in fields[entity].columns}
            missing = columns - set(frame.columns)
            if missing:
                raise GatewayError(
                    422,
                    "invalid_samples",
                    f"the {entity} samples lack fields the mapping reads: {', '.join(sorted(missing))}",
                    {f"samples.{entity}": f"missing {', '.join(sorted(missing))}"},
                )
            mapped = apply_rules(frame, rules, fields[entity]).drop(columns=[RAW_COLUMN], errors="ignore")
            response.preview[entity] = mapped.astype(object).where(mapped.notna(), None).to_dict("records")
            response.types[entity] = target_types(rules, fields[entity])
            response.sources[entity] = origin
        return response
