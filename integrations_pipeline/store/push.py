"""Push subscriptions: what each provider was asked to push to us (a Graph subscription, a Google channel, a Zoho
watch, a Salesforce outbound-message endpoint), one row per connection and entity.

The secret a provider echoes with every notification (Graph `clientState`, Google channel token, Zoho token, the
Salesforce endpoint token) is handed out once at creation and kept only as its SHA-256: verification hashes what was
presented and compares in constant time, so a database dump yields no usable secret and key rotation has nothing to
re-encrypt here.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Collection
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict

from integrations_pipeline.store import schema
from integrations_pipeline.store.repository import StateStore, StoreError, utcnow

SECRET_BYTES = 32  # 43 url-safe characters: inside Zoho's 50 and Graph's 128


class PushStatus(StrEnum):
    ACTIVE = "active"
    REMOVED = "removed"  # stopped by us or by the provider
    FAILED = "failed"  # the provider refused it: the connection is polled instead


class PushSubscription(BaseModel):
    """One subscription, without its secret."""

    model_config = ConfigDict(frozen=True)

    id: str
    connection_id: str
    provider: str
    entity: str
    resource: str
    external_id: str | None
    status: PushStatus
    status_reason: str | None
    expires_at: datetime
    renewed_at: datetime
    created_at: datetime
    updated_at: datetime

    def half_life_passed(self, now: datetime) -> bool:
        """Renew no later than half-way through the life granted at the last creation or renewal."""
        return now >= self.renewed_at + (self.expires_at - self.renewed_at) / 2


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class PushSubscriptions:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    def create(
        self,
        *,
        connection_id: str,
        provider: str,
        entity: str,
        resource: str,
        expires_at: datetime,
        external_id: str | None = None,
        subscription_id: str | None = None,
    ) -> tuple[PushSubscription, str]:
        """Store a new subscription and return it with its fresh secret, which is never readable again."""
        secret = secrets.token_urlsafe(SECRET_BYTES)
        now = utcnow()
        new_id = subscription_id or secrets.token_urlsafe(16)
        row: dict[str, Any] = {
            "id": new_id,
            "connection_id": connection_id,
            "provider": provider,
            "entity": entity,
            "resource": resource,
            "external_id": external_id,
            "secret_hash": _hash(secret),
            "status": PushStatus.ACTIVE.value,
            "status_reason": None,
            "expires_at": expires_at,
            "renewed_at": now,
            "created_at": now,
            "updated_at": now,
        }
        with self.store.write() as conn:
            conn.execute(schema.push_subscriptions.insert().values(**row))
            self.store.audit(
                conn,
                "push_subscription.created",
                actor="push_lifecycle",
                provider=provider,
                connection_id=connection_id,
                detail={"subscription_id": new_id, "entity": entity, "expires_at": expires_at.isoformat()},
            )
        return self._require(new_id), secret

    def get(self, subscription_id: str) -> PushSubscription | None:
        return self._one(schema.push_subscriptions.c.id == subscription_id)

    def find(self, provider: str, *, external_id: str) -> PushSubscription | None:
        table = schema.push_subscriptions
        return self._one((table.c.provider == provider) & (table.c.external_id == external_id))

    def verify_secret(self, subscription_id: str, presented: str) -> PushSubscription | None:
        """The active subscription whose secret `presented` is, or None (unknown id, wrong secret, not active)."""
        table = schema.push_subscriptions
        with self.store.engine.connect() as conn:
            row = conn.execute(sa.select(table).where(table.c.id == subscription_id)).first()
        # Hash and compare even for an unknown id, so timing tells nothing about which ids exist.
        expected = row.secret_hash if row is not None else _hash(secrets.token_urlsafe(SECRET_BYTES))
        matches = hmac.compare_digest(_hash(presented), expected)
        if row is None or not matches or row.status != PushStatus.ACTIVE.value:
            return None
        return PushSubscription.model_validate(row._asdict())

    def renewed(
        self, subscription_id: str, *, expires_at: datetime, external_id: str | None = None
    ) -> PushSubscription:
        values: dict[str, Any] = {"expires_at": expires_at, "renewed_at": utcnow(), "updated_at": utcnow()}
        if external_id is not None:
            values["external_id"] = external_id
        self._update(subscription_id, values, "push_subscription.renewed", {"expires_at": expires_at.isoformat()})
        return self._require(subscription_id)

    def set_status(self, subscription_id: str, status: PushStatus, reason: str | None = None) -> None:
        values = {"status": status.value, "status_reason": reason, "updated_at": utcnow()}
        self._update(subscription_id, values, f"push_subscription.{status.value}", {"reason": reason})

    def list(
        self,
        *,
        connection_id: str | None = None,
        provider: str | None = None,
        statuses: Collection[PushStatus] | None = (PushStatus.ACTIVE,),
    ) -> list[PushSubscription]:
        table = schema.push_subscriptions
        query = sa.select(table).order_by(table.c.created_at, table.c.id)
        if connection_id is not None:
            query = query.where(table.c.connection_id == connection_id)
        if provider is not None:
            query = query.where(table.c.provider == provider)
        if statuses is not None:
            query = query.where(table.c.status.in_([status.value for status in statuses]))
        with self.store.engine.connect() as conn:
            return [PushSubscription.model_validate(row._asdict()) for row in conn.execute(query)]

    def _one(self, where: sa.ColumnElement[bool]) -> PushSubscription | None:
        with self.store.engine.connect() as conn:
            row = conn.execute(sa.select(schema.push_subscriptions).where(where)).first()
        return PushSubscription.model_validate(row._asdict()) if row is not None else None

    def _require(self, subscription_id: str) -> PushSubscription:
        found = self.get(subscription_id)
        if found is None:
            raise StoreError(f"no push subscription {subscription_id!r}")
        return found

    def _update(self, subscription_id: str, values: dict[str, Any], action: str, detail: dict[str, Any]) -> None:
        table = schema.push_subscriptions
        with self.store.write() as conn:
            row = conn.execute(
                sa.select(table.c.provider, table.c.connection_id).where(table.c.id == subscription_id)
            ).first()
            if row is None:
                raise StoreError(f"no push subscription {subscription_id!r}")
            conn.execute(table.update().where(table.c.id == subscription_id).values(**values))
            self.store.audit(
                conn,
                action,
                actor="push_lifecycle",
                provider=row.provider,
                connection_id=row.connection_id,
                detail={"subscription_id": subscription_id, **detail},
            )
