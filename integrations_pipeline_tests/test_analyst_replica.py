"""Analysts never block the product: an analyst in another process holding a read-only DuckDB connection on the read
replica does not delay a write, keeps reading its snapshot, and a new connection sees the write; an analyst on the
warehouse file itself makes a write wait a bounded time, then fail with one line naming the holder and the replica."""

import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from integrations_pipeline.replica import (
    WarehouseLockedError,
    connect_for_writing,
    read_replica_path,
    refresh_read_replica,
)
from integrations_pipeline.warehouse import DuckDbWarehouse

# An analyst's session: a read-only connection held open; each line asks for a count on it ("held"), or on a new one
# after closing it ("reopened": DuckDB shares one open database per file within a process); end of input closes it.
ANALYST = """
import sys, duckdb
path = sys.argv[1]
held = duckdb.connect(path, read_only=True)
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "reopened":
        held.close()
        held = duckdb.connect(path, read_only=True)
    print(held.execute("SELECT count(*) FROM sales.orders").fetchone()[0], flush=True)
"""


class Analyst:
    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process

    def count(self, on: str) -> int:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(on + "\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())


@contextmanager
def analyst_on(path: Path) -> Iterator[Analyst]:
    process = subprocess.Popen(
        [sys.executable, "-c", ANALYST, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        yield Analyst(process)
    finally:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.close()
        process.wait(timeout=30)
        process.stdout.close()


def write_order(warehouse: DuckDbWarehouse, order_id: int) -> None:
    """One write through the warehouse's transaction: the commit, then the replica refresh."""
    with warehouse.transaction() as execute:
        execute("CREATE SCHEMA IF NOT EXISTS sales", [])
        execute("CREATE TABLE IF NOT EXISTS sales.orders (id INTEGER)", [])
        execute("INSERT INTO sales.orders VALUES (?)", [order_id])


def test_an_analyst_on_the_replica_never_blocks_a_write(tmp_path: Path) -> None:
    warehouse = DuckDbWarehouse(tmp_path / "warehouse.duckdb")
    write_order(warehouse, 1)
    replica = read_replica_path(warehouse.path)
    assert replica == tmp_path / "warehouse-read.duckdb"
    with analyst_on(replica) as analyst:
        assert analyst.count("held") == 1
        write_order(warehouse, 2)  # a lock conflict would wait, then raise: it completes while the analyst reads
        write_order(warehouse, 3)
        assert analyst.count("held") == 1  # the analyst's open connection keeps its snapshot
        assert analyst.count("reopened") == 3  # a new connection sees every write
        published = replica.stat().st_ino
        assert warehouse.table_exists("sales.orders")  # a transaction that only reads
        assert replica.stat().st_ino == published  # publishes nothing
    assert not list(tmp_path.glob(".*.tmp"))  # no staged copy left behind


def test_an_analyst_on_the_warehouse_file_delays_a_write_a_bounded_time_with_a_clear_message(tmp_path: Path) -> None:
    warehouse = DuckDbWarehouse(tmp_path / "warehouse.duckdb")
    write_order(warehouse, 1)
    with analyst_on(warehouse.path) as analyst:
        with pytest.raises(WarehouseLockedError) as refusal:
            connect_for_writing(warehouse.path, wait_s=0.2)
        message = str(refusal.value)
        assert f"process {analyst.process.pid}" in message
        assert str(read_replica_path(warehouse.path)) in message
        assert "\n" not in message and "Traceback" not in message

        # The lock released within the wait: the write goes through.
        connected = threading.Event()

        def writer() -> None:
            with connect_for_writing(warehouse.path, wait_s=60):
                connected.set()

        thread = threading.Thread(target=writer)
        thread.start()
    thread.join(timeout=90)
    assert connected.is_set()


def test_threads_writing_at_once_never_fail_on_the_refresh_and_the_last_commit_publishes_all(tmp_path: Path) -> None:
    """Threads of one run process share the DuckDB file: a checkpoint during another thread's write is refused,
    which must leave that write committed and the publishing to the later commit."""
    warehouse = DuckDbWarehouse(tmp_path / "warehouse.duckdb")
    write_order(warehouse, 0)
    failures: list[BaseException] = []

    def writer(first: int) -> None:
        try:
            for order_id in range(first, first + 5):
                write_order(warehouse, order_id)
        except BaseException as failure:
            failures.append(failure)

    threads = [threading.Thread(target=writer, args=(first,)) for first in (100, 200, 300, 400)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    with analyst_on(read_replica_path(warehouse.path)) as analyst:
        assert analyst.count("held") == 21


def test_publishing_the_replica_keeps_the_warehouse_locked_against_other_processes(tmp_path: Path) -> None:
    """DuckDB's file lock is a POSIX record lock, which the kernel drops when the process closes any descriptor of
    the file: the replica's copy and header reads must not, or a second run's process opens the warehouse mid-write
    (two writers damaged the file in benchmarks/tenant_scale.py)."""
    warehouse = DuckDbWarehouse(tmp_path / "warehouse.duckdb")
    write_order(warehouse, 1)  # the replica exists; a second publish compares headers, a third copies again
    probe = [sys.executable, "-c", "import sys, duckdb; duckdb.connect(sys.argv[1])", str(warehouse.path)]
    write_order(warehouse, 2)
    with warehouse.connect() as writing:
        writing.execute("INSERT INTO sales.orders VALUES (3)")
        assert refresh_read_replica(writing, warehouse.path)
        refused = subprocess.run(probe, capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and "lock" in refused.stderr.lower()
    with analyst_on(read_replica_path(warehouse.path)) as analyst:
        assert analyst.count("held") == 3
