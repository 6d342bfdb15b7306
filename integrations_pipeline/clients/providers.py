"""The registry of providers: names come from here, never from a path or an import built from user input."""

from __future__ import annotations

from integrations_pipeline.clients import google, hubspot, microsoft, salesforce, zoho
from integrations_pipeline.clients.spec import EntitySpec, ProviderSpec

_MODULES = (google, hubspot, microsoft, salesforce, zoho)
PROVIDERS: dict[str, ProviderSpec] = {module.SPEC.name: module.SPEC for module in _MODULES}
ENTITIES: tuple[EntitySpec, ...] = tuple(entity for module in _MODULES for entity in module.ENTITIES)


def get_provider(name: str) -> ProviderSpec | None:
    return PROVIDERS.get(name)
