"""`push_subscriptions_sensor`: keeps one push subscription per active connection and pushed entity at each
provider in `clients.push.PUSH_APIS`, so webhooks (not only the hourly poll) bring changes in.

Each tick, bounded by `MAX_PROVIDER_CALLS`: create what is missing (a new connection), renew what has used half of
its life, stop what belongs to a connection that is no longer active, and act on Graph lifecycle notifications in
the inbox (`reauthorizationRequired` renews, `subscriptionRemoved` recreates; `missed` is turned into a sync by the
webhook sensor, so its lifecycle row is only marked done here). A provider refusing a subscription marks it
`failed` with the reason: that connection stays on polling. The sensor launches no runs; it reports what it did.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import dagster as dg

from integrations_pipeline.clients.errors import NeedsReauth, ProviderError
from integrations_pipeline.clients.http import ApiClient
from integrations_pipeline.clients.providers import PROVIDERS
from integrations_pipeline.clients.push import (
    PUSH_APIS,
    NewSubscription,
    PushApi,
    PushRefused,
    ensure_hubspot_app_webhooks,
    notification_url,
)
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.settings import SettingsError
from integrations_pipeline.store import ConnectionStatus
from integrations_pipeline.store.inbox import WebhookInbox
from integrations_pipeline.store.push import PushStatus, PushSubscription, PushSubscriptions

PUSH_SENSOR_INTERVAL_S = 60
# HubSpot apps whose webhook settings this process has already made right: (API origin, app id, target URL).
_HUBSPOT_APPS_CONFIGURED: set[tuple[str, int, str]] = set()
MAX_PROVIDER_CALLS = 50  # per tick: a slow provider cannot time the tick out
LIFECYCLE_BATCH = 100
BLOCKING = (PushStatus.ACTIVE, PushStatus.FAILED)  # a row in these states means "nothing to create"


@dataclass
class PushReport:
    """What one reconciliation did, as counts (for the tick's message) and one line per problem."""

    created: int = 0
    renewed: int = 0
    stopped: int = 0
    failed: int = 0
    lifecycle_handled: int = 0
    problems: list[str] = field(default_factory=list)
    calls_left: int = MAX_PROVIDER_CALLS

    def summary(self) -> str:
        counts = (
            f"created {self.created}, renewed {self.renewed}, stopped {self.stopped}, failed {self.failed}, "
            f"lifecycle events handled {self.lifecycle_handled}"
        )
        return counts + ("; " + "; ".join(self.problems[:5]) if self.problems else "")


class PushLifecycle:
    """The reconciliation itself, separate from Dagster's decorator so it reads (and tests) as plain code."""

    def __init__(self, integrations: IntegrationsResource, now: datetime) -> None:
        self.integrations = integrations
        self.subscriptions = PushSubscriptions(integrations.store)
        self.now = now
        self.report = PushReport()

    def run(self) -> PushReport:
        self._handle_lifecycle_events()
        self._hubspot_app_webhooks()
        for provider, push_api in sorted(PUSH_APIS.items()):
            try:
                self.integrations.settings.provider_app(provider)
            except SettingsError:
                continue  # provider not configured: nothing to subscribe to
            self._reconcile(provider, push_api)
        return self.report

    @contextmanager
    def _call(self, subscription: PushSubscription | None, what: str) -> Iterator[bool]:
        """Spend one provider call; a refusal marks the subscription failed, other errors leave it for next tick."""
        if self.report.calls_left <= 0:
            yield False
            return
        self.report.calls_left -= 1
        try:
            yield True
        except PushRefused as refusal:
            self.report.failed += 1
            self.report.problems.append(str(refusal))
            if subscription is not None:
                self.subscriptions.set_status(subscription.id, PushStatus.FAILED, str(refusal))
        except (ProviderError, NeedsReauth) as error:
            self.report.problems.append(f"{what}: {error}")

    def _reconcile(self, provider: str, push_api: PushApi) -> None:
        connections = {
            c.id: c
            for c in self.integrations.store.list_connections(provider=provider, statuses=(ConnectionStatus.ACTIVE,))
        }
        rows = self.subscriptions.list(provider=provider, statuses=None)
        for row in rows:
            if row.status != PushStatus.ACTIVE:
                continue
            if row.connection_id not in connections:
                self._stop(provider, push_api, row)
            elif row.half_life_passed(self.now):
                self._renew(provider, push_api, row)
        covered = {
            (row.connection_id, row.entity) for row in self.subscriptions.list(provider=provider, statuses=BLOCKING)
        }
        for connection_id in connections:
            for entity, resource in sorted(push_api.resources.items()):
                if (connection_id, entity) not in covered:
                    self._create(provider, push_api, connection_id, entity, resource)

    def _hubspot_app_webhooks(self) -> None:
        """HubSpot's webhooks belong to the app: set its target URL and subscriptions once per app and process
        (idempotent: only differences are written), when the app has an id and a developer API key and some portal
        is connected. Each event names its portalId; the gateway maps it to the connection."""
        try:
            app = self.integrations.settings.provider_app("hubspot")
        except SettingsError:
            return
        if app.app_id is None or app.developer_api_key is None:
            return
        target_url = notification_url(str(self.integrations.settings.public_url), "hubspot")
        origin = PROVIDERS["hubspot"].api_origin(app)
        done_key = (origin, app.app_id, target_url)
        if done_key in _HUBSPOT_APPS_CONFIGURED or self.report.calls_left <= 0:
            return
        if not self.integrations.store.list_connections(provider="hubspot", statuses=(ConnectionStatus.ACTIVE,)):
            return
        self.report.calls_left -= 1
        api = ApiClient(origin)
        try:
            changes = ensure_hubspot_app_webhooks(
                api,
                app_id=app.app_id,
                developer_api_key=app.developer_api_key.get_secret_value(),
                target_url=target_url,
            )
        except (PushRefused, ProviderError) as error:
            self.report.problems.append(str(error))
            return
        finally:
            api.close()
        _HUBSPOT_APPS_CONFIGURED.add(done_key)
        self.report.created += changes

    def _create(self, provider: str, push_api: PushApi, connection_id: str, entity: str, resource: str) -> bool:
        """Whether the provider granted a new subscription."""
        if self.report.calls_left <= 0:
            return False
        # The row first: its fresh secret is what the provider will echo back with every notification.
        row, secret = self.subscriptions.create(
            connection_id=connection_id, provider=provider, entity=entity, resource=resource, expires_at=self.now
        )
        granted = None
        with self._call(row, f"creating {provider} {entity} push for {connection_id}") as allowed:
            if allowed:
                new = NewSubscription(
                    subscription_id=row.id,
                    resource=resource,
                    public_url=str(self.integrations.settings.public_url),
                    secret=secret,
                    now=self.now,
                    sandbox=self.integrations.settings.provider_app(provider).base_url is not None,
                )
                with self.integrations.connector(provider, connection_id) as api:
                    granted = push_api.create(api, new)
        if granted is not None:
            self.subscriptions.renewed(row.id, expires_at=granted.expires_at, external_id=granted.external_id)
            self.report.created += 1
            return True
        if self.subscriptions.get(row.id).status == PushStatus.ACTIVE:  # type: ignore[union-attr]
            # Not refused, just not done (an outage, the call budget): let the next tick try again.
            self.subscriptions.set_status(row.id, PushStatus.REMOVED, "creation did not complete; retried")
        return False

    def _renew(self, provider: str, push_api: PushApi, row: PushSubscription) -> None:
        if row.external_id is None:
            self.subscriptions.set_status(row.id, PushStatus.REMOVED, "no provider id to renew; recreated")
            return
        if push_api.renew_by_replacing:
            # A new channel first (with a fresh secret), then the old one stops: no gap in notifications.
            if self._create(provider, push_api, row.connection_id, row.entity, row.resource):
                self._stop(provider, push_api, row, "replaced by a new channel")
                self.report.stopped -= 1  # a replacement, counted as the renewal it is
                self.report.created -= 1
                self.report.renewed += 1
            return
        with self._call(row, f"renewing {provider} push {row.id}") as allowed:
            if allowed:
                with self.integrations.connector(provider, row.connection_id) as api:
                    granted = push_api.renew(api, external_id=row.external_id, resource=row.resource, now=self.now)
                self.subscriptions.renewed(row.id, expires_at=granted.expires_at)
                self.report.renewed += 1

    def _stop(
        self, provider: str, push_api: PushApi, row: PushSubscription, reason: str = "connection no longer active"
    ) -> None:
        if row.external_id is not None and self.report.calls_left > 0:
            self.report.calls_left -= 1
            try:
                with self.integrations.connector(provider, row.connection_id) as api:
                    push_api.stop(api, external_id=row.external_id, subscription_id=row.id, resource=row.resource)
            except Exception:
                reason += "; left to expire at the provider"
        self.subscriptions.set_status(row.id, PushStatus.REMOVED, reason)
        self.report.stopped += 1

    def _handle_lifecycle_events(self) -> None:
        inbox = WebhookInbox(self.integrations.store)
        events = inbox.pending(limit=LIFECYCLE_BATCH, kinds=["lifecycle"])
        done = []
        for event in events:
            lifecycle_event = str(event.payload.get("lifecycleEvent", ""))
            external_id = str(event.payload.get("subscriptionId", ""))
            row = self.subscriptions.find(event.source, external_id=external_id) if external_id else None
            if row is not None and row.status == PushStatus.ACTIVE and event.source in PUSH_APIS:
                if lifecycle_event == "reauthorizationRequired":
                    self._renew(event.source, PUSH_APIS[event.source], row)
                elif lifecycle_event == "subscriptionRemoved":
                    # Gone at the provider: this tick's reconciliation creates a replacement.
                    self.subscriptions.set_status(row.id, PushStatus.REMOVED, "removed by the provider")
            done.append(event.id)
        if done:
            inbox.mark_done(done)
            self.report.lifecycle_handled += len(done)


def build_push_subscriptions_sensor() -> dg.SensorDefinition:
    @dg.sensor(
        name="push_subscriptions_sensor",
        minimum_interval_seconds=PUSH_SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Creates, renews (at half life) and stops providers' push subscriptions for active connections, "
        "and handles Graph lifecycle notifications; refused subscriptions leave the connection on polling.",
    )
    def push_subscriptions_sensor(
        context: dg.SensorEvaluationContext, integrations: IntegrationsResource
    ) -> dg.SkipReason:
        report = PushLifecycle(integrations, datetime.now(UTC)).run()
        context.log.info("push subscriptions: %s", report.summary())
        return dg.SkipReason(report.summary())

    return push_subscriptions_sensor
