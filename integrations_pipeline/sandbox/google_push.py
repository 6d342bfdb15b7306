"""Google push notifications for the sandbox (Calendar events and Directory users), and the write routes that change
data over HTTP so a watcher hears about it.

Channels follow Google's contract: `POST .../events/watch` or `POST /admin/directory/v1/users/watch` with
`{id, type: "web_hook", address, token?, expiration? (ms)}` answers `{kind: "api#channel", id, resourceId,
resourceUri, token, expiration}`; `POST /calendar/v3/channels/stop` or `/admin/directory_v1/channels/stop` with
`{id, resourceId}` ends one. Refused: a channel id already in use or longer than 64 characters, a missing address,
an address that is not https (the sandbox also accepts http on loopback, so local receivers work), an expiration
in the past or beyond the maximum (assumed: 7 days for Calendar, 6 hours for Directory; Google's guide documents
no figure we could find, see docs/architecture.md).

Each notification is a POST with an empty body (Directory adds the user's `{kind, id, etag, primaryEmail}`, as
the Admin SDK does) and the `X-Goog-*` headers: a `sync` message right after creation, then `exists` for any
change to a watched events collection (`not_exists` would mean the calendar itself is gone, which the sandbox never
does) and the event's name (`add`, `update`, `delete`) for Directory users. `X-Goog-Message-Number` increases per
channel; a retry repeats the message's number. Google retries only 500, 502, 503 and 504 answers, with
exponential backoff (schedule assumed); 2xx and 102 are success.
"""

from __future__ import annotations

import itertools
import json
import threading
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from integrations_pipeline.sandbox.common import Clock
from integrations_pipeline.sandbox.push import Delivery, DeliveryEngine, RetrySchedule
from integrations_pipeline.sandbox.push import Request as PushRequest

Handler = Callable[[Request], Awaitable[Response]]

# Assumptions (no documented figure found): Calendar channels last at most a week, Directory channels six hours.
MAX_LIFETIME_MS = {"calendar": 7 * 86_400_000, "directory": 6 * 3_600_000}
DEFAULT_LIFETIME_MS = MAX_LIFETIME_MS  # Google grants the maximum when no expiration is asked for
MAX_CHANNEL_ID = 64
RETRIES = RetrySchedule.exponential(1, 12, cap_s=3600, within_s=6 * 3600)  # assumed: Google names no schedule
RETRYABLE_STATUS = frozenset((500, 502, 503, 504))
DIRECTORY_EVENTS = frozenset(("add", "delete", "makeAdmin", "undelete", "update"))
LOOPBACK_HOSTS = frozenset(("127.0.0.1", "localhost", "::1"))
CALENDAR_RESOURCE_URI = "https://www.googleapis.com/calendar/v3/calendars/{calendar}/events?alt=json"
DIRECTORY_RESOURCE_URI = "https://admin.googleapis.com/admin/directory/v1/users?alt=json&customer=my_customer"


class GoogleApiRefusal(Exception):
    """Turned into Google's JSON error by the emulator (GoogleApiError) at the route."""

    def __init__(self, code: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason


def accept_google(status: int, body: bytes) -> bool:
    return 200 <= status < 300 or status == 102


def rfc1123(epoch_ms: int) -> str:
    return format_datetime(datetime.fromtimestamp(epoch_ms / 1000, UTC), usegmt=True)


@dataclass
class _Channel:
    id: str
    api: str  # calendar | directory
    resource_id: str
    resource_uri: str
    address: str
    token: str | None
    expiration_ms: int
    events: frozenset[str]  # Directory: the events watched; Calendar: empty (every change)
    numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def render(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "api#channel",
            "id": self.id,
            "resourceId": self.resource_id,
            "resourceUri": self.resource_uri,
            "expiration": str(self.expiration_ms),
        }
        if self.token is not None:
            body["token"] = self.token
        return body


def _resource_id(resource_uri: str) -> str:
    """Opaque and stable per watched resource, as Google's resourceId is across channels."""
    return f"{zlib.crc32(resource_uri.encode()):08x}" + f"{zlib.adler32(resource_uri.encode()):08x}" * 2


def check_address(address: object) -> str:
    if not isinstance(address, str) or not address:
        raise GoogleApiRefusal(400, "Required: address", "required")
    parts = urlsplit(address)
    loopback_http = parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS
    if not (parts.scheme == "https" and parts.hostname) and not loopback_http:
        raise GoogleApiRefusal(400, f"WebHook callback must be HTTPS: {address}", "push.webhookUrlNotHttps")
    return address


class GooglePush:
    """Channels and their notifications; `calendar_changed` / `user_changed` are called under the emulator's lock."""

    def __init__(self, *, lock: threading.RLock, clock: Clock, time_scale: float) -> None:
        self._lock = lock
        self.clock = clock
        self.engine = DeliveryEngine(time_scale=time_scale)
        self._channels: dict[str, _Channel] = {}

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _live(self, api: str | None = None) -> list[_Channel]:
        now_ms = self._now_ms()
        for expired in [c.id for c in self._channels.values() if c.expiration_ms <= now_ms]:
            del self._channels[expired]  # an expired channel sends nothing more
        return [c for c in self._channels.values() if api is None or c.api == api]

    def channel_ids(self) -> list[str]:
        with self._lock:
            return [channel.id for channel in self._live()]

    # --- notifications ---------------------------------------------------------------------------------------------

    def calendar_changed(self) -> None:
        for channel in self._live("calendar"):
            self._notify(channel, "exists", b"")

    def user_changed(self, event: str, user: dict[str, Any]) -> None:
        body = json.dumps(
            {"kind": user["kind"], "id": user["id"], "etag": user["etag"], "primaryEmail": user["primaryEmail"]}
        ).encode()
        for channel in self._live("directory"):
            if not channel.events or event in channel.events:
                self._notify(channel, event, body)

    def _notify(self, channel: _Channel, state: str, body: bytes) -> None:
        headers = {
            "X-Goog-Channel-ID": channel.id,
            "X-Goog-Channel-Expiration": rfc1123(channel.expiration_ms),
            "X-Goog-Resource-ID": channel.resource_id,
            "X-Goog-Resource-URI": channel.resource_uri,
            "X-Goog-Resource-State": state,
            "X-Goog-Message-Number": str(next(channel.numbers)),
        }
        if channel.token is not None:
            headers["X-Goog-Channel-Token"] = channel.token
        if body:
            headers["Content-Type"] = "application/json; charset=UTF-8"
        request = PushRequest(body, headers)
        self.engine.enqueue(
            Delivery(
                channel.address,
                lambda attempt: request,
                RETRIES,
                accepted=accept_google,
                retryable=lambda status: status is None or status in RETRYABLE_STATUS,
                label=f"google:{channel.id}:{headers['X-Goog-Message-Number']}:{state}",
            )
        )

    # --- HTTP ------------------------------------------------------------------------------------------------------

    def _watch(self, api: str, resource_uri: str, body: Any, events: frozenset[str]) -> _Channel:
        if not isinstance(body, dict):
            raise GoogleApiRefusal(400, "Parse Error", "parseError")
        channel_id = body.get("id")
        if not isinstance(channel_id, str) or not channel_id:
            raise GoogleApiRefusal(400, "Required: id", "required")
        if len(channel_id) > MAX_CHANNEL_ID:
            raise GoogleApiRefusal(400, f"Channel id must be at most {MAX_CHANNEL_ID} characters", "invalid")
        if body.get("type") not in ("web_hook", "webhook"):
            raise GoogleApiRefusal(400, "Invalid value for: type. Expected web_hook.", "invalid")
        address = check_address(body.get("address"))
        token = body.get("token")
        if token is not None and not isinstance(token, str):
            raise GoogleApiRefusal(400, "Invalid value for: token", "invalid")
        now_ms = self._now_ms()
        raw_expiration = body.get("expiration")
        if raw_expiration is None:
            expiration_ms = now_ms + DEFAULT_LIFETIME_MS[api]
        else:
            try:
                expiration_ms = int(raw_expiration)
            except (TypeError, ValueError):
                raise GoogleApiRefusal(400, "Invalid value for: expiration", "invalid") from None
            if expiration_ms <= now_ms:
                raise GoogleApiRefusal(400, "Channel expiration must be in the future", "invalid")
            if expiration_ms > now_ms + MAX_LIFETIME_MS[api]:
                raise GoogleApiRefusal(
                    400,
                    f"Channel expiration exceeds the maximum of {MAX_LIFETIME_MS[api] // 1000} seconds",
                    "invalid",
                )
        with self._lock:
            if channel_id in {channel.id for channel in self._live()}:
                raise GoogleApiRefusal(400, f"Channel id {channel_id} not unique", "channelIdNotUnique")
            channel = _Channel(
                channel_id, api, _resource_id(resource_uri), resource_uri, address, token, expiration_ms, events
            )
            self._channels[channel_id] = channel
            self._notify(channel, "sync", b"")  # Google's first message on every new channel
            return channel

    def watch_events(self, calendar_id: str, body: Any) -> dict[str, Any]:
        uri = CALENDAR_RESOURCE_URI.format(calendar=calendar_id)
        return self._watch("calendar", uri, body, frozenset()).render()

    def watch_users(self, customer: str | None, event: str | None, body: Any) -> dict[str, Any]:
        if not customer:
            raise GoogleApiRefusal(400, "Bad Request", "badRequest")
        if event is not None and event not in DIRECTORY_EVENTS:
            raise GoogleApiRefusal(400, f"Invalid value for event: {event}", "invalidParameter")
        # Without `event` the sandbox watches every event (assumed; Google's reference lists it as optional).
        uri = DIRECTORY_RESOURCE_URI + (f"&event={event}" if event else "")
        return self._watch("directory", uri, body, frozenset((event,)) if event else frozenset()).render()

    def stop(self, api: str, body: Any) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise GoogleApiRefusal(400, "Required: id", "required")
        with self._lock:
            channel = {c.id: c for c in self._live(api)}.get(body["id"])
            if channel is None or channel.resource_id != body.get("resourceId"):
                raise GoogleApiRefusal(404, f"Channel '{body['id']}' not found for project", "notFound")
            del self._channels[channel.id]


# --- routes: watch and stop, plus the write routes (events insert/patch/delete, users patch/delete) -------------


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise GoogleApiRefusal(400, "Parse Error", "parseError") from None


def _event_moment(value: Any, name: str) -> datetime | date:
    if not isinstance(value, dict):
        raise GoogleApiRefusal(400, f"Missing {name} time.", "required")
    try:
        if isinstance(value.get("date"), str):
            return date.fromisoformat(value["date"])
        moment = datetime.fromisoformat(str(value.get("dateTime", "")).replace("Z", "+00:00"))
    except ValueError:
        raise GoogleApiRefusal(400, f"Invalid {name} time.", "invalid") from None
    if moment.tzinfo is None:
        raise GoogleApiRefusal(400, f"{name}.dateTime needs an offset in the sandbox", "invalid")
    return moment


def routes(emulator: Any, api_endpoint: Callable[[str, Handler], Handler]) -> list[Route]:
    """`api_endpoint(api, handler)` is the emulator's authentication, scope and quota check; the handlers raise
    GoogleApiRefusal, which the wrapper here renders through the emulator's `refusal_response`."""
    push: GooglePush = emulator.push

    def guarded(api: str, handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except GoogleApiRefusal as refusal:
                return emulator.refusal_response(refusal)
            except KeyError:
                return emulator.refusal_response(GoogleApiRefusal(404, "Not Found", "notFound"))
            except ValueError as error:
                return emulator.refusal_response(GoogleApiRefusal(400, str(error), "invalid"))

        return api_endpoint(api, endpoint)

    def calendar_of(request: Request) -> str:
        calendar_id = request.path_params["calendar_id"]
        if calendar_id not in ("primary", emulator.owner_email):
            raise GoogleApiRefusal(404, "Not Found", "notFound")
        return str(calendar_id)

    async def watch_events(request: Request) -> Response:
        return emulator.json(push.watch_events(calendar_of(request), await _json(request)))

    async def watch_users(request: Request) -> Response:
        params = request.query_params
        return emulator.json(push.watch_users(params.get("customer"), params.get("event"), await _json(request)))

    def stopper(api: str) -> Handler:
        async def stop(request: Request) -> Response:
            push.stop(api, await _json(request))
            return Response(status_code=204)

        return stop

    async def insert_event(request: Request) -> Response:
        calendar_of(request)
        body = await _json(request)
        if not isinstance(body, dict):
            raise GoogleApiRefusal(400, "Parse Error", "parseError")
        start, end = _event_moment(body.get("start"), "start"), _event_moment(body.get("end"), "end")
        event_id = emulator.create_event(
            summary=str(body.get("summary") or ""), start=start, end=end, location=body.get("location")
        )
        return emulator.json(emulator.event_record(event_id))

    async def change_event(request: Request) -> Response:
        calendar_of(request)
        event_id = request.path_params["event_id"]
        if request.method == "DELETE":
            emulator.delete_event(event_id)
            return Response(status_code=204)
        body = await _json(request)
        if not isinstance(body, dict):
            raise GoogleApiRefusal(400, "Parse Error", "parseError")
        start = _event_moment(body["start"], "start") if "start" in body else None
        end = _event_moment(body["end"], "end") if "end" in body else None
        if any(moment is not None and not isinstance(moment, datetime) for moment in (start, end)):
            raise GoogleApiRefusal(400, "the sandbox patches timed events only", "invalid")
        emulator.update_event(
            event_id, summary=body.get("summary"), location=body.get("location"), start=start, end=end
        )
        return emulator.json(emulator.event_record(event_id))

    async def change_user(request: Request) -> Response:
        user_id = emulator.user_id_for(request.path_params["user_key"])
        if request.method == "DELETE":
            emulator.delete_user(user_id)
            return Response(status_code=204)
        body = await _json(request)
        if not isinstance(body, dict):
            raise GoogleApiRefusal(400, "Parse Error", "parseError")
        organizations = body.get("organizations") or [{}]
        title = organizations[0].get("title") if isinstance(organizations[0], dict) else None
        suspended = body.get("suspended")
        emulator.update_user(user_id, title=title, suspended=suspended if isinstance(suspended, bool) else None)
        return emulator.json(emulator.user_record(user_id))

    events = "/calendar/v3/calendars/{calendar_id}/events"
    return [
        Route(f"{events}/watch", guarded("calendar", watch_events), methods=["POST"]),
        Route("/calendar/v3/channels/stop", guarded("calendar", stopper("calendar")), methods=["POST"]),
        Route("/admin/directory/v1/users/watch", guarded("directory", watch_users), methods=["POST"]),
        Route("/admin/directory_v1/channels/stop", guarded("directory", stopper("directory")), methods=["POST"]),
        Route(events, guarded("calendar_write", insert_event), methods=["POST"]),
        Route(f"{events}/{{event_id}}", guarded("calendar_write", change_event), methods=["PATCH", "DELETE"]),
        Route(
            "/admin/directory/v1/users/{user_key}", guarded("directory_write", change_user), methods=["PATCH", "DELETE"]
        ),
    ]
