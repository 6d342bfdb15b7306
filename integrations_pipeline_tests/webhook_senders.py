"""Signed webhook requests as each provider (and a Standard Webhooks sender) makes them, and the connections and push
subscriptions they are for, shared by the receiver's tests and benchmark. Signing uses the emulators' and the
reference implementation's code, not the receiver's."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from pydantic import SecretStr
from standardwebhooks import Webhook

from integrations_pipeline.gateway import create_app
from integrations_pipeline.httpserver import BackgroundServer
from integrations_pipeline.sandbox.hubspot_push import sign_v3
from integrations_pipeline.settings import Settings, load_settings
from integrations_pipeline.store import StateStore, TokenSet, create_store_engine
from integrations_pipeline.store import migrate as migrations
from integrations_pipeline.store.push import PushSubscriptions
from integrations_pipeline.store.repository import utcnow

API_KEY = "test-api-key-0123456789abcdef"
HUBSPOT_SECRET = "test-hubspot-secret-webhook-canary-91c2"
HUBSPOT_PORTAL = "62515"
SALESFORCE_ORG = "00D5g000000AbCdEAF"
GRAPH_SUBSCRIPTION = "7f105c7d-2dc5-4530-97cd-4e7ae6534c07"
GOOGLE_CHANNEL = "channel-0001"
ZOHO_CHANNEL = "1000000068001"
SALESFORCE_ENDPOINT = "sf-outbound-1"
STANDARD_SOURCE = "billing"
# Two secrets, as during a rotation: the new one first.
STANDARD_SECRETS = ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")


@dataclass(frozen=True)
class SignedRequest:
    path: str
    headers: dict[str, str]
    body: bytes
    query: dict[str, str] = field(default_factory=dict)

    @property
    def target(self) -> str:
        return self.path + ("?" + urlencode(self.query) if self.query else "")

    def with_headers(self, **changes: str | None) -> SignedRequest:
        headers = dict(self.headers)
        for name, value in changes.items():
            name = name.replace("_", "-")
            if value is None:
                headers.pop(name, None)
            else:
                headers[name] = value
        return replace(self, headers=headers)


@dataclass(frozen=True)
class Secrets:
    """What each sender holds: the HubSpot app secret and each subscription's secret."""

    public_url: str
    hubspot_client_secret: str
    graph_client_state: str
    google_token: str
    zoho_token: str
    salesforce_token: str
    standard_secrets: tuple[str, ...] = STANDARD_SECRETS


def hubspot(
    secrets: Secrets,
    n: int,
    *,
    timestamp_ms: int | None = None,
    client_secret: str | None = None,
    raw: bytes | None = None,
) -> SignedRequest:
    """A signed batch of one event, or `raw` signed as the body."""
    events = [
        {
            "eventId": 4_000_000 + n,
            "subscriptionId": 1_000_001,
            "portalId": int(HUBSPOT_PORTAL),
            "appId": 123,
            "occurredAt": int(time.time() * 1000),
            "subscriptionType": "contact.propertyChange",
            "attemptNumber": 0,
            "objectId": 9_000 + n,
            "propertyName": "email",
            "propertyValue": f"person{n}@example.com",
            "changeSource": "CRM_UI",
        }
    ]
    body = raw if raw is not None else json.dumps(events).encode()
    stamp = str(timestamp_ms if timestamp_ms is not None else int(time.time() * 1000))
    path = "/webhooks/hubspot"
    signature = sign_v3(client_secret or secrets.hubspot_client_secret, "POST", secrets.public_url + path, body, stamp)
    headers = {
        "content-type": "application/json",
        "x-hubspot-signature-version": "v3",
        "x-hubspot-request-timestamp": stamp,
        "x-hubspot-signature-v3": signature,
    }
    return SignedRequest(path, headers, body)


def graph(secrets: Secrets, n: int, *, client_state: str | None = None, lifecycle: str | None = None) -> SignedRequest:
    notification: dict[str, object] = {
        "subscriptionId": GRAPH_SUBSCRIPTION,
        "clientState": client_state if client_state is not None else secrets.graph_client_state,
        "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z",
        "tenantId": "tenant-1",
    }
    if lifecycle is None:
        notification |= {
            "changeType": "updated",
            "resource": f"Users/u1/Contacts/contact-{n}",
            "resourceData": {"@odata.type": "#Microsoft.Graph.Contact", "id": f"contact-{n}", "@odata.etag": f"W/{n}"},
        }
    else:
        notification |= {"lifecycleEvent": lifecycle, "resource": "me/contacts", "n": n}
    body = json.dumps({"value": [notification]}).encode()
    return SignedRequest("/webhooks/microsoft", {"content-type": "application/json"}, body)


def google(secrets: Secrets, n: int, *, state: str = "exists", token: str | None = None) -> SignedRequest:
    headers = {
        "x-goog-channel-id": GOOGLE_CHANNEL,
        "x-goog-channel-token": token if token is not None else secrets.google_token,
        "x-goog-resource-id": "resource-abc",
        "x-goog-resource-uri": "https://www.googleapis.com/calendar/v3/calendars/primary/events?alt=json",
        "x-goog-resource-state": state,
        "x-goog-message-number": str(n),
        "x-goog-channel-expiration": "Wed, 01 Jan 2030 00:00:00 GMT",
    }
    return SignedRequest("/webhooks/google", headers, b"")


def zoho(secrets: Secrets, n: int, *, token: str | None = None, channel_id: str = ZOHO_CHANNEL) -> SignedRequest:
    notification = {
        "server_time": 1_700_000_000_000 + n,
        "query_params": {},
        "module": "Contacts",
        "resource_uri": "https://www.zohoapis.com/crm/v8/Contacts",
        "ids": [f"55000000{n:05d}"],
        "affected_fields": [{f"55000000{n:05d}": ["Email"]}],
        "operation": "update",
        "channel_id": int(channel_id) if channel_id.isdigit() else channel_id,
        "token": token if token is not None else secrets.zoho_token,
    }
    return SignedRequest("/webhooks/zoho", {"content-type": "application/json"}, json.dumps(notification).encode())


def salesforce_xml(n: int, *, organization_id: str = SALESFORCE_ORG, sobject: str = "Event") -> bytes:
    fields = f"<sf:Id>00U000000000{n:03d}AAA</sf:Id><sf:LastModifiedDate>2025-03-04T10:00:00.000Z</sf:LastModifiedDate>"
    if sobject == "Event":
        fields += "<sf:StartDateTime>2025-03-04T23:30:00.000-02:00</sf:StartDateTime>"
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
  xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>{organization_id}</OrganizationId>
   <ActionId>04k5g000000XyZAAA</ActionId>
   <SessionId>00D5g!AQ4AQSESSIONSECRET{n}</SessionId>
   <EnterpriseUrl>https://example.my.salesforce.com/services/Soap/c/61.0/00D5g</EnterpriseUrl>
   <PartnerUrl>https://example.my.salesforce.com/services/Soap/u/61.0/00D5g</PartnerUrl>
   <Notification>
    <Id>04l5g00000{n:08d}</Id>
    <sObject xsi:type="sf:{sobject}" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">{fields}</sObject>
   </Notification>
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>""".encode()


def salesforce(
    secrets: Secrets, n: int, *, token: str | None = None, organization_id: str = SALESFORCE_ORG
) -> SignedRequest:
    query = {"subscription": SALESFORCE_ENDPOINT, "token": token if token is not None else secrets.salesforce_token}
    headers = {"content-type": "text/xml; charset=utf-8", "soapaction": '""'}
    return SignedRequest("/webhooks/salesforce", headers, salesforce_xml(n, organization_id=organization_id), query)


def standard(
    secrets: Secrets,
    n: int,
    *,
    secret: str | None = None,
    timestamp: datetime | None = None,
    event_type: str = "event.updated",
    data: dict[str, object] | None = None,
    raw: bytes | None = None,
) -> SignedRequest:
    """Signed by the Standard Webhooks reference implementation (`raw`, when given, is the body signed)."""
    message_id = f"msg_{n:08d}"
    moment = timestamp or datetime.now(UTC)
    payload = {
        "type": event_type,
        "timestamp": moment.isoformat(),
        "data": data or {"id": f"evt-{n}", "day": "2025-03-05"},
    }
    body = raw.decode() if raw is not None else json.dumps(payload)
    signature = Webhook(secret or secrets.standard_secrets[0]).sign(message_id, moment, body)
    headers = {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signature,
    }
    return SignedRequest(f"/webhooks/standard/{STANDARD_SOURCE}", headers, body.encode())


SENDERS: dict[str, Callable[..., SignedRequest]] = {
    "hubspot": hubspot,
    "microsoft": graph,
    "google": google,
    "zoho": zoho,
    "salesforce": salesforce,
    "standard": standard,
}


def _connect(store: StateStore, provider: str, account: str) -> str:
    with store.write() as conn:
        return store.save_connection(
            conn,
            tenant="acme",
            provider=provider,
            requested_scopes=[],
            granted_scopes=[],
            tokens=TokenSet(access_token=SecretStr(f"access-{provider}"), refresh_token=None, expires_at=None),
            external_account_id=account,
        ).id


def receiver_settings(url: str, store_url: str, key_spec: str, *, max_body_bytes: int = 1024 * 1024) -> Settings:
    """Gateway settings with the HubSpot app and the standard source the senders sign for."""
    sources = {STANDARD_SOURCE: {"secrets": list(STANDARD_SECRETS), "connection_id": "google-acme"}}
    return load_settings(
        state_database_url=store_url,
        encryption_keys=key_spec,
        api_key=API_KEY,
        public_url=url,
        hubspot={"client_id": "test-hubspot-app", "client_secret": HUBSPOT_SECRET},
        webhooks={"max_body_bytes": max_body_bytes, "standard_sources": sources},
    )


def prepare(store: StateStore, public_url: str) -> tuple[Secrets, dict[str, str]]:
    """Connections for each provider and the push subscriptions a lifecycle would have created."""
    connections = {
        "hubspot": _connect(store, "hubspot", HUBSPOT_PORTAL),
        "microsoft": _connect(store, "microsoft", "graph-user-1"),
        "google": _connect(store, "google", "google-sub-1"),
        "zoho": _connect(store, "zoho", "zoho-org-1"),
        "salesforce": _connect(store, "salesforce", SALESFORCE_ORG),
    }
    push = PushSubscriptions(store)
    expires = utcnow() + timedelta(days=1)

    def subscribe(provider: str, entity: str, **ids: str) -> str:
        _, secret = push.create(
            connection_id=connections[provider],
            provider=provider,
            entity=entity,
            resource="watched",
            expires_at=expires,
            **ids,
        )
        return secret

    secrets = Secrets(
        public_url=public_url,
        hubspot_client_secret=HUBSPOT_SECRET,
        graph_client_state=subscribe("microsoft", "contacts", external_id=GRAPH_SUBSCRIPTION),
        google_token=subscribe("google", "events", subscription_id=GOOGLE_CHANNEL),
        zoho_token=subscribe("zoho", "contacts", subscription_id=ZOHO_CHANNEL),
        salesforce_token=subscribe("salesforce", "events", subscription_id=SALESFORCE_ENDPOINT),
    )
    return secrets, connections


@dataclass(frozen=True)
class RunningReceiver:
    url: str
    store: StateStore
    secrets: Secrets
    connections: dict[str, str]  # provider -> connection id


@contextmanager
def running_receiver(store_url: str, key_spec: str, *, max_body_bytes: int = 1024 * 1024) -> Iterator[RunningReceiver]:
    """The gateway on 127.0.0.1 with a connection and push subscription per provider and the standard source."""
    engine = create_store_engine(store_url)
    migrations.upgrade(engine)
    server = BackgroundServer()
    settings = receiver_settings(server.url, store_url, key_spec, max_body_bytes=max_body_bytes)
    store = StateStore(engine, settings.keyring())
    secrets, connections = prepare(store, server.url)
    try:
        with server.start(create_app(settings, store)):
            yield RunningReceiver(server.url, store, secrets, connections)
    finally:
        engine.dispose()
