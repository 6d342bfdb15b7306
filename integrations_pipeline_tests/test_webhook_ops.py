"""Dead letters and inbox upkeep from the operator's side: `dlq` CLI outputs and refusals, the replay_dead_letters
job, the purge schedule's job, and the `missed_webhooks` count of an incremental sync."""

from collections.abc import Iterator
from datetime import timedelta

import dagster as dg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from integrations_pipeline.cli import main
from integrations_pipeline.definitions import build_definitions
from integrations_pipeline.partitions import connection_partitions
from integrations_pipeline.store import schema
from integrations_pipeline.store.inbox import MAX_ATTEMPTS, NewEvent, WebhookInbox
from integrations_pipeline.store.push import PushSubscriptions
from integrations_pipeline.store.repository import utcnow
from integrations_pipeline_tests.conftest import Stack

SQLITE = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # PostgreSQL adds nothing here


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def dead_letter(inbox: WebhookInbox, event_id: str) -> None:
    inbox.receive([NewEvent("hubspot", event_id, "change", "hubspot-acme", "contacts", None, {"source_ids": []})])
    (event,) = [e for e in inbox.pending(limit=100) if e.event_id == event_id]
    for attempt in range(MAX_ATTEMPTS):
        inbox.mark_requested([event.id], f"{event_id}-{attempt}")
        inbox.fail(f"{event_id}-{attempt}", "hubspot_contacts: HTTP 403\tforbidden")


@SQLITE
def test_dlq_cli_lists_replays_and_refuses_in_one_line(stack: Stack) -> None:
    inbox, runner = WebhookInbox(stack.store), CliRunner()
    assert runner.invoke(main, ["dlq", "list"]).output == "no dead letters\n"
    dead_letter(inbox, "a")
    dead_letter(inbox, "b")
    first, second = inbox.dead_letters()
    lines = runner.invoke(main, ["dlq", "list"]).output.splitlines()
    assert len(lines) == 2 and lines[0].endswith("\twaiting\thubspot_contacts: HTTP 403 forbidden")
    for args, message in [
        ([], "not both and not neither"),
        (["--all", "--id", "1"], "not both and not neither"),
        (["--id", "999"], "no unreplayed dead letter with id 999"),
        (["--id", "x"], "'x' is not a valid integer"),
    ]:
        refused = runner.invoke(main, ["dlq", "replay", *args])
        assert refused.exit_code in (1, 2) and message in refused.output and "Traceback" not in refused.output
    assert runner.invoke(main, ["dlq", "replay", "--id", "999"]).exit_code == 1
    assert len(inbox.dead_letters()) == 2  # a refusal replays nothing
    assert runner.invoke(main, ["dlq", "replay", "--id", str(first.id)]).output.startswith("replayed 1 ")
    assert runner.invoke(main, ["dlq", "replay", "--id", str(first.id)]).exit_code == 1  # not waiting any more
    assert "replayed" in runner.invoke(main, ["dlq", "list", "--include-replayed"]).output
    assert [letter.id for letter in inbox.dead_letters()] == [second.id]


def test_dlq_cli_with_the_database_down_is_one_line(monkeypatch: pytest.MonkeyPatch, key_spec: str) -> None:
    monkeypatch.setenv("INTEGRATIONS_STATE_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("INTEGRATIONS_ENCRYPTION_KEYS", key_spec)
    result = CliRunner().invoke(main, ["dlq", "list"])
    assert result.exit_code == 1 and result.output.strip().endswith(
        "the state database is unreachable: check INTEGRATIONS_STATE_DATABASE_URL"
    )


@SQLITE
def test_the_replay_job_replays_and_audits(stack: Stack, instance: dg.DagsterInstance) -> None:
    inbox = WebhookInbox(stack.store)
    dead_letter(inbox, "a")
    job = build_definitions().resolve_job_def("replay_dead_letters")
    refused = job.execute_in_process(instance=instance, raise_on_error=False)
    assert not refused.success and len(inbox.dead_letters()) == 1
    config = {"ops": {"replay_dead_letters_op": {"config": {"all": True}}}}
    assert job.execute_in_process(run_config=config, instance=instance).success
    assert inbox.dead_letters() == [] and inbox.depth()["pending"] == 1
    (entry,) = [e for e in stack.store.audit_entries() if e.action == "dead_letters.replayed"]
    assert entry.actor == "dagster"


@SQLITE
def test_the_purge_forgets_only_done_events_past_the_window(stack: Stack, instance: dg.DagsterInstance) -> None:
    definitions = build_definitions()
    assert definitions.resolve_schedule_def("webhook_inbox_purge").job_name == "purge_webhook_inbox"
    inbox = WebhookInbox(stack.store)
    inbox.receive([NewEvent("hubspot", n, "change", None, None, None, {}) for n in ("old", "new", "old-pending")])
    events = {e.event_id: e.id for e in inbox.pending(limit=10)}
    inbox.mark_done([events["old"], events["new"]])
    with stack.store.write() as conn:
        old = schema.webhook_inbox.c.event_id.in_(["old", "old-pending"])
        conn.execute(sa.update(schema.webhook_inbox).where(old).values(received_at=utcnow() - timedelta(days=9)))
    assert definitions.resolve_job_def("purge_webhook_inbox").execute_in_process(instance=instance).success
    assert inbox.depth() == {"pending": 1, "requested": 0, "done": 1, "dead": 0}


@SQLITE
def test_missed_webhooks_counts_changes_no_webhook_named(stack: Stack, instance: dg.DagsterInstance) -> None:
    connection_id = stack.connect("acme", "hubspot")
    instance.add_dynamic_partitions(str(connection_partitions("hubspot").name), [connection_id])
    job = build_definitions().resolve_job_def("hubspot_sync")

    def contacts_metadata() -> dict[str, object]:
        result = job.execute_in_process(partition_key=connection_id, instance=instance)
        return {k: v.value for k, v in result.asset_materializations_for_node("hubspot_contacts")[0].metadata.items()}

    contacts_metadata()  # full: the cursor starts here
    assert "missed_webhooks" not in contacts_metadata()  # no push subscription: polling is the only path
    PushSubscriptions(stack.store).create(
        connection_id=connection_id,
        provider="hubspot",
        entity="contacts",
        resource="contacts",
        expires_at=utcnow() + timedelta(days=1),
    )
    changed = [stack.emulator.create_contact({"email": f"m{n}@example.com", "firstname": "M"}) for n in range(3)]
    WebhookInbox(stack.store).receive(
        [NewEvent("hubspot", "n1", "change", connection_id, "contacts", None, {"source_ids": [changed[0]]})]
    )
    metadata = contacts_metadata()
    assert metadata["rows_fetched"] == 3 and metadata["missed_webhooks"] == 2
