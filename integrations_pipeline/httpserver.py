"""Serve an ASGI app from a background thread: used by the CLI's `dev` stack, tests and benchmarks.

Core layer: depends on uvicorn only. The caller gets the bound URL once uvicorn reports it is
listening, so nobody has to sleep and hope. uvicorn's own log is configured by `log_config`: an exception an app
lets through is logged as its type only, never a traceback (its frames and message may quote request data).
"""

from __future__ import annotations

import copy
import logging
import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

STARTUP_TIMEOUT_S = 30.0


def printable(text: str) -> str:
    """`text` with every non-printable character escaped (newline, NUL, U+2028): one log line stays one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class ExceptionTypeOnly(logging.Filter):
    """Rewrites a record carrying an exception to its message and the exception's type, without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is not None:
            record.msg = f"{printable(record.getMessage())}: {record.exc_info[0].__name__}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's logging configuration, with `ExceptionTypeOnly` on its error log."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config.setdefault("filters", {})["exception_type_only"] = {"()": ExceptionTypeOnly}
    config["loggers"]["uvicorn.error"]["filters"] = ["exception_type_only"]
    return config


class BackgroundServer:
    """Run `app` on `host:port` (port 0 picks a free one) in a daemon thread; use as a context manager.

    The socket is bound at construction, so `url` is known before the app exists: an app whose settings need
    its own address (the gateway's OAuth redirect URI) can be passed to `start` instead.
    """

    def __init__(self, app: Any = None, host: str = "127.0.0.1", port: int = 0, **uvicorn_options: Any) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host, self.port = self._socket.getsockname()[:2]
        self.app = app
        self._uvicorn_options = uvicorn_options

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, app: Any = None) -> BackgroundServer:
        self.app = app or self.app
        if self.app is None:
            raise ValueError("BackgroundServer.start needs an app")
        options = {"log_level": "warning", "lifespan": "on", "log_config": log_config(), **self._uvicorn_options}
        config = uvicorn.Config(self.app, **options)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)
        self._thread.start()
        # uvicorn flips `started` once the socket accepts; poll that flag with a deadline.
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"server on {self.url} exited during start-up")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server on {self.url} did not start within {STARTUP_TIMEOUT_S} s")
            self._thread.join(0.01)
        return self

    def stop(self) -> None:
        if hasattr(self, "_server"):
            self._server.should_exit = True
            self._thread.join(timeout=STARTUP_TIMEOUT_S)
        self._socket.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
