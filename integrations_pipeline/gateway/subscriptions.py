"""Webhook subscriptions through the gateway: create (the `whsec_` secret is in that answer and no other), list,
read, delete, rotate the secret, read the delivery history and replay a delivery."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator

from integrations_pipeline.gateway.connections import GatewayError
from integrations_pipeline.gateway.parsing import NO_NUL
from integrations_pipeline.settings import Settings
from integrations_pipeline.store import StateStore, StoreError
from integrations_pipeline.store.events import EventType
from integrations_pipeline.store.outbox import Delivery, Outbox, Subscription, UnknownSubscription
from integrations_pipeline.webhooks_out.destinations import DestinationRefused, check_destination

ACTOR = "gateway"
MAX_OVERLAP_HOURS = 24 * 7


class SubscriptionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl = Field(description="where events are POSTed: http(s), a public address unless allow-listed")
    event_types: list[EventType] = Field(min_length=1, description="which events to receive")
    description: str | None = Field(default=None, max_length=500, pattern=NO_NUL)  # stored as text

    @field_validator("url")
    @classmethod
    def _no_credentials_in_authority(cls, url: AnyHttpUrl) -> AnyHttpUrl:
        if url.username or url.password:
            raise ValueError("the URL must not carry a user name or password")
        if len(str(url)) > 2048:
            raise ValueError("the URL must be at most 2048 characters")
        return url


class RotateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overlap_hours: float = Field(
        default=24,
        ge=0,
        le=MAX_OVERLAP_HOURS,
        allow_inf_nan=False,
        description="how long the replaced secret keeps signing too, in hours",
    )


class SubscriptionView(BaseModel):
    id: str
    url: str
    event_types: list[str]
    description: str | None
    status: str
    status_reason: str | None
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, subscription: Subscription) -> SubscriptionView:
        return cls.model_validate(subscription.model_dump(mode="json"))


class SubscriptionCreated(SubscriptionView):
    secret: str = Field(description="the `whsec_` signing secret: shown in this answer only, store it now")


class SubscriptionList(BaseModel):
    subscriptions: list[SubscriptionView]


class DeliveryList(BaseModel):
    deliveries: list[Delivery]


class SubscriptionService:
    def __init__(self, settings: Settings, store: StateStore) -> None:
        self.settings = settings
        self.outbox = Outbox(store)

    def create(self, request: SubscriptionRequest) -> SubscriptionCreated:
        url = str(request.url)
        try:
            check_destination(url, self.settings.webhook_allowed_networks)
        except DestinationRefused as refused:
            raise GatewayError(422, "destination_refused", f"url refused: {refused}", {"url": str(refused)}) from None
        subscription, secret = self.outbox.create_subscription(
            url=url, event_types=request.event_types, description=request.description, actor=ACTOR
        )
        return SubscriptionCreated(**SubscriptionView.of(subscription).model_dump(), secret=secret)

    def list_all(self) -> SubscriptionList:
        return SubscriptionList(subscriptions=[SubscriptionView.of(s) for s in self.outbox.list_subscriptions()])

    def get(self, subscription_id: str) -> SubscriptionView:
        subscription = self.outbox.get_subscription(subscription_id)
        if subscription is None:
            raise _unknown(subscription_id)
        return SubscriptionView.of(subscription)

    def delete(self, subscription_id: str) -> SubscriptionView:
        try:
            return SubscriptionView.of(self.outbox.delete_subscription(subscription_id, actor=ACTOR))
        except UnknownSubscription:
            raise _unknown(subscription_id) from None

    def rotate(self, subscription_id: str, request: RotateRequest) -> SubscriptionCreated:
        try:
            subscription, secret = self.outbox.rotate_secret(
                subscription_id, actor=ACTOR, overlap=timedelta(hours=request.overlap_hours)
            )
        except UnknownSubscription:
            raise _unknown(subscription_id) from None
        return SubscriptionCreated(**SubscriptionView.of(subscription).model_dump(), secret=secret)

    def deliveries(self, subscription_id: str, limit: int) -> DeliveryList:
        self.get(subscription_id)
        return DeliveryList(deliveries=self.outbox.deliveries(subscription_id, limit=limit))

    def replay(self, subscription_id: str, delivery_id: str) -> Delivery:
        try:
            return self.outbox.replay(subscription_id, delivery_id, actor=ACTOR)
        except UnknownSubscription as unknown:
            raise GatewayError(404, "unknown_delivery", str(unknown)) from None
        except StoreError as conflict:
            raise GatewayError(409, "cannot_replay", str(conflict)) from None


def _unknown(subscription_id: str) -> GatewayError:
    return GatewayError(404, "unknown_subscription", f"no webhook subscription {subscription_id!r}")
