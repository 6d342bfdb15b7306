"""Tokens at rest: AES-256-GCM under a keyring, bound to their row by associated data.

A ciphertext is `v1.<key_id>.<base64url(nonce || ciphertext+tag)>`. The associated data names the row and
field it belongs to (`connection:<id>:refresh_token`), so a ciphertext copied to another row fails to decrypt.
There is no plaintext fallback: a wrong or missing key fails closed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

FORMAT_VERSION = "v1"
NONCE_BYTES = 12
KEY_BYTES = 32
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
DERIVED_KEY_ID = re.compile(r"^k[0-9a-f]{10}$")  # what generate_key_entry names a key it was not given a name for


class KeyringError(ValueError):
    """The keyring specification is unusable; the message says how to fix it (and never shows key material)."""


class DecryptionError(Exception):
    """A ciphertext could not be decrypted: unknown key id, wrong key, tampering, or a different row."""


class Keyring:
    """Every key decrypts; only the primary (the first in the spec) encrypts."""

    def __init__(self, keys: dict[str, bytes], primary_key_id: str) -> None:
        if primary_key_id not in keys:
            raise KeyringError(f"primary key id {primary_key_id!r} is not in the keyring")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self._keys = dict(keys)
        self._derived: dict[tuple[str, str], bytes] = {}
        self.primary_key_id = primary_key_id

    @classmethod
    def from_spec(cls, spec: str) -> Keyring:
        """Parse `key_id:base64key[,key_id:base64key...]`; the first entry is the primary."""
        keys: dict[str, bytes] = {}
        for position, entry in enumerate(filter(None, (part.strip() for part in spec.split(","))), start=1):
            key_id, separator, encoded = entry.partition(":")
            if not separator or not KEY_ID_PATTERN.match(key_id):
                raise KeyringError(
                    f"entry {position} must look like key_id:base64key (key_id: letters, digits, _ or -)"
                )
            try:
                key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_", validate=False)
            except ValueError:
                raise KeyringError(f"key {key_id!r} is not valid base64") from None
            if len(key) != KEY_BYTES:
                raise KeyringError(f"key {key_id!r} must be {KEY_BYTES} bytes once base64-decoded, not {len(key)}")
            if key_id in keys:
                raise KeyringError(f"key id {key_id!r} appears twice")
            if DERIVED_KEY_ID.match(key_id) and key_id != "k" + key_fingerprint(key):
                raise KeyringError(
                    f"key id {key_id!r} names another key (ids of this form are the key's fingerprint): "
                    "a key generated again must keep its new id"
                )
            keys[key_id] = key
        if not keys:
            raise KeyringError("no keys given; generate one with `integrations-pipeline keys generate`")
        return cls(keys, primary_key_id=next(iter(keys)))

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._ciphers)

    def encrypt(self, plaintext: str, *, associated_data: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.primary_key_id].encrypt(nonce, plaintext.encode(), associated_data.encode())
        body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{FORMAT_VERSION}.{self.primary_key_id}.{body}"

    def decrypt(self, ciphertext: str, *, associated_data: str) -> str:
        key_id = key_id_of(ciphertext)
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise DecryptionError(f"ciphertext is under key {key_id!r}, which is not in the keyring")
        body = ciphertext.split(".", 2)[2]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            return cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], associated_data.encode()).decode()
        except (InvalidTag, ValueError):
            raise DecryptionError(f"ciphertext under key {key_id!r} failed authentication for this row") from None

    def mac(self, data: str, *, purpose: str) -> tuple[str, str]:
        """HMAC-SHA256 of `data` under the primary key's subkey for `purpose`: (key id, hex MAC)."""
        return self.primary_key_id, self._mac(self.primary_key_id, data, purpose)

    def verify_mac(self, data: str, mac: str, *, key_id: str, purpose: str) -> bool | None:
        """Whether `mac` holds for `data` under `key_id`; None when the keyring no longer holds that key."""
        if key_id not in self._keys:
            return None
        return hmac.compare_digest(self._mac(key_id, data, purpose), mac)

    def _mac(self, key_id: str, data: str, purpose: str) -> str:
        # A subkey per purpose (HKDF), so a MAC can never double as anything made with the encryption key itself.
        subkey = self._derived.get((key_id, purpose))
        if subkey is None:
            subkey = self._derived[key_id, purpose] = derive_subkey(self._keys[key_id], purpose)
        return hmac.new(subkey, f"{key_id}:{data}".encode(), hashlib.sha256).hexdigest()


def derive_subkey(key: bytes, purpose: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=purpose.encode()).derive(key)


def key_fingerprint(key: bytes) -> str:
    """A short public name for a key, derived from it one-way: a different key gets a different name."""
    return derive_subkey(key, "integrations-pipeline key fingerprint v1")[:5].hex()


def key_id_of(ciphertext: str) -> str:
    version, _, rest = ciphertext.partition(".")
    key_id, separator, _ = rest.partition(".")
    if version != FORMAT_VERSION or not separator:
        raise DecryptionError("not a ciphertext of this format")
    return key_id


def generate_key_entry(key_id: str | None = None) -> str:
    """A fresh `key_id:base64key` entry for INTEGRATIONS_ENCRYPTION_KEYS.

    Without a name, the id is derived from the key (`k<fingerprint>`): generating a key again, e.g. after losing
    `.env`, can never produce a second, different key under an id stored ciphertexts already name.
    """
    key = os.urandom(KEY_BYTES)
    key_id = key_id or "k" + key_fingerprint(key)
    if not KEY_ID_PATTERN.match(key_id):
        raise KeyringError("key id must be 1-32 letters, digits, _ or -")
    return f"{key_id}:{base64.urlsafe_b64encode(key).decode()}"
