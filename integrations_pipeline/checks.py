"""Freshness checks: a connection-partitioned entity asset that has not materialized within two schedule
intervals is overdue. (Per-partition checks, primary key and required fields, run inside each materialization:
see assets/entities.py.)"""

from datetime import timedelta

import dagster as dg

FRESHNESS_WINDOW = timedelta(hours=2)  # the hourly sync, plus an hour of slack for queues and retries


def build_freshness_checks(
    assets: list[dg.AssetsDefinition],
) -> tuple[list[dg.AssetChecksDefinition], dg.SensorDefinition]:
    checks = list(dg.build_last_update_freshness_checks(assets=assets, lower_bound_delta=FRESHNESS_WINDOW))
    sensor = dg.build_sensor_for_freshness_checks(
        freshness_checks=checks, name="freshness_checks_sensor", default_status=dg.DefaultSensorStatus.RUNNING
    )
    return checks, sensor
