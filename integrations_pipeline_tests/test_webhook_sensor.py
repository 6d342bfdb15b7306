"""webhook_events_sensor on a real DagsterInstance, evaluated for real, its runs executed against the sandbox: one run
per batch even when evaluated twice, grouping by connection, entity and partition, bounded ticks over a 100,000-event
backlog, and failure -> retry -> dead letter -> replay -> success."""

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg
import duckdb
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from pydantic import SecretStr

from integrations_pipeline.cli import main
from integrations_pipeline.definitions import build_definitions
from integrations_pipeline.partitions import CONNECTION, DAY, connection_partitions
from integrations_pipeline.schedules import live_event_days
from integrations_pipeline.sensors.webhooks import MAX_EVENTS_PER_TICK, TICK_BUDGET_S, WebhookCursor
from integrations_pipeline.store import ConnectionStatus, StateStore, TokenSet, schema
from integrations_pipeline.store.inbox import MAX_ATTEMPTS, InboxStatus, NewEvent, WebhookInbox
from integrations_pipeline.store.repository import utcnow
from integrations_pipeline_tests.conftest import Stack
from integrations_pipeline_tests.sensor_daemon import SensorDaemon

DAY_KEY = datetime.now(UTC).date().isoformat()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def change(
    event_id: str,
    connection_id: str | None,
    entity: str | None = "contacts",
    day: str | None = None,
    kind: str = "change",
    source: str = "hubspot",
) -> NewEvent:
    return NewEvent(source, event_id, kind, connection_id, entity, day, {"source_ids": [event_id]})


def connect(stack: Stack, instance: dg.DagsterInstance, provider: str = "hubspot", tenant: str = "acme") -> str:
    connection_id = stack.connect(tenant, provider)
    instance.add_dynamic_partitions(str(connection_partitions(provider).name), [connection_id])
    return connection_id


def test_the_sensor_evaluated_twice_over_the_same_batch_launches_one_run(
    stack: Stack, instance: dg.DagsterInstance
) -> None:
    connection_id = connect(stack, instance)
    inbox = WebhookInbox(stack.store)
    inbox.receive([change(str(n), connection_id) for n in (3, 17, 120)])
    daemon = SensorDaemon(build_definitions(), instance)

    crashed = daemon.requests(record_cursor=False)  # the daemon dies before recording the tick or launching
    again = daemon.requests()
    assert [r.run_key for r in again] == [r.run_key for r in crashed]
    (request,) = again
    assert request.asset_selection == [dg.AssetKey("hubspot_contacts")]
    assert (request.partition_key, request.job_name) == (connection_id, "hubspot_sync")

    assert daemon.launch(crashed[0]) is not None
    assert daemon.launch(request) is None  # the instance already holds this run_key's run
    assert daemon.tick() == []  # the run exists: nothing re-emitted, nothing launched
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"integrations/webhook_run": str(request.run_key)}))
    assert len(runs) == 1 and runs[0].is_success
    assert inbox.depth() == {"pending": 0, "requested": 0, "done": 3, "dead": 0}
    assert daemon.requests() == []


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_events_group_by_connection_entity_and_partition(stack: Stack, instance: dg.DagsterInstance) -> None:
    hubspot, microsoft = connect(stack, instance), connect(stack, instance, "microsoft")
    held = connect(stack, instance, tenant="beta")
    with stack.store.write() as conn:
        stack.store.set_status(conn, held, ConnectionStatus.NEEDS_REAUTH, "test")
    inbox = WebhookInbox(stack.store)
    inbox.receive(
        [
            change("c1", hubspot),
            change("c2", hubspot),
            change("u1", hubspot, "users"),
            change("e1", hubspot, "events", DAY_KEY),
            change("e2", hubspot, "events", DAY_KEY),
            change("m1", microsoft, "events", kind="missed", source="microsoft"),  # no day: the live days
            change("c3", microsoft, source="microsoft"),
            change("s1", hubspot, source="standard:crm"),  # routed by its connection, whatever the sender
            change("h1", held),  # waits for the reconnect
            change("l1", microsoft, kind="lifecycle", source="microsoft"),  # the push sensor's
            change("x1", "hubspot-nobody"),  # no such connection: nothing to sync
            change("x2", hubspot, "invoices"),
            change("x3", hubspot, "events", "1999-01-01"),
            change("x4", None),
        ]
    )
    requests = SensorDaemon(build_definitions(), instance).requests()
    targets = sorted(
        (
            str(
                r.partition_key or f"{r.tags[ASSET_PARTITION_RANGE_START_TAG]}..{r.tags[ASSET_PARTITION_RANGE_END_TAG]}"
            ),
            r.asset_selection[0].path[0],  # type: ignore[index]
        )
        for r in requests
    )
    live = live_event_days(utcnow())
    first, last = (str(dg.MultiPartitionKey({CONNECTION: microsoft, DAY: day})) for day in (live[0], live[-1]))
    assert targets == sorted(
        [
            (hubspot, "hubspot_contacts"),
            (hubspot, "hubspot_users"),
            (str(dg.MultiPartitionKey({CONNECTION: hubspot, DAY: DAY_KEY})), "hubspot_events"),
            (microsoft, "microsoft_contacts"),
            (f"{first}..{last}", "microsoft_events"),  # the live days in one run
        ]
    )
    assert len({r.run_key for r in requests}) == len(requests)
    by_status = {e.event_id: e.status for e in [*inbox.pending(limit=100), *inbox.requested()]}
    assert {event for event, status in by_status.items() if status == InboxStatus.PENDING} == {"h1", "l1"}
    contacts = inbox.requested(
        run_key=next(r.run_key for r in requests if r.partition_key == hubspot and "contacts" in str(r.asset_selection))
    )  # type: ignore[arg-type]
    assert sorted(e.event_id for e in contacts) == ["c1", "c2", "s1"]
    assert inbox.depth()["done"] == 4


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_backlog_of_100000_events_drains_in_bounded_ticks(
    store: StateStore, store_url: str, key_spec: str, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INTEGRATIONS_STATE_DATABASE_URL", store_url)
    monkeypatch.setenv("INTEGRATIONS_ENCRYPTION_KEYS", key_spec)
    tokens = TokenSet(access_token=SecretStr("a"), refresh_token=None, expires_at=None)
    with store.write() as conn:
        connections = [
            store.save_connection(
                conn, tenant=f"t{n}", provider="hubspot", requested_scopes=[], granted_scopes=[], tokens=tokens
            ).id
            for n in range(10)
        ]
    instance.add_dynamic_partitions(str(connection_partitions("hubspot").name), connections)
    now, total = utcnow(), 100_000
    rows = [
        {
            "source": "hubspot",
            "event_id": str(n),
            "kind": "change",
            "connection_id": connections[n % 10],
            "entity": ("contacts", "users")[n % 2],
            "partition_key": None,
            "payload": {"source_ids": [str(n)]},
            "status": "pending",
            "attempts": 0,
            "received_at": now,
            "updated_at": now,
        }
        for n in range(total)
    ]
    with store.engine.begin() as conn:
        conn.execute(schema.webhook_inbox.insert(), rows)  # executemany
    inbox, daemon = WebhookInbox(store), SensorDaemon(build_definitions(), instance)
    ticks, slowest = 0, 0.0
    while inbox.depth()["pending"]:
        before = inbox.depth()["requested"]
        started = time.monotonic()
        daemon.evaluate()
        slowest = max(slowest, time.monotonic() - started)
        ticks += 1
        assert 0 < inbox.depth()["requested"] - before <= MAX_EVENTS_PER_TICK
        assert ticks <= total // MAX_EVENTS_PER_TICK
    assert ticks == total // MAX_EVENTS_PER_TICK and inbox.depth()["requested"] == total
    assert slowest < TICK_BUDGET_S, slowest
    assert WebhookCursor.parse(daemon.cursor).after_id == total  # the last full page: the scan goes on from here
    daemon.evaluate()  # finds nothing after it, so the next pass starts over
    assert WebhookCursor.parse(daemon.cursor).after_id == 0


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_the_cursor_never_hides_a_row_committed_late_or_retried(stack: Stack, instance: dg.DagsterInstance) -> None:
    connection_id = connect(stack, instance)
    inbox = WebhookInbox(stack.store)
    inbox.receive([change("a", connection_id)])
    daemon = SensorDaemon(build_definitions(), instance)
    daemon.cursor = WebhookCursor(after_id=10_000).model_dump_json()  # far past the row, as after a later commit
    assert daemon.requests() == []  # this pass ends: the cursor wraps to 0
    assert len(daemon.requests()) == 1
    assert daemon.requests(record_cursor=False) != []  # requested, no run yet: emitted again
    daemon.cursor = "not json"
    assert len(daemon.requests()) == 1  # an unreadable cursor only costs a fresh pass


def warehouse_contacts(stack: Stack) -> set[str]:
    with duckdb.connect(str(stack.settings.warehouse_path)) as connection:
        return {row[0] for row in connection.execute("SELECT source_id FROM hubspot.contacts").fetchall()}


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_failures_retry_then_dead_letter_then_replay_runs_again(
    stack: Stack, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection_id = connect(stack, instance)
    monkeypatch.setenv("INTEGRATIONS_CATALOG_MAX_AGE_S", "3600")  # each run's first call is then its data call
    with stack.api() as api:  # the field catalog, discovered now: no run rediscovers it
        assert api.get(f"/connections/{connection_id}/fields").status_code == 200
    inbox, daemon = WebhookInbox(stack.store), SensorDaemon(build_definitions(), instance)
    new_id = stack.emulator.create_contact({"email": "pushed@example.com", "firstname": "Pushed"})
    stack.emulator.fail_next(MAX_ATTEMPTS, status=403)  # one refused call per run: the run fails at once
    inbox.receive([change(new_id, connection_id)])
    (run,) = daemon.tick()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert not run.success
        launched = daemon.tick()  # records the failure, and requests the retry in the same tick
        if attempt < MAX_ATTEMPTS:
            (event,) = inbox.requested()
            assert event.attempts == attempt and "HTTP 403" in (event.last_error or ""), event.last_error
            (run,) = launched
        else:
            assert launched == []
    (letter,) = inbox.dead_letters()
    assert letter.attempts == MAX_ATTEMPTS and letter.cause.startswith(f"hubspot_contacts: {connection_id}: ")
    assert stack.client_secrets().isdisjoint(letter.cause.split())
    assert daemon.tick() == []  # a dead event asks for no run

    runner = CliRunner()
    listed = runner.invoke(main, ["dlq", "list"])
    assert listed.exit_code == 0 and listed.output.startswith(f"{letter.id}\thubspot\t{connection_id}\tcontacts")
    replayed = runner.invoke(main, ["dlq", "replay", "--id", str(letter.id)])
    assert replayed.exit_code == 0 and replayed.output.startswith("replayed 1 dead letters")
    (run,) = daemon.tick()
    assert run.success
    daemon.tick()
    assert inbox.depth() == {"pending": 0, "requested": 0, "done": 1, "dead": 0}
    assert new_id in warehouse_contacts(stack)
    assert runner.invoke(main, ["dlq", "list"]).output == "no dead letters\n"
    (entry,) = [e for e in stack.store.audit_entries() if e.action == "dead_letters.replayed"]
    assert entry.actor == "cli" and entry.detail == {"dead_letter_ids": [letter.id]}


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_disconnected_or_vanished_connection_settles_its_requested_events(
    stack: Stack, instance: dg.DagsterInstance
) -> None:
    connection_id = connect(stack, instance)
    inbox = WebhookInbox(stack.store)
    inbox.receive([change("a", connection_id)])
    daemon = SensorDaemon(build_definitions(), instance)
    assert len(daemon.requests()) == 1
    with stack.store.write() as conn:
        conn.execute(sa.delete(schema.sync_cursors))
        conn.execute(sa.update(schema.webhook_inbox).values(connection_id="hubspot-gone"))
    assert daemon.requests() == []
    assert inbox.depth()["done"] == 1
