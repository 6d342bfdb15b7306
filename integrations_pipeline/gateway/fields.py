"""Listing and refreshing a connection's field catalog (the gateway's and the CLI's one way)."""

from __future__ import annotations

import functools
from datetime import datetime

from pydantic import BaseModel, Field

from integrations_pipeline.clients.catalog import ENTITY_NAMES, CatalogRefresher
from integrations_pipeline.clients.connector import open_connector
from integrations_pipeline.clients.errors import NeedsReauth, ProviderError, RateLimited
from integrations_pipeline.gateway.connections import GatewayError
from integrations_pipeline.settings import Settings, SettingsError
from integrations_pipeline.store import ConnectionStatus, StateStore
from integrations_pipeline.store.catalog import CatalogField, FieldCatalog


class FieldView(BaseModel):
    entity: str = Field(description="users, contacts or events")
    name: str = Field(description="the provider's field name: what a mapping's `source` names")
    label: str
    type: str = Field(description="string, number, boolean, datetime, date, enum, multi_enum, reference or object")
    provider_type: str = Field(description="the provider's own type name")
    custom: bool = Field(description="defined by the account (custom) rather than by the provider (standard)")
    discovered_at: datetime | None
    removed_at: datetime | None = Field(description="set when the provider stopped describing the field")

    @classmethod
    def of(cls, info: CatalogField) -> FieldView:
        return cls(
            entity=info.entity,
            name=info.name,
            label=info.label,
            type=info.type.value,
            provider_type=info.provider_type,
            custom=info.is_custom,
            discovered_at=info.discovered_at,
            removed_at=info.removed_at,
        )


class FieldList(BaseModel):
    connection_id: str
    refreshed: bool = Field(description="whether this answer asked the provider (else: the stored catalog)")
    fields: list[FieldView]


class FieldService:
    def __init__(self, settings: Settings, store: StateStore) -> None:
        self.catalog = FieldCatalog(store)
        self.store = store
        self.refresher = CatalogRefresher(store, functools.partial(open_connector, settings, store))

    def list(
        self,
        connection_id: str,
        *,
        entity: str | None = None,
        refresh: bool | None = None,
        include_removed: bool = False,
    ) -> FieldList:
        """The connection's fields as the provider describes them now, stored as they are discovered. `refresh`
        True asks the provider (refused for a connection that is not active), False reads the stored catalog only,
        None asks when the connection is active and reads the stored catalog otherwise."""
        connection = self.store.get_connection(connection_id)
        if connection is None:
            raise GatewayError(404, "unknown_connection", f"no connection {connection_id!r}")
        if entity is not None and entity not in ENTITY_NAMES:
            raise GatewayError(400, "invalid_entity", f"entity is one of {', '.join(ENTITY_NAMES)}", {"entity": entity})
        if refresh is None:
            refresh = connection.status == ConnectionStatus.ACTIVE or not self.catalog.fields(connection_id)
        if refresh:
            if connection.status != ConnectionStatus.ACTIVE:
                raise GatewayError(
                    409,
                    "connection_not_active",
                    f"{connection_id} is {connection.status.value}: reconnect it before refreshing its fields",
                )
            self._refresh(connection_id)
        fields = self.catalog.fields(connection_id, entity, include_removed=include_removed)
        return FieldList(connection_id=connection_id, refreshed=refresh, fields=[FieldView.of(f) for f in fields])

    def _refresh(self, connection_id: str) -> None:
        try:
            self.refresher.refresh(connection_id)
        except SettingsError as error:
            raise GatewayError(409, "provider_not_enabled", str(error)) from None
        except NeedsReauth:
            raise GatewayError(409, "needs_reauth", f"{connection_id} needs to be connected again") from None
        except RateLimited as limited:
            raise GatewayError(503, "rate_limited", f"the provider asks to wait: {limited}") from None
        except ProviderError as failure:
            raise GatewayError(502, "provider_error", f"the provider's metadata request failed: {failure}") from None
