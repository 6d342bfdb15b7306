"""The gateway as its own process (`integrations-pipeline gateway`), killed with SIGKILL at seeded random moments
while a Standard Webhooks sender retries 1,000 events until each is acknowledged: afterwards the inbox holds each
event exactly once (none lost, none duplicated)."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from standardwebhooks import Webhook

from integrations_pipeline.crypto import Keyring
from integrations_pipeline.store import StateStore, TokenSet, create_store_engine
from integrations_pipeline.store import migrate as migrations
from integrations_pipeline.store.inbox import WebhookInbox

EVENTS = 1_000
KILLS = 5  # each restart imports the gateway afresh (seconds on a busy machine): five keep the test under a minute
SEED = 20250304
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
START_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class GatewayProcess:
    def __init__(self, environment: dict[str, str], port: int, log: Path) -> None:
        self.environment, self.port, self.log = environment, port, log
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        command = [str(Path(sys.executable).parent / "integrations-pipeline"), "gateway", "--port", str(self.port)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, env=self.environment, stdout=log, stderr=log)
        self.starts += 1
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the gateway exited during start-up; see {self.log}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # polling a process we cannot await: the health endpoint is the only signal
        raise RuntimeError(f"the gateway did not answer within {START_TIMEOUT_S} s")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def _signed(number: int) -> tuple[bytes, dict[str, str]]:
    """A fresh signature per attempt (as real senders do), always the same webhook-id for the same event."""
    message_id = f"crash-{number:05d}"
    moment = datetime.now(UTC)
    body = json.dumps({"type": "contact.updated", "data": {"id": f"contact-{number}"}})
    headers = {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": Webhook(SECRET).sign(message_id, moment, body),
    }
    return body.encode(), headers


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_gateway_killed_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path, key_spec: str) -> None:
    store_url = f"sqlite:///{tmp_path / 'state.db'}"
    engine = create_store_engine(store_url)
    migrations.upgrade(engine)
    store = StateStore(engine, Keyring.from_spec(key_spec))
    with store.write() as conn:
        store.save_connection(
            conn,
            tenant="acme",
            provider="hubspot",
            requested_scopes=[],
            granted_scopes=[],
            tokens=TokenSet(access_token=SecretStr("access"), refresh_token=None, expires_at=None),
        )
    port = _free_port()
    environment = {name: value for name, value in os.environ.items() if not name.startswith("INTEGRATIONS_")} | {
        "INTEGRATIONS_STATE_DATABASE_URL": store_url,
        "INTEGRATIONS_ENCRYPTION_KEYS": key_spec,
        "INTEGRATIONS_API_KEY": "crash-test-api-key-0123456789",
        "INTEGRATIONS_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "INTEGRATIONS_WEBHOOKS__STANDARD_SOURCES": json.dumps(
            {"crash": {"secrets": [SECRET], "connection_id": "hubspot-acme"}}
        ),
    }
    gateway = GatewayProcess(environment, port, tmp_path / "gateway.log")
    rng = random.Random(SEED)
    # Kill once the sender's acknowledged count passes each threshold, plus a random few milliseconds, so the
    # SIGKILL lands at an arbitrary point of a request: before, during or after the commit, or between requests.
    thresholds = sorted(rng.sample(range(20, EVENTS - 20), KILLS))
    delays = [rng.uniform(0, 0.01) for _ in thresholds]
    progress = threading.Condition()
    acknowledged = 0
    failures: list[BaseException] = []

    def killer() -> None:
        try:
            for threshold, delay in zip(thresholds, delays, strict=True):

                def reached(limit: int = threshold) -> bool:
                    return acknowledged >= limit

                with progress:
                    progress.wait_for(reached, timeout=START_TIMEOUT_S)
                time.sleep(delay)
                gateway.kill()
                gateway.start()
        except BaseException as error:  # surfaced by the main thread
            failures.append(error)

    gateway.start()
    killing = threading.Thread(target=killer, name="killer", daemon=True)
    killing.start()
    attempts = refused_connections = cut_mid_request = 0
    started = time.monotonic()
    try:
        with httpx.Client(base_url=gateway.url, timeout=10) as http:
            for number in range(EVENTS):
                while True:
                    assert not failures, failures
                    assert time.monotonic() - started < 120, f"stuck at event {number}"
                    body, headers = _signed(number)
                    attempts += 1
                    try:
                        response = http.post("/webhooks/standard/crash", content=body, headers=headers)
                    except httpx.TransportError as error:
                        # ConnectError: no gateway listening; anything else: the kill cut this request short.
                        refused_connections += isinstance(error, httpx.ConnectError)
                        cut_mid_request += not isinstance(error, httpx.ConnectError)
                        time.sleep(0.02)  # the sender's retry backoff
                        continue
                    assert response.status_code < 500 or response.status_code == 503, response.text
                    if response.is_success:
                        break
                with progress:
                    acknowledged += 1
                    progress.notify_all()
        killing.join(timeout=START_TIMEOUT_S)
        assert not failures, failures
    finally:
        gateway.stop()
    events = WebhookInbox(store).pending(limit=EVENTS * 2)
    stored_ids = [event.event_id for event in events]
    lost = EVENTS - len(set(stored_ids))
    duplicates = len(stored_ids) - len(set(stored_ids))
    print(
        f"{EVENTS} events, {gateway.starts - 1} SIGKILLs, {attempts} attempts ({cut_mid_request} cut mid-request, "
        f"{refused_connections} refused while down): lost {lost}, duplicates {duplicates}, "
        f"{time.monotonic() - started:.1f} s"
    )
    assert gateway.starts - 1 == KILLS
    assert sorted(stored_ids) == [f"crash-{number:05d}" for number in range(EVENTS)]
    assert all(event.connection_id == "hubspot-acme" and event.entity == "contacts" for event in events)
    engine.dispose()
