"""One factory builds every `{provider}_{entity}` asset from its EntitySpec: no copied asset bodies."""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pandas as pd

from integrations_pipeline.clients.errors import CursorExpired, NeedsReauth, ProviderError, RateLimited
from integrations_pipeline.clients.http import ApiClient, CallStats
from integrations_pipeline.clients.spec import EntitySpec, Page, SyncRequest
from integrations_pipeline.frames import concat, markdown_preview, replace_all, to_frame, upsert
from integrations_pipeline.partitions import (
    CONNECTION,
    DAY,
    connection_day_partitions,
    connection_partitions,
    day_window,
)
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.store.repository import LIVE_PARTITION

BACKFILL_TAG = "dagster/backfill"
# Records are turned into compact frames this many at a time, so a sync holds at most this many as dicts.
CHUNK_ROWS = 10_000


@dataclass(frozen=True)
class PartitionScope:
    """Which slice of an entity one run syncs, decoded from the Dagster partition key."""

    connection_id: str
    cursor_key: str  # the sync_cursors partition_key: "" for connection-wide entities, the day for events
    window: tuple[datetime, datetime] | None

    @classmethod
    def of(cls, spec: EntitySpec, partition_key: str | dg.MultiPartitionKey) -> "PartitionScope":
        if not spec.partitioned_by_day:
            return cls(str(partition_key), LIVE_PARTITION, None)
        assert isinstance(partition_key, dg.MultiPartitionKey)
        keys = partition_key.keys_by_dimension
        return cls(keys[CONNECTION], keys[DAY], day_window(keys[DAY]))


@dataclass(frozen=True)
class SyncResult:
    mode: str
    fetched: pd.DataFrame
    frame: pd.DataFrame  # the partition as it must now stand
    cursor: str | None


def sync_partition(
    spec: EntitySpec, client: ApiClient, request: SyncRequest, current: pd.DataFrame | None
) -> SyncResult:
    """Incremental from the cursor when there is one and the partition exists; otherwise, or when the provider
    says the cursor expired, a full resync that also flags rows the provider no longer returns as deleted."""
    if request.cursor is not None and current is not None:
        try:
            fetched, cursor = _collect(spec.read(client, request), spec)
            return SyncResult("incremental", fetched, upsert(current, fetched, spec.primary_key), cursor)
        except CursorExpired:
            mode = "full (cursor expired)"
    else:
        mode = "full"
    full_request = SyncRequest(**{**request.__dict__, "cursor": None})
    fetched, cursor = _collect(spec.read(client, full_request), spec)
    return SyncResult(mode, fetched, replace_all(current, fetched, spec.primary_key), cursor)


def _collect(pages: Iterable[Page], spec: EntitySpec) -> tuple[pd.DataFrame, str | None]:
    """Pages into one frame through bounded chunks: never more than CHUNK_ROWS records held as dicts at once."""
    cursor: str | None = None
    frames: list[pd.DataFrame] = []
    buffer: list[Any] = []
    for page in pages:
        cursor = page.cursor or cursor
        buffer.extend(page.records)
        if len(buffer) >= CHUNK_ROWS:
            frames.append(to_frame(buffer, spec.columns))
            buffer = []
    frames.append(to_frame(buffer, spec.columns))
    return concat(frames, spec.columns), cursor


def _metadata(result: SyncResult, stats: CallStats) -> dict[str, Any]:
    frame = result.frame
    remaining = {name: value for name, value in stats.rate_limit_headers.items() if "remaining" in name}
    return {
        "sync_mode": result.mode,
        "rows_fetched": len(result.fetched),
        "rows_deleted": int(frame["is_deleted"].sum()) if not frame.empty else 0,
        "api_calls": stats.api_calls,
        "retries": stats.retries,
        "rate_limit_remaining": dg.MetadataValue.json(remaining),
        "cursor": result.cursor or "unchanged",
        "preview": dg.MetadataValue.md(markdown_preview(frame)),
    }


def _failure(error: ProviderError, connection_id: str) -> dg.Failure:
    if isinstance(error, NeedsReauth):
        advice = "reconnect it through the gateway (POST /connections/{provider}/connect)"
    elif isinstance(error, RateLimited):
        advice = f"the provider asked to wait {error.retry_after_s:.0f} s; the run can be retried after that"
    else:
        advice = "check the provider's status; the run can be retried"
    return dg.Failure(
        description=f"{connection_id}: {error} — {advice}",
        metadata={"connection_id": connection_id, "error_type": type(error).__name__},
    )


# Connection-partitioned entities sync hourly: warn after one missed sync, fail after two.
FRESHNESS = dg.FreshnessPolicy.time_window(warn_window=timedelta(hours=1, minutes=15), fail_window=timedelta(hours=2))
PRIMARY_KEY_CHECK = "primary_key_unique"
REQUIRED_FIELDS_CHECK = "required_fields_present"


def required_columns(spec: EntitySpec) -> tuple[str, ...]:
    return (*spec.primary_key, "is_deleted", *((spec.day_column,) if spec.partitioned_by_day else ()))


def partition_checks(spec: EntitySpec, frame: pd.DataFrame) -> list[dg.AssetCheckResult]:
    """Checks on the partition exactly as it is written, so a failing one names rows of this run's data."""
    duplicated = frame[frame.duplicated(subset=list(spec.primary_key), keep=False)]
    missing = {column: int(frame[column].isna().sum()) for column in required_columns(spec)}
    return [
        dg.AssetCheckResult(
            check_name=PRIMARY_KEY_CHECK,
            passed=duplicated.empty,
            metadata={"duplicate_rows": len(duplicated), "examples": duplicated["source_id"].head(5).tolist()},
        ),
        dg.AssetCheckResult(
            check_name=REQUIRED_FIELDS_CHECK,
            passed=not any(missing.values()),
            metadata={"missing_by_column": dg.MetadataValue.json(missing)},
        ),
    ]


def build_entity_asset(spec: EntitySpec) -> dg.AssetsDefinition:
    table = f"{spec.provider}.{spec.entity}"
    if spec.partitioned_by_day:
        partitions_def: dg.PartitionsDefinition = connection_day_partitions(spec.provider)
        partition_expr: str | dict[str, str] = {CONNECTION: "connection_id", DAY: spec.day_column}
        scope_text = "one partition per connection and UTC day of the event's start"
    else:
        partitions_def = connection_partitions(spec.provider)
        partition_expr = "connection_id"
        scope_text = "one partition per connection"

    @dg.asset(
        name=spec.asset_name,
        group_name=spec.provider,
        partitions_def=partitions_def,
        metadata={"schema": spec.provider, "table": spec.entity, "partition_expr": partition_expr},
        kinds={"duckdb", spec.provider},
        tags={"provider": spec.provider},
        freshness_policy=None if spec.partitioned_by_day else FRESHNESS,
        check_specs=[
            dg.AssetCheckSpec(PRIMARY_KEY_CHECK, asset=spec.asset_name, description="source_id unique per connection"),
            dg.AssetCheckSpec(
                REQUIRED_FIELDS_CHECK,
                asset=spec.asset_name,
                description=f"no nulls in {', '.join(required_columns(spec))}",
            ),
        ],
        description=f"{spec.entity.capitalize()} of every {spec.provider} connection in `{table}`, {scope_text}. "
        "Incremental after the first sync; deletions at the provider become `is_deleted = true`. Backfill runs "
        "resync their partitions in full and leave the live cursor alone.",
    )
    def entity_asset(
        context: dg.AssetExecutionContext, integrations: IntegrationsResource
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        scope = PartitionScope.of(spec, context.partition_key)
        store = integrations.store
        is_backfill = BACKFILL_TAG in context.run.tags
        connection = store.get_connection(scope.connection_id)
        request = SyncRequest(
            connection_id=scope.connection_id,
            cursor=None if is_backfill else store.get_cursor(scope.connection_id, spec.entity, scope.cursor_key),
            started_at=datetime.now(UTC),
            window=scope.window,
            provider_metadata=connection.provider_metadata if connection else {},
        )
        current = integrations.read_partition(table, [scope.connection_id], scope.window, spec.day_column)
        try:
            with integrations.connector(spec.provider, scope.connection_id) as client:
                result = sync_partition(spec, client, request, current)
                stats = client.stats
        except ProviderError as error:
            raise _failure(error, scope.connection_id) from None
        context.log.info(f"{spec.asset_name} {context.partition_key}: {result.mode}, {len(result.fetched)} rows")
        yield dg.Output(result.frame, metadata=_metadata(result, stats))
        yield from partition_checks(spec, result.frame)
        # Dagster's I/O manager has written the partition by the time the generator resumes: only now does the
        # cursor move, so a failed write never skips changes. Backfills never move it.
        if result.cursor is not None and not is_backfill:
            store.set_cursor(scope.connection_id, spec.entity, result.cursor, scope.cursor_key)
        store.record_sync(scope.connection_id, request.started_at)

    return entity_asset
