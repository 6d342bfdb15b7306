"""Backfills: the CLI records a real Dagster asset backfill (what the UI lists, with its partitions), Dagster's own
backfill daemon code executes it, events go one connection's range of days per run, and the tables end exactly as
the original syncs left them, with the live cursors untouched."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from dagster._core.execution.backfill import BulkActionStatus

from integrations_pipeline.assets.entities import BACKFILL_TAG
from integrations_pipeline.cli import main
from integrations_pipeline.partitions import connection_partitions
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.store import ConnectionStatus
from integrations_pipeline_tests.backfill_driver import IN_PROCESS_RUNS, events_key, execute_backfill, sync
from integrations_pipeline_tests.conftest import Stack

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.parametrize("store_url", ["sqlite"], indirect=True),
    # Dagster's own snapshot of a schedule (taken by the daemon's workspace) reads its own deprecated property.
    pytest.mark.filterwarnings("ignore:Property `ScheduleDefinition.environment_vars`:DeprecationWarning"),
]


DAYS_30 = [f"2025-03-{day:02d}" for day in range(1, 31)]


@contextmanager
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: dict[str, Any]) -> Iterator[Path]:
    """A DAGSTER_HOME for the CLI and the test to share (the CLI opens the instance from it, as in production)."""
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump({**overrides, "telemetry": {"enabled": False}}))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    yield home


def table(name: str, connection_id: str) -> pd.DataFrame:
    rows = IntegrationsResource().read_partition(name, [connection_id])
    assert rows is not None
    return rows.sort_values(["connection_id", "source_id"], ignore_index=True)


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_a_30_day_backfill_from_the_cli_rewrites_exactly_what_the_syncs_wrote(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection_id = stack.connect("acme")
    stack.connect("beta")  # another tenant: the backfill for acme never touches it
    with dagster_home(tmp_path, monkeypatch, IN_PROCESS_RUNS), dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(connection_partitions("hubspot").name, [connection_id])
        sync(instance, "hubspot_sync", connection_id)
        for day in DAYS_30:
            sync(instance, "hubspot_events_sync", events_key(connection_id, day))
        original = {
            name: table(name, connection_id) for name in ("hubspot.users", "hubspot.contacts", "hubspot.events")
        }
        assert len(original["hubspot.events"]) > 10  # the sandbox has a meeting every other day or so
        cursors = {
            (entity, day): stack.store.get_cursor(connection_id, entity, day)
            for entity, day in [("users", ""), ("contacts", ""), *(("events", day) for day in DAYS_30)]
        }
        runs_before = len(instance.get_run_records())

        code, output = cli(
            "backfill", "--provider", "hubspot", "--tenant", "acme", "--from", "2025-03-01", "--to", "2025-03-30"
        )
        assert code == 0, output
        backfill_id = output.split()[1]
        assert output.strip() == (
            f"backfill {backfill_id} launched for {connection_id} "
            "(hubspot_contacts: 1, hubspot_events: 30, hubspot_users: 1)"
        )

        # What the UI's backfills page shows: a backfill record with its assets and partitions.
        backfill = instance.get_backfill(backfill_id)
        assert backfill is not None and backfill.status == BulkActionStatus.REQUESTED
        assert backfill.title == "hubspot acme 2025-03-01..2025-03-30"
        targets = backfill.asset_backfill_data.target_subset  # type: ignore[union-attr]
        events = targets.get_partitions_subset(dg.AssetKey("hubspot_events"))
        assert set(events.get_partition_keys()) == {str(events_key(connection_id, day)) for day in DAYS_30}
        assert set(targets.get_partitions_subset(dg.AssetKey("hubspot_contacts")).get_partition_keys()) == {
            connection_id
        }
        entries = stack.store.audit_entries(action="backfill.launched")
        assert [(e.actor, e.tenant, e.provider, e.detail["backfill_id"]) for e in entries] == [
            ("cli", "acme", "hubspot", backfill_id)
        ]

        execute_backfill(instance, backfill_id)
        runs = instance.get_run_records(dg.RunsFilter(tags={BACKFILL_TAG: backfill_id}))
        # One run for the 30 days of events (single-run policy), one for users and contacts of the connection.
        assert len(runs) == 2 == len(instance.get_run_records()) - runs_before
        for name, frame in original.items():
            pd.testing.assert_frame_equal(table(name, connection_id), frame, check_dtype=False)
        # The source is unchanged, so rewriting leaves every table as it was; the live cursors never moved.
        assert {key: stack.store.get_cursor(connection_id, key[0], key[1]) for key in cursors} == cursors


def test_a_provider_backfill_covers_every_active_tenant(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    acme, beta, broken = stack.connect("acme"), stack.connect("beta"), stack.connect("gamma")
    with stack.store.locked(broken) as conn:
        stack.store.set_status(conn, broken, ConnectionStatus.NEEDS_REAUTH, "test")
    with dagster_home(tmp_path, monkeypatch, {}):
        code, output = cli("backfill", "--provider", "hubspot", "--from", "2025-03-01", "--to", "2025-03-02")
        assert code == 0, output
        assert f"launched for {acme}, {beta} (" in output
        with dg.DagsterInstance.get() as instance:
            (backfill,) = instance.get_backfills()
            events = backfill.asset_backfill_data.target_subset.get_partitions_subset(dg.AssetKey("hubspot_events"))  # type: ignore[union-attr]
            assert len(events.get_partition_keys()) == 4
            # The partitions exist for the UI even before the connections sensor has run.
            assert set(instance.get_dynamic_partitions("hubspot_connections")) == {acme, beta}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["--provider", "hubspat"],
            "unknown provider 'hubspat'; choose one of google, hubspot, microsoft, salesforce, zoho",
        ),
        (["--from", "2025-03-31"], "--from 2025-03-31 is after --to 2025-03-30"),
        (["--from", "2025-3-1x"], "--from '2025-3-1x' is not a day like 2025-03-01"),
        (["--tenant", "nobody"], "tenant 'nobody' has no active hubspot connection to backfill"),
        (["--from", "2020-01-01"], "days must lie between 2025-01-01 and"),
        (
            ["--from", "2025-01-01", "--to", "2026-12-31"],
            "730 days is more than one backfill may cover (400); split it",
        ),
    ],
)
def test_bad_arguments_get_one_line_errors(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arguments: list[str], message: str
) -> None:
    stack.connect("acme")
    defaults = {"--provider": "hubspot", "--tenant": "acme", "--from": "2025-03-01", "--to": "2025-03-30"}
    given = dict(zip(arguments[::2], arguments[1::2], strict=True))
    with dagster_home(tmp_path, monkeypatch, {}):
        code, output = cli(
            "backfill", *(part for option, value in {**defaults, **given}.items() for part in (option, value))
        )
        assert code == 1 and output.startswith(f"Error: {message}") and output.count("\n") == 1, output
        with dg.DagsterInstance.get() as instance:
            assert instance.get_backfills() == []
    assert stack.store.audit_entries(action="backfill.launched") == []


def test_without_dagster_home_the_cli_says_so(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    stack.connect("acme")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    code, output = cli("backfill", "--provider", "hubspot", "--from", "2025-03-01", "--to", "2025-03-02")
    assert (code, output) == (
        1,
        "Error: DAGSTER_HOME is not set: point it at the Dagster instance (`make dev` uses .data/dagster)\n",
    )
