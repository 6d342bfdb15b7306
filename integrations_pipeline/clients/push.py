"""Push subscriptions at the provider: create, renew and stop them through a connection's ApiClient.

The orchestration side (sensors/push.py) decides when; this module knows each provider's API. Notifications go
to `{public_url}/webhooks/{provider}`; Graph lifecycle notifications to `{public_url}/webhooks/microsoft/lifecycle`.
The secret a provider echoes with each notification (Graph `clientState`, Google channel token, Zoho token, the
Salesforce endpoint's `token` parameter) comes fresh from the state store for every subscription and is only sent
here, never logged or returned.

Per provider: Graph, one subscription per entity, renewed by PATCH; Google, one channel per entity (Calendar events
of the primary calendar, Directory users), whose id is our subscription id, renewed by opening a new channel and
stopping the old one (`renew_by_replacing`); Zoho, one watch channel per connection for Contacts and Events, renewed
by moving `channel_expiry`; Salesforce, one outbound-message endpoint per connection (registered through the
sandbox's Setup stand-in; at a real org an administrator configures it, see docs/runbook.md). HubSpot's webhooks
belong to the app, not to a connection: `ensure_hubspot_app_webhooks` sets them once per app.

A provider refusing a subscription (a 4xx: validation handshake failed, scope missing, limit exceeded) raises
`PushRefused`: the caller marks the subscription failed and the connection keeps being polled.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol
from urllib.parse import urlencode

from integrations_pipeline.clients.errors import ProviderError
from integrations_pipeline.clients.google import GoogleClient
from integrations_pipeline.clients.http import ApiClient

logger = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class NewSubscription:
    """What creating a subscription needs: our row's id (the channel id where the provider lets us choose it) and
    its fresh secret; `sandbox` is true when the provider app points at a sandbox emulator."""

    subscription_id: str
    resource: str
    public_url: str
    secret: str
    now: datetime
    sandbox: bool = False


class PushApi(Protocol):
    @property
    def resources(self) -> Mapping[str, str]:
        """entity -> the provider resource a subscription watches; entities missing here have no push"""

    @property
    def renew_by_replacing(self) -> bool:
        """True when renewal is a new subscription (fresh secret) followed by stopping the old one (Google)"""

    def create(self, api: ApiClient, new: NewSubscription) -> Granted: ...

    def renew(self, api: ApiClient, *, external_id: str, resource: str, now: datetime) -> Granted: ...

    def stop(self, api: ApiClient, *, external_id: str, subscription_id: str, resource: str) -> None: ...


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
    renew_by_replacing: bool = False

    def _expiry(self, resource: str, now: datetime) -> datetime:
        return (now + GRAPH_LIFETIMES[resource]).astimezone(UTC).replace(microsecond=0)

    def create(self, api: ApiClient, new: NewSubscription) -> Granted:
        resource = new.resource
        body = {
            "changeType": "created,updated,deleted",
            "notificationUrl": notification_url(new.public_url, "microsoft"),
            "lifecycleNotificationUrl": new.public_url.rstrip("/") + LIFECYCLE_PATH,
            "resource": resource,
            "expirationDateTime": self._expiry(resource, new.now).isoformat().replace("+00:00", "Z"),
            "clientState": new.secret,
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

    def stop(self, api: ApiClient, *, external_id: str, subscription_id: str, resource: str) -> None:
        response = api.request("DELETE", f"/v1.0/subscriptions/{external_id}", check_status=False)
        if response.status_code not in (204, 404):  # 404: already gone, which is what we wanted
            api.raise_for_status(response)


def _parse_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# Google: channel lives (the emulator's assumptions, docs/architecture.md), asked a little short of the maximum.
GOOGLE_RESOURCES = {"events": "calendar:primary", "users": "directory:my_customer"}
GOOGLE_LIFETIMES = {"calendar": timedelta(days=7) - timedelta(minutes=5), "directory": timedelta(hours=6, minutes=-5)}


@dataclass(frozen=True)
class GooglePushApi:
    """Google push channels: events of the primary calendar (`events/watch`) and the customer's users
    (`users/watch`, every event). The channel id is our subscription id; `external_id` keeps Google's resourceId,
    which stopping the channel needs."""

    resources: Mapping[str, str] = field(default_factory=lambda: dict(GOOGLE_RESOURCES))
    renew_by_replacing: bool = True  # a channel cannot be extended; its token (our secret) cannot be re-read

    @staticmethod
    def _urls(api: ApiClient, resource: str) -> tuple[str, str]:
        """(watch URL, channels/stop URL) of the resource's API, on Google's hosts or the sandbox's origin."""
        if not isinstance(api, GoogleClient):
            raise TypeError("Google push needs the Google connector")
        kind = resource.partition(":")[0]
        if kind == "calendar":
            return api.events_url + "/watch", api.events_url.split("/calendar/v3/")[0] + "/calendar/v3/channels/stop"
        return api.users_url + "/watch", api.users_url.split("/admin/directory/")[
            0
        ] + "/admin/directory_v1/channels/stop"

    def create(self, api: ApiClient, new: NewSubscription) -> Granted:
        kind = new.resource.partition(":")[0]
        expires = (new.now + GOOGLE_LIFETIMES[kind]).astimezone(UTC)
        body = {
            "id": new.subscription_id,
            "type": "web_hook",
            "address": notification_url(new.public_url, "google"),
            "token": new.secret,
            "expiration": int(expires.timestamp() * 1000),
        }
        params = {"customer": "my_customer"} if kind == "directory" else None
        try:
            answer = api.request("POST", self._urls(api, new.resource)[0], json=body, params=params).json()
        except ProviderError as error:
            raise _refused_or_raise(error, f"Google channel on {new.resource}") from None
        return Granted(str(answer["resourceId"]), datetime.fromtimestamp(int(answer["expiration"]) / 1000, UTC))

    def renew(self, api: ApiClient, *, external_id: str, resource: str, now: datetime) -> Granted:
        raise PushRefused("Google channels are renewed by replacement, not in place")

    def stop(self, api: ApiClient, *, external_id: str, subscription_id: str, resource: str) -> None:
        body = {"id": subscription_id, "resourceId": external_id}
        response = api.request("POST", self._urls(api, resource)[1], json=body, check_status=False)
        if response.status_code not in (200, 204, 404):  # 404: the channel already ended
            api.raise_for_status(response)


ZOHO_RESOURCES = {"contacts": "Contacts.all,Events.all"}  # one channel per connection; the body names the module
ZOHO_LIFETIME = timedelta(hours=23)  # Zoho allows at most a day


def zoho_channel_id(subscription_id: str) -> int:
    """Zoho wants a long it has not seen: derived from our subscription id (so a retried create asks the same)."""
    return 10**17 + int.from_bytes(hashlib.sha256(subscription_id.encode()).digest()[:8]) % (9 * 10**17)


@dataclass(frozen=True)
class ZohoPushApi:
    """Zoho CRM notification channels (`/crm/v8/actions/watch`), renewed by moving `channel_expiry`."""

    resources: Mapping[str, str] = field(default_factory=lambda: dict(ZOHO_RESOURCES))
    renew_by_replacing: bool = False

    @staticmethod
    def _expiry(now: datetime) -> datetime:
        return (now + ZOHO_LIFETIME).astimezone(UTC).replace(microsecond=0)

    def _watch(self, api: ApiClient, method: str, item: dict[str, object], what: str) -> None:
        try:
            answer = api.request(method, "/crm/v8/actions/watch", json={"watch": [item]}).json()
        except ProviderError as error:
            raise _refused_or_raise(error, what) from None
        results = answer.get("watch") or [{}]
        if results[0].get("status") != "success":
            raise PushRefused(f"{what}: Zoho answered {results[0].get('code', 'no result')}")

    def create(self, api: ApiClient, new: NewSubscription) -> Granted:
        channel_id = zoho_channel_id(new.subscription_id)
        expires = self._expiry(new.now)
        item: dict[str, object] = {
            "channel_id": channel_id,
            "events": new.resource.split(","),
            "channel_expiry": expires.isoformat(),
            "token": new.secret,
            "notify_url": notification_url(new.public_url, "zoho"),
        }
        self._watch(api, "POST", item, "Zoho watch channel")
        return Granted(str(channel_id), expires)

    def renew(self, api: ApiClient, *, external_id: str, resource: str, now: datetime) -> Granted:
        expires = self._expiry(now)
        item: dict[str, object] = {
            "channel_id": int(external_id),
            "events": resource.split(","),
            "channel_expiry": expires.isoformat(),
        }
        self._watch(api, "PATCH", item, "renewing Zoho watch channel")
        return Granted(external_id, expires)

    def stop(self, api: ApiClient, *, external_id: str, subscription_id: str, resource: str) -> None:
        api.request("DELETE", "/crm/v8/actions/watch", params={"channel_ids": external_id}, check_status=False)


SALESFORCE_RESOURCES = {"contacts": "Contact,Event,User"}  # one endpoint per connection; each message names its type
SALESFORCE_RECORDED_LIFE = timedelta(days=365)  # outbound messages never lapse: a year, renewed at half
MANUAL_SETUP = "manual"  # external id of an endpoint an administrator configures at a real org


def salesforce_endpoint_url(public_url: str, subscription_id: str, secret: str) -> str:
    query = urlencode({"subscription": subscription_id, "token": secret})
    return f"{notification_url(public_url, 'salesforce')}?{query}"


@dataclass(frozen=True)
class SalesforcePushApi:
    """Salesforce Outbound Messages. No API creates one at a real org: there the subscription is recorded and the
    endpoint an administrator must configure is logged without its token (`integrations-pipeline
    salesforce-endpoint` prints it); against a sandbox the emulator's Setup stand-in registers it."""

    resources: Mapping[str, str] = field(default_factory=lambda: dict(SALESFORCE_RESOURCES))
    renew_by_replacing: bool = False

    def create(self, api: ApiClient, new: NewSubscription) -> Granted:
        expires = new.now + SALESFORCE_RECORDED_LIFE
        if not new.sandbox:
            endpoint = salesforce_endpoint_url(new.public_url, new.subscription_id, "<token>")
            logger.warning(
                "Salesforce push for subscription %s needs an administrator: create an outbound message for %s "
                "to %s (run `integrations-pipeline salesforce-endpoint` for the URL with its token)",
                new.subscription_id,
                new.resource,
                endpoint,
            )
            return Granted(MANUAL_SETUP, expires)
        body = {
            "endpointUrl": salesforce_endpoint_url(new.public_url, new.subscription_id, new.secret),
            "sobjects": new.resource.split(","),
        }
        try:
            answer = api.request("POST", "/sandbox/outbound-messages", json=body).json()
        except ProviderError as error:
            raise _refused_or_raise(error, "Salesforce outbound message") from None
        return Granted(",".join(str(m["id"]) for m in answer["outboundMessages"]), expires)

    def renew(self, api: ApiClient, *, external_id: str, resource: str, now: datetime) -> Granted:
        return Granted(external_id, now + SALESFORCE_RECORDED_LIFE)  # nothing lapses at Salesforce

    def stop(self, api: ApiClient, *, external_id: str, subscription_id: str, resource: str) -> None:
        if external_id == MANUAL_SETUP:
            return  # the administrator removes it; its token no longer verifies once the row is removed
        for message_id in external_id.split(","):
            api.request("DELETE", f"/sandbox/outbound-messages/{message_id}", check_status=False)


PUSH_APIS: dict[str, PushApi] = {
    "microsoft": GraphPushApi(),
    "google": GooglePushApi(),
    "zoho": ZohoPushApi(),
    "salesforce": SalesforcePushApi(),
}
"""Providers whose push lifecycle is managed per connection. HubSpot's is per app (`ensure_hubspot_app_webhooks`).
See docs/architecture.md, "Push subscriptions"."""


# --- HubSpot: webhook settings belong to the app (one target URL, one set of subscriptions for every portal) ------

HUBSPOT_SUBSCRIPTIONS: tuple[tuple[str, str | None], ...] = (
    ("contact.creation", None),
    ("contact.deletion", None),
    *(("contact.propertyChange", name) for name in ("firstname", "lastname", "email", "phone", "company", "jobtitle")),
)


def ensure_hubspot_app_webhooks(api: ApiClient, *, app_id: int, developer_api_key: str, target_url: str) -> int:
    """Point the app's webhooks at `target_url` and make sure every subscription exists and is active, changing
    only what differs; returns how many changes were made. The developer API key travels as `hapikey` (HubSpot's
    webhooks API takes nothing else) and is never logged: errors name only the status."""
    base = f"/webhooks/v3/{app_id}"
    key = {"hapikey": developer_api_key}
    changes = 0
    try:
        current = api.request("GET", f"{base}/settings", params=key, check_status=False)
        if current.status_code == 404 or current.json().get("targetUrl") != target_url:
            api.request("PUT", f"{base}/settings", params=key, json={"targetUrl": target_url})
            changes += 1
        if current.status_code not in (200, 404):
            api.raise_for_status(current)
        existing = api.request("GET", f"{base}/subscriptions", params=key).json().get("results", [])
        by_kind = {(s["eventType"], s.get("propertyName")): s for s in existing}
        for event_type, property_name in HUBSPOT_SUBSCRIPTIONS:
            found = by_kind.get((event_type, property_name))
            if found is None:
                body: dict[str, object] = {"eventType": event_type, "active": True}
                if property_name is not None:
                    body["propertyName"] = property_name
                api.request("POST", f"{base}/subscriptions", params=key, json=body)
                changes += 1
            elif not found.get("active"):
                api.request("PATCH", f"{base}/subscriptions/{found['id']}", params=key, json={"active": True})
                changes += 1
    except ProviderError as error:
        raise _refused_or_raise(error, "HubSpot app webhook settings") from None
    return changes
