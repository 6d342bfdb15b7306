"""Many tenants on one machine (issue 11): what orchestration costs per connection, and what scales with tenants.

1. Daemon: K tiny HubSpot connections (`--connections 20,200`, `--contacts` each) connected through the gateway, then
   synced by the real `dagster-daemon run` (queued run coordinator, default run launcher, the repository's
   dagster.yaml): their first syncs come from connections_sensor. Measured: the total CPU-seconds of every process
   the daemon started (code server, run workers, step processes), per connection sync, from the moment it starts
   until the runs are over (every connection synced, or the runs ended) and no run has been queued or running for
   `--settle` seconds (follow-up runs included). This process is a child subreaper, so every descendant is reaped
   here and its CPU lands in this process's RUSAGE_CHILDREN, however short it lived. Against it: lean loops syncing
   the same K connections in one child process each (httpx + pandas + DuckDB), their CPU measured the same way:
   owners and contacts (the issue's contender), and the same plus three live days of meetings (the work of the
   daemon's first sync, which runs the events job too).
   Goals: at most 1.0 CPU-s per connection sync at K = 200, and within 3x of the lean loop.
2. Ticks: one evaluation, as the daemon evaluates it (Dagster resolving every request), of the HubSpot sync and
   events schedules, of connections_sensor with every connection new, and of webhook_events_sensor with one
   pending event per connection (up to its 5,000-event bound), at `--tick-sizes 1000,10000` connections.
   Goal: under 10 s at 10,000.
3. Incremental after full (`--incremental-sizes 10000[,1000000]`): one connection's full sync of N contacts, then 10
   contacts changed at the emulator and an incremental sync, each in a fresh child through the project's job
   (`benchmarks/sync_throughput.py`'s project contender): wall, peak RSS (VmHWM) and the materialization's row
   counts. Goals (issue 11): 10 rows written, wall at 1,000,000 within 1.5x of 10,000, full-sync RSS flat.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/tenant_scale.py [--quick] [--connections 20,200]
        [--tick-sizes 1000,10000] [--incremental-sizes 10000] [--skip daemon,ticks,incremental] [--keep]

The orchestration goals alone: `--skip ticks,incremental`.

`--quick`: K = 20 only, ticks at 1,000 and 10,000, incremental at 10,000. Exit status is 0 whether or not the goals
are met: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sync_throughput import (  # the same stack set-up (same directory)
    CLIENT_ID,
    configure_environment,
    exchange_code_for_token,
)

SCRIPT = Path(__file__).resolve()
REPO_ROOT = SCRIPT.parent.parent
SYNC_THROUGHPUT = SCRIPT.parent / "sync_throughput.py"
PR_SET_CHILD_SUBREAPER = 36
CHANGED_CONTACTS = 10
LEAN_SCOPES = "oauth crm.objects.contacts.read crm.objects.owners.read"  # owners and contacts, as the sync job
DAEMON_TIMEOUT_S = 1800
IN_FLIGHT = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def reap_all() -> None:
    """Wait for every descendant that ended (orphans are reparented here: see become_subreaper)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.1)


def become_subreaper() -> None:
    """Orphaned descendants (run workers whose launcher never waits for them) become this process's children."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def dagster_home(workdir: Path) -> Path:
    home = workdir / "dagster"
    home.mkdir(parents=True)
    shutil.copyfile(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


@contextmanager
def hubspot_stack(workdir: Path, contacts: int) -> Iterator[tuple[Any, str, Any]]:
    """The HubSpot emulator and the gateway on 127.0.0.1 in this process, the state store migrated:
    (emulator, gateway url, store). The environment points children at them."""
    from integrations_pipeline.gateway import create_app
    from integrations_pipeline.httpserver import BackgroundServer
    from integrations_pipeline.sandbox.hubspot import HubSpotEmulator
    from integrations_pipeline.settings import load_settings
    from integrations_pipeline.store import StateStore, create_store_engine
    from integrations_pipeline.store import migrate as migrations

    workdir.mkdir(parents=True, exist_ok=True)
    emulator_secret = secrets.token_urlsafe(24)
    emulator = HubSpotEmulator(
        client_id=CLIENT_ID, client_secret=emulator_secret, contacts=contacts, burst_limit=None, daily_limit=10**9
    )
    with BackgroundServer(emulator.app) as sandbox:
        gateway = BackgroundServer()
        os.environ["BENCH_API_KEY"] = configure_environment(workdir, sandbox.url, gateway.url, emulator_secret)
        settings = load_settings()
        engine = create_store_engine(settings.state_database_url)
        migrations.upgrade(engine)
        store = StateStore(engine, settings.keyring())
        with gateway.start(create_app(settings, store)):
            yield emulator, gateway.url, store
        engine.dispose()


# --- 1. the daemon against a lean loop ------------------------------------------------------------------------------


def connect_tenants(gateway_url: str, count: int) -> list[str]:
    from integrations_pipeline.devstack import connect_through_oauth

    api_key = os.environ["BENCH_API_KEY"]
    return [str(connect_through_oauth(gateway_url, api_key, "hubspot", f"t{n:05d}")["id"]) for n in range(count)]


class TreeSampler:
    """Samples the CPU of a process tree every half second, by role, to say where the total went. The total itself
    comes from RUSAGE_CHILDREN (exact); a process shorter than a sample is missing here."""

    # The code server starts run workers with multiprocessing's spawn (`python -B -c "from multiprocessing...`).
    ROLES = (
        ("execute_run", "run workers"),
        ("multiprocessing", "run workers"),
        ("api grpc", "code server"),
        ("dagster-daemon", "daemon"),
    )

    def __init__(self, root: int) -> None:
        import psutil

        self.root = psutil.Process(root)
        self.latest: dict[tuple[int, float], tuple[str, float]] = {}
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def role(self, command: str) -> str:
        return next((role for marker, role in self.ROLES if marker in command), " ".join(command.split()[1:4])[:60])

    def _run(self) -> None:
        import psutil

        while not self.stopped.wait(0.5):
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for process in processes:
                try:
                    with process.oneshot():
                        times = process.cpu_times()
                        key = (process.pid, process.create_time())
                        role = self.latest[key][0] if key in self.latest else self.role(" ".join(process.cmdline()))
                except psutil.Error:
                    continue
                self.latest[key] = (role, times.user + times.system)

    def by_role(self) -> dict[str, float]:
        self.stopped.set()
        self.thread.join()
        totals: dict[str, float] = {}
        for role, seconds in self.latest.values():
            totals[role] = totals.get(role, 0.0) + seconds
        return totals


def wait_until_settled(
    store: Any, connection_ids: list[str], settle_s: float, daemon: subprocess.Popen[bytes]
) -> tuple[int, int]:
    """Until no run was queued or running for `settle_s` after every connection synced, or after the runs ended
    with some connections never synced (failed partitions: nothing would sync them before the next schedule tick);
    (runs, connections synced)."""
    import dagster as dg

    instance = dg.DagsterInstance.get()
    deadline = time.monotonic() + DAEMON_TIMEOUT_S
    quiet_since: float | None = None
    synced = 0
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise RuntimeError("dagster-daemon exited")
        synced = sum(1 for c in store.list_connections(provider="hubspot") if c.last_sync_at is not None)
        busy = instance.get_runs_count(dg.RunsFilter(statuses=[dg.DagsterRunStatus[s] for s in IN_FLIGHT]))
        if busy == 0 and (synced == len(connection_ids) or instance.get_runs_count() > 0):
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= settle_s:
                return int(instance.get_runs_count()), synced
        else:
            quiet_since = None
        time.sleep(1)
    raise RuntimeError(f"not settled within {DAEMON_TIMEOUT_S} s ({synced} of {len(connection_ids)} synced)")


def daemon_cpu(workdir: Path, count: int, contacts: int, settle_s: float) -> dict[str, float]:
    """CPU-seconds of everything `dagster-daemon run` started while it synced `count` new connections."""
    import dagster as dg

    with hubspot_stack(workdir, contacts) as (_, gateway_url, store):
        dagster_home(workdir)
        shutil.copyfile(REPO_ROOT / "workspace.yaml", workdir / "workspace.yaml")
        ids = connect_tenants(gateway_url, count)
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
        command = [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", "workspace.yaml"]
        reap_all()
        before = children_cpu_s()
        started = time.monotonic()
        with (workdir / "daemon.log").open("wb") as log:
            daemon = subprocess.Popen(command, cwd=workdir, env=environment, stdout=log, stderr=log)
            sampler = TreeSampler(daemon.pid)
            try:
                runs, synced = wait_until_settled(store, ids, settle_s, daemon)
                roles = sampler.by_role()
            finally:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()
                reap_all()
        elapsed = time.monotonic() - started
        failed = dg.DagsterInstance.get().get_runs_count(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    cpu = children_cpu_s() - before
    figures = {"cpu_s": cpu, "per_sync": cpu / count, "runs": runs, "failed_runs": failed, "wall_s": elapsed}
    figures["connections_synced"] = synced
    return figures | {f"sampled {role} cpu_s": value for role, value in roles.items()}


def lean_child(connection_count: int, with_events: bool) -> None:
    """The lean loop: for each connection, a token, then owners and contacts paged, mapped and written to DuckDB;
    `with_events`: also each of the three live days' meetings (a search over the day, then the archived meetings
    in it), as the first sync through the daemon does (connections_sensor asks for both jobs)."""

    import duckdb
    import httpx
    import pandas as pd

    from integrations_pipeline.clients.hubspot import (
        CONTACT_PROPERTIES,
        MEETING_PROPERTIES,
        MEETING_START_PROPERTY,
        parse_instant,
        range_filters,
    )

    base = os.environ["INTEGRATIONS_HUBSPOT__BASE_URL"]
    client_id, client_secret = (
        os.environ["INTEGRATIONS_HUBSPOT__CLIENT_ID"],
        os.environ["INTEGRATIONS_HUBSPOT__CLIENT_SECRET"],
    )
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    days = [today + timedelta(days=offset) for offset in (-1, 0, 1)] if with_events else []

    def paged(http: httpx.Client, headers: dict[str, str], path: str, query: list[Any], body: Any = None) -> Any:
        """Every result of a list (GET, `after` in the query) or a search (POST, `after` in the body)."""
        after = None
        while True:
            if body is None:
                params = [*query, *([("after", after)] if after else [])]
                response = http.get(path, params=params, headers=headers)
            else:
                response = http.post(path, json=body | ({"after": after} if after else {}), headers=headers)
            if response.status_code == 429:  # the search API's 5 per second: wait as told (no CPU), ask again
                time.sleep(float(response.headers.get("Retry-After", "1")))
                continue
            page = response.raise_for_status().json()
            yield from page["results"]
            after = page.get("paging", {}).get("next", {}).get("after")
            if not after:
                return

    def write(warehouse: Any, table: str, rows: list[Any], columns: list[str], where: str, key: list[Any]) -> None:
        frame = pd.DataFrame(rows, columns=columns)  # typed, so that a first empty day still creates the table
        for column in columns:
            if column.endswith("_at"):
                frame[column] = pd.to_datetime(frame[column], utc=True)
            else:
                frame[column] = frame[column].astype(bool if column == "is_deleted" else "string")
        warehouse.register("frame", frame)
        warehouse.execute(f"CREATE TABLE IF NOT EXISTS hubspot.{table} AS SELECT * FROM frame LIMIT 0")
        warehouse.execute(f"DELETE FROM hubspot.{table} WHERE {where}", key)
        warehouse.execute(f"INSERT INTO hubspot.{table} SELECT * FROM frame")
        warehouse.unregister("frame")

    with httpx.Client(base_url=base, timeout=60) as http, duckdb.connect(os.environ["LEAN_WAREHOUSE"]) as warehouse:
        warehouse.execute("CREATE SCHEMA IF NOT EXISTS hubspot")
        for n in range(connection_count):
            connection_id = f"lean-{n:05d}"
            token = exchange_code_for_token(http, client_id, client_secret, LEAN_SCOPES)
            headers = {"Authorization": f"Bearer {token}"}
            owners = http.get("/crm/v3/owners/", params={"limit": 100}, headers=headers).raise_for_status().json()
            owner_rows = [(connection_id, str(o["id"]), o.get("email"), o.get("updatedAt")) for o in owners["results"]]
            contact_rows = [
                (connection_id, c["id"], c["properties"].get("email"), c["updatedAt"], c["archived"])
                for archived in ("false", "true")
                for c in paged(
                    http,
                    headers,
                    "/crm/v3/objects/contacts",
                    [("limit", "100"), ("archived", archived), *(("properties", p) for p in CONTACT_PROPERTIES)],
                )
            ]
            where = "connection_id = ?"
            write(
                warehouse,
                "owners",
                owner_rows,
                ["connection_id", "source_id", "email", "modified_at"],
                where,
                [connection_id],
            )
            contact_columns = ["connection_id", "source_id", "email", "modified_at", "is_deleted"]
            write(warehouse, "contacts", contact_rows, contact_columns, where, [connection_id])
            for day in days:
                end = day + timedelta(days=1)
                search = {
                    "filterGroups": [{"filters": range_filters(MEETING_START_PROPERTY, day, end)}],
                    "sorts": [{"propertyName": MEETING_START_PROPERTY, "direction": "ASCENDING"}],
                    "properties": list(MEETING_PROPERTIES),
                    "limit": 100,
                }
                live = paged(http, headers, "/crm/v3/objects/meetings/search", [], search)
                listed = [("limit", "100"), ("archived", "true"), *(("properties", p) for p in MEETING_PROPERTIES)]
                archived = paged(http, headers, "/crm/v3/objects/meetings", listed)
                meeting_rows = [
                    (connection_id, m["id"], start, m["updatedAt"], m.get("archived", False))
                    for m in [*live, *archived]
                    if (start := parse_instant(m["properties"].get(MEETING_START_PROPERTY))) is not None
                    and day <= start < end
                ]
                meeting_columns = ["connection_id", "source_id", "start_at", "modified_at", "is_deleted"]
                in_day = "connection_id = ? AND start_at >= ? AND start_at < ?"
                write(warehouse, "events", meeting_rows, meeting_columns, in_day, [connection_id, day, end])


def lean_cpu(workdir: Path, count: int, contacts: int, with_events: bool) -> dict[str, float]:
    with hubspot_stack(workdir, contacts):
        reap_all()
        before = children_cpu_s()
        environment = {**os.environ, "LEAN_WAREHOUSE": str(workdir / "lean.duckdb")}
        started = time.monotonic()
        command = [sys.executable, str(SCRIPT), "--lean-child", str(count), *(["--lean-events"] if with_events else [])]
        subprocess.run(command, env=environment, check=True)
        elapsed = time.monotonic() - started
    cpu = children_cpu_s() - before
    return {"cpu_s": cpu, "per_sync": cpu / count, "wall_s": elapsed}


def daemon_figures(args: argparse.Namespace, workdir: Path) -> None:
    print(f"\n## Daemon vs lean loop ({args.contacts} contacts per connection)")
    for count in args.connections:
        project = daemon_cpu(workdir / f"daemon-{count}", count, args.contacts, args.settle)
        print(f"K={count}: daemon figures {json.dumps({k: round(v, 3) for k, v in project.items()})}", flush=True)
        print(
            f"K={count}: daemon {project['cpu_s']:.1f} CPU-s = {project['per_sync']:.3f} per connection sync "
            f"({int(project['runs'])} runs, {int(project['failed_runs'])} failed, {project['wall_s']:.0f} s wall, "
            f"{int(project['connections_synced'])} of {count} connections synced)"
        )
        # The first sync through the daemon is owners, contacts and three live days of meetings: the lean loop
        # without meetings is the contender, the one with them does the same work as the daemon.
        for with_events, what in ((False, "owners + contacts"), (True, "owners + contacts + 3 days of meetings")):
            lean = lean_cpu(workdir / f"lean-{count}-{int(with_events)}", count, args.contacts, with_events)
            ratio = project["per_sync"] / lean["per_sync"]
            verdict = "met" if ratio <= 3 else "NOT met"
            print(
                f"K={count}: lean loop ({what}) {lean['cpu_s']:.2f} CPU-s = {lean['per_sync']:.3f} per sync "
                f"({lean['wall_s']:.1f} s); daemon / lean {ratio:.1f}x (goal <= 3x: {verdict})"
            )
        if count >= 200:
            met = "met" if project["per_sync"] <= 1.0 else "NOT met"
            print(f"K={count}: goal <= 1.0 CPU-s per connection sync: {met}")


# --- 2. ticks ---------------------------------------------------------------------------------------------------------


def add_connection_rows(store: Any, count: int) -> list[str]:
    """`count` active HubSpot connections (rows only: a tick never reads tokens)."""
    from integrations_pipeline.store import schema
    from integrations_pipeline.store.repository import utcnow

    now = utcnow()
    ids = [f"hubspot-s{n:06d}" for n in range(count)]
    base = {"provider": "hubspot", "status": "active", "requested_scopes": [], "granted_scopes": []}
    rows = [
        base | {"id": cid, "tenant": cid[8:], "provider_metadata": {}, "created_at": now, "updated_at": now}
        for cid in ids
    ]
    with store.engine.begin() as conn:
        conn.execute(schema.connections.insert(), rows)
    return ids


def timed(evaluate: Callable[[], int]) -> tuple[float, int]:
    started = time.perf_counter()
    requests = evaluate()
    return time.perf_counter() - started, requests


def ticks_at(size: int, workdir: Path) -> dict[str, tuple[float, int]]:
    """{what: (seconds, run requests)} of one evaluation each, with `size` HubSpot connections."""
    import dagster as dg

    from integrations_pipeline.definitions import build_definitions
    from integrations_pipeline.partitions import connection_partitions
    from integrations_pipeline.resources import IntegrationsResource
    from integrations_pipeline.sensors.webhooks import MAX_EVENTS_PER_TICK
    from integrations_pipeline.store.inbox import NewEvent, WebhookInbox

    with hubspot_stack(workdir, contacts=1) as (_, _, store):
        home = dagster_home(workdir)
        ids = add_connection_rows(store, size)
        definitions = build_definitions()
        repository = definitions.get_repository_def()
        resources = {"integrations": IntegrationsResource()}
        with dg.DagsterInstance.from_config(str(home)) as instance:

            def sensor(name: str) -> int:
                with dg.build_sensor_context(
                    instance=instance, repository_def=repository, resources=resources
                ) as context:
                    data = definitions.resolve_sensor_def(name).evaluate_tick(context)
                return len(data.run_requests or [])

            def schedule(name: str) -> int:
                tick = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
                with dg.build_schedule_context(
                    instance=instance, scheduled_execution_time=tick, repository_def=repository, resources=resources
                ) as context:
                    data = definitions.resolve_schedule_def(name).evaluate_tick(context)
                return len(data.run_requests or [])

            figures = {"connections_sensor (all new)": timed(lambda: sensor("connections_sensor"))}
            instance.add_dynamic_partitions(str(connection_partitions("hubspot").name), ids)
            figures["hubspot_hourly_sync"] = timed(lambda: schedule("hubspot_hourly_sync"))
            figures["hubspot_hourly_events_sync"] = timed(lambda: schedule("hubspot_hourly_events_sync"))
            events = [NewEvent("hubspot", f"e{n}", "change", cid, "contacts", None, {}) for n, cid in enumerate(ids)]
            WebhookInbox(store).receive(events[:MAX_EVENTS_PER_TICK])
            figures["webhook_events_sensor (1 event/connection)"] = timed(lambda: sensor("webhook_events_sensor"))
    return figures


def tick_figures(args: argparse.Namespace, workdir: Path) -> None:
    print("\n## Tick evaluations (Dagster resolving every request, as the daemon does)")
    for size in args.tick_sizes:
        for name, (seconds, requests) in ticks_at(size, workdir / f"ticks-{size}").items():
            print(f"{size:>6} connections: {name:42} {seconds:6.2f} s, {requests} run requests")


# --- 3. incremental after full -------------------------------------------------------------------------------------


def project_sync(workdir: Path, connection_id: str, label: str) -> dict[str, float]:
    """One run of the project's hubspot_sync (contacts) in a fresh child, via sync_throughput's project contender."""
    result_file = workdir / f"{label}.json"
    command = [sys.executable, str(SYNC_THROUGHPUT), "--contender", "project", "--connection-id", connection_id]
    command += ["--result-file", str(result_file)]
    finished = subprocess.run(command, cwd=workdir, capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        sys.stderr.write(finished.stdout[-4000:] + finished.stderr[-4000:])
        raise RuntimeError(f"{label} sync failed")
    return dict(json.loads(result_file.read_text()))


def materialized_counts(connection_id: str) -> dict[str, Any]:
    """Count-like metadata of the newest hubspot_contacts materialization of the partition (whatever the write
    path reports: rows_inserted, rows_written, rows_fetched, dagster/row_count...)."""
    import dagster as dg

    instance = dg.DagsterInstance.get()
    event = instance.get_latest_materialization_event(dg.AssetKey("hubspot_contacts"))
    materialization = event.asset_materialization if event is not None else None
    if materialization is None:
        return {}
    return {
        name: entry.value
        for name, entry in materialization.metadata.items()
        if "row" in name and isinstance(entry.value, int | float)
    }


def incremental_figures(args: argparse.Namespace, workdir: Path) -> None:
    print(f"\n## Incremental sync of {CHANGED_CONTACTS} changed contacts after a full sync (one partition)")
    results = {}
    for size in args.incremental_sizes:
        run_dir = workdir / f"incremental-{size}"
        with hubspot_stack(run_dir, contacts=size) as (emulator, gateway_url, _):
            dagster_home(run_dir)
            (connection_id,) = connect_tenants(gateway_url, 1)
            full = project_sync(run_dir, connection_id, "full") | materialized_counts(connection_id)
            for contact_id in range(1, CHANGED_CONTACTS + 1):
                emulator.update_contact(
                    str(contact_id * (size // CHANGED_CONTACTS)), {"jobtitle": f"changed {contact_id}"}
                )
            incremental = project_sync(run_dir, connection_id, "incremental") | materialized_counts(connection_id)
        results[size] = (full, incremental)
        for label, figures in (("full", full), ("incremental", incremental)):
            counts = ", ".join(f"{k} {v}" for k, v in figures.items() if k not in ("seconds", "peak_rss_mib"))
            print(
                f"{size:>9,} contacts, {label:11}: wall {figures['seconds']:.2f} s, "
                f"peak RSS {figures['peak_rss_mib']:.0f} MiB; {counts}"
            )
    if len(results) > 1:
        small, large = min(results), max(results)
        wall = results[large][1]["seconds"] / results[small][1]["seconds"]
        rss = results[large][0]["peak_rss_mib"] / results[small][0]["peak_rss_mib"]
        print(f"incremental wall {large:,} / {small:,}: {wall:.2f}x (goal <= 1.5x); full-sync peak RSS {rss:.2f}x")


# --- main ---------------------------------------------------------------------------------------------------------


def numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=numbers, default=[20, 200], help="K values for the daemon part")
    parser.add_argument("--contacts", type=int, default=18, help="contacts per tiny connection")
    parser.add_argument("--settle", type=float, default=35.0, help="seconds without runs that end a daemon part")
    parser.add_argument("--tick-sizes", type=numbers, default=[1_000, 10_000])
    parser.add_argument("--incremental-sizes", type=numbers, default=[10_000])
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: daemon, ticks, incremental")
    parser.add_argument("--quick", action="store_true", help="K = 20 only")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (daemon logs, instances)")
    parser.add_argument("--lean-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--lean-events", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.lean_child is not None:
        lean_child(args.lean_child, args.lean_events)
        return 0
    if args.quick:
        args.connections = [20]
    become_subreaper()
    skip = set(args.skip.split(","))
    load_before = os.getloadavg()[0]
    with (
        nullcontext(tempfile.mkdtemp(prefix="tenant-scale-"))
        if args.keep
        else tempfile.TemporaryDirectory(prefix="tenant-scale-")
    ) as temporary:
        workdir = Path(temporary)
        if args.keep:
            print(f"working directory (kept): {workdir}")
        os.chdir(workdir)  # no developer .env is read
        if "ticks" not in skip:
            tick_figures(args, workdir)
        if "daemon" not in skip:
            daemon_figures(args, workdir)
        if "incremental" not in skip:
            incremental_figures(args, workdir)
    print(f"\nload average (1 min) before {load_before:.1f}, after {os.getloadavg()[0]:.1f}, on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
