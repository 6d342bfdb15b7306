"""The gateway's typed edges: request bodies are validated here, responses never carry a secret."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from integrations_pipeline.store import Connection

TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


class ConnectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(pattern=TENANT_PATTERN, description="the tenant's id: letters, digits, _ or -, up to 64")
    return_path: str | None = Field(
        default=None,
        max_length=2048,
        description="where to send the browser after the callback: a relative path or an allow-listed origin",
    )
    scopes: list[str] | None = Field(
        default=None, max_length=50, description="scopes to request (incremental authorization); default: the app's"
    )
    replace_account: bool = Field(
        default=False,
        description="a reconnect may switch the connection to another provider account (refused otherwise)",
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
