"""Analysts never block the product: the DuckDB warehouse file admits one writing process and no reader beside it
(a read-only connection takes a shared lock that makes writers wait), so analysts query a read replica instead.

After a committed write, the writer checkpoints the warehouse (the file then holds every commit) and, still
holding the write lock, copies it next to the warehouse and renames the copy over `<warehouse>-read.duckdb`
(`.data/warehouse-read.duckdb` in `make dev`). The copy costs the whole file, so a sync's merges publish at most
every REPLICA_MIN_INTERVAL_S and the run publishes its last writes as it ends: a sync costs one copy per run and
half-minute, not one per partition. A rename never waits for a reader: a connection opened on the old
replica keeps reading its snapshot, a new one sees the latest write. A writer that finds the warehouse file itself
locked (an analyst who opened it anyway) waits a bounded time, then fails with one line saying who holds the lock
and what to query instead.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import duckdb

WRITE_LOCK_WAIT_S = 120.0
"""How long a write waits for another process's lock on the warehouse file before it fails."""
_FIRST_DELAY_S, _MAX_DELAY_S = 0.05, 2.0
COPY_ATTEMPTS = 3
REPLICA_MIN_INTERVAL_S = 30.0
"""A sync's merge leaves publishing to a later write (or the end of its run) when the replica is younger."""
# DuckDB's refusal names the process holding the lock: "Conflicting lock is held in /usr/bin/python (PID 123)".
_HOLDER = re.compile(r"held in (?P<program>.+?) \(PID (?P<pid>\d+)\)")


# DuckDB's file header and its two database headers, which hold the checkpoint's iteration: equal bytes, same data.
_HEADERS_BYTES = 3 * 4096


class WarehouseLockedError(RuntimeError):
    """Another process held the warehouse file's lock for the whole bounded wait."""


def read_replica_path(warehouse_path: Path) -> Path:
    """`.data/warehouse.duckdb` -> `.data/warehouse-read.duckdb`."""
    return warehouse_path.with_name(f"{warehouse_path.stem}-read{warehouse_path.suffix}")


def connect_for_writing(
    warehouse_path: Path, *, wait_s: float = WRITE_LOCK_WAIT_S, config: Mapping[str, str] | None = None
) -> duckdb.DuckDBPyConnection:
    """A read-write connection, waiting up to `wait_s` for another process's lock (another run's write is over
    in moments; an analyst's connection may never end, hence the bound)."""
    warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    delay = _FIRST_DELAY_S
    while True:
        try:
            return duckdb.connect(str(warehouse_path), config=dict(config or {}))
        except duckdb.IOException as refusal:
            if "lock" not in str(refusal).lower():
                raise
            if time.monotonic() + delay > deadline:
                raise WarehouseLockedError(_locked_message(warehouse_path, str(refusal), wait_s)) from None
        time.sleep(delay)
        delay = min(delay * 2, _MAX_DELAY_S)


def _locked_message(warehouse_path: Path, refusal: str, wait_s: float) -> str:
    holder = _HOLDER.search(refusal)
    who = f"process {holder['pid']} ({Path(holder['program']).name})" if holder else "another process"
    return (
        f"the warehouse file {warehouse_path} stayed locked by {who} for {wait_s:.0f} s; if that is an analyst's "
        f"connection, close it and query the read replica {read_replica_path(warehouse_path)} instead "
        "(refreshed as syncs write, never locks the product out); this step can then be re-executed"
    )


def refresh_read_replica(
    connection: duckdb.DuckDBPyConnection, warehouse_path: Path, *, unless_younger_than_s: float = 0.0
) -> bool:
    """Publish the warehouse as it stands to the read replica; call it after a commit, on the writing connection
    (its file lock keeps other processes out). Returns whether the replica now holds that commit: not when it was
    published less than `unless_younger_than_s` ago (the caller publishes later).

    Threads of one process share the file: while another one is mid-write, the checkpoint is refused and the
    replica is left to that writer's own commit; a checkpoint another thread completes during the copy changes the
    headers, and the copy is taken again. A transaction that only read leaves the headers, and the replica, as
    they were."""
    try:
        connection.execute("CHECKPOINT").fetchall()  # every committed change in the file itself, none in the WAL
    except duckdb.TransactionException:
        return False  # another thread of this process is writing: its commit publishes after it
    replica = read_replica_path(warehouse_path)
    warehouse = _warehouse_reader(warehouse_path)
    if _same_checkpoint(warehouse, replica):
        return True
    if unless_younger_than_s and _age_s(replica) < unless_younger_than_s:
        return False
    staged = replica.with_name(f".{replica.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        for _ in range(COPY_ATTEMPTS):
            _copy(warehouse, staged)
            if _same_checkpoint(warehouse, staged):  # no checkpoint landed while copying: a consistent copy
                # A write-ahead log left by someone who opened the replica read-write must not meet the new file.
                replica.with_name(f"{replica.name}.wal").unlink(missing_ok=True)
                os.replace(staged, replica)  # atomic: a reader opens the old file or the new one, never half of one
                return True
    finally:
        staged.unlink(missing_ok=True)
    return False


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


# Read-only descriptors of warehouse files, one per file and process, never closed while the file is the same.
_READERS: dict[str, int] = {}
_READERS_GUARD = threading.Lock()


def _warehouse_reader(warehouse_path: Path) -> int:
    """The process's descriptor for reading the warehouse file. DuckDB locks the file with a POSIX record lock, and
    the kernel drops a process's record locks on a file the moment *any* of its descriptors of that file is closed:
    an `open(warehouse).close()` (a copy, a header read) while writing let another run's process open the warehouse
    mid-write, and the two writers damaged it (WAL replayed against a newer checkpoint, corrupted segments). So the
    warehouse is read through one descriptor that stays open; only one left behind by a file since replaced (a
    different inode, whose locks are not ours) is closed."""
    key = str(warehouse_path.resolve())
    with _READERS_GUARD:
        descriptor = _READERS.get(key)
        if descriptor is not None and os.fstat(descriptor).st_ino != os.stat(key).st_ino:
            os.close(descriptor)
            descriptor = None
        if descriptor is None:
            descriptor = _READERS[key] = os.open(key, os.O_RDONLY | os.O_CLOEXEC)
        return descriptor


def _copy(descriptor: int, target: Path) -> None:
    """The whole file behind `descriptor` into `target` (positioned reads: the descriptor is shared by threads)."""
    size = os.fstat(descriptor).st_size
    with target.open("wb") as copy:
        offset = 0
        while offset < size:
            sent = os.sendfile(copy.fileno(), descriptor, offset, size - offset)
            if sent == 0:
                break
            offset += sent


def _same_checkpoint(warehouse: int, replica: Path) -> bool:
    try:
        with replica.open("rb") as copy:
            return os.pread(warehouse, _HEADERS_BYTES, 0) == copy.read(_HEADERS_BYTES)
    except FileNotFoundError:
        return False
