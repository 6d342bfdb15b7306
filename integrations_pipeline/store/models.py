"""Typed records the store hands out. Secrets travel only inside TokenSet, whose repr hides them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class ConnectionStatus(StrEnum):
    ACTIVE = "active"
    NEEDS_REAUTH = "needs_reauth"
    DISCONNECTED = "disconnected"


class Connection(BaseModel):
    """One tenant's authorization at one provider. Never carries a secret."""

    model_config = ConfigDict(frozen=True)

    id: str
    tenant: str
    provider: str
    status: ConnectionStatus
    status_reason: str | None
    external_account_id: str | None
    requested_scopes: list[str]
    granted_scopes: list[str]
    provider_metadata: dict[str, Any]
    token_expires_at: datetime | None
    last_sync_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def missing_scopes(self) -> list[str]:
        return sorted(set(self.requested_scopes) - set(self.granted_scopes))


class TokenSet(BaseModel):
    model_config = ConfigDict(frozen=True)

    access_token: SecretStr
    refresh_token: SecretStr | None
    expires_at: datetime | None


class PendingAuthorization(BaseModel):
    """What an OAuth `state` stood for, returned once when the callback consumes it."""

    model_config = ConfigDict(frozen=True)

    tenant: str
    provider: str
    redirect_uri: str
    return_path: str | None
    scopes: list[str]
    code_verifier: SecretStr
    replace_account: bool = False  # the tenant confirmed replacing the connection's provider account


class AuditEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    occurred_at: datetime
    actor: str
    action: str
    tenant: str | None
    provider: str | None
    connection_id: str | None
    detail: dict[str, Any] = Field(default_factory=dict)
    prev_hash: str
    entry_hash: str
    mac_key_id: str | None = None
    mac: str | None = None
