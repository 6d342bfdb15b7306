"""The gateway: `create_app(settings, store) -> Starlette`.

Routes are declared once in OPERATIONS, which builds both the routing table and `/openapi.json`.
Handlers are async; store and provider calls are blocking and run in the thread pool.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from integrations_pipeline import metrics
from integrations_pipeline.gateway.connections import ConnectionService, GatewayError
from integrations_pipeline.gateway.fields import FieldList, FieldService
from integrations_pipeline.gateway.health import IntegrationsHealthResponse, integrations_health
from integrations_pipeline.gateway.mappings import (
    MappingService,
    MappingView,
    PreviewRequest,
    PreviewResponse,
    StoredRows,
)
from integrations_pipeline.gateway.pages import connected_page, wants_html
from integrations_pipeline.gateway.schemas import (
    TENANT_PATTERN,
    ConnectionList,
    ConnectionView,
    ConnectRequest,
    ConnectResponse,
    DisconnectResponse,
    ErrorBody,
    HealthResponse,
    WebhookAck,
)
from integrations_pipeline.gateway.subscriptions import (
    DeliveryList,
    RotateRequest,
    SubscriptionCreated,
    SubscriptionList,
    SubscriptionRequest,
    SubscriptionService,
    SubscriptionView,
)
from integrations_pipeline.gateway.webhooks import WebhookReceiver, read_limited
from integrations_pipeline.mapping import MappingUpdate
from integrations_pipeline.settings import Settings
from integrations_pipeline.store import StateStore, create_store_engine
from integrations_pipeline.store.outbox import Delivery

TENANT_RE = re.compile(TENANT_PATTERN)
logger = logging.getLogger(__name__)
access_logger = logging.getLogger("integrations_pipeline.gateway.access")
MAX_JSON_BODY_BYTES = 64 * 1024
RETRY_AFTER_S = "5"
ModelT = TypeVar("ModelT", bound=BaseModel)


def error_response(error: GatewayError) -> JSONResponse:
    body = ErrorBody(error=error.code, message=error.message, fields=error.fields)
    headers = {401: {"WWW-Authenticate": "Bearer"}, 503: {"Retry-After": RETRY_AFTER_S}}.get(error.status)
    return JSONResponse(body.model_dump(), status_code=error.status, headers=headers)


def _json(model: BaseModel, status: int = 200) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json"), status_code=status)


async def parse_body(request: Request, model: type[ModelT]) -> ModelT:
    raw = await read_limited(request, MAX_JSON_BODY_BYTES)
    try:
        return model.model_validate_json(raw or b"null")
    except ValidationError as invalid:
        fields = {}
        for issue in invalid.errors(include_url=False, include_input=False):
            name = ".".join(str(part) for part in issue["loc"]) or "body"
            fields[name] = issue["msg"]
        names = ", ".join(fields)
        raise GatewayError(422, "invalid_body", f"the request body is invalid: {names}", fields) from None


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    handler: str  # the name of a Gateway method
    authenticated: bool = True
    request_model: type[BaseModel] | None = None
    response_model: type[BaseModel] | None = None
    status: int = 200


class Gateway:
    """Handlers bound to one service; the lifespan creates and closes it."""

    def __init__(self, settings: Settings, store: StateStore, stored_rows: StoredRows | None = None) -> None:
        self.settings = settings
        self.store = store
        self.connections = ConnectionService(settings, store)
        self.mappings = MappingService(store, stored_rows)
        self.fields = FieldService(settings, store)
        self.webhooks = WebhookReceiver(settings, store)
        self.metrics_registry = metrics.metrics_registry(store.engine, store.keyring)
        self.subscriptions = SubscriptionService(settings, store)

    def authorize(self, request: Request) -> None:
        expected = self.settings.api_key
        if expected is None:  # the CLI refuses to start without one; an embedding app may still forget it
            raise GatewayError(401, "unauthorized", "this gateway has no API key configured (INTEGRATIONS_API_KEY)")
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), expected.get_secret_value().encode()
        ):
            raise GatewayError(401, "unauthorized", "send the gateway's API key as `Authorization: Bearer <key>`")

    async def health(self, request: Request) -> Response:
        return _json(HealthResponse(status="ok"))

    async def ready(self, request: Request) -> Response:
        def ping() -> None:
            with self.store.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))

        try:
            await run_in_threadpool(ping)
        except sa.exc.SQLAlchemyError:
            raise GatewayError(503, "database_unavailable", "the state database is not reachable") from None
        return _json(HealthResponse(status="ready"))

    async def integrations_health(self, request: Request) -> Response:
        tenant, provider = request.query_params.get("tenant"), request.query_params.get("provider")
        return _json(await run_in_threadpool(integrations_health, self.store, tenant, provider))

    async def metrics(self, request: Request) -> Response:
        body = await run_in_threadpool(metrics.render, self.metrics_registry)
        return Response(body, media_type=metrics.CONTENT_TYPE)

    async def connect(self, request: Request) -> Response:
        provider = request.path_params["provider"]
        body = await parse_body(request, ConnectRequest)
        started = await run_in_threadpool(
            self.connections.start, provider, body.tenant, body.return_path, body.scopes, body.replace_account
        )
        return _json(ConnectResponse(**started.__dict__))

    async def callback(self, request: Request) -> Response:
        query = request.query_params
        outcome = await run_in_threadpool(
            self.connections.complete,
            request.path_params["provider"],
            state=query.get("state"),
            code=query.get("code"),
            error=query.get("error"),
            accounts_server=query.get("accounts-server"),
        )
        if outcome.redirect_to is not None:
            return RedirectResponse(outcome.redirect_to, status_code=303)
        assert outcome.connection is not None
        view = ConnectionView.of(outcome.connection)
        return connected_page(view) if wants_html(request) else _json(view)

    async def list_connections(self, request: Request) -> Response:
        tenant, provider = request.query_params.get("tenant"), request.query_params.get("provider")
        connections = await run_in_threadpool(self.store.list_connections, provider=provider)
        views = [ConnectionView.of(c) for c in connections if tenant is None or c.tenant == tenant]
        return _json(ConnectionList(connections=views))

    async def get_connection(self, request: Request) -> Response:
        connection_id = request.path_params["connection_id"]
        connection = await run_in_threadpool(self.store.get_connection, connection_id)
        if connection is None:
            raise GatewayError(404, "unknown_connection", f"no connection {connection_id!r}")
        return _json(ConnectionView.of(connection))

    async def list_fields(self, request: Request) -> Response:
        query = request.query_params
        flags = {}
        for name in ("refresh", "include_removed"):
            value = query.get(name, "false").lower()
            if value not in ("true", "false"):
                raise GatewayError(400, f"invalid_{name}", f"{name} is true or false", {name: value})
            flags[name] = value == "true"
        listing = await run_in_threadpool(
            self.fields.list, request.path_params["connection_id"], entity=query.get("entity"), **flags
        )
        return _json(listing)

    async def get_mapping(self, request: Request) -> Response:
        view = await run_in_threadpool(self.mappings.get, tenant_of(request), request.path_params["provider"])
        return _json(view)

    async def put_mapping(self, request: Request) -> Response:
        tenant, provider = tenant_of(request), request.path_params["provider"]
        update = await parse_body(request, MappingUpdate)
        return _json(await run_in_threadpool(self.mappings.update, tenant, provider, update))

    async def preview_mapping(self, request: Request) -> Response:
        tenant, provider = tenant_of(request), request.path_params["provider"]
        body = await parse_body(request, PreviewRequest)
        return _json(await run_in_threadpool(self.mappings.preview, tenant, provider, body))

    async def provider_webhook(self, request: Request) -> Response:
        return await self.webhooks.provider(request)

    async def standard_webhook(self, request: Request) -> Response:
        return await self.webhooks.standard(request)

    async def microsoft_lifecycle_webhook(self, request: Request) -> Response:
        return await self.webhooks.microsoft_lifecycle(request)

    async def delete_connection(self, request: Request) -> Response:
        connection, revoked = await run_in_threadpool(self.connections.disconnect, request.path_params["connection_id"])
        return _json(DisconnectResponse(id=connection.id, status=connection.status.value, revoked_at_provider=revoked))

    # -- webhook subscriptions --------------------------------------------------------------------------------

    async def create_subscription(self, request: Request) -> Response:
        body = await parse_body(request, SubscriptionRequest)
        return _json(await run_in_threadpool(self.subscriptions.create, body), status=201)

    async def list_subscriptions(self, request: Request) -> Response:
        return _json(await run_in_threadpool(self.subscriptions.list_all))

    async def get_subscription(self, request: Request) -> Response:
        return _json(await run_in_threadpool(self.subscriptions.get, request.path_params["subscription_id"]))

    async def delete_subscription(self, request: Request) -> Response:
        return _json(await run_in_threadpool(self.subscriptions.delete, request.path_params["subscription_id"]))

    async def rotate_subscription_secret(self, request: Request) -> Response:
        body = await parse_body(request, RotateRequest) if await request.body() else RotateRequest()
        subscription_id = request.path_params["subscription_id"]
        return _json(await run_in_threadpool(self.subscriptions.rotate, subscription_id, body))

    async def list_deliveries(self, request: Request) -> Response:
        raw_limit = request.query_params.get("limit", "50")
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 500:
            raise GatewayError(400, "invalid_limit", "limit must be a whole number from 1 to 500", {"limit": raw_limit})
        subscription_id = request.path_params["subscription_id"]
        return _json(await run_in_threadpool(self.subscriptions.deliveries, subscription_id, int(raw_limit)))

    async def replay_delivery(self, request: Request) -> Response:
        params = request.path_params
        delivery = await run_in_threadpool(self.subscriptions.replay, params["subscription_id"], params["delivery_id"])
        return _json(delivery, status=202)


OPERATIONS = [
    Operation("GET", "/health", "Liveness", "health", authenticated=False, response_model=HealthResponse),
    Operation(
        "GET",
        "/ready",
        "Readiness: the state database answers",
        "ready",
        authenticated=False,
        response_model=HealthResponse,
    ),
    Operation(
        "GET",
        "/health/integrations",
        "Per connection: status, token expiry, last successful sync, lag, 429 rate, dead letters, push expiry",
        "integrations_health",
        response_model=IntegrationsHealthResponse,
    ),
    Operation("GET", "/metrics", "Prometheus text format: requests, webhooks, inbox, deliveries, syncs", "metrics"),
    Operation(
        "POST",
        "/connections/{provider}/connect",
        "Start connecting a tenant's account",
        "connect",
        request_model=ConnectRequest,
        response_model=ConnectResponse,
    ),
    Operation(
        "GET",
        "/oauth/{provider}/callback",
        "OAuth redirect target (protected by the state)",
        "callback",
        authenticated=False,
        response_model=ConnectionView,
    ),
    Operation(
        "GET",
        "/connections",
        "List connections (filter with ?tenant= and ?provider=)",
        "list_connections",
        response_model=ConnectionList,
    ),
    Operation(
        "GET",
        "/connections/{connection_id}",
        "One connection's status, scopes and token expiry",
        "get_connection",
        response_model=ConnectionView,
    ),
    Operation(
        "DELETE",
        "/connections/{connection_id}",
        "Disconnect: revoke at the provider, delete tokens",
        "delete_connection",
        response_model=DisconnectResponse,
    ),
    Operation(
        "GET",
        "/connections/{connection_id}/fields",
        "The connection's field catalog (?entity=, ?refresh=true asks the provider now, ?include_removed=true)",
        "list_fields",
        response_model=FieldList,
    ),
    Operation(
        "GET",
        "/tenants/{tenant}/mappings/{provider}",
        "A tenant's field mapping for one provider",
        "get_mapping",
        response_model=MappingView,
    ),
    Operation(
        "PUT",
        "/tenants/{tenant}/mappings/{provider}",
        "Merge changes into the mapping (a null rule removes a target); refused whole if any part is invalid",
        "put_mapping",
        request_model=MappingUpdate,
        response_model=MappingView,
    ),
    Operation(
        "POST",
        "/tenants/{tenant}/mappings/{provider}/preview",
        "Apply the mapping with unsaved changes to sample records",
        "preview_mapping",
        request_model=PreviewRequest,
        response_model=PreviewResponse,
    ),
    Operation(
        "POST",
        "/webhooks/standard/{source}",
        "Standard Webhooks sender (webhook-id/-timestamp/-signature); committed before the 200",
        "standard_webhook",
        authenticated=False,
        response_model=WebhookAck,
    ),
    Operation(
        "POST",
        "/webhooks/microsoft/lifecycle",
        "Microsoft Graph lifecycle notifications (reauthorizationRequired, subscriptionRemoved, missed)",
        "microsoft_lifecycle_webhook",
        authenticated=False,
        response_model=WebhookAck,
        status=202,
    ),
    Operation(
        "POST",
        "/webhooks/{provider}",
        "A provider's notifications, verified by its own scheme; committed before the 2xx",
        "provider_webhook",
        authenticated=False,
        response_model=WebhookAck,
    ),
    Operation(
        "POST",
        "/subscriptions",
        "Subscribe a URL to signed events; the answer holds the `whsec_` secret, shown this once",
        "create_subscription",
        request_model=SubscriptionRequest,
        response_model=SubscriptionCreated,
        status=201,
    ),
    Operation(
        "GET", "/subscriptions", "List webhook subscriptions", "list_subscriptions", response_model=SubscriptionList
    ),
    Operation(
        "GET",
        "/subscriptions/{subscription_id}",
        "One webhook subscription (never its secret)",
        "get_subscription",
        response_model=SubscriptionView,
    ),
    Operation(
        "DELETE",
        "/subscriptions/{subscription_id}",
        "Delete a subscription with its delivery history",
        "delete_subscription",
        response_model=SubscriptionView,
    ),
    Operation(
        "POST",
        "/subscriptions/{subscription_id}/rotate",
        "New secret (shown this once); the old one keeps signing too for `overlap_hours` (body optional)",
        "rotate_subscription_secret",
        request_model=RotateRequest,
        response_model=SubscriptionCreated,
    ),
    Operation(
        "GET",
        "/subscriptions/{subscription_id}/deliveries",
        "Delivery history, newest first, every attempt with status, latency, error and response excerpt (?limit=)",
        "list_deliveries",
        response_model=DeliveryList,
    ),
    Operation(
        "POST",
        "/subscriptions/{subscription_id}/deliveries/{delivery_id}/replay",
        "Send a delivered or failed delivery's event again, as a new delivery",
        "replay_delivery",
        response_model=Delivery,
        status=202,
    ),
]


def tenant_of(request: Request) -> str:
    tenant = request.path_params["tenant"]
    if not TENANT_RE.match(tenant):
        raise GatewayError(404, "unknown_tenant", "tenant ids are letters, digits, _ or -, up to 64 characters")
    return str(tenant)


def openapi_document(operations: list[Operation]) -> dict[str, Any]:
    schemas: dict[str, Any] = {}

    def ref(model: type[BaseModel]) -> dict[str, str]:
        document = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(document.pop("$defs", {}))
        schemas[model.__name__] = document
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    paths: dict[str, Any] = {}
    error = {"description": "refused; the body says why", "content": {"application/json": {"schema": ref(ErrorBody)}}}
    for operation in operations:
        spec: dict[str, Any] = {"summary": operation.summary, "responses": {"4XX": error}}
        if operation.response_model is not None:
            content = {"application/json": {"schema": ref(operation.response_model)}}
            spec["responses"][str(operation.status)] = {"description": "success", "content": content}
        if operation.request_model is not None:
            spec["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(operation.request_model)}},
            }
        if operation.authenticated:
            spec["security"] = [{"apiKey": []}]
        parameters = [
            {"name": name.strip("{}"), "in": "path", "required": True, "schema": {"type": "string"}}
            for name in operation.path.split("/")
            if name.startswith("{")
        ]
        if parameters:
            spec["parameters"] = parameters
        paths.setdefault(operation.path, {})[operation.method.lower()] = spec
    return {
        "openapi": "3.1.0",
        "info": {"title": "integrations_pipeline gateway", "version": "1"},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}}},
    }


def _route(operation: Operation) -> Route:
    async def endpoint(request: Request) -> Response:
        gateway: Gateway = request.app.state.gateway
        try:
            if operation.authenticated:
                gateway.authorize(request)
            return await getattr(gateway, operation.handler)(request)
        except GatewayError as refusal:
            return error_response(refusal)
        except sa.exc.OperationalError:
            logger.warning("state database unavailable during %s %s", operation.method, operation.path)
            return error_response(GatewayError(503, "database_unavailable", "the state database is not reachable"))

    return Route(operation.path, endpoint, methods=[operation.method], name=operation.handler)


async def _openapi(request: Request) -> Response:
    return JSONResponse(openapi_document(OPERATIONS))


async def _server_error(request: Request, exc: Exception) -> Response:
    # Never a stack trace to the caller; the log names the type only, as messages may quote provider responses.
    logger.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
    body = ErrorBody(error="internal_error", message="the gateway failed; see its logs")
    return JSONResponse(body.model_dump(), status_code=500)


async def _not_found(request: Request, exc: Exception) -> Response:
    return error_response(GatewayError(404, "not_found", f"no route {request.method} {request.url.path}"))


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    return error_response(GatewayError(405, "method_not_allowed", f"{request.method} is not allowed here"))


class AccessLog:
    """One log line per request, path only: query strings carry OAuth codes and states, so they are never logged
    (uvicorn's own access log, which prints them, is switched off by the CLI)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500

        async def remember_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, remember_status)
        finally:
            elapsed_ms = (time.monotonic() - started) * 1000
            access_logger.info("%s %s %d %.1fms", scope["method"], scope["path"], status, elapsed_ms)
            # The route's template, not the path: ids in paths would make a label value per connection.
            route = scope.get("route")
            metrics.observe_request(scope["method"], getattr(route, "path", "unmatched"), status, elapsed_ms / 1000)


def create_app(
    settings: Settings, store: StateStore | None = None, *, stored_rows: StoredRows | None = None
) -> Starlette:
    """The gateway app. Without a store, the lifespan opens one from settings and disposes of it at shutdown;
    `stored_rows` lets mapping previews run on the connection's warehouse rows."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        active_store = store or StateStore(create_store_engine(settings.state_database_url), settings.keyring())
        app.state.gateway = Gateway(settings, active_store, stored_rows)
        try:
            yield
        finally:
            app.state.gateway.connections.close()
            if store is None:
                active_store.engine.dispose()

    routes = [_route(operation) for operation in OPERATIONS]
    routes.append(Route("/openapi.json", _openapi, methods=["GET"]))
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(AccessLog)],
        exception_handlers={404: _not_found, 405: _method_not_allowed, 500: _server_error},
    )
