"""The gateway's typed edges: request bodies are validated here, responses never carry a secret."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from integrations_pipeline.clients.providers import PROVIDERS
from integrations_pipeline.store import Connection

TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
# A relative path (not `//host`, no backslash) or an absolute http(s) URL, which must also be on an allow-listed
# origin (settings; checked by the handler). Control characters are refused: they never belong in a redirect.
RETURN_PATH_PATTERN = r"^(/([^/\\\x00-\x1f\x7f][^\\\x00-\x1f\x7f]*)?|[hH][tT][tT][pP][sS]?://[^\x00-\x1f\x7f]+)$"
SCOPE_PATTERN = r"^[!#-\[\]-~]+$"  # RFC 6749's scope-token: printable ASCII without space, " and \\
PROVIDER_NAMES = sorted(PROVIDERS)


def _known_provider(name: str) -> str:
    if name not in PROVIDERS:
        raise ValueError(f"unknown provider; one of {', '.join(PROVIDER_NAMES)}")
    return name


ProviderName = Annotated[
    str, AfterValidator(_known_provider), Field(description="a provider", json_schema_extra={"enum": PROVIDER_NAMES})
]
Tenant = Annotated[str, Field(pattern=TENANT_PATTERN, description="a tenant's id: letters, digits, _ or -, up to 64")]
Scope = Annotated[str, StringConstraints(max_length=256, pattern=SCOPE_PATTERN)]


class ConnectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: Tenant
    return_path: str | None = Field(
        default=None,
        max_length=2048,
        pattern=RETURN_PATH_PATTERN,
        description="where to send the browser after the callback: a relative path like /settings/integrations "
        "(not //host, no backslash), or an http(s) URL on an allow-listed origin",
    )
    scopes: list[Scope] | None = Field(
        default=None, max_length=50, description="scopes to request (incremental authorization); default: the app's"
    )
    replace_account: bool = Field(
        default=False,
        description="a reconnect may switch the connection to another provider account (refused otherwise)",
    )


class AdminConsentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: Tenant
    directory_tenant: str = Field(
        min_length=1,
        max_length=256,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]*$",
        description="the organisation's Microsoft Entra tenant: its id (a GUID) or a verified domain",
    )


class ConnectResponse(BaseModel):
    authorization_url: str
    state_expires_at: datetime


class ConnectionView(BaseModel):
    id: str
    tenant: str
    provider: str
    status: str
    status_reason: str | None
    external_account_id: str | None
    granted_scopes: list[str]
    missing_scopes: list[str]
    token_expires_at: datetime | None
    last_sync_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, connection: Connection) -> ConnectionView:
        return cls(
            **connection.model_dump(
                include={
                    "id",
                    "tenant",
                    "provider",
                    "status_reason",
                    "external_account_id",
                    "granted_scopes",
                    "token_expires_at",
                    "last_sync_at",
                    "created_at",
                    "updated_at",
                }
            ),
            status=connection.status.value,
            missing_scopes=connection.missing_scopes,
        )


class ConnectionList(BaseModel):
    connections: list[ConnectionView]


class DisconnectResponse(BaseModel):
    id: str
    status: str
    revoked_at_provider: bool


class ErrorBody(BaseModel):
    error: str = Field(description="a stable machine-readable code")
    message: str = Field(description="what went wrong and what to do, for a person")
    fields: dict[str, str] = Field(default_factory=dict, description="per-field problems, by field name")


class HealthResponse(BaseModel):
    status: str


class WebhookAck(BaseModel):
    """Sent only after the events are committed to the inbox (Salesforce gets its SOAP Ack instead)."""

    received: int = Field(description="events the request carried")
    stored: int = Field(description="events new to the inbox (the rest were duplicates or ignored)")
    ignored: int = Field(default=0, description="events of object types or accounts the pipeline does not sync")


# -- path parameters and query strings: validated by the route (`openapi.Operation`) and documented from here ------


class ProviderPath(BaseModel):
    provider: ProviderName


class TenantProviderPath(BaseModel):
    tenant: Tenant
    provider: ProviderName


class ConnectionFilter(BaseModel):
    tenant: Tenant | None = None
    provider: ProviderName | None = None


class CallbackQuery(BaseModel):
    """What the provider appends to the redirect URI; other parameters it adds (`scope`, `iss`, ...) are ignored."""

    state: str = Field(min_length=1, max_length=512, description="the state the connection was started with")
    code: str | None = Field(default=None, min_length=1, max_length=4096, description="the authorization code")
    error: str | None = Field(default=None, max_length=256, description="the provider's refusal, instead of a code")
    accounts_server: str | None = Field(
        default=None,
        alias="accounts-server",
        max_length=256,
        description="Zoho: the accounts server of the account's data centre, where the code must be redeemed",
    )


class FieldsQuery(BaseModel):
    entity: Literal["users", "contacts", "events"] | None = Field(default=None, description="one entity's fields only")
    refresh: Literal["true", "false"] | None = Field(
        default=None,
        description="true: ask the provider now; false: the stored catalog only; absent: ask the provider when the "
        "connection is active, else the stored catalog",
    )
    include_removed: Literal["true", "false"] = Field(
        default="false", description="list fields the provider no longer has"
    )


class DeliveriesQuery(BaseModel):
    limit: int = Field(default=50, ge=1, le=500, description="how many deliveries, newest first")


class AdminConsentQuery(BaseModel):
    """What Entra ID appends to the admin consent redirect: `tenant`, `admin_consent=True`, `scope` and the
    `state`, or `error` and `error_description`; other parameters are ignored."""

    state: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="the state the admin consent was started with (Entra's refusals may come without it)",
    )
    tenant: str | None = Field(default=None, max_length=256, description="the consenting directory's tenant id")
    admin_consent: Literal["True", "False", "true", "false"] | None = Field(
        default=None, description="`True` when the administrator granted the application permissions"
    )
    error: str | None = Field(default=None, max_length=256, description="the refusal, instead of admin_consent")
    error_description: str | None = Field(default=None, max_length=2048, description="the refusal, in words")
