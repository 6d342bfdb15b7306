"""definitions.py loads with no secrets set, and every job, sensor and schedule resolves."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from integrations_pipeline.definitions import build_definitions
from integrations_pipeline.settings import ENV_PREFIX, Settings

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
    assert {job.name for job in repository.get_all_jobs()} >= {"hubspot_sync"}
    assert {sensor.name for sensor in repository.sensor_defs} == {"connections_sensor", "unified_sensor"}
    assert {schedule.name for schedule in repository.schedule_defs} == {"hubspot_hourly_sync"}
    asset = definitions.resolve_assets_def("hubspot_contacts")
    assert asset.group_names_by_key[dg.AssetKey("hubspot_contacts")] == "hubspot"
    assert asset.partitions_def == dg.DynamicPartitionsDefinition(name="hubspot_connections")


def test_every_bound_environment_variable_is_a_setting() -> None:
    """The I/O manager binds INTEGRATIONS_WAREHOUSE_PATH with dg.EnvVar: it must be the Settings field's name."""
    io_manager = build_definitions().resources["io_manager"]
    bound = io_manager.database  # type: ignore[union-attr]
    assert isinstance(bound, dg.EnvVar)
    assert bound.removeprefix(ENV_PREFIX).lower() in Settings.model_fields
