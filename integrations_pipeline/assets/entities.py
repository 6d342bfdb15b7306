"""One factory builds every `{provider}_{entity}` asset from its EntitySpec: no copied asset bodies."""

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pandas as pd

from integrations_pipeline.clients.errors import (
    CursorExpired,
    NeedsReauth,
    ProviderError,
    RateLimited,
)
from integrations_pipeline.clients.http import ApiClient, CallStats
from integrations_pipeline.clients.spec import EntitySpec
from integrations_pipeline.frames import markdown_preview, replace_all, to_frame, upsert
from integrations_pipeline.partitions import connection_partitions
from integrations_pipeline.resources import IntegrationsResource

PARTITION_COLUMN = "connection_id"


def encode_cursor(modified_since: datetime) -> str:
    return json.dumps({"modified_since": modified_since.astimezone(UTC).isoformat()})


def decode_cursor(cursor: str | None) -> datetime | None:
    return datetime.fromisoformat(json.loads(cursor)["modified_since"]) if cursor else None


def _sync_metadata(mode: str, frame: pd.DataFrame, changed: int, stats: CallStats, cursor: datetime) -> dict[str, Any]:
    remaining = {name: value for name, value in stats.rate_limit_headers.items() if "remaining" in name}
    return {
        "sync_mode": mode,
        "rows_fetched": changed,
        "rows_deleted": int(frame["is_deleted"].sum()) if not frame.empty else 0,
        "api_calls": stats.api_calls,
        "retries": stats.retries,
        "rate_limit_remaining": dg.MetadataValue.json(remaining),
        "cursor": cursor.isoformat(),
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


def build_entity_asset(spec: EntitySpec) -> dg.AssetsDefinition:
    table = f"{spec.provider}.{spec.entity}"

    @dg.asset(
        name=spec.asset_name,
        group_name=spec.provider,
        partitions_def=connection_partitions(spec.provider),
        metadata={"schema": spec.provider, "table": spec.entity, "partition_expr": PARTITION_COLUMN},
        kinds={"duckdb", spec.provider},
        tags={"provider": spec.provider},
        description=f"{spec.entity.capitalize()} of every {spec.provider} connection, one partition per "
        f"connection, in `{table}`. Incremental after the first sync; deletions at the provider become "
        "`is_deleted = true`.",
    )
    def entity_asset(context: dg.AssetExecutionContext, integrations: IntegrationsResource) -> Iterator[dg.Output]:
        connection_id = context.partition_key
        store = integrations.store
        modified_since = decode_cursor(store.get_cursor(connection_id, spec.entity))
        current = integrations.read_partition(table, PARTITION_COLUMN, connection_id)
        started_at = datetime.now(UTC)
        try:
            with integrations.connector(spec.provider, connection_id) as client:
                mode, changes, frame = fetch_partition(spec, client, connection_id, current, modified_since, started_at)
                stats = client.stats
        except ProviderError as error:
            raise _failure(error, connection_id) from None
        context.log.info(f"{spec.asset_name} {connection_id}: {mode} sync, {len(changes)} rows fetched")
        yield dg.Output(frame, metadata=_sync_metadata(mode, frame, len(changes), stats, started_at))
        # Dagster's I/O manager has written the partition by the time the generator resumes: only now does the
        # cursor move, so a failed write never skips changes.
        store.set_cursor(connection_id, spec.entity, encode_cursor(started_at))
        store.record_sync(connection_id, started_at)

    return entity_asset


def fetch_partition(
    spec: EntitySpec,
    client: ApiClient,
    connection_id: str,
    current: pd.DataFrame | None,
    modified_since: datetime | None,
    until: datetime,
) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """(sync mode, rows fetched, the partition's new frame): incremental from the cursor when there is one and
    the partition exists; otherwise, or when the provider says the cursor expired, a full resync that also
    flags rows the provider no longer returns as deleted."""
    mode = "full"
    if modified_since is not None and current is not None:
        try:
            since = modified_since - spec.cursor_overlap
            changes = _collect(spec.read_changes(client, connection_id, since, until), spec)
            return "incremental", changes, upsert(current, changes, spec.primary_key)
        except CursorExpired:
            mode = "full (cursor expired)"
    changes = _collect(spec.read_all(client, connection_id), spec)
    return mode, changes, replace_all(current, changes, spec.primary_key)


def _collect(chunks: Iterator[list[Any]], spec: EntitySpec) -> pd.DataFrame:
    return to_frame((record for chunk in chunks for record in chunk), spec.columns)
