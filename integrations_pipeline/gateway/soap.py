"""Salesforce Outbound Messages: a safe XML parser, the message's fields, and the SOAP acknowledgement.

The parser is expat driven by hand, refusing any DOCTYPE (so no entity can be declared: no billion laughs, no
external entities, no DTD fetch), with a cap on depth; the same care as defusedxml, without the dependency.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, NoReturn
from xml.parsers import expat

MAX_DEPTH = 32
SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
XSI_NIL = "{http://www.w3.org/2001/XMLSchema-instance}nil"
ACK = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
    b'<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound"><Ack>true</Ack></notificationsResponse>'
    b"</soapenv:Body></soapenv:Envelope>"
)


class XmlRefused(Exception):
    """The body is not XML we accept; the message says why (never quoting the body)."""


def _clark(name: str) -> str:
    namespace, separator, local = name.rpartition("}")
    return f"{{{namespace}}}{local}" if separator else name


def parse_xml(raw: bytes) -> ET.Element:
    """Parse `raw` into an element tree, refusing DTDs, entity declarations and deep nesting."""
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate(namespace_separator="}")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    depth = 0

    def refuse_dtd(*_: Any) -> NoReturn:
        raise XmlRefused("a DOCTYPE is not allowed")

    def start(name: str, attributes: dict[str, str]) -> None:
        nonlocal depth
        depth += 1
        if depth > MAX_DEPTH:
            raise XmlRefused(f"elements nest deeper than {MAX_DEPTH}")
        builder.start(_clark(name), {_clark(key): value for key, value in attributes.items()})

    def end(name: str) -> None:
        nonlocal depth
        depth -= 1
        builder.end(_clark(name))

    parser.StartDoctypeDeclHandler = refuse_dtd
    parser.EntityDeclHandler = refuse_dtd
    parser.UnparsedEntityDeclHandler = refuse_dtd
    parser.ExternalEntityRefHandler = refuse_dtd
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(raw, True)
    except expat.ExpatError as error:
        raise XmlRefused(f"malformed XML at line {error.lineno}: {expat.ErrorString(error.code)}") from None
    root = builder.close()
    return root


@dataclass(frozen=True)
class OutboundNotification:
    notification_id: str
    sobject_type: str  # Contact, User, Event, ...
    fields: dict[str, str | None]  # the sObject's fields the outbound message was set up to send


@dataclass(frozen=True)
class OutboundMessage:
    organization_id: str
    action_id: str
    notifications: list[OutboundNotification]
    # SessionId (an access token when "Send Session ID" is on) is never read out of the XML.


def _text(parent: ET.Element, tag: str, *, required: str | None = None) -> str:
    element = parent.find(tag)
    value = (element.text or "").strip() if element is not None else ""
    if not value and required is not None:
        raise XmlRefused(f"{required} is missing")
    return value


def parse_outbound_message(raw: bytes) -> OutboundMessage:
    root = parse_xml(raw)
    if root.tag != f"{{{SOAP_NS}}}Envelope":
        raise XmlRefused("the body is not a SOAP envelope")
    notifications = root.find(f"{{{SOAP_NS}}}Body/{{{OUTBOUND_NS}}}notifications")
    if notifications is None:
        raise XmlRefused("the SOAP body holds no Salesforce outbound <notifications>")
    organization_id = _text(notifications, f"{{{OUTBOUND_NS}}}OrganizationId", required="OrganizationId")
    action_id = _text(notifications, f"{{{OUTBOUND_NS}}}ActionId", required="ActionId")
    parsed = []
    for notification in notifications.findall(f"{{{OUTBOUND_NS}}}Notification"):
        notification_id = _text(notification, f"{{{OUTBOUND_NS}}}Id", required="Notification/Id")
        sobject = notification.find(f"{{{OUTBOUND_NS}}}sObject")
        if sobject is None:
            raise XmlRefused(f"notification {notification_id} has no sObject")
        sobject_type = sobject.get(XSI_TYPE, "").rpartition(":")[2]
        if not sobject_type:
            raise XmlRefused(f"notification {notification_id}'s sObject has no xsi:type")
        fields: dict[str, str | None] = {}
        for field in sobject:
            name = field.tag.rpartition("}")[2]
            fields[name] = None if field.get(XSI_NIL) == "true" else (field.text or "")
        parsed.append(OutboundNotification(notification_id, sobject_type, fields))
    if not parsed:
        raise XmlRefused("the outbound message carries no Notification")
    return OutboundMessage(organization_id, action_id, parsed)
