"""definitions.py loads with no secrets set, and every job, sensor and schedule resolves."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from integrations_pipeline.clients.providers import ENTITIES
from integrations_pipeline.definitions import build_definitions
from integrations_pipeline.partitions import connection_day_partitions, connection_partitions
from integrations_pipeline.settings import ENV_PREFIX

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def test_validate_with_no_integrations_variables_at_all(tmp_path: Path) -> None:
    environment = {name: value for name, value in os.environ.items() if not name.startswith(ENV_PREFIX)}
    environment["DAGSTER_HOME"] = str(tmp_path)
    completed = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Validation successful" in completed.stdout + completed.stderr


def test_every_job_sensor_and_schedule_resolves() -> None:
    definitions = build_definitions()
    repository = definitions.get_repository_def()
    providers = {spec.provider for spec in ENTITIES}
    jobs = {job.name for job in repository.get_all_jobs()}
    assert {f"{provider}_sync" for provider in providers} | {"unified_sync", "unified_events_sync"} <= jobs
    assert {f"{provider}_events_sync" for provider in providers} <= jobs
    sensors = {sensor.name for sensor in repository.sensor_defs}
    assert {"connections_sensor", "push_subscriptions_sensor"} <= sensors
    assert "unified_sensor" not in sensors  # provider syncs update the unified tables themselves
    assert {"webhook_deliveries_sensor", "webhook_synced_sensor", "webhook_error_sensor"} <= sensors
    expected_schedules = {f"{p}_hourly_sync" for p in providers} | {f"{p}_hourly_events_sync" for p in providers}
    expected_schedules |= {"webhook_inbox_purge"}
    assert {schedule.name for schedule in repository.schedule_defs} == expected_schedules
    for spec in ENTITIES:  # fifteen entity assets, grouped by provider, partitioned by connection (and day)
        asset = definitions.resolve_assets_def(spec.asset_name)
        assert asset.group_names_by_key[dg.AssetKey(spec.asset_name)] == spec.provider
        expected = (
            connection_day_partitions(spec.provider)
            if spec.partitioned_by_day
            else connection_partitions(spec.provider)
        )
        assert asset.partitions_def == expected
    for name in ("users", "contacts", "events"):
        assert definitions.resolve_assets_def(name).group_names_by_key[dg.AssetKey(name)] == "unified"


def test_resources_carry_no_config() -> None:
    """Both resources read Settings when a run starts (the warehouse's path or URL too): nothing configured in
    Dagster, so no connection string or secret can reach run config."""
    for resource in build_definitions().resources.values():
        assert type(resource).model_fields == {}, type(resource).__name__
