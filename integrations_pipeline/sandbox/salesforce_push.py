"""Salesforce Outbound Messages for the sandbox: a sandbox-only route standing in for Setup, and SOAP notifications.

At a real org an administrator defines an outbound message (endpoint URL, the fields to send) and a workflow or
flow that fires it when records are created or edited; no API call creates one. Here `POST /sandbox/outbound-messages`
`{endpointUrl, sobjects: ["Contact", "Event", "User"]}` (with the org's bearer token) defines one per listed object,
`GET` lists them and `DELETE /sandbox/outbound-messages/{id}` removes one. The sandbox accepts http:// endpoints
(Salesforce demands HTTPS) so loopback receivers work.

On every create or edit of a listed object the org POSTs a SOAP 1.1 `notifications` message (namespace
http://soap.sforce.com/2005/09/outbound: OrganizationId, ActionId, SessionId nil, EnterpriseUrl, PartnerUrl, and a
`Notification` with its own `Id` and an `sObject` of xsi:type `sf:Contact`... carrying `Id` and `SystemModstamp`).
Deletions fire no outbound message, as at Salesforce (workflow rules run on create and edit only): the poll's
getDeleted finds them. A message counts as delivered only when the endpoint answers 200 with a SOAP body containing
`<Ack>true</Ack>`; until then Salesforce retries with growing intervals (at most 2 hours apart) for 24 hours.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from integrations_pipeline.sandbox.common import json_response
from integrations_pipeline.sandbox.push import Delivery, DeliveryEngine, RetrySchedule
from integrations_pipeline.sandbox.push import Request as PushRequest

Handler = Callable[[Request], Awaitable[Response]]

OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
SOBJECTS = frozenset(("Contact", "Event", "User"))
API_VERSION = "62.0"
RETRIES = RetrySchedule.exponential(15, 40, cap_s=7200, within_s=86_400)


def acknowledged(status: int, body: bytes) -> bool:
    return status == 200 and b"<Ack>true</Ack>" in body.replace(b" ", b"")


def _salesforce_id(prefix: str, number: int) -> str:
    return f"{prefix}{number:012d}AAA"[:18]


@dataclass(frozen=True)
class _OutboundMessage:
    id: str  # the ActionId
    sobject: str
    endpoint_url: str
    instance_url: str  # the org's My Domain origin, for EnterpriseUrl and PartnerUrl

    def render(self) -> dict[str, Any]:
        return {"id": self.id, "sobject": self.sobject, "endpointUrl": self.endpoint_url}


class SalesforcePush:
    """Outbound messages and their deliveries; `changed` is called under the emulator's lock after each write."""

    def __init__(self, *, lock: threading.RLock, org_id: str, time_scale: float) -> None:
        self._lock = lock
        self.org_id = org_id
        self.engine = DeliveryEngine(time_scale=time_scale)
        self._messages: dict[str, _OutboundMessage] = {}
        self._action_numbers = itertools.count(1)
        self._notification_numbers = itertools.count(1)

    def message_ids(self) -> list[str]:
        with self._lock:
            return list(self._messages)

    def changed(self, sobject: str, record_id: str, modstamp_ms: int) -> None:
        for message in self._messages.values():
            if message.sobject == sobject:
                self._send(message, record_id, modstamp_ms)

    def _send(self, message: _OutboundMessage, record_id: str, modstamp_ms: int) -> None:
        notification_id = _salesforce_id("04l", next(self._notification_numbers))
        modstamp = datetime.fromtimestamp(modstamp_ms / 1000, UTC).isoformat(timespec="milliseconds")
        instance = escape(message.instance_url)
        envelope = f"""<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" \
xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="{OUTBOUND_NS}">
   <OrganizationId>{self.org_id}</OrganizationId>
   <ActionId>{message.id}</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>{instance}/services/Soap/c/{API_VERSION}/{self.org_id}</EnterpriseUrl>
   <PartnerUrl>{instance}/services/Soap/u/{API_VERSION}/{self.org_id}</PartnerUrl>
   <Notification>
    <Id>{notification_id}</Id>
    <sObject xsi:type="sf:{message.sobject}" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>{escape(record_id)}</sf:Id>
     <sf:SystemModstamp>{modstamp.replace("+00:00", "Z")}</sf:SystemModstamp>
    </sObject>
   </Notification>
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>
""".encode()
        request = PushRequest(envelope, {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'})
        self.engine.enqueue(
            Delivery(
                message.endpoint_url,
                lambda attempt: request,
                RETRIES,
                accepted=acknowledged,
                label=f"salesforce:{message.id}:{notification_id}",
            )
        )

    # --- the sandbox's stand-in for Setup ---------------------------------------------------------------------------

    def _error(self, status: int, code: str, message: str) -> JSONResponse:
        return json_response([{"message": message, "errorCode": code}], status)

    async def define(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            return self._error(400, "JSON_PARSER_ERROR", "the body must be a JSON object")
        endpoint_url, sobjects = str(body.get("endpointUrl") or ""), body.get("sobjects")
        parts = urlsplit(endpoint_url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            return self._error(400, "INVALID_FIELD", "endpointUrl must be an absolute https URL")
        if len(endpoint_url) > 1000:
            return self._error(400, "STRING_TOO_LONG", "endpointUrl is limited to 1000 characters")
        if not isinstance(sobjects, list) or not sobjects or not set(sobjects) <= SOBJECTS:
            return self._error(400, "INVALID_FIELD", f"sobjects must list some of {sorted(SOBJECTS)}")
        with self._lock:
            defined = []
            for sobject in dict.fromkeys(sobjects):
                action_id = _salesforce_id("04k", next(self._action_numbers))
                message = _OutboundMessage(action_id, sobject, endpoint_url, str(request.base_url).rstrip("/"))
                self._messages[message.id] = message
                defined.append(message.render())
        return json_response({"outboundMessages": defined}, 201)

    async def listing(self, request: Request) -> Response:
        with self._lock:
            return json_response({"outboundMessages": [m.render() for m in self._messages.values()]})

    async def remove(self, request: Request) -> Response:
        with self._lock:
            if self._messages.pop(request.path_params["message_id"], None) is None:
                return self._error(404, "NOT_FOUND", "The requested resource does not exist")
        return Response(status_code=204)

    def routes(self, authenticated: Callable[[Handler], Handler]) -> list[Route]:
        """`authenticated` refuses a request without the org's valid bearer token."""
        return [
            Route("/sandbox/outbound-messages", authenticated(self.define), methods=["POST"]),
            Route("/sandbox/outbound-messages", authenticated(self.listing), methods=["GET"]),
            Route("/sandbox/outbound-messages/{message_id}", authenticated(self.remove), methods=["DELETE"]),
        ]
