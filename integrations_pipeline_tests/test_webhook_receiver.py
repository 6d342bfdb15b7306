"""The webhook receiver over real HTTP on 127.0.0.1: every provider's scheme and Standard Webhooks, accepted when
genuine, refused with a 4xx (never a 5xx, never stored) when forged, tampered, stale, future, malformed or too big;
503 with Retry-After when the database is down."""

from __future__ import annotations

import json
import random
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from integrations_pipeline.gateway import create_app
from integrations_pipeline.httpserver import BackgroundServer
from integrations_pipeline.settings import load_settings
from integrations_pipeline.store import StateStore, create_store_engine
from integrations_pipeline.store import migrate as migrations
from integrations_pipeline.store.inbox import InboxEvent, WebhookInbox
from integrations_pipeline.store.push import PushStatus, PushSubscriptions
from integrations_pipeline_tests import webhook_senders as senders
from integrations_pipeline_tests.webhook_senders import (
    HUBSPOT_SECRET,
    Secrets,
    SignedRequest,
    prepare,
    receiver_settings,
    running_receiver,
)

LIMIT = 64 * 1024
SQLITE_ONLY = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)


@dataclass
class Receiver:
    url: str
    store: StateStore
    secrets: Secrets
    connections: dict[str, str]
    http: httpx.Client

    def send(self, request: SignedRequest) -> httpx.Response:
        return self.http.post(request.target, content=request.body, headers=request.headers)

    def inbox(self) -> list[InboxEvent]:
        return WebhookInbox(self.store).pending(limit=10_000)

    def all_secrets(self) -> list[str]:
        s = self.secrets
        return [s.hubspot_client_secret, s.graph_client_state, s.google_token, s.zoho_token, s.salesforce_token]


@pytest.fixture
def receiver(store_url: str, key_spec: str) -> Iterator[Receiver]:
    with (
        running_receiver(store_url, key_spec, max_body_bytes=LIMIT) as running,
        httpx.Client(base_url=running.url, timeout=10) as http,
    ):
        yield Receiver(running.url, running.store, running.secrets, running.connections, http)


# -- accepted ---------------------------------------------------------------------------------------------------------

EXPECTED = {  # scheme -> (source, status, entity, kind, partition_key, source_ids of event n=7)
    "hubspot": ("hubspot", 200, "contacts", "change", None, ["9007"]),
    "microsoft": ("microsoft", 202, "contacts", "change", None, ["contact-7"]),
    "google": ("google", 200, "events", "change", None, []),
    "zoho": ("zoho", 200, "contacts", "change", None, ["5500000000007"]),
    "salesforce": ("salesforce", 200, "events", "change", "2025-03-05", ["00U000000000007AAA"]),
    "standard": ("standard:billing", 200, "events", "change", "2025-03-05", ["evt-7"]),
}


@pytest.mark.parametrize("scheme", list(EXPECTED))
def test_a_genuine_notification_is_committed_then_acknowledged_and_stored_once(receiver: Receiver, scheme: str) -> None:
    source, status, entity, kind, partition_key, source_ids = EXPECTED[scheme]
    request = senders.SENDERS[scheme](receiver.secrets, 7)
    first = receiver.send(request)
    assert first.status_code == status, first.text
    (event,) = receiver.inbox()  # committed before the answer came back
    connection = receiver.connections["google" if scheme == "standard" else scheme]
    assert (event.source, event.connection_id, event.entity, event.kind) == (source, connection, entity, kind)
    assert (event.partition_key, event.payload["source_ids"]) == (partition_key, source_ids)
    stored = json.dumps(event.payload)
    assert not any(secret in stored for secret in receiver.all_secrets())
    assert "SESSIONSECRET" not in stored and "clientState" not in stored and "token" not in event.payload

    again = receiver.send(request)  # the sender lost our answer and retries: acknowledged, not stored twice
    assert again.status_code == status
    assert [e.event_id for e in receiver.inbox()] == [event.event_id]
    if scheme == "salesforce":
        assert first.headers["content-type"].startswith("text/xml") and b"<Ack>true</Ack>" in first.content
    else:
        assert again.json()["stored"] == 0


@SQLITE_ONLY
def test_graph_validation_token_is_echoed_as_plain_text(receiver: Receiver) -> None:
    token = "Validation: Testing client application reachability for subscription Request-Id: 1f0e"
    response = receiver.http.post("/webhooks/microsoft", params={"validationToken": token}, content=b"")
    assert (response.status_code, response.text) == (200, token)
    assert response.headers["content-type"].startswith("text/plain")
    assert receiver.inbox() == []


@SQLITE_ONLY
def test_graph_lifecycle_notifications_are_stored_by_kind(receiver: Receiver) -> None:
    for n, lifecycle in enumerate(("reauthorizationRequired", "subscriptionRemoved", "missed")):
        request = replace(senders.graph(receiver.secrets, n, lifecycle=lifecycle), path="/webhooks/microsoft/lifecycle")
        assert receiver.send(request).status_code == 202
    forged = senders.graph(receiver.secrets, 9, lifecycle="missed", client_state="guessed")
    assert receiver.send(replace(forged, path="/webhooks/microsoft/lifecycle")).status_code == 401
    handshake = receiver.http.post("/webhooks/microsoft/lifecycle", params={"validationToken": "check"})
    assert (handshake.status_code, handshake.text) == (200, "check")
    kinds = [(e.kind, e.payload["lifecycleEvent"], e.payload["source_ids"]) for e in receiver.inbox()]
    assert kinds == [
        ("lifecycle", "reauthorizationRequired", []),
        ("lifecycle", "subscriptionRemoved", []),
        ("missed", "missed", []),
    ]


@SQLITE_ONLY
def test_a_graph_batch_keeps_the_verified_notifications_only(receiver: Receiver) -> None:
    good = json.loads(senders.graph(receiver.secrets, 1).body)["value"][0]
    forged = json.loads(senders.graph(receiver.secrets, 2, client_state="guessed").body)["value"][0]
    response = receiver.http.post("/webhooks/microsoft", json={"value": [good, forged]})
    assert response.status_code == 202 and response.json()["stored"] == 1
    assert [e.payload["source_ids"] for e in receiver.inbox()] == [["contact-1"]]


@SQLITE_ONLY
def test_google_sync_handshake_is_acknowledged_and_not_stored(receiver: Receiver) -> None:
    response = receiver.send(senders.google(receiver.secrets, 1, state="sync"))
    assert response.status_code == 200 and response.json() == {"received": 1, "stored": 0, "ignored": 1}
    assert receiver.inbox() == []
    assert receiver.send(senders.google(receiver.secrets, 2, state="not_exists")).status_code == 200
    assert [e.event_id for e in receiver.inbox()] == [f"{senders.GOOGLE_CHANNEL}:2"]


@SQLITE_ONLY
def test_standard_webhooks_accepts_every_secret_of_a_rotation_and_several_signatures(receiver: Receiver) -> None:
    old, new = senders.STANDARD_SECRETS[1], senders.STANDARD_SECRETS[0]
    assert receiver.send(senders.standard(receiver.secrets, 1, secret=old)).status_code == 200
    assert receiver.send(senders.standard(receiver.secrets, 2, secret=new)).status_code == 200
    signed_by_unknown = senders.standard(receiver.secrets, 3, secret="whsec_" + "QUJD" * 8)
    both = senders.standard(receiver.secrets, 3, secret=old)
    header = f"{signed_by_unknown.headers['webhook-signature']} v1a,c2lnbmF0dXJl {both.headers['webhook-signature']}"
    assert receiver.send(both.with_headers(webhook_signature=header)).status_code == 200
    assert [e.event_id for e in receiver.inbox()] == ["msg_00000001", "msg_00000002", "msg_00000003"]


@SQLITE_ONLY
def test_standard_events_must_name_an_entity_of_the_sources_connection(receiver: Receiver) -> None:
    bad_type = receiver.send(senders.standard(receiver.secrets, 1, event_type="invoice.paid"))
    assert bad_type.status_code == 422 and bad_type.json()["error"] == "unknown_entity"
    contacts_with_day = senders.standard(receiver.secrets, 2, event_type="contacts.updated", data={"day": "2025-03-05"})
    assert receiver.send(contacts_with_day).status_code == 422
    bad_day = receiver.send(senders.standard(receiver.secrets, 3, data={"day": "2025-02-30"}))
    assert bad_day.status_code == 422 and "data.day" in bad_day.json()["fields"]
    ok = receiver.send(senders.standard(receiver.secrets, 4, event_type="contact.created", data={"ids": ["a", 7]}))
    assert ok.status_code == 200
    (event,) = receiver.inbox()
    assert (event.entity, event.partition_key, event.payload["source_ids"]) == ("contacts", None, ["a", "7"])


@SQLITE_ONLY
def test_hubspot_events_of_unconnected_portals_or_unsynced_objects_are_acknowledged_not_stored(
    receiver: Receiver,
) -> None:
    request = senders.hubspot(receiver.secrets, 1)
    events = json.loads(request.body)
    events.append(events[0] | {"eventId": 1, "portalId": 999})
    events.append(events[0] | {"eventId": 2, "subscriptionType": "deal.creation"})
    body = json.dumps(events).encode()
    stamp = request.headers["x-hubspot-request-timestamp"]
    signature = senders.sign_v3(HUBSPOT_SECRET, "POST", receiver.url + request.path, body, stamp)
    response = receiver.send(replace(request, body=body).with_headers(x_hubspot_signature_v3=signature))
    assert response.json() == {"received": 3, "stored": 1, "ignored": 2}


# -- refused ----------------------------------------------------------------------------------------------------------

Attack = Callable[[Receiver], SignedRequest]
NOW_MS = lambda: int(time.time() * 1000)  # noqa: E731


def _hubspot_resigned(rx: Receiver, *, body: bytes | None = None, stamp: str | None = None) -> SignedRequest:
    """A genuine request whose body or timestamp was changed after signing."""
    request = senders.hubspot(rx.secrets, 1)
    return replace(request, body=body if body is not None else request.body).with_headers(
        x_hubspot_request_timestamp=stamp or request.headers["x-hubspot-request-timestamp"]
    )


def _standard_changed(rx: Receiver, **headers: str | None) -> SignedRequest:
    return senders.standard(rx.secrets, 1).with_headers(**headers)


ATTACKS: dict[str, dict[str, tuple[Attack, int]]] = {
    "hubspot": {
        "forged": (lambda rx: senders.hubspot(rx.secrets, 1, client_secret="not-the-app-secret"), 401),
        "tampered body": (lambda rx: _hubspot_resigned(rx, body=senders.hubspot(rx.secrets, 2).body), 401),
        "tampered timestamp": (lambda rx: _hubspot_resigned(rx, stamp=str(NOW_MS() - 1000)), 401),
        "stale": (lambda rx: senders.hubspot(rx.secrets, 1, timestamp_ms=NOW_MS() - 301_000), 401),
        "future": (lambda rx: senders.hubspot(rx.secrets, 1, timestamp_ms=NOW_MS() + 301_000), 401),
        "no signature": (lambda rx: senders.hubspot(rx.secrets, 1).with_headers(x_hubspot_signature_v3=None), 401),
        "bad base64": (lambda rx: senders.hubspot(rx.secrets, 1).with_headers(x_hubspot_signature_v3="%%%"), 400),
        "bad timestamp": (
            lambda rx: senders.hubspot(rx.secrets, 1).with_headers(x_hubspot_request_timestamp="yesterday"),
            400,
        ),
        "other path": (lambda rx: replace(senders.hubspot(rx.secrets, 1), query={"x": "1"}), 401),
    },
    "microsoft": {
        "forged": (lambda rx: senders.graph(rx.secrets, 1, client_state="guessed-client-state"), 401),
        "no clientState": (
            lambda rx: replace(
                senders.graph(rx.secrets, 1),
                body=senders.graph(rx.secrets, 1).body.replace(rx.secrets.graph_client_state.encode(), b""),
            ),
            401,
        ),
        "tampered id": (
            lambda rx: replace(
                senders.graph(rx.secrets, 1),
                body=senders.graph(rx.secrets, 1).body.replace(senders.GRAPH_SUBSCRIPTION.encode(), b"other-sub"),
            ),
            401,
        ),
        "malformed body": (lambda rx: replace(senders.graph(rx.secrets, 1), body=b'{"value": [{"subscri'), 400),
        "wrong shape": (lambda rx: replace(senders.graph(rx.secrets, 1), body=b'{"value": "x"}'), 422),
        "empty batch": (lambda rx: replace(senders.graph(rx.secrets, 1), body=b'{"value": []}'), 422),
        "bad validation token": (
            lambda rx: replace(senders.graph(rx.secrets, 1), query={"validationToken": "a\x00b"}),
            400,
        ),
    },
    "google": {
        "forged": (lambda rx: senders.google(rx.secrets, 1, token="guessed-token"), 401),
        "tampered id": (
            lambda rx: senders.google(rx.secrets, 1).with_headers(x_goog_channel_id="channel-0002"),
            401,
        ),
        "no token": (lambda rx: senders.google(rx.secrets, 1).with_headers(x_goog_channel_token=None), 401),
        "bad message number": (
            lambda rx: senders.google(rx.secrets, 1).with_headers(x_goog_message_number="-1"),
            400,
        ),
        "bad state": (lambda rx: senders.google(rx.secrets, 1, state="EXISTS;drop"), 400),
    },
    "zoho": {
        "forged": (lambda rx: senders.zoho(rx.secrets, 1, token="guessed-token"), 401),
        "tampered id": (lambda rx: senders.zoho(rx.secrets, 1, channel_id="1000000068002"), 401),
        "no token": (
            lambda rx: replace(
                senders.zoho(rx.secrets, 1),
                body=json.dumps({"channel_id": senders.ZOHO_CHANNEL, "ids": ["1"]}).encode(),
            ),
            401,
        ),
        "malformed body": (lambda rx: replace(senders.zoho(rx.secrets, 1), body=b"\xff\xfe{"), 400),
        "wrong shape": (lambda rx: replace(senders.zoho(rx.secrets, 1), body=b"[1, 2]"), 422),
    },
    "salesforce": {
        "forged": (lambda rx: senders.salesforce(rx.secrets, 1, token="guessed-token"), 401),
        "no token": (
            lambda rx: replace(senders.salesforce(rx.secrets, 1), query={"subscription": "sf-outbound-1"}),
            401,
        ),
        "other org": (lambda rx: senders.salesforce(rx.secrets, 1, organization_id="00D000000000001AAA"), 401),
        "malformed body": (lambda rx: replace(senders.salesforce(rx.secrets, 1), body=b"<soapenv:Envelope"), 400),
        "not soap": (lambda rx: replace(senders.salesforce(rx.secrets, 1), body=b"<a><b/></a>"), 400),
        "entity expansion": (
            lambda rx: replace(
                senders.salesforce(rx.secrets, 1),
                body=b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
                b"<x>&b;</x>",
            ),
            400,
        ),
        "external entity": (
            lambda rx: replace(
                senders.salesforce(rx.secrets, 1),
                body=b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>',
            ),
            400,
        ),
    },
    "standard": {
        "forged": (lambda rx: senders.standard(rx.secrets, 1, secret="whsec_" + "Zm9yZ2Vk" * 4), 401),
        "tampered body": (
            lambda rx: replace(senders.standard(rx.secrets, 1), body=senders.standard(rx.secrets, 2).body),
            401,
        ),
        "tampered id": (lambda rx: _standard_changed(rx, webhook_id="msg_99999999"), 401),
        "tampered timestamp": (lambda rx: _standard_changed(rx, webhook_timestamp=str(int(time.time()) - 5)), 401),
        "stale": (
            lambda rx: senders.standard(rx.secrets, 1, timestamp=datetime.now(UTC) - timedelta(seconds=301)),
            401,
        ),
        "future": (
            lambda rx: senders.standard(rx.secrets, 1, timestamp=datetime.now(UTC) + timedelta(seconds=301)),
            401,
        ),
        "no signature": (lambda rx: _standard_changed(rx, webhook_signature=None), 401),
        "no id": (lambda rx: _standard_changed(rx, webhook_id=None), 400),
        "bad signature entry": (lambda rx: _standard_changed(rx, webhook_signature="v1"), 400),
        "bad base64": (lambda rx: _standard_changed(rx, webhook_signature="v1,***"), 400),
        "bad timestamp": (lambda rx: _standard_changed(rx, webhook_timestamp="1e9"), 400),
        "unknown source": (lambda rx: replace(senders.standard(rx.secrets, 1), path="/webhooks/standard/other"), 404),
        "not json": (lambda rx: _resigned_standard(rx, b"not json"), 400),
        "not an object": (lambda rx: _resigned_standard(rx, b"[1]"), 422),
        "no type": (lambda rx: _resigned_standard(rx, b'{"data": {}}'), 422),
    },
}


def _resigned_standard(rx: Receiver, body: bytes) -> SignedRequest:
    """A genuinely signed request with a malformed body: refused after verification, for its content."""
    from standardwebhooks import Webhook

    request = senders.standard(rx.secrets, 1)
    moment = datetime.now(UTC)
    signature = Webhook(senders.STANDARD_SECRETS[0]).sign("msg_00000001", moment, body.decode())
    return replace(request, body=body).with_headers(
        webhook_timestamp=str(int(moment.timestamp())), webhook_signature=signature
    )


CASES = [(scheme, name) for scheme, attacks in ATTACKS.items() for name in attacks]


@SQLITE_ONLY
@pytest.mark.parametrize(("scheme", "attack"), CASES, ids=[f"{s}-{a}" for s, a in CASES])
def test_refused_with_a_4xx_naming_the_problem_and_nothing_stored(receiver: Receiver, scheme: str, attack: str) -> None:
    build, status = ATTACKS[scheme][attack]
    response = receiver.send(build(receiver))
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] and body["message"]
    assert not any(secret in response.text for secret in receiver.all_secrets())
    assert receiver.inbox() == []


@SQLITE_ONLY
def test_a_removed_subscription_no_longer_verifies(receiver: Receiver) -> None:
    push = PushSubscriptions(receiver.store)
    (channel,) = push.list(provider="google")
    push.set_status(channel.id, PushStatus.REMOVED, "stopped")
    assert receiver.send(senders.google(receiver.secrets, 1)).status_code == 401


def _tamper(rng: random.Random, request: SignedRequest, authenticated: list[str]) -> SignedRequest:
    """One random change to an authenticated part of a genuine request."""
    part = rng.choice(authenticated)
    if part == "body":
        body = bytearray(request.body)
        position = rng.randrange(len(body))
        body[position] = (body[position] + rng.randrange(1, 256)) % 256
        return replace(request, body=bytes(body))
    if part.startswith("query:"):
        name = part.removeprefix("query:")
        return replace(request, query=request.query | {name: _mutated(rng, request.query[name])})
    return request.with_headers(**{part.replace("-", "_"): _mutated(rng, request.headers[part])})


def _mutated(rng: random.Random, value: str) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/=,_-."
    characters = list(value)
    if characters and rng.random() < 0.8:
        position = rng.randrange(len(characters))
        characters[position] = rng.choice([c for c in alphabet if c != characters[position]])
    else:
        characters.insert(rng.randrange(len(characters) + 1), rng.choice(alphabet))
    return "".join(characters)


AUTHENTICATED = {  # the parts each scheme authenticates (Google and Zoho sign nothing else; Graph's body is
    # authenticated per notification by its clientState only, so the tampering targets the secret and the id)
    "hubspot": ["body", "x-hubspot-signature-v3", "x-hubspot-request-timestamp"],
    "google": ["x-goog-channel-id", "x-goog-channel-token"],
    "salesforce": ["query:token", "query:subscription"],
    "standard": ["body", "webhook-id", "webhook-timestamp", "webhook-signature"],
}
TAMPERINGS_PER_SCHEME = 300


@SQLITE_ONLY
def test_forged_or_tampered_accepted_0_of_n(receiver: Receiver) -> None:
    rng = random.Random(20250304)
    attempts = accepted = 0
    outcomes: set[int] = set()
    for scheme, parts in AUTHENTICATED.items():
        for n in range(TAMPERINGS_PER_SCHEME):
            request = _tamper(rng, senders.SENDERS[scheme](receiver.secrets, n), parts)
            status = receiver.send(request).status_code
            attempts += 1
            outcomes.add(status)
            accepted += status < 300
            assert status < 500
    for scheme in ("microsoft", "zoho"):
        for n in range(TAMPERINGS_PER_SCHEME):
            real = receiver.secrets
            forged = (
                replace(real, graph_client_state=_mutated(rng, real.graph_client_state))
                if scheme == "microsoft"
                else replace(real, zoho_token=_mutated(rng, real.zoho_token))
            )
            status = receiver.send(senders.SENDERS[scheme](forged, n)).status_code
            attempts += 1
            outcomes.add(status)
            accepted += status < 300
    print(f"forged or tampered accepted {accepted} of {attempts}; statuses {sorted(outcomes)}")
    assert accepted == 0 and attempts == 6 * TAMPERINGS_PER_SCHEME
    assert receiver.inbox() == []


# -- limits and outages -----------------------------------------------------------------------------------------------


def _raw_exchange(url: str, head: bytes, body_part: bytes) -> bytes:
    """Send headers and part of a body, then read the answer without sending the rest."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(head + body_part)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


@SQLITE_ONLY
def test_a_declared_oversized_body_gets_413_before_it_is_sent(receiver: Receiver) -> None:
    head = (
        b"POST /webhooks/standard/billing HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 104857600\r\n\r\n"
    )
    answer = _raw_exchange(receiver.url, head, b"{" * 1000)  # 1,000 bytes of a declared 100 MiB
    assert answer.startswith(b"HTTP/1.1 413 ")


@SQLITE_ONLY
def test_an_undeclared_oversized_body_gets_413_once_the_limit_is_passed(receiver: Receiver) -> None:
    head = b"POST /webhooks/hubspot HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"a" * 8192
    chunks = (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * (LIMIT // len(chunk) + 2)  # just past the limit, unfinished
    answer = _raw_exchange(receiver.url, head, chunks)
    assert answer.startswith(b"HTTP/1.1 413 ")
    response = receiver.http.post("/webhooks/zoho", content=b"x" * (LIMIT + 1))
    assert response.status_code == 413 and response.json()["error"] == "body_too_large"
    bad_length = _raw_exchange(
        receiver.url, b"POST /webhooks/zoho HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", b""
    )
    assert bad_length.startswith(b"HTTP/1.1 400 ")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("scheme", list(EXPECTED))
def test_database_down_is_503_with_retry_after_never_an_ack(scheme: str, key_spec: str, tmp_path: Path) -> None:
    # A real store prepares the subscriptions; the gateway then runs on a database that no longer answers.
    live_url = f"sqlite:///{tmp_path / 'state.db'}"
    engine = create_store_engine(live_url)
    migrations.upgrade(engine)
    server = BackgroundServer()
    secrets, _ = prepare(StateStore(engine, load_settings(encryption_keys=key_spec).keyring()), server.url)
    down_url = f"postgresql+psycopg2://nobody:nothing@127.0.0.1:{_closed_port()}/gone?connect_timeout=2"
    settings = receiver_settings(server.url, down_url, key_spec, max_body_bytes=LIMIT)
    down_store = StateStore(create_store_engine(down_url), settings.keyring())
    with server.start(create_app(settings, down_store)), httpx.Client(base_url=server.url, timeout=20) as http:
        request = senders.SENDERS[scheme](secrets, 1)
        response = http.post(request.target, content=request.body, headers=request.headers)
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5" and response.json()["error"] == "database_unavailable"
    engine.dispose()


@SQLITE_ONLY
def test_openapi_lists_the_webhook_routes(receiver: Receiver) -> None:
    paths = receiver.http.get("/openapi.json").json()["paths"]
    providers = ["hubspot", "microsoft", "google", "zoho", "salesforce", "standard/{source}", "microsoft/lifecycle"]
    for provider in providers:
        assert paths[f"/webhooks/{provider}"]["post"]["security"] == []  # no API key: each verifies its own way
