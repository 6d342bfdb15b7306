"""Full-sync throughput of HubSpot contacts: the project's Dagster job against a lean httpx + pandas + DuckDB loop.

Both contenders read the same HubSpot emulator (burst limit off, so rate limiting does not dominate), served on
127.0.0.1 from this process together with the gateway and the SQLite state store. Every repetition of every
contender runs in a fresh child interpreter of this script, so the peak RSS it reads at its end (VmHWM) is that
contender's own and the shared servers are not counted; a child that only imports a contender's libraries gives
the import cost, so growth can be told apart from it. Each repetition is a full sync into an empty warehouse (a new
tenant and a fresh directory), so repetitions measure the same work.

    .venv/bin/python benchmarks/sync_throughput.py [--contacts 100000] [--repeat 3] [--profile-dir DIR]
        [--incremental N] [--baseline CHECKOUT]

Heavy libraries are imported inside the functions that use them: a lean child must not pay for Dagster's imports,
and the parent's imports must not leak into a child's figures. Exit status is 0 whether or not the goals are met:
this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    import httpx

SCRIPT = Path(__file__).resolve()
REPO_ROOT = SCRIPT.parent.parent
CONTENDERS = ("project", "lean")
CONTENDER_MODULES = {
    "project": ("dagster", "integrations_pipeline.definitions"),
    "lean": ("httpx", "pandas", "duckdb"),
}
"""What each contender imports before it syncs anything: an import-only child of the same list is the baseline."""
GOALS = {"wall": 1.5, "peak RSS": 1.3, "against baseline": 1.25}
"""Project / lean ceilings; project / baseline (--baseline: the code before raw records) for wall, RSS and CPU."""
ARCHIVED_EVERY = 100
# Far above any sync's call rate, and enforced, so the emulator's rate-limit headers say what it does: the project's
# budget learns the limit from them as it would at HubSpot, and throttling never dominates either contender.
BURST_LIMIT = 1_000_000
"""Archive every 100th emulator contact, so both contenders also page real archived records."""
CLIENT_ID = "bench-hubspot-app"
REDIRECT_URI = "http://127.0.0.1/lean-callback"
"""The lean loop never follows the redirect: it reads the code from the Location header."""
TABLE = "hubspot.contacts"


@dataclass(frozen=True)
class RunResult:
    seconds: float
    peak_rss_mib: float
    cpu_seconds: float = 0.0  # the child's CPU (every thread) over the timed section
    rows_fetched: int | None = None  # the project's materialization metadata
    rows_written: int | None = None
    unified_rows_written: int | None = None


@dataclass
class ContenderFigures:
    imports: RunResult
    runs: list[RunResult] = field(default_factory=list)
    incremental: RunResult | None = None
    """The project's incremental sync of --incremental changed contacts after its first full sync."""
    tables: list[tuple[int, list[tuple[str, str]]]] = field(default_factory=list)
    """(row count, [(column, type)]) of each run's warehouse table."""


# --- children ------------------------------------------------------------------------------------------------------


def peak_rss_mib() -> float:
    """This process's own peak RSS: VmHWM of its address space (Linux).

    `getrusage(RUSAGE_SELF).ru_maxrss` is not usable here: Linux carries the parent's peak across fork + exec into
    it, so every child would report at least the parent's size, emulator included."""
    status = Path("/proc/self/status").read_text()
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(kib) / 1024


@contextmanager
def profiled(profile_path: Path | None) -> Iterator[None]:
    """cProfile the timed section when asked, so the profile covers exactly what the wall time covers."""
    if profile_path is None:
        yield
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        profiler.dump_stats(profile_path)


def sync_with_project(connection_id: str, profile_path: Path | None) -> tuple[float, dict[str, int]]:
    """The production path: the `hubspot_sync` job, restricted to the contacts asset (its owners are not the
    lean loop's work), executed in process against the DAGSTER_HOME instance, with the connection's partition
    registered as the connections sensor would."""
    import dagster as dg

    from integrations_pipeline.definitions import build_definitions
    from integrations_pipeline.partitions import connection_partitions

    partitions_name = connection_partitions("hubspot").name
    assert partitions_name is not None
    instance = dg.DagsterInstance.get()
    if not instance.has_dynamic_partition(partitions_name, connection_id):
        instance.add_dynamic_partitions(partitions_name, [connection_id])
    started = time.perf_counter()
    with profiled(profile_path):
        result = (
            build_definitions()
            .resolve_job_def("hubspot_sync")
            .execute_in_process(
                partition_key=connection_id, instance=instance, asset_selection=[dg.AssetKey("hubspot_contacts")]
            )
        )
    elapsed = time.perf_counter() - started
    if not result.success:
        raise RuntimeError(f"hubspot_sync failed for {connection_id}")
    metadata = result.asset_materializations_for_node("hubspot_contacts")[0].metadata
    written = {name: int(metadata[name].value) for name in ("rows_fetched", "rows_written", "unified_rows_written")}  # type: ignore[arg-type]
    return elapsed, written


def exchange_code_for_token(
    http: httpx.Client, client_id: str, client_secret: str, scope: str = "crm.objects.contacts.read"
) -> str:
    """Authorize without following the redirect, then trade the code at the token endpoint."""
    authorized = http.get(
        "/oauth/authorize", params={"client_id": client_id, "redirect_uri": REDIRECT_URI, "scope": scope}
    )
    code = parse_qs(urlsplit(authorized.headers["location"]).query)["code"][0]
    grant = http.post(
        "/oauth/v1/token",
        data={
            "grant_type": "authorization_code",
            "client_id": client_id,
            "client_secret": client_secret,
            "redirect_uri": REDIRECT_URI,
            "code": code,
        },
    )
    return str(grant.raise_for_status().json()["access_token"])


def sync_lean(connection_id: str, properties: list[str], profile_path: Path | None) -> float:
    """The minimal honest loop: page live then archived contacts, map each to the project's columns, build one
    frame and write it as a DuckDB table. No retries, no validation models. The token exchange is not timed,
    as the project's token comes from the connect flow before its run."""
    import duckdb
    import httpx
    import pandas as pd

    with httpx.Client(base_url=os.environ["INTEGRATIONS_HUBSPOT__BASE_URL"], timeout=60) as http:
        token = exchange_code_for_token(
            http, os.environ["INTEGRATIONS_HUBSPOT__CLIENT_ID"], os.environ["INTEGRATIONS_HUBSPOT__CLIENT_SECRET"]
        )
        http.headers["Authorization"] = f"Bearer {token}"
        started = time.perf_counter()
        with profiled(profile_path):
            rows = []
            for archived in ("false", "true"):
                query = (("limit", "100"), ("archived", archived), *(("properties", name) for name in properties))
                after: str | None = None
                while True:
                    page_query = (*query, ("after", after)) if after else query
                    page = http.get("/crm/v3/objects/contacts", params=page_query).raise_for_status().json()
                    for contact in page["results"]:
                        values = contact["properties"]
                        modified_at = max(contact["updatedAt"], contact.get("archivedAt") or "")  # ISO 'Z' strings
                        rows.append(
                            (
                                connection_id,
                                contact["id"],
                                values.get("email"),
                                values.get("firstname"),
                                values.get("lastname"),
                                values.get("phone"),
                                values.get("company"),
                                values.get("jobtitle"),
                                contact.get("createdAt"),
                                modified_at,
                                contact["archived"],
                                json.dumps(contact),  # the record as sent, as the project keeps it (`raw`)
                            )
                        )
                    after = page.get("paging", {}).get("next", {}).get("after")
                    if not after:
                        break
            columns = ["connection_id", "source_id", "email", "first_name", "last_name", "phone", "company"]
            columns += ["job_title", "created_at", "modified_at", "is_deleted", "raw"]
            frame = pd.DataFrame(rows, columns=columns)
            for column in ("created_at", "modified_at"):
                frame[column] = pd.to_datetime(frame[column], utc=True).astype("datetime64[us, UTC]")
            with duckdb.connect(os.environ["INTEGRATIONS_WAREHOUSE_PATH"]) as warehouse:
                warehouse.execute("CREATE SCHEMA hubspot")
                warehouse.register("contacts_frame", frame)
                warehouse.execute(
                    f"CREATE TABLE {TABLE} AS SELECT * REPLACE (CAST(raw AS JSON) AS raw) FROM contacts_frame"
                )
        return time.perf_counter() - started


def run_child(args: argparse.Namespace) -> None:
    """Entry point of a child: import, or import and sync; then write wall time, CPU and peak RSS for the parent."""
    seconds, written = 0.0, {}
    for module in CONTENDER_MODULES[args.contender]:  # before the CPU clock starts, as before the wall's
        importlib.import_module(module)
    cpu_started = time.process_time()
    if args.imports_only:
        cpu_started = time.process_time()  # no sync: no CPU to report
    elif args.contender == "project":
        seconds, written = sync_with_project(args.connection_id, args.profile)
    else:
        seconds = sync_lean(args.connection_id, args.properties.split(","), args.profile)
    cpu = time.process_time() - cpu_started
    result = RunResult(seconds=seconds, peak_rss_mib=peak_rss_mib(), cpu_seconds=cpu, **written)
    Path(args.result_file).write_text(json.dumps(result.__dict__))


# --- parent --------------------------------------------------------------------------------------------------------


def run_in_child(contender: str, workdir: Path, *options: str, code: Path | None = None) -> RunResult:
    """Run this script as a child contender with a warehouse and DAGSTER_HOME of its own under `workdir` (a second
    run in the same `workdir` syncs the same warehouse and instance again: incremental, for the project). `code`: a
    checkout whose `integrations_pipeline` the child imports instead of this one's (--baseline)."""
    dagster_home = workdir / "dagster"
    if not dagster_home.exists():
        dagster_home.mkdir(parents=True)
        shutil.copyfile(REPO_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    result_file = workdir / "result.json"
    environment = {
        **os.environ,
        "INTEGRATIONS_WAREHOUSE_PATH": str(workdir / "warehouse.duckdb"),
        "DAGSTER_HOME": str(dagster_home),
    }
    if code is not None:
        environment["PYTHONPATH"] = os.pathsep.join([str(code), environment.get("PYTHONPATH", "")])
    command = [sys.executable, str(SCRIPT), "--contender", contender, "--result-file", str(result_file), *options]
    finished = subprocess.run(command, env=environment, cwd=workdir, capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        sys.stderr.write(finished.stdout + finished.stderr)
        raise RuntimeError(f"{contender} child failed with exit status {finished.returncode}")
    return RunResult(**json.loads(result_file.read_text()))


def warehouse_shape(workdir: Path) -> tuple[int, list[tuple[str, str]]]:
    """Row count and (column, type) list of the table a child wrote: both contenders must write the same."""
    import duckdb

    with duckdb.connect(str(workdir / "warehouse.duckdb"), read_only=True) as warehouse:
        count = warehouse.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
        columns = warehouse.execute(f"DESCRIBE {TABLE}").fetchall()
    return int(count[0]) if count else 0, [(name, kind) for name, kind, *_ in columns]


def configure_environment(workdir: Path, sandbox_url: str, gateway_url: str, client_secret: str) -> str:
    """INTEGRATIONS_* as the test `stack` fixture sets them, replacing any the caller had, and the working
    directory moved to `workdir` so no developer `.env` is read; children inherit both. Returns the API key."""
    from integrations_pipeline.crypto import generate_key_entry

    for name in [name for name in os.environ if name.startswith("INTEGRATIONS_")]:
        del os.environ[name]
    os.chdir(workdir)
    api_key = secrets.token_urlsafe(24)
    os.environ.update(
        {
            "INTEGRATIONS_STATE_DATABASE_URL": f"sqlite:///{workdir / 'state.db'}",
            "INTEGRATIONS_WAREHOUSE_PATH": str(workdir / "unused-by-parent.duckdb"),
            "INTEGRATIONS_ENCRYPTION_KEYS": generate_key_entry("bench1"),
            "INTEGRATIONS_API_KEY": api_key,
            "INTEGRATIONS_PUBLIC_URL": gateway_url,
            "INTEGRATIONS_HUBSPOT__CLIENT_ID": CLIENT_ID,
            "INTEGRATIONS_HUBSPOT__CLIENT_SECRET": client_secret,
            "INTEGRATIONS_HUBSPOT__BASE_URL": sandbox_url,
        }
    )
    return api_key


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, ContenderFigures]:
    """Serve emulator and gateway, then run baselines and interleaved repetitions of both contenders."""
    from integrations_pipeline.clients.hubspot import CONTACT_PROPERTIES
    from integrations_pipeline.devstack import connect_through_oauth
    from integrations_pipeline.gateway import create_app
    from integrations_pipeline.httpserver import BackgroundServer
    from integrations_pipeline.sandbox.hubspot import HubSpotEmulator
    from integrations_pipeline.settings import load_settings
    from integrations_pipeline.store import StateStore, create_store_engine
    from integrations_pipeline.store import migrate as migrations

    emulator_secret = secrets.token_urlsafe(24)
    emulator = HubSpotEmulator(
        client_id=CLIENT_ID,
        client_secret=emulator_secret,
        contacts=args.contacts,
        burst_limit=BURST_LIMIT,
        daily_limit=10**9,
    )
    for contact_id in range(ARCHIVED_EVERY, args.contacts + 1, ARCHIVED_EVERY):
        emulator.archive_contact(str(contact_id))
    if args.without_custom_properties:  # every contender then fetches the same properties (the baseline's)
        for name in list(emulator.properties.custom_names("contacts")):
            emulator.properties.archive("contacts", name)
    with BackgroundServer(emulator.app) as sandbox:
        gateway_server = BackgroundServer()
        api_key = configure_environment(workdir, sandbox.url, gateway_server.url, emulator_secret)
        settings = load_settings()
        engine = create_store_engine(settings.state_database_url)
        migrations.upgrade(engine)
        store = StateStore(engine, settings.keyring())
        with gateway_server.start(create_app(settings, store)):
            figures = {
                name: ContenderFigures(imports=run_in_child(name, workdir / f"imports-{name}", "--imports-only"))
                for name in CONTENDERS
            }
            if args.baseline:
                figures["baseline"] = ContenderFigures(imports=figures["project"].imports)
            names = ("lean", "project", *(["baseline"] if args.baseline else []))
            for repetition in range(args.repeat):
                for name in names:  # interleaved, so background load drifts over all alike
                    run_dir = workdir / f"{name}-{repetition}"
                    if name in ("project", "baseline"):  # a new tenant each time: no cursor, no partition yet
                        tenant = f"{name}{repetition}"
                        connection = connect_through_oauth(gateway_server.url, api_key, "hubspot", tenant)
                        options = ["--connection-id", str(connection["id"])]
                    else:
                        options = ["--connection-id", f"lean{repetition}", "--properties", ",".join(CONTACT_PROPERTIES)]
                    if args.profile_dir:
                        options += ["--profile", str(args.profile_dir / f"{name}-{repetition}.pstats")]
                    code = args.baseline if name == "baseline" else None
                    contender = "project" if name == "baseline" else name
                    figures[name].runs.append(run_in_child(contender, run_dir, *options, code=code))
                    figures[name].tables.append(warehouse_shape(run_dir))
                    if name == "project" and repetition == 0 and args.incremental:
                        for contact_id in range(1, args.incremental + 1):  # none of them archived
                            emulator.update_contact(str(contact_id * 7), {"company": f"Changed {repetition}"})
                        figures[name].incremental = run_in_child(name, run_dir, *options)
        engine.dispose()
    return figures


def check_same_output(figures: dict[str, ContenderFigures], expected_rows: int) -> None:
    """A comparison only means something if both contenders wrote the same table."""
    tables = [table for name in CONTENDERS for table in figures[name].tables]
    if any(table != tables[0] for table in tables) or tables[0][0] != expected_rows:
        raise RuntimeError(f"contenders wrote different tables (expected {expected_rows} rows): {tables}")
    baseline = figures.get("baseline")  # older code: its columns may differ, its rows may not
    if baseline is not None and any(rows != expected_rows for rows, _ in baseline.tables):
        raise RuntimeError(f"the baseline wrote other row counts than {expected_rows}: {baseline.tables}")


def verdict(ratio: float, ceiling: float) -> str:
    return f"{ratio:.2f}x (goal <= {ceiling}x: {'MET' if ratio <= ceiling else 'NOT MET'})"


def report(figures: dict[str, ContenderFigures], records: int, load_before: float, load_after: float) -> None:
    header = (
        f"{'contender':<10} {'wall s':>8} {'CPU s':>7} {'records/s':>10} {'peak RSS MiB':>13} {'imports MiB':>12} "
        f"{'growth MiB':>11}"
    )
    print(header)
    print("-" * len(header))
    summary: dict[str, tuple[float, float, float]] = {}
    for name in figures:
        runs = figures[name].runs
        wall = statistics.median(run.seconds for run in runs)
        cpu = statistics.median(run.cpu_seconds for run in runs)
        peak = max(run.peak_rss_mib for run in runs)
        imports = figures[name].imports.peak_rss_mib
        summary[name] = (wall, peak, cpu)
        print(
            f"{name:<10} {wall:>8.2f} {cpu:>7.2f} {records / wall:>10,.0f} {peak:>13.0f} {imports:>12.0f} "
            f"{peak - imports:>11.0f}"
        )
    for name in figures:
        print(f"{name} walls (s): {', '.join(f'{run.seconds:.2f}' for run in figures[name].runs)}")
        print(f"{name} CPU (s): {', '.join(f'{run.cpu_seconds:.2f}' for run in figures[name].runs)}")
    print(f"1-min load average: {load_before:.2f} before, {load_after:.2f} after")
    wall_ratio = summary["project"][0] / summary["lean"][0]
    rss_ratio = summary["project"][1] / summary["lean"][1]
    print(f"project/lean wall:     {verdict(wall_ratio, GOALS['wall'])}")
    print(f"project/lean peak RSS: {verdict(rss_ratio, GOALS['peak RSS'])}")
    if "baseline" in summary:  # issue 12: keeping raw records costs at most 25% of the code before them
        ratios = [project / baseline for project, baseline in zip(summary["project"], summary["baseline"], strict=True)]
        for label, ratio in zip(("wall", "peak RSS", "CPU"), ratios, strict=True):
            print(f"project/baseline {label}: {verdict(ratio, GOALS['against baseline'])}")
    incremental = figures["project"].incremental
    if incremental is not None:
        print(
            f"project incremental sync after the first full sync: {incremental.seconds:.2f} s "
            f"({incremental.cpu_seconds:.2f} CPU-s), rows fetched "
            f"{incremental.rows_fetched} (archived contacts are read only after a deletion), rows written "
            f"{incremental.rows_written}, unified rows written {incremental.unified_rows_written}, "
            f"peak RSS {incremental.peak_rss_mib:.0f} MiB"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=100_000, help="contacts in the emulator (default 100000)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per contender; times are medians")
    parser.add_argument("--profile-dir", type=Path, help="write a cProfile .pstats file per timed run here")
    parser.add_argument(
        "--incremental", type=int, default=0, help="then change this many contacts and sync the project again"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of older code (e.g. `git worktree add /tmp/noraw 06362d3`) run as a third contender",
    )
    parser.add_argument(
        "--without-custom-properties",
        action="store_true",
        help="archive the portal's custom contact properties first: the project, which requests its catalog, "
        "then fetches what the lean loop and a baseline older than the catalog fetch (raw's own cost, like for like)",
    )
    child = parser.add_argument_group("child mode (used by the benchmark itself)")
    child.add_argument("--contender", choices=CONTENDERS)
    child.add_argument("--result-file")
    child.add_argument("--imports-only", action="store_true")
    child.add_argument("--connection-id")
    child.add_argument("--properties")
    child.add_argument("--profile", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.contender:
        run_child(args)
        return 0
    if args.profile_dir:
        args.profile_dir = args.profile_dir.resolve()  # the benchmark changes directory before children start
        args.profile_dir.mkdir(parents=True, exist_ok=True)
        print(f"profiling into {args.profile_dir}: wall times include cProfile overhead")
    if args.baseline:
        args.baseline = args.baseline.resolve()
    archived = args.contacts // ARCHIVED_EVERY
    print(f"{args.contacts:,} contacts ({archived:,} archived), {args.repeat} repetition(s) per contender")
    print("wall: median of repetitions; peak RSS: max of repetitions; imports: a child that only imports")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="sync-bench-") as workdir:
        figures = measure(args, Path(workdir))
    load_after = os.getloadavg()[0]
    check_same_output(figures, args.contacts)
    report(figures, args.contacts, load_before, load_after)
    return 0


if __name__ == "__main__":
    sys.exit(main())
