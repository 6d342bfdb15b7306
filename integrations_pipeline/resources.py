"""Dagster resources: the one door from orchestration to the state store, the connectors and the warehouse.
Assets write the warehouse themselves (warehouse.py merges what changed), so there is no I/O manager.

Configuration comes from the same `Settings` model the gateway and CLI read (INTEGRATIONS_* variables, or
`.env`), resolved when a run or sensor starts, never at import: so definitions load with no secrets set, and no
secret ever enters Dagster run config. docs/architecture.md says why this is preferred to binding each
variable with dg.EnvVar.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import dagster as dg
import pandas as pd
from pydantic import PrivateAttr

from integrations_pipeline.clients.connector import NoConnector, open_connector
from integrations_pipeline.clients.http import ApiClient
from integrations_pipeline.settings import Settings, load_settings
from integrations_pipeline.store import StateStore, create_store_engine
from integrations_pipeline.store.budget import LIVE_SHARE
from integrations_pipeline.warehouse import Warehouse, open_warehouse


class IntegrationsResource(dg.ConfigurableResource):
    """State store, connectors and warehouse location, configured by the INTEGRATIONS_* environment
    (INTEGRATIONS_STATE_DATABASE_URL, INTEGRATIONS_ENCRYPTION_KEYS, INTEGRATIONS_WAREHOUSE_PATH or _URL and one
    INTEGRATIONS_<PROVIDER>__CLIENT_ID / __CLIENT_SECRET pair per enabled provider)."""

    _settings: Settings | None = PrivateAttr(default=None)
    _store: StateStore | None = PrivateAttr(default=None)
    _warehouse: Warehouse | None = PrivateAttr(default=None)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    @property
    def store(self) -> StateStore:
        if self._store is None:
            self._store = StateStore(create_store_engine(self.settings.state_database_url), self.settings.keyring())
        return self._store

    @property
    def warehouse(self) -> Warehouse:
        if self._warehouse is None:
            self._warehouse = open_warehouse(self.settings)
        return self._warehouse

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        try:
            if self._warehouse is not None:
                self._warehouse.publish()  # the read replica gets the run's last merges (replica.py)
        finally:
            if self._store is not None:
                self._store.engine.dispose()

    @contextmanager
    def connector(self, provider: str, connection_id: str, *, backfill: bool = False) -> Iterator[ApiClient]:
        """The provider's data client for one connection; its transport refreshes tokens through the store, and
        every call asks the connection's shared rate-limit budget first (a backfill only for its share)."""
        share = self.settings.backfill_rate_share if backfill else LIVE_SHARE
        try:
            with open_connector(self.settings, self.store, provider, connection_id, share=share) as client:
                yield client
        except NoConnector as missing:
            raise dg.Failure(description=str(missing)) from None

    def read_partition(
        self,
        table: str,
        connection_ids: list[str],
        window: tuple[datetime, datetime] | None = None,
        day_column: str = "start_at",
    ) -> pd.DataFrame | None:
        """The warehouse rows of these connections (within the day window, if any) as they stand, or None when
        the table does not exist yet. Values are bound parameters; table and column names come from the registry."""
        return self.warehouse.read(table, connection_ids, window, day_column)
