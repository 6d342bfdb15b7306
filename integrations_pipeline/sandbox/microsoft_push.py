"""Microsoft Graph change notifications for the sandbox, and the write routes that make changes over HTTP.

Subscriptions (`/v1.0/subscriptions`) follow Graph's contract: creating one first POSTs
`notificationUrl?validationToken=...` (and the lifecycle URL, when given) and needs the token echoed as `text/plain`
with 200 within 10 s, else the creator gets 400; `expirationDateTime` may lie at most 4230 minutes ahead for
Outlook contacts and events and 41760 minutes for users; `clientState` at most 128 characters. Notifications are
`{"value": [...]}` posts that must be answered 2xx within 3 s, else Graph retries with backoff for up to 4 hours.
Lifecycle notifications (`reauthorizationRequired`, `subscriptionRemoved`, `missed`) are emitted on request.
The sandbox accepts `http://` URLs (Graph demands HTTPS) so loopback receivers work.
"""

from __future__ import annotations

import itertools
import json
import secrets
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from integrations_pipeline.sandbox.common import Clock, json_response
from integrations_pipeline.sandbox.push import Delivery, DeliveryEngine, RetrySchedule, post
from integrations_pipeline.sandbox.push import Request as PushRequest

NOTIFICATION_TIMEOUT_S = 3.0
VALIDATION_TIMEOUT_S = 10.0
RETRIES = RetrySchedule.exponential(10, 20, cap_s=1800, within_s=4 * 3600)
MAX_CLIENT_STATE = 128
CHANGE_TYPES = frozenset(("created", "updated", "deleted"))
LIFECYCLE_EVENTS = frozenset(("reauthorizationRequired", "subscriptionRemoved", "missed"))
# Maximum subscription life per resource kind (Graph's documented limits, in minutes).
MAX_MINUTES = {"contacts": 4230, "events": 4230, "users": 41760}
ODATA_TYPES = {
    "contacts": "#Microsoft.Graph.Contact",
    "events": "#Microsoft.Graph.Event",
    "users": "#Microsoft.Graph.User",
}
RESOURCE_SEGMENTS = {"contacts": "Contacts", "events": "Events", "users": "Users"}

Handler = Callable[[Request], Awaitable[Response]]


def graph_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class _NewSubscription(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    change_type: str = Field(alias="changeType")
    notification_url: str = Field(alias="notificationUrl")
    lifecycle_notification_url: str | None = Field(default=None, alias="lifecycleNotificationUrl")
    resource: str
    expiration: datetime = Field(alias="expirationDateTime")
    client_state: str | None = Field(default=None, alias="clientState")


class _Renewal(BaseModel):
    model_config = ConfigDict(extra="ignore")
    expirationDateTime: datetime


@dataclass
class _Subscription:
    id: str
    kind: str  # contacts | events | users
    resource: str
    change_types: frozenset[str]
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expires_at: datetime

    def render(self, application_id: str, creator_id: str) -> dict[str, Any]:
        return {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
            "id": self.id,
            "resource": self.resource,
            "applicationId": application_id,
            "changeType": ",".join(sorted(self.change_types)),
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": graph_time(self.expires_at),
            "creatorId": creator_id,
            "includeResourceData": False,
            "latestSupportedTlsVersion": "v1_2",
            "notificationContentType": None,
            "notificationUrlAppId": None,
        }


class GraphPushError(Exception):
    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status_code, self.code, self.message = status_code, code, message

    def response(self) -> JSONResponse:
        return json_response({"error": {"code": self.code, "message": self.message}}, self.status_code)


def validation_handshake(url: str) -> bool:
    """Graph's check of a notification URL: the endpoint must echo a fresh validationToken as text/plain, 200."""
    token = f"Validation: Testing client application reachability for subscription Request-Id: {uuid.uuid4()}"
    separator = "&" if "?" in url else "?"
    try:
        status, body = post(
            f"{url}{separator}validationToken={quote(token)}",
            PushRequest(b"", {"Content-Type": "text/plain; charset=utf-8"}),
            VALIDATION_TIMEOUT_S,
        )
    except OSError:
        return False
    return status == 200 and body.decode("utf-8", "replace") == token


class GraphPush:
    """Subscriptions and notifications; `changed` is called under the emulator's lock by every mutation."""

    def __init__(
        self,
        *,
        lock: threading.RLock,
        clock: Clock,
        tenant_id: str,
        application_id: str,
        me_id: Callable[[], str],
        time_scale: float,
    ) -> None:
        self._lock = lock
        self._clock = clock
        self.tenant_id = tenant_id
        self.application_id = application_id
        self._me_id = me_id
        self.engine = DeliveryEngine(time_scale=time_scale)
        self._subscriptions: dict[str, _Subscription] = {}
        self._numbers = itertools.count(1)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _kind_of(self, resource: str) -> str | None:
        normalized = resource.strip("/").lower()
        me = self._me_id().lower()
        for kind in ("contacts", "events"):
            if normalized in (f"me/{kind}", f"users/{me}/{kind}"):
                return kind
        return "users" if normalized == "users" else None

    def _live(self) -> list[_Subscription]:
        now = self._now()
        for expired in [s.id for s in self._subscriptions.values() if s.expires_at <= now]:
            del self._subscriptions[expired]  # Graph deletes expired subscriptions
        return list(self._subscriptions.values())

    # --- notifications ---------------------------------------------------------------------------------------------

    def changed(self, kind: str, item_id: str, change_type: str) -> None:
        for subscription in self._live():
            if subscription.kind != kind or change_type not in subscription.change_types:
                continue
            segment = RESOURCE_SEGMENTS[kind]
            resource = f"Users/{item_id}" if kind == "users" else f"Users/{self._me_id()}/{segment}/{item_id}"
            notification = {
                "subscriptionId": subscription.id,
                "subscriptionExpirationDateTime": graph_time(subscription.expires_at),
                "changeType": change_type,
                "resource": resource,
                "resourceData": {"@odata.type": ODATA_TYPES[kind], "@odata.id": resource, "id": item_id},
                "clientState": subscription.client_state,
                "tenantId": self.tenant_id,
            }
            self._send(subscription.notification_url, notification, f"graph:{subscription.id}:{change_type}")

    def emit_lifecycle(self, subscription_id: str, event: str) -> None:
        """A lifecycle notification to the subscription's lifecycle URL; `subscriptionRemoved` also removes it."""
        if event not in LIFECYCLE_EVENTS:
            raise ValueError(f"lifecycle events are {sorted(LIFECYCLE_EVENTS)}")
        with self._lock:
            subscription = self._subscriptions[subscription_id]
            if subscription.lifecycle_url is None:
                raise ValueError("the subscription has no lifecycleNotificationUrl")
            notification = {
                "subscriptionId": subscription.id,
                "subscriptionExpirationDateTime": graph_time(subscription.expires_at),
                "tenantId": self.tenant_id,
                "clientState": subscription.client_state,
                "lifecycleEvent": event,
            }
            if event == "subscriptionRemoved":
                del self._subscriptions[subscription_id]
            self._send(subscription.lifecycle_url, notification, f"graph-lifecycle:{subscription.id}:{event}")

    def _send(self, url: str, notification: dict[str, Any], label: str) -> None:
        body = json.dumps({"value": [notification]}).encode()
        request = PushRequest(body, {"Content-Type": "application/json; charset=utf-8"})
        self.engine.enqueue(
            Delivery(url, lambda attempt: request, RETRIES, timeout_s=NOTIFICATION_TIMEOUT_S, label=label)
        )

    def subscription_ids(self) -> list[str]:
        with self._lock:
            return [s.id for s in self._live()]

    # --- HTTP ------------------------------------------------------------------------------------------------------

    async def _create(self, request: Request) -> Response:
        try:
            wanted = _NewSubscription.model_validate(json.loads(await request.body() or b"null"))
        except (ValidationError, json.JSONDecodeError) as error:
            raise GraphPushError(400, "InvalidRequest", f"Invalid subscription: {error}") from None
        change_types = frozenset(part.strip() for part in wanted.change_type.split(","))
        if not change_types or not change_types <= CHANGE_TYPES:
            raise GraphPushError(400, "InvalidRequest", f"changeType must be among {sorted(CHANGE_TYPES)}")
        if wanted.client_state is not None and len(wanted.client_state) > MAX_CLIENT_STATE:
            raise GraphPushError(400, "InvalidRequest", f"clientState is limited to {MAX_CLIENT_STATE} characters")
        with self._lock:
            kind = self._kind_of(wanted.resource)
        if kind is None:
            raise GraphPushError(400, "InvalidRequest", f"Resource '{wanted.resource}' is not supported")
        expires_at = self._check_expiry(kind, wanted.expiration)
        for url in filter(None, (wanted.notification_url, wanted.lifecycle_notification_url)):
            if not url.startswith(("https://", "http://")):
                raise GraphPushError(400, "InvalidRequest", "The notification URL must be an absolute https URL")
            if not await run_in_threadpool(validation_handshake, url):
                raise GraphPushError(
                    400,
                    "ValidationError",
                    "Subscription validation request failed. Notification endpoint must respond with 200 OK to "
                    "validation request.",
                )
        subscription = _Subscription(
            str(uuid.UUID(int=secrets.randbits(128), version=4)),
            kind,
            wanted.resource,
            change_types,
            wanted.notification_url,
            wanted.lifecycle_notification_url,
            wanted.client_state,
            expires_at,
        )
        with self._lock:
            self._subscriptions[subscription.id] = subscription
            body = subscription.render(self.application_id, self._me_id())
        return json_response(body, 201)

    def _check_expiry(self, kind: str, requested: datetime) -> datetime:
        if requested.tzinfo is None:
            requested = requested.replace(tzinfo=UTC)
        now = self._now()
        if requested <= now:
            raise GraphPushError(400, "InvalidRequest", "Subscription expiration can only be in the future.")
        maximum = now + timedelta(minutes=MAX_MINUTES[kind])
        if requested > maximum:
            raise GraphPushError(
                400,
                "InvalidRequest",
                f"Subscription expiration can only be {MAX_MINUTES[kind]} minutes in the future.",
            )
        return requested

    def _found(self, request: Request) -> _Subscription:
        subscription_id = request.path_params["subscription_id"]
        live = {s.id: s for s in self._live()}
        if subscription_id not in live:
            raise GraphPushError(404, "ResourceNotFound", f"The object '{subscription_id}' doesn't exist.")
        return live[subscription_id]

    async def _one(self, request: Request) -> Response:
        if request.method == "PATCH":
            try:
                renewal = _Renewal.model_validate(json.loads(await request.body() or b"null"))
            except (ValidationError, json.JSONDecodeError) as error:
                raise GraphPushError(400, "InvalidRequest", f"Invalid subscription update: {error}") from None
        with self._lock:
            subscription = self._found(request)
            if request.method == "DELETE":
                del self._subscriptions[subscription.id]
                return Response(status_code=204)
            if request.method == "PATCH":
                subscription.expires_at = self._check_expiry(subscription.kind, renewal.expirationDateTime)
            return json_response(subscription.render(self.application_id, self._me_id()))

    async def _list(self, request: Request) -> Response:
        with self._lock:
            value = [s.render(self.application_id, self._me_id()) for s in self._live()]
        return json_response(
            {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions", "value": value}
        )

    def routes(self, authenticated: Callable[[Handler], Handler]) -> list[Route]:
        """`authenticated` wraps a handler in the emulator's token and throttling checks."""

        def guarded(handler: Handler) -> Handler:
            async def endpoint(request: Request) -> Response:
                try:
                    return await handler(request)
                except GraphPushError as error:
                    return error.response()

            return authenticated(endpoint)

        return [
            Route("/v1.0/subscriptions", guarded(self._create), methods=["POST"]),
            Route("/v1.0/subscriptions", guarded(self._list), methods=["GET"]),
            Route("/v1.0/subscriptions/{subscription_id}", guarded(self._one), methods=["GET", "PATCH", "DELETE"]),
        ]


# --- write routes: change data over HTTP as a Graph client would (the push tests and end-to-end tests use them) ---

CONTACTS_WRITE = frozenset(("Contacts.ReadWrite",))
EVENTS_WRITE = frozenset(("Calendars.ReadWrite",))
USERS_WRITE = frozenset(("User.ReadWrite.All", "Directory.ReadWrite.All"))


def _contact_fields(body: dict[str, Any]) -> dict[str, str | None]:
    fields: dict[str, str | None] = {
        name: body[name] for name in ("givenName", "surname", "mobilePhone", "companyName", "jobTitle") if name in body
    }
    if "emailAddresses" in body:
        addresses = body["emailAddresses"] or [{}]
        fields["emailAddress"] = addresses[0].get("address")
    if "businessPhones" in body:
        fields["businessPhone"] = (body["businessPhones"] or [None])[0]
    return fields


def _event_time(value: Any, name: str) -> datetime:
    if not isinstance(value, dict) or not isinstance(value.get("dateTime"), str):
        raise GraphPushError(400, "InvalidRequest", f"{name} needs dateTime and timeZone")
    if value.get("timeZone", "UTC") != "UTC":
        raise GraphPushError(400, "InvalidRequest", "the sandbox accepts timeZone UTC only")
    moment = datetime.fromisoformat(value["dateTime"])
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"null")
    except json.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise GraphPushError(400, "BadRequest", "Unable to read JSON request payload.")
    return body


def write_routes(emulator: Any, authenticated: Callable[[Handler, frozenset[str]], Handler]) -> list[Route]:
    """POST/PATCH/DELETE on `/v1.0/me/contacts`, `/v1.0/me/events` and `/v1.0/users/{id}`, through the emulator's
    own mutation methods (so each one notifies subscribers)."""

    def rendered(kind: str, item_id: str, status_code: int = 200) -> Response:
        with emulator._lock:
            body = emulator._full(kind, emulator._live(kind, item_id))
        return json_response(json.loads(json.dumps(body)), status_code)

    def not_found(item_id: str) -> Response:
        return GraphPushError(404, "ErrorItemNotFound", f"The specified object {item_id} was not found.").response()

    async def create_contact(request: Request) -> Response:
        return rendered("contacts", emulator.create_contact(**_contact_fields(await _json_object(request))), 201)

    async def create_event(request: Request) -> Response:
        body = await _json_object(request)
        event_id = emulator.create_event(
            subject=str(body.get("subject") or ""),
            start=_event_time(body.get("start"), "start"),
            end=_event_time(body.get("end"), "end"),
            is_all_day=bool(body.get("isAllDay", False)),
            location=(body.get("location") or {}).get("displayName"),
        )
        return rendered("events", event_id, 201)

    async def change(request: Request) -> Response:
        kind, item_id = request.path_params["kind"], request.path_params["item_id"]
        try:
            if request.method == "DELETE":
                {"contacts": emulator.delete_contact, "events": emulator.delete_event, "users": emulator.delete_user}[
                    kind
                ](item_id)
                return Response(status_code=204)
            body = await _json_object(request)
            if kind == "contacts":
                emulator.update_contact(item_id, **_contact_fields(body))
            elif kind == "events":
                emulator.update_event(
                    item_id,
                    subject=body.get("subject"),
                    start=_event_time(body["start"], "start") if "start" in body else None,
                    end=_event_time(body["end"], "end") if "end" in body else None,
                )
            else:
                emulator.update_user(item_id, **body)
        except KeyError:
            return not_found(item_id)
        return rendered(kind, item_id) if kind != "users" else Response(status_code=204)

    def guarded(handler: Handler, scopes: frozenset[str]) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except GraphPushError as error:
                return error.response()
            except (ValueError, TypeError) as error:
                return GraphPushError(400, "InvalidRequest", str(error)).response()

        return authenticated(endpoint, scopes)

    routes = [
        Route("/v1.0/me/contacts", guarded(create_contact, CONTACTS_WRITE), methods=["POST"]),
        Route("/v1.0/me/events", guarded(create_event, EVENTS_WRITE), methods=["POST"]),
    ]
    for path, kind, scopes in (
        ("/v1.0/me/contacts/{item_id}", "contacts", CONTACTS_WRITE),
        ("/v1.0/me/events/{item_id}", "events", EVENTS_WRITE),
        ("/v1.0/users/{item_id}", "users", USERS_WRITE),
    ):
        routes.append(Route(path, guarded(_with_kind(change, kind), scopes), methods=["PATCH", "DELETE"]))
    return routes


def _with_kind(handler: Handler, kind: str) -> Handler:
    async def endpoint(request: Request) -> Response:
        request.path_params["kind"] = kind
        return await handler(request)

    return endpoint
