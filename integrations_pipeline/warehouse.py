"""The warehouse: DuckDB file (the default) or PostgreSQL, written by merging what a sync fetched.

A sync streams its chunks into a staging table (`Warehouse.staging`), then `Staging.merge` runs ONE transaction
that compares the fetched rows with the partition by primary key and touches only what changed: new keys are
inserted, changed rows replaced (deleted by row id, inserted from staging), and (full resyncs only) rows of the
partition the provider no longer returned are flagged `is_deleted`; a connection's first full sync just inserts.
The same transaction carries those changes on to `unified.<entity>`. Nothing reads the partition into pandas:
memory stays bounded by the chunk size however large the partition is.

DuckDB stages into Parquet files of its own (a run holds the warehouse file's lock only for the merge, not while
it pages through a provider) and reads them through a view for the merge; PostgreSQL COPYs into a temporary table
of the merge's own session. The SQL is the same on both (no constraint needed: tables written before keys existed
keep working). An incremental merge looks up the staged keys only (a semi-join on staging: PostgreSQL probes the
key index, DuckDB filters its scan by the keys), and DuckDB's memory is capped so large merges spill.
`open_warehouse(settings)` picks the backend from configuration only: `INTEGRATIONS_WAREHOUSE_URL` set to a
`postgresql://` URL selects PostgreSQL, otherwise the DuckDB file at `INTEGRATIONS_WAREHOUSE_PATH`.

Values are always bound parameters; table and column names come from the registry and are quoted.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd

from integrations_pipeline.frames import TIMESTAMP_DTYPE
from integrations_pipeline.mapping import (
    EPOCH_MILLISECONDS_FROM,
    FALSE_TEXTS,
    TRUE_TEXTS,
    FieldRule,
    PlannedRule,
    SourceFields,
    Transform,
    ValueType,
    plan,
)
from integrations_pipeline.records import RAW_COLUMN
from integrations_pipeline.replica import REPLICA_MIN_INTERVAL_S, connect_for_writing, refresh_read_replica
from integrations_pipeline.settings import Settings

if TYPE_CHECKING:  # psycopg2 is imported where PostgreSQL is used: a DuckDB run process never loads it (5 MiB)
    from psycopg2.extensions import connection as PgConnection

PREVIEW_ROWS = 10
UNIFIED_SCHEMA = "unified"
MAPPED_COLUMN = "mapped"
# Which mapping each connection's unified rows were shaped with: a different one rewrites them (only them).
APPLIED_MAPPINGS = f"{UNIFIED_SCHEMA}.applied_mappings"
PRIMARY_KEY = ("connection_id", "source_id")
SEQUENCE = "_seq"  # staging rows in fetch order: of two rows with one key, the later wins
# After an incremental merge of at most this many fetched keys, the partition's summary looks for duplicate keys and
# takes its preview among those keys only (`source_id IN (...)`), not by grouping and sorting the whole partition.
SUMMARY_KEYS_MAX = 20_000
# DuckDB's buffer memory per database: beyond it, temporary results spill to `<file>.tmp`, so a merge's peak memory
# does not grow with the partition (docs/benchmarks.md). Insertion order need not be kept: reads order by key.
# Checkpoints do not vacuum (rewrite row groups that lost rows, merge small ones) unless a merge asks for it: a
# vacuum rewrites whole row groups (up to 122,880 rows each, raw records included) for a few replaced rows.
DUCKDB_SETTINGS = {"memory_limit": "'64MB'", "preserve_insertion_order": "false", "max_vacuum_tasks": "0"}
# A merge lets its checkpoint vacuum (DuckDB's default task limit) when it was a full resync, or when a table it
# wrote holds at least this many replaced rows not yet vacuumed: the rewrites are paid once per so many changes.
VACUUM_BACKLOG_ROWS = 1_000
VACUUM_TASKS = 100

Window = tuple[datetime, datetime]
Execute = Any  # (sql, parameters) -> list of row tuples, on the open transaction


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _qualified(table: str) -> str:
    """`hubspot.contacts` -> `"hubspot"."contacts"`."""
    return ".".join(_quoted(part) for part in table.split("."))


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def column_kind(column: str) -> str:
    """Records have four kinds of column (records.py, frames.normalize): UTC timestamps, flags, text, and the raw
    record (JSON text in frames, a JSON column in tables)."""
    if column == RAW_COLUMN:
        return "json"
    if column.endswith("_at"):
        return "timestamp"
    return "flag" if column.startswith("is_") else "text"


@dataclass(frozen=True)
class PartitionSlice:
    """The rows of `table` one partition owns: a connection's, within a day window for events."""

    table: str
    connection_id: str
    window: Window | None = None
    day_column: str = "start_at"
    owner_column: str = "connection_id"  # `tenant` for a unified partition

    def where(self, placeholder: str, alias: str = "") -> tuple[str, list[Any]]:
        prefix = f"{alias}." if alias else ""
        clause = f"{prefix}{_quoted(self.owner_column)} = {placeholder}"
        parameters: list[Any] = [self.connection_id]
        if self.window is not None:
            column = prefix + _quoted(self.day_column)
            clause += f" AND {column} >= {placeholder} AND {column} < {placeholder}"
            parameters += list(self.window)
        return clause, parameters


@dataclass(frozen=True)
class UnifiedFollow:
    """Where a provider's changes go on to: `unified.<entity>`, shaped by the tenant's mapping for the provider."""

    entity: str
    tenant: str
    provider: str
    rules: Mapping[str, FieldRule]
    fields: SourceFields | None = None  # the connection's catalog: catalog names read the raw record at their path

    @property
    def table(self) -> str:
        return f"{UNIFIED_SCHEMA}.{self.entity}"

    @property
    def fingerprint(self) -> str:
        rules = {target: rule.model_dump(mode="json") for target, rule in sorted(self.rules.items())}
        return hashlib.sha256(json.dumps(rules, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class MergeTarget:
    slice: PartitionSlice
    columns: tuple[str, ...]
    key: tuple[str, ...]
    full: bool  # a full resync: rows of the slice that were not fetched are flagged deleted
    unified: UnifiedFollow | None = None
    # Child rows (event attendees) of an incremental merge: (parent column, the parents re-fetched). The merge reads
    # those parents' rows, and flags the ones that were not fetched again deleted (an attendee removed from an event).
    parents: tuple[str, frozenset[str]] | None = None
    # Summarize the partition in the merge's own transaction (`WriteCounts.summary`): a DuckDB file opened once per
    # partition, not once for the write and again for its summary.
    summary: SummaryRequest | None = None


@dataclass(frozen=True)
class SummaryRequest:
    required: tuple[str, ...]  # columns that must not be null
    written_keys: Collection[str] | None = None  # an incremental merge's fetched keys: the summary looks at those


@dataclass(frozen=True)
class WriteCounts:
    inserted: int = 0
    updated: int = 0
    deleted: int = 0  # rows that became deleted: flagged by the provider, or no longer returned by a full resync
    unified: int = 0  # rows written to the unified table
    unified_rewritten: bool = False  # the mapping changed, so the connection's unified rows were all rewritten
    summary: PartitionSummary | None = None  # as the target asked (`MergeTarget.summary`)

    @property
    def written(self) -> int:
        return self.inserted + self.updated + self.deleted


@dataclass(frozen=True)
class PartitionSummary:
    """What the UI shows of a partition after a write, all computed in SQL on the partition."""

    row_count: int
    column_types: dict[str, str]
    preview: pd.DataFrame
    duplicate_keys: int
    duplicate_examples: list[str]
    missing_by_column: dict[str, int] = field(default_factory=dict)


class WarehouseWriteError(Exception):
    """The warehouse refused a merge: nothing of it was written (the transaction rolled back)."""


# --- SQL shared by both backends -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Dialect:
    placeholder: str
    types: Mapping[str, str]  # column kind -> SQL type
    temp_table: str  # CREATE <this> name AS ...
    temp_view: str  # CREATE <this> name AS ...
    json_object: str  # the function building a JSON object from key, value pairs
    any_of: str  # `column` is one of a list bound as one parameter (one plan, however many values)
    # `column` is one of a query's values (staged keys, row ids): PostgreSQL probes its key index (or fetches the row
    # ids) with the query's array (a semi-join would be planned as a merge join over the connection's whole index
    # range); DuckDB filters its scan with a hash (row ids: it skips the row groups holding none of them)
    in_query: str
    row_id: str  # a row's physical id, stable within the transaction that read it
    # Guarded casts of text: NULL where the text cannot be read as that type (as mapping.cast answers None).
    try_cast: str  # "{expr}", "{type}" -> SQL
    # A UTC timestamp as ISO 8601 text as Python writes it (microseconds only when there are any), so both
    # backends put the same value into the mapped JSON as the preview shows.
    iso_timestamp: str  # "{expr}", "{fraction}" -> SQL
    microseconds: str  # the format's fraction of a second
    # A path into the raw JSON column: its value as text (objects and arrays as JSON text), and as JSON.
    raw_text: str  # "{raw}", "{path}" -> SQL
    raw_json: str  # "{raw}", "{path}" -> SQL
    json_path: Any  # (keys) -> the path literal those take
    to_json: str  # "{expr}" -> that value as JSON
    is_scalar: str  # "{raw}", "{path}" -> the value there is not an object or a list

    # How a kind of column is stored in the warehouse's tables (not in staging, which is read once)
    storage: Mapping[str, str]

    def column_definitions(self, columns: Sequence[str], stored: bool = False) -> str:
        """Column names and types; `stored` adds how the warehouse's tables keep each kind."""
        storage = self.storage if stored else {}
        return ", ".join(
            f"{_quoted(column)} {self.types[column_kind(column)]}{storage.get(column_kind(column), '')}"
            for column in columns
        )

    def mapped(
        self, rules: Mapping[str, FieldRule], columns: Sequence[str], alias: str, fields: SourceFields | None = None
    ) -> str:
        """The `mapped` JSON text of one row: each target's value, cast in SQL with `mapping.cast`'s semantics."""
        if not rules:
            return "'{}'"
        pairs = []
        for rule in plan(rules, fields):
            pairs += [_literal(rule.target), self._json_value(self._planned_value(rule, columns, alias), rule)]
        return f"CAST({self.json_object}({', '.join(pairs)}) AS VARCHAR)"

    def _planned_value(self, rule: PlannedRule, columns: Sequence[str], alias: str) -> str:
        if rule.column is not None and rule.column in columns:
            value = self._cast(f"{alias}.{_quoted(rule.column)}", column_kind(rule.column), rule.transform)
        elif rule.column is None and rule.raw_path and RAW_COLUMN in columns:
            raw, path = f"{alias}.{_quoted(RAW_COLUMN)}", self.json_path(rule.raw_path)
            text = self.raw_text.format(raw=raw, path=path)
            if rule.transform != Transform.NONE:  # objects and lists cast to nothing, as in mapping.cast
                scalar = f"CASE WHEN {self.is_scalar.format(raw=raw, path=path)} THEN {text} END"
                value = self._cast(scalar, "text", rule.transform)
            else:  # the value as the provider sent it (a number stays a number), and a default as JSON too
                as_json = self.raw_json.format(raw=raw, path=path)
                value = f"CASE WHEN NULLIF(trim({text}), '') IS NOT NULL THEN {as_json} END"
                if rule.default is not None:
                    default = self._default(rule.default)
                    default = f"CAST({default} AS VARCHAR)" if isinstance(rule.default, str) else default
                    return f"COALESCE({value}, {self.to_json.format(expr=default)})"
        else:  # the source names nothing this table holds
            value = self._null(rule.transform)
        return value if rule.default is None else f"COALESCE({value}, {self._default(rule.default)})"

    def _cast(self, column: str, kind: str, transform: Transform) -> str:
        text = f"NULLIF(trim(CAST({column} AS VARCHAR)), '')"  # blank text is missing, as mapping.is_missing says
        if transform == Transform.NONE:
            return f"CASE WHEN {text} IS NOT NULL THEN {column} END" if kind == "text" else column
        if transform in _TEXT_FUNCTIONS:
            if kind != "text":
                return self._null(transform)
            return f"CASE WHEN {text} IS NOT NULL THEN {_TEXT_FUNCTIONS[transform]}({column}) END"
        if transform == Transform.TO_NUMBER:
            number = self._finite(self.try_cast.format(expr=text, type="DOUBLE PRECISION"))
            return number if kind == "text" else self._null(transform)
        if transform == Transform.TO_BOOL:
            if kind == "flag":
                return column
            if kind == "timestamp":
                return self._null(transform)
            lowered = f"lower({text})"
            truthy, falsy = _literals(TRUE_TEXTS), _literals(FALSE_TEXTS)
            return f"CASE WHEN {lowered} IN ({truthy}) THEN TRUE WHEN {lowered} IN ({falsy}) THEN FALSE END"
        if kind == "flag":
            return self._null(transform)
        moment = column if kind == "timestamp" else self._timestamp_of_text(text)
        if transform == Transform.TO_TIMESTAMP:
            return moment
        # to_date: a calendar date written as one is kept as it is; anything else is the UTC day of its moment.
        utc_day = f"CAST({moment} AT TIME ZONE 'UTC' AS DATE)"
        if kind != "text":
            return utc_day
        as_date = self.try_cast.format(expr=text, type="DATE")
        return f"CASE WHEN length({text}) = 10 THEN {as_date} ELSE {utc_day} END"

    def _null(self, transform: Transform) -> str:
        """A NULL of the type the cast yields (an untyped NULL leaves the backends' function overloads ambiguous)."""
        types = {Transform.TO_NUMBER: "DOUBLE PRECISION", Transform.TO_BOOL: "BOOLEAN", Transform.TO_DATE: "DATE"}
        types[Transform.TO_TIMESTAMP] = self.types["timestamp"]
        return f"CAST(NULL AS {types.get(transform, 'VARCHAR')})"

    def _timestamp_of_text(self, text: str) -> str:
        """Epoch seconds or milliseconds (HubSpot), or an ISO 8601 text (naive = UTC)."""
        number = self._finite(self.try_cast.format(expr=text, type="DOUBLE PRECISION"))
        epoch = (
            f"to_timestamp(CASE WHEN abs({number}) >= {EPOCH_MILLISECONDS_FROM} THEN {number} / 1000 ELSE {number} END)"
        )
        iso = self.try_cast.format(expr=text, type=self.types["timestamp"])
        return f"CASE WHEN {number} IS NOT NULL THEN {epoch} ELSE {iso} END"

    @staticmethod
    def _finite(number: str) -> str:
        infinite = ", ".join(f"'{value}'::DOUBLE PRECISION" for value in ("NaN", "Infinity", "-Infinity"))
        return f"CASE WHEN {number} NOT IN ({infinite}) THEN {number} END"

    def _default(self, value: Any) -> str:
        if isinstance(value, bool):
            return "TRUE" if value else "FALSE"
        if isinstance(value, int | float):
            return repr(float(value))
        if isinstance(value, datetime):
            return f"CAST({_literal(value.isoformat())} AS {self.types['timestamp']})"
        if isinstance(value, date):
            return f"CAST({_literal(value.isoformat())} AS DATE)"
        return _literal(str(value))

    def _json_value(self, value: str, rule: PlannedRule) -> str:
        """Numbers and booleans stay JSON numbers and booleans; moments and days become ISO 8601 text."""
        if rule.column is None and rule.transform == Transform.NONE:
            return value  # a raw value, already JSON
        if rule.output == ValueType.TIMESTAMP or (
            rule.output == ValueType.JSON and rule.column is not None and column_kind(rule.column) == "timestamp"
        ):
            utc = f"({value}) AT TIME ZONE 'UTC'"
            whole, fractional = (self.iso_timestamp.format(expr=utc, fraction=f) for f in ("", self.microseconds))
            return f"CASE WHEN date_trunc('second', {utc}) = {utc} THEN {whole} ELSE {fractional} END"
        if rule.output == ValueType.DATE:
            return f"CAST({value} AS VARCHAR)"
        return value


_TEXT_FUNCTIONS = {Transform.UPPERCASE: "upper", Transform.LOWERCASE: "lower", Transform.TRIM: "trim"}


def _literals(values: frozenset[str]) -> str:
    return ", ".join(_literal(value) for value in sorted(values))


def _duckdb_json_path(keys: Sequence[str]) -> str:
    """`$."properties"."lead_score"`; a whole number indexes a list (`[0]`), as `mapping._walk` reads it."""
    steps = (f"[{key}]" if key.isdigit() else '."' + key.replace('"', '\\"') + '"' for key in keys)
    return _literal("$" + "".join(steps))


def _postgres_json_path(keys: Sequence[str]) -> str:
    """`'{"properties","lead_score"}'`: a text array, whose whole numbers index lists."""
    return _literal("{" + ",".join('"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"' for key in keys) + "}")


DUCKDB = _Dialect(
    "?",
    {"timestamp": "TIMESTAMPTZ", "flag": "BOOLEAN", "text": "VARCHAR", "json": "JSON"},
    "OR REPLACE TEMP TABLE",
    "OR REPLACE TEMP VIEW",
    "json_object",
    any_of="{column} IN (SELECT unnest(?::VARCHAR[]))",
    in_query="{column} IN ({query})",
    row_id="rowid",
    try_cast="TRY_CAST({expr} AS {type})",
    iso_timestamp="strftime({expr}, '%Y-%m-%dT%H:%M:%S{fraction}+00:00')",
    microseconds=".%f",
    raw_text="json_extract_string({raw}, {path})",
    raw_json="json_extract({raw}, {path})",
    json_path=_duckdb_json_path,
    to_json="to_json({expr})",
    is_scalar="json_type({raw}, {path}) NOT IN ('OBJECT', 'ARRAY')",
    # Raw records compressed with zstd, not DuckDB's default choice (dictionary + FSST): a third of the size, and
    # several times less CPU whenever a checkpoint rewrites a row group (a full sync, the row group a merge
    # deleted rows from); the replica copies a smaller file (docs/benchmarks.md)
    storage={"json": " USING COMPRESSION zstd"},
)
POSTGRES = _Dialect(
    "%s",
    {"timestamp": "timestamptz", "flag": "boolean", "text": "text", "json": "jsonb"},
    "TEMP TABLE",
    "OR REPLACE TEMP VIEW",
    "jsonb_build_object",
    any_of="{column} = ANY(%s)",
    in_query="{column} = ANY(ARRAY({query}))",
    row_id="ctid",
    # pg_input_is_valid (PostgreSQL 16+) tests a cast without raising, which PostgreSQL's CAST cannot.
    try_cast="CASE WHEN pg_input_is_valid({expr}, '{type}') THEN CAST({expr} AS {type}) END",
    iso_timestamp='to_char({expr}, \'YYYY-MM-DD"T"HH24:MI:SS{fraction}"+00:00"\')',
    microseconds=".US",
    raw_text="({raw} #>> {path})",
    raw_json="({raw} #> {path})",
    json_path=_postgres_json_path,
    to_json="to_jsonb({expr})",
    is_scalar="jsonb_typeof({raw} #> {path}) NOT IN ('object', 'array')",
    storage={},  # jsonb is TOASTed and compressed by PostgreSQL itself
)


def unified_columns(entity_columns: Sequence[str]) -> tuple[str, ...]:
    """The raw record stays in the provider table: the tenant's mapping reads what it needs of it into `mapped`."""
    return ("tenant", "provider", *_without_raw(entity_columns), MAPPED_COLUMN)


def _without_raw(columns: Sequence[str]) -> list[str]:
    return [column for column in columns if column != RAW_COLUMN]


def _ensure_table(
    execute: Execute, dialect: _Dialect, table: str, columns: Sequence[str], key: Sequence[str] = PRIMARY_KEY
) -> None:
    """The table with the columns' types (an empty partition still creates it)."""
    execute(f"CREATE SCHEMA IF NOT EXISTS {_quoted(table.split('.')[0])}", [])
    execute(f"CREATE TABLE IF NOT EXISTS {_qualified(table)} ({dialect.column_definitions(columns, stored=True)})", [])
    if RAW_COLUMN in columns:  # tables from before the raw column gain it; their rows hold NULL until synced again
        raw = dialect.column_definitions([RAW_COLUMN], stored=True)
        execute(f"ALTER TABLE {_qualified(table)} ADD COLUMN IF NOT EXISTS {raw}", [])
    if dialect is POSTGRES:  # the key lookup of an incremental merge must not scan every connection's rows
        keys = ", ".join(_quoted(k) for k in key)
        execute(
            f"CREATE INDEX IF NOT EXISTS {_quoted(table.split('.')[1] + '_key')} ON {_qualified(table)} ({keys})", []
        )


# What `changes` says of a key (SQL lists of `_change` values): fetched rows new to the table, or differing from its
# row (which the provider may have flagged deleted); and rows of a full resync's slice (or of re-fetched parents)
# that were not fetched again, which become deleted.
FETCHED = "'inserted', 'updated', 'deleted'"
REPLACED = "'updated', 'deleted'"
VANISHED = "'vanished'"


class _Merge:
    """The statements of one merge, run on an open transaction through `execute(sql, parameters) -> rows`.

    A changed row is replaced, never updated in place: the table's row is deleted by its row id (found while
    comparing) and the fetched row inserted from staging. So `changes` holds keys, row ids and what happened, not
    values: a row's values (its raw record above all) are copied once, from staging to the table, and DuckDB's
    checkpoint never rewrites a row group's column for an update (recompressing 120,000 raw records for one row)."""

    def __init__(self, dialect: _Dialect, target: MergeTarget, staging: str, execute: Execute) -> None:
        self.dialect, self.target, self.staging, self.execute = dialect, target, staging, execute
        self.table = _qualified(target.slice.table)
        self.vanished = 0  # rows not fetched again, flagged deleted
        self.names = ", ".join(_quoted(column) for column in target.columns)
        # The rows of a target table a lookup may match (alias t): for an incremental merge, those of the staged
        # keys, so it reads what it changes, not the partition; for a full resync, which also flags the keys that
        # were not staged, the connection's rows.
        last = _quoted(target.key[-1])
        self.lookup = f"t.connection_id = {dialect.placeholder}"
        self.lookup_parameters: list[Any] = [target.slice.connection_id]
        if target.parents is not None and not target.full:
            self.lookup += " AND " + dialect.any_of.format(column=f"t.{_quoted(target.parents[0])}")
            self.lookup_parameters.append(sorted(target.parents[1]))
        elif not target.full:
            self.lookup += " AND " + dialect.in_query.format(column=f"t.{last}", query=f"SELECT {last} FROM {staging}")

    def _key_match(self, left: str, right: str) -> str:
        return " AND ".join(f"{left}.{_quoted(k)} = {right}.{_quoted(k)}" for k in self.target.key)

    def _changed(self, alias: str, kinds: str) -> str:
        """`alias`'s key is among the changes of these kinds (an SQL list of `_change` values)."""
        return f"EXISTS (SELECT 1 FROM changes c WHERE c._change IN ({kinds}) AND {self._key_match('c', alias)})"

    def _rows_changed(self, kinds: str) -> str:
        """`t` is one of the table's rows `changes` found, of these kinds."""
        query = f"SELECT _row FROM changes WHERE _change IN ({kinds})"
        return self.dialect.in_query.format(column=f"t.{self.dialect.row_id}", query=query)

    def ensure_table(self, table: str, columns: Sequence[str]) -> None:
        _ensure_table(self.execute, self.dialect, table, columns, self.target.key)

    def run(self) -> WriteCounts:
        target, p = self.target, self.dialect.placeholder
        self.ensure_table(target.slice.table, target.columns)
        key = ", ".join(_quoted(k) for k in target.key)
        # fresh: the last staged row per key, as a view (staging is read where it lies, never copied); ranking
        # only when some key was staged twice, which costs a sort of the staged rows
        fresh = f"SELECT {self.names} FROM {self.staging}"
        if self.execute(f"SELECT 1 FROM {self.staging} GROUP BY {key} HAVING count(*) > 1 LIMIT 1", []):
            fresh = (
                f"SELECT {self.names} FROM (SELECT *, row_number() OVER (PARTITION BY {key} ORDER BY {SEQUENCE} "
                f"DESC) AS _rank FROM {self.staging}) ranked WHERE _rank = 1"
            )
        self.execute(f"CREATE {self.dialect.temp_view} fresh AS {fresh}", [])
        first = target.full and not self.execute(
            f"SELECT 1 FROM {self.table} t WHERE t.connection_id = {p} LIMIT 1", [target.slice.connection_id]
        )
        written = self._insert_all() if first else self._replace_changed()
        if target.unified is not None:
            written = self._follow(written, rewrite=first)
        self.execute("DROP VIEW fresh", [])
        if target.summary is not None:
            asked = target.summary
            summary = _summarize(
                self.execute, self.dialect, target.slice, target.key, asked.required, asked.written_keys
            )
            written = replace(written, summary=summary)
        return written

    def _insert_all(self) -> WriteCounts:
        """The connection's first full sync: every fetched row is new, so nothing is compared."""
        self.execute(f"INSERT INTO {self.table} ({self.names}) SELECT {self.names} FROM fresh", [])
        return WriteCounts(inserted=int(self.execute("SELECT count(*) FROM fresh", [])[0][0]))

    def _replace_changed(self) -> WriteCounts:
        """`changes`: the fetched keys that are new or differ (with the table's row id, if any), and for a full
        resync or child rows the rows not fetched again (`vanished`); then the changed rows replaced and the
        vanished ones flagged deleted."""
        target, dialect, p = self.target, self.dialect, self.dialect.placeholder
        last = f"t.{_quoted(target.key[-1])}"
        differs = " OR ".join(f"f.{_quoted(c)} IS DISTINCT FROM t.{_quoted(c)}" for c in target.columns)
        changes = (
            f"SELECT {', '.join(f'f.{_quoted(k)}' for k in target.key)}, t._row, CASE WHEN {last} IS NULL "
            "THEN 'inserted' WHEN f.is_deleted AND NOT coalesce(t.is_deleted, FALSE) THEN 'deleted' ELSE 'updated' "
            f"END AS _change FROM fresh f LEFT JOIN (SELECT t.{dialect.row_id} AS _row, t.* FROM {self.table} t "
            f"WHERE {self.lookup}) t ON {self._key_match('f', 't')} WHERE {last} IS NULL OR {differs}"
        )
        parameters = list(self.lookup_parameters)
        if target.full or target.parents is not None:
            # not fetched again: the slice's rows (full), or the re-fetched parents' rows (child rows)
            where, slice_parameters = (
                target.slice.where(p, "t") if target.full else (self.lookup, self.lookup_parameters)
            )
            changes += (
                f" UNION ALL SELECT {', '.join(f't.{_quoted(k)}' for k in target.key)}, t.{dialect.row_id}, "
                f"'vanished' FROM {self.table} t WHERE {where} AND NOT t.is_deleted "
                f"AND NOT EXISTS (SELECT 1 FROM fresh f WHERE {self._key_match('f', 't')})"
            )
            parameters += slice_parameters
        self.execute(f"CREATE {dialect.temp_table} changes AS {changes}", parameters)
        self.execute(f"DELETE FROM {self.table} t WHERE {self._rows_changed(REPLACED)}", [])
        self.execute(
            f"INSERT INTO {self.table} ({self.names}) SELECT {self.names} FROM fresh f "
            f"WHERE {self._changed('f', FETCHED)}",
            [],
        )
        counts = dict(self.execute("SELECT _change, count(*) FROM changes GROUP BY _change", []))
        self.vanished = int(counts.get("vanished", 0))
        if self.vanished:
            self.execute(f"UPDATE {self.table} t SET is_deleted = TRUE WHERE {self._rows_changed(VANISHED)}", [])
        return WriteCounts(
            counts.get("inserted", 0), counts.get("updated", 0), counts.get("deleted", 0) + self.vanished
        )

    def _unified_values(self, follow: UnifiedFollow, alias: str) -> list[str]:
        """tenant and provider (bound), the entity's columns, the mapped JSON."""
        p, columns = self.dialect.placeholder, self.target.columns
        mapped = self.dialect.mapped(follow.rules, columns, alias, follow.fields)
        return [p, p, *(f"{alias}.{_quoted(c)}" for c in _without_raw(columns)), mapped]

    def _follow(self, written: WriteCounts, rewrite: bool) -> WriteCounts:
        """The changed rows into `unified.<entity>`, replaced as in the provider table (the unified table may lack
        any of them: a replacement inserts it whatever it held); all of the connection's rows there on its first
        sync, or when its mapping changed (or they were never shaped: a table from before this path)."""
        follow, p = self.target.unified, self.dialect.placeholder
        assert follow is not None
        columns = unified_columns(self.target.columns)
        self.ensure_table(follow.table, columns)
        _ensure_table(
            self.execute,
            self.dialect,
            APPLIED_MAPPINGS,
            ("connection_id", "entity", "fingerprint"),
            ("connection_id", "entity"),
        )
        connection_id, owner = self.target.slice.connection_id, [self.target.slice.connection_id, follow.entity]
        unified, tenant_provider = _qualified(follow.table), [follow.tenant, follow.provider]
        names = ", ".join(_quoted(c) for c in columns)
        applied = _qualified(APPLIED_MAPPINGS)
        fingerprint = self.execute(
            f"SELECT fingerprint FROM {applied} WHERE connection_id = {p} AND entity = {p}", owner
        )
        if not rewrite and fingerprint == [(follow.fingerprint,)]:
            kinds = f"{FETCHED}, {VANISHED}"
            self.execute(
                f"DELETE FROM {unified} t WHERE {self.lookup} AND {self._changed('t', kinds)}", self.lookup_parameters
            )
            self.execute(
                f"INSERT INTO {unified} ({names}) SELECT {', '.join(self._unified_values(follow, 'f'))} "
                f"FROM fresh f WHERE {self._changed('f', FETCHED)}",
                tenant_provider,
            )
            if self.vanished:  # flagged in the provider table: their unified rows are read from there
                self.execute(
                    f"INSERT INTO {unified} ({names}) SELECT {', '.join(self._unified_values(follow, 't'))} "
                    f"FROM {self.table} t WHERE {self.lookup} AND {self._changed('t', VANISHED)}",
                    [*tenant_provider, *self.lookup_parameters],
                )
            return WriteCounts(written.inserted, written.updated, written.deleted, unified=written.written)
        self.execute(f"DELETE FROM {unified} WHERE connection_id = {p}", [connection_id])
        self.execute(
            f"INSERT INTO {unified} ({names}) SELECT {', '.join(self._unified_values(follow, 't'))} "
            f"FROM {self.table} t WHERE t.connection_id = {p}",
            [*tenant_provider, connection_id],
        )
        self.execute(f"DELETE FROM {applied} WHERE connection_id = {p} AND entity = {p}", owner)
        self.execute(f"INSERT INTO {applied} VALUES ({p}, {p}, {p})", [*owner, follow.fingerprint])
        rows = self.execute(f"SELECT count(*) FROM {unified} WHERE connection_id = {p}", [connection_id])[0][0]
        return WriteCounts(written.inserted, written.updated, written.deleted, int(rows), unified_rewritten=True)


@dataclass(frozen=True)
class UnifiedSource:
    """One connection's rows for a unified rebuild: its provider table and the tenant's mapping for them."""

    table: str
    columns: tuple[str, ...]
    connection_id: str
    follow: UnifiedFollow
    key: tuple[str, ...] = PRIMARY_KEY  # the provider table's key (attendees: connection, event, email)


def _summarize(
    execute: Execute,
    dialect: _Dialect,
    part: PartitionSlice,
    key: Sequence[str],
    required: Sequence[str],
    written_keys: Collection[str] | None,
) -> PartitionSummary:
    """The partition's row count; missing values, duplicate keys and the preview over the whole partition, or over
    the keys an incremental merge fetched when given (it writes only those rows and inserts only keys the partition
    lacked, so only they can have become duplicates or lost a value): a sync of 10 changes then costs no grouping,
    sort or column sums over a million rows."""
    p, table = dialect.placeholder, _qualified(part.table)
    where, parameters = part.where(p)
    schema, name = part.table.split(".")
    types = execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        f"WHERE table_schema = {p} AND table_name = {p} ORDER BY ordinal_position",
        [schema, name],
    )
    nulls = ", ".join(f"sum(CASE WHEN {_quoted(c)} IS NULL THEN 1 ELSE 0 END)" for c in required)
    # Everything but the raw record: a preview cell of raw JSON tells a person nothing, and reading raw records
    # means decompressing their whole segments (two thirds of this summary's time at a million rows).
    names = _without_raw([column for column, _ in types])
    listed = ", ".join(_quoted(column) for column in names)
    if written_keys is None:
        row_count, *missing = execute(f"SELECT count(*), {nulls} FROM {table} WHERE {where}", parameters)[0]
        rows, parameters = f"{table} WHERE {where}", parameters
    else:  # a bare count is cheap; the written rows are read once (one lookup of the key column), then summarized
        row_count = execute(f"SELECT count(*) FROM {table} WHERE {where}", parameters)[0][0]
        where += " AND " + dialect.any_of.format(column=_quoted(key[-1]))
        execute(
            f"CREATE {dialect.temp_table} written AS SELECT {listed} FROM {table} WHERE {where}",
            [*parameters, sorted(written_keys)],
        )
        rows, parameters = "written", []
        missing = list(execute(f"SELECT {nulls} FROM {rows}", parameters)[0])
    keys = ", ".join(_quoted(k) for k in key)
    duplicates = execute(
        f"SELECT {_quoted(key[-1])} FROM {rows} GROUP BY {keys} HAVING count(*) > 1 ORDER BY {keys}", parameters
    )
    preview = execute(f"SELECT {listed} FROM {rows} ORDER BY {keys} LIMIT {PREVIEW_ROWS}", parameters)
    if written_keys is not None:
        execute("DROP TABLE written", [])
    return PartitionSummary(
        row_count=int(row_count),
        column_types=dict(types),
        preview=pd.DataFrame.from_records(preview, columns=names),
        duplicate_keys=len(duplicates),
        duplicate_examples=[str(row[0]) for row in duplicates[:5]],
        missing_by_column={column: int(count or 0) for column, count in zip(required, missing, strict=True)},
    )


def _rebuild_unified(
    execute: Execute, dialect: _Dialect, entity: str, tenant: str, window: Window | None, sources: list[UnifiedSource]
) -> int:
    """Replace a tenant's unified partition (one day of it, for events) with its live connections' rows."""
    p, table = dialect.placeholder, f"{UNIFIED_SCHEMA}.{entity}"
    if not sources:
        return 0
    columns, key = unified_columns(sources[0].columns), sources[0].key
    _ensure_table(execute, dialect, table, columns, key)
    where, parameters = PartitionSlice(table, tenant, window, owner_column="tenant").where(p)
    execute(f"DELETE FROM {_qualified(table)} WHERE {where}", parameters)
    names = ", ".join(_quoted(c) for c in columns)
    for source in sources:
        _ensure_table(execute, dialect, source.table, source.columns, source.key)
        values = [p, p, *(f"t.{_quoted(c)}" for c in _without_raw(source.columns))]
        values.append(dialect.mapped(source.follow.rules, source.columns, "t", source.follow.fields))
        source_where, source_parameters = PartitionSlice(source.table, source.connection_id, window).where(p, "t")
        execute(
            f"INSERT INTO {_qualified(table)} ({names}) SELECT {', '.join(values)} "
            f"FROM {_qualified(source.table)} t WHERE {source_where}",
            [tenant, source.follow.provider, *source_parameters],
        )
    return int(execute(f"SELECT count(*) FROM {_qualified(table)} WHERE {where}", parameters)[0][0])


class Staging(ABC):
    """A sync's fetched rows, before the merge. `clear` starts over (a cursor expired part-way)."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = tuple(columns)
        self.rows = 0

    def append(self, frame: pd.DataFrame) -> None:
        if not frame.empty:
            self._append(frame.assign(**{SEQUENCE: range(self.rows, self.rows + len(frame))}))
            self.rows += len(frame)

    @abstractmethod
    def _append(self, frame: pd.DataFrame) -> None: ...

    @abstractmethod
    def clear(self) -> None: ...

    @abstractmethod
    def merge(self, target: MergeTarget) -> WriteCounts:
        """The one transaction: the changes into the partition (and on to the unified table), or nothing."""


class Warehouse(ABC):
    kind: str
    name: str  # what the UI may show: never a password
    dialect: _Dialect
    existing_tables: set[str]  # "schema.table" names seen to exist (`table_exists`)

    @abstractmethod
    def transaction(self) -> Any:
        """A context manager giving `execute(sql, parameters) -> rows` on one transaction, committed at the end."""

    @abstractmethod
    def staging(self, columns: Sequence[str]) -> Any:
        """A context manager giving a `Staging` for one partition's write."""

    def publish(self) -> None:  # noqa: B027 (a hook: only the DuckDB file has a read replica to bring up to date)
        """Make every write of this process visible to analysts (the end of a run). PostgreSQL: they already are."""

    def table_exists(self, table: str) -> bool:
        """Asked of the database until the table is seen; then remembered, as nothing here drops a table: a run
        pays one lookup per table, not one per partition (a DuckDB lookup opens the warehouse file)."""
        if table in self.existing_tables:
            return True
        schema, name = table.split(".")
        p = self.dialect.placeholder
        with self.transaction() as execute:
            rows = execute(
                f"SELECT count(*) FROM information_schema.tables WHERE table_schema = {p} AND table_name = {p}",
                [schema, name],
            )
        if rows[0][0]:
            self.existing_tables.add(table)
        return bool(rows[0][0])

    def summarize(
        self,
        part: PartitionSlice,
        key: Sequence[str],
        required: Sequence[str],
        written_keys: Collection[str] | None = None,
    ) -> PartitionSummary:
        with self.transaction() as execute:
            return _summarize(execute, self.dialect, part, key, required, written_keys)

    def rebuild_unified(
        self,
        entity: str,
        tenant: str,
        window: Window | None,
        sources: list[UnifiedSource],
        children: Mapping[str, list[UnifiedSource]] | None = None,
    ) -> int:
        """Rebuild the tenant's unified partition of `entity` and, in the same transaction, of each child table
        (events: `event_attendees`) from its own sources; answers the entity's row count."""
        with self.transaction() as execute:
            for child, child_sources in (children or {}).items():
                _rebuild_unified(execute, self.dialect, child, tenant, window, child_sources)
            return _rebuild_unified(execute, self.dialect, entity, tenant, window, sources)

    def read(
        self, table: str, connection_ids: list[str], window: Window | None, day_column: str
    ) -> pd.DataFrame | None:
        """The rows of these connections (within the window, if any) in key order, or None when the table does not
        exist: for tests and comparisons, never on the sync path."""
        if not self.table_exists(table):
            return None
        p = self.dialect.placeholder
        where = f"connection_id IN ({', '.join(p for _ in connection_ids) or 'NULL'})"
        parameters: list[Any] = list(connection_ids)
        if window is not None:
            where += f" AND {_quoted(day_column)} >= {p} AND {_quoted(day_column)} < {p}"
            parameters += list(window)
        with self.transaction() as execute:
            names = [
                c
                for c, _ in execute(
                    f"SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = {p} "
                    f"AND table_name = {p} ORDER BY ordinal_position",
                    table.split("."),
                )
            ]
            # key order: (connection_id, source_id), or (connection_id, event_source_id, email) for attendees
            order = "connection_id, source_id" if "source_id" in names else "connection_id, event_source_id, email"
            rows = execute(f"SELECT * FROM {_qualified(table)} WHERE {where} ORDER BY {order}", parameters)
        return _typed_like_frames(pd.DataFrame.from_records(rows, columns=names))


def open_warehouse(settings: Settings) -> Warehouse:
    if settings.warehouse_url is not None:
        return PostgresWarehouse(settings.warehouse_url.get_secret_value())
    return DuckDbWarehouse(settings.warehouse_path)


def _canonical_json(value: Any) -> str:
    return json.dumps(json.loads(value) if isinstance(value, str) else value, sort_keys=True)


def _typed_like_frames(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows read back with the dtypes frames.normalize gives (timestamps as UTC microseconds, text as object); raw
    records as canonical JSON text (sorted keys), since PostgreSQL's jsonb keeps no key order of its own."""
    for column in frame.columns:
        if column_kind(column) == "json":
            frame[column] = [None if value is None else _canonical_json(value) for value in frame[column]]
        elif column_kind(column) == "timestamp":
            frame[column] = pd.to_datetime(frame[column], utc=True).astype(TIMESTAMP_DTYPE)
        elif column_kind(column) == "flag":
            frame[column] = frame[column].astype(bool)
    return frame


# --- DuckDB (the embedded default) -----------------------------------------------------------------------------

# One process writes a DuckDB file through one database instance: its merges take turns (DDL from two threads
# at once would conflict in the catalog).
_DUCKDB_MERGES: dict[str, threading.Lock] = {}
_DUCKDB_MERGES_GUARD = threading.Lock()


def _bounded(connection: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    for name, value in DUCKDB_SETTINGS.items():
        connection.execute(f"SET {name} = {value}")
    return connection


def _duckdb_executor(connection: duckdb.DuckDBPyConnection) -> Execute:
    return lambda sql, parameters: connection.execute(sql, parameters).fetchall()


class DuckDbWarehouse(Warehouse):
    kind = "duckdb"
    dialect = DUCKDB

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)
        self.unpublished = False  # a merge of this process left its commit out of the read replica
        self.existing_tables = set()
        with _DUCKDB_MERGES_GUARD:
            self.merges = _DUCKDB_MERGES.setdefault(str(path.resolve()), threading.Lock())

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB file admits one writing process at a time: wait for the lock, a bounded time (replica.py),
        then cap the connection's memory (_bounded)."""
        # The same configuration as Dagster's DuckDB client: one process may not open a file with two.
        return _bounded(connect_for_writing(self.path, config={"custom_user_agent": "dagster"}))

    @contextmanager
    def transaction(self) -> Iterator[Execute]:
        with self.connect() as connection:
            connection.begin()
            try:
                yield _duckdb_executor(connection)
            except BaseException:
                connection.rollback()
                raise
            connection.commit()
            refresh_read_replica(connection, self.path)  # analysts query the replica (replica.py)

    def publish(self) -> None:
        """Bring the read replica up to this process's last merge (the end of a run)."""
        if self.unpublished:
            with self.merges, self.connect() as connection:
                self.unpublished = not refresh_read_replica(connection, self.path)

    @contextmanager
    def staging(self, columns: Sequence[str]) -> Iterator[Staging]:
        staging = _DuckDbStaging(self, columns)
        try:
            yield staging
        finally:
            staging.close()


_STAGING_DATABASE: duckdb.DuckDBPyConnection | None = None
_STAGING_GUARD = threading.Lock()


def _staging_cursor() -> duckdb.DuckDBPyConnection:
    """A connection of its own to the process's one in-memory DuckDB database, which only turns pandas chunks into
    Parquet files: opening a database per staging cost a tiny sync more CPU than its merge (docs/benchmarks.md).
    Its memory cap is four times a warehouse connection's, as up to INTEGRATIONS_SYNC_CONCURRENCY stagings share
    it (a chunk streams through COPY; the cap bounds, it reserves nothing)."""
    global _STAGING_DATABASE
    with _STAGING_GUARD:
        if _STAGING_DATABASE is None:
            _STAGING_DATABASE = _bounded(duckdb.connect())
            _STAGING_DATABASE.execute("SET memory_limit = '256MB'")
        return _STAGING_DATABASE.cursor()


class _DuckDbStaging(Staging):
    """Parquet files of its own next to the warehouse, one per chunk: written while the provider is paged (the
    warehouse file stays free for other runs), read by the merge as a view, then removed. Files, not a DuckDB
    database: a chunk is written once and read once, so a database's buffering, checkpoint and fsync buy nothing
    (they were half the CPU of staging raw records, docs/benchmarks.md). Written uncompressed, for the same reason."""

    def __init__(self, warehouse: DuckDbWarehouse, columns: Sequence[str]) -> None:
        super().__init__(columns)
        self.warehouse = warehouse
        self.alias = f"staging_{uuid.uuid4().hex}"
        self.directory = warehouse.path.parent / "staging" / self.alias
        self.directory.mkdir(parents=True)
        self.files: list[Path] = []
        self.connection: duckdb.DuckDBPyConnection | None = _staging_cursor()
        # the staging table's types, whatever pandas made of a chunk (a column of None alone has no type)
        self.types = {**{c: DUCKDB.types[column_kind(c)] for c in self.columns}, SEQUENCE: "BIGINT"}
        self.typed = ", ".join(f"CAST({_quoted(c)} AS {kind}) AS {_quoted(c)}" for c, kind in self.types.items())

    def _append(self, frame: pd.DataFrame) -> None:
        assert self.connection is not None
        path = self.directory / f"{len(self.files)}.parquet"
        self.connection.register("chunk", frame)
        self.connection.execute(
            f"COPY (SELECT {self.typed} FROM chunk) TO {_literal(str(path))} (FORMAT parquet, COMPRESSION uncompressed)"
        )
        self.connection.unregister("chunk")
        self.files.append(path)

    def clear(self) -> None:
        self.rows = 0
        for path in self.files:
            path.unlink(missing_ok=True)
        self.files = []

    def _staged(self) -> str:
        """The staged rows as a query: the files, or no rows of the staging table's types."""
        if self.files:
            return f"SELECT * FROM read_parquet([{', '.join(_literal(str(path)) for path in self.files)}])"
        return (
            f"SELECT {', '.join(f'CAST(NULL AS {kind}) AS {_quoted(c)}' for c, kind in self.types.items())} WHERE FALSE"
        )

    def merge(self, target: MergeTarget) -> WriteCounts:
        assert self.connection is not None
        self.connection.close()
        self.connection = None
        with self.warehouse.merges, self.warehouse.connect() as connection:
            connection.execute(f"CREATE TEMP VIEW {self.alias} AS {self._staged()}")
            connection.begin()
            try:
                counts = _Merge(DUCKDB, target, self.alias, _duckdb_executor(connection)).run()
            except duckdb.Error as error:
                connection.rollback()
                raise WarehouseWriteError(f"{type(error).__name__}: {error}") from None
            connection.commit()
            connection.execute(f"SET max_vacuum_tasks = {VACUUM_TASKS if self._vacuum_due(connection, target) else 0}")
            # analysts query the replica (replica.py); a run publishes the rest as it ends (`publish`)
            self.warehouse.unpublished = not refresh_read_replica(
                connection, self.warehouse.path, unless_younger_than_s=REPLICA_MIN_INTERVAL_S
            )
        return counts

    @staticmethod
    def _vacuum_due(connection: duckdb.DuckDBPyConnection, target: MergeTarget) -> bool:
        """A full resync, or a written table holding VACUUM_BACKLOG_ROWS replaced rows: its row ids run past its
        live rows by the rows deleted since its last vacuum (a scan of row ids only, 2 ms per million rows)."""
        tables = [target.slice.table, *([target.unified.table] if target.unified else [])]
        return target.full or any(
            connection.execute(f"SELECT coalesce(max(rowid) + 1 - count(*), 0) FROM {_qualified(table)}").fetchall()[0][
                0
            ]
            >= VACUUM_BACKLOG_ROWS
            for table in tables
        )

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
        shutil.rmtree(self.directory, ignore_errors=True)


# --- PostgreSQL (the production option) ------------------------------------------------------------------------


class PostgresWarehouse(Warehouse):
    kind = "postgres"
    dialect = POSTGRES

    def __init__(self, url: str) -> None:
        import psycopg2.extensions

        self.url = url.replace("postgresql+psycopg2://", "postgresql://", 1)
        parameters = psycopg2.extensions.parse_dsn(self.url)
        self.name = parameters.get("dbname", "postgres")
        self.existing_tables = set()

    @contextmanager
    def connect(self) -> Iterator[PgConnection]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        import psycopg2

        connection = psycopg2.connect(self.url, options="-c TimeZone=UTC")
        try:
            with connection:  # psycopg2: commit on success, rollback on error (does not close)
                yield connection
        finally:
            connection.close()

    @contextmanager
    def transaction(self) -> Iterator[Execute]:
        with self.connect() as connection, connection.cursor() as cursor:
            yield _postgres_executor(cursor)

    @contextmanager
    def staging(self, columns: Sequence[str]) -> Iterator[Staging]:
        with self.connect() as connection:
            yield _PostgresStaging(connection, columns)


def _postgres_executor(cursor: Any) -> Execute:
    def execute(sql: str, parameters: list[Any]) -> list[tuple[Any, ...]]:
        cursor.execute(sql, parameters or None)
        return cursor.fetchall() if cursor.description else []

    return execute


class _PostgresStaging(Staging):
    """A temporary table of the merge's own session, COPY-loaded; staging and merge are one transaction."""

    def __init__(self, connection: PgConnection, columns: Sequence[str]) -> None:
        super().__init__(columns)
        self.connection = connection
        with connection.cursor() as cursor:
            cursor.execute(
                f"CREATE TEMP TABLE staging ({POSTGRES.column_definitions(self.columns)}, {SEQUENCE} bigint) "
                "ON COMMIT DROP"
            )

    def _append(self, frame: pd.DataFrame) -> None:
        names = ", ".join(_quoted(c) for c in (*self.columns, SEQUENCE))
        with self.connection.cursor() as cursor:
            cursor.copy_expert(f"COPY staging ({names}) FROM STDIN", io.StringIO(copy_text(frame)))

    def clear(self) -> None:
        self.rows = 0
        with self.connection.cursor() as cursor:
            cursor.execute("TRUNCATE staging")

    def merge(self, target: MergeTarget) -> WriteCounts:
        import psycopg2

        tables = [target.slice.table, *([target.unified.table] if target.unified else [])]
        try:
            with self.connection.cursor() as cursor:
                # Concurrent first writes would race on CREATE ... IF NOT EXISTS (a unique violation in the
                # catalog): writers of one table take turns for the length of their transaction.
                for table in tables:
                    cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [table])
                cursor.execute("ANALYZE staging")  # its size, so the planner probes the key index for a few rows
                counts = _Merge(POSTGRES, target, "staging", _postgres_executor(cursor)).run()
            self.connection.commit()
        except psycopg2.Error as error:
            self.connection.rollback()
            raise WarehouseWriteError(f"{type(error).__name__}: {str(error).strip()}") from None
        return counts


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
