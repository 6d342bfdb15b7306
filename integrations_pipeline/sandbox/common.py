"""Provider-neutral building blocks shared by the sandbox emulators.

Each emulator (HubSpot today; Zoho, Google, Microsoft Graph and Salesforce next) composes these pieces and
maps their outcomes onto its provider's own wire format: an OAuth authorization-server core, a sliding-window
rate limiter, a request log, JSON error helpers and the locking rule below.

Lock discipline: an emulator's state is touched from two threads, uvicorn's event loop (serving HTTP) and the
test or benchmark thread (inspection and fault knobs). All state sits behind the emulator's single
`threading.RLock`: public methods take it via `synchronized`, async handlers take it in `with` blocks that
never await. Parse the request before taking the lock and serialize the response after releasing it, so the
test thread is never blocked behind network I/O.
"""

from __future__ import annotations

import base64
import enum
import functools
import hashlib
import html
import json
import math
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Clock = Callable[[], float]
"""Seconds since the epoch; injectable so tests can move time without sleeping."""

AUTHORIZATION_CODE_TTL_S = 600


class HasLock(Protocol):
    _lock: threading.RLock


_Self = TypeVar("_Self", bound=HasLock)
_Params = ParamSpec("_Params")
_Result = TypeVar("_Result")


def synchronized(
    method: Callable[Concatenate[_Self, _Params], _Result],
) -> Callable[Concatenate[_Self, _Params], _Result]:
    """Run `method` holding `self._lock`; the lock is reentrant so synchronized methods may call each other."""

    @functools.wraps(method)
    def locked(self: _Self, *args: _Params.args, **kwargs: _Params.kwargs) -> _Result:
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


def new_correlation_id() -> str:
    return str(uuid.uuid4())


def json_response(body: Any, status_code: int = 200, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status_code, headers=dict(headers or {}))


async def read_form(request: Request) -> dict[str, str]:
    """Parse an `application/x-www-form-urlencoded` body with the standard library (no python-multipart needed).

    A repeated field keeps its first value, which is what OAuth token endpoints expect.
    """
    fields: dict[str, str] = {}
    for name, value in parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True):
        fields.setdefault(name, value)
    return fields


# --- request log -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    query: str
    status: int
    at: float = 0.0
    """Wall-clock seconds when the response started (for tests that look at rates)."""


def count_status(log: list[RequestRecord], status: int, since: int = 0) -> int:
    """How many logged responses (from position `since`) had `status`: the 429s a test counts, for instance."""
    return sum(1 for record in log[since:] if record.status == status)


@dataclass
class AnswerFaults:
    """What happens to the answer of the request being served. The OAuth core sets these while it handles the
    request (see OAuthAuthorizationServer's switches); RequestLogMiddleware, which every emulator mounts, carries
    them out, so no emulator's handlers need to know."""

    drop: bool = False
    """Send the status line and headers, then close the connection without a body: the answer is lost."""
    echo_authorization: bool = False
    """Answer 400 with an error body that quotes the request's Authorization header, as careless providers do."""


_ANSWER_FAULTS: ContextVar[AnswerFaults | None] = ContextVar("sandbox_answer_faults", default=None)


def this_answer() -> AnswerFaults:
    """The faults of the answer being prepared (a throwaway outside a request, e.g. a test calling the core)."""
    return _ANSWER_FAULTS.get() or AnswerFaults()


def _echo_body(scope: Scope) -> bytes:
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
    return json.dumps(
        {
            "status": "error",
            "message": "The request could not be processed",
            "request": {"path": scope["path"], "authorization": headers.get("authorization")},
        }
    ).encode()


class RequestLogMiddleware:
    """Append a `RequestRecord` to `log` for every HTTP request, before any byte of its response is sent: a client
    (a test counting requests) may read the log the moment it has the response. Also carries out the answer's
    faults (AnswerFaults)."""

    def __init__(self, app: ASGIApp, *, log: list[RequestRecord], lock: threading.RLock) -> None:
        self.app = app
        self.log = log
        self.lock = lock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        logged = False
        # A mutable holder in a context variable: the handler may run in a worker thread with a copied context.
        faults = AnswerFaults()
        reset = _ANSWER_FAULTS.set(faults)
        swallow_rest = False

        def record(status_code: int) -> None:
            nonlocal logged
            logged = True
            query = scope.get("query_string", b"").decode("latin-1")
            with self.lock:
                self.log.append(RequestRecord(scope["method"], scope["path"], query, status_code, time.time()))

        async def send_after_logging(message: Message) -> None:
            nonlocal swallow_rest
            if swallow_rest:
                return  # the handler's own answer is swallowed: lost, or replaced by the echo below
            if message["type"] == "http.response.start" and faults.echo_authorization:
                swallow_rest = True
                body = _echo_body(scope)
                record(400)
                headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                await send({"type": "http.response.start", "status": 400, "headers": headers})
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return
            if message["type"] == "http.response.start" and not logged:
                record(message["status"])
            await send(message)
            # Lost: the server (uvicorn) closes the connection when the app returns an answer it never finished.
            swallow_rest = message["type"] == "http.response.start" and faults.drop

        try:
            await self.app(scope, receive, send_after_logging)
        finally:
            _ANSWER_FAULTS.reset(reset)
            if not logged:
                record(500)  # the app raised before starting a response: what the client sees


# --- rate limiting ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int
    """Whole seconds until a slot frees up (0 when allowed)."""


class SlidingWindowRateLimiter:
    """At most `limit` hits in any rolling `window_s`; `limit=None` counts hits but never refuses.

    Not thread-safe on its own: call it under the owning emulator's lock.
    """

    def __init__(self, limit: int | None, window_s: float, clock: Clock, *, reported_limit: int | None = None) -> None:
        self.clock = clock
        self.limit = limit
        self.window_s = window_s
        self._unenforced_limit = reported_limit or 0
        self._hits: deque[float] = deque()
        self.set_limit(limit)

    def set_limit(self, limit: int | None, window_s: float | None = None) -> None:
        """Lower, raise or switch off the limit (and change the window) at any time, even while serving: hits
        already counted stay counted, so a tightened limit refuses at once if the window is already fuller."""
        self.limit = limit
        if window_s is not None:
            self.window_s = window_s
        # What the rate-limit headers advertise when enforcement is off (benchmarks still see realistic headers).
        self.reported_limit = limit if limit is not None else self._unenforced_limit

    def _forget_old_hits(self, now: float) -> None:
        while self._hits and self._hits[0] <= now - self.window_s:
            self._hits.popleft()

    def peek(self) -> RateDecision:
        """The current state without consuming a slot."""
        now = self.clock()
        self._forget_old_hits(now)
        return RateDecision(True, self.reported_limit, max(self.reported_limit - len(self._hits), 0), 0)

    def hit(self) -> RateDecision:
        now = self.clock()
        self._forget_old_hits(now)
        if self.limit is not None and len(self._hits) >= self.limit:
            oldest_relevant = self._hits[len(self._hits) - self.limit]
            retry_after_s = max(1, math.ceil(oldest_relevant + self.window_s - now))
            return RateDecision(False, self.limit, 0, retry_after_s)
        self._hits.append(now)
        if self.limit is None and len(self._hits) > 10 * max(self.reported_limit, 1):
            self._hits.popleft()  # unenforced: keep memory bounded, the count only feeds a header
        return RateDecision(True, self.reported_limit, max(self.reported_limit - len(self._hits), 0), 0)


class DailyQuota:
    """A per-UTC-day request budget. Not thread-safe on its own."""

    def __init__(self, limit: int, clock: Clock) -> None:
        self.limit = limit  # may be changed at any time; calls already spent today stay spent
        self.clock = clock
        self._day = -1
        self._used = 0

    def _roll_day(self) -> None:
        today = int(self.clock() // 86_400)
        if today != self._day:
            self._day, self._used = today, 0

    @property
    def remaining(self) -> int:
        self._roll_day()
        return max(self.limit - self._used, 0)

    def seconds_until_reset(self) -> int:
        return max(1, math.ceil((self._day + 1) * 86_400 - self.clock()))

    def try_consume(self) -> bool:
        self._roll_day()
        if self._used >= self.limit:
            return False
        self._used += 1
        return True


@dataclass(frozen=True)
class ForcedFault:
    status: int
    retry_after_s: int | None


class FaultQueue:
    """Failures forced on the next API calls, in order (a test's knob for 5xx bursts and 429s with Retry-After).
    Not thread-safe on its own."""

    def __init__(self) -> None:
        self._queue: deque[ForcedFault] = deque()

    def push(self, requests: int, status: int, retry_after_s: int | None = None) -> None:
        self._queue.extend([ForcedFault(status, retry_after_s)] * requests)

    def pop(self) -> ForcedFault | None:
        return self._queue.popleft() if self._queue else None


# --- OAuth 2.0 authorization server core ------------------------------------------------------------------------


class OAuthErrorKind(enum.Enum):
    """Why a token request failed; providers map each kind to their own status text."""

    INVALID_REQUEST = "invalid_request"
    INVALID_CLIENT = "invalid_client"
    INVALID_CLIENT_SECRET = "invalid_client_secret"
    INVALID_CODE = "invalid_code"
    REDIRECT_URI_MISMATCH = "redirect_uri_mismatch"
    CODE_VERIFIER_MISMATCH = "code_verifier_mismatch"
    INVALID_REFRESH_TOKEN = "invalid_refresh_token"
    UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"

    @property
    def rfc6749_error(self) -> str:
        """The RFC 6749 section 5.2 `error` code, which standard OAuth client libraries parse."""
        return _RFC6749_ERRORS[self]


_RFC6749_ERRORS: dict[OAuthErrorKind, str] = {
    OAuthErrorKind.INVALID_REQUEST: "invalid_request",
    OAuthErrorKind.INVALID_CLIENT: "invalid_client",
    OAuthErrorKind.INVALID_CLIENT_SECRET: "invalid_client",
    OAuthErrorKind.INVALID_CODE: "invalid_grant",
    OAuthErrorKind.REDIRECT_URI_MISMATCH: "invalid_grant",
    OAuthErrorKind.CODE_VERIFIER_MISMATCH: "invalid_grant",
    OAuthErrorKind.INVALID_REFRESH_TOKEN: "invalid_grant",
    OAuthErrorKind.UNSUPPORTED_GRANT_TYPE: "unsupported_grant_type",
}


class OAuthError(Exception):
    def __init__(self, kind: OAuthErrorKind, description: str) -> None:
        super().__init__(description)
        self.kind = kind
        self.description = description


class AccessStatus(enum.Enum):
    VALID = "valid"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


@dataclass
class AuthorizationCode:
    code: str
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    expires_at: float
    code_challenge: str | None


@dataclass
class AccessToken:
    token: str
    client_id: str
    scopes: tuple[str, ...]
    expires_at: float
    family: str = ""
    """The authorization (code exchange) it descends from: reuse detection revokes a whole family."""


@dataclass
class RefreshToken:
    token: str
    client_id: str
    scopes: tuple[str, ...]
    family: str = ""


@dataclass(frozen=True)
class TokenGrant:
    access_token: str
    refresh_token: str
    expires_in: int
    scopes: tuple[str, ...]


def s256_challenge(code_verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL(SHA256(ASCII(code_verifier))) without padding."""
    digest = hashlib.sha256(code_verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass
class OAuthAuthorizationServer:
    """Codes, access tokens and refresh tokens for one provider; call every method under the emulator's lock.

    Codes are single use and bound to client_id, redirect_uri and an optional S256 challenge. A failed exchange
    that presents a live code for the right client still burns it, so a stolen code cannot be retried with
    guessed verifiers.
    """

    clients: dict[str, str]
    """client_id -> client_secret"""
    access_token_ttl_s: int
    clock: Clock = time.time
    rotate_refresh_tokens: bool = False
    code_ttl_s: int = AUTHORIZATION_CODE_TTL_S
    access_token_prefix: str = ""
    refresh_token_prefix: str = ""
    codes: dict[str, AuthorizationCode] = field(default_factory=dict)
    access_tokens: dict[str, AccessToken] = field(default_factory=dict)
    refresh_tokens: dict[str, RefreshToken] = field(default_factory=dict)
    reject_reused_refresh_tokens: bool = False
    """With rotation: a retired refresh token presented again revokes its whole family, access tokens included, as
    RFC 9700 (4.14.2) advises and as Salesforce and Authlib-style servers do."""
    drop_next_token_answer: bool = False
    """The next successful refresh is committed, then its answer is lost (the connection closes before the body)."""
    echo_authorization: bool = False
    """While on, every call that presents an access token is answered 400 with a body quoting its Authorization."""
    retired_refresh_tokens: dict[str, str] = field(default_factory=dict)
    """Rotated-out refresh token -> its family."""
    token_requests: list[str] = field(default_factory=list)
    """grant_type of every token-endpoint call, in order (including failed ones)."""
    issued: set[str] = field(default_factory=set)
    """Every code, access token and refresh token ever handed out, revoked ones included (for leak checks)."""

    def is_known_client(self, client_id: str) -> bool:
        return client_id in self.clients

    def issue_code(
        self, *, client_id: str, redirect_uri: str, scopes: tuple[str, ...], code_challenge: str | None
    ) -> str:
        code = secrets.token_urlsafe(24)
        self.issued.add(code)
        self.codes[code] = AuthorizationCode(
            code, client_id, redirect_uri, scopes, self.clock() + self.code_ttl_s, code_challenge
        )
        return code

    def _check_client(self, client_id: str, client_secret: str) -> None:
        if client_id not in self.clients:
            raise OAuthError(OAuthErrorKind.INVALID_CLIENT, "missing or unknown client id")
        if not secrets.compare_digest(self.clients[client_id], client_secret):
            raise OAuthError(OAuthErrorKind.INVALID_CLIENT_SECRET, "client secret does not match the client id")

    def exchange_code(
        self, *, client_id: str, client_secret: str, code: str, redirect_uri: str, code_verifier: str | None
    ) -> TokenGrant:
        self._check_client(client_id, client_secret)
        issued = self.codes.get(code)
        if issued is None or issued.client_id != client_id:
            raise OAuthError(OAuthErrorKind.INVALID_CODE, "missing or unknown auth code")
        del self.codes[code]  # single use, whatever happens next
        if issued.expires_at <= self.clock():
            raise OAuthError(OAuthErrorKind.INVALID_CODE, "auth code expired")
        if issued.redirect_uri != redirect_uri:
            raise OAuthError(OAuthErrorKind.REDIRECT_URI_MISMATCH, "redirect_uri does not match the authorize request")
        if issued.code_challenge is not None:
            if not code_verifier:
                raise OAuthError(OAuthErrorKind.INVALID_REQUEST, "missing code_verifier for a PKCE authorization")
            if not secrets.compare_digest(s256_challenge(code_verifier), issued.code_challenge):
                raise OAuthError(OAuthErrorKind.CODE_VERIFIER_MISMATCH, "code_verifier does not match code_challenge")
        refresh_token = self.refresh_token_prefix + str(uuid.uuid4())
        family = str(uuid.uuid4())
        self.refresh_tokens[refresh_token] = RefreshToken(refresh_token, client_id, issued.scopes, family)
        return self._grant(client_id, issued.scopes, refresh_token, family)

    def refresh(self, *, client_id: str, client_secret: str, refresh_token: str) -> TokenGrant:
        self._check_client(client_id, client_secret)
        stored = self.refresh_tokens.get(refresh_token)
        if stored is None and self.reject_reused_refresh_tokens and refresh_token in self.retired_refresh_tokens:
            self._revoke_family(self.retired_refresh_tokens[refresh_token])
            raise OAuthError(OAuthErrorKind.INVALID_REFRESH_TOKEN, "refresh token was already used: grant revoked")
        if stored is None or stored.client_id != client_id:
            raise OAuthError(OAuthErrorKind.INVALID_REFRESH_TOKEN, "missing or unknown refresh token")
        if self.rotate_refresh_tokens:
            del self.refresh_tokens[refresh_token]
            self.retired_refresh_tokens[refresh_token] = stored.family
            refresh_token = self.refresh_token_prefix + str(uuid.uuid4())
            self.refresh_tokens[refresh_token] = RefreshToken(refresh_token, client_id, stored.scopes, stored.family)
        grant = self._grant(client_id, stored.scopes, refresh_token, stored.family)
        if self.drop_next_token_answer:  # committed above; only the answer goes missing
            self.drop_next_token_answer = False
            this_answer().drop = True
        return grant

    def _revoke_family(self, family: str) -> None:
        for tokens in (self.refresh_tokens, self.access_tokens):
            for token in [token for token, stored in tokens.items() if stored.family == family]:
                del tokens[token]

    def record_token_request(self, grant_type: str) -> None:
        """Count a token-endpoint call, successful or not, so tests can assert how often a client refreshed."""
        self.token_requests.append(grant_type)

    def count_token_requests(self, grant_type: str | None = None) -> int:
        if grant_type is None:
            return len(self.token_requests)
        return sum(1 for requested in self.token_requests if requested == grant_type)

    def _grant(self, client_id: str, scopes: tuple[str, ...], refresh_token: str, family: str) -> TokenGrant:
        access_token = self.access_token_prefix + secrets.token_urlsafe(32)
        self.issued.update((access_token, refresh_token))
        self.access_tokens[access_token] = AccessToken(
            access_token, client_id, scopes, self.clock() + self.access_token_ttl_s, family
        )
        return TokenGrant(access_token, refresh_token, self.access_token_ttl_s, scopes)

    def authenticate(self, access_token: str) -> tuple[AccessStatus, AccessToken | None]:
        if self.echo_authorization:
            this_answer().echo_authorization = True
        stored = self.access_tokens.get(access_token)
        if stored is None:
            return AccessStatus.UNKNOWN, None
        if stored.expires_at <= self.clock():
            return AccessStatus.EXPIRED, stored
        return AccessStatus.VALID, stored

    def seconds_left(self, token: AccessToken) -> int:
        return max(0, int(token.expires_at - self.clock()))

    def revoke_refresh_token(self, refresh_token: str) -> bool:
        return self.refresh_tokens.pop(refresh_token, None) is not None

    def revoke_all_refresh_tokens(self) -> None:
        self.refresh_tokens.clear()

    def expire_all_access_tokens(self) -> None:
        now = self.clock()
        for token in self.access_tokens.values():
            token.expires_at = min(token.expires_at, now)


# --- the consent step -------------------------------------------------------------------------------------------

Endpoint = Callable[[Request], Awaitable[Response]]


def with_query(url: str, extra: Mapping[str, str]) -> str:
    """Append parameters to a redirect URI while keeping any query it already has."""
    parts = urlsplit(url)
    query = f"{parts.query}&{urlencode(extra)}" if parts.query else urlencode(extra)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def with_consent_page(authorize: Endpoint, provider: str) -> Endpoint:
    """An emulator's authorize endpoint (serve it for GET and POST) with the consent step a person sees at
    `provider`: a browser (`Accept: text/html`) gets a page naming the app and the scopes, with Allow and Deny, whose
    form posts the authorize parameters back; Deny redirects with `error=access_denied`, as the real providers do.
    Scripted clients (tests, SDKs, `make dev`'s connect step) ask for no HTML and consent at once, as before.

    The emulator's own handler answers first either way, so a request it refuses (unknown client, no redirect_uri)
    gets its refusal and never a page, and Deny only ever redirects to a redirect_uri it accepted. The code that
    answer carries is left unused (it expires); Allow asks the handler again for a fresh one."""

    async def endpoint(request: Request) -> Response:
        if request.method == "POST":
            form = await read_form(request)
            decision = form.pop("decision", "")
            answer = await authorize(_as_authorize_request(request, form))
            if decision == "allow" or not _grants_code(answer):
                return answer
            denied = {"error": "access_denied", "error_description": "The user denied the app access."}
            state = {"state": form["state"]} if "state" in form else {}
            return RedirectResponse(with_query(form["redirect_uri"], denied | state), status_code=302)
        answer = await authorize(request)
        if "text/html" not in request.headers.get("accept", "") or not _grants_code(answer):
            return answer
        return _consent_page(provider, request.url.path, dict(request.query_params))

    return endpoint


def _as_authorize_request(request: Request, params: Mapping[str, str]) -> Request:
    """The consent form's answer as the GET the emulator's handler reads (the parameters in the query)."""
    scope = {**request.scope, "method": "GET", "query_string": urlencode(params).encode()}
    return Request(scope, request.receive)


def _grants_code(answer: Response) -> bool:
    location = answer.headers.get("location", "")
    return answer.status_code in (302, 303) and "code" in parse_qs(urlsplit(location).query)


def _consent_page(provider: str, action: str, params: dict[str, str]) -> HTMLResponse:
    # Zoho separates scopes with commas, the others with spaces; HubSpot adds optional ones.
    requested = f"{params.get('scope', '')} {params.get('optional_scope', '')}"
    scopes = requested.replace(",", " ").split()
    hidden = "".join(
        f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'
        for name, value in params.items()
    )
    listed = "".join(f"<li><code>{html.escape(scope)}</code></li>" for scope in scopes) or "<li>(no scope)</li>"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(provider)} sandbox: allow access?</title>
<style>body{{font-family:sans-serif;max-width:34rem;margin:3rem auto}}button{{font-size:1rem;margin-right:1rem}}</style>
</head><body>
<h1>{html.escape(provider)} (sandbox)</h1>
<p>The app <strong>{html.escape(params.get("client_id", ""))}</strong> asks for access to your account:</p>
<ul>{listed}</ul>
<form method="post" action="{html.escape(action)}">{hidden}
<button type="submit" name="decision" value="allow">Allow</button>
<button type="submit" name="decision" value="deny">Deny</button>
</form>
</body></html>
"""
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})


# --- generated events -------------------------------------------------------------------------------------------


def events_first_day(fixed_first_day: date, days: int, around: date | None) -> date:
    """The first day of an emulator's `days` of generated events: its fixed sample window (what the tests pin
    their expectations on) or, given `around` (the dev stack passes today), half the window before that day, so a
    fresh sandbox has past and coming events. Either way the data depends only on the seed and these dates."""
    return fixed_first_day if around is None else around - timedelta(days=days // 2)


@dataclass(frozen=True)
class SampleGuest:
    """A generated event's invitee; each emulator renders `response` in its provider's own words."""

    first_name: str
    last_name: str
    email: str
    response: str  # accepted | declined | tentative | none (not answered yet)


GUEST_RESPONSES = ("accepted", "accepted", "declined", "tentative", "none")


def sample_guests(event_id: str, domain: str, most: int = 3) -> list[SampleGuest]:
    """0..`most` invitees of an event, from a hash of its id: deterministic, and drawn from no emulator's seeded
    random stream, so adding guests changed none of the other generated data."""
    digest = hashlib.sha256(f"guests-{event_id}".encode()).digest()
    guests: dict[str, SampleGuest] = {}
    for index in range(digest[0] % (most + 1)):
        first, last = (
            FIRST_NAMES[digest[1 + 3 * index] % len(FIRST_NAMES)],
            LAST_NAMES[digest[2 + 3 * index] % len(LAST_NAMES)],
        )
        email = f"{first}.{last}@{domain}".lower()
        guests[email] = SampleGuest(first, last, email, GUEST_RESPONSES[digest[3 + 3 * index] % len(GUEST_RESPONSES)])
    return list(guests.values())


# Name pools for generated people and companies, shared by the emulators whose data looks alike (HubSpot and
# Salesforce); each emulator picks from them with its own seeded arithmetic, so its data stays deterministic.
FIRST_NAMES = (
    "Ada", "Alan", "Amara", "Ben", "Chen", "Dara", "Elena", "Emeka", "Farah", "Grace", "Hiro", "Ines", "Jonas",
    "Kemi", "Lars", "Leila", "Mateo", "Mira", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tariq", "Uma",
    "Viktor", "Wen", "Yara", "Zoe",
)  # fmt: skip
LAST_NAMES = (
    "Abara", "Berg", "Castillo", "Dubois", "Eriksen", "Fischer", "Garcia", "Hansen", "Ito", "Jensen", "Kowalski",
    "Lopez", "Moreau", "Nakamura", "Okafor", "Patel", "Quist", "Rossi", "Silva", "Tanaka", "Ueda", "Varga",
    "Weber", "Xu", "Yilmaz", "Zhang",
)  # fmt: skip
COMPANIES = (
    "Acme Analytics", "Blue Harbor", "Cobalt Labs", "Delta Freight", "Evergreen Health", "Foxglove Media",
    "Granite Works", "Helios Energy", "Ironbark Foods", "Juniper Retail", "Kestrel Finance", "Lumen Studio",
)  # fmt: skip
JOB_TITLES = (
    "Account Executive", "CTO", "Data Engineer", "Designer", "Founder", "Head of Growth", "Marketing Manager",
    "Operations Lead", "Product Manager", "Sales Director", "Software Engineer", "VP Finance",
)  # fmt: skip


CUSTOM_SAMPLE_KINDS = ("string", "boolean", "datetime", "date", "integer", "double", "picklist")
PICKLIST_SAMPLES = ("Gold", "Silver", "Bronze")


def custom_field_sample(record_id: str, name: str, kind: str) -> Any:
    """A custom field's value for a record nobody wrote it on (emulators with run-time custom fields): drawn from a
    hash of (record, field), so values are stable, need no stored state, and a field added at run time has values at
    once. `kind` is one of CUSTOM_SAMPLE_KINDS; about one record in five leaves a non-boolean field empty."""
    number = int.from_bytes(hashlib.sha256(f"{record_id}:{name}".encode()).digest()[:4], "big")
    if number % 5 == 0 and kind != "boolean":
        return None
    samples: dict[str, Callable[[], Any]] = {
        "string": lambda: f"{name.removesuffix('__c').replace('_', ' ')} {number % 1000}",
        "boolean": lambda: number % 2 == 0,
        "datetime": lambda: datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=number % 700_000),
        "date": lambda: date(2026, 1, 1) + timedelta(days=number % 365),
        "integer": lambda: number % 1000,
        "double": lambda: round(number % 10_000 / 100, 2),
        "picklist": lambda: PICKLIST_SAMPLES[number % len(PICKLIST_SAMPLES)],
    }
    return samples[kind]()
