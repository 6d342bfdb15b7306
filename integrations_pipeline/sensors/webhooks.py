"""`webhook_events_sensor`: turns inbox events into the smallest runs that bring their tables up to date, and
follows each run to its outcome.

Every tick does two things, each bounded:
1. Follow up: for each batch of events left `requested`, find its run (by the WEBHOOK_RUN_TAG every request
   carries). It succeeded: the events are done. It failed (and Dagster will not retry it) or was canceled: the
   events fail with the run's failure message, and the store retries them (the same tick requests them again) or
   dead-letters them at the 5th failure. A rate-limited run (tagged with when the provider's wait ends) keeps its
   events requested until then.
   A request with no run at all (the daemon died between this sensor's answer and the launch) is emitted again with
   the same run_key, so Dagster launches it at most once.
2. Request: read pending `change` and `missed` events after the cursor, group them by connection, entity and
   partition set, mark each group `requested` under a run_key derived from its events, and emit one RunRequest per
   group (its partition, or its connection's range of days), targeting exactly the entity's asset.

The status column is the source of truth; the cursor (`WebhookCursor`) only spreads a large backlog over several
ticks. PostgreSQL can commit ids out of order (a row with a lower id becomes visible after higher ones were read), a
failed event returns to pending under its old id, and held events stay behind: so when a scan reaches the end of
the pending rows the cursor goes back to 0 and the next tick starts a new pass. Nothing is skipped for good.

Events with no day for a day-partitioned entity (Microsoft and Google say "something changed in this calendar")
sync the live days the hourly events schedule keeps current (yesterday, today, tomorrow), counted from the day the
event was received, so a re-evaluation computes the same partitions.
"""

import hashlib
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster._core.storage.dagster_run import DagsterRun
from pydantic import BaseModel, ValidationError

from integrations_pipeline.assets.entities import RETRY_AT_TAG
from integrations_pipeline.clients.providers import ENTITIES
from integrations_pipeline.clients.spec import EntitySpec
from integrations_pipeline.partitions import DAYS, connection_partitions
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.schedules import batch_request, live_event_days
from integrations_pipeline.store import Connection, ConnectionStatus
from integrations_pipeline.store.inbox import InboxEvent, WebhookInbox

WEBHOOK_SENSOR_INTERVAL_S = 30
RUN_KINDS = ("change", "missed")  # "lifecycle" rows belong to the push subscriptions sensor
PAGE_SIZE = 1_000
MAX_EVENTS_PER_TICK = 5_000
# Dagster cancels a sensor evaluation after 60 s by default: reading stops well before, leaving time to record.
TICK_BUDGET_S = 15.0
MAX_BATCHES_FOLLOWED = 500
MARK_CHUNK = 500  # ids per UPDATE ... IN (...), far below SQLite's bound-parameter limit
WEBHOOK_RUN_TAG = "integrations/webhook_run"
CAUSE_LIMIT = 500

SPECS: dict[tuple[str, str], EntitySpec] = {(spec.provider, spec.entity): spec for spec in ENTITIES}
FAILED = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
WILL_RETRY_TAG = "dagster/will_retry"


class WebhookCursor(BaseModel):
    """Where the scan of pending events resumes; 0 starts a new pass over every pending row."""

    after_id: int = 0

    @classmethod
    def parse(cls, raw: str | None) -> "WebhookCursor":
        try:
            return cls.model_validate_json(raw) if raw else cls()
        except ValidationError:
            return cls()  # an unreadable cursor costs one fresh pass, nothing more


@dataclass(frozen=True)
class Target:
    """The asset partitions one batch of events brings up to date."""

    provider: str
    connection_id: str
    entity: str
    days: tuple[str, ...]  # day partitions for day-partitioned entities, () for connection-wide ones

    @property
    def spec(self) -> EntitySpec:
        return SPECS[(self.provider, self.entity)]


class Route(Enum):
    RUN = "run"
    HOLD = "hold"  # stays pending: the connection needs re-authorization or its partition is not added yet
    DROP = "drop"  # names nothing that can be synced (no or unknown connection, disconnected, unknown entity or day)


def batch_key(target: Target, events: Iterable[InboxEvent]) -> str:
    """Deterministic from the events it covers: their ids and last transition times, so a re-evaluation over the
    same rows gives the same key while a retry or a replay (which moves updated_at) gives a new one."""
    digest = hashlib.sha256(repr(target).encode())
    for event in sorted(events, key=lambda e: e.id):
        digest.update(f"|{event.id}@{event.updated_at.isoformat()}".encode())
    return f"webhooks:{target.spec.asset_name}:{digest.hexdigest()[:24]}"


def run_request(
    target: Target, key: str, jobs: Mapping[tuple[str, bool], UnresolvedAssetJobDefinition]
) -> dg.RunRequest:
    """The batch's one run: its partition, or its connection's range of days (the live days are consecutive).
    A single partition carries its resolved partition tags and a range its range tags, so Dagster does not
    validate the request against the whole partition list (Router.route already checked the partition exists)."""
    return batch_request(
        [target.connection_id],
        target.days,
        job_name=jobs[(target.provider, target.spec.partitioned_by_day)].name,
        asset_selection=[dg.AssetKey(target.spec.asset_name)],
        run_key=key,
        tags={"provider": target.provider, "trigger": "webhook", WEBHOOK_RUN_TAG: key},
    )


class Router:
    """Decides, per event, which partitions it needs, with the connections and partitions read once per tick."""

    def __init__(self, context: dg.SensorEvaluationContext, integrations: IntegrationsResource) -> None:
        self.context = context
        self.integrations = integrations
        self._connections: dict[str, Connection | None] = {}
        self._partitions: dict[str, set[str]] = {}

    def prefetch(self, events: Iterable[InboxEvent]) -> None:
        """Read the connections a page of events names in one query (one query per event cost most of a tick)."""
        wanted = {event.connection_id for event in events if event.connection_id} - set(self._connections)
        found = self.integrations.store.get_connections(wanted)
        self._connections.update({connection_id: found.get(connection_id) for connection_id in wanted})

    def connection(self, connection_id: str) -> Connection | None:
        if connection_id not in self._connections:
            self._connections[connection_id] = self.integrations.store.get_connection(connection_id)
        return self._connections[connection_id]

    def partition_added(self, provider: str, connection_id: str) -> bool:
        if provider not in self._partitions:
            name = connection_partitions(provider).name
            assert name is not None
            self._partitions[provider] = set(self.context.instance.get_dynamic_partitions(name))
        return connection_id in self._partitions[provider]

    def target(self, event: InboxEvent) -> Target | None:
        """The partitions the event needs synced, or None where it names nothing a table holds (no or unknown
        connection, an entity the provider has no asset for, a day outside the partitions)."""
        connection = self.connection(event.connection_id) if event.connection_id else None
        spec = SPECS.get((connection.provider, event.entity)) if connection and event.entity else None
        if connection is None or spec is None:
            return None
        days: tuple[str, ...] = ()
        if spec.partitioned_by_day:
            if event.partition_key is None:
                days = tuple(live_event_days(event.received_at))
            elif DAYS.has_partition_key(event.partition_key):
                days = (event.partition_key,)
            else:
                return None
        return Target(spec.provider, connection.id, spec.entity, days)

    def route(self, event: InboxEvent) -> tuple[Route, Target | None]:
        target = self.target(event)
        connection = self.connection(event.connection_id) if target is not None and event.connection_id else None
        if target is None or connection is None or connection.status == ConnectionStatus.DISCONNECTED:
            return Route.DROP, None
        if connection.status != ConnectionStatus.ACTIVE or not self.partition_added(target.provider, connection.id):
            return Route.HOLD, None
        return Route.RUN, target


def failure_cause(instance: dg.DagsterInstance, run: DagsterRun) -> str:
    """The run's own failure message (a step's Failure description or innermost error), one line, bounded. Our
    connectors' errors and Failure descriptions never carry a secret; neither, then, does the cause."""
    if run.status == dg.DagsterRunStatus.CANCELED:
        return f"run {run.run_id} was canceled"
    for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        event = entry.dagster_event
        data = event.step_failure_data if event is not None else None
        if data is None:
            continue
        if data.user_failure_data is not None and data.user_failure_data.description:
            message = data.user_failure_data.description
        else:
            error = data.error
            while error is not None and error.cause is not None:
                error = error.cause
            message = error.message if error is not None else "unknown error"
        line = " ".join(message.split())
        return f"{event.step_key}: {line}"[:CAUSE_LIMIT]  # type: ignore[union-attr]
    return f"run {run.run_id} failed"


def still_waiting(run: DagsterRun, now: str) -> bool:
    """Dagster will retry the run, or the provider asked for a long wait (the run is tagged with its end): the
    events stay requested until then, so a rate limit does not burn their attempts in minutes."""
    return run.tags.get(WILL_RETRY_TAG) == "true" or run.tags.get(RETRY_AT_TAG, "") > now


def follow_requested(
    context: dg.SensorEvaluationContext,
    inbox: WebhookInbox,
    router: Router,
    jobs: Mapping[tuple[str, bool], UnresolvedAssetJobDefinition],
) -> list[dg.RunRequest]:
    """Settle finished batches; re-emit requests whose run was never launched."""
    batches: dict[str, Target] = {}
    firsts = inbox.requested_batches(limit=MAX_BATCHES_FOLLOWED)
    router.prefetch(firsts)
    for first in firsts:
        target = router.target(first)
        assert first.run_key is not None
        if target is None:  # its connection is gone since: nothing left to sync
            inbox.complete(first.run_key)
            continue
        batches[first.run_key] = target
    if not batches:
        return []
    now = datetime.now(UTC).isoformat(timespec="seconds")
    newest: dict[str, DagsterRun] = {}
    for found in context.instance.get_runs(filters=dg.RunsFilter(tags={WEBHOOK_RUN_TAG: list(batches)})):
        newest.setdefault(found.tags[WEBHOOK_RUN_TAG], found)  # runs come newest first: a retry run wins
    again: list[dg.RunRequest] = []
    for key, target in batches.items():
        run = newest.get(key)
        if run is None:
            again.append(run_request(target, key, jobs))
        elif not run.is_finished or still_waiting(run, now):
            continue
        elif run.status in FAILED:
            retried, dead = inbox.fail(key, failure_cause(context.instance, run))
            context.log.info(f"{key}: run failed; {retried} events will be retried, {dead} dead-lettered")
        else:
            context.log.info(f"{key}: {inbox.complete(key)} events done")
    return again


def request_pending(
    context: dg.SensorEvaluationContext,
    inbox: WebhookInbox,
    router: Router,
    cursor: WebhookCursor,
    deadline: float,
    jobs: Mapping[tuple[str, bool], UnresolvedAssetJobDefinition],
) -> tuple[list[dg.RunRequest], WebhookCursor]:
    batches: dict[Target, list[InboxEvent]] = defaultdict(list)
    dropped: list[int] = []
    held = read = 0
    after = cursor.after_id
    while read < MAX_EVENTS_PER_TICK and time.monotonic() < deadline:
        limit = min(PAGE_SIZE, MAX_EVENTS_PER_TICK - read)
        page = inbox.pending(limit=limit, kinds=RUN_KINDS, after_id=after)
        read += len(page)
        router.prefetch(page)
        for event in page:
            route, target = router.route(event)
            if target is not None:
                batches[target].append(event)
            elif route == Route.DROP:
                dropped.append(event.id)
            else:
                held += 1
        if len(page) < limit:
            after = 0  # the pass reached the newest pending row: the next tick starts over
            break
        after = page[-1].id
    for ids in chunks(dropped):
        inbox.mark_done(ids)
    keys = {target: batch_key(target, events) for target, events in batches.items()}
    inbox.mark_requested_batches({keys[target]: [event.id for event in events] for target, events in batches.items()})
    requests = [run_request(target, key, jobs) for target, key in keys.items()]
    context.log.info(
        f"read {read} pending events: {sum(map(len, batches.values()))} in {len(batches)} batches, "
        f"{held} held, {len(dropped)} with nothing to sync"
    )
    return requests, WebhookCursor(after_id=after)


def chunks(ids: Sequence[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), MARK_CHUNK):
        yield list(ids[start : start + MARK_CHUNK])


def build_webhook_events_sensor(
    jobs_by_provider: Mapping[str, Mapping[bool, UnresolvedAssetJobDefinition]],
) -> dg.SensorDefinition:
    """`jobs_by_provider` maps each provider to its {partitioned_by_day: sync job}."""
    jobs = {
        (provider, by_day): job
        for provider, by_day_jobs in jobs_by_provider.items()
        for by_day, job in by_day_jobs.items()
    }

    @dg.sensor(
        name="webhook_events_sensor",
        minimum_interval_seconds=WEBHOOK_SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        jobs=list(jobs.values()),
        description="Turns webhook events in the inbox into one run per batch (a partition, or a connection's "
        "live days) of exactly the changed asset, and marks the events done, retried or dead-lettered by the "
        "outcome of their runs.",
    )
    def webhook_events_sensor(
        context: dg.SensorEvaluationContext, integrations: IntegrationsResource
    ) -> dg.SensorResult:
        deadline = time.monotonic() + TICK_BUDGET_S
        inbox = WebhookInbox(integrations.store)
        router = Router(context, integrations)
        again = follow_requested(context, inbox, router, jobs)
        requests, cursor = request_pending(context, inbox, router, WebhookCursor.parse(context.cursor), deadline, jobs)
        return dg.SensorResult(run_requests=[*again, *requests], cursor=cursor.model_dump_json())

    return webhook_events_sensor
