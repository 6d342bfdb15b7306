"""Webhook ack latency, its independence of the number of connections, and throughput: signed notifications
POSTed to the gateway on 127.0.0.1, timed from send to the 2xx that follows the inbox commit (SQLite state store
file in WAL mode: the default `make dev` store).

The gateway runs in a child process (`integrations-pipeline gateway [--workers N]`), as in production, so the
sender's signing does not compete with it for the interpreter. Each request carries a new event (no duplicate
shortcut), except in the throughput part, which re-sends a share of its requests to show they land once.

1. Latency per scheme (sequential requests), and the tampering figure: the same number of forged or tampered
   requests, none of which may be accepted.
2. Tenant count: HubSpot acks against a store with 1 HubSpot connection, then with `--connections` (10,000): p50
   latency and the gateway's CPU per request (goal: within 1.2x).
3. Throughput: `--throughput` pre-signed HubSpot webhooks (plus 10% re-sent) from `--senders` processes with
   `--concurrency` keep-alive connections each, to a gateway with `--workers` processes on one port; then the inbox
   rows are counted (goal: at least 1,000 verified webhooks/s, each stored exactly once). The senders write
   pre-built HTTP/1.1 requests on raw sockets (uvloop, no client library), so they cost about a tenth of the
   gateway's CPU per webhook: on a machine where they share the cores, the figure is the gateway's. Printed with
   the CPU per webhook of the gateway's processes and of the senders, and the load average.

    .venv/bin/python benchmarks/webhook_ack.py [--requests 2000] [--connections 10000] [--throughput 20000]
        [--workers 2] [--senders 2] [--concurrency 32] [--quick] [--parts latency scale throughput]

Exit status is 0 whether or not the goals are met: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import httpx
import psutil
import sqlalchemy as sa
import uvloop

from integrations_pipeline.crypto import Keyring, generate_key_entry
from integrations_pipeline.store import StateStore, create_store_engine, schema
from integrations_pipeline.store import migrate as migrations
from integrations_pipeline.store.repository import utcnow

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the senders live with the tests, in the checkout
from integrations_pipeline_tests import webhook_senders as senders

SCHEMES = ("hubspot", "standard", "microsoft")
RESENT_SHARE = 0.1
PARTS = ("latency", "scale", "throughput")
WARM_UP = 500  # webhooks sent before the throughput clock starts (stored too, and counted out)


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


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Gateway:
    url: str
    process: subprocess.Popen[bytes]
    secrets: senders.Secrets
    engine: sa.Engine

    def cpu_seconds(self) -> float:
        """CPU time of the gateway and its worker processes so far."""
        root = psutil.Process(self.process.pid)
        total = 0.0
        for process in [root, *root.children(recursive=True)]:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def stored(self, source: str = "hubspot") -> int:
        with self.engine.connect() as conn:
            inbox = schema.webhook_inbox
            return int(conn.execute(sa.select(sa.func.count()).where(inbox.c.source == source)).scalar_one())


def add_hubspot_connections(engine: sa.Engine, count: int) -> None:
    """`count` more HubSpot connections, each with its own portal (rows only: the ack never reads tokens)."""
    now = utcnow()
    rows = [
        {
            "id": f"hubspot-bench{n:06d}",
            "tenant": f"bench{n:06d}",
            "provider": "hubspot",
            "status": "active",
            "external_account_id": str(20_000_000 + n),
            "requested_scopes": [],
            "granted_scopes": [],
            "provider_metadata": {},
            "created_at": now,
            "updated_at": now,
        }
        for n in range(count)
    ]
    if rows:
        with engine.begin() as conn:
            conn.execute(schema.connections.insert(), rows)


@contextmanager
def running_gateway(directory: Path, *, connections: int = 1, workers: int = 1) -> Iterator[Gateway]:
    """A fresh store with every sender's connection (and `connections - 1` more HubSpot ones), and the gateway."""
    directory.mkdir(parents=True)
    store_url = f"sqlite:///{directory / 'state.db'}"
    key_spec = generate_key_entry("bench")
    engine = create_store_engine(store_url)
    migrations.upgrade(engine)
    url = f"http://127.0.0.1:{_free_port()}"
    secrets, _ = senders.prepare(StateStore(engine, Keyring.from_spec(key_spec)), url)
    add_hubspot_connections(engine, connections - 1)
    command = [str(Path(sys.executable).parent / "integrations-pipeline"), "gateway", "--port", url.rpartition(":")[2]]
    command += ["--workers", str(workers)]
    with (directory / "gateway.log").open("wb") as log:
        process = subprocess.Popen(command, env=_environment(url, store_url, key_spec), stdout=log, stderr=log)
        try:
            _wait_ready(url, process)
            yield Gateway(url, process, secrets, engine)
        finally:
            process.terminate()
            process.wait(timeout=30)
            engine.dispose()


def latency(directory: Path, requests: int) -> None:
    with running_gateway(directory) as gateway, httpx.Client(base_url=gateway.url, timeout=30) as http:
        for scheme in SCHEMES:
            latencies = []
            for n in range(requests):
                request = senders.SENDERS[scheme](gateway.secrets, 10_000 + n)
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
        for n in range(requests):
            genuine = senders.standard(gateway.secrets, 50_000 + n)
            body = bytearray(genuine.body)
            body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
            tampered = replace(genuine, body=bytes(body))
            response = http.post(tampered.target, content=tampered.body, headers=tampered.headers)
            attempts += 1
            accepted += response.is_success
            assert response.status_code < 500
        print(f"forged or tampered accepted {accepted} of {attempts} (one flipped body bit each)")


def ack_costs(directory: Path, counts: tuple[int, ...], requests: int) -> dict[int, tuple[float, float]]:
    """{connections: (p50 latency, gateway CPU per request)} of sequential HubSpot acks, one gateway per count,
    their requests interleaved so that the machine's load drifts over all of them alike."""
    with ExitStack() as stack:
        gateways = {
            count: stack.enter_context(running_gateway(directory / f"scale-{count}", connections=count))
            for count in counts
        }
        clients = {count: stack.enter_context(httpx.Client(base_url=g.url)) for count, g in gateways.items()}
        latencies: dict[int, list[float]] = {count: [] for count in counts}
        cpu_before: dict[int, float] = {}
        for n in range(-50, requests):  # 50 warm-up requests each: imports, the pool, the page cache
            if n == 0:
                cpu_before = {count: gateway.cpu_seconds() for count, gateway in gateways.items()}
            for count, gateway in gateways.items():
                request = senders.hubspot(gateway.secrets, 900_000 + n)
                started = time.perf_counter()
                response = clients[count].post(request.target, content=request.body, headers=request.headers)
                if n >= 0:
                    latencies[count].append(time.perf_counter() - started)
                assert response.is_success and response.json()["stored"] == 1, response.text
        figures = {
            count: (statistics.median(latencies[count]), (gateway.cpu_seconds() - cpu_before[count]) / requests)
            for count, gateway in gateways.items()
        }
    for count, (p50, cpu) in figures.items():
        print(f"{count:>6} HubSpot connections: ack p50 {p50 * 1000:.2f} ms, gateway CPU {cpu * 1000:.2f} ms/request")
    return figures


class _Sender(asyncio.Protocol):
    """One keep-alive connection that sends the next pre-built request as soon as the previous answer is complete:
    no HTTP client library in the loop, so the sender's CPU per request stays small next to the gateway's."""

    def __init__(self, wires: Iterator[bytes], statuses: list[int], done: asyncio.Future[None]) -> None:
        self.wires, self.statuses, self.done = wires, statuses, done
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not its subclasses
        self._send_next()

    def _send_next(self) -> None:
        wire = next(self.wires, None)
        if wire is None:
            self.transport.close()
            self.done.set_result(None)
        else:
            self.transport.write(wire)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        length = 0
        for line in self.buffer[:end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(self.buffer) < end + 4 + length:
            return
        self.statuses.append(int(self.buffer[9:12]))
        self.buffer = self.buffer[end + 4 + length :]
        self._send_next()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("the gateway closed a keep-alive connection"))


def _wire(host: str, request: senders.SignedRequest) -> bytes:
    """The request as HTTP/1.1 bytes, built once before the clock starts."""
    lines = [f"POST {request.target} HTTP/1.1", f"host: {host}", f"content-length: {len(request.body)}"]
    lines += [f"{name}: {value}" for name, value in request.headers.items()]
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + request.body


@dataclass(frozen=True)
class Sent:
    statuses: list[int]
    cpu_seconds: float  # the sender's own
    started: float  # time.monotonic(), comparable across processes on one machine
    finished: float


def _send_all(url: str, wires: list[bytes], concurrency: int) -> Sent:
    """One sender process: `concurrency` keep-alive connections draining `wires`; the status of each answer."""
    host, _, port = url.removeprefix("http://").rpartition(":")

    async def drain() -> list[int]:
        loop = asyncio.get_running_loop()
        statuses: list[int] = []
        queue = iter(wires)
        finished = [loop.create_future() for _ in range(concurrency)]
        for done in finished:
            await loop.create_connection(lambda done=done: _Sender(queue, statuses, done), host, int(port))
        await asyncio.gather(*finished)
        return statuses

    cpu, started = time.process_time(), time.monotonic()
    statuses = uvloop.run(drain())
    return Sent(statuses, time.process_time() - cpu, started, time.monotonic())


def throughput(
    directory: Path, *, total: int, connections: int, workers: int, sender_count: int, concurrency: int
) -> None:
    with running_gateway(directory, connections=connections, workers=workers) as gateway:
        requests = [senders.hubspot(gateway.secrets, 1_000_000 + n) for n in range(total + WARM_UP)]
        host = gateway.url.removeprefix("http://")
        wires = [_wire(host, request) for request in requests]
        # Every worker's first requests pay for imports and pool connections: sent before the clock starts.
        _send_all(gateway.url, wires[:WARM_UP], concurrency)
        wires = wires[WARM_UP:]
        wires += random.Random(2).sample(wires, int(total * RESENT_SHARE))  # a sender's retries: stored once
        random.Random(3).shuffle(wires)
        shares = [wires[index::sender_count] for index in range(sender_count)]
        cpu_before = gateway.cpu_seconds()
        with multiprocessing.get_context("fork").Pool(sender_count) as pool:
            results = pool.starmap(_send_all, [(gateway.url, share, concurrency) for share in shares])
        cpu = gateway.cpu_seconds() - cpu_before
        stored = gateway.stored() - WARM_UP
    # From the first sender's first request to the last one's last answer (process start-up left out).
    elapsed = max(sent.finished for sent in results) - min(sent.started for sent in results)
    statuses = [status for sent in results for status in sent.statuses]
    sender_cpu = sum(sent.cpu_seconds for sent in results)
    failed = sum(status >= 300 for status in statuses)
    print(
        f"throughput: {len(statuses)} signed HubSpot webhooks ({total} distinct) in {elapsed:.2f} s = "
        f"{len(statuses) / elapsed:,.0f}/s with {workers} gateway worker(s), {sender_count}x{concurrency} senders, "
        f"{connections} connections; CPU per webhook: gateway {cpu / len(statuses) * 1000:.2f} ms, senders "
        f"{sender_cpu / len(statuses) * 1000:.2f} ms; load average {os.getloadavg()[0]:.1f}; non-2xx {failed}; "
        f"inbox rows {stored} (expected {total}: {'exactly once' if stored == total else 'MISMATCH'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="signed requests per scheme (latency)")
    parser.add_argument("--connections", type=int, default=10_000, help="HubSpot connections for the scale figures")
    parser.add_argument("--scale-requests", type=int, default=1000, help="sequential acks per connection count")
    parser.add_argument("--throughput", type=int, default=20_000, help="distinct webhooks sent for throughput")
    parser.add_argument("--workers", type=int, default=2, help="gateway worker processes for throughput")
    parser.add_argument("--senders", type=int, default=2, help="sender processes for throughput")
    parser.add_argument("--concurrency", type=int, default=32, help="connections per sender process")
    parser.add_argument("--quick", action="store_true", help="a short run: fewer requests of every kind")
    parser.add_argument(
        "--parts", nargs="+", choices=PARTS, default=PARTS, help="which parts to run (default: all three)"
    )
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.requests, arguments.scale_requests, arguments.throughput = 200, 300, 5_000
    with tempfile.TemporaryDirectory(prefix="webhook-ack-") as temporary:
        directory = Path(temporary)
        if "latency" in arguments.parts:
            latency(directory / "latency", arguments.requests)
        if "scale" in arguments.parts:
            costs = ack_costs(directory, (1, arguments.connections), arguments.scale_requests)
            one, many = costs[1], costs[arguments.connections]
            print(
                f"ack at {arguments.connections} vs 1 connection: p50 {many[0] / one[0]:.2f}x, "
                f"CPU {many[1] / one[1]:.2f}x (goal: within 1.2x)"
            )
        if "throughput" in arguments.parts:
            throughput(
                directory / "throughput",
                total=arguments.throughput,
                connections=arguments.connections,
                workers=arguments.workers,
                sender_count=arguments.senders,
                concurrency=arguments.concurrency,
            )


if __name__ == "__main__":
    main()
