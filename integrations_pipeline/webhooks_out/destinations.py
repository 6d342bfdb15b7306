"""Where a webhook may go: only to public unicast addresses, unless the operator allow-lists them. Every range of the
IANA IPv4 and IPv6 special-purpose registries is refused (loopback, private, shared, link-local with cloud metadata
at 169.254.169.254, documentation, benchmarking, reserved, ...), as are multicast, IPv6 outside global unicast
(2000::/3: site-local, unique-local, link-local) and every IPv6 form that embeds an IPv4 address (IPv4-compatible
`::a.b.c.d`, IPv4-mapped, IPv4-translated, NAT64, 6to4, Teredo), whatever the IPv4 address inside. A name is judged
by every address it resolves to, at subscription time and again at each delivery, and the request then goes to the
address that was checked, so a DNS answer that changes in between (rebinding) cannot redirect it."""

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


def _table(*rows: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(network), kind) for network, kind in rows)


# The IANA IPv4 Special-Purpose Address Registry (RFC 6890 and its updates), every entry whatever its
# "globally reachable" column, plus multicast and limited broadcast. Most specific first: the first match names it.
REFUSED_IPV4 = _table(
    ("0.0.0.0/8", "unspecified ('this network')"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared (carrier-grade NAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata lives here)"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignment"),
    ("192.0.2.0/24", "documentation"),
    ("192.31.196.0/24", "AS112 (special-purpose)"),
    ("192.52.193.0/24", "AMT (special-purpose)"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("192.175.48.0/24", "AS112 direct delegation (special-purpose)"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "limited broadcast"),
    ("240.0.0.0/4", "reserved"),
)

# IPv6 forms that carry an IPv4 address in their low or middle bits; refused whole (a webhook has no business
# going through a translator or tunnel), and the message names the IPv4 address inside.
EMBEDDING_IPV6 = _table(
    ("::/96", "IPv4-compatible"),
    ("::ffff:0:0/96", "IPv4-mapped"),
    ("::ffff:0:0:0/96", "IPv4-translated"),
    ("64:ff9b::/96", "NAT64"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("2001::/32", "Teredo"),
    ("2002::/16", "6to4"),
)

# The IANA IPv6 Special-Purpose Address Registry inside global unicast, and the ranges outside it worth naming.
# Anything else outside 2000::/3 is refused as "not global unicast".
REFUSED_IPV6 = _table(
    ("::1/128", "loopback"),
    ("::/128", "unspecified"),
    ("100::/64", "discard-only"),
    ("100:0:0:1::/64", "dummy prefix"),
    ("fd00:ec2::/32", "cloud metadata"),
    ("2001:2::/48", "benchmarking"),
    ("2001:db8::/32", "documentation"),
    ("2001::/23", "IETF protocol assignment"),
    ("2620:4f:8000::/48", "AS112 direct delegation (special-purpose)"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment routing (SRv6) SIDs"),
    ("fc00::/7", "unique-local (private)"),
    ("fec0::/10", "site-local (deprecated, private)"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
)
GLOBAL_UNICAST_IPV6 = ipaddress.ip_network("2000::/3")


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


def _first_match(table: tuple[tuple[IPNetwork, str], ...], address: IPAddress) -> str | None:
    return next((kind for network, kind in table if address in network), None)


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an embedding form carries (Teredo: the client's), or None."""
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    low_32_bits = ("::/96", "::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b::/96")
    if int(address) > 1 and any(address in ipaddress.ip_network(network) for network in low_32_bits):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def kind_of(address: IPAddress) -> str | None:
    """Why the address is refused, or None for a public unicast address."""
    if isinstance(address, ipaddress.IPv4Address):
        return _first_match(REFUSED_IPV4, address)
    if int(address) > 1:  # :: and ::1 are named below, not as the IPv4-compatible forms of 0.0.0.0 and 0.0.0.1
        form = _first_match(EMBEDDING_IPV6, address)
        if form is not None:
            inner = embedded_ipv4(address)
            if inner is None:
                return f"{form} (embeds an IPv4 address)"
            return f"{form} form of {inner}" + (f", {inner_kind}" if (inner_kind := kind_of(inner)) else "")
    kind = _first_match(REFUSED_IPV6, address)
    if kind is None and address not in GLOBAL_UNICAST_IPV6:
        return "reserved (not IPv6 global unicast)"
    return kind


def is_allowed(address: IPAddress, allowed: Sequence[IPNetwork]) -> bool:
    """Allow-listed itself, or the IPv4-mapped form of an allow-listed IPv4 address (a dual-stack socket's name for
    that same host). Other embedding forms go through a tunnel or translator elsewhere: they stay refused."""
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return any(address in network or (mapped is not None and mapped in network) for network in allowed)


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
        if kind is not None and not is_allowed(address, allowed):
            named = "" if parts.hostname == str(address) else f"{parts.hostname} resolves to "
            raise DestinationRefused(
                f"{named}{address} ({kind}); webhooks go to public unicast addresses only "
                f"(allow-list it with {ALLOW_LIST_SETTING} if that is intended)"
            )
    return Destination(url=url, host=parts.hostname, port=port, address=addresses[0])
