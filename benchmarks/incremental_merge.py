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
        self.timings: dict[str, tuple[float, float]] = {}
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
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self._record()
            spent = self.timings.get(phase, (0.0, 0.0))
            self.timings[phase] = (spent[0] + time.perf_counter() - wall, spent[1] + time.process_time() - cpu)

    def take_timings(self) -> dict[str, tuple[float, float]]:
        """(wall, process CPU) of each phase since the last call."""
        timings, self.timings = self.timings, {}
        return timings

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {phase: round(peak, 1) for phase, peak in self.peaks.items()}


def contact_columns(raw: bool) -> tuple[str, ...]:
    from integrations_pipeline.records import CONTACT_COLUMNS, RAW_COLUMN

    return CONTACT_COLUMNS if raw else tuple(c for c in CONTACT_COLUMNS if c != RAW_COLUMN)


def raw_records(ids: Any, text: Any, company: str, stamps: Any) -> Any:
    """HubSpot contacts' JSON as `clients.values.raw_json` writes them (about 400 bytes each, as the emulator's)."""
    import numpy as np

    return (
        '{"id":"'
        + text
        + '","properties":{"company":"'
        + company
        + '","createdate":"'
        + stamps
        + '","email":"'
        + text
        + '@example.com","firstname":"Ada","hs_object_id":"'
        + text
        + '","jobtitle":"Engineer",'
        '"lastmodifieddate":"' + stamps + '","lastname":"' + text + '","lifecyclestage":"lead","phone":null,'
        '"hubspot_owner_id":"'
        + (ids % 8 + 1).astype(str).astype(object)
        + '","lead_score":"'
        + (ids % 100).astype(str).astype(object)
        + '"},"createdAt":"'
        + stamps
        + '","updatedAt":"'
        + stamps
        + '","archived":'
        + np.where(ids % 100 == 99, "true", "false").astype(object)
        + "}"
    )


def contact_frames(rows: int, start: int = 0, company: str = "Acme", raw: bool = True) -> Iterator[Any]:
    """Chunks of contacts with the columns and dtypes of `frames.to_frame` (built vectorized: no dicts); `raw`
    holds each record's JSON text, or the column is left out (the write path as it was before raw records)."""
    import numpy as np
    import pandas as pd

    from integrations_pipeline.frames import TIMESTAMP_DTYPE

    for first in range(start, start + rows, CHUNK_ROWS):
        ids = np.arange(first, min(first + CHUNK_ROWS, start + rows))
        text = ids.astype(str).astype(object)
        stamp = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(ids, unit="s")
        stamps = np.asarray(stamp.strftime("%Y-%m-%dT%H:%M:%S.000Z"), dtype=object)
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
            "raw": raw_records(ids, text, company, stamps),
        }
        yield pd.DataFrame({column: columns[column] for column in contact_columns(raw)})


def sync(warehouse: Any, frames: Iterator[Any], *, full: bool, raw: bool, phases: PhaseRss) -> dict[str, Any]:
    """Stage, then merge (unified following) and summarize in one transaction: what `assets.entities.sync_scope`
    does after fetching. Each phase's wall and process CPU (every thread of the process, DuckDB's included) are
    reported."""
    from integrations_pipeline.records import PRIMARY_KEY
    from integrations_pipeline.warehouse import (
        SUMMARY_KEYS_MAX,
        MergeTarget,
        PartitionSlice,
        SummaryRequest,
        UnifiedFollow,
    )

    columns = contact_columns(raw)
    part = PartitionSlice("hubspot.contacts", CONNECTION_ID)
    keys: list[str] = []
    with warehouse.staging(columns) as staging:
        for frame in frames:  # built outside the timed phase: the provider's pages would be, too
            with phases.during("stage"):
                staging.append(frame)
                if not full:
                    keys += frame["source_id"].tolist()
        written_keys = None if full or len(keys) > SUMMARY_KEYS_MAX else keys  # as sync_scope passes the fetched ids
        follow = UnifiedFollow("contacts", "bench", "hubspot", {})
        summary_request = SummaryRequest(PRIMARY_KEY, written_keys)
        with phases.during("merge and summary"):
            counts = staging.merge(MergeTarget(part, columns, PRIMARY_KEY, full, follow, summary=summary_request))
    assert counts.summary is not None
    summary = counts.summary
    timings = phases.take_timings()
    return {
        "seconds": round(sum(wall for wall, _ in timings.values()), 3),
        "cpu_seconds": round(sum(cpu for _, cpu in timings.values()), 3),
        "phases": {phase: {"wall": round(wall, 3), "cpu": round(cpu, 3)} for phase, (wall, cpu) in timings.items()},
        "rows_written": counts.written,
        "unified_written": counts.unified,
        "partition_rows": summary.row_count,
    }


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median wall, with every run's wall and CPU listed beside it."""
    median = dict(sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2])
    median["walls"] = [run["seconds"] for run in runs]
    median["cpus"] = [run["cpu_seconds"] for run in runs]
    return median


def run_child(rows: int, changes: int, repeat: int, raw: bool) -> dict[str, Any]:
    """A full sync of `rows`, then `repeat` incremental syncs of `changes` changed contacts each (the median is
    reported: the machine is shared), in a fresh warehouse."""
    from integrations_pipeline.warehouse import DuckDbWarehouse

    phases = PhaseRss()
    with tempfile.TemporaryDirectory(prefix="merge-bench-") as directory:
        warehouse = DuckDbWarehouse(Path(directory) / "warehouse.duckdb")
        full = sync(warehouse, contact_frames(rows, raw=raw), full=True, raw=raw, phases=phases)
        full["peak_rss_mib"] = round(_status_kib("VmHWM") / 1024, 1)
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM starts again from the current RSS
        baseline = round(_status_kib("VmRSS") / 1024, 1)
        runs = [
            sync(
                warehouse,
                contact_frames(changes, start=rows // 2, company=f"Changed {n}", raw=raw),
                full=False,
                raw=raw,
                phases=phases,
            )
            for n in range(repeat)
        ]
        incremental = median_run(runs)
        incremental["peak_rss_mib"] = round(_status_kib("VmHWM") / 1024, 1)
        incremental["rss_before_mib"] = baseline
    return {"rows": rows, "raw": raw, "full": full, "incremental": incremental, "phase_peaks_mib": phases.stop()}


def measure(rows: int, changes: int = 10, repeat: int = 5, raw: bool = True) -> dict[str, Any]:
    """One size in a child interpreter of its own (its peak RSS is its own)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        command = [sys.executable, str(SCRIPT), "--child", str(rows), "--out", result.name]
        command += ["--changes", str(changes), "--repeat", str(repeat), "--raw" if raw else "--no-raw"]
        subprocess.run(command, check=True)
        return dict(json.loads(Path(result.name).read_text()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5, help="incremental syncs per size; the median is reported")
    parser.add_argument(
        "--raw",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="stage each contact's raw JSON record (default); --no-raw leaves the column out",
    )
    parser.add_argument(
        "--compare-raw",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="instead: per size, ROUNDS children with raw and ROUNDS without, interleaved; compares the full syncs",
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        Path(args.out).write_text(json.dumps(run_child(args.child, args.changes, args.repeat, args.raw)))
        return 0
    load_before = os.getloadavg()[0]
    if args.compare_raw:
        compared = {
            rows: [
                measure(rows, args.changes, args.repeat, raw) for _ in range(args.compare_raw) for raw in (True, False)
            ]
            for rows in sorted(args.rows)
        }
        print(f"1-min load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
        for rows, results in compared.items():
            report_raw(rows, results)
        return 0
    results = [measure(rows, args.changes, args.repeat, args.raw) for rows in sorted(args.rows)]
    load_after = os.getloadavg()[0]
    for result in results:
        print(json.dumps(result))
    print(f"1-min load average: {load_before:.2f} before, {load_after:.2f} after")
    report(results, args.changes)
    return 0


def report_raw(rows: int, results: list[dict[str, Any]]) -> None:
    """The full sync with raw against without: medians of wall and CPU, per phase, and the peak RSS."""
    import statistics

    lines = []
    summary = {}
    for raw in (True, False):
        fulls = [result["full"] for result in results if result["raw"] is raw]
        phases = {
            phase: statistics.median(full["phases"][phase]["cpu"] for full in fulls) for phase in fulls[0]["phases"]
        }
        wall = statistics.median(full["seconds"] for full in fulls)
        cpu = statistics.median(full["cpu_seconds"] for full in fulls)
        peak = max(full["peak_rss_mib"] for full in fulls)
        summary[raw] = (wall, cpu, peak)
        per_phase = ", ".join(f"{phase} {seconds:.2f}" for phase, seconds in phases.items())
        lines.append(
            f"  {'with raw   ' if raw else 'without raw'}: wall {wall:.2f} s, CPU {cpu:.2f} s ({per_phase}), "
            f"peak RSS {peak:.0f} MiB; CPU per run {[full['cpu_seconds'] for full in fulls]}"
        )
    (wall, cpu, peak), (wall0, cpu0, peak0) = summary[True], summary[False]
    print(f"full sync of {rows:,} contacts, write path only (stage, then merge and summary in one transaction):")
    print("\n".join(lines))
    print(f"  with / without raw: wall {wall / wall0:.2f}x, CPU {cpu / cpu0:.2f}x, peak RSS {peak / peak0:.2f}x")


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
