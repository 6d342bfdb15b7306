"""Push subscriptions at the provider: create, renew and stop them through a connection's ApiClient.

The orchestration side (sensors/push.py) decides when; this module knows each provider's API. Notifications go
to `{public_url}/webhooks/{provider}`; Graph lifecycle notifications to `{public_url}/webhooks/microsoft/lifecycle`.
The secret a provider echoes with each notification (Graph `clientState`) comes fresh from the state store for
every subscription and is only sent here, never logged or returned.

A provider refusing a subscription (a 4xx: validation handshake failed, scope missing, limit exceeded) raises
`PushRefused`: the caller marks the subscription failed and the connection keeps being polled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from integrations_pipeline.clients.errors import ProviderError
from integrations_pipeline.clients.http import ApiClient

LIFECYCLE_PATH = "/webhooks/microsoft/lifecycle"


class PushRefused(Exception):
    """The provider would not create or renew the subscription; the message says why (never a secret)."""


@dataclass(frozen=True)
class Granted:
    """What the provider answered: its id for the subscription and when it lapses."""

    external_id: str
    expires_at: datetime


def notification_url(public_url: str, provider: str) -> str:
    return f"{public_url.rstrip('/')}/webhooks/{provider}"


class PushApi(Protocol):
    @property
    def resources(self) -> Mapping[str, str]:
        """entity -> the provider resource a subscription watches; entities missing here have no push"""

    def create(self, api: ApiClient, *, resource: str, public_url: str, secret: str, now: datetime) -> Granted: ...

    def renew(self, api: ApiClient, *, external_id: str, resource: str, now: datetime) -> Granted: ...

    def stop(self, api: ApiClient, *, external_id: str) -> None: ...


def _refused_or_raise(error: ProviderError, what: str) -> Exception:
    status = error.status_code
    if status is not None and 400 <= status < 500 and status not in (401, 429):
        return PushRefused(f"{what}: the provider refused it (HTTP {status})")
    return error


GRAPH_RESOURCES = {"users": "users", "contacts": "me/contacts", "events": "me/events"}
# Graph's maxima are 4230 minutes for Outlook contacts and events and 41760 for users; ask a little less.
GRAPH_LIFETIMES = {
    "users": timedelta(minutes=41_700),
    "me/contacts": timedelta(minutes=4_200),
    "me/events": timedelta(minutes=4_200),
}


@dataclass(frozen=True)
class GraphPushApi:
    """Microsoft Graph subscriptions (`/v1.0/subscriptions`), renewed with PATCH before they lapse."""

    resources: Mapping[str, str] = field(default_factory=lambda: dict(GRAPH_RESOURCES))

    def _expiry(self, resource: str, now: datetime) -> datetime:
        return (now + GRAPH_LIFETIMES[resource]).astimezone(UTC).replace(microsecond=0)

    def create(self, api: ApiClient, *, resource: str, public_url: str, secret: str, now: datetime) -> Granted:
        body = {
            "changeType": "created,updated,deleted",
            "notificationUrl": notification_url(public_url, "microsoft"),
            "lifecycleNotificationUrl": public_url.rstrip("/") + LIFECYCLE_PATH,
            "resource": resource,
            "expirationDateTime": self._expiry(resource, now).isoformat().replace("+00:00", "Z"),
            "clientState": secret,
        }
        try:
            answer = api.request("POST", "/v1.0/subscriptions", json=body).json()
        except ProviderError as error:
            raise _refused_or_raise(error, f"Graph subscription to {resource}") from None
        return Granted(str(answer["id"]), _parse_time(answer["expirationDateTime"]))

    def renew(self, api: ApiClient, *, external_id: str, resource: str, now: datetime) -> Granted:
        body = {"expirationDateTime": self._expiry(resource, now).isoformat().replace("+00:00", "Z")}
        try:
            answer = api.request("PATCH", f"/v1.0/subscriptions/{external_id}", json=body).json()
        except ProviderError as error:
            raise _refused_or_raise(error, f"renewing Graph subscription for {resource}") from None
        return Granted(external_id, _parse_time(answer["expirationDateTime"]))

    def stop(self, api: ApiClient, *, external_id: str) -> None:
        response = api.request("DELETE", f"/v1.0/subscriptions/{external_id}", check_status=False)
        if response.status_code not in (204, 404):  # 404: already gone, which is what we wanted
            api.raise_for_status(response)


def _parse_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


PUSH_APIS: dict[str, PushApi] = {"microsoft": GraphPushApi()}
"""Providers whose push lifecycle is managed per connection. The others are polled by the hourly schedules (see
docs/architecture.md, "Push subscriptions")."""
