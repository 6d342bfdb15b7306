"""Salesforce outbound messages from the emulator: the sandbox's Setup stand-in, the SOAP notifications envelope
(read with the gateway's own safe parser), retries until `<Ack>true</Ack>`, duplicates, reordering, refusals."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.responses import Response

from integrations_pipeline.gateway.soap import ACK, parse_outbound_message, parse_xml
from integrations_pipeline.sandbox.salesforce import SalesforceEmulator
from integrations_pipeline.sandbox.salesforce_push import RETRIES
from integrations_pipeline_tests.sandbox.conftest import ManualClock
from integrations_pipeline_tests.sandbox.push_receiver import Received, Receiver, serve_receiver
from integrations_pipeline_tests.sandbox.test_salesforce_emulator import DATA, ServedSalesforce, serve_salesforce

OUTBOUND = "/sandbox/outbound-messages"
NACK = b'<?xml version="1.0"?><Envelope><Body><notificationsResponse><Ack>false</Ack></notificationsResponse></Body>'


def acknowledge(received: Received) -> Response:
    return Response(ACK, media_type="text/xml")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serve_receiver() as served:
        served.respond = acknowledge
        yield served


@pytest.fixture
def sf(clock: ManualClock) -> Iterator[ServedSalesforce]:
    with serve_salesforce(clock, push_time_scale=1e-5) as served:
        yield served


def define(sf: ServedSalesforce, receiver: Receiver, **overrides: Any) -> httpx.Response:
    body = {"endpointUrl": f"{receiver.url}/webhooks/salesforce?subscription=s1&token=t1", "sobjects": ["Contact"]}
    return sf.http.post(OUTBOUND, json=body | overrides, headers=sf.headers())


def write(sf: ServedSalesforce, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return sf.http.request(method, f"{DATA}/sobjects/{path}", headers=sf.headers(), **kwargs)


def test_envelope_for_each_create_and_edit(sf: ServedSalesforce, receiver: Receiver) -> None:
    emulator: SalesforceEmulator = sf.emulator
    defined = define(sf, receiver, sobjects=["Contact", "Event"])
    assert defined.status_code == 201, defined.text
    actions = {m["sobject"]: m["id"] for m in defined.json()["outboundMessages"]}
    created = write(sf, "POST", "Contact", json={"LastName": "Pushed"})
    assert created.status_code == 201
    contact_id = created.json()["id"]
    assert write(sf, "PATCH", f"Contact/{contact_id}", json={"Title": "CTO"}).status_code == 204
    assert write(sf, "DELETE", f"Contact/{contact_id}").status_code == 204  # no outbound message for deletions
    emulator.push.engine.settle()

    received = receiver.requests("/webhooks/salesforce")
    assert len(received) == 2
    assert all(r.headers["content-type"].startswith("text/xml") and r.headers["soapaction"] == '""' for r in received)
    assert all("subscription=s1&token=t1" in r.url for r in received)
    messages = [parse_outbound_message(r.body) for r in received]
    assert {m.organization_id for m in messages} == {emulator.org_id}
    assert {m.action_id for m in messages} == {actions["Contact"]}
    notifications = [n for m in messages for n in m.notifications]
    assert [n.sobject_type for n in notifications] == ["Contact", "Contact"]
    assert [n.fields["Id"] for n in notifications] == [contact_id, contact_id]
    assert all(n.fields["SystemModstamp"] for n in notifications)
    assert len({n.notification_id for n in notifications}) == 2

    root = parse_xml(received[0].body)
    outbound = "{http://soap.sforce.com/2005/09/outbound}"
    body = root.find("{http://schemas.xmlsoap.org/soap/envelope/}Body/" + outbound + "notifications")
    assert body is not None
    assert (body.findtext(outbound + "EnterpriseUrl") or "").endswith(f"/services/Soap/c/62.0/{emulator.org_id}")
    assert (body.findtext(outbound + "PartnerUrl") or "").endswith(f"/services/Soap/u/62.0/{emulator.org_id}")
    assert body.find(outbound + "SessionId") is not None  # present, nil: "Send Session ID" is off


def test_retried_until_acknowledged_with_the_same_notification(sf: ServedSalesforce, receiver: Receiver) -> None:
    emulator: SalesforceEmulator = sf.emulator
    assert define(sf, receiver).status_code == 201
    answers = iter([Response(NACK, media_type="text/xml"), Response(status_code=200), Response(status_code=500)])
    receiver.respond = lambda received: next(answers, None) or acknowledge(received)
    emulator.create_contact({"LastName": "Stubborn endpoint"})
    emulator.push.engine.settle()
    received = receiver.requests("/webhooks/salesforce")
    assert len(received) == 4  # a false Ack, a 200 without Ack, a 500, then acknowledged
    assert len({parse_outbound_message(r.body).notifications[0].notification_id for r in received}) == 1
    assert [a.accepted for a in emulator.push.engine.attempts_for("salesforce:")] == [False, False, False, True]


def test_gives_up_after_a_day(sf: ServedSalesforce, receiver: Receiver) -> None:
    emulator: SalesforceEmulator = sf.emulator
    assert define(sf, receiver).status_code == 201
    receiver.fail_next(1000)
    emulator.create_contact({"LastName": "Unreachable"})
    emulator.push.engine.settle()
    attempts = emulator.push.engine.attempts_for("salesforce:")
    assert not any(a.accepted for a in attempts)
    assert len(attempts) == len(RETRIES.delays_s) + 1
    assert 20 * 3600 <= sum(RETRIES.delays_s) <= 24 * 3600 and max(RETRIES.delays_s) == 7200


def test_duplicates_and_reordering(sf: ServedSalesforce, receiver: Receiver) -> None:
    emulator: SalesforceEmulator = sf.emulator
    assert define(sf, receiver).status_code == 201
    emulator.push.engine.duplicate_next(1)
    first = emulator.create_contact({"LastName": "Twice"})
    emulator.push.engine.settle()
    emulator.push.engine.reorder_next(2)
    second = emulator.create_contact({"LastName": "Second"})
    third = emulator.create_contact({"LastName": "Third"})
    emulator.push.engine.settle()
    ids = [parse_outbound_message(r.body).notifications[0].fields["Id"] for r in receiver.requests()]
    assert ids == [first, first, third, second]


@pytest.mark.parametrize(
    "overrides",
    [{"endpointUrl": "ftp://example.com/x"}, {"endpointUrl": None}, {"sobjects": ["Account"]}, {"sobjects": []}],
)
def test_refusals(sf: ServedSalesforce, receiver: Receiver, overrides: dict[str, Any]) -> None:
    refused = define(sf, receiver, **overrides)
    assert refused.status_code == 400 and refused.json()[0]["errorCode"]
    assert sf.emulator.push.message_ids() == []


def test_listing_removal_and_authentication(sf: ServedSalesforce, receiver: Receiver) -> None:
    emulator: SalesforceEmulator = sf.emulator
    assert sf.http.post(OUTBOUND, json={}, headers={"Authorization": "Bearer nope"}).status_code == 401
    (message,) = define(sf, receiver).json()["outboundMessages"]
    assert sf.http.get(OUTBOUND, headers=sf.headers()).json()["outboundMessages"] == [message]
    assert sf.http.delete(f"{OUTBOUND}/{message['id']}", headers=sf.headers()).status_code == 204
    assert sf.http.delete(f"{OUTBOUND}/{message['id']}", headers=sf.headers()).status_code == 404
    emulator.create_contact({"LastName": "Unheard"})
    emulator.push.engine.settle()
    assert receiver.requests() == []
