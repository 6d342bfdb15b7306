"""A tiny webhook receiver on 127.0.0.1 for the emulator push tests: it records every request (method, full URL,
headers, raw body) and answers from a script (`fail_next`, a custom responder), so tests can check each provider's
scheme, retries, duplicates and ordering against real HTTP."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from integrations_pipeline.httpserver import BackgroundServer


@dataclass(frozen=True)
class Received:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str = ""
    received: list[Received] = field(default_factory=list)
    failures_left: int = 0
    failure_status: int = 500
    respond: Callable[[Received], Response] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, count: int, status: int = 500) -> None:
        with self.lock:
            self.failures_left, self.failure_status = count, status

    def requests(self, path: str = "") -> list[Received]:
        with self.lock:
            return [item for item in self.received if path in item.url]

    async def handle(self, request: Request) -> Response:
        item = Received(request.method, str(request.url), dict(request.headers), await request.body())
        with self.lock:
            self.received.append(item)
            failing = self.failures_left > 0
            if failing:
                self.failures_left -= 1
        if failing:
            return PlainTextResponse("try again", status_code=self.failure_status)
        if self.respond is not None:
            return self.respond(item)
        return Response(status_code=202)


@contextmanager
def serve_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    app = Starlette(routes=[Route("/{path:path}", receiver.handle, methods=["POST"])])
    with BackgroundServer(app) as server:
        receiver.url = server.url
        yield receiver
