"""The Microsoft identity platform (Entra ID v2.0) pieces of the Graph sandbox that OpenID Connect clients need:
OpenID discovery, the signing keys, ID tokens and `client_info`, and admin consent for app-only access.

Shapes follow Microsoft's documentation of the v2.0 endpoints closely enough that MSAL (Microsoft's own identity
library) runs against the emulator: `GET /{tenant}/v2.0/.well-known/openid-configuration` names the emulator's
endpoints, ID tokens are RS256 JWTs whose key is served at `jwks_uri`, and `client_info` is base64url JSON of the
user's object id and tenant id, which MSAL turns into the account's home_account_id.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import uuid
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

GRAPH_DEFAULT_SCOPE = "https://graph.microsoft.com/.default"
"""The only scope the client-credentials grant takes for Graph: every application permission the admin consented."""
TENANT_ALIASES = frozenset(("common", "organizations"))
"""Multi-tenant authorities: fine for users signing in, refused for the client-credentials grant."""
CLAIMS_SUPPORTED = (
    "sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name", "msgraph_host", "aud",
    "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash",
    "email",
)  # fmt: skip


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@functools.cache
def signing_key() -> rsa.RSAPrivateKey:
    """One RSA key per process: generating it costs tens of milliseconds, and tests build many emulators."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def key_id() -> str:
    """A stable `kid` (and `x5t`-like thumbprint) for the signing key: base64url SHA-1 of its modulus."""
    modulus = signing_key().public_key().public_numbers().n
    return b64url(hashlib.sha1(modulus.to_bytes(256, "big")).digest())  # noqa: S324 - a key id, not security


def jwks(issuer: str) -> dict[str, Any]:
    numbers = signing_key().public_key().public_numbers()
    return {
        "keys": [
            {
                "kty": "RSA",
                "use": "sig",
                "kid": key_id(),
                "x5t": key_id(),
                "n": b64url(numbers.n.to_bytes(256, "big")),
                "e": b64url(numbers.e.to_bytes(3, "big")),
                "issuer": issuer,
            }
        ]
    }


def signed_jwt(claims: dict[str, Any]) -> str:
    header = {"typ": "JWT", "alg": "RS256", "kid": key_id()}
    signing_input = ".".join(b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims))
    signature = signing_key().sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


def client_info(object_id: str, tenant_id: str) -> str:
    return b64url(json.dumps({"uid": object_id, "utid": tenant_id}).encode())


def openid_configuration(base: str, tenant: str, tenant_id: str) -> dict[str, Any]:
    """What Entra ID answers at /{tenant}/v2.0/.well-known/openid-configuration, with the emulator's origin standing
    in for login.microsoftonline.com; for a multi-tenant alias the issuer keeps the `{tenantid}` placeholder."""
    issuer_tenant = "{tenantid}" if tenant in TENANT_ALIASES else tenant_id
    return {
        "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{base}/{issuer_tenant}/v2.0",
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": f"{base}/oidc/userinfo",
        "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/devicecode",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{base}/{tenant}/oauth2/v2.0/logout",
        "claims_supported": list(CLAIMS_SUPPORTED),
        "kerberos_endpoint": f"{base}/{tenant}/kerberos",
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    }


def id_token(
    *, issuer: str, client_id: str, tenant_id: str, user: dict[str, Any], scopes: tuple[str, ...], now: float,
    nonce: str | None,
) -> str:  # fmt: skip
    """A v2.0 ID token for `user`: `sub` is pairwise (per app and user), `oid` the user's object id; `profile` adds
    the name claims and `email` the address, as the v2.0 endpoint does."""
    claims: dict[str, Any] = {
        "aud": client_id,
        "iss": issuer,
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now) + 3600,
        "oid": user["id"],
        "sub": b64url(hashlib.sha256(f"{client_id}:{user['id']}".encode()).digest())[:43],
        "tid": tenant_id,
        "uti": b64url(uuid.uuid4().bytes),
        "ver": "2.0",
    }
    if "profile" in scopes:
        claims |= {"name": user.get("displayName"), "preferred_username": user.get("userPrincipalName")}
    if "email" in scopes and user.get("mail"):
        claims["email"] = user["mail"]
    if nonce:
        claims["nonce"] = nonce
    return signed_jwt({key: value for key, value in claims.items() if value is not None})
