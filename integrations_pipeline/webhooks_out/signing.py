"""Standard Webhooks signatures: `v1,` + base64(HMAC-SHA256(secret, "{webhook-id}.{webhook-timestamp}.{body}"))."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from integrations_pipeline.store.outbox import SECRET_PREFIX


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signature_header(secrets: Sequence[str], message_id: str, timestamp: int, body: bytes) -> str:
    """One space-separated `v1,` entry per secret: during a rotation receivers holding either secret verify."""
    return " ".join(sign(secret, message_id, timestamp, body) for secret in secrets)


def signed_headers(secrets: Sequence[str], message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, message_id, timestamp, body),
        "content-type": "application/json",
    }
