"""The PostgreSQL production profile end to end: Dagster's instance storage (dagster-postgres), the state store and
the warehouse (COPY-loading I/O manager) all on the real PostgreSQL server the suite starts. Connect, full sync,
incremental sync and a backfill end with exactly the tables the same flow leaves on the embedded defaults
(SQLite instance, SQLite state store, DuckDB warehouse)."""

import io
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
import yaml

from integrations_pipeline.backfills import BackfillRequest, launch_backfill
from integrations_pipeline.definitions import build_definitions
from integrations_pipeline.partitions import connection_partitions
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.warehouse import PostgresWarehouse, copy_text
from integrations_pipeline_tests.backfill_driver import IN_PROCESS_RUNS, events_key, execute_backfill, sync
from integrations_pipeline_tests.conftest import fresh_postgres_url, running_stack

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.postgres,
    pytest.mark.filterwarnings("ignore:Property `ScheduleDefinition.environment_vars`:DeprecationWarning"),
]

DAYS = ["2025-03-03", "2025-03-04", "2025-03-05"]
# Emulator changes carry this modification time, so both flows see byte-identical sources.
CHANGED_AT = datetime(2026, 8, 1, tzinfo=UTC).timestamp()
TABLES = ("hubspot.users", "hubspot.contacts", "hubspot.events")
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def flow(
    store_url: str, key_spec: str, monkeypatch: pytest.MonkeyPatch, home: Path, instance_config: dict[str, Any]
) -> dict[str, pd.DataFrame]:
    with running_stack(store_url, key_spec, monkeypatch, home) as stack:
        connection_id = stack.connect("acme")
        with dg.instance_for_test(overrides={**IN_PROCESS_RUNS, **instance_config}) as instance:
            instance.add_dynamic_partitions(connection_partitions("hubspot").name, [connection_id])
            for sync_round in ("full", "incremental"):
                sync(instance, "hubspot_sync", connection_id)
                for day in DAYS:
                    sync(instance, "hubspot_events_sync", events_key(connection_id, day))
                if sync_round == "full":  # changes at the provider for the incremental round to pick up
                    real_clock, stack.emulator.clock = stack.emulator.clock, lambda: CHANGED_AT
                    try:
                        stack.emulator.update_contact("3", {"company": "Renamed Ltd"})
                        stack.emulator.create_contact({"email": "new@example.com", "firstname": "New"})
                        stack.emulator.archive_contact("42")
                    finally:
                        stack.emulator.clock = real_clock
            request = BackfillRequest("hubspot", "acme", datetime(2025, 3, 3).date(), datetime(2025, 3, 6).date())
            launched = launch_backfill(instance, build_definitions(), stack.store, request, actor="test")
            execute_backfill(instance, launched.backfill_id)
        resource = IntegrationsResource()
        tables = {}
        for name in TABLES:
            rows = resource.read_partition(name, [connection_id])
            assert rows is not None and not rows.empty
            tables[name] = rows.sort_values(["connection_id", "source_id"], ignore_index=True)
        stack.store.engine.dispose()
        return tables


def test_postgres_profile_ends_with_the_embedded_defaults_tables(
    postgres_server: object, key_spec: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    embedded = flow(f"sqlite:///{tmp_path / 'state.db'}", key_spec, monkeypatch, tmp_path / "embedded", {})

    monkeypatch.setenv("INTEGRATIONS_WAREHOUSE_URL", fresh_postgres_url(postgres_server))
    dagster_url = fresh_postgres_url(postgres_server).replace("postgresql://", "postgresql+psycopg2://", 1)
    instance_storage = {"storage": {"postgres": {"postgres_url": dagster_url}}}
    on_postgres = flow(fresh_postgres_url(postgres_server), key_spec, monkeypatch, tmp_path / "pg", instance_storage)

    assert IntegrationsResource().warehouse.kind == "postgres"
    for name in TABLES:
        pd.testing.assert_frame_equal(on_postgres[name], embedded[name], check_dtype=False)
    # The incremental sync and the backfill both happened: the changes are in, once each.
    contacts = on_postgres["hubspot.contacts"]
    assert contacts.loc[contacts.source_id == "3", "company"].item() == "Renamed Ltd"
    assert contacts.loc[contacts.source_id == "42", "is_deleted"].item()


def test_copy_text_escapes_what_copy_would_misread(postgres_server: object) -> None:
    """Backslashes, tabs, newlines and the literal text \\N survive COPY; None becomes NULL."""
    warehouse = PostgresWarehouse(fresh_postgres_url(postgres_server))
    values = ["plain", None, r"\N", "tab\there", "line\nbreak", "back\\slash", 'quote"s, commas']
    frame = pd.DataFrame({"connection_id": ["c"] * len(values), "source_id": [str(i) for i in range(len(values))]})
    frame["title"] = pd.Series(values, dtype=object)
    frame["is_deleted"] = [False, True, False, False, False, False, False]
    with warehouse.connect() as connection, connection.cursor() as cursor:
        cursor.execute(
            "CREATE SCHEMA s; CREATE TABLE s.t (connection_id text, source_id text, title text, is_deleted boolean)"
        )
        cursor.copy_expert("COPY s.t FROM STDIN", io.StringIO(copy_text(frame)))
    read = warehouse.read("s.t", ["c"], None, "start_at")
    assert read is not None
    assert read["title"].tolist() == values and read["is_deleted"].tolist() == frame["is_deleted"].tolist()


def test_the_deploy_profile_opens_an_instance_on_postgres(
    postgres_server: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deploy/dagster.yaml as shipped: storage from DAGSTER_POSTGRES_URL, runs queued with per-provider limits."""
    url = fresh_postgres_url(postgres_server).replace("postgresql://", "postgresql+psycopg2://", 1)
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", url)
    shutil.copyfile(PROJECT_ROOT / "deploy" / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits  # type: ignore[union-attr]
        assert {"key": "provider", "value": {"applyLimitPerUniqueValue": True}, "limit": 2} in limits
        assert instance.get_runs() == []
    root, deploy = (
        yaml.safe_load((PROJECT_ROOT / path).read_text()) for path in ("dagster.yaml", "deploy/dagster.yaml")
    )
    assert deploy["concurrency"] == root["concurrency"]  # the production profile keeps the same limits
