"""Sync jobs per provider: one for its connection-partitioned entities (users, contacts), one for its
day-partitioned ones (events), since a Dagster job has a single partitioning. And the webhook inbox's upkeep jobs:
replaying dead letters, purging done events past the dedup window."""

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from pydantic import Field

from integrations_pipeline.clients.spec import EntitySpec
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.store import InvalidState
from integrations_pipeline.store.dead_letters import replay_dead_letters
from integrations_pipeline.store.inbox import DEDUP_WINDOW, WebhookInbox


def sync_job_name(provider: str, by_day: bool = False) -> str:
    return f"{provider}_events_sync" if by_day else f"{provider}_sync"


def build_sync_jobs(provider: str, entities: list[EntitySpec]) -> dict[bool, UnresolvedAssetJobDefinition]:
    """{partitioned_by_day: job} for the provider's entities."""
    jobs = {}
    for by_day in sorted({entity.partitioned_by_day for entity in entities}):
        names = [entity.asset_name for entity in entities if entity.partitioned_by_day == by_day]
        jobs[by_day] = dg.define_asset_job(
            name=sync_job_name(provider, by_day),
            selection=dg.AssetSelection.assets(*names),
            description=f"Sync {', '.join(names)} for one {'connection and day' if by_day else 'connection'}.",
            # Every run of the job, backfills included, counts against the provider's run limit in dagster.yaml.
            tags={"provider": provider},
            # The steps run in the run worker's process: a step process per asset would pay Dagster's imports and
            # a process start for syncs that mostly wait on HTTP. The provider pool still bounds the steps.
            executor_def=dg.in_process_executor,
        )
    return jobs


def build_unified_jobs(
    unified_assets: list[dg.AssetsDefinition], by_day: dict[str, bool]
) -> dict[bool, UnresolvedAssetJobDefinition]:
    """{partitioned_by_day: job} for the unified assets (by tenant, or by tenant and day)."""
    jobs = {}
    for day_partitioned in sorted(set(by_day.values())):
        names = [name for name, flag in by_day.items() if flag == day_partitioned]
        jobs[day_partitioned] = dg.define_asset_job(
            name="unified_events_sync" if day_partitioned else "unified_sync",
            selection=dg.AssetSelection.assets(*names),
            description=f"Rebuild {', '.join(names)} for one tenant{' and day' if day_partitioned else ''}.",
        )
    return jobs


class ReplayConfig(dg.Config):
    """Which dead letters to replay: `ids`, or `all` of them (exactly one of the two)."""

    ids: list[int] = Field(default_factory=list)
    all: bool = False


@dg.op(description="Put dead letters back in the webhook inbox (audited); the webhook sensor then requests runs.")
def replay_dead_letters_op(
    context: dg.OpExecutionContext, config: ReplayConfig, integrations: IntegrationsResource
) -> None:
    try:
        replayed = replay_dead_letters(
            WebhookInbox(integrations.store), config.ids, replay_all=config.all, actor="dagster"
        )
    except InvalidState as refusal:
        raise dg.Failure(description=str(refusal)) from None
    context.log.info(f"replayed {replayed} dead letters; webhook_events_sensor requests their runs on its next tick")


@dg.job(name="replay_dead_letters", description="Replay dead letters by id (config `ids`) or all (`all: true`).")
def replay_dead_letters_job() -> None:
    replay_dead_letters_op()


@dg.op(description=f"Forget done webhook events received more than {DEDUP_WINDOW.days} days ago (the dedup window).")
def purge_webhook_inbox_op(context: dg.OpExecutionContext, integrations: IntegrationsResource) -> None:
    context.log.info(f"purged {WebhookInbox(integrations.store).purge()} done webhook events")


@dg.job(name="purge_webhook_inbox", description="Purge done webhook events past the dedup window.")
def purge_webhook_inbox_job() -> None:
    purge_webhook_inbox_op()
