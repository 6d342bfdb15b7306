"""Outgoing webhooks below the gateway: the real outbox on SQLite and PostgreSQL, the real sender over HTTP to a
receiver on 127.0.0.1 that verifies with `standardwebhooks`, and a driven clock instead of a day of waiting."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from integrations_pipeline.crypto import Keyring, generate_key_entry
from integrations_pipeline.store import StateStore
from integrations_pipeline.store.events import DeliveryStatus, EventType, SubscriptionStatus, record_event
from integrations_pipeline.store.outbox import Delivery, Outbox
from integrations_pipeline.store.repository import utcnow
from integrations_pipeline.webhooks_out.destinations import DestinationRefused, check_destination
from integrations_pipeline.webhooks_out.policy import MAX_ATTEMPTS, next_attempt_at
from integrations_pipeline.webhooks_out.sender import deliver_due
from integrations_pipeline_tests.webhook_receiver import Receiver, running_receiver

LOOPBACK = [ipaddress.ip_network("127.0.0.1/32")]
ALL_TYPES = list(EventType)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as receiver:
        yield receiver


@pytest.fixture
def outbox(store: StateStore) -> Outbox:
    return Outbox(store)


def emit(store: StateStore, event_type: EventType = EventType.SYNCED, at: datetime | None = None) -> str:
    with store.write() as conn:
        event_id = record_event(conn, event_type, data={"connection_id": "hubspot-acme"}, at=at or utcnow())
    assert event_id is not None
    return event_id


def only_delivery(outbox: Outbox, subscription_id: str) -> Delivery:
    (delivery,) = outbox.deliveries(subscription_id)
    return delivery


def walk(outbox: Outbox, subscription_id: str, start: datetime, allowed: list = LOOPBACK) -> list[datetime]:  # type: ignore[type-arg]
    """Run the sender at each time the delivery asks for, until it is finished; the times it ran at."""
    moments, now = [], start
    while True:
        deliver_due(outbox, allowed, now=now)
        moments.append(now)
        delivery = only_delivery(outbox, subscription_id)
        if delivery.status != DeliveryStatus.PENDING:
            return moments
        assert delivery.next_attempt_at is not None and delivery.next_attempt_at > now
        assert len(moments) <= MAX_ATTEMPTS, "the sender kept going past its last attempt"
        # Nothing is sent before the delivery is due.
        deliver_due(outbox, allowed, now=delivery.next_attempt_at - timedelta(seconds=1))
        assert only_delivery(outbox, subscription_id).attempts == len(moments)
        now = delivery.next_attempt_at


def test_an_outage_is_survived_through_retries_and_every_attempt_is_recorded(
    outbox: Outbox, receiver: Receiver
) -> None:
    subscription, secret = outbox.create_subscription(
        url=receiver.hook_url, event_types=ALL_TYPES, description=None, actor="test"
    )
    event_id = emit(outbox.store)
    receiver.answer(503, (503, {"Retry-After": "7200"}), 500, 502, 504)
    start = utcnow()

    moments = walk(outbox, subscription.id, start)

    delivery = only_delivery(outbox, subscription.id)
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 6
    assert [a.status_code for a in delivery.history] == [503, 503, 500, 502, 504, 204]
    assert [a.attempted_at for a in delivery.history] == moments
    assert all(a.latency_ms >= 0 for a in delivery.history)
    assert delivery.history[0].error == "HTTP 503" and delivery.history[0].response_excerpt == "answer 503"
    assert delivery.history[-1].error is None
    # Retry-After: 7200 outweighs the scheduled 5 minutes after the second attempt.
    assert moments[2] - moments[1] >= timedelta(hours=2)
    # Every attempt is the same message, correctly signed, and it is the event.
    assert len(receiver.received) == 6
    assert {r.headers["webhook-id"] for r in receiver.received} == {event_id}
    assert all(r.verifies_with(secret) for r in receiver.received)
    assert receiver.received[-1].payload(secret)["type"] == "integration.synced"


def test_a_receiver_that_never_recovers_gets_eight_attempts_over_more_than_a_day(
    outbox: Outbox, receiver: Receiver
) -> None:
    subscription, _ = outbox.create_subscription(
        url=receiver.hook_url, event_types=ALL_TYPES, description=None, actor="test"
    )
    emit(outbox.store)
    receiver.answer(*[500] * 20)

    moments = walk(outbox, subscription.id, utcnow())

    delivery = only_delivery(outbox, subscription.id)
    assert delivery.status == DeliveryStatus.FAILED and delivery.attempts == MAX_ATTEMPTS >= 8
    assert len(delivery.history) == len(receiver.received) == MAX_ATTEMPTS
    assert moments[-1] - moments[0] >= timedelta(hours=24)
    deliver_due(outbox, LOOPBACK, now=moments[-1] + timedelta(days=7))
    assert len(receiver.received) == MAX_ATTEMPTS


def test_an_unreachable_receiver_is_recorded_as_an_attempt_without_status(outbox: Outbox) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    subscription, _ = outbox.create_subscription(
        url=f"http://127.0.0.1:{closed_port}/hook", event_types=ALL_TYPES, description=None, actor="test"
    )
    emit(outbox.store)
    deliver_due(outbox, LOOPBACK, now=utcnow())
    (attempt,) = only_delivery(outbox, subscription.id).history
    assert (
        attempt.status_code is None
        and attempt.error == "ConnectError: could not deliver to http://127.0.0.1:" + str(closed_port)
    )


def test_rotation_signs_with_both_secrets_until_the_overlap_ends(outbox: Outbox, receiver: Receiver) -> None:
    subscription, old_secret = outbox.create_subscription(
        url=receiver.hook_url, event_types=ALL_TYPES, description=None, actor="test"
    )
    _, new_secret = outbox.rotate_secret(subscription.id, actor="test", overlap=timedelta(hours=24))
    assert new_secret != old_secret and new_secret.startswith("whsec_")
    now = utcnow()
    emit(outbox.store, at=now)
    deliver_due(outbox, LOOPBACK, now=now)
    during = receiver.received[-1]
    assert len(during.signatures) == 2 and all(s.startswith("v1,") for s in during.signatures)
    assert during.verifies_with(old_secret) and during.verifies_with(new_secret)

    later = now + timedelta(hours=25)
    emit(outbox.store, at=later)
    deliver_due(outbox, LOOPBACK, now=later)
    after = receiver.received[-1]
    assert len(after.signatures) == 1
    assert after.verifies_with(new_secret) and not after.verifies_with(old_secret)


def test_410_gone_disables_the_subscription(outbox: Outbox, receiver: Receiver) -> None:
    subscription, secret = outbox.create_subscription(
        url=receiver.hook_url, event_types=ALL_TYPES, description=None, actor="test"
    )
    emit(outbox.store)
    receiver.answer(410)
    deliver_due(outbox, LOOPBACK, now=utcnow())
    emit(outbox.store)  # after the disabling: no delivery is made for it

    disabled = outbox.get_subscription(subscription.id)
    assert disabled is not None and disabled.status == SubscriptionStatus.DISABLED
    assert "410" in (disabled.status_reason or "")
    (delivery,) = outbox.deliveries(subscription.id)
    assert delivery.status == DeliveryStatus.FAILED and delivery.history[0].status_code == 410
    deliver_due(outbox, LOOPBACK, now=utcnow() + timedelta(days=2))
    assert len(receiver.received) == 1
    (entry,) = [e for e in outbox.store.audit_entries() if e.action == "subscription.disabled"]
    assert entry.detail["subscription_id"] == subscription.id and entry.actor == "webhook-deliveries"
    assert secret not in str([e.model_dump() for e in outbox.store.audit_entries()])


def test_redirects_are_not_followed(outbox: Outbox, receiver: Receiver) -> None:
    subscription, _ = outbox.create_subscription(
        url=receiver.hook_url, event_types=ALL_TYPES, description=None, actor="test"
    )
    emit(outbox.store)
    receiver.answer((307, {"location": f"{receiver.url}/elsewhere"}))
    deliver_due(outbox, LOOPBACK, now=utcnow())

    assert [r.path for r in receiver.received] == ["/hook"]
    delivery = only_delivery(outbox, subscription.id)
    assert delivery.status == DeliveryStatus.PENDING  # a failure, retried on schedule
    assert delivery.history[0].status_code == 307 and "not followed" in (delivery.history[0].error or "")


def test_the_destination_is_checked_again_at_delivery_time(outbox: Outbox, receiver: Receiver) -> None:
    """Allowed when subscribed, no longer allowed when sent (as after a DNS change): refused, recorded, unsent."""
    subscription, _ = outbox.create_subscription(
        url=receiver.hook_url, event_types=ALL_TYPES, description=None, actor="test"
    )
    emit(outbox.store)
    deliver_due(outbox, [], now=utcnow())
    assert receiver.received == []
    (attempt,) = only_delivery(outbox, subscription.id).history
    assert attempt.status_code is None and (attempt.error or "").startswith("destination refused: 127.0.0.1")


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://10.0.0.1/hook", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::1]:8080/hook", "loopback"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://localhost:8080/hook", "loopback"),
        ("http://0.0.0.0/hook", "unspecified"),
        ("http://[fd00:ec2::254]/", "cloud metadata"),
    ],
)
def test_the_guard_refuses_non_public_destinations(url: str, kind: str) -> None:
    with pytest.raises(DestinationRefused, match=kind):
        check_destination(url, [])


# Each bypass the probe found (IPv6 forms embedding a refused IPv4 address, and IPv6 special-purpose ranges), and
# one address of every other special-purpose range, with what the refusal must name.
BYPASSES = [
    ("[::7f00:1]", "IPv4-compatible form of 127.0.0.1, loopback"),
    ("[::127.0.0.1]", "IPv4-compatible form of 127.0.0.1, loopback"),
    ("[::a9fe:a9fe]", "IPv4-compatible form of 169.254.169.254, link-local"),
    ("[::ffff:0:7f00:1]", "IPv4-translated form of 127.0.0.1, loopback"),
    ("[::ffff:a9fe:a9fe]", "IPv4-mapped form of 169.254.169.254, link-local"),
    ("[64:ff9b::7f00:1]", "NAT64 form of 127.0.0.1, loopback"),
    ("[64:ff9b::a00:1]", "NAT64 form of 10.0.0.1, private"),
    ("[64:ff9b:1::1]", "local-use NAT64"),
    ("[2002:7f00:1::1]", "6to4 form of 127.0.0.1, loopback"),
    ("[2002:a9fe:a9fe::1]", "6to4 form of 169.254.169.254"),
    ("[2001:0:4136:e378:8000:63bf:80ff:fffe]", "Teredo form of 127.0.0.1, loopback"),
    ("[fec0::1]", "site-local"),
    ("[fd12:3456::1]", "unique-local"),
    ("[fe80::1]", "link-local"),
    ("[ff02::1]", "multicast"),
    ("[2001:db8::1]", "documentation"),
    ("[3fff::1]", "documentation"),
    ("[2001:2::1]", "benchmarking"),
    ("[100::1]", "discard-only"),
    ("[::]", "unspecified"),
    ("[4000::1]", "not IPv6 global unicast"),
    ("100.64.0.1", "shared"),
    ("192.0.0.9", "IETF protocol assignment"),
    ("192.0.2.1", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.7", "documentation"),
    ("192.88.99.1", "6to4 relay"),
    ("224.0.0.251", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "limited broadcast"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
]


@pytest.mark.parametrize(("host", "kind"), BYPASSES)
def test_the_guard_refuses_every_special_purpose_and_embedded_ipv4_form(host: str, kind: str) -> None:
    with pytest.raises(DestinationRefused) as refused:
        check_destination(f"http://{host}:8080/hook", [])
    assert kind in str(refused.value) and "allow-list" in str(refused.value)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_name_resolving_to_an_embedded_form_at_delivery_is_refused(outbox: Outbox, receiver: Receiver) -> None:
    """Subscribed while the name was public; at delivery it resolves to the IPv4-compatible form of loopback."""
    public = ipaddress.ip_address("93.184.215.14")
    subscription, _ = outbox.create_subscription(
        url="http://hooks.example.com/hook", event_types=ALL_TYPES, description=None, actor="test"
    )
    assert check_destination(subscription.url, [], resolver=lambda host, port: [public]).address == public
    emit(outbox.store)
    embedded = ipaddress.ip_address("::7f00:1")
    deliver_due(outbox, [], now=utcnow(), resolver=lambda host, port: [public, embedded])
    (attempt,) = only_delivery(outbox, subscription.id).history
    assert attempt.status_code is None
    assert attempt.error == (
        "destination refused: hooks.example.com resolves to ::7f00:1 (IPv4-compatible form of 127.0.0.1, "
        "loopback); webhooks go to public unicast addresses only (allow-list it with "
        "INTEGRATIONS_WEBHOOK_ALLOWED_NETWORKS if that is intended)"
    )


def test_the_guard_admits_public_and_allow_listed_addresses() -> None:
    assert str(check_destination("https://93.184.215.14/hook", []).address) == "93.184.215.14"
    assert str(check_destination("https://[2606:4700::1111]/hook", []).address) == "2606:4700::1111"
    assert check_destination("http://127.0.0.1:9/hook", LOOPBACK).port == 9
    # The IPv4-mapped form of an allow-listed IPv4 address is the same host: allowed; a tunnel or translator is not.
    assert check_destination("http://[::ffff:127.0.0.1]:9/hook", LOOPBACK).port == 9
    for tunnelled in ("[::7f00:1]", "[64:ff9b::7f00:1]", "[2002:7f00:1::1]"):
        with pytest.raises(DestinationRefused, match=r"127\.0\.0\.1, loopback"):
            check_destination(f"http://{tunnelled}:9/hook", LOOPBACK)
    assert check_destination("http://[fd00::5]:9/hook", [ipaddress.ip_network("fd00::/64")]).port == 9
    with pytest.raises(DestinationRefused, match="http"):
        check_destination("ftp://93.184.215.14/", [])


def test_the_schedule_spans_a_day_whatever_the_jitter() -> None:
    start = datetime(2026, 1, 1, tzinfo=utcnow().tzinfo)
    for rng in (lambda: 0.0, lambda: 0.999):
        now = start
        for attempts in range(1, MAX_ATTEMPTS):
            following = next_attempt_at(attempts, now, rng=rng)
            assert following is not None and following > now
            now = following
        assert next_attempt_at(MAX_ATTEMPTS, now, rng=rng) is None
        assert now - start >= timedelta(hours=24)
    assert next_attempt_at(1, start, retry_after_s=3600, rng=lambda: 0.0) == start + timedelta(hours=1)
    assert next_attempt_at(1, start, retry_after_s=10**9, rng=lambda: 0.0) == start + timedelta(days=1)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_key_rotation_reencrypts_subscription_secrets(store: StateStore, key_spec: str, receiver: Receiver) -> None:
    old_outbox = Outbox(store)
    subscription, old_secret = old_outbox.create_subscription(
        url=receiver.hook_url, event_types=ALL_TYPES, description=None, actor="test"
    )
    _, secret = old_outbox.rotate_secret(subscription.id, actor="test")
    old_key = store.keyring.primary_key_id
    rotated = StateStore(store.engine, Keyring.from_spec(f"{generate_key_entry('k2')},{key_spec}"))
    assert rotated.key_usage()[old_key] >= 2

    assert rotated.rotate_keys().moved >= 2
    assert rotated.key_usage() == {"k2": 2}
    with store.engine.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT secret_ciphertext, previous_secret_ciphertext FROM webhook_subscriptions")
        )
        assert all(value.startswith("v1.k2.") for value in stored.one())
    emit(rotated)
    deliver_due(Outbox(rotated), LOOPBACK, now=utcnow())
    assert receiver.received[-1].verifies_with(secret) and receiver.received[-1].verifies_with(old_secret)
