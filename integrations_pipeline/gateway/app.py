"""The gateway: `create_app(settings, store) -> Starlette`.

Routes are declared once in OPERATIONS (`openapi.Operation`: the models each handler parses with), which builds both
the routing table (one route per path) and `/openapi.json`.
Handlers are async; store and provider calls are blocking and run in the thread pool.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import sqlalchemy as sa
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from integrations_pipeline import metrics
from integrations_pipeline.gateway.connections import ConnectionService, GatewayError
from integrations_pipeline.gateway.fields import FieldList, FieldService
from integrations_pipeline.gateway.health import IntegrationsHealthResponse, integrations_health
from integrations_pipeline.gateway.intake import DATABASE_UNAVAILABLE
from integrations_pipeline.gateway.mappings import (
    MappingService,
    MappingView,
    PreviewRequest,
    PreviewResponse,
    StoredRows,
)
from integrations_pipeline.gateway.openapi import (
    ERROR,
    Answer,
    Body,
    Operation,
    check_request,
    ok,
    openapi_document,
    text,
)
from integrations_pipeline.gateway.pages import connected_page, wants_html
from integrations_pipeline.gateway.parsing import (
    MAX_JSON_BODY_BYTES,
    parse_body,
    parse_json,
    parse_query,
    read_limited,
)
from integrations_pipeline.gateway.schemas import (
    AdminConsentQuery,
    AdminConsentRequest,
    CallbackQuery,
    ConnectionFilter,
    ConnectionList,
    ConnectionView,
    ConnectRequest,
    ConnectResponse,
    DeliveriesQuery,
    DisconnectResponse,
    ErrorBody,
    FieldsQuery,
    HealthResponse,
    ProviderPath,
    TenantProviderPath,
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
from integrations_pipeline.gateway.webhooks import (
    GoogleHeaders,
    GraphBatch,
    GraphQuery,
    HubSpotBatch,
    HubSpotHeaders,
    SalesforceQuery,
    StandardEvent,
    StandardHeaders,
    WebhookReceiver,
    ZohoNotification,
)
from integrations_pipeline.httpserver import printable
from integrations_pipeline.mapping import MappingUpdate
from integrations_pipeline.settings import Settings
from integrations_pipeline.store import Connection, StateStore, create_store_engine
from integrations_pipeline.store.outbox import Delivery

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("integrations_pipeline.gateway.access")
RETRY_AFTER_S = "5"


def error_response(error: GatewayError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    body = ErrorBody(error=error.code, message=error.message, fields=error.fields)
    extra = {401: {"WWW-Authenticate": "Bearer"}, 503: {"Retry-After": RETRY_AFTER_S}}.get(error.status, {})
    return JSONResponse(body.model_dump(), status_code=error.status, headers={**extra, **(headers or {})})


def _json(model: BaseModel, status: int = 200) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json"), status_code=status)


def _connected(request: Request, connection: Connection) -> Response:
    """Where a connect flow ends without a return path: the connection, as a page to a browser."""
    view = ConnectionView.of(connection)
    return connected_page(view) if wants_html(request) else _json(view)


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
        query = parse_query(request, ConnectionFilter)
        return _json(await run_in_threadpool(integrations_health, self.store, query.tenant, query.provider))

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
        if not request.query_params.get("state"):  # the most likely mistake, with its own advice
            raise GatewayError(400, "missing_state", "the callback has no state; start the connection again")
        query = parse_query(request, CallbackQuery)
        outcome = await run_in_threadpool(
            self.connections.complete,
            request.path_params["provider"],
            state=query.state,
            code=query.code,
            error=query.error,
            accounts_server=query.accounts_server,
        )
        if outcome.redirect_to is not None:
            return RedirectResponse(outcome.redirect_to, status_code=303)
        assert outcome.connection is not None
        return _connected(request, outcome.connection)

    async def start_admin_consent(self, request: Request) -> Response:
        body = await parse_body(request, AdminConsentRequest)
        provider = request.path_params["provider"]
        started = await run_in_threadpool(
            self.connections.start_admin_consent, provider, body.tenant, body.directory_tenant
        )
        return _json(ConnectResponse(**started.__dict__))

    async def admin_consent_landing(self, request: Request) -> Response:
        query = parse_query(request, AdminConsentQuery)
        connection = await run_in_threadpool(
            self.connections.complete_admin_consent,
            request.path_params["provider"],
            state=query.state,
            granted=(query.admin_consent or "").lower() == "true" and bool(query.tenant),
            error=query.error,
            error_description=query.error_description,
        )
        return _connected(request, connection)

    async def list_connections(self, request: Request) -> Response:
        query = parse_query(request, ConnectionFilter)
        connections = await run_in_threadpool(self.store.list_connections, provider=query.provider)
        views = [ConnectionView.of(c) for c in connections if query.tenant is None or c.tenant == query.tenant]
        return _json(ConnectionList(connections=views))

    async def get_connection(self, request: Request) -> Response:
        connection_id = request.path_params["connection_id"]
        connection = await run_in_threadpool(self.store.get_connection, connection_id)
        if connection is None:
            raise GatewayError(404, "unknown_connection", f"no connection {connection_id!r}")
        return _json(ConnectionView.of(connection))

    async def list_fields(self, request: Request) -> Response:
        query = parse_query(request, FieldsQuery)
        listing = await run_in_threadpool(
            self.fields.list,
            request.path_params["connection_id"],
            entity=query.entity,
            refresh=None if query.refresh is None else query.refresh == "true",
            include_removed=query.include_removed == "true",
        )
        return _json(listing)

    async def get_mapping(self, request: Request) -> Response:
        tenant, provider = request.path_params["tenant"], request.path_params["provider"]
        return _json(await run_in_threadpool(self.mappings.get, tenant, provider))

    async def put_mapping(self, request: Request) -> Response:
        tenant, provider = request.path_params["tenant"], request.path_params["provider"]
        update = await parse_body(request, MappingUpdate)
        return _json(await run_in_threadpool(self.mappings.update, tenant, provider, update))

    async def preview_mapping(self, request: Request) -> Response:
        tenant, provider = request.path_params["tenant"], request.path_params["provider"]
        body = await parse_body(request, PreviewRequest)
        return _json(await run_in_threadpool(self.mappings.preview, tenant, provider, body))

    async def provider_webhook(self, request: Request) -> Response:
        return await self.webhooks.provider(request.path_params["provider"], request)

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
        raw = await read_limited(request, MAX_JSON_BODY_BYTES)
        body = parse_json(raw, RotateRequest) if raw else RotateRequest()
        subscription_id = request.path_params["subscription_id"]
        return _json(await run_in_threadpool(self.subscriptions.rotate, subscription_id, body))

    async def list_deliveries(self, request: Request) -> Response:
        limit = parse_query(request, DeliveriesQuery).limit
        subscription_id = request.path_params["subscription_id"]
        return _json(await run_in_threadpool(self.subscriptions.deliveries, subscription_id, limit))

    async def replay_delivery(self, request: Request) -> Response:
        params = request.path_params
        delivery = await run_in_threadpool(self.subscriptions.replay, params["subscription_id"], params["delivery_id"])
        return _json(delivery, status=202)


def webhook(
    provider: str,
    summary: str,
    answer: Answer,
    *,
    body: tuple[Body, ...] = (),
    headers: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
) -> Operation:
    """A provider's own receiver, `POST /webhooks/<provider>`: its own headers, query and body, no API key."""
    return Operation(
        "POST",
        f"/webhooks/{provider}",
        summary,
        "provider_webhook",
        (answer,),
        authenticated=False,
        query=query,
        headers=headers,
        body=body,
        path_values=(("provider", provider),),
    )


def graph_webhook(path: str, summary: str, handler: str, path_values: tuple[tuple[str, str], ...] = ()) -> Operation:
    """Graph's notification and lifecycle URLs: the validation handshake (no body, text/plain 200) or a batch."""
    return Operation(
        "POST",
        path,
        summary,
        handler,
        (
            ok(WebhookAck, 202, "the notifications are committed to the inbox"),
            text(200, "the validationToken, echoed (subscription validation)"),
        ),
        authenticated=False,
        query=GraphQuery,
        body=(Body(GraphBatch),),
        body_required=False,
        path_values=path_values,
    )


OPERATIONS = [
    Operation("GET", "/health", "Liveness", "health", (ok(HealthResponse),), authenticated=False, uses_database=False),
    Operation(
        "GET", "/ready", "Readiness: the state database answers", "ready", (ok(HealthResponse),), authenticated=False
    ),
    Operation(
        "GET",
        "/health/integrations",
        "Per connection: status, token expiry, last successful sync, lag, 429 rate, dead letters, push expiry",
        "integrations_health",
        (ok(IntegrationsHealthResponse),),
        query=ConnectionFilter,
    ),
    Operation(
        "GET",
        "/metrics",
        "Prometheus text format: requests, webhooks, inbox, deliveries, syncs",
        "metrics",
        (text(200, "Prometheus exposition format 0.0.4", metrics.CONTENT_TYPE),),
    ),
    Operation(
        "POST",
        "/connections/{provider}/connect",
        "Start connecting a tenant's account",
        "connect",
        (ok(ConnectResponse),),
        path_params=ProviderPath,
        body=(Body(ConnectRequest),),
    ),
    Operation(
        "GET",
        "/oauth/{provider}/callback",
        "OAuth redirect target (protected by the state)",
        "callback",
        (
            ok(ConnectionView, description="connected (no return path was given)"),
            Answer("303", "to the return path, with ?connection_id=&status= or ?error=", headers=("Location",)),
        ),
        authenticated=False,
        path_params=ProviderPath,
        query=CallbackQuery,
        refusals=(Answer("502", "the provider failed to redeem the code", (ERROR,)),),
    ),
    Operation(
        "POST",
        "/connections/{provider}/admin-consent",
        "Start an administrator's admin consent for app-only access to a directory (Microsoft)",
        "start_admin_consent",
        (ok(ConnectResponse, description="send the administrator to authorization_url"),),
        path_params=ProviderPath,
        body=(Body(AdminConsentRequest),),
    ),
    Operation(
        "GET",
        "/oauth/microsoft/adminconsent",
        "Admin consent redirect target (protected by the state): connects the directory app-only",
        "admin_consent_landing",
        (ok(ConnectionView, description="connected app-only"),),
        authenticated=False,
        query=AdminConsentQuery,
        path_values=(("provider", "microsoft"),),
    ),
    Operation(
        "GET",
        "/connections",
        "List connections (filter with ?tenant= and ?provider=)",
        "list_connections",
        (ok(ConnectionList),),
        query=ConnectionFilter,
    ),
    Operation(
        "GET",
        "/connections/{connection_id}",
        "One connection's status, scopes and token expiry",
        "get_connection",
        (ok(ConnectionView),),
    ),
    Operation(
        "DELETE",
        "/connections/{connection_id}",
        "Disconnect: revoke at the provider (when its tokens can be read), delete tokens",
        "delete_connection",
        (ok(DisconnectResponse),),
    ),
    Operation(
        "GET",
        "/connections/{connection_id}/fields",
        "The connection's fields as the provider describes them now (?refresh=false: the stored catalog only; "
        "?entity=, ?include_removed=true)",
        "list_fields",
        (ok(FieldList),),
        query=FieldsQuery,
        refusals=(Answer("502", "the provider failed to list its fields", (ERROR,)),),
    ),
    Operation(
        "GET",
        "/tenants/{tenant}/mappings/{provider}",
        "A tenant's field mapping for one provider",
        "get_mapping",
        (ok(MappingView),),
        path_params=TenantProviderPath,
    ),
    Operation(
        "PUT",
        "/tenants/{tenant}/mappings/{provider}",
        "Merge changes into the mapping (a null rule removes a target); refused whole if any part is invalid",
        "put_mapping",
        (ok(MappingView),),
        path_params=TenantProviderPath,
        body=(Body(MappingUpdate),),
    ),
    Operation(
        "POST",
        "/tenants/{tenant}/mappings/{provider}/preview",
        "Apply the mapping with unsaved changes to sample records",
        "preview_mapping",
        (ok(PreviewResponse),),
        path_params=TenantProviderPath,
        body=(Body(PreviewRequest),),
    ),
    Operation(
        "POST",
        "/webhooks/standard/{source}",
        "Standard Webhooks sender (webhook-id/-timestamp/-signature); committed before the 200",
        "standard_webhook",
        (ok(WebhookAck),),
        authenticated=False,
        headers=StandardHeaders,
        body=(Body(StandardEvent),),
    ),
    graph_webhook(
        "/webhooks/microsoft/lifecycle",
        "Microsoft Graph lifecycle notifications (reauthorizationRequired, subscriptionRemoved, missed)",
        "microsoft_lifecycle_webhook",
    ),
    webhook(
        "hubspot",
        "HubSpot: a batch of events signed with X-HubSpot-Signature-v3; committed before the 200",
        ok(WebhookAck),
        body=(Body(HubSpotBatch),),
        headers=HubSpotHeaders,
    ),
    graph_webhook(
        "/webhooks/microsoft",
        "Microsoft Graph change notifications, each with its clientState",
        "provider_webhook",
        (("provider", "microsoft"),),
    ),
    webhook(
        "google",
        "Google push: channel id and token headers, no body; `sync` is the channel's handshake",
        ok(WebhookAck),
        headers=GoogleHeaders,
    ),
    webhook(
        "zoho",
        "Zoho notifications: channel_id and token in the body (Zoho signs nothing)",
        ok(WebhookAck),
        body=(Body(ZohoNotification),),
    ),
    webhook(
        "salesforce",
        "Salesforce Outbound Messages (SOAP); answered with the SOAP Ack",
        text(200, "the SOAP Ack: the notifications are committed", "text/xml"),
        body=(Body(None, "text/xml"),),
        query=SalesforceQuery,
    ),
    Operation(
        "POST",
        "/subscriptions",
        "Subscribe a URL to signed events; the answer holds the `whsec_` secret, shown this once",
        "create_subscription",
        (ok(SubscriptionCreated, 201),),
        body=(Body(SubscriptionRequest),),
    ),
    Operation("GET", "/subscriptions", "List webhook subscriptions", "list_subscriptions", (ok(SubscriptionList),)),
    Operation(
        "GET",
        "/subscriptions/{subscription_id}",
        "One webhook subscription (never its secret)",
        "get_subscription",
        (ok(SubscriptionView),),
    ),
    Operation(
        "DELETE",
        "/subscriptions/{subscription_id}",
        "Delete a subscription with its delivery history",
        "delete_subscription",
        (ok(SubscriptionView),),
    ),
    Operation(
        "POST",
        "/subscriptions/{subscription_id}/rotate",
        "New secret (shown this once); the old one keeps signing too for `overlap_hours` (body optional)",
        "rotate_subscription_secret",
        (ok(SubscriptionCreated),),
        body=(Body(RotateRequest),),
        body_required=False,
    ),
    Operation(
        "GET",
        "/subscriptions/{subscription_id}/deliveries",
        "Delivery history, newest first, every attempt with status, latency, error and response excerpt (?limit=)",
        "list_deliveries",
        (ok(DeliveryList),),
        query=DeliveriesQuery,
    ),
    Operation(
        "POST",
        "/subscriptions/{subscription_id}/deliveries/{delivery_id}/replay",
        "Send a delivered or failed delivery's event again, as a new delivery",
        "replay_delivery",
        (ok(Delivery, 202),),
    ),
]


def _route(path: str, operations: list[Operation]) -> Route:
    """One route per path, so a 405 lists every method the path has in `Allow`."""
    by_method = {operation.method: operation for operation in operations}
    if "GET" in by_method:
        by_method["HEAD"] = by_method["GET"]

    async def endpoint(request: Request) -> Response:
        return await _answer(by_method[request.method], request)

    return Route(path, endpoint, methods=list(by_method), name=operations[0].handler)


async def _answer(operation: Operation, request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    request.scope["path_params"] = {**request.path_params, **dict(operation.path_values)}
    try:
        if operation.authenticated:
            gateway.authorize(request)
        check_request(request, operation)
        return await getattr(gateway, operation.handler)(request)
    except GatewayError as refusal:
        return error_response(refusal)
    except DATABASE_UNAVAILABLE:
        logger.warning("state database unavailable during %s %s", operation.method, operation.path)
        return error_response(GatewayError(503, "database_unavailable", "the state database is not reachable"))
    except Exception as failure:  # answered here, so no server above us prints a traceback for it
        return _server_error(request, failure)


async def _openapi(request: Request) -> Response:
    return JSONResponse(openapi_document(OPERATIONS))


def _server_error(request: Request, exc: Exception) -> Response:
    # Never a stack trace to the caller; the log names the type only, as messages may quote provider responses.
    logger.error("unhandled %s on %s %s", type(exc).__name__, request.method, printable(request.url.path))
    body = ErrorBody(error="internal_error", message="the gateway failed; see its logs")
    return JSONResponse(body.model_dump(), status_code=500)


async def _unhandled(request: Request, exc: Exception) -> Response:
    return _server_error(request, exc)


async def _not_found(request: Request, exc: Exception) -> Response:
    path = printable(request.url.path)
    return error_response(GatewayError(404, "not_found", f"no route {printable(request.method)} {path}"))


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    allow = exc.headers if isinstance(exc, HTTPException) else None  # Starlette's 405 carries `Allow`
    refusal = GatewayError(405, "method_not_allowed", f"{printable(request.method)} is not allowed here")
    return error_response(refusal, allow)


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
            # Escaped: a percent-decoded path could otherwise write a newline and forge a log line.
            method, path = printable(scope["method"]), printable(scope["path"])
            access_logger.info("%s %s %d %.1fms", method, path, status, elapsed_ms)
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
            app.state.gateway.webhooks.close()
            if store is None:
                active_store.engine.dispose()

    paths: dict[str, list[Operation]] = {}
    for operation in OPERATIONS:
        paths.setdefault(operation.path, []).append(operation)
    routes = [_route(path, operations) for path, operations in paths.items()]
    routes.append(Route("/openapi.json", _openapi, methods=["GET"]))
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(AccessLog)],
        exception_handlers={404: _not_found, 405: _method_not_allowed, 500: _unhandled},
    )
