"""The webhook receiver: `POST /webhooks/{provider}` and `POST /webhooks/standard/{source}`.

Order of work for every request: bound the body (413 past the limit, before it is buffered whole), verify the
sender with its provider's own scheme on the raw bytes in constant time, only then parse, then commit the events
to the inbox (`WebhookInbox.receive`) and only then acknowledge. Every refusal passes through `_refused`, which
logs it without secrets and counts it; every malformed header or body is a 4xx naming the problem.

What each request lands (one inbox row per provider event; duplicates are skipped by the inbox):
- `connection_id` and `entity` (users | contacts | events), from the push subscription or the provider's object type;
- `partition_key`, the event's UTC day, where the notification tells it (Salesforce events, standard senders);
- `kind`: change | missed | lifecycle; and in the payload a `source_ids` list of the object ids it names.
Payloads never keep the secrets senders echo (Graph clientState, Google and Zoho tokens, Salesforce SessionId).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from integrations_pipeline import metrics
from integrations_pipeline.clients.providers import ENTITIES
from integrations_pipeline.gateway.connections import GatewayError
from integrations_pipeline.gateway.intake import DATABASE_UNAVAILABLE, GroupCommit, Landing
from integrations_pipeline.gateway.parsing import NO_NUL, invalid, parse_query, read_json, read_limited
from integrations_pipeline.gateway.schemas import WebhookAck
from integrations_pipeline.gateway.signatures import (
    SignatureRefused,
    hubspot_uri,
    verify_hubspot_v3,
    verify_standard_webhook,
)
from integrations_pipeline.gateway.soap import ACK, XmlRefused, parse_outbound_message
from integrations_pipeline.settings import Settings, whsec_key
from integrations_pipeline.store import StateStore
from integrations_pipeline.store.inbox import NewEvent
from integrations_pipeline.store.push import PushSubscription, PushSubscriptions

logger = logging.getLogger(__name__)
MAX_EVENTS_PER_REQUEST = 1000
MAX_ID_LENGTH = 255
MAX_SOURCE_IDS = 1000
MAX_VALIDATION_TOKEN = 1024
ENTITY_NAMES = ("users", "contacts", "events")
GOOGLE_STATE = re.compile(r"[a-z_]{1,32}")  # sync, exists, not_exists (Calendar); add, update, trash (Drive)
# The provider's object type -> our entity. Types we do not sync are acknowledged and not stored.
HUBSPOT_ENTITIES = {"contact": "contacts", "0-1": "contacts", "meeting": "events", "0-47": "events"}
ZOHO_MODULES = {"Contacts": "contacts", "Events": "events", "users": "users", "Users": "users"}
SALESFORCE_OBJECTS = {"Contact": "contacts", "User": "users", "Event": "events"}
PARTITIONED = {(spec.provider, spec.entity) for spec in ENTITIES if spec.partitioned_by_day}
ENTITIES_OF: dict[str, set[str]] = {}
for _spec in ENTITIES:
    ENTITIES_OF.setdefault(_spec.provider, set()).add(_spec.entity)


def _refused(source: str, error: GatewayError) -> GatewayError:
    """The one place every refused webhook passes: logged (never a secret: codes only) and, when the sender failed
    verification, counted for /metrics."""
    logger.warning("webhook refused: source=%s status=%d reason=%s", source, error.status, error.code)
    if error.status == 401:
        metrics.record_webhook_verification_failure(source)
    return error


def _ack(received: int, stored: int, ignored: int, status: int = 200) -> Response:
    return JSONResponse(WebhookAck(received=received, stored=stored, ignored=ignored).model_dump(), status_code=status)


def digest(document: Any) -> str:
    """A stable id for a notification whose sender gives none: its canonical JSON, hashed (secrets removed first)."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _validated(adapter: TypeAdapter[Any], document: Any, what: str) -> Any:
    try:
        return adapter.validate_python(document)
    except ValidationError as error:
        raise invalid(422, "invalid_body", f"{what} body", error) from None


def _source_ids(values: Iterable[Any]) -> list[str]:
    return [str(value) for value in values if isinstance(value, str | int) and not isinstance(value, bool)][
        :MAX_SOURCE_IDS
    ]


def _utc_day(value: str | None) -> str | None:
    """YYYY-MM-DD of an ISO date or date-time (a date-time is moved to UTC first); None when unreadable."""
    if not value:
        return None
    try:
        if len(value) == 10:
            return date.fromisoformat(value).isoformat()
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC).date().isoformat()
    except (ValueError, OverflowError):  # OverflowError: 9999-12-31T23:00:00-05:00 is past the calendar in UTC
        return None


# -- provider bodies (lenient: extra fields are kept in the stored payload, only what we use is required) ----------


class HubSpotEvent(BaseModel):
    model_config = ConfigDict(extra="allow")
    eventId: int
    subscriptionType: str = Field(max_length=100)
    portalId: int
    objectId: int | None = None
    objectTypeId: str | None = None


class GraphNotification(BaseModel):
    model_config = ConfigDict(extra="allow")
    subscriptionId: str = Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=NO_NUL)
    clientState: str | None = Field(default=None, max_length=256)
    changeType: str | None = None
    resource: str | None = None
    resourceData: dict[str, Any] | None = None
    lifecycleEvent: str | None = None


class GraphBatch(BaseModel):
    value: list[GraphNotification] = Field(min_length=1, max_length=MAX_EVENTS_PER_REQUEST)


class ZohoNotification(BaseModel):
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)
    channel_id: str = Field(min_length=1, max_length=64, pattern=NO_NUL)
    token: str | None = Field(default=None, max_length=256)
    module: str | None = None
    operation: str | None = None
    ids: list[str] = Field(default_factory=list, max_length=MAX_SOURCE_IDS)


class StandardData(BaseModel):
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)
    id: str | None = None
    ids: list[str] = Field(default_factory=list, max_length=MAX_SOURCE_IDS)
    day: date | None = None


class StandardEvent(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_]+\.[A-Za-z0-9_.-]+$")
    data: StandardData = Field(default_factory=StandardData)


class HubSpotBatch(RootModel[list[HubSpotEvent]]):
    root: list[HubSpotEvent] = Field(min_length=1, max_length=MAX_EVENTS_PER_REQUEST)


# -- what each scheme sends besides its body, for /openapi.json: the handlers below check the same rules, and answer
# 401 when a credential is missing, 400 when a header is malformed --------------------------------------------------

TIMESTAMP = r"^[0-9]{1,16}$"


class HubSpotHeaders(BaseModel):
    signature: str = Field(
        alias="X-HubSpot-Signature-v3",
        min_length=1,
        description="base64 HMAC-SHA256, with the app's client secret, of method + URI + body + timestamp",
    )
    timestamp: str = Field(
        alias="X-HubSpot-Request-Timestamp", pattern=TIMESTAMP, description="milliseconds since 1970, within 5 min"
    )


class GraphQuery(BaseModel):
    validationToken: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_VALIDATION_TOKEN,
        description="subscription validation (printable text): echoed at once as text/plain with a 200",
    )


class GoogleHeaders(BaseModel):
    channel_id: str = Field(alias="X-Goog-Channel-ID", min_length=1, max_length=64, description="our channel id")
    channel_token: str = Field(alias="X-Goog-Channel-Token", max_length=256, description="the channel's secret")
    resource_state: str = Field(alias="X-Goog-Resource-State", pattern=GOOGLE_STATE.pattern.join("^$"))
    message_number: str = Field(alias="X-Goog-Message-Number", pattern=r"^[0-9]{1,20}$")
    resource_id: str | None = Field(default=None, alias="X-Goog-Resource-ID")
    resource_uri: str | None = Field(default=None, alias="X-Goog-Resource-URI")
    channel_expiration: str | None = Field(default=None, alias="X-Goog-Channel-Expiration")
    changed: str | None = Field(default=None, alias="X-Goog-Changed")


class SalesforceQuery(BaseModel):
    subscription: str = Field(min_length=1, max_length=64, pattern=NO_NUL, description="the push subscription")
    token: str = Field(min_length=1, max_length=256, description="its secret, set in the outbound message's URL")


class StandardHeaders(BaseModel):
    id: str = Field(alias="webhook-id", pattern=r"^[ -~]{1,255}$", description="the message id (printable ASCII)")
    timestamp: str = Field(alias="webhook-timestamp", pattern=TIMESTAMP, description="seconds since 1970, within 5 min")
    signature: str = Field(
        alias="webhook-signature", min_length=1, description="space-separated `v1,<base64 HMAC-SHA256>` signatures"
    )


HUBSPOT_BATCH = TypeAdapter(HubSpotBatch)
GRAPH_BATCH = TypeAdapter(GraphBatch)
ZOHO_NOTIFICATION = TypeAdapter(ZohoNotification)
STANDARD_EVENT = TypeAdapter(StandardEvent)

Handler = Callable[[Request], Awaitable[Response]]


class WebhookReceiver:
    def __init__(self, settings: Settings, store: StateStore) -> None:
        self.settings = settings
        self.store = store
        self.intake = GroupCommit(store)
        self.subscriptions = PushSubscriptions(store)
        self.limit = settings.webhooks.max_body_bytes
        self._handlers: dict[str, Handler] = {
            "hubspot": self._hubspot,
            "microsoft": self._microsoft,
            "google": self._google,
            "zoho": self._zoho,
            "salesforce": self._salesforce,
        }

    def close(self) -> None:
        """Land what is queued, then stop the intake's writer (the gateway's lifespan calls this at shutdown)."""
        self.intake.close()

    # -- entry points ------------------------------------------------------------------------------------------

    async def provider(self, provider: str, request: Request) -> Response:
        handler = self._handlers.get(provider)
        source = provider if handler is not None else "unknown"
        try:
            if handler is None:
                raise GatewayError(404, "unknown_provider", f"no webhook receiver for provider {provider!r}")
            return await self._guarded(handler, request)
        except GatewayError as refusal:
            raise _refused(source, refusal) from None

    async def microsoft_lifecycle(self, request: Request) -> Response:
        """Graph's lifecycleNotificationUrl: the same handshake and clientState check; lifecycleEvent sets the kind."""
        try:
            return await self._guarded(self._microsoft, request)
        except GatewayError as refusal:
            raise _refused("microsoft", refusal) from None

    async def standard(self, request: Request) -> Response:
        name = str(request.path_params["source"])
        configured = self.settings.webhooks.standard_sources.get(name)
        try:
            if configured is None:
                raise GatewayError(404, "unknown_source", f"no Standard Webhooks source {name!r} is configured")
            return await self._guarded(self._standard, request)
        except GatewayError as refusal:
            raise _refused("standard:" + (name if configured is not None else "unknown"), refusal) from None

    @staticmethod
    async def _guarded(handler: Handler, request: Request) -> Response:
        try:
            return await handler(request)
        except SignatureRefused as refusal:
            raise GatewayError(refusal.status, refusal.code, refusal.message) from None
        except XmlRefused as refusal:
            raise GatewayError(400, "malformed_body", f"the SOAP body is refused: {refusal}") from None
        except DATABASE_UNAVAILABLE:
            raise GatewayError(503, "database_unavailable", "the state database is not reachable") from None

    async def _land(self, events: list[NewEvent], received: int, status: int = 200) -> Response:
        stored = (await self.intake.land(Landing(lambda _: events, len(events)))).stored if events else 0
        return _ack(received, stored, received - len(events), status)

    # -- helpers -------------------------------------------------------------------------------------------------

    def _subscription(self, provider: str, presented_id: str, secret: str | None) -> PushSubscription | None:
        """The active subscription `presented_id` names (our id, or the provider's id for it) whose secret is
        `secret`; None otherwise. Always hashes and compares, known id or not."""
        known = self.subscriptions.get(presented_id)
        if known is None or known.provider != provider:
            known = self.subscriptions.find(provider, external_id=presented_id)
        candidate = known.id if known is not None else presented_id
        verified = self.subscriptions.verify_secret(candidate, secret or "")
        if verified is None or verified.provider != provider or secret is None:
            return None
        return verified

    # -- HubSpot: v3 signature over method + URI + body + timestamp ------------------------------------------------

    async def _hubspot(self, request: Request) -> Response:
        app = self.settings.hubspot
        if app is None:
            raise GatewayError(404, "provider_not_configured", "HubSpot is not configured on this gateway")
        body = await read_limited(request, self.limit)
        root_path = request.scope.get("root_path", "")
        path = str(request.scope["path"]).removeprefix(root_path)
        verify_hubspot_v3(
            client_secret=app.client_secret.get_secret_value(),
            method=request.method,
            uri=hubspot_uri(str(self.settings.public_url), path, request.url.query),
            body=body,
            signature=request.headers.get("x-hubspot-signature-v3"),
            timestamp_ms=request.headers.get("x-hubspot-request-timestamp"),
            now_s=time.time(),
        )
        raw_events = read_json(body, "HubSpot")
        if not isinstance(raw_events, list) or not 0 < len(raw_events) <= MAX_EVENTS_PER_REQUEST:
            raise GatewayError(422, "invalid_body", "a HubSpot webhook body is a JSON array of 1 to 1000 events")
        parsed = _validated(HUBSPOT_BATCH, raw_events, "HubSpot").root

        def events(accounts: Mapping[str, str]) -> list[NewEvent]:
            """The events of connected portals and synced object types (the writer resolves the portals)."""
            landing = []
            for raw, event in zip(raw_events, parsed, strict=True):
                object_type = event.objectTypeId or event.subscriptionType.partition(".")[0]
                entity = HUBSPOT_ENTITIES.get(object_type)
                connection_id = accounts.get(str(event.portalId))
                if entity is None or connection_id is None:
                    continue  # an object type we do not sync, or a portal no tenant has connected
                payload = raw | {"source_ids": _source_ids([event.objectId])}
                landing.append(NewEvent("hubspot", str(event.eventId), "change", connection_id, entity, None, payload))
            return landing

        portals = frozenset(str(event.portalId) for event in parsed)
        landed = await self.intake.land(Landing(events, len(parsed), "hubspot", portals))
        return _ack(len(parsed), landed.stored, len(parsed) - landed.events)

    # -- Microsoft Graph: validationToken echo, clientState per notification, lifecycle events ---------------------

    async def _microsoft(self, request: Request) -> Response:
        token = parse_query(request, GraphQuery).validationToken
        if token is not None:  # subscription creation: echo at once, before anything else
            if not token.isprintable():
                raise GatewayError(400, "malformed_validation_token", "validationToken must be printable text")
            if await read_limited(request, self.limit):  # Graph sends none: a body means a confused sender
                raise GatewayError(400, "unexpected_body", "a validation request carries no body")
            return PlainTextResponse(token)
        body = await read_limited(request, self.limit)
        batch: GraphBatch = _validated(GRAPH_BATCH, read_json(body, "Graph"), "Graph")
        verified = await run_in_threadpool(
            lambda: [(n, self._subscription("microsoft", n.subscriptionId, n.clientState)) for n in batch.value]
        )
        events = []
        for notification, subscription in verified:
            if subscription is None:
                _refused("microsoft", GatewayError(401, "bad_client_state", "a notification failed its clientState"))
                continue
            document = notification.model_dump(mode="json", exclude={"clientState"}, exclude_none=True)
            lifecycle = notification.lifecycleEvent
            kind = "change" if lifecycle is None else "missed" if lifecycle == "missed" else "lifecycle"
            resource_data = notification.resourceData or {}
            named = resource_data.get("id") or (notification.resource or "").rpartition("/")[2]
            payload = document | {"source_ids": _source_ids([named] if named and lifecycle is None else [])}
            events.append(
                NewEvent(
                    "microsoft",
                    digest(document),
                    kind,
                    subscription.connection_id,
                    subscription.entity,
                    None,
                    payload,
                )
            )
        if not events:
            raise GatewayError(401, "bad_client_state", "no notification carries a valid subscription and clientState")
        return await self._land(events, len(batch.value), status=202)

    # -- Google push: channel id + channel token headers, `sync` is a handshake --------------------------------------

    async def _google(self, request: Request) -> Response:
        headers = request.headers
        channel_id = headers.get("x-goog-channel-id")
        token = headers.get("x-goog-channel-token")
        state = headers.get("x-goog-resource-state")
        number = headers.get("x-goog-message-number")
        await read_limited(request, self.limit)  # Google sends no body; a large one is still refused
        if not channel_id or token is None:
            raise GatewayError(401, "missing_channel", "X-Goog-Channel-ID and X-Goog-Channel-Token are required")
        if len(channel_id) > 64 or len(token) > 256:
            raise GatewayError(400, "malformed_header", "X-Goog-Channel-ID or X-Goog-Channel-Token is too long")
        subscription = await run_in_threadpool(self._subscription, "google", channel_id, token)
        if subscription is None:
            raise GatewayError(401, "bad_channel_token", "unknown channel, or the channel token does not match")
        if state is None or not GOOGLE_STATE.fullmatch(state):
            raise GatewayError(400, "malformed_header", "X-Goog-Resource-State is missing or malformed")
        if number is None or not number.isascii() or not number.isdigit() or len(number) > 20:
            raise GatewayError(400, "malformed_header", "X-Goog-Message-Number must be an integer")
        if state == "sync":  # the channel's handshake: nothing changed
            return JSONResponse(WebhookAck(received=1, stored=0, ignored=1).model_dump())
        payload: dict[str, Any] = {
            "channel_id": channel_id,
            "resource_id": headers.get("x-goog-resource-id"),
            "resource_uri": headers.get("x-goog-resource-uri"),
            "resource_state": state,
            "message_number": int(number),
            "channel_expiration": headers.get("x-goog-channel-expiration"),
            "changed": headers.get("x-goog-changed"),
            "source_ids": [],  # Google names the watched collection, never the changed objects
        }
        event = NewEvent(
            "google",
            f"{channel_id}:{number}",
            "change",
            subscription.connection_id,
            subscription.entity,
            None,
            payload,
        )
        return await self._land([event], 1)

    # -- Zoho: channel id + token in the JSON body (no HMAC exists) ------------------------------------------------

    async def _zoho(self, request: Request) -> Response:
        body = await read_limited(request, self.limit)
        # Zoho signs nothing: the token it echoes is in the body, so the JSON is parsed (bounded) to find it.
        notification: ZohoNotification = _validated(ZOHO_NOTIFICATION, read_json(body, "Zoho"), "Zoho")
        subscription = await run_in_threadpool(self._subscription, "zoho", notification.channel_id, notification.token)
        if subscription is None:
            raise GatewayError(401, "bad_channel_token", "unknown channel_id, or the token does not match")
        document = notification.model_dump(mode="json", exclude={"token"}, exclude_none=True)
        entity = ZOHO_MODULES.get(notification.module or "", subscription.entity)
        payload = document | {"source_ids": _source_ids(notification.ids)}
        event = NewEvent("zoho", digest(document), "change", subscription.connection_id, entity, None, payload)
        return await self._land([event], 1)

    # -- Salesforce Outbound Messages: endpoint token in the URL, org id in the SOAP body, SOAP Ack ---------------

    async def _salesforce(self, request: Request) -> Response:
        if not request.query_params.get("subscription") or not request.query_params.get("token"):
            raise GatewayError(401, "missing_token", "the endpoint URL must carry ?subscription=<id>&token=<secret>")
        query = parse_query(request, SalesforceQuery)
        subscription = await run_in_threadpool(self._subscription, "salesforce", query.subscription, query.token)
        if subscription is None:
            raise GatewayError(401, "bad_token", "unknown subscription, or its token does not match")
        body = await read_limited(request, self.limit)
        message = parse_outbound_message(body)
        connection = await run_in_threadpool(self.store.get_connection, subscription.connection_id)
        expected_org = connection.external_account_id if connection is not None else None
        # Org ids come as 15 or 18 characters (the last three a case checksum): the first 15 identify the org.
        if not expected_org or message.organization_id[:15] != expected_org[:15]:
            raise GatewayError(401, "organization_mismatch", "OrganizationId is not this subscription's org")
        events = []
        for notification in message.notifications:
            if len(notification.notification_id) > MAX_ID_LENGTH:
                raise GatewayError(400, "malformed_body", "a Notification Id is longer than 255 characters")
            entity = SALESFORCE_OBJECTS.get(notification.sobject_type, subscription.entity)
            fields = notification.fields
            day = _utc_day(fields.get("StartDateTime") or fields.get("ActivityDate"))
            partition_key = day if ("salesforce", entity) in PARTITIONED else None
            payload: dict[str, Any] = {
                "organization_id": message.organization_id,
                "action_id": message.action_id,
                "notification_id": notification.notification_id,
                "sobject_type": notification.sobject_type,
                "fields": fields,
                "source_ids": _source_ids([fields.get("Id")]),
            }
            events.append(
                NewEvent(
                    "salesforce",
                    notification.notification_id,
                    "change",
                    subscription.connection_id,
                    entity,
                    partition_key,
                    payload,
                )
            )
        await self.intake.land(Landing(lambda _: events, len(events)))
        return Response(ACK, media_type="text/xml; charset=utf-8")

    # -- Standard Webhooks: a configured source bound to one connection ------------------------------------------

    async def _standard(self, request: Request) -> Response:
        name = str(request.path_params["source"])
        source = self.settings.webhooks.standard_sources[name]
        body = await read_limited(request, self.limit)
        verify_standard_webhook(
            keys=[whsec_key(secret.get_secret_value()) for secret in source.secrets],
            message_id=request.headers.get("webhook-id"),
            timestamp_s=request.headers.get("webhook-timestamp"),
            signatures=request.headers.get("webhook-signature"),
            body=body,
            now_s=time.time(),
        )
        document = read_json(body, "webhook")
        if not isinstance(document, dict):
            raise GatewayError(422, "invalid_body", "a standard webhook body is a JSON object with a `type`")
        event: StandardEvent = _validated(STANDARD_EVENT, document, "webhook")
        connection = await run_in_threadpool(self.store.get_connection, source.connection_id)
        if connection is None:
            raise GatewayError(422, "unknown_connection", f"source {name!r} names no existing connection")
        prefix = event.type.partition(".")[0].lower()
        entity = prefix if prefix in ENTITY_NAMES else prefix + "s"
        if entity not in ENTITIES_OF.get(connection.provider, set()):
            raise GatewayError(
                422,
                "unknown_entity",
                f"type {event.type!r} names no entity {connection.provider} syncs (users, contacts or events)",
                {"type": "must start with user., contact. or event. (or the plural)"},
            )
        partition_key = None
        if event.data.day is not None:
            if (connection.provider, entity) not in PARTITIONED:
                raise GatewayError(422, "invalid_body", f"data.day applies to day-partitioned entities, not {entity}")
            partition_key = event.data.day.isoformat()
        named = ([event.data.id] if event.data.id else []) + event.data.ids
        payload = document | {"source_ids": _source_ids(named)}
        message_id = str(request.headers["webhook-id"])
        new = NewEvent(f"standard:{name}", message_id, "change", connection.id, entity, partition_key, payload)
        return await self._land([new], 1)
