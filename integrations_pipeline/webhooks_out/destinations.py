"""Where a webhook may go: never to loopback, private, link-local (cloud metadata at 169.254.169.254 included),
shared, multicast or reserved addresses, unless the operator allow-lists them. A name is judged by every address
it resolves to, at subscription time and again at each delivery, and the request then goes to the address that
was checked, so a DNS answer that changes in between (rebinding) cannot redirect it."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[IPAddress]]
ALLOW_LIST_SETTING = "INTEGRATIONS_WEBHOOK_ALLOWED_NETWORKS"


class DestinationRefused(ValueError):
    """The URL may not receive webhooks; the message says why and how to allow it if intended."""


@dataclass(frozen=True)
class Destination:
    url: str
    host: str
    port: int
    address: IPAddress  # the checked address the request must go to


def resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise DestinationRefused(f"{host} does not resolve") from None
    return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))


def kind_of(address: IPAddress) -> str | None:
    """Why the address is refused, or None for a public address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return kind_of(address.ipv4_mapped)
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local (cloud metadata lives here)"
    if address in ipaddress.ip_network("fd00:ec2::/32"):
        return "cloud metadata"
    if address.is_private:
        return "private"
    if not address.is_global or address.is_multicast:
        return "non-public"
    return None


def check_destination(url: str, allowed: Sequence[IPNetwork], resolver: Resolver = resolve) -> Destination:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DestinationRefused("the URL must be http:// or https:// with a host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = resolver(parts.hostname, port)
    if not addresses:
        raise DestinationRefused(f"{parts.hostname} does not resolve")
    for address in addresses:
        kind = kind_of(address)
        if kind is not None and not any(address in network for network in allowed):
            named = "" if parts.hostname == str(address) else f"{parts.hostname} resolves to "
            raise DestinationRefused(
                f"{named}{address}, a {kind} address; webhooks go to public addresses only "
                f"(allow-list it with {ALLOW_LIST_SETTING} if that is intended)"
            )
    return Destination(url=url, host=parts.hostname, port=port, address=addresses[0])
