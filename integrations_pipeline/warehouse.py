"""The warehouse behind the I/O manager and the partition reads: DuckDB file (the default) or PostgreSQL.

One small abstraction, `Warehouse`, that both backends implement: a Dagster `DbClient` (connect, ensure the
schema, delete a partition, all in one transaction with the insert), a `DbTypeHandler` that writes a pandas frame
(DuckDB: INSERT from the frame; PostgreSQL: COPY), and `read` for `IntegrationsResource.read_partition`.
`open_warehouse(settings)` picks the backend from configuration only: `INTEGRATIONS_WAREHOUSE_URL` set to a
`postgresql://` URL selects PostgreSQL, otherwise the DuckDB file at `INTEGRATIONS_WAREHOUSE_PATH`.

Partition values are always bound parameters; table and column names come from the registry and are quoted.
"""

import io
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import duckdb
import pandas as pd
from dagster._core.definitions.metadata import TableMetadataSet
from dagster._core.storage.db_io_manager import DbClient, DbTypeHandler, TablePartitionDimension, TableSlice

from integrations_pipeline.frames import TIMESTAMP_DTYPE
from integrations_pipeline.replica import connect_for_writing, refresh_read_replica
from integrations_pipeline.settings import Settings

if TYPE_CHECKING:  # psycopg2 is imported where PostgreSQL is used: a DuckDB run process never loads it (5 MiB)
    from psycopg2.extensions import connection as PgConnection


Window = tuple[datetime, datetime]


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _qualified(table: str) -> str:
    """`hubspot.contacts` -> `"hubspot"."contacts"`."""
    return ".".join(_quoted(part) for part in table.split("."))


def _slice_filter(dimensions: Sequence[TablePartitionDimension] | None, placeholder: str) -> tuple[str, list[Any]]:
    """A WHERE clause (with bound values) selecting a partition slice: a time window or a set of keys per
    dimension, as Dagster's DB I/O manager describes them."""
    clauses: list[str] = []
    parameters: list[Any] = []
    for dimension in dimensions or ():
        column = _quoted(str(dimension.partition_expr))
        if isinstance(dimension.partitions, dg.TimeWindow):
            clauses.append(f"{column} >= {placeholder} AND {column} < {placeholder}")
            parameters += [dimension.partitions.start, dimension.partitions.end]
        else:
            keys = list(dimension.partitions)
            clauses.append(f"{column} IN ({', '.join(placeholder for _ in keys) or 'NULL'})")
            parameters += keys
    return " AND ".join(clauses) or "TRUE", parameters


def _partition_query(
    table: str, connection_ids: list[str], window: Window | None, day_column: str, placeholder: str
) -> tuple[str, list[Any]]:
    dimensions = [TablePartitionDimension("connection_id", connection_ids)]
    if window is not None:
        dimensions.append(TablePartitionDimension(day_column, dg.TimeWindow(*window)))
    where, parameters = _slice_filter(dimensions, placeholder)
    return f"SELECT * FROM {_qualified(table)} WHERE {where} ORDER BY connection_id, source_id", parameters


def _output_metadata(context: dg.OutputContext, frame: pd.DataFrame, storage_kind: str) -> dict[str, Any]:
    rows = frame.shape[0]
    return {
        **(
            TableMetadataSet(partition_row_count=rows, storage_kind=storage_kind)
            if context.has_partition_key or context.has_asset_partitions
            else TableMetadataSet(row_count=rows, storage_kind=storage_kind)
        ),
        "dataframe_columns": dg.MetadataValue.table_schema(
            dg.TableSchema(columns=[dg.TableColumn(name=str(n), type=str(t)) for n, t in frame.dtypes.items()])
        ),
    }


class Warehouse(ABC):
    """Where asset outputs live. Each write replaces its partition slice in one transaction (DELETE then
    INSERT, both or neither), so writes are idempotent; `read` gives the rows back as they stand."""

    kind: str
    name: str  # what TableSlice.database and the UI show: never a password

    @abstractmethod
    def client(self) -> DbClient: ...

    @abstractmethod
    def type_handler(self) -> DbTypeHandler: ...

    @abstractmethod
    def read(
        self, table: str, connection_ids: list[str], window: Window | None, day_column: str
    ) -> pd.DataFrame | None:
        """The rows of these connections (within the window, if any), or None when the table does not exist."""


def open_warehouse(settings: Settings) -> Warehouse:
    if settings.warehouse_url is not None:
        return PostgresWarehouse(settings.warehouse_url.get_secret_value())
    return DuckDbWarehouse(settings.warehouse_path)


# --- DuckDB (the embedded default) -----------------------------------------------------------------------------


class DuckDbWarehouse(Warehouse):
    kind = "duckdb"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB file admits one writing process at a time: wait for the lock, a bounded time (replica.py)."""
        # The same configuration as Dagster's DuckDB client: one process may not open a file with two.
        return connect_for_writing(self.path, config={"custom_user_agent": "dagster"})

    def client(self) -> DbClient:
        return _DuckDbClient(self)

    def type_handler(self) -> DbTypeHandler:
        return _DuckDbFrameHandler()

    def read(
        self, table: str, connection_ids: list[str], window: Window | None, day_column: str
    ) -> pd.DataFrame | None:
        query, parameters = _partition_query(table, connection_ids, window, day_column, "?")
        with self.connect() as connection:
            try:
                return connection.execute(query, parameters).df()
            except duckdb.CatalogException:
                return None


def _duckdb_table_exists(connection: duckdb.DuckDBPyConnection, table_slice: TableSlice) -> bool:
    # fetchall: DuckDB refuses the next statement while a result is unfinished.
    rows = connection.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [table_slice.schema, table_slice.table],
    ).fetchall()
    return bool(rows[0][0])


class _DuckDbClient(DbClient):
    """Dagster's DuckDB client runs the partition's DELETE and INSERT on an autocommit connection, so a failed
    INSERT would leave the partition empty; here they share one transaction and a failure rolls both back."""

    def __init__(self, warehouse: DuckDbWarehouse) -> None:
        self.warehouse = warehouse

    @contextmanager
    def connect(self, context: Any, table_slice: TableSlice) -> Iterator[duckdb.DuckDBPyConnection]:  # type: ignore[override]
        with self.warehouse.connect() as connection:
            connection.begin()
            try:
                yield connection
            except BaseException:
                connection.rollback()
                raise
            connection.commit()
            refresh_read_replica(connection, self.warehouse.path)  # analysts query the replica (replica.py)

    def ensure_schema_exists(self, context: Any, table_slice: TableSlice, connection: Any) -> None:  # type: ignore[override]
        connection.execute(f"CREATE SCHEMA IF NOT EXISTS {_quoted(table_slice.schema)}").fetchall()

    def delete_table_slice(self, context: Any, table_slice: TableSlice, connection: Any) -> None:  # type: ignore[override]
        # Look before deleting: a failed statement (the first write's missing table) would abort the transaction.
        if _duckdb_table_exists(connection, table_slice):
            where, parameters = _slice_filter(table_slice.partition_dimensions, "?")
            connection.execute(
                f"DELETE FROM {_qualified(_table_name(table_slice))} WHERE {where}", parameters
            ).fetchall()

    @staticmethod
    def get_select_statement(table_slice: TableSlice) -> str:
        return f"SELECT * FROM {_qualified(_table_name(table_slice))}"


def _table_name(table_slice: TableSlice) -> str:
    return f"{table_slice.schema}.{table_slice.table}"


class _DuckDbFrameHandler(DbTypeHandler[pd.DataFrame]):
    """Like dagster-duckdb-pandas' handler: an empty frame creates no table (so `read` answers None, and the
    next sync is a full one, on every backend alike)."""

    def handle_output(
        self, context: dg.OutputContext, table_slice: TableSlice, obj: pd.DataFrame, connection: Any
    ) -> dict[str, Any]:
        if not obj.empty:
            table = _qualified(_table_name(table_slice))
            connection.register("frame_to_write", obj)
            connection.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM frame_to_write LIMIT 0").fetchall()
            connection.execute(f"INSERT INTO {table} SELECT * FROM frame_to_write").fetchall()
            connection.unregister("frame_to_write")
        return _output_metadata(context, obj, "duckdb")

    def load_input(self, context: dg.InputContext, table_slice: TableSlice, connection: Any) -> pd.DataFrame:
        where, parameters = _slice_filter(table_slice.partition_dimensions, "?")
        return connection.execute(
            f"SELECT * FROM {_qualified(_table_name(table_slice))} WHERE {where}", parameters
        ).df()

    @property
    def supported_types(self) -> Sequence[type[object]]:
        return [pd.DataFrame]


# --- PostgreSQL (the production option) ------------------------------------------------------------------------


def _postgres_type(column: str, dtype: Any) -> str:
    """Frames have three kinds of column (frames.normalize): UTC timestamps, flags and text."""
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "timestamptz"
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "bigint"
    if pd.api.types.is_float_dtype(dtype):
        return "double precision"
    return "text"


def _typed_like_frames(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows read back with the dtypes frames.normalize gives (timestamps as UTC microseconds, text as object)."""
    for column in frame.columns:
        if column.endswith("_at"):
            frame[column] = pd.to_datetime(frame[column], utc=True).astype(TIMESTAMP_DTYPE)
        elif column.startswith("is_"):
            frame[column] = frame[column].astype(bool)
    return frame


class PostgresWarehouse(Warehouse):
    kind = "postgres"

    def __init__(self, url: str) -> None:
        import psycopg2.extensions

        self.url = url.replace("postgresql+psycopg2://", "postgresql://", 1)
        parameters = psycopg2.extensions.parse_dsn(self.url)
        self.name = parameters.get("dbname", "postgres")

    @contextmanager
    def connect(self) -> Iterator["PgConnection"]:
        """One transaction: committed when the block ends, rolled back (both DELETE and COPY) if it raises."""
        import psycopg2

        connection = psycopg2.connect(self.url, options="-c TimeZone=UTC")
        try:
            with connection:  # psycopg2: commit on success, rollback on error (does not close)
                yield connection
        finally:
            connection.close()

    def client(self) -> DbClient:
        return _PostgresClient(self)

    def type_handler(self) -> DbTypeHandler:
        return _PostgresFrameHandler()

    def read(
        self, table: str, connection_ids: list[str], window: Window | None, day_column: str
    ) -> pd.DataFrame | None:
        query, parameters = _partition_query(table, connection_ids, window, day_column, "%s")
        with self.connect() as connection, connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass(%s)", [_qualified(table)])
            if cursor.fetchone() == (None,):
                return None
            cursor.execute(query, parameters)
            columns = [description.name for description in cursor.description or ()]
            return _typed_like_frames(pd.DataFrame.from_records(cursor.fetchall(), columns=columns))


class _PostgresClient(DbClient):
    def __init__(self, warehouse: PostgresWarehouse) -> None:
        self.warehouse = warehouse

    @contextmanager
    def connect(self, context: Any, table_slice: TableSlice) -> Iterator["PgConnection"]:  # type: ignore[override]
        with self.warehouse.connect() as connection:
            yield connection

    def ensure_schema_exists(self, context: Any, table_slice: TableSlice, connection: "PgConnection") -> None:  # type: ignore[override]
        with connection.cursor() as cursor:
            # Concurrent first writes would race on CREATE ... IF NOT EXISTS (a unique violation in the
            # catalog): writers of one table take turns for the length of their transaction.
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [_table_name(table_slice)])
            cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {_quoted(table_slice.schema)}")

    def delete_table_slice(self, context: Any, table_slice: TableSlice, connection: "PgConnection") -> None:  # type: ignore[override]
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass(%s)", [_qualified(_table_name(table_slice))])
            if cursor.fetchone() == (None,):
                return
            where, parameters = _slice_filter(table_slice.partition_dimensions, "%s")
            cursor.execute(f"DELETE FROM {_qualified(_table_name(table_slice))} WHERE {where}", parameters)

    @staticmethod
    def get_select_statement(table_slice: TableSlice) -> str:
        return f"SELECT * FROM {_qualified(_table_name(table_slice))}"


COPY_NULL = r"\N"  # COPY's text format: NULL is \N, and a backslash in data is written doubled
_COPY_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))


def _copy_column(values: pd.Series) -> pd.Series:
    """One column in COPY's text format; vectorized, so a 100,000-row partition costs no Python loop per cell."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        utc = values.dt.tz_convert("UTC") if values.dt.tz is not None else values.dt.tz_localize("UTC")
        text = utc.dt.strftime("%Y-%m-%d %H:%M:%S.%f+00")
    elif pd.api.types.is_bool_dtype(values.dtype):
        text = values.map({True: "t", False: "f"})
    else:
        text = values.astype(object).where(values.isna(), values.astype(str))
        for raw, escaped in _COPY_ESCAPES:
            text = text.str.replace(raw, escaped, regex=False)
    return text.where(values.notna(), COPY_NULL)


def copy_text(frame: pd.DataFrame) -> str:
    """The frame as COPY ... FROM STDIN text: tab-separated, one line per row, \\N for NULL."""
    lines = None
    for column in frame.columns:
        text = _copy_column(frame[column])
        lines = text if lines is None else lines + "\t" + text
    return "" if lines is None else "\n".join(lines.tolist()) + "\n"


class _PostgresFrameHandler(DbTypeHandler[pd.DataFrame]):
    """Writes a frame with COPY ... FROM STDIN (text format), the fast bulk path, inside the client's transaction."""

    def handle_output(
        self, context: dg.OutputContext, table_slice: TableSlice, obj: pd.DataFrame, connection: "PgConnection"
    ) -> dict[str, Any]:
        if not obj.empty:
            table = _qualified(_table_name(table_slice))
            columns = ", ".join(f"{_quoted(str(c))} {_postgres_type(str(c), t)}" for c, t in obj.dtypes.items())
            buffer = io.StringIO(copy_text(obj))
            names = ", ".join(_quoted(str(column)) for column in obj.columns)
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")
                cursor.copy_expert(f"COPY {table} ({names}) FROM STDIN", buffer)
        return _output_metadata(context, obj, "postgres")

    def load_input(self, context: dg.InputContext, table_slice: TableSlice, connection: "PgConnection") -> pd.DataFrame:
        where, parameters = _slice_filter(table_slice.partition_dimensions, "%s")
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT * FROM {_qualified(_table_name(table_slice))} WHERE {where}", parameters)
            columns = [description.name for description in cursor.description or ()]
            return _typed_like_frames(pd.DataFrame.from_records(cursor.fetchall(), columns=columns))

    @property
    def supported_types(self) -> Sequence[type[object]]:
        return [pd.DataFrame]
