"""Fixtures for the sandbox emulators: each test gets a real emulator served over HTTP on 127.0.0.1.

Time is a `ManualClock` the test moves explicitly, so token expiry, code expiry and rate-limit windows are
exercised without sleeping. It starts at the real current time so generated data (2025-2026) is in the past.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from integrations_pipeline.httpserver import BackgroundServer
from integrations_pipeline.sandbox.hubspot import HubSpotEmulator

CLIENT_ID = "sandbox-client-id"
CLIENT_SECRET = "sandbox-client-secret"
# Never contacted: the OAuth helpers read the 302 Location header instead of following it.
REDIRECT_URI = "http://127.0.0.1:9/oauth/callback"
READ_SCOPE = "crm.objects.contacts.read"
WRITE_SCOPE = "crm.objects.contacts.write"
ALL_SCOPES = f"oauth {READ_SCOPE} {WRITE_SCOPE}"
SMALL_PORTAL_SIZE = 230


class ManualClock:
    """Seconds since the epoch that only move when a test says so."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class ServedHubSpot:
    emulator: HubSpotEmulator
    url: str
    clock: ManualClock
    http: httpx.Client
    tokens: dict[str, Any] = field(default_factory=dict)

    def auth_headers(self, access_token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {access_token or self.tokens['access_token']}"}

    def request(self, method: str, path: str, *, access_token: str | None = None, **kwargs: Any) -> httpx.Response:
        """An authenticated CRM call; pass `headers=` to replace the bearer header entirely."""
        kwargs.setdefault("headers", self.auth_headers(access_token))
        return self.http.request(method, path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)


def pkce_pair() -> tuple[str, str]:
    """A fresh (code_verifier, S256 code_challenge), computed here independently of the emulator's code."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize(
    http: httpx.Client,
    *,
    client_id: str = CLIENT_ID,
    redirect_uri: str = REDIRECT_URI,
    scope: str = ALL_SCOPES,
    state: str = "state-123",
    code_challenge: str | None = None,
) -> str:
    """Run the consent step and return the authorization code from the redirect."""
    params = {"client_id": client_id, "redirect_uri": redirect_uri, "scope": scope, "state": state}
    if code_challenge is not None:
        params |= {"code_challenge": code_challenge, "code_challenge_method": "S256"}
    response = http.get("/oauth/authorize", params=params, follow_redirects=False)
    assert response.status_code == 302, response.text
    location = httpx.URL(response.headers["location"])
    assert str(location.copy_with(query=None)) == redirect_uri
    assert location.params["state"] == state
    return location.params["code"]


def exchange_code(
    http: httpx.Client,
    code: str,
    *,
    redirect_uri: str = REDIRECT_URI,
    code_verifier: str | None = None,
    client_id: str = CLIENT_ID,
    client_secret: str = CLIENT_SECRET,
) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "client_id": client_id,
        "client_secret": client_secret,
        "redirect_uri": redirect_uri,
        "code": code,
    }
    if code_verifier is not None:
        form["code_verifier"] = code_verifier
    return http.post("/oauth/v1/token", data=form)


def refresh(http: httpx.Client, refresh_token: str, *, client_secret: str = CLIENT_SECRET) -> httpx.Response:
    form = {
        "grant_type": "refresh_token",
        "client_id": CLIENT_ID,
        "client_secret": client_secret,
        "refresh_token": refresh_token,
    }
    return http.post("/oauth/v1/token", data=form)


def run_code_flow(http: httpx.Client, *, scope: str = ALL_SCOPES) -> dict[str, Any]:
    """The full authorization-code flow with PKCE over plain HTTP; returns the token response."""
    verifier, challenge = pkce_pair()
    code = authorize(http, scope=scope, code_challenge=challenge)
    response = exchange_code(http, code, code_verifier=verifier)
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


@contextmanager
def serve_hubspot(clock: ManualClock, **emulator_options: Any) -> Iterator[ServedHubSpot]:
    """Serve a fresh emulator and hand back a client already holding tokens with every contacts scope."""
    # Limits off unless a test turns one on: the manual clock stands still, so no window would ever roll.
    options: dict[str, Any] = {"contacts": SMALL_PORTAL_SIZE, "burst_limit": None, "search_limit": None}
    options |= emulator_options
    emulator = HubSpotEmulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, clock=clock, **options)
    with BackgroundServer(emulator.app) as server, httpx.Client(base_url=server.url, timeout=30.0) as http:
        served = ServedHubSpot(emulator, server.url, clock, http)
        served.tokens = run_code_flow(http)
        yield served


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(time.time())


@pytest.fixture
def hubspot(clock: ManualClock) -> Iterator[ServedHubSpot]:
    """A small portal with rate-limit enforcement off, so tests can make many calls at one frozen instant."""
    with serve_hubspot(clock) as served:
        yield served


@pytest.fixture
def hubspot_factory(clock: ManualClock) -> Iterator[Callable[..., ServedHubSpot]]:
    """Build extra emulators with custom options (sizes, limits); all are stopped at teardown."""
    with ExitStack() as stack:
        yield lambda **options: stack.enter_context(serve_hubspot(clock, **options))


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate whose subjectAltName is the IP 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path
