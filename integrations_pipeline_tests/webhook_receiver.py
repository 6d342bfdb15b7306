"""A webhook subscriber for tests: a real HTTP server on 127.0.0.1 that records what arrives and answers as told.
Signatures are checked with the `standardwebhooks` package, the reference implementation, not with our code."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from integrations_pipeline.httpserver import BackgroundServer


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def verifies_with(self, secret: str) -> bool:
        try:
            Webhook(secret).verify(self.body, self.headers)
        except WebhookVerificationError:
            return False
        return True

    def payload(self, secret: str) -> Any:
        return Webhook(secret).verify(self.body, self.headers)

    @property
    def signatures(self) -> list[str]:
        return self.headers["webhook-signature"].split(" ")


@dataclass
class Receiver:
    url: str = ""
    received: list[Received] = field(default_factory=list)
    # Answers to give, in order, as (status, headers); once used up, 204.
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def hook_url(self) -> str:
        return f"{self.url}/hook"

    def answer(self, *answers: tuple[int, dict[str, str]] | int) -> None:
        with self.lock:
            self.answers.extend(a if isinstance(a, tuple) else (a, {}) for a in answers)

    def of_type(self, event_type: str, secret: str) -> list[Any]:
        return [r.payload(secret) for r in self.received if r.path == "/hook" and event_type in r.body.decode()]

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        with self.lock:
            self.received.append(Received(request.url.path, dict(request.headers), body))
            status, headers = self.answers.pop(0) if self.answers else (204, {})
        return Response(f"answer {status}" if status != 204 else None, status_code=status, headers=headers)


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    app = Starlette(routes=[Route("/{path:path}", receiver.handle, methods=["POST", "GET"])])
    with BackgroundServer(app) as server:
        receiver.url = server.url
        yield receiver
