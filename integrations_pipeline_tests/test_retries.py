"""Retries end to end: a burst of 5xx and a short Retry-After are absorbed (the HTTP policy, then the assets'
RetryPolicy) into the same table as a fault-free sync; a Retry-After longer than a run should wait fails fast with
the time to come back, spends no attempt, and rate_limit_sensor requests the run again when that time has come."""

import time
from collections.abc import Iterator

import dagster as dg
import duckdb
import pandas as pd
import pytest

from integrations_pipeline.assets.entities import RATE_LIMITED_TAG, RETRY_AT_TAG, SYNC_RETRY_POLICY
from integrations_pipeline.definitions import build_definitions
from integrations_pipeline.partitions import connection_partitions
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.sensors.rate_limits import RESCHEDULED_FROM_TAG, build_rate_limit_sensor
from integrations_pipeline_tests.conftest import Stack

pytestmark = pytest.mark.e2e
SQLITE_ONLY = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # PostgreSQL adds nothing here


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def materialize_contacts(stack: Stack, instance: dg.DagsterInstance, connection_id: str) -> dg.ExecuteInProcessResult:
    instance.add_dynamic_partitions(connection_partitions("hubspot").name or "", [connection_id])
    return dg.materialize(
        [build_definitions().get_assets_def("hubspot_contacts")],
        instance=instance,
        partition_key=connection_id,
        resources={"integrations": IntegrationsResource()},
        raise_on_error=False,
    )


def contacts_table(stack: Stack, connection_id: str) -> pd.DataFrame:
    with duckdb.connect(str(stack.settings.warehouse_path)) as connection:
        frame = connection.execute(
            "SELECT * FROM hubspot.contacts WHERE connection_id = ? ORDER BY source_id", [connection_id]
        ).df()
    return frame.drop(columns=["connection_id", "synced_at"], errors="ignore")


def tick(sensor: dg.SensorDefinition, instance: dg.DagsterInstance) -> dg.SensorResult:
    with dg.build_sensor_context(instance=instance) as context:
        result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def step_events(result: dg.ExecuteInProcessResult, event_type: dg.DagsterEventType) -> list[dg.DagsterEvent]:
    return [event for event in result.all_events if event.event_type == event_type]


def test_the_retry_policy_is_five_attempts_from_two_seconds_with_full_jitter() -> None:
    definitions = build_definitions()
    entity_assets = [definitions.get_assets_def(f"{provider}_contacts") for provider in ("hubspot", "google", "zoho")]
    assert all(assets_def.op.retry_policy == SYNC_RETRY_POLICY for assets_def in entity_assets)
    policy = SYNC_RETRY_POLICY
    assert (policy.max_retries, policy.delay, policy.backoff, policy.jitter) == (
        4,
        2,
        dg.Backoff.EXPONENTIAL,
        dg.Jitter.FULL,
    )


@SQLITE_ONLY
def test_a_burst_of_5xx_and_a_retry_after_end_in_the_fault_free_table(
    stack: Stack, instance: dg.DagsterInstance
) -> None:
    clean, faulty = stack.connect("acme"), stack.connect("beta")
    assert materialize_contacts(stack, instance, clean).success

    # Six 503s outlast the HTTP policy's five attempts (the step fails and Dagster retries it), then a 429 with a
    # short Retry-After is waited out inside the retried step.
    stack.emulator.fail_next(6, status=503)
    stack.emulator.fail_next(1, status=429, retry_after_s=1)
    since = len(stack.emulator.request_log)
    result = materialize_contacts(stack, instance, faulty)

    assert result.success
    assert len(step_events(result, dg.DagsterEventType.STEP_UP_FOR_RETRY)) == 1
    statuses = [record.status for record in stack.emulator.request_log[since:]]
    assert statuses.count(503) == 6 and statuses.count(429) == 1
    pd.testing.assert_frame_equal(contacts_table(stack, faulty), contacts_table(stack, clean))


@SQLITE_ONLY
def test_a_long_retry_after_reschedules_without_spending_an_attempt(stack: Stack, instance: dg.DagsterInstance) -> None:
    connection_id = stack.connect("acme")
    instance.add_dynamic_partitions(connection_partitions("hubspot").name or "", [connection_id])
    stack.emulator.fail_next(1, status=429, retry_after_s=600)
    definitions = build_definitions()
    job = definitions.resolve_job_def("hubspot_sync")
    started = time.time()
    result = job.execute_in_process(
        partition_key=connection_id, instance=instance, raise_on_error=False, tags={"provider": "hubspot"}
    )

    assert not result.success
    assert time.time() - started < 60  # failed fast: it did not sit out the ten minutes
    assert not step_events(result, dg.DagsterEventType.STEP_UP_FOR_RETRY)
    failure = next(event for event in step_events(result, dg.DagsterEventType.STEP_FAILURE))
    description = failure.step_failure_data.user_failure_data.description  # type: ignore[union-attr]
    assert "provider asked to wait 600 s" in description and "rate_limit_sensor runs it again after" in description
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and run.tags[RATE_LIMITED_TAG] == "true"
    retry_at = run.tags[RETRY_AT_TAG]

    jobs = [definitions.resolve_job_def("hubspot_sync")]
    assert tick(build_rate_limit_sensor(jobs, clock=lambda: started + 300), instance).run_requests == []
    due = tick(build_rate_limit_sensor(jobs, clock=lambda: started + 620), instance).run_requests or []
    assert [(r.job_name, r.partition_key, r.run_key) for r in due] == [
        ("hubspot_sync", connection_id, f"rate-limited:{result.run_id}")
    ]
    request = due[0]
    assert request.tags[RESCHEDULED_FROM_TAG] == result.run_id and request.tags["provider"] == "hubspot"
    assert retry_at  # the time the failure message names, kept on the run for operators
