"""Outgoing webhooks at rest: subscriptions (secrets encrypted under the keyring), the events outbox and each
delivery's attempts.

pending --(2xx)--> delivered
        --(other answer or no answer)--> pending again at the next retry time, or failed after the last attempt
        --(410 Gone)--> failed, and the subscription disabled
delivered | failed --(replay)--> a new pending delivery of the same event (`replay_of` names the original)

A `whsec_` secret leaves this module twice only: once to the caller that created or rotated it, and to the sender
inside a DueDelivery, in memory. Audit entries name the destination's origin, never the secret nor the URL's path
(receivers such as chat tools put their own credential in the path).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, SecretStr

from integrations_pipeline.store import schema
from integrations_pipeline.store.events import DeliveryStatus, EventType, SubscriptionStatus, new_id
from integrations_pipeline.store.repository import StateStore, StoreError, subscription_secret_aad, utcnow

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
DEFAULT_ROTATION_OVERLAP = timedelta(hours=24)
OUTBOX_LOCK = "webhook_deliveries"


class UnknownSubscription(LookupError):
    """No such subscription (or no such delivery of it)."""


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


class Subscription(BaseModel):
    """A subscription as anyone may see it: no secret."""

    model_config = ConfigDict(frozen=True)

    id: str
    url: str
    event_types: list[EventType]
    description: str | None
    status: SubscriptionStatus
    status_reason: str | None
    previous_secret_expires_at: datetime | None  # while set and ahead, both secrets sign
    created_at: datetime
    updated_at: datetime


class Attempt(BaseModel):
    model_config = ConfigDict(frozen=True)

    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None
    response_excerpt: str | None


class Delivery(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    subscription_id: str
    event_id: str
    event_type: EventType
    replay_of: str | None
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    history: list[Attempt]


@dataclass(frozen=True)
class DueDelivery:
    """One claimed delivery with what it takes to send it. The secrets (current first) hide in their repr."""

    delivery_id: str
    subscription_id: str
    url: str
    event_id: str
    body: dict[str, Any]
    attempts: int  # attempts before this one
    secrets: tuple[SecretStr, ...]


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt found, and what follows from it (decided by the sender's policy, applied here)."""

    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None
    response_excerpt: str | None
    status: DeliveryStatus
    next_attempt_at: datetime | None
    disable_subscription: bool = False


class Outbox:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    # -- subscriptions ------------------------------------------------------------------------------------------

    def create_subscription(
        self, *, url: str, event_types: Sequence[EventType], description: str | None, actor: str
    ) -> tuple[Subscription, str]:
        """Store a new subscription and return it with its secret, which is never readable again."""
        subscription_id, secret, now = new_id("sub"), new_secret(), utcnow()
        keyring = self.store.keyring
        with self.store.write() as conn:
            conn.execute(
                schema.webhook_subscriptions.insert().values(
                    id=subscription_id,
                    url=url,
                    event_types=[EventType(t).value for t in dict.fromkeys(event_types)],
                    description=description,
                    status=SubscriptionStatus.ACTIVE.value,
                    key_id=keyring.primary_key_id,
                    secret_ciphertext=keyring.encrypt(secret, associated_data=subscription_secret_aad(subscription_id)),
                    created_at=now,
                    updated_at=now,
                )
            )
            subscription = self._get(conn, subscription_id)
            self._audit(conn, "subscription.created", subscription, actor, event_types=subscription.event_types)
        return subscription, secret

    def list_subscriptions(self) -> list[Subscription]:
        table = schema.webhook_subscriptions
        with self.store.engine.connect() as conn:
            return [_subscription(row) for row in conn.execute(sa.select(table).order_by(table.c.created_at))]

    def get_subscription(self, subscription_id: str) -> Subscription | None:
        with self.store.engine.connect() as conn:
            return self._get(conn, subscription_id, required=False)

    def delete_subscription(self, subscription_id: str, *, actor: str) -> Subscription:
        """Delete it with its deliveries and their history; the events stay, and so does the audit entry."""
        table = schema.webhook_subscriptions
        with self.store.write() as conn:
            subscription = self._get(conn, subscription_id)
            deliveries = sa.select(schema.webhook_deliveries.c.id).where(
                schema.webhook_deliveries.c.subscription_id == subscription_id
            )
            conn.execute(schema.webhook_attempts.delete().where(schema.webhook_attempts.c.delivery_id.in_(deliveries)))
            conn.execute(
                schema.webhook_deliveries.delete().where(schema.webhook_deliveries.c.subscription_id == subscription_id)
            )
            conn.execute(table.delete().where(table.c.id == subscription_id))
            self._audit(conn, "subscription.deleted", subscription, actor)
        return subscription

    def rotate_secret(
        self, subscription_id: str, *, actor: str, overlap: timedelta = DEFAULT_ROTATION_OVERLAP
    ) -> tuple[Subscription, str]:
        """A new secret signs from now on; the one it replaces keeps signing alongside it for `overlap`."""
        table = schema.webhook_subscriptions
        secret, now = new_secret(), utcnow()
        keyring, aad = self.store.keyring, subscription_secret_aad(subscription_id)
        with self.store.write() as conn:
            row = conn.execute(sa.select(table).where(table.c.id == subscription_id)).first()
            if row is None:
                raise UnknownSubscription(f"no webhook subscription {subscription_id!r}")
            conn.execute(
                table.update()
                .where(table.c.id == subscription_id)
                .values(
                    key_id=keyring.primary_key_id,
                    secret_ciphertext=keyring.encrypt(secret, associated_data=aad),
                    previous_key_id=row.key_id if overlap > timedelta(0) else None,
                    previous_secret_ciphertext=row.secret_ciphertext if overlap > timedelta(0) else None,
                    previous_secret_expires_at=now + overlap if overlap > timedelta(0) else None,
                    updated_at=now,
                )
            )
            subscription = self._get(conn, subscription_id)
            self._audit(
                conn,
                "subscription.secret_rotated",
                subscription,
                actor,
                previous_secret_valid_until=expires.isoformat()
                if (expires := subscription.previous_secret_expires_at)
                else None,
            )
        return subscription, secret

    # -- deliveries ---------------------------------------------------------------------------------------------

    def deliveries(self, subscription_id: str, *, limit: int = 50) -> list[Delivery]:
        """The newest deliveries first, each with every attempt in order."""
        deliveries, events, attempts = schema.webhook_deliveries, schema.webhook_events, schema.webhook_attempts
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(deliveries, events.c.type.label("event_type"))
                .join(events, events.c.id == deliveries.c.event_id)
                .where(deliveries.c.subscription_id == subscription_id)
                .order_by(deliveries.c.created_at.desc(), deliveries.c.id)
                .limit(limit)
            ).all()
            history: dict[str, list[Attempt]] = {row.id: [] for row in rows}
            for attempt in conn.execute(
                sa.select(attempts).where(attempts.c.delivery_id.in_(list(history))).order_by(attempts.c.id)
            ):
                history[attempt.delivery_id].append(Attempt.model_validate(attempt._asdict()))
        return [Delivery.model_validate({**row._asdict(), "history": history[row.id]}) for row in rows]

    def replay(self, subscription_id: str, delivery_id: str, *, actor: str) -> Delivery:
        """Send a finished delivery's event again, as a new delivery due now."""
        deliveries = schema.webhook_deliveries
        now = utcnow()
        with self.store.write() as conn:
            subscription = self._get(conn, subscription_id)
            if subscription.status != SubscriptionStatus.ACTIVE:
                raise StoreError(f"subscription {subscription_id} is {subscription.status.value}: nothing is sent")
            original = conn.execute(
                sa.select(deliveries).where(
                    (deliveries.c.id == delivery_id) & (deliveries.c.subscription_id == subscription_id)
                )
            ).first()
            if original is None:
                raise UnknownSubscription(f"subscription {subscription_id} has no delivery {delivery_id!r}")
            if original.status == DeliveryStatus.PENDING.value:
                raise StoreError(f"delivery {delivery_id} is still pending: it will be retried on its own")
            replay_id = new_id("dlv")
            conn.execute(
                deliveries.insert().values(
                    id=replay_id,
                    subscription_id=subscription_id,
                    event_id=original.event_id,
                    replay_of=delivery_id,
                    status=DeliveryStatus.PENDING.value,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )
            self._audit(conn, "subscription.delivery_replayed", subscription, actor, delivery_id=delivery_id)
        return next(d for d in self.deliveries(subscription_id, limit=1_000) if d.id == replay_id)

    def claim_due(self, now: datetime, *, limit: int, lease: timedelta) -> list[DueDelivery]:
        """Take up to `limit` due deliveries of active subscriptions, moving each one's next attempt `lease` ahead
        so that an overlapping evaluation does not send it too; recording the attempt sets the real next time."""
        deliveries, events, table = schema.webhook_deliveries, schema.webhook_events, schema.webhook_subscriptions
        with self.store.locked(OUTBOX_LOCK) as conn:
            rows = conn.execute(
                sa.select(
                    deliveries.c.id,
                    deliveries.c.attempts,
                    deliveries.c.subscription_id,
                    table.c.url,
                    table.c.secret_ciphertext,
                    table.c.previous_secret_ciphertext,
                    table.c.previous_secret_expires_at,
                    events.c.id.label("event_id"),
                    events.c.type,
                    events.c.data,
                    events.c.occurred_at,
                )
                .join(table, table.c.id == deliveries.c.subscription_id)
                .join(events, events.c.id == deliveries.c.event_id)
                .where(
                    (deliveries.c.status == DeliveryStatus.PENDING.value)
                    & (deliveries.c.next_attempt_at <= now)
                    & (table.c.status == SubscriptionStatus.ACTIVE.value)
                )
                .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
                .limit(limit)
            ).all()
            if rows:
                conn.execute(
                    deliveries.update()
                    .where(deliveries.c.id.in_([row.id for row in rows]))
                    .values(next_attempt_at=now + lease)
                )
        return [self._due(row, now) for row in rows]

    def record_attempt(self, due: DueDelivery, result: AttemptResult, *, actor: str) -> None:
        deliveries, table = schema.webhook_deliveries, schema.webhook_subscriptions
        with self.store.write() as conn:
            conn.execute(
                schema.webhook_attempts.insert().values(
                    delivery_id=due.delivery_id,
                    attempted_at=result.attempted_at,
                    status_code=result.status_code,
                    latency_ms=result.latency_ms,
                    error=result.error,
                    response_excerpt=result.response_excerpt,
                )
            )
            conn.execute(
                deliveries.update()
                .where(deliveries.c.id == due.delivery_id)
                .values(
                    status=result.status.value,
                    attempts=due.attempts + 1,
                    next_attempt_at=result.next_attempt_at,
                    last_error=result.error,
                    updated_at=result.attempted_at,
                )
            )
            if not result.disable_subscription:
                return
            reason = f"the receiver answered 410 Gone on {result.attempted_at.isoformat()}"
            disabled = conn.execute(
                table.update()
                .where((table.c.id == due.subscription_id) & (table.c.status == SubscriptionStatus.ACTIVE.value))
                .values(status=SubscriptionStatus.DISABLED.value, status_reason=reason, updated_at=result.attempted_at)
            )
            conn.execute(
                deliveries.update()
                .where(
                    (deliveries.c.subscription_id == due.subscription_id)
                    & (deliveries.c.status == DeliveryStatus.PENDING.value)
                )
                .values(
                    status=DeliveryStatus.FAILED.value,
                    next_attempt_at=None,
                    last_error="not sent: the subscription was disabled (410 Gone)",
                    updated_at=result.attempted_at,
                )
            )
            if disabled.rowcount:
                self._audit(conn, "subscription.disabled", self._get(conn, due.subscription_id), actor, reason=reason)

    # -- internals ----------------------------------------------------------------------------------------------

    def _due(self, row: Any, now: datetime) -> DueDelivery:
        aad = subscription_secret_aad(row.subscription_id)
        keys = [row.secret_ciphertext]
        if row.previous_secret_ciphertext and row.previous_secret_expires_at and row.previous_secret_expires_at > now:
            keys.append(row.previous_secret_ciphertext)
        body = {"type": row.type, "timestamp": row.occurred_at.isoformat(), "data": row.data}
        return DueDelivery(
            delivery_id=row.id,
            subscription_id=row.subscription_id,
            url=row.url,
            event_id=row.event_id,
            body=body,
            attempts=row.attempts,
            secrets=tuple(SecretStr(self.store.keyring.decrypt(key, associated_data=aad)) for key in keys),
        )

    def _get(self, conn: sa.Connection, subscription_id: str, *, required: bool = True) -> Subscription:
        table = schema.webhook_subscriptions
        row = conn.execute(sa.select(table).where(table.c.id == subscription_id)).first()
        if row is None:
            if required:
                raise UnknownSubscription(f"no webhook subscription {subscription_id!r}")
            return None  # type: ignore[return-value]
        return _subscription(row)

    def _audit(self, conn: sa.Connection, action: str, subscription: Subscription, actor: str, **facts: Any) -> None:
        detail = {"subscription_id": subscription.id, "destination": origin_of(subscription.url), **facts}
        self.store.audit(conn, action, actor=actor, detail=detail)


def _subscription(row: Any) -> Subscription:
    return Subscription.model_validate(row._asdict())
