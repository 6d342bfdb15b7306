"""Analysts never block the product: the DuckDB warehouse file admits one writing process and no reader beside it
(a read-only connection takes a shared lock that makes writers wait), so analysts query a read replica instead.

After each committed write, the writer checkpoints the warehouse (the file then holds every commit) and, still
holding the write lock, copies it next to the warehouse and renames the copy over `<warehouse>-read.duckdb`
(`.data/warehouse-read.duckdb` in `make dev`). A rename never waits for a reader: a connection opened on the old
replica keeps reading its snapshot, a new one sees the latest write. A writer that finds the warehouse file itself
locked (an analyst who opened it anyway) waits a bounded time, then fails with one line saying who holds the lock
and what to query instead.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

import duckdb

WRITE_LOCK_WAIT_S = 120.0
"""How long a write waits for another process's lock on the warehouse file before it fails."""
_FIRST_DELAY_S, _MAX_DELAY_S = 0.05, 2.0
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
        "(refreshed after every write, never locks the product out); this step can then be re-executed"
    )


def refresh_read_replica(connection: duckdb.DuckDBPyConnection, warehouse_path: Path) -> Path:
    """Publish the warehouse as it stands to the read replica; call it after a commit, on the writing connection
    (its lock keeps other writers out while the file is copied). A transaction that only read leaves the file's
    checkpoint as it was, and the replica as it is."""
    connection.execute("CHECKPOINT").fetchall()  # every committed change in the file itself, none in the WAL
    replica = read_replica_path(warehouse_path)
    if _same_checkpoint(warehouse_path, replica):
        return replica
    staged = replica.with_name(f".{replica.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(warehouse_path, staged)
        # A write-ahead log left by someone who opened the replica read-write must not be replayed onto the new one.
        replica.with_name(f"{replica.name}.wal").unlink(missing_ok=True)
        os.replace(staged, replica)  # atomic: a reader sees the old file or the new one, never half of one
    finally:
        staged.unlink(missing_ok=True)
    return replica


def _same_checkpoint(warehouse_path: Path, replica: Path) -> bool:
    try:
        with warehouse_path.open("rb") as warehouse, replica.open("rb") as copy:
            return warehouse.read(_HEADERS_BYTES) == copy.read(_HEADERS_BYTES)
    except FileNotFoundError:
        return False
