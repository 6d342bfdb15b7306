"""The first hour of `make dev`: the sandbox emulators' events lie around today, and the connections sensor's first
sync of a new connection covers its live event days, so every provider's `<provider>.events` table exists after
that first sync."""

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from integrations_pipeline.definitions import build_definitions
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.sandbox import EMULATORS
from integrations_pipeline.schedules import live_event_days
from integrations_pipeline_tests.conftest import Stack, running_stack

TODAY = datetime.now(UTC).date()


@pytest.fixture
def live_stack(store_url: str, key_spec: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Stack]:
    with running_stack(store_url, key_spec, monkeypatch, tmp_path, events_around=TODAY) as running:
        yield running


def evaluate_connections_sensor(definitions: dg.Definitions, instance: dg.DagsterInstance) -> list[dg.RunRequest]:
    """One tick, applying its partition requests to the instance as the daemon does."""
    sensor = definitions.resolve_sensor_def("connections_sensor")
    with dg.build_sensor_context(instance=instance, resources={"integrations": IntegrationsResource()}) as context:
        result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    for request in result.dynamic_partitions_requests or ():
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return list(result.run_requests or ())


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_the_first_sync_of_every_provider_includes_its_live_event_days(live_stack: Stack) -> None:
    definitions = build_definitions()
    connections = {provider: live_stack.connect("sandbox", provider) for provider in sorted(EMULATORS)}
    with dg.instance_for_test() as instance:
        requests = evaluate_connections_sensor(definitions, instance)
        events_requests = [request for request in requests if request.job_name.endswith("_events_sync")]
        # One run per provider: its new connection x the live days, one rectangle of the connection x day partitions.
        days = live_event_days(datetime.now(UTC))
        requested = {
            (
                str(request.job_name),
                request.tags[ASSET_PARTITION_RANGE_START_TAG],
                request.tags[ASSET_PARTITION_RANGE_END_TAG],
            )
            for request in events_requests
        }
        assert requested == {
            (f"{provider}_events_sync", f"{connection_id}|{days[0]}", f"{connection_id}|{days[-1]}")
            for provider, connection_id in connections.items()
        }
        assert TODAY.isoformat() in days
        # The first sync is requested once: a second tick knows the partitions and asks for nothing.
        assert evaluate_connections_sensor(definitions, instance) == []

        for request in events_requests:
            result = definitions.resolve_job_def(str(request.job_name)).execute_in_process(
                instance=instance, tags=request.tags, raise_on_error=False
            )
            assert result.success
    with duckdb.connect(str(live_stack.settings.warehouse_path), read_only=True) as warehouse:
        for provider in connections:
            today_rows = warehouse.execute(
                f"SELECT count(*) FROM {provider}.events WHERE CAST(start_at AS DATE) = ?", [TODAY]
            ).fetchone()
            assert today_rows is not None and today_rows[0] > 0, f"{provider} has no events today"
