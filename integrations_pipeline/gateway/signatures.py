"""Signature checks for webhooks, on the raw bytes and in constant time; pure functions, no I/O.

Each check returns nothing or raises `SignatureRefused` naming what is wrong (never the secret or the expected
value), so the receiver can turn every refusal into one 4xx.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

TOLERANCE_S = 300  # timestamps further than this from our clock, either way, are refused
# HubSpot signs the URI with these characters decoded (its v3 validation guide lists exactly these).
HUBSPOT_DECODED = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}
MAX_SIGNATURES = 16  # a rotation needs two or three; more is an attempt to make us hash a lot


class SignatureRefused(Exception):
    """The request is not authentic (401) or its authentication headers are malformed (400)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def check_timestamp(sent_at_s: float, now_s: float, *, header: str) -> None:
    if sent_at_s < now_s - TOLERANCE_S:
        raise SignatureRefused(401, "stale_timestamp", f"{header} is more than {TOLERANCE_S} s old")
    if sent_at_s > now_s + TOLERANCE_S:
        raise SignatureRefused(401, "future_timestamp", f"{header} is more than {TOLERANCE_S} s in the future")


def _digits(value: str | None, header: str) -> int:
    if value is None or not value:
        raise SignatureRefused(401, "missing_signature", f"the {header} header is missing")
    if not value.isascii() or not value.isdigit() or len(value) > 16:
        raise SignatureRefused(400, "malformed_timestamp", f"{header} must be an integer")
    return int(value)


def _base64(value: str, header: str) -> bytes:
    """Strict, canonical base64: the unused low bits of the last character must be zero, so one signature has one
    spelling (otherwise a changed last character can decode to the same bytes and a "tampered" header verifies)."""
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureRefused(400, "malformed_signature", f"{header} is not valid base64") from None
    if base64.b64encode(decoded).decode() != value:
        raise SignatureRefused(400, "malformed_signature", f"{header} is not canonical base64")
    return decoded


def hubspot_uri(public_url: str, path: str, query: str) -> str:
    """The URI HubSpot signed: our public base URL (as configured in the app), the path, the query as sent."""
    uri = public_url.rstrip("/") + path + (f"?{query}" if query else "")
    for encoded, plain in HUBSPOT_DECODED.items():
        uri = uri.replace(encoded, plain).replace(encoded.lower(), plain)
    return uri


def verify_hubspot_v3(
    *,
    client_secret: str,
    method: str,
    uri: str,
    body: bytes,
    signature: str | None,
    timestamp_ms: str | None,
    now_s: float,
) -> None:
    """`X-HubSpot-Signature-v3` = base64(HMAC-SHA256(client secret, method + URI + body + timestamp))."""
    if signature is None or not signature:
        raise SignatureRefused(401, "missing_signature", "the X-HubSpot-Signature-v3 header is missing")
    sent_ms = _digits(timestamp_ms, "X-HubSpot-Request-Timestamp")
    check_timestamp(sent_ms / 1000, now_s, header="X-HubSpot-Request-Timestamp")
    presented = _base64(signature, "X-HubSpot-Signature-v3")
    assert timestamp_ms is not None
    message = method.encode() + uri.encode() + body + timestamp_ms.encode()
    expected = hmac.new(client_secret.encode(), message, hashlib.sha256).digest()
    if not hmac.compare_digest(presented, expected):
        raise SignatureRefused(401, "bad_signature", "X-HubSpot-Signature-v3 does not match the request")


def verify_standard_webhook(
    *,
    keys: Sequence[bytes],
    message_id: str | None,
    timestamp_s: str | None,
    signatures: str | None,
    body: bytes,
    now_s: float,
) -> None:
    """Standard Webhooks: `webhook-signature` holds space-separated `v1,<base64>` signatures of
    `id.timestamp.body`; any one made with any of the source's keys (several during a rotation) verifies."""
    if not message_id:
        raise SignatureRefused(400, "missing_header", "the webhook-id header is missing")
    if len(message_id) > 255 or not message_id.isascii() or not message_id.isprintable():
        raise SignatureRefused(400, "malformed_header", "webhook-id must be printable ASCII, up to 255 characters")
    if not signatures:
        raise SignatureRefused(401, "missing_signature", "the webhook-signature header is missing")
    sent_s = _digits(timestamp_s, "webhook-timestamp")
    check_timestamp(sent_s, now_s, header="webhook-timestamp")
    presented: list[bytes] = []
    for entry in signatures.split()[:MAX_SIGNATURES]:
        version, comma, value = entry.partition(",")
        if not comma:
            raise SignatureRefused(400, "malformed_signature", "webhook-signature entries look like v1,<base64>")
        if version == "v1":  # other schemes (v1a: asymmetric) are not configured here; skip rather than refuse
            presented.append(_base64(value, "webhook-signature"))
    if not presented:
        raise SignatureRefused(401, "missing_signature", "webhook-signature carries no v1 signature")
    assert timestamp_s is not None
    message = f"{message_id}.{timestamp_s}.".encode() + body
    matched = False
    for key in keys:  # every comparison runs, so timing does not tell which key or signature matched
        expected = hmac.new(key, message, hashlib.sha256).digest()
        for signature in presented:
            matched |= hmac.compare_digest(signature, expected)
    if not matched:
        raise SignatureRefused(401, "bad_signature", "no webhook-signature matches the request")
