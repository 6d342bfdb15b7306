"""One factory builds every `{provider}_{entity}` asset from its EntitySpec: no copied asset bodies.

A run syncs one partition, or a range of them (a single-run backfill of days, a batch of connections): each
partition streams its pages into a staging table and merges them into the warehouse in one transaction
(warehouse.py), then records its own materialization and checks.
"""

import gc
import time
from collections.abc import Container, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
from dagster._core.definitions.metadata import TableMetadataSet

from integrations_pipeline.clients.catalog import CatalogRefresher, mapping_sources
from integrations_pipeline.clients.errors import CursorExpired, NeedsReauth, ProviderError, RateLimited
from integrations_pipeline.clients.http import ApiClient, CallStats
from integrations_pipeline.clients.spec import EntitySpec, Page, SyncRequest
from integrations_pipeline.frames import markdown_preview, to_frame
from integrations_pipeline.partitions import (
    CONNECTION,
    DAY,
    TENANT,
    TENANTS,
    connection_day_partitions,
    connection_partitions,
    day_window,
)
from integrations_pipeline.records import ATTENDEE_COLUMNS, ATTENDEE_KEY, ATTENDEES, COLUMN_DESCRIPTIONS
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.store.catalog import CatalogField
from integrations_pipeline.store.inbox import WebhookInbox
from integrations_pipeline.store.push import PushSubscriptions
from integrations_pipeline.store.repository import LIVE_PARTITION, StateStore
from integrations_pipeline.warehouse import (
    SUMMARY_KEYS_MAX,
    MergeTarget,
    PartitionSlice,
    PartitionSummary,
    Staging,
    SummaryRequest,
    UnifiedFollow,
    WarehouseWriteError,
    WriteCounts,
)

BACKFILL_TAG = "dagster/backfill"
# Set on a run that a provider's (or the shared budget's) long wait stopped: sensors/rate_limits.py requests it again
# once RETRY_AT_TAG has passed, instead of spending a RetryPolicy attempt waiting.
RATE_LIMITED_TAG = "integrations/rate_limited"
RETRY_AT_TAG = "integrations/retry_at"
# 5 attempts; Dagster's exponential backoff waits 2 * (2^n - 1) s before attempt n + 1 (2, 6, 14, 30 s), fully
# jittered, for what outlasted the HTTP policy's own retries (a longer 5xx burst, a dropped connection).
SYNC_RETRY_POLICY = dg.RetryPolicy(max_retries=4, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.FULL)
# In a batch, each partition retries on its own instead (the HTTP policy has retried each call already).
BATCH_ATTEMPTS = 3
BATCH_RETRY_DELAY_S = 2.0
# Records are turned into compact frames this many at a time, so a sync holds at most this many as dicts.
CHUNK_ROWS = 10_000


@dataclass(frozen=True)
class PartitionScope:
    """Which slice of an entity one run syncs, decoded from the Dagster partition key."""

    connection_id: str
    cursor_key: str  # the sync_cursors partition_key: "" for connection-wide entities, the day for events
    window: tuple[datetime, datetime] | None
    partition_key: str  # as Dagster names it (`connection|day` for events)

    @classmethod
    def of(cls, spec: EntitySpec, partition_key: str | dg.MultiPartitionKey) -> "PartitionScope":
        if not spec.partitioned_by_day:
            return cls(str(partition_key), LIVE_PARTITION, None, str(partition_key))
        assert isinstance(partition_key, dg.MultiPartitionKey)
        keys = partition_key.keys_by_dimension
        return cls(keys[CONNECTION], keys[DAY], day_window(keys[DAY]), str(partition_key))


@dataclass(frozen=True)
class Fetched:
    """What a sync staged: how, how many rows, where the cursor ended, and (incremental only) which ids."""

    mode: str
    rows: int
    cursor: str | None
    source_ids: frozenset[str]


def stage(
    spec: EntitySpec,
    client: ApiClient,
    request: SyncRequest,
    staging: Staging,
    incremental: bool,
    attendees: Staging | None = None,
) -> Fetched:
    """Incremental from the cursor when there is one and the table exists; otherwise, or when the provider says
    the cursor expired, a full resync (whose merge flags rows the provider no longer returns as deleted). Events
    stage their pages' attendees into `attendees` as they go."""
    if incremental:
        try:
            return _stage_pages(spec.read(client, request), spec, staging, "incremental", attendees)
        except CursorExpired:
            for started in (staging, attendees):
                if started is not None:
                    started.clear()
            mode = "full (cursor expired)"
    else:
        mode = "full"
    return _stage_pages(spec.read(client, replace(request, cursor=None)), spec, staging, mode, attendees)


def _stage_pages(
    pages: Iterable[Page], spec: EntitySpec, staging: Staging, mode: str, attendees: Staging | None = None
) -> Fetched:
    """Pages into staging through bounded chunks: never more than CHUNK_ROWS records held as dicts at once."""
    cursor: str | None = None
    buffer: list[Any] = []
    attendee_buffer: list[Any] = []
    source_ids: set[str] = set()

    def flush() -> None:
        frame = to_frame(buffer, spec.columns)
        if mode == "incremental":  # for missed_webhooks, and the events whose attendees were re-fetched
            source_ids.update(frame["source_id"].astype(str))
        staging.append(frame)
        buffer.clear()
        if attendees is not None:
            attendees.append(to_frame(attendee_buffer, ATTENDEE_COLUMNS))
        attendee_buffer.clear()

    for page in pages:
        cursor = page.cursor or cursor
        buffer.extend(page.records)
        attendee_buffer.extend(page.attendees)
        if len(buffer) + len(attendee_buffer) >= CHUNK_ROWS:
            flush()
    flush()
    return Fetched(mode, staging.rows, cursor, frozenset(source_ids))


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


def _failure(error: ProviderError, connection_id: str, retry_at: datetime | None = None) -> dg.Failure:
    """The failure a person reads (and the integration.error event carries): the cause, then what to do.
    Only errors that another attempt may cure spend the RetryPolicy's attempts."""
    advice, allow_retries = _advice(error, retry_at)
    return dg.Failure(
        description=f"{connection_id}: {error} — {advice}",
        metadata={"connection_id": connection_id, "error_type": type(error).__name__},
        allow_retries=allow_retries,
    )


def _advice(error: Exception, retry_at: datetime | None = None) -> tuple[str, bool]:
    """What to do about a failed partition, and whether another attempt may cure it."""
    if isinstance(error, NeedsReauth):
        return "reconnect it through the gateway (POST /connections/{provider}/connect); retrying will not help", False
    if isinstance(error, RateLimited) and retry_at is not None:
        return f"rate limited: rate_limit_sensor runs it again after {retry_at:%Y-%m-%d %H:%M:%S} UTC", False
    if isinstance(error, RateLimited):
        return f"rate limited: the next sync (or a re-execution) after {error.retry_after_s:.0f} s takes it up", False
    if isinstance(error, CursorExpired):
        return "the provider expired the sync cursor again during the resync; check its status, then re-run", False
    if isinstance(error, WarehouseWriteError):
        return "the warehouse refused the write: nothing was written and the cursor did not move; fix it, re-run", False
    if isinstance(error, ProviderError):
        retryable = error.status_code is None or error.status_code >= 500
        return "check the provider's status and the connection's permissions, then re-run", retryable
    return "an unexpected error: see the run's logs", False


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
PARTITION_CHECK = "partition_integrity"


def required_columns(spec: EntitySpec) -> tuple[str, ...]:
    return (*spec.primary_key, "is_deleted", *((spec.day_column,) if spec.partitioned_by_day else ()))


def partition_keys(context: dg.AssetExecutionContext) -> list[str | dg.MultiPartitionKey]:
    """The run's partition keys: one, or every key of a range (a single-run backfill, a batch of connections)."""
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


@dataclass(frozen=True)
class Synced:
    """One partition written: what the sync did and how the partition now stands."""

    scope: PartitionScope
    tenant: str | None
    fetched: Fetched
    counts: WriteCounts
    summary: PartitionSummary
    stats: CallStats
    missed: dict[str, int]
    attendees: WriteCounts | None = None  # events: what the merge of their attendees wrote
    catalog: tuple[CatalogField, ...] = ()  # the fields requested: the UI lists them as columns of `raw`


def unified_follow(store: StateStore, entity: str, tenant: str, provider: str) -> UnifiedFollow:
    """The tenant's mapping for the provider, with the connection's catalog so catalog names read the raw record."""
    rules = store.get_mapping(tenant, provider).rules(entity)  # type: ignore[arg-type]
    return UnifiedFollow(entity, tenant, provider, rules, mapping_sources(store, tenant, provider).get(entity))


def current_catalog(
    integrations: IntegrationsResource, client: ApiClient, spec: EntitySpec, connection_id: str
) -> tuple[CatalogField, ...]:
    """The entity's field catalog, asked of the provider first (through the sync's own client) when the stored one
    is older than `INTEGRATIONS_CATALOG_MAX_AGE_S`: a field added at the provider reaches this sync's raw records.
    A refusal of the metadata call alone (a 4xx: a scope it needs, say) leaves this sync the stored catalog; a lost
    grant, a rate limit or a provider failing (5xx) is the sync's failure, as it would be for its first data call."""
    refresher = CatalogRefresher(integrations.store, integrations.connector)
    if refresher.is_stale(connection_id, spec.entity, timedelta(seconds=integrations.settings.catalog_max_age_s)):
        try:
            refresher.discover(client, spec.provider, connection_id, [spec.entity])
        except ProviderError as error:
            if isinstance(error, NeedsReauth | RateLimited) or _advice(error)[1]:
                raise
            dg.get_dagster_logger().warning(f"{connection_id} {spec.entity}: fields not rediscovered ({error})")
    return tuple(refresher.catalog.fields(connection_id, spec.entity))


def sync_scope(
    spec: EntitySpec, integrations: IntegrationsResource, scope: PartitionScope, is_backfill: bool
) -> Synced:
    """Fetch into staging, merge in one transaction (the unified table follows), then move the cursor: a failed
    merge never skips changes. Backfills never move the live cursor."""
    store, warehouse = integrations.store, integrations.warehouse
    table = f"{spec.provider}.{spec.entity}"
    connection = store.get_connection(scope.connection_id)
    cursor = None if is_backfill else store.get_cursor(scope.connection_id, spec.entity, scope.cursor_key)
    follow = unified_follow(store, spec.entity, connection.tenant, spec.provider) if connection is not None else None
    part = PartitionSlice(table, scope.connection_id, scope.window, spec.day_column)
    attendee_table = f"{spec.provider}.{ATTENDEES}" if spec.entity == "events" else None
    incremental = cursor is not None and all(
        warehouse.table_exists(name) for name in (table, attendee_table) if name is not None
    )
    attendee_staging: AbstractContextManager[Staging | None] = (
        warehouse.staging(ATTENDEE_COLUMNS) if attendee_table is not None else nullcontext()
    )
    with (
        warehouse.staging(spec.columns) as staging,
        attendee_staging as attendees,
        integrations.connector(spec.provider, scope.connection_id, backfill=is_backfill) as client,
    ):
        catalog = current_catalog(integrations, client, spec, scope.connection_id)
        request = SyncRequest(
            connection_id=scope.connection_id,
            cursor=cursor,
            started_at=datetime.now(UTC),
            window=scope.window,
            provider_metadata=connection.provider_metadata if connection else {},
            fields=tuple(info.name for info in catalog),
        )
        fetched = stage(spec, client, request, staging, incremental, attendees)
        full = fetched.mode != "incremental"
        few = not full and len(fetched.source_ids) <= SUMMARY_KEYS_MAX
        summary = SummaryRequest(required_columns(spec), fetched.source_ids if few else None)
        counts = staging.merge(MergeTarget(part, spec.columns, spec.primary_key, full, follow, summary=summary))
        attendee_counts = None
        if attendees is not None and attendee_table is not None:
            # A second transaction, before the cursor moves: if it fails, the next sync fetches the same events
            # again and both merges converge (they are idempotent).
            attendee_counts = attendees.merge(
                MergeTarget(
                    replace(part, table=attendee_table),
                    ATTENDEE_COLUMNS,
                    ATTENDEE_KEY,
                    full,
                    replace(follow, entity=ATTENDEES, rules={}) if follow is not None else None,
                    parents=None if full else ("event_source_id", fetched.source_ids),
                )
            )
        stats = client.stats
    # Counted before the cursor moves: the webhooks that count are those since the previous sync's cursor.
    missed = missed_webhooks(spec, store, scope, fetched)
    if fetched.cursor is not None and not is_backfill:
        store.set_cursor(scope.connection_id, spec.entity, fetched.cursor, scope.cursor_key)
    store.record_sync(scope.connection_id, request.started_at)
    assert counts.summary is not None, "the merge summarizes the partition it wrote, as asked"
    tenant = connection.tenant if connection else None
    return Synced(scope, tenant, fetched, counts, counts.summary, stats, missed, attendee_counts, catalog)


def sync_with_retries(
    spec: EntitySpec, integrations: IntegrationsResource, scope: PartitionScope, is_backfill: bool, attempts: int
) -> Synced:
    """A batch's partition retries what another attempt may cure (5xx, transport) itself, so the step's
    RetryPolicy never re-runs the whole batch for one connection."""
    for attempt in range(1, attempts + 1):
        try:
            return sync_scope(spec, integrations, scope, is_backfill)
        except ProviderError as error:
            if attempt == attempts or not _advice(error)[1]:
                raise
            time.sleep(BATCH_RETRY_DELAY_S * attempt)
    raise AssertionError("unreachable")


def missed_webhooks(spec: EntitySpec, store: StateStore, scope: PartitionScope, fetched: Fetched) -> dict[str, int]:
    """`missed_webhooks`: changes an incremental sync found that no webhook event named since the partition's previous
    sync. Counted only where push covers the entity (an active subscription): elsewhere polling is the only path."""
    if fetched.mode != "incremental":
        return {}
    subscriptions = PushSubscriptions(store).list(connection_id=scope.connection_id)
    if not any(subscription.entity == spec.entity for subscription in subscriptions):
        return {}
    day = scope.cursor_key if spec.partitioned_by_day else None
    reported = WebhookInbox(store).reported_source_ids(
        scope.connection_id, spec.entity, cursor_partition=scope.cursor_key, day=day
    )
    return {"missed_webhooks": len(fetched.source_ids - reported)}


def raw_field_column(info: CatalogField) -> dg.TableColumn:
    """A catalog field as the UI lists it: a column of the `raw` record, named by its JSON path."""
    kind = "custom" if info.is_custom else "standard"
    return dg.TableColumn(
        name=f"raw.{info.path}",
        type=f"{info.type.value} ({info.provider_type})",
        description=f"{info.label}: {kind} field `{info.name}` (mappings name it so), read with "
        f"raw->>'$.{info.path}' (DuckDB) or raw #>> '{{{info.path.replace('.', ',')}}}' (PostgreSQL)",
    )


def column_schema(summary: PartitionSummary, catalog: Iterable[CatalogField] = ()) -> dg.TableSchema:
    """The table's real columns, then every field of the connection's catalog inside `raw`."""
    return dg.TableSchema(
        columns=[
            *(
                dg.TableColumn(name=name, type=kind, description=COLUMN_DESCRIPTIONS.get(name))
                for name, kind in summary.column_types.items()
            ),
            *(raw_field_column(info) for info in catalog),
        ]
    )


def table_metadata(
    table: str, summary: PartitionSummary, storage_kind: str, catalog: Iterable[CatalogField] = ()
) -> dict[str, Any]:
    """What the UI shows of a table partition: its name, row count, real column types (the catalog's fields
    among them) and a preview."""
    return {
        **TableMetadataSet(
            table_name=table,
            row_count=summary.row_count,
            partition_row_count=summary.row_count,
            column_schema=column_schema(summary, catalog),
            storage_kind=storage_kind,
        ),
        "preview": dg.MetadataValue.md(markdown_preview(summary.preview)),
    }


def sync_metadata(synced: Synced) -> dict[str, Any]:
    fetched, counts, stats = synced.fetched, synced.counts, synced.stats
    remaining = {name: value for name, value in stats.rate_limit_headers.items() if "remaining" in name}
    return {
        "sync_mode": fetched.mode,
        "rows_fetched": fetched.rows,
        "rows_written": counts.written,
        "rows_inserted": counts.inserted,
        "rows_updated": counts.updated,
        "rows_deleted": counts.deleted,
        "unified_rows_written": counts.unified,
        "api_calls": stats.api_calls,
        "retries": stats.retries,
        "rate_limit_wait_s": round(stats.budget_wait_s, 3),
        "rate_limit_remaining": dg.MetadataValue.json(remaining),
        "cursor": fetched.cursor or "unchanged",
        **synced.missed,
        **({"attendee_rows_written": synced.attendees.written} if synced.attendees is not None else {}),
    }


def check_evaluation(spec: EntitySpec, asset_key: dg.AssetKey, synced: Synced) -> dg.AssetCheckEvaluation:
    """The partition's one check, run as SQL on the partition as it stands after the merge: its keys unique and its
    required fields present. One evaluation per partition, not one per rule: each is an event Dagster writes to
    its instance (three SQLite transactions), and a partitioned check shows as decided only on the partitions that
    got an evaluation (Dagster 1.13 has no evaluation for a range: a partition without one reads as skipped)."""
    summary = synced.summary
    missing = {column: count for column, count in summary.missing_by_column.items() if count}
    failures = [
        *([f"{summary.duplicate_keys} duplicate keys"] if summary.duplicate_keys else []),
        *([f"nulls in {', '.join(sorted(missing))}"] if missing else []),
    ]
    return dg.AssetCheckEvaluation(
        asset_key=asset_key,
        check_name=PARTITION_CHECK,
        passed=not failures,
        description="; ".join(failures) or None,
        metadata={
            "duplicate_keys": summary.duplicate_keys,
            "examples": summary.duplicate_examples,
            "missing_by_column": dg.MetadataValue.json(summary.missing_by_column),
        },
        partition=synced.scope.partition_key,
    )


def unified_materialization(
    spec: EntitySpec, known_tenants: Container[str], synced: Synced
) -> dg.AssetMaterialization | None:
    """The tenant's unified partition changed in the same transaction: record it, so the UI stays truthful (only
    when its rows changed, and only for tenants Dagster knows as partitions)."""
    counts, tenant = synced.counts, synced.tenant
    if tenant is None or tenant not in known_tenants or not (counts.unified or counts.unified_rewritten):
        return None
    day = synced.scope.cursor_key
    partition = dg.MultiPartitionKey({TENANT: tenant, DAY: day}) if spec.partitioned_by_day else tenant
    return dg.AssetMaterialization(
        asset_key=dg.AssetKey(spec.entity),
        partition=partition,
        description=f"{counts.unified} rows from {spec.asset_name} {synced.scope.partition_key}"
        + (" (the tenant's mapping changed: the connection's rows were rewritten)" if counts.unified_rewritten else ""),
        metadata={
            "source": spec.asset_name,
            "connection_id": synced.scope.connection_id,
            "rows_written": counts.unified,
        },
    )


def partition_events(
    spec: EntitySpec,
    context: dg.AssetExecutionContext,
    synced: Synced,
    storage_kind: str,
    known_tenants: Container[str],
) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
    """One partition's own materialization (its own counts), its check, and the unified partition it changed."""
    table = f"{spec.provider}.{spec.entity}"
    yield dg.AssetMaterialization(
        asset_key=context.asset_key,
        partition=synced.scope.partition_key,
        metadata=table_metadata(table, synced.summary, storage_kind, synced.catalog) | sync_metadata(synced),
    )
    yield check_evaluation(spec, context.asset_key, synced)
    unified = unified_materialization(spec, known_tenants, synced)
    if unified is not None:
        yield unified


def batch_failure(context: dg.AssetExecutionContext, failed: dict[str, Exception]) -> dg.Failure:
    """The partitions that failed, each with its own reason; the others are written and materialized. Never
    retried as a whole: the retryable errors were retried per partition already."""
    reasons = {key: f"{type(error).__name__}: {error} — {_advice(error)[0]}" for key, error in failed.items()}
    return dg.Failure(
        description=f"{len(failed)} of the run's partitions failed (the others were synced):\n"
        + "\n".join(f"- {key}: {reason}" for key, reason in sorted(reasons.items())),
        metadata={"failed_partitions": dg.MetadataValue.json(reasons)},
        allow_retries=False,
    )


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

    @dg.multi_asset(
        name=spec.asset_name,
        specs=[
            dg.AssetSpec(
                spec.asset_name,
                group_name=spec.provider,
                partitions_def=partitions_def,
                metadata={"schema": spec.provider, "table": spec.entity, "partition_expr": partition_expr},
                kinds={"duckdb", spec.provider},
                tags={"provider": spec.provider},
                freshness_policy=None if spec.partitioned_by_day else FRESHNESS,
                # The body records one materialization per partition it wrote (a run may cover a range of
                # partitions), never one output for the run.
                skippable=True,
                description=f"{spec.entity.capitalize()} of every {spec.provider} connection in `{table}`, "
                f"{scope_text}. Incremental after the first sync, merged by primary key (only changed rows are "
                "written, and the unified table follows in the same transaction); deletions at the provider "
                "become `is_deleted = true`. Backfill runs resync their partitions in full and leave the live "
                "cursor alone.",
            )
        ],
        partitions_def=partitions_def,
        retry_policy=SYNC_RETRY_POLICY,
        # One pool per provider (dagster.yaml `concurrency.pools`): bounds concurrent syncs however a run started.
        pool=spec.provider,
        # A backfill of events covers a connection's range of days in one run (one connector, one write).
        backfill_policy=dg.BackfillPolicy.single_run() if spec.partitioned_by_day else None,
        # Checks are evaluated per partition (AssetCheckEvaluation names it), so their outputs are optional.
        can_subset=True,
        check_specs=[
            dg.AssetCheckSpec(
                PARTITION_CHECK,
                asset=spec.asset_name,
                description=f"primary key ({', '.join(spec.primary_key)}) unique, and no nulls in "
                f"{', '.join(required_columns(spec))}",
            ),
        ],
    )
    def entity_asset(
        context: dg.AssetExecutionContext, integrations: IntegrationsResource
    ) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation | dg.AssetObservation]:
        scopes = [PartitionScope.of(spec, key) for key in partition_keys(context)]
        is_backfill = BACKFILL_TAG in context.run.tags
        storage_kind = integrations.warehouse.kind
        # Read once per run, not once per partition: the tenants whose unified partitions Dagster knows.
        known_tenants = frozenset(context.instance.get_dynamic_partitions(TENANTS.name or ""))
        if len(scopes) == 1:  # one partition: failures go to the step (RetryPolicy, rate-limit tagging) as ever
            scope = scopes[0]
            try:
                with heap_frozen_for_gc():
                    synced = sync_scope(spec, integrations, scope, is_backfill)
            except RateLimited as error:
                raise _rate_limited(context, error, scope.connection_id, is_backfill) from None
            except (ProviderError, WarehouseWriteError) as error:
                raise _failure(error, scope.connection_id) from None  # type: ignore[arg-type]
            context.log.info(f"{spec.asset_name} {scope.partition_key}: {synced.fetched.mode}, {synced.counts}")
            yield from partition_events(spec, context, synced, storage_kind, known_tenants)
            return
        # A range: each partition syncs on its own (a few at once); one partition's failure, rate limit or reauth
        # touches only itself. A rate-limited connection of a batch is left to the next tick (no run tag: a re-run
        # of the whole range would redo the others).
        failed: dict[str, Exception] = {}
        with heap_frozen_for_gc(), ThreadPoolExecutor(integrations.settings.sync_concurrency, "sync") as pool:
            futures = {
                pool.submit(sync_with_retries, spec, integrations, scope, is_backfill, BATCH_ATTEMPTS): scope
                for scope in scopes
            }
            for future in as_completed(futures):
                scope = futures[future]
                try:
                    synced = future.result()
                except Exception as error:  # isolated: recorded on its partition, reported at the end
                    failed[scope.partition_key] = error
                    context.log.warning(f"{spec.asset_name} {scope.partition_key} failed: {type(error).__name__}")
                    yield dg.AssetObservation(
                        asset_key=context.asset_key,
                        partition=scope.partition_key,
                        metadata={"error_type": type(error).__name__, "error": f"{error} — {_advice(error)[0]}"},
                    )
                    continue
                yield from partition_events(spec, context, synced, storage_kind, known_tenants)
        context.log.info(f"{spec.asset_name}: {len(scopes) - len(failed)} of {len(scopes)} partitions synced")
        if failed:
            raise batch_failure(context, failed)

    return entity_asset
