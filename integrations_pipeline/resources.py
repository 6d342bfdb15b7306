"""Dagster resources: the one door from orchestration to the state store, the connectors and the warehouse.

Configuration comes from the same `Settings` model the gateway and CLI read (INTEGRATIONS_* variables, or
`.env`), resolved when a run or sensor starts, never at import: so definitions load with no secrets set, and no
secret ever enters Dagster run config. docs/architecture.md says why this is preferred to binding each
variable with dg.EnvVar.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
from dagster._core.storage.db_io_manager import DbIOManager, TableSlice
from dagster._utils.backoff import backoff
from dagster_duckdb.io_manager import DuckDbClient, _get_cleanup_statement
from dagster_duckdb_pandas import DuckDBPandasIOManager
from pydantic import PrivateAttr

from integrations_pipeline.clients.auth import ConnectionAuth, TokenSource
from integrations_pipeline.clients.http import ApiClient
from integrations_pipeline.clients.oauth import OAuthClient
from integrations_pipeline.clients.providers import PROVIDERS
from integrations_pipeline.settings import Settings, load_settings
from integrations_pipeline.store import StateStore, create_store_engine

WAREHOUSE_LOCK_RETRIES = 10  # about 100 s of exponential backoff, as Dagster's DuckDB I/O manager waits


def connect_warehouse(path: Path) -> duckdb.DuckDBPyConnection:
    """A DuckDB file admits one writing process at a time: wait for the lock like the I/O manager does."""
    return backoff(
        fn=duckdb.connect,
        retry_on=(RuntimeError, duckdb.IOException),
        # The same configuration as Dagster's DuckDB client: one process may not open a file with two.
        kwargs={"database": str(path), "config": {"custom_user_agent": "dagster"}},
        max_retries=WAREHOUSE_LOCK_RETRIES,
    )


class IntegrationsResource(dg.ConfigurableResource):
    """State store, connectors and warehouse location, configured by the INTEGRATIONS_* environment
    (INTEGRATIONS_STATE_DATABASE_URL, INTEGRATIONS_ENCRYPTION_KEYS, INTEGRATIONS_WAREHOUSE_PATH and one
    INTEGRATIONS_<PROVIDER>__CLIENT_ID / __CLIENT_SECRET pair per enabled provider)."""

    _settings: Settings | None = PrivateAttr(default=None)
    _store: StateStore | None = PrivateAttr(default=None)

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

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._store is not None:
            self._store.engine.dispose()

    @contextmanager
    def connector(self, provider: str, connection_id: str) -> Iterator[ApiClient]:
        """The provider's data client for one connection; its transport refreshes tokens through the store."""
        spec = PROVIDERS[provider]
        if spec.build_client is None:
            raise dg.Failure(description=f"{spec.display_name} has no data connector yet")
        app = self.settings.provider_app(provider)
        connection = self.store.get_connection(connection_id)
        metadata = connection.provider_metadata if connection is not None else {}
        oauth = OAuthClient.for_connection(spec, app, metadata)  # refreshes at the connection's data centre
        tokens = TokenSource(self.store, oauth, connection_id)
        client = spec.build_client(spec.api_origin(app), ConnectionAuth(tokens, spec.auth_scheme), metadata)
        try:
            yield client
        finally:
            client.close()
            oauth.close()

    def read_partition(
        self,
        table: str,
        connection_ids: list[str],
        window: tuple[datetime, datetime] | None = None,
        day_column: str = "start_at",
    ) -> pd.DataFrame | None:
        """The warehouse rows of these connections (within the day window, if any) as they stand, or None when
        the table does not exist yet. Values are bound parameters; table and column names come from the registry."""
        placeholders = ", ".join("?" for _ in connection_ids) or "NULL"
        query = f"SELECT * FROM {table} WHERE connection_id IN ({placeholders})"
        parameters: list[object] = list(connection_ids)
        if window is not None:
            query += f" AND {day_column} >= ? AND {day_column} < ?"
            parameters += list(window)
        with connect_warehouse(self.settings.warehouse_path) as connection:
            try:
                return connection.execute(query + " ORDER BY connection_id, source_id", parameters).df()
            except duckdb.CatalogException:
                return None


class _NamedTableIOManager(DbIOManager):
    """Dagster's DB I/O manager, with two adjustments: a `table` entry in the asset's metadata names the table (so
    asset `hubspot_contacts` is stored as `hubspot.contacts`), and dynamic partitions resolve (see below)."""

    def _get_table_slice(self, context: Any, output_context: dg.OutputContext) -> TableSlice:
        # Expanding a multi-partition range with a dynamic dimension (events: connection x day) needs the instance,
        # which Dagster's DB I/O manager does not pass down on its own.
        with dg.partition_loading_context(dynamic_partitions_store=output_context.step_context.instance):
            table_slice = super()._get_table_slice(context, output_context)
        table = (output_context.definition_metadata or {}).get("table")
        return table_slice._replace(table=table) if table else table_slice


class _TransactionalDuckDbClient(DuckDbClient):
    """Dagster's DuckDB client runs the partition's DELETE and INSERT on an autocommit connection, so a failed
    INSERT would leave the partition empty; here they share one transaction and a failure rolls both back."""

    @staticmethod
    @contextmanager
    def connect(context: Any, table_slice: TableSlice) -> Iterator[duckdb.DuckDBPyConnection]:
        with DuckDbClient.connect(context, table_slice) as connection:
            connection.begin()
            try:
                yield connection
            except BaseException:
                connection.rollback()
                connection.close()  # the wrapped client closes only on success
                raise
            connection.commit()

    @staticmethod
    def delete_table_slice(context: Any, table_slice: TableSlice, connection: duckdb.DuckDBPyConnection) -> None:
        # Look before deleting: a failed statement (the first write's missing table) would abort the transaction.
        exists = connection.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [table_slice.schema, table_slice.table],
        ).fetchone()
        if exists and exists[0]:
            connection.execute(_get_cleanup_statement(table_slice))


class WarehouseIOManager(DuckDBPandasIOManager):
    """Dagster's DuckDB pandas I/O manager, bound in definitions.py to INTEGRATIONS_WAREHOUSE_PATH: each
    partition is deleted and rewritten in one transaction, so writes are idempotent."""

    def create_io_manager(self, context: dg.InitResourceContext) -> DbIOManager:
        Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        return _NamedTableIOManager(
            db_client=_TransactionalDuckDbClient(),
            database=self.database,
            schema=self.schema_,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
            io_manager_name="WarehouseIOManager",
        )
