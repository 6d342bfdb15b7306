"""Zoho CRM notifications (the Notification API, `/crm/v8/actions/watch`) for the sandbox, and record write routes
so a watcher hears about changes made over HTTP.

Channels follow Zoho's contract: `POST` with `{"watch": [{channel_id (a long), events ("Contacts.all",
"Events.create", ... of Contacts and Events here), channel_expiry (ISO 8601, at most one day ahead; one hour when
absent), token (at most 50 characters), notify_url, return_affected_field_values}]}` enables; `PUT` replaces a
channel's details, `PATCH` changes the given ones (`_delete_events: true` removes the listed events); `GET` lists;
`DELETE ?channel_ids=` disables. Scope `ZohoCRM.notifications.ALL` (or the operation's own: READ, CREATE, UPDATE,
WRITE, DELETE). Every item is answered in the `{"watch": [{code, details, message, status}]}` shape.

A change POSTs `{server_time, module, resource_uri, ids, operation (insert | update | delete), channel_id, token,
affected_fields, query_params}` to the channel's notify_url (affected values too, when asked). Zoho documents no
retry schedule; the sandbox retries a failed delivery a few times with backoff (assumed, see docs/architecture.md).
The sandbox accepts http:// notify URLs so loopback receivers work.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from integrations_pipeline.sandbox.common import Clock, json_response
from integrations_pipeline.sandbox.push import Delivery, DeliveryEngine, RetrySchedule
from integrations_pipeline.sandbox.push import Request as PushRequest

Handler = Callable[[Request], Awaitable[Response]]

MODULES = ("Contacts", "Events")
OPERATIONS = {"create": "insert", "edit": "update", "delete": "delete"}
MAX_EXPIRY = timedelta(days=1)
DEFAULT_EXPIRY = timedelta(hours=1)
MAX_TOKEN = 50
RETRIES = RetrySchedule.exponential(30, 5, cap_s=1800)  # assumed: Zoho documents no schedule
RESOURCE_IDS = {"Contacts": "5725767000000002179", "Events": "5725767000000002181"}


class ZohoWatchError(Exception):
    def __init__(self, code: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.details = code, message, dict(details or {})

    def item(self) -> dict[str, Any]:
        return {"code": self.code, "details": self.details, "message": self.message, "status": "error"}


@dataclass
class _Channel:
    id: int
    events: dict[str, frozenset[str]]  # module -> operations (create, edit, delete)
    expiry_s: int
    token: str | None
    notify_url: str
    affected_values: bool

    def event_names(self) -> list[str]:
        names = []
        for module, operations in sorted(self.events.items()):
            if operations == frozenset(OPERATIONS):
                names.append(f"{module}.all")
            else:
                names += [f"{module}.{operation}" for operation in sorted(operations)]
        return names


def _parse_events(raw: Any) -> dict[str, frozenset[str]]:
    if not isinstance(raw, list) or not raw:
        raise ZohoWatchError("MANDATORY_NOT_FOUND", "required field not found", {"api_name": "events"})
    events: dict[str, set[str]] = {}
    for name in raw:
        module, _, operation = str(name).partition(".")
        if module not in MODULES or operation not in (*OPERATIONS, "all"):
            raise ZohoWatchError("INVALID_DATA", "invalid data", {"api_name": "events", "value": name})
        events.setdefault(module, set()).update(OPERATIONS if operation == "all" else (operation,))
    return {module: frozenset(operations) for module, operations in events.items()}


def _fixed(request: PushRequest) -> Callable[[int], PushRequest]:
    """Every attempt sends the same bytes: Zoho stamps nothing per attempt."""
    return lambda attempt: request


class ZohoPush:
    """Watch channels and their notifications; `changed` is called under the emulator's lock by every mutation."""

    def __init__(
        self, *, lock: threading.RLock, clock: Clock, org_timezone: timezone, api_origin: str, time_scale: float
    ) -> None:
        self._lock = lock
        self.clock = clock
        self._timezone = org_timezone
        self.api_origin = api_origin
        self.engine = DeliveryEngine(time_scale=time_scale)
        self._channels: dict[int, _Channel] = {}

    def _now_s(self) -> int:
        return int(self.clock())

    def _iso(self, epoch_s: int) -> str:
        return datetime.fromtimestamp(epoch_s, self._timezone).isoformat()

    def _live(self) -> list[_Channel]:
        now_s = self._now_s()
        for expired in [c.id for c in self._channels.values() if c.expiry_s <= now_s]:
            del self._channels[expired]
        return list(self._channels.values())

    def channel_ids(self) -> list[int]:
        with self._lock:
            return [channel.id for channel in self._live()]

    # --- notifications ---------------------------------------------------------------------------------------------

    def changed(self, module: str, operation: str, record_id: str, values: Mapping[str, Any]) -> None:
        """`operation` is create, edit or delete; `values` are the fields written (for affected_fields)."""
        for channel in self._live():
            if operation not in channel.events.get(module, frozenset()):
                continue
            query = dict(parse_qsl(urlsplit(channel.notify_url).query))
            body: dict[str, Any] = {
                "server_time": self._now_s() * 1000,
                "query_params": query,
                "module": module,
                "resource_uri": f"{self.api_origin}/crm/v8/{module}",
                "ids": [record_id],
                "affected_fields": [{record_id: sorted(values)}] if operation == "edit" else [],
                "operation": OPERATIONS[operation],
                "channel_id": str(channel.id),
                "token": channel.token,
            }
            if channel.affected_values and operation == "edit":
                body["affected_values"] = [{"record_id": record_id, "values": dict(values)}]
            request = PushRequest(json.dumps(body, default=str).encode(), {"Content-Type": "application/json"})
            self.engine.enqueue(Delivery(channel.notify_url, _fixed(request), RETRIES, label=f"zoho:{channel.id}"))

    # --- HTTP ------------------------------------------------------------------------------------------------------

    def _expiry(self, raw: Any) -> int:
        now_s = self._now_s()
        if raw is None:
            return now_s + int(DEFAULT_EXPIRY.total_seconds())
        try:
            moment = datetime.fromisoformat(str(raw))
        except ValueError:
            raise ZohoWatchError("INVALID_DATA", "invalid data", {"api_name": "channel_expiry"}) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=self._timezone)
        expiry_s = int(moment.timestamp())
        if expiry_s <= now_s or expiry_s > now_s + MAX_EXPIRY.total_seconds():
            raise ZohoWatchError(
                "INVALID_DATA",
                "channel_expiry must be in the future and at most one day ahead",
                {"api_name": "channel_expiry"},
            )
        return expiry_s

    @staticmethod
    def _channel_id(raw: Any) -> int:
        text = str(raw) if isinstance(raw, int | str) and not isinstance(raw, bool) else ""
        if not text.isdigit() or len(text) > 19:
            raise ZohoWatchError("INVALID_DATA", "invalid data", {"api_name": "channel_id"})
        return int(text)

    @staticmethod
    def _token(raw: Any) -> str | None:
        if raw is not None and (not isinstance(raw, str) or len(raw) > MAX_TOKEN):
            raise ZohoWatchError("INVALID_DATA", f"token must be at most {MAX_TOKEN} characters", {"api_name": "token"})
        return raw

    @staticmethod
    def _notify_url(raw: Any) -> str:
        if not isinstance(raw, str) or not raw:
            raise ZohoWatchError("MANDATORY_NOT_FOUND", "required field not found", {"api_name": "notify_url"})
        if urlsplit(raw).scheme not in ("https", "http") or not urlsplit(raw).hostname:
            raise ZohoWatchError("INVALID_DATA", "invalid data", {"api_name": "notify_url"})
        return raw

    def _subscribed(self, channel: _Channel, message: str) -> dict[str, Any]:
        events = [
            {
                "channel_expiry": self._iso(channel.expiry_s),
                "resource_uri": f"{self.api_origin}/crm/v8/{module}",
                "resource_id": RESOURCE_IDS[module],
                "resource_name": module,
                "channel_id": str(channel.id),
            }
            for module in sorted(channel.events)
        ]
        return {"code": "SUCCESS", "details": {"events": events}, "message": message, "status": "success"}

    def _enable(self, item: Any) -> dict[str, Any]:
        if not isinstance(item, dict):
            raise ZohoWatchError("INVALID_DATA", "invalid data", {})
        if "channel_id" not in item:
            raise ZohoWatchError("MANDATORY_NOT_FOUND", "required field not found", {"api_name": "channel_id"})
        channel = _Channel(
            self._channel_id(item["channel_id"]),
            _parse_events(item.get("events")),
            self._expiry(item.get("channel_expiry")),
            self._token(item.get("token")),
            self._notify_url(item.get("notify_url")),
            bool(item.get("return_affected_field_values", False)),
        )
        with self._lock:
            if channel.id in {c.id for c in self._live()}:
                raise ZohoWatchError("DUPLICATE_DATA", "duplicate data", {"api_name": "channel_id"})
            self._channels[channel.id] = channel
        return self._subscribed(channel, "Successfully subscribed for actions-watch of the given module")

    def _change(self, item: Any, *, replace: bool) -> dict[str, Any]:
        if not isinstance(item, dict) or "channel_id" not in item:
            raise ZohoWatchError("MANDATORY_NOT_FOUND", "required field not found", {"api_name": "channel_id"})
        channel_id = self._channel_id(item["channel_id"])
        with self._lock:
            channel = {c.id: c for c in self._live()}.get(channel_id)
        if channel is None:
            raise ZohoWatchError("INVALID_DATA", "the channel is not subscribed", {"api_name": "channel_id"})
        if replace:  # PUT: every detail given replaces the channel's; what is missing is gone
            events = _parse_events(item.get("events"))
            new = _Channel(
                channel_id,
                events,
                self._expiry(item.get("channel_expiry")),
                self._token(item.get("token")),
                self._notify_url(item.get("notify_url")),
                bool(item.get("return_affected_field_values", False)),
            )
        elif item.get("_delete_events"):
            removed = _parse_events(item.get("events"))
            remaining = {m: ops - removed.get(m, frozenset()) for m, ops in channel.events.items()}
            new = _Channel(
                channel_id,
                {m: ops for m, ops in remaining.items() if ops},
                channel.expiry_s,
                channel.token,
                channel.notify_url,
                channel.affected_values,
            )
        else:  # PATCH: the given details change, the others stay
            added = _parse_events(item["events"]) if "events" in item else {}
            events = dict(channel.events)
            for module, operations in added.items():
                events[module] = events.get(module, frozenset()) | operations
            new = _Channel(
                channel_id,
                events,
                self._expiry(item["channel_expiry"]) if "channel_expiry" in item else channel.expiry_s,
                self._token(item["token"]) if "token" in item else channel.token,
                self._notify_url(item["notify_url"]) if "notify_url" in item else channel.notify_url,
                bool(item.get("return_affected_field_values", channel.affected_values)),
            )
        with self._lock:
            if new.events:
                self._channels[channel_id] = new
            else:
                self._channels.pop(channel_id, None)
        return self._subscribed(new, "Successfully updated the subscribe details")

    async def _items(self, request: Request) -> list[Any]:
        try:
            body = json.loads(await request.body() or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("watch"), list) or not body["watch"]:
            raise ZohoWatchError("INVALID_DATA", 'the body must be {"watch": [...]}', {})
        return list(body["watch"])

    @staticmethod
    def _answer(results: list[dict[str, Any]]) -> JSONResponse:
        successes = sum(result["status"] == "success" for result in results)
        status = 200 if successes == len(results) else 400 if successes == 0 else 207
        return json_response({"watch": results}, status)

    async def watch(self, request: Request) -> Response:
        if request.method == "GET":
            with self._lock:
                channels = self._live()
                listing = [
                    {
                        "notify_on_related_action": False,
                        "channel_expiry": self._iso(channel.expiry_s),
                        "resource_uri": f"{self.api_origin}/crm/v8/{module}",
                        "resource_id": RESOURCE_IDS[module],
                        "notify_url": channel.notify_url,
                        "resource_name": module,
                        "channel_id": str(channel.id),
                        "events": [name for name in channel.event_names() if name.startswith(module + ".")],
                        "token": channel.token,
                    }
                    for channel in channels
                    for module in sorted(channel.events)
                ]
            return json_response({"watch": listing}) if listing else Response(status_code=204)
        if request.method == "DELETE":
            return self._disable(request.query_params.get("channel_ids", ""))
        try:
            items = await self._items(request)
        except ZohoWatchError as error:
            return json_response({"watch": [error.item()]}, 400)
        results = []
        for item in items:
            try:
                if request.method == "POST":
                    results.append(self._enable(item))
                else:
                    results.append(self._change(item, replace=request.method == "PUT"))
            except ZohoWatchError as error:
                results.append(error.item())
        return self._answer(results)

    def _disable(self, raw_ids: str) -> Response:
        if not raw_ids:
            return json_response(
                {"code": "REQUIRED_PARAM_MISSING", "details": {"param": "channel_ids"}, "message": "One of the "
                 "expected parameter is missing", "status": "error"},
                400,
            )  # fmt: skip
        results = []
        for raw in raw_ids.split(","):
            try:
                channel_id = self._channel_id(raw.strip())
                with self._lock:
                    channel = {c.id: c for c in self._live()}.get(channel_id)
                    if channel is None:
                        raise ZohoWatchError("INVALID_DATA", "the channel is not subscribed", {"channel_id": raw})
                    del self._channels[channel_id]
                unsubscribed = self._subscribed(channel, "Successfully unsubscribed from actions-watch")
                for event in unsubscribed["details"]["events"]:
                    event.pop("channel_expiry")
                results.append(unsubscribed)
            except ZohoWatchError as error:
                results.append(error.item())
        return self._answer(results)


# --- record write routes: POST (insert), PUT (update), DELETE ?ids= on /crm/v8/{module} ------------------------------


def _record_result(code: str, message: str, details: dict[str, Any]) -> dict[str, Any]:
    return {"code": code, "details": details, "message": message, "status": "success" if code == "SUCCESS" else "error"}


def write_handler(emulator: Any) -> Handler:
    """One handler for the three methods: each item is answered in Zoho's bulk-write shape, 201/200/207/400."""

    async def handler(request: Request) -> Response:
        module = request.path_params["module"]
        results: list[dict[str, Any]] = []
        if request.method == "DELETE":
            raw_ids = [raw for raw in request.query_params.get("ids", "").split(",") if raw]
            if not raw_ids:
                return json_response(
                    {"code": "REQUIRED_PARAM_MISSING", "details": {"param": "ids"},
                     "message": "One of the expected parameter is missing", "status": "error"},
                    400,
                )  # fmt: skip
            for record_id in raw_ids[:100]:
                try:
                    emulator._delete(module, record_id)
                    results.append(_record_result("SUCCESS", "record deleted", {"id": record_id}))
                except KeyError:
                    results.append(_record_result("INVALID_DATA", "the related id given seems to be invalid", {}))
            return _bulk_answer(results, 200)
        try:
            body = json.loads(await request.body() or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("data"), list) or not body["data"]:
            return json_response(
                {"code": "INVALID_DATA", "details": {}, "message": 'body must be {"data": [...]}', "status": "error"},
                400,
            )
        for item in body["data"][:100]:
            values = {k: v for k, v in item.items() if k != "id"} if isinstance(item, dict) else None
            try:
                if values is None:
                    raise ValueError("each item is an object")
                if request.method == "POST":
                    record_id = emulator._create(module, values)
                    message = "record added"
                else:
                    record_id = str(item.get("id", ""))
                    emulator._update(module, record_id, values)
                    message = "record updated"
                results.append(_record_result("SUCCESS", message, emulator.record_stamps(module, record_id)))
            except KeyError:
                results.append(_record_result("INVALID_DATA", "the id given seems to be invalid", {"api_name": "id"}))
            except ValueError as error:
                results.append(_record_result("INVALID_DATA", str(error), {}))
        return _bulk_answer(results, 201 if request.method == "POST" else 200)

    return handler


def _bulk_answer(results: list[dict[str, Any]], success_status: int) -> JSONResponse:
    successes = sum(result["status"] == "success" for result in results)
    status = success_status if successes == len(results) else 400 if successes == 0 else 207
    return json_response({"data": results}, status)


def routes(push: ZohoPush, crm_endpoint: Callable[..., Handler]) -> list[Route]:
    """`crm_endpoint(handler, *scopes)` is the emulator's authentication, scope and credit check."""
    return [
        Route("/crm/v8/actions/watch", crm_endpoint(push.watch, "ZohoCRM.notifications.READ"), methods=["GET"]),
        Route("/crm/v8/actions/watch", crm_endpoint(push.watch, "ZohoCRM.notifications.CREATE"), methods=["POST"]),
        Route(
            "/crm/v8/actions/watch", crm_endpoint(push.watch, "ZohoCRM.notifications.UPDATE"), methods=["PUT", "PATCH"]
        ),
        Route("/crm/v8/actions/watch", crm_endpoint(push.watch, "ZohoCRM.notifications.DELETE"), methods=["DELETE"]),
    ]
