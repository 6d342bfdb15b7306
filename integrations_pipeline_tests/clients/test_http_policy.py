"""The shared HTTP policy on its edges, over a real socket: a request that must not run twice is re-sent only when
it provably never left, and no ProviderError quotes a credential, whatever the server echoes."""

import json
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from integrations_pipeline.clients.errors import AnswerLost, ProviderError, redact
from integrations_pipeline.clients.http import ApiClient, RetryPolicy
from integrations_pipeline.httpserver import BackgroundServer
from integrations_pipeline.sandbox.common import RequestLogMiddleware, RequestRecord, this_answer

ACCESS_TOKEN = "at-" + "a1" * 20
REFRESH_TOKEN = "rt-" + "b2" * 20
CLIENT_SECRET = "cs-" + "c3" * 20
HELD_ONLY = "held-by-the-auth-" + "d4" * 10  # never sent: only the auth transport knows it


class Echoing:
    """A server that drops its first answer, or answers 503, or echoes every header and the body in a 400."""

    def __init__(self) -> None:
        self.log: list[RequestRecord] = []
        self.lock = threading.RLock()
        self.mode = "echo"

    def app(self) -> Starlette:
        async def handle(request: Request) -> Response:
            body = (await request.body()).decode()
            if self.mode == "drop":
                this_answer().drop = True
                return JSONResponse({"access_token": "never seen"})
            if self.mode == "unavailable":
                return JSONResponse({"error": "temporarily_unavailable"}, 503)
            # The padding puts the cut of the error excerpt (300 characters) in the middle of the access token.
            padding = "x" * (300 - len(f'{{"held": "{HELD_ONLY}", "p": "", "authorization": "Bearer ') - 10)
            authorization = request.headers.get("authorization")
            echoed = {"held": HELD_ONLY, "p": padding, "authorization": authorization, "body": body}
            return Response(json.dumps(echoed), 400, media_type="application/json")

        middleware = [Middleware(RequestLogMiddleware, log=self.log, lock=self.lock)]
        return Starlette(routes=[Route("/anything", handle, methods=["POST"])], middleware=middleware)


class HeldSecrets(httpx.Auth):
    """An auth transport that sends the access token and knows one more secret (as ConnectionAuth knows the
    refresh token and the client secret)."""

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        request.headers["Authorization"] = f"Bearer {ACCESS_TOKEN}"
        yield request

    def known_secrets(self) -> list[str]:
        return [ACCESS_TOKEN, HELD_ONLY]


@pytest.fixture
def server() -> Iterator[tuple[Echoing, str]]:
    echoing = Echoing()
    with BackgroundServer(echoing.app()) as running:
        yield echoing, running.url


def client(url: str, auth: httpx.Auth | None = None) -> ApiClient:
    return ApiClient(url, auth=auth, retry=RetryPolicy(max_attempts=3), sleep=lambda _: None)


FORM = f"grant_type=refresh_token&refresh_token={REFRESH_TOKEN}&client_secret={CLIENT_SECRET}"


def test_a_lost_answer_to_a_request_that_must_not_run_twice_is_not_sent_again(server: tuple[Echoing, str]) -> None:
    echoing, url = server
    echoing.mode = "drop"
    with client(url) as api, pytest.raises(AnswerLost, match="lost after the request was sent") as lost:
        api.request("POST", "/anything", content=FORM, replay_safe=False)
    assert len(echoing.log) == 1 and lost.value.cause == "RemoteProtocolError"
    with client(url) as api, pytest.raises(ProviderError, match="after 3 attempts"):
        api.request("POST", "/anything", content=FORM)  # replay-safe: the same loss is retried
    assert len(echoing.log) == 4


def test_a_5xx_is_the_answer_to_a_request_that_must_not_run_twice(server: tuple[Echoing, str]) -> None:
    echoing, url = server
    echoing.mode = "unavailable"
    with client(url) as api:
        assert api.request("POST", "/anything", check_status=False, replay_safe=False).status_code == 503
    assert len(echoing.log) == 1


def test_a_request_that_never_left_is_sent_again() -> None:
    with socket.socket() as unused:  # a port nobody listens on: every attempt fails to connect
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}"
        with client(url) as api, pytest.raises(ProviderError, match="ConnectError after 3 attempts"):
            api.request("POST", "/anything", content=FORM, replay_safe=False)
        assert api.stats.api_calls == 3


def test_no_error_quotes_a_credential_whatever_the_server_echoes(server: tuple[Echoing, str]) -> None:
    _, url = server
    with client(url, HeldSecrets()) as api, pytest.raises(ProviderError) as refused:
        api.request("POST", "/anything", content=FORM, headers={"Content-Type": "application/x-www-form-urlencoded"})
    message = str(refused.value)
    assert '{"held": "[redacted]"' in message and '"authorization": "[redacted]"' in message
    for secret in (ACCESS_TOKEN, REFRESH_TOKEN, CLIENT_SECRET, HELD_ONLY):
        assert secret[:8] not in message  # not even the part of a token cut by the excerpt


@pytest.mark.parametrize(
    ("echoed", "kept"),
    [
        ('{"authorization": "Bearer eyJhbGciOi.J9.abcdefghijklmnop"}', '{"authorization": "[redacted]"}'),
        ("Authorization: Zoho-oauthtoken 1000.a1b2c3d4e5f6.a1b2c3d4e5f6", "Authorization: [redacted]"),
        ("refresh_token=abc123&client_secret=def456", "refresh_token=[redacted]&client_secret=[redacted]"),
        ("re-authorization: reconnect", "re-authorization: reconnect"),
        ("HubSpot token endpoint answered HTTP 400 (invalid_grant)", None),
        ('{"token_type": "bearer", "syncToken expired"}', None),
    ],
)
def test_redaction_removes_credentials_and_keeps_the_rest(echoed: str, kept: str | None) -> None:
    assert redact(echoed) == (kept or echoed)
