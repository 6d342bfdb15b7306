"""The write path alone, at sizes an HTTP sync would take too long to reach: a full sync of N contacts into one
DuckDB partition (chunks of 10,000 staged, one merge, the unified table following, the partition summarized as
the asset does), then an incremental sync of 10 changed contacts. Each size runs in a child interpreter of its
own, so the peak RSS it reports (VmHWM) is that run's alone; the child resets VmHWM between the full and the
incremental sync (`/proc/self/clear_refs`), and a sampling thread records the RSS peak of each phase.

    .venv/bin/python benchmarks/incremental_merge.py [--rows 10000 1000000] [--changes 10]

`measure(rows, changes)` is the same measurement for other benchmarks (tenant_scale.py). No HTTP here: the
staged frames are built vectorized with the dtypes `frames.to_frame` gives; sync_throughput.py drives the
whole project path. Exit status is 0 whether or not the goals are met.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
CHUNK_ROWS = 10_000  # as assets/entities.py stages
CONNECTION_ID = "hubspot-bench"
GOALS = {"incremental wall": 1.5, "full peak RSS": 1.5}  # large / small


def _status_kib(field: str) -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1])


class PhaseRss:
    """The RSS peak of each named phase, sampled every few milliseconds on a thread of its own."""

    def __init__(self) -> None:
        self.peaks: dict[str, float] = {}
        self.phase = "start"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._record()

    def _record(self) -> None:
        mib = _status_kib("VmRSS") / 1024
        self.peaks[self.phase] = max(self.peaks.get(self.phase, 0.0), mib)

    @contextmanager
    def during(self, phase: str) -> Iterator[None]:
        self._record()
        self.phase = phase
        try:
            yield
        finally:
            self._record()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {phase: round(peak, 1) for phase, peak in self.peaks.items()}


def contact_frames(rows: int, start: int = 0, company: str = "Acme") -> Iterator[Any]:
    """Chunks of contacts with the columns and dtypes of `frames.to_frame` (built vectorized: no dicts)."""
    import numpy as np
    import pandas as pd

    from integrations_pipeline.frames import TIMESTAMP_DTYPE
    from integrations_pipeline.records import CONTACT_COLUMNS

    for first in range(start, start + rows, CHUNK_ROWS):
        ids = np.arange(first, min(first + CHUNK_ROWS, start + rows))
        text = ids.astype(str).astype(object)
        stamp = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(ids, unit="s")
        columns = {
            "connection_id": np.full(len(ids), CONNECTION_ID, dtype=object),
            "source_id": text,
            "email": text + "@example.com",
            "first_name": np.full(len(ids), "Ada", dtype=object),
            "last_name": text,
            "phone": np.full(len(ids), None, dtype=object),
            "company": np.full(len(ids), company, dtype=object),
            "job_title": np.full(len(ids), "Engineer", dtype=object),
            "created_at": stamp.astype(TIMESTAMP_DTYPE),
            "modified_at": stamp.astype(TIMESTAMP_DTYPE),
            "is_deleted": ids % 100 == 99,
        }
        yield pd.DataFrame({column: columns[column] for column in CONTACT_COLUMNS})


def sync(warehouse: Any, frames: Iterator[Any], *, full: bool, phases: PhaseRss) -> dict[str, Any]:
    """Stage, merge (unified following), summarize: what `assets.entities.sync_scope` does after fetching."""
    from integrations_pipeline.records import CONTACT_COLUMNS, PRIMARY_KEY
    from integrations_pipeline.warehouse import SUMMARY_KEYS_MAX, MergeTarget, PartitionSlice, UnifiedFollow

    part = PartitionSlice("hubspot.contacts", CONNECTION_ID)
    target = MergeTarget(part, CONTACT_COLUMNS, PRIMARY_KEY, full, UnifiedFollow("contacts", "bench", "hubspot", {}))
    started = time.perf_counter()
    keys: list[str] = []
    with warehouse.staging(CONTACT_COLUMNS) as staging:
        with phases.during("stage"):
            for frame in frames:
                staging.append(frame)
                if not full:
                    keys += frame["source_id"].tolist()
        with phases.during("merge"):
            counts = staging.merge(target)
    written_keys = None if full or len(keys) > SUMMARY_KEYS_MAX else keys  # as sync_scope passes the fetched ids
    with phases.during("summarize"):
        summary = warehouse.summarize(part, PRIMARY_KEY, PRIMARY_KEY, written_keys)
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 3),
        "rows_written": counts.written,
        "unified_written": counts.unified,
        "partition_rows": summary.row_count,
    }


def run_child(rows: int, changes: int, repeat: int) -> dict[str, Any]:
    """A full sync of `rows`, then `repeat` incremental syncs of `changes` changed contacts each (the median is
    reported: the machine is shared), in a fresh warehouse."""
    from integrations_pipeline.warehouse import DuckDbWarehouse

    phases = PhaseRss()
    with tempfile.TemporaryDirectory(prefix="merge-bench-") as directory:
        warehouse = DuckDbWarehouse(Path(directory) / "warehouse.duckdb")
        full = sync(warehouse, contact_frames(rows), full=True, phases=phases)
        full["peak_rss_mib"] = round(_status_kib("VmHWM") / 1024, 1)
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM starts again from the current RSS
        baseline = round(_status_kib("VmRSS") / 1024, 1)
        runs = [
            sync(warehouse, contact_frames(changes, start=rows // 2, company=f"Changed {n}"), full=False, phases=phases)
            for n in range(repeat)
        ]
        incremental = sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2]
        incremental["walls"] = [run["seconds"] for run in runs]
        incremental["peak_rss_mib"] = round(_status_kib("VmHWM") / 1024, 1)
        incremental["rss_before_mib"] = baseline
    return {"rows": rows, "full": full, "incremental": incremental, "phase_peaks_mib": phases.stop()}


def measure(rows: int, changes: int = 10, repeat: int = 5) -> dict[str, Any]:
    """One size in a child interpreter of its own (its peak RSS is its own)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        command = [sys.executable, str(SCRIPT), "--child", str(rows), "--out", result.name]
        command += ["--changes", str(changes), "--repeat", str(repeat)]
        subprocess.run(command, check=True)
        return dict(json.loads(Path(result.name).read_text()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5, help="incremental syncs per size; the median is reported")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        Path(args.out).write_text(json.dumps(run_child(args.child, args.changes, args.repeat)))
        return 0
    load_before = os.getloadavg()[0]
    results = [measure(rows, args.changes, args.repeat) for rows in sorted(args.rows)]
    load_after = os.getloadavg()[0]
    for result in results:
        print(json.dumps(result))
    print(f"1-min load average: {load_before:.2f} before, {load_after:.2f} after")
    report(results, args.changes)
    return 0


def report(results: list[dict[str, Any]], changes: int) -> None:
    """Incremental: the largest partition against the smallest; full-sync memory: the largest against 100,000 (the
    goal's pair) when measured, else the smallest."""
    small, large = results[0], results[-1]
    ratio = large["incremental"]["seconds"] / small["incremental"]["seconds"]
    print(
        f"incremental {changes} after {large['rows']:,} / after {small['rows']:,}: wall {ratio:.2f}x "
        f"(goal <= {GOALS['incremental wall']}x), rows written "
        f"{large['incremental']['rows_written']} / {small['incremental']['rows_written']}, unified rows written "
        f"{large['incremental']['unified_written']} / {small['incremental']['unified_written']}"
    )
    base = next((result for result in results if result["rows"] == 100_000), small)
    ratio = large["full"]["peak_rss_mib"] / base["full"]["peak_rss_mib"]
    print(f"full-sync peak RSS {large['rows']:,} / {base['rows']:,}: {ratio:.2f}x (goal <= {GOALS['full peak RSS']}x)")


if __name__ == "__main__":
    sys.exit(main())
