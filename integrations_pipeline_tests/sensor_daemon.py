"""What the Dagster daemon does with webhook_events_sensor's answers, on a real instance: evaluate the sensor with the
cursor it last recorded, then launch each RunRequest unless the instance already holds a run of this sensor with
that run_key (the daemon's own dedup rule), here in process."""

from dataclasses import dataclass, field

import dagster as dg
from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG

from integrations_pipeline.resources import IntegrationsResource

SENSOR = "webhook_events_sensor"


@dataclass
class SensorDaemon:
    definitions: dg.Definitions
    instance: dg.DagsterInstance
    cursor: str | None = None
    launched: list[dg.ExecuteInProcessResult] = field(default_factory=list)

    def evaluate(self, *, record_cursor: bool = True) -> dg.SensorResult:
        """One tick; record_cursor=False is a daemon that died before recording it."""
        sensor = self.definitions.resolve_sensor_def(SENSOR)
        with dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources={"integrations": IntegrationsResource()}
        ) as context:
            result = sensor(context)
        assert isinstance(result, dg.SensorResult)
        if record_cursor:
            self.cursor = result.cursor
        return result

    def requests(self, *, record_cursor: bool = True) -> list[dg.RunRequest]:
        return list(self.evaluate(record_cursor=record_cursor).run_requests or ())

    def launch(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult | None:
        assert request.run_key is not None and request.job_name is not None
        tags = {SENSOR_NAME_TAG: SENSOR, RUN_KEY_TAG: request.run_key}
        if self.instance.get_runs(filters=dg.RunsFilter(tags=tags)):
            return None
        result = self.definitions.resolve_job_def(request.job_name).execute_in_process(
            instance=self.instance,
            partition_key=request.partition_key,
            asset_selection=request.asset_selection,
            tags={**request.tags, **tags},
            raise_on_error=False,
        )
        self.launched.append(result)
        return result

    def tick(self) -> list[dg.ExecuteInProcessResult]:
        """Evaluate, record the cursor and launch: a healthy daemon's tick. Returns the runs it launched."""
        launched = [self.launch(request) for request in self.requests()]
        return [result for result in launched if result is not None]
