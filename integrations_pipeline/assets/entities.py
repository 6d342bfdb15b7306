"""One factory builds every `{provider}_{entity}` asset from its EntitySpec: no copied asset bodies."""

import gc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
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
from integrations_pipeline.store.inbox import WebhookInbox
from integrations_pipeline.store.push import PushSubscriptions
from integrations_pipeline.store.repository import LIVE_PARTITION, StateStore

BACKFILL_TAG = "dagster/backfill"
# Set on a run that a provider's (or the shared budget's) long wait stopped: sensors/rate_limits.py requests it again
# once RETRY_AT_TAG has passed, instead of spending a RetryPolicy attempt waiting.
RATE_LIMITED_TAG = "integrations/rate_limited"
RETRY_AT_TAG = "integrations/retry_at"
# 5 attempts; Dagster's exponential backoff waits 2 * (2^n - 1) s before attempt n + 1 (2, 6, 14, 30 s), fully
# jittered, for what outlasted the HTTP policy's own retries (a longer 5xx burst, a dropped connection).
SYNC_RETRY_POLICY = dg.RetryPolicy(max_retries=4, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.FULL)
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
    # The source ids the sync fetched, not the fetched frame: a run writes while it holds only `frame`.
    fetched_ids: pd.Series
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
            frame = upsert(current, fetched, spec.primary_key)
            return SyncResult("incremental", fetched["source_id"], frame, cursor)
        except CursorExpired:
            mode = "full (cursor expired)"
    else:
        mode = "full"
    full_request = SyncRequest(**{**request.__dict__, "cursor": None})
    fetched, cursor = _collect(spec.read(client, full_request), spec)
    return SyncResult(mode, fetched["source_id"], replace_all(current, fetched, spec.primary_key), cursor)


def _collect(pages: Iterable[Page], spec: EntitySpec) -> tuple[pd.DataFrame, str | None]:
    """Pages into one frame through bounded chunks: never more than CHUNK_ROWS records held as dicts at once."""
    cursor: str | None = None
    frames: list[pd.DataFrame] = []
    buffer: list[Any] = []
    with heap_frozen_for_gc():
        for page in pages:
            cursor = page.cursor or cursor
            buffer.extend(page.records)
            if len(buffer) >= CHUNK_ROWS:
                frames.append(to_frame(buffer, spec.columns))
                buffer = []
        frames.append(to_frame(buffer, spec.columns))
    return concat(frames, spec.columns), cursor


@contextmanager
def heap_frozen_for_gc() -> Iterator[None]:
    """Reading pages allocates millions of short-lived objects; their allocation bursts start the cyclic collector
    hundreds of times, and its older generations walk the run process's whole heap, Dagster's included: a tenth of
    a 100,000-record sync (docs/benchmarks.md). Freezing the heap as it stands takes it out of those walks. The
    collector still runs for what the sync allocates: pausing it instead would keep every page's body alive to the
    end, since an httpx response and its stream reference each other."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _metadata(result: SyncResult, stats: CallStats) -> dict[str, Any]:
    frame = result.frame
    remaining = {name: value for name, value in stats.rate_limit_headers.items() if "remaining" in name}
    return {
        "sync_mode": result.mode,
        "rows_fetched": len(result.fetched_ids),
        "rows_deleted": int(frame["is_deleted"].sum()) if not frame.empty else 0,
        "api_calls": stats.api_calls,
        "retries": stats.retries,
        "rate_limit_wait_s": round(stats.budget_wait_s, 3),
        "rate_limit_remaining": dg.MetadataValue.json(remaining),
        "cursor": result.cursor or "unchanged",
        "preview": dg.MetadataValue.md(markdown_preview(frame)),
    }


def _failure(error: ProviderError, connection_id: str, retry_at: datetime | None = None) -> dg.Failure:
    """The failure a person reads (and the integration.error event carries): the cause, then what to do.
    Only errors that another attempt may cure spend the RetryPolicy's attempts."""
    allow_retries = False
    if isinstance(error, NeedsReauth):
        advice = "reconnect it through the gateway (POST /connections/{provider}/connect); retrying will not help"
    elif isinstance(error, RateLimited) and retry_at is not None:
        advice = f"rate limited: rate_limit_sensor runs it again after {retry_at:%Y-%m-%d %H:%M:%S} UTC"
    elif isinstance(error, RateLimited):
        advice = f"rate limited: re-execute this backfill's failed partitions after {error.retry_after_s:.0f} s"
    elif isinstance(error, CursorExpired):
        advice = "the provider expired the sync cursor again during the resync; check its status, then re-run"
    else:
        advice = "check the provider's status and the connection's permissions, then re-run"
        allow_retries = error.status_code is None or error.status_code >= 500
    return dg.Failure(
        description=f"{connection_id}: {error} — {advice}",
        metadata={"connection_id": connection_id, "error_type": type(error).__name__},
        allow_retries=allow_retries,
    )


def _rate_limited(
    context: dg.AssetExecutionContext, error: RateLimited, connection_id: str, is_backfill: bool
) -> dg.Failure:
    """A wait longer than a run should spend: tag the run so rate_limit_sensor requests it again when the wait is
    over (a RetryPolicy attempt would be spent, and Dagster's retry delay cannot follow the provider's)."""
    if is_backfill:  # a backfill's failed partitions are re-executed from the backfill itself
        return _failure(error, connection_id)
    retry_at = datetime.now(UTC) + timedelta(seconds=error.retry_after_s)
    context.instance.add_run_tags(
        context.run.run_id, {RATE_LIMITED_TAG: "true", RETRY_AT_TAG: retry_at.isoformat(timespec="seconds")}
    )
    return _failure(error, connection_id, retry_at)


# Connection-partitioned entities sync hourly: warn after one missed sync, fail after two.
FRESHNESS = dg.FreshnessPolicy.time_window(warn_window=timedelta(hours=1, minutes=15), fail_window=timedelta(hours=2))
PRIMARY_KEY_CHECK = "primary_key_unique"
REQUIRED_FIELDS_CHECK = "required_fields_present"


def required_columns(spec: EntitySpec) -> tuple[str, ...]:
    return (*spec.primary_key, "is_deleted", *((spec.day_column,) if spec.partitioned_by_day else ()))


def partition_checks(spec: EntitySpec, frames: list[pd.DataFrame]) -> list[dg.AssetCheckResult]:
    """Checks on each partition exactly as it is written, so a failing one names rows of this run's data."""
    duplicated = pd.concat(
        [frame[frame.duplicated(subset=list(spec.primary_key), keep=False)] for frame in frames], ignore_index=True
    )
    missing = {column: sum(int(frame[column].isna().sum()) for frame in frames) for column in required_columns(spec)}
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


def partition_keys(context: dg.AssetExecutionContext) -> list[str | dg.MultiPartitionKey]:
    """The run's partition keys: one, or every key of a single-run backfill's range."""
    if not context.has_partition_key_range or context.partition_key_range.start == context.partition_key_range.end:
        return [context.partition_key]
    partitions_def = context.assets_def.partitions_def
    assert partitions_def is not None
    with dg.partition_loading_context(dynamic_partitions_store=context.instance):
        return [
            partitions_def.get_partition_key_from_str(key)
            if isinstance(partitions_def, dg.MultiPartitionsDefinition)
            else key
            for key in context.partition_keys
        ]


def describe_keys(scopes: list[PartitionScope]) -> str:
    first, last = scopes[0], scopes[-1]
    if len(scopes) == 1:
        return f"{first.connection_id}{'|' + first.cursor_key if first.cursor_key else ''}"
    return f"{len(scopes)} partitions ({first.connection_id} {first.cursor_key}..{last.cursor_key})"


def _sync_scope(
    spec: EntitySpec, integrations: IntegrationsResource, scope: PartitionScope, is_backfill: bool
) -> tuple[SyncRequest, SyncResult, CallStats]:
    store = integrations.store
    table = f"{spec.provider}.{spec.entity}"
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
        with integrations.connector(spec.provider, scope.connection_id, backfill=is_backfill) as client:
            return request, sync_partition(spec, client, request, current), client.stats
    except RateLimited:
        raise  # the asset reschedules its run (see _rate_limited)
    except ProviderError as error:
        raise _failure(error, scope.connection_id) from None


def combined(spec: EntitySpec, results: list[SyncResult]) -> SyncResult:
    """One result for the run's write: the partitions' frames together (the I/O manager replaces them all)."""
    if len(results) == 1:
        return results[0]
    modes = sorted({result.mode for result in results})
    moved = sum(result.cursor is not None for result in results)
    frame = concat([result.frame for result in results], spec.columns)
    return SyncResult(
        mode=", ".join(modes),
        fetched_ids=pd.concat([result.fetched_ids for result in results], ignore_index=True),
        frame=frame.sort_values(list(spec.primary_key), kind="stable", ignore_index=True),
        cursor=f"{moved} of {len(results)} partitions' cursors reached" if moved else None,
    )


def total(stats: list[CallStats]) -> CallStats:
    """Calls, retries and waits summed over the run's partitions; the last partition's rate-limit headers."""
    values = {item.name: getattr(stats[-1], item.name) for item in fields(CallStats)}
    for name, value in values.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            values[name] = sum(getattr(each, name) for each in stats)
    return CallStats(**values)


def missed_webhooks(
    spec: EntitySpec, store: StateStore, scopes: list[PartitionScope], results: list[SyncResult]
) -> dict[str, int]:
    """`missed_webhooks`: changes an incremental sync found that no webhook event named since the partition's previous
    sync. Counted only where push covers the entity (an active subscription): elsewhere polling is the only path."""
    subscriptions = PushSubscriptions(store).list(connection_id=scopes[0].connection_id)
    if not any(subscription.entity == spec.entity for subscription in subscriptions):
        return {}
    inbox, missed, counted = WebhookInbox(store), 0, False
    for scope, result in zip(scopes, results, strict=True):
        if result.mode != "incremental":
            continue
        day = scope.cursor_key if spec.partitioned_by_day else None
        reported = inbox.reported_source_ids(
            scope.connection_id, spec.entity, cursor_partition=scope.cursor_key, day=day
        )
        missed += len(set(result.fetched_ids.astype(str)) - reported)
        counted = True
    return {"missed_webhooks": missed} if counted else {}


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
        retry_policy=SYNC_RETRY_POLICY,
        # One pool per provider (dagster.yaml `concurrency.pools`): bounds concurrent syncs however a run started.
        pool=spec.provider,
        # A backfill of events covers a connection's range of days in one run (one connector, one write).
        backfill_policy=dg.BackfillPolicy.single_run() if spec.partitioned_by_day else None,
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
        # One partition, or (events in a single-run backfill) a range of days of one connection.
        scopes = [PartitionScope.of(spec, key) for key in partition_keys(context)]
        store = integrations.store
        is_backfill = BACKFILL_TAG in context.run.tags
        try:
            synced = [_sync_scope(spec, integrations, scope, is_backfill) for scope in scopes]
        except RateLimited as error:
            raise _rate_limited(context, error, scopes[0].connection_id, is_backfill) from None
        result, stats = combined(spec, [result for _, result, _ in synced]), total([stats for *_, stats in synced])
        context.log.info(f"{spec.asset_name} {describe_keys(scopes)}: {result.mode}, {len(result.fetched_ids)} rows")
        results = [scope_result for _, scope_result, _ in synced]
        yield dg.Output(result.frame, metadata=_metadata(result, stats) | missed_webhooks(spec, store, scopes, results))
        yield from partition_checks(spec, [result.frame for _, result, _ in synced])
        # Dagster's I/O manager has written the partition by the time the generator resumes: only now does the
        # cursor move, so a failed write never skips changes. Backfills never move it.
        for request, scope_result, scope in ((r, res, s) for (r, res, _), s in zip(synced, scopes, strict=True)):
            if scope_result.cursor is not None and not is_backfill:
                store.set_cursor(scope.connection_id, spec.entity, scope_result.cursor, scope.cursor_key)
            store.record_sync(scope.connection_id, request.started_at)

    return entity_asset
