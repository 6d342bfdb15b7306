"""Reading, validating, merging and previewing tenants' field mappings (the gateway's and the CLI's one way)."""

from __future__ import annotations

from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from integrations_pipeline.clients.providers import ENTITIES as ENTITY_SPECS
from integrations_pipeline.clients.providers import get_provider
from integrations_pipeline.gateway.connections import GatewayError
from integrations_pipeline.mapping import ENTITIES, MappingUpdate, ProviderMapping, apply_rules, merge, validate_update
from integrations_pipeline.records import ENTITY_COLUMNS, UNIFIED_KEY_COLUMNS
from integrations_pipeline.store import StateStore

ACTOR = "gateway"
MAX_SAMPLE_RECORDS = 20


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


def known_fields(provider: str) -> dict[str, frozenset[str]]:
    """Source fields a mapping may name: the columns of the provider's entity tables."""
    return {
        spec.entity: frozenset(spec.columns) - {"connection_id"} for spec in ENTITY_SPECS if spec.provider == provider
    }


def reserved_columns() -> dict[str, frozenset[str]]:
    return {entity: frozenset(UNIFIED_KEY_COLUMNS + columns) for entity, columns in ENTITY_COLUMNS.items()}


class MappingService:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    def _check_provider(self, provider: str) -> None:
        if get_provider(provider) is None:
            raise GatewayError(404, "unknown_provider", f"unknown provider {provider!r}")

    def _validated(self, provider: str, update: MappingUpdate) -> None:
        problems = validate_update(update, known_fields(provider), reserved_columns(), provider)
        if problems:
            raise GatewayError(422, "invalid_mapping", f"the mapping is invalid: {', '.join(problems)}", problems)

    def get(self, tenant: str, provider: str) -> MappingView:
        self._check_provider(provider)
        return MappingView(tenant=tenant, provider=provider, mapping=self.store.get_mapping(tenant, provider))

    def update(self, tenant: str, provider: str, update: MappingUpdate, actor: str = ACTOR) -> MappingView:
        """Validate before anything is saved, then merge into the stored mapping under the tenant's lock."""
        self._check_provider(provider)
        self._validated(provider, update)
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
                    entity: {target: rule.source if rule else None for target, rule in getattr(update, entity).items()}
                    for entity in ENTITIES
                    if getattr(update, entity)
                },
            )
        return MappingView(tenant=tenant, provider=provider, mapping=merged)

    def preview(self, tenant: str, provider: str, request: PreviewRequest) -> PreviewResponse:
        self._check_provider(provider)
        self._validated(provider, request.changes)
        mapping = merge(self.store.get_mapping(tenant, provider), request.changes)
        fields = known_fields(provider)
        preview: dict[str, list[dict[str, Any]]] = {}
        for entity in ENTITIES:
            rules = mapping.rules(entity)
            if not rules and entity not in request.samples:
                continue
            samples = request.samples.get(entity) or [{field: f" Sample {field} " for field in sorted(fields[entity])}]
            frame = pd.DataFrame.from_records(samples[:MAX_SAMPLE_RECORDS])
            missing = {rule.source for rule in rules.values()} - set(frame.columns)
            if missing:
                raise GatewayError(
                    422,
                    "invalid_samples",
                    f"the {entity} samples lack fields the mapping reads: {', '.join(sorted(missing))}",
                    {f"samples.{entity}": f"missing {', '.join(sorted(missing))}"},
                )
            preview[entity] = (
                apply_rules(frame, rules).astype(object).where(lambda f: f.notna(), None).to_dict("records")
            )
        return PreviewResponse(mapping=mapping, preview=preview)
