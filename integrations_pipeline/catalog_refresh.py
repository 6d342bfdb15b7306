"""The scheduled field-catalog refresh: once a day, every active connection whose catalog is older than a day is
discovered again from its provider's metadata API (a field added at the provider appears, a removed one is marked
removed). One connection failing is logged and does not stop the others."""

from datetime import timedelta

import dagster as dg

from integrations_pipeline.clients.catalog import CatalogRefresher
from integrations_pipeline.resources import IntegrationsResource

MAX_CATALOG_AGE = timedelta(days=1)
CATALOG_REFRESH_CRON = "30 3 * * *"  # daily, at a quiet hour (UTC)


@dg.op(description="Discover again the field catalog of every active connection older than a day.")
def refresh_field_catalogs_op(context: dg.OpExecutionContext, integrations: IntegrationsResource) -> None:
    refresher = CatalogRefresher(integrations.store, integrations.connector)
    outcomes = refresher.refresh_stale(MAX_CATALOG_AGE)
    for connection_id, outcome in sorted(outcomes.items()):
        context.log.info(f"{connection_id}: {outcome}")
    failed = sorted(connection_id for connection_id, outcome in outcomes.items() if outcome.startswith("failed"))
    if failed:
        context.log.warning(f"catalogs not refreshed (see above): {', '.join(failed)}")


@dg.job(name="refresh_field_catalogs", description="Refresh stale field catalogs from the providers' metadata APIs.")
def refresh_field_catalogs_job() -> None:
    refresh_field_catalogs_op()


refresh_field_catalogs_schedule = dg.ScheduleDefinition(
    name="field_catalog_refresh",
    job=refresh_field_catalogs_job,
    cron_schedule=CATALOG_REFRESH_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily: catalogs older than a day are discovered again (new fields appear, removed ones are marked).",
)
