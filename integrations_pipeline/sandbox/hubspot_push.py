"""HubSpot's Webhooks API v3 for the sandbox: the app's target URL and subscriptions, and signed, batched
notifications when contacts change.

Webhook settings belong to the app, not to a portal: the developer configures one target URL and a set of event
subscriptions (`contact.creation`, `contact.propertyChange` with a property name, `contact.deletion`), authenticated
with the developer API key (`hapikey`), and every portal that installed the app is notified there. Each request
is a JSON array of events signed with `X-HubSpot-Signature-v3` = base64(HMAC-SHA256(client secret, method + URI +
body + timestamp)); HubSpot retries a failed request up to 10 times over about a day, numbering `attemptNumber`
from 0. The sandbox accepts `http://` target URLs (the real API demands HTTPS) so loopback receivers work.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from integrations_pipeline.sandbox.common import Clock, json_response, new_correlation_id
from integrations_pipeline.sandbox.push import Delivery, DeliveryEngine, RetrySchedule
from integrations_pipeline.sandbox.push import Request as PushRequest

# Ten retries spread over about a day, as HubSpot documents.
RETRIES = RetrySchedule((60, 120, 300, 600, 1800, 3600, 7200, 14_400, 28_800, 28_800))
EVENT_TYPES = frozenset(
    ("contact.creation", "contact.deletion", "contact.propertyChange", "contact.privacyDeletion", "contact.restore")
)
MAX_EVENTS_PER_REQUEST = 100


def sign_v3(client_secret: str, method: str, uri: str, body: bytes, timestamp_ms: str) -> str:
    message = method.encode() + uri.encode() + body + timestamp_ms.encode()
    return base64.b64encode(hmac.new(client_secret.encode(), message, hashlib.sha256).digest()).decode()


class _Settings(BaseModel):
    model_config = ConfigDict(extra="ignore")
    targetUrl: str
    throttling: dict[str, Any] | None = None


class _NewSubscription(BaseModel):
    model_config = ConfigDict(extra="ignore")
    eventType: str
    propertyName: str | None = None
    active: bool = False


class _SubscriptionPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    active: bool


@dataclass
class _Subscription:
    id: int
    event_type: str
    property_name: str | None
    active: bool
    created_ms: int
    updated_ms: int

    def render(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": str(self.id),
            "eventType": self.event_type,
            "active": self.active,
            "createdAt": _iso(self.created_ms),
            "updatedAt": _iso(self.updated_ms),
        }
        if self.property_name is not None:
            body["propertyName"] = self.property_name
        return body


def _iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error(status_code: int, category: str, message: str) -> JSONResponse:
    body = {"status": "error", "message": message, "correlationId": new_correlation_id(), "category": category}
    return json_response(body, status_code)


class HubSpotPush:
    """The app's webhook settings and subscriptions; `contact_changed` is called under the emulator's lock."""

    def __init__(
        self,
        *,
        lock: threading.RLock,
        clock: Clock,
        app_id: int,
        portal_id: int,
        client_secret: str,
        developer_api_key: str,
        time_scale: float,
    ) -> None:
        self._lock = lock
        self._clock = clock
        self.app_id = app_id
        self.portal_id = portal_id
        self._client_secret = client_secret
        self.developer_api_key = developer_api_key
        self.engine = DeliveryEngine(time_scale=time_scale)
        self.target_url: str | None = None
        self._throttling: dict[str, Any] = {"maxConcurrentRequests": 10, "period": "SECONDLY"}
        self._subscriptions: dict[int, _Subscription] = {}
        self._subscription_ids = itertools.count(1_000_001)
        self._event_ids = itertools.count(secrets.randbelow(10**9) + 10**9)
        self._settings_stamps = (0, 0)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # --- notifications ---------------------------------------------------------------------------------------------

    def contact_changed(self, operation: str, object_id: int, properties: Mapping[str, str | None]) -> None:
        """`operation` is creation, propertyChange or deletion; one request carries the change's events."""
        if self.target_url is None:
            return
        occurred_ms = self._now_ms()
        events = []
        for subscription in self._subscriptions.values():
            if not subscription.active or subscription.event_type != f"contact.{operation}":
                continue
            event: dict[str, Any] = {
                "eventId": next(self._event_ids),
                "subscriptionId": subscription.id,
                "portalId": self.portal_id,
                "appId": self.app_id,
                "occurredAt": occurred_ms,
                "subscriptionType": subscription.event_type,
                "objectId": object_id,
                "changeSource": "CRM_UI",
            }
            if operation == "propertyChange":
                name = subscription.property_name
                if name is None or name not in properties:
                    continue
                event |= {"propertyName": name, "propertyValue": properties[name] or ""}
            events.append(event)
        for start in range(0, len(events), MAX_EVENTS_PER_REQUEST):
            self._send(self.target_url, events[start : start + MAX_EVENTS_PER_REQUEST])

    def _send(self, url: str, events: list[dict[str, Any]]) -> None:
        def build(attempt: int) -> PushRequest:
            body = json.dumps([event | {"attemptNumber": attempt - 1} for event in events]).encode()
            timestamp_ms = str(self._now_ms())
            return PushRequest(
                body,
                {
                    "Content-Type": "application/json",
                    "X-HubSpot-Signature-Version": "v3",
                    "X-HubSpot-Request-Timestamp": timestamp_ms,
                    "X-HubSpot-Signature-v3": sign_v3(self._client_secret, "POST", url, body, timestamp_ms),
                },
            )

        label = "hubspot:" + ",".join(str(event["eventId"]) for event in events)
        self.engine.enqueue(Delivery(url, build, RETRIES, label=label))

    # --- HTTP ------------------------------------------------------------------------------------------------------

    def _refusal(self, request: Request) -> Response | None:
        presented = request.query_params.get("hapikey", "")
        if not presented or not secrets.compare_digest(presented, self.developer_api_key):
            return _error(
                401,
                "INVALID_AUTHENTICATION",
                "The API key provided is invalid. The webhooks API takes the developer account's API key (hapikey).",
            )
        if request.path_params["app_id"] != str(self.app_id):
            return _error(404, "OBJECT_NOT_FOUND", f"App {request.path_params['app_id']} not found")
        return None

    @staticmethod
    async def _json(request: Request) -> Any:
        try:
            return json.loads(await request.body() or b"null")
        except json.JSONDecodeError as error:
            raise _Invalid(f"Invalid input JSON: {error.msg}") from None

    def _settings_body(self) -> dict[str, Any]:
        created_ms, updated_ms = self._settings_stamps
        return {
            "targetUrl": self.target_url,
            "throttling": self._throttling,
            "createdAt": _iso(created_ms),
            "updatedAt": _iso(updated_ms),
        }

    async def _settings(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        if request.method == "GET":
            with self._lock:
                if self.target_url is None:
                    return _error(404, "OBJECT_NOT_FOUND", "No webhook settings for this app")
                return json_response(self._settings_body())
        if request.method == "DELETE":
            with self._lock:
                self.target_url = None
            return Response(status_code=204)
        try:
            settings = _Settings.model_validate(await self._json(request))
        except (ValidationError, _Invalid) as error:
            return _error(400, "VALIDATION_ERROR", f"Invalid webhook settings: {error}")
        if not settings.targetUrl.startswith(("https://", "http://")):
            return _error(400, "VALIDATION_ERROR", "targetUrl must be an absolute https URL")
        with self._lock:
            now_ms = self._now_ms()
            self._settings_stamps = (self._settings_stamps[0] or now_ms, now_ms)
            self.target_url = settings.targetUrl
            if settings.throttling:
                self._throttling = settings.throttling
            return json_response(self._settings_body())

    async def _subscriptions_endpoint(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        if request.method == "GET":
            with self._lock:
                return json_response({"results": [s.render() for s in self._subscriptions.values()]})
        try:
            wanted = _NewSubscription.model_validate(await self._json(request))
        except (ValidationError, _Invalid) as error:
            return _error(400, "VALIDATION_ERROR", f"Invalid subscription: {error}")
        if wanted.eventType not in EVENT_TYPES:
            return _error(400, "VALIDATION_ERROR", f"Unsupported eventType {wanted.eventType!r}")
        if (wanted.eventType == "contact.propertyChange") != (wanted.propertyName is not None):
            return _error(400, "VALIDATION_ERROR", "propertyName is required for, and only for, propertyChange")
        with self._lock:
            duplicate = any(
                s.event_type == wanted.eventType and s.property_name == wanted.propertyName
                for s in self._subscriptions.values()
            )
            if duplicate:
                return _error(409, "CONFLICT", "A subscription for this event type and property already exists")
            now_ms = self._now_ms()
            subscription = _Subscription(
                next(self._subscription_ids), wanted.eventType, wanted.propertyName, wanted.active, now_ms, now_ms
            )
            self._subscriptions[subscription.id] = subscription
            return json_response(subscription.render(), 201)

    async def _subscription(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        raw_id = request.path_params["subscription_id"]
        with self._lock:
            subscription = self._subscriptions.get(int(raw_id)) if raw_id.isdigit() else None
        if subscription is None:
            return _error(404, "OBJECT_NOT_FOUND", f"Subscription {raw_id} not found")
        if request.method == "DELETE":
            with self._lock:
                self._subscriptions.pop(subscription.id, None)
            return Response(status_code=204)
        if request.method == "PATCH":
            try:
                patch = _SubscriptionPatch.model_validate(await self._json(request))
            except (ValidationError, _Invalid) as error:
                return _error(400, "VALIDATION_ERROR", f"Invalid subscription change: {error}")
            with self._lock:
                subscription.active = patch.active
                subscription.updated_ms = self._now_ms()
        with self._lock:
            return json_response(subscription.render())

    def routes(self) -> list[Route]:
        base = "/webhooks/v3/{app_id}"
        return [
            Route(f"{base}/settings", self._settings, methods=["GET", "PUT", "DELETE"]),
            Route(f"{base}/subscriptions", self._subscriptions_endpoint, methods=["GET", "POST"]),
            Route(f"{base}/subscriptions/{{subscription_id}}", self._subscription, methods=["GET", "PATCH", "DELETE"]),
        ]


class _Invalid(Exception):
    pass


def developer_api_key_for(client_secret: str) -> str:
    """The sandbox's developer API key when none is configured: stable for a client secret, never equal to it."""
    digest = hashlib.sha256(b"sandbox-developer-api-key:" + client_secret.encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
