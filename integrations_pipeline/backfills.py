"""Backfills of a provider's assets, for one tenant or all of them, over a range of UTC days.

`launch_backfill` records a real Dagster asset backfill in the instance, the same record the UI's "Launch
backfill" makes (`PartitionBackfill` + `DagsterInstance.add_backfill`, as Dagster's GraphQL
`launchPartitionBackfill` does): the UI lists it with its partitions and the daemon executes it. Events
(connection x day) run a connection's whole range in one run (single-run backfill policy); users and contacts,
partitioned by connection only, are resynced in full once per connection. Backfill runs (tag `dagster/backfill`)
never read or move the live cursors, so scheduled syncs continue exactly where they were.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta

import dagster as dg
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.errors import DagsterError
from dagster._core.execution.backfill import PartitionBackfill
from dagster._core.utils import make_new_backfill_id
from dagster._time import get_current_timestamp

from integrations_pipeline.clients.providers import ENTITIES
from integrations_pipeline.partitions import CONNECTION, DAY, DAYS, connection_partitions
from integrations_pipeline.store import ConnectionStatus, StateStore

# One backfill may cover at most this many days: a longer range is almost always a typo in a year.
MAX_DAYS = 400


class BackfillError(Exception):
    """The backfill cannot be launched as asked; the message says what to change."""


@dataclass(frozen=True)
class BackfillRequest:
    provider: str
    tenant: str | None  # None: every tenant with an active connection at the provider
    first_day: date
    last_day: date

    @property
    def days(self) -> list[str]:
        count = (self.last_day - self.first_day).days + 1
        return [(self.first_day + timedelta(days=offset)).isoformat() for offset in range(count)]

    @property
    def title(self) -> str:
        return f"{self.provider} {self.tenant or 'all tenants'} {self.first_day}..{self.last_day}"


@dataclass(frozen=True)
class LaunchedBackfill:
    backfill_id: str
    connection_ids: list[str]
    partitions_by_asset: dict[str, int]


def validate(request: BackfillRequest) -> None:
    providers = sorted({entity.provider for entity in ENTITIES})
    if request.provider not in providers:
        raise BackfillError(f"unknown provider {request.provider!r}; choose one of {', '.join(providers)}")
    if request.first_day > request.last_day:
        raise BackfillError(f"--from {request.first_day} is after --to {request.last_day}")
    valid_days = DAYS.get_partition_keys()
    if request.days[0] < valid_days[0] or request.days[-1] > valid_days[-1]:
        raise BackfillError(f"days must lie between {valid_days[0]} and {valid_days[-1]} (the day partitions)")
    if len(request.days) > MAX_DAYS:
        raise BackfillError(f"{len(request.days)} days is more than one backfill may cover ({MAX_DAYS}); split it")


def backfill_connections(store: StateStore, request: BackfillRequest) -> list[str]:
    """The active connections the backfill covers; a connection that needs re-authorization would only fail."""
    connections = [
        c
        for c in store.list_connections(provider=request.provider, statuses=(ConnectionStatus.ACTIVE,))
        if request.tenant is None or c.tenant == request.tenant
    ]
    if not connections:
        whose = f"tenant {request.tenant!r}" if request.tenant else "any tenant"
        raise BackfillError(f"{whose} has no active {request.provider} connection to backfill")
    return [c.id for c in connections]


def target_partitions(request: BackfillRequest, connection_ids: list[str]) -> set[AssetKeyPartitionKey]:
    """Every (asset, partition) of the provider the backfill materializes."""
    targets = set()
    for spec in (entity for entity in ENTITIES if entity.provider == request.provider):
        key = dg.AssetKey(spec.asset_name)
        if spec.partitioned_by_day:
            targets |= {
                AssetKeyPartitionKey(key, dg.MultiPartitionKey({CONNECTION: connection_id, DAY: day}))
                for connection_id in connection_ids
                for day in request.days
            }
        else:
            targets |= {AssetKeyPartitionKey(key, connection_id) for connection_id in connection_ids}
    return targets


def launch_backfill(
    instance: dg.DagsterInstance,
    definitions: dg.Definitions,
    store: StateStore,
    request: BackfillRequest,
    *,
    actor: str,
) -> LaunchedBackfill:
    validate(request)
    connection_ids = backfill_connections(store, request)
    # The connections sensor registers partitions within seconds of a connect; a backfill need not wait for it.
    partitions_name = str(connection_partitions(request.provider).name)
    known = set(instance.get_dynamic_partitions(partitions_name))
    instance.add_dynamic_partitions(partitions_name, [c for c in connection_ids if c not in known])

    targets = target_partitions(request, connection_ids)
    asset_graph = definitions.resolve_asset_graph()
    backfill = PartitionBackfill.from_asset_graph_subset(
        backfill_id=make_new_backfill_id(),
        backfill_timestamp=get_current_timestamp(),
        tags={"provider": request.provider, "trigger": "backfill"},
        dynamic_partitions_store=instance,
        asset_graph_subset=AssetGraphSubset.from_asset_partition_set(targets, asset_graph),
        title=request.title[:100],
        description=f"Backfill of {request.title}, launched by {actor}",
        run_config=None,
    )
    instance.add_backfill(backfill)
    counts: dict[str, int] = {}
    for target in targets:
        counts[target.asset_key.to_user_string()] = counts.get(target.asset_key.to_user_string(), 0) + 1
    with store.engine.begin() as conn:
        store.audit(
            conn,
            "backfill.launched",
            actor=actor,
            tenant=request.tenant,
            provider=request.provider,
            detail={
                "backfill_id": backfill.backfill_id,
                "from": request.first_day.isoformat(),
                "to": request.last_day.isoformat(),
                "connections": connection_ids,
                "partitions": counts,
            },
        )
    return LaunchedBackfill(backfill.backfill_id, connection_ids, dict(sorted(counts.items())))


def parse_day(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise BackfillError(f"{option} {text!r} is not a day like 2025-03-01") from None


@contextmanager
def open_instance() -> Iterator[dg.DagsterInstance]:
    """The Dagster instance of DAGSTER_HOME (the one the UI and the daemon use)."""
    if not os.environ.get("DAGSTER_HOME"):
        raise BackfillError("DAGSTER_HOME is not set: point it at the Dagster instance (`make dev` uses .data/dagster)")
    try:
        instance = dg.DagsterInstance.get()
    except DagsterError as error:
        raise BackfillError(
            f"the Dagster instance at DAGSTER_HOME cannot be opened: {str(error).splitlines()[0]}"
        ) from None
    with instance:
        yield instance
