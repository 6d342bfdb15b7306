"""Webhook subscriptions through the real gateway: the secret is shown once, bad bodies and forbidden destinations
get a 4xx naming the field, history and replay work, and every change is audited without the secret."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa

from integrations_pipeline.gateway import create_app
from integrations_pipeline.httpserver import BackgroundServer
from integrations_pipeline.store.outbox import Outbox
from integrations_pipeline.webhooks_out.sender import deliver_due
from integrations_pipeline_tests.conftest import API_KEY, Stack
from integrations_pipeline_tests.webhook_receiver import Receiver, running_receiver

pytestmark = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
ALL_TYPES = [
    "integration.connected",
    "integration.disconnected",
    "integration.synced",
    "integration.error",
    "integration.needs_reauth",
]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as receiver:
        yield receiver


def everything_stored(stack: Stack) -> str:
    """Every row of every table of the state store, as text."""
    with stack.store.engine.connect() as conn:
        tables = sa.inspect(conn).get_table_names()
        return "\n".join(str(conn.execute(sa.text(f'SELECT * FROM "{t}"')).all()) for t in tables)


def test_subscription_lifecycle_shows_the_secret_once(
    stack: Stack, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with stack.api() as api:
        created = api.post("/subscriptions", json={"url": receiver.hook_url, "event_types": ALL_TYPES})
        assert created.status_code == 201, created.text
        subscription = created.json()
        secret = subscription["secret"]
        assert secret.startswith("whsec_") and subscription["status"] == "active"
        subscription_id = subscription["id"]

        one = api.get(f"/subscriptions/{subscription_id}")
        listed = api.get("/subscriptions")
        assert one.status_code == listed.status_code == 200
        assert one.json()["url"] == receiver.hook_url and "secret" not in one.json()
        assert [s["id"] for s in listed.json()["subscriptions"]] == [subscription_id]

        rotated = api.post(f"/subscriptions/{subscription_id}/rotate")
        assert rotated.status_code == 200, rotated.text
        new_secret = rotated.json()["secret"]
        assert new_secret != secret and rotated.json()["previous_secret_expires_at"] is not None
        custom = api.post(f"/subscriptions/{subscription_id}/rotate", json={"overlap_hours": 0})
        assert custom.status_code == 200 and custom.json()["previous_secret_expires_at"] is None
        newest_secret = custom.json()["secret"]

        stack.connect("acme")
        deliver_due(Outbox(stack.store), stack.settings.webhook_allowed_networks)
        (connected,) = receiver.of_type("integration.connected", newest_secret)
        assert connected["data"]["connection_id"] == "hubspot-acme"

        deliveries = api.get(f"/subscriptions/{subscription_id}/deliveries")
        assert deliveries.status_code == 200
        (delivery,) = deliveries.json()["deliveries"]
        assert delivery["status"] == "delivered" and delivery["event_type"] == "integration.connected"
        (attempt,) = delivery["history"]
        assert attempt["status_code"] == 204 and attempt["latency_ms"] >= 0 and attempt["error"] is None

        deleted = api.delete(f"/subscriptions/{subscription_id}")
        assert deleted.status_code == 200
        assert api.get(f"/subscriptions/{subscription_id}").status_code == 404
        assert api.get(f"/subscriptions/{subscription_id}/deliveries").status_code == 404

    actions = [e.action for e in stack.store.audit_entries() if e.action.startswith("subscription.")]
    assert actions == [
        "subscription.created",
        "subscription.secret_rotated",
        "subscription.secret_rotated",
        "subscription.deleted",
    ]
    created_entry = next(e for e in stack.store.audit_entries() if e.action == "subscription.created")
    assert created_entry.detail["destination"] == receiver.url  # the origin, not the path
    for shown in (secret, new_secret, newest_secret):
        assert shown not in caplog.text
        assert shown not in str([e.model_dump() for e in stack.store.audit_entries()])
        assert shown not in everything_stored(stack)  # encrypted at rest, nowhere in clear


def test_replay_sends_the_same_event_again_as_a_new_delivery(stack: Stack, receiver: Receiver) -> None:
    with stack.api() as api:
        created = api.post("/subscriptions", json={"url": receiver.hook_url, "event_types": ["integration.connected"]})
        subscription_id, secret = created.json()["id"], created.json()["secret"]
        stack.connect("acme")
        assert api.get(f"/subscriptions/{subscription_id}/deliveries").json()["deliveries"][0]["status"] == "pending"
        (pending,) = api.get(f"/subscriptions/{subscription_id}/deliveries").json()["deliveries"]
        early = api.post(f"/subscriptions/{subscription_id}/deliveries/{pending['id']}/replay")
        assert early.status_code == 409 and early.json()["error"] == "cannot_replay"

        deliver_due(Outbox(stack.store), stack.settings.webhook_allowed_networks)
        replay = api.post(f"/subscriptions/{subscription_id}/deliveries/{pending['id']}/replay")
        assert replay.status_code == 202, replay.text
        assert replay.json()["replay_of"] == pending["id"] and replay.json()["status"] == "pending"
        deliver_due(Outbox(stack.store), stack.settings.webhook_allowed_networks)

        history = api.get(f"/subscriptions/{subscription_id}/deliveries").json()["deliveries"]
        assert sorted(d["status"] for d in history) == ["delivered", "delivered"]
        unknown = api.post(f"/subscriptions/{subscription_id}/deliveries/dlv_nope/replay")
        assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_delivery"
    assert len(receiver.received) == 2
    assert receiver.received[0].headers["webhook-id"] == receiver.received[1].headers["webhook-id"]
    assert all(r.verifies_with(secret) for r in receiver.received)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"event_types": ["integration.synced"]}, "url"),
        ({"url": "not a url", "event_types": ["integration.synced"]}, "url"),
        ({"url": "http://user:pw@127.0.0.1/hook", "event_types": ["integration.synced"]}, "url"),
        ({"url": "http://127.0.0.1/hook"}, "event_types"),
        ({"url": "http://127.0.0.1/hook", "event_types": []}, "event_types"),
        ({"url": "http://127.0.0.1/hook", "event_types": ["integration.bogus"]}, "event_types.0"),
        ({"url": "http://127.0.0.1/hook", "event_types": ["integration.synced"], "secret": "mine"}, "secret"),
    ],
)
def test_bad_bodies_get_422_naming_the_field(stack: Stack, body: dict[str, object], field: str) -> None:
    with stack.api() as api:
        response = api.post("/subscriptions", json=body)
    assert response.status_code == 422, response.text
    assert field in response.json()["fields"] and field in response.json()["message"]


def test_other_bad_requests_get_clear_4xx(stack: Stack) -> None:
    with stack.api() as api:
        assert api.post("/subscriptions", content=b"{not json").status_code == 422
        assert api.get("/subscriptions/sub_nope").json()["error"] == "unknown_subscription"
        assert api.post("/subscriptions/sub_nope/rotate").status_code == 404
        assert api.delete("/subscriptions/sub_nope").status_code == 404
        created = api.post("/subscriptions", json={"url": "http://127.0.0.1:9/h", "event_types": ["integration.error"]})
        subscription_id = created.json()["id"]
        for limit in ("abc", "0", "501", "\N{SUPERSCRIPT TWO}"):  # "²".isdigit(), but not a number
            refused = api.get(f"/subscriptions/{subscription_id}/deliveries", params={"limit": limit})
            assert refused.status_code == 400 and list(refused.json()["fields"]) == ["limit"]
        too_long = api.post(f"/subscriptions/{subscription_id}/rotate", json={"overlap_hours": 10_000})
        assert too_long.status_code == 422 and "overlap_hours" in too_long.json()["fields"]
    assert httpx.get(f"{stack.gateway_url}/subscriptions").status_code == 401
    paths = httpx.get(f"{stack.gateway_url}/openapi.json").json()["paths"]
    assert "/subscriptions/{subscription_id}/deliveries/{delivery_id}/replay" in paths


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/hook",
        # Embedded forms of loopback, although the stack allow-lists 127.0.0.1 (only its mapped form is that host).
        "http://[::7f00:1]:8080/hook",
        "http://[::127.0.0.1]:8080/hook",
        "http://[::ffff:0:7f00:1]:8080/hook",
        "http://[64:ff9b::7f00:1]:8080/hook",
        "http://[2002:7f00:1::1]:8080/hook",
        "http://[::a9fe:a9fe]/latest/meta-data/",
        "http://[fec0::1]/hook",
    ],
)
def test_forbidden_destinations_are_refused(stack: Stack, url: str) -> None:
    with stack.api() as api:
        response = api.post("/subscriptions", json={"url": url, "event_types": ["integration.synced"]})
        assert api.get("/subscriptions").json()["subscriptions"] == []
    assert response.status_code == 422 and response.json()["error"] == "destination_refused"
    assert "url" in response.json()["fields"]


def test_a_name_resolving_to_loopback_is_refused_unless_allow_listed(stack: Stack, receiver: Receiver) -> None:
    strict = stack.settings.model_copy(update={"webhook_allowed_networks": []})
    name_url = receiver.hook_url.replace("127.0.0.1", "localhost")
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with BackgroundServer(create_app(strict, stack.store)) as gateway:
        by_name, by_address = (
            httpx.post(
                f"{gateway.url}/subscriptions",
                json={"url": url, "event_types": ["integration.synced"]},
                headers=headers,
            )
            for url in (name_url, receiver.hook_url)
        )
    assert by_name.status_code == by_address.status_code == 422
    assert by_name.json()["fields"]["url"].startswith("localhost resolves to ")
    assert "loopback" in by_name.json()["fields"]["url"] and "loopback" in by_address.json()["fields"]["url"]
