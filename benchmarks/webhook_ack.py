"""Webhook ack latency: signed notifications POSTed one after another to the gateway on 127.0.0.1, timed from send
to the 2xx that follows the inbox commit (SQLite state store file, WAL off: the default `make dev` store).

The gateway runs in a child process (`integrations-pipeline gateway`), as in production, so the sender's
signing does not compete with it for the interpreter. Each request carries a new event (no duplicate shortcut).
Also reports the tampering figure: the same number of forged or tampered requests, none of which may be accepted.

    .venv/bin/python benchmarks/webhook_ack.py [--requests 2000]

Exit status is 0 whether or not the goal (p99 under 1 s) is met: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import httpx

from integrations_pipeline.crypto import Keyring, generate_key_entry
from integrations_pipeline.store import StateStore, create_store_engine
from integrations_pipeline.store import migrate as migrations

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the senders live with the tests, in the checkout
from integrations_pipeline_tests import webhook_senders as senders

SCHEMES = ("hubspot", "standard", "microsoft")


def _environment(settings_url: str, store_url: str, key_spec: str) -> dict[str, str]:
    settings = senders.receiver_settings(settings_url, store_url, key_spec)
    hubspot = settings.hubspot
    assert hubspot is not None
    sources = {
        name: {"secrets": [s.get_secret_value() for s in source.secrets], "connection_id": source.connection_id}
        for name, source in settings.webhooks.standard_sources.items()
    }
    return {name: value for name, value in os.environ.items() if not name.startswith("INTEGRATIONS_")} | {
        "INTEGRATIONS_STATE_DATABASE_URL": store_url,
        "INTEGRATIONS_ENCRYPTION_KEYS": key_spec,
        "INTEGRATIONS_API_KEY": senders.API_KEY,
        "INTEGRATIONS_PUBLIC_URL": settings_url,
        "INTEGRATIONS_HUBSPOT__CLIENT_ID": hubspot.client_id,
        "INTEGRATIONS_HUBSPOT__CLIENT_SECRET": hubspot.client_secret.get_secret_value(),
        "INTEGRATIONS_WEBHOOKS__STANDARD_SOURCES": json.dumps(sources),
    }


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("the gateway exited during start-up")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise SystemExit("the gateway did not start")


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="signed requests per scheme")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="webhook-ack-") as directory:
        store_url = f"sqlite:///{Path(directory) / 'state.db'}"
        key_spec = generate_key_entry("bench")
        engine = create_store_engine(store_url)
        migrations.upgrade(engine)
        port = 18000 + random.randrange(1000)
        url = f"http://127.0.0.1:{port}"
        secrets, _ = senders.prepare(StateStore(engine, Keyring.from_spec(key_spec)), url)
        command = [str(Path(sys.executable).parent / "integrations-pipeline"), "gateway", "--port", str(port)]
        log = (Path(directory) / "gateway.log").open("wb")
        process = subprocess.Popen(command, env=_environment(url, store_url, key_spec), stdout=log, stderr=log)
        try:
            _wait_ready(url, process)
            with httpx.Client(base_url=url, timeout=30) as http:
                for scheme in SCHEMES:
                    latencies = []
                    for n in range(arguments.requests):
                        request = senders.SENDERS[scheme](secrets, 10_000 + n)
                        started = time.perf_counter()
                        response = http.post(request.target, content=request.body, headers=request.headers)
                        latencies.append(time.perf_counter() - started)
                        assert response.is_success, response.text
                    print(
                        f"{scheme:10} ack latency over {len(latencies)} requests: "
                        f"p50 {statistics.median(latencies) * 1000:.1f} ms, "
                        f"p99 {_percentile(latencies, 0.99) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
                    )
                rng = random.Random(1)
                accepted = attempts = 0
                for n in range(arguments.requests):
                    genuine = senders.standard(secrets, 50_000 + n)
                    body = bytearray(genuine.body)
                    body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
                    tampered = replace(genuine, body=bytes(body))
                    response = http.post(tampered.target, content=tampered.body, headers=tampered.headers)
                    attempts += 1
                    accepted += response.is_success
                    assert response.status_code < 500
                print(f"forged or tampered accepted {accepted} of {attempts} (one flipped body bit each)")
        finally:
            process.terminate()
            process.wait(timeout=30)
            log.close()
            engine.dispose()


if __name__ == "__main__":
    main()
