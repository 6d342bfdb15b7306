"""`connection_health_sensor` observes `connection_health` with the same facts as `GET /health/integrations`."""

import dagster as dg
import pytest

from integrations_pipeline.assets.health import CONNECTION_HEALTH
from integrations_pipeline.definitions import defs
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.sensors.health import build_connection_health_sensor
from integrations_pipeline.store import ConnectionStatus
from integrations_pipeline_tests.conftest import Stack


def evaluate(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    sensor = build_connection_health_sensor()
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"integrations": IntegrationsResource()}
    ) as context:
        result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_observes_every_tick_with_the_current_health(stack: Stack) -> None:
    healthy = stack.connect("acme", "hubspot")
    troubled = stack.connect("acme", "zoho")
    with dg.instance_for_test() as instance:
        first = evaluate(instance, None)
        [observation] = first.asset_events
        assert isinstance(observation, dg.AssetObservation) and observation.asset_key == CONNECTION_HEALTH
        metadata = observation.metadata
        assert metadata["connections"].value == 2 and metadata["ok connections"].value == 2
        assert metadata["needing attention"].value == "none"
        report = metadata["report"].value
        assert f"| {healthy} | ok | active |" in report and "never synced" in report

        # Unchanged, it still observes each tick: the asset is never older than one sensor interval.
        unchanged = evaluate(instance, first.cursor)
        [observation] = unchanged.asset_events
        assert observation.metadata["ok connections"].value == 2

        with stack.store.locked(troubled) as conn:
            stack.store.set_status(conn, troubled, ConnectionStatus.NEEDS_REAUTH, "invalid_grant")
        changed = evaluate(instance, first.cursor)
        [observation] = changed.asset_events
        assert observation.metadata["critical connections"].value == 1
        assert observation.metadata["needing attention"].value == troubled
        rows = observation.metadata["report"].value.splitlines()
        assert rows[2].startswith(f"| {troubled} | critical | needs_reauth |")  # worst first
        assert "needs re-authorization: invalid_grant" in rows[2]


def test_the_asset_and_sensor_are_in_the_definitions() -> None:
    assert CONNECTION_HEALTH in {spec.key for spec in defs.resolve_all_asset_specs()}
    [sensor] = [sensor for sensor in defs.get_repository_def().sensor_defs if sensor.name == "connection_health_sensor"]
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
