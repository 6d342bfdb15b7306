"""`make dev`: the whole product on one machine with the embedded defaults.

Writes a git-ignored `.env` (fresh keys, the sandbox app's credentials) where values are not already set,
migrates the state store, serves the sandbox emulator and the gateway from this process, connects the
`sandbox` tenant through the real OAuth flow, then runs `dagster dev` with sensors and schedules on.

Ctrl-C or SIGTERM stops everything in order: the daemon's runs first (queued ones cancelled, in-flight ones
terminated through their code server, a bounded wait for them to end), then `dagster dev` (its own session, so a
terminal's Ctrl-C reaches this process only and the order holds), then the emulators and the gateway. A port already
in use is one line saying which and what to do.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click
import httpx

from integrations_pipeline.crypto import generate_key_entry
from integrations_pipeline.gateway import create_app
from integrations_pipeline.httpserver import BackgroundServer
from integrations_pipeline.sandbox import EMULATORS
from integrations_pipeline.settings import Settings, SettingsError, load_settings
from integrations_pipeline.store import StateStore, create_store_engine
from integrations_pipeline.store import migrate as migrations

if TYPE_CHECKING:  # dagster loads only where the stack stops: the CLI stays quick to start
    import dagster as dg

ENV_FILE = Path(".env")
DAGSTER_HOME = Path(".data/dagster")
SANDBOX_TENANT = "sandbox"


def sandbox_ports(first_port: int) -> dict[str, int]:
    """One port per sandbox emulator from `first_port`: HubSpot first (the dev stack's first provider, so older
    .env files keep their port), then the others by name."""
    order = sorted(EMULATORS, key=lambda provider: (provider != "hubspot", provider))
    return {provider: first_port + offset for offset, provider in enumerate(order)}


ZOHO_SECOND_DATA_CENTRE = "eu"


ZOHO_SECOND_PORT_NAMES = ("sandbox zoho EU accounts server", "sandbox zoho EU API host")


def zoho_data_centre_ports(sandbox_port: int) -> tuple[int, int]:
    """Where the dev stack serves the Zoho emulator's second data centre: its accounts server, then its API host."""
    after = sandbox_port + len(EMULATORS)
    return after, after + 1


def serve_zoho_data_centres(emulator: Any, servers: ExitStack, base_url: str, ports: tuple[int, int] = (0, 0)) -> str:
    """Serve the Zoho emulator as two data centres: the US one at `base_url` (accounts server and API host on one
    origin, as the settings' base_url means), the EU one on an accounts origin and an API origin of its own. Returns
    the EU accounts server, which the settings must list for the gateway to believe a callback naming it."""
    accounts, api = (servers.enter_context(BackgroundServer(emulator.app, port=port)) for port in ports)
    emulator.serve_data_centre("us", accounts_origin=base_url, api_origin=base_url)
    emulator.serve_data_centre(ZOHO_SECOND_DATA_CENTRE, accounts_origin=accounts.url, api_origin=api.url)
    return str(accounts.url)


def dev_environment(gateway_port: int, sandbox_port: int) -> dict[str, str]:
    """Values `make dev` needs; secrets are fresh random ones, written once and kept."""
    environment = {
        "INTEGRATIONS_STATE_DATABASE_URL": "sqlite:///.data/state.db",
        "INTEGRATIONS_WAREHOUSE_PATH": ".data/warehouse.duckdb",
        # The key id derives from the key: a key generated again (say .env was deleted) never reuses an old id.
        "INTEGRATIONS_ENCRYPTION_KEYS": generate_key_entry(),
        "INTEGRATIONS_API_KEY": secrets.token_urlsafe(24),
        "INTEGRATIONS_PUBLIC_URL": f"http://127.0.0.1:{gateway_port}",
    }
    for provider, port in sandbox_ports(sandbox_port).items():
        prefix = f"INTEGRATIONS_{provider.upper()}__"
        environment |= {
            prefix + "CLIENT_ID": f"sandbox-{provider}-app",
            prefix + "CLIENT_SECRET": secrets.token_urlsafe(24),
            prefix + "BASE_URL": f"http://127.0.0.1:{port}",
        }
    zoho_accounts_port = zoho_data_centre_ports(sandbox_port)[0]
    environment["INTEGRATIONS_ZOHO__ACCOUNTS_SERVERS"] = json.dumps([f"http://127.0.0.1:{zoho_accounts_port}"])
    return environment


def ensure_env_file(defaults: dict[str, str], path: Path = ENV_FILE) -> list[str]:
    """Append the variables neither the environment nor the file sets yet; return their names."""
    existing = path.read_text().splitlines() if path.exists() else []
    present = {line.split("=", 1)[0].strip() for line in existing if "=" in line and not line.startswith("#")}
    missing = [name for name in defaults if name not in present and name not in os.environ]
    if missing:
        with path.open("a") as env_file:
            if not existing:
                env_file.write("# Written by `make dev` for local development only; git-ignored. Do not commit.\n")
            env_file.writelines(f"{name}={defaults[name]}\n" for name in missing)
        path.chmod(0o600)
    return missing


def build_emulator(provider: str, settings: Settings, *, contacts: int = 2_000, today: date | None = None) -> Any:
    """A sandbox emulator whose events lie around `today` (the current UTC date by default): weeks of past and
    coming events, so the first sync of a new connection finds some on its live days."""
    if provider not in EMULATORS:
        raise SettingsError(f"no sandbox emulator for {provider!r}; available: {', '.join(sorted(EMULATORS))}")
    app = settings.provider_app(provider)
    return EMULATORS[provider](
        client_id=app.client_id,
        client_secret=app.client_secret.get_secret_value(),
        contacts=contacts,
        events_around=today or datetime.now(UTC).date(),
    )


def connect_through_oauth(gateway_url: str, api_key: str, provider: str, tenant: str) -> dict[str, Any]:
    """What a person does in a browser: start at the gateway, consent at the provider, land back on the callback.
    This client asks for no HTML, so the sandbox consents at once (a browser gets its consent page) and the gateway
    answers with the connection as JSON."""
    with httpx.Client(timeout=30, follow_redirects=True) as browser:
        started = browser.post(
            f"{gateway_url}/connections/{provider}/connect",
            json={"tenant": tenant},
            headers={"Authorization": f"Bearer {api_key}"},
        )
        started.raise_for_status()
        landed = browser.get(started.json()["authorization_url"])
        landed.raise_for_status()
        return landed.json()


def connect_sandbox(gateway_url: str, api_key: str, provider: str, tenant: str) -> str:
    """`connect_through_oauth` for `make dev`: one line saying what was connected, or which provider failed, why
    and what to do (the rest of the stack starts either way; the provider's syncs will fail until it connects)."""
    try:
        connection = connect_through_oauth(gateway_url, api_key, provider, tenant)
    except httpx.HTTPStatusError as refused:
        reason = f"{refused.request.url.host}:{refused.request.url.port} answered {refused.response.status_code}"
        try:
            body = refused.response.json()
            reason += f" {body['error']}: {body['message']}"
        except (ValueError, KeyError, TypeError):  # not the gateway's error body: the status says enough
            pass
    except httpx.HTTPError as unreachable:  # refused connection, timeout, broken answer
        reason = f"{type(unreachable).__name__} at {unreachable.request.url.host}:{unreachable.request.url.port}"
    else:
        return f"connected {connection['id']} ({connection['status']}) through the OAuth flow"
    prefix = f"INTEGRATIONS_{provider.upper()}__"
    return (
        f"could not connect the {tenant} tenant to sandbox {provider} ({' '.join(reason.split())}): check "
        f"{prefix}CLIENT_ID, {prefix}CLIENT_SECRET and {prefix}BASE_URL in {ENV_FILE} (delete them to have "
        "fresh ones written), then run `make dev` again; the other providers start anyway"
    )


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class PortUnavailableError(SettingsError):
    """A port the dev stack needs is taken (most often by a `make dev` already running) or not ours to use."""


def require_free_ports(ports: dict[str, int]) -> None:
    """Refuse, in one line, before anything starts, when one of `ports` ({what: port}) is already taken."""
    for what, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: TIME_WAIT is free
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as refusal:
                if refusal.errno != errno.EADDRINUSE:
                    raise PortUnavailableError(f"cannot listen on port {port} ({what}): {refusal.strerror}") from None
                raise PortUnavailableError(
                    f"port {port} ({what}) is already in use: is `make dev` already running? Stop it with Ctrl-C in "
                    "its terminal, or free the port, then run `make dev` again"
                ) from None


def start_dagster_dev(
    port: int, dagster_home: Path, environment: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`dagster dev` on 127.0.0.1:`port` with the dagster.yaml and workspace.yaml of the working directory (which
    must hold no stale `.env`: dagster dev loads it over the environment); its instance in `dagster_home`. In its
    own session: a terminal's Ctrl-C reaches only us, and `stop_dagster_dev` decides the order things stop in."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile("dagster.yaml", dagster_home / "dagster.yaml")
    env = {**(environment or os.environ), "DAGSTER_HOME": str(dagster_home.resolve())}
    command = [str(Path(sys.executable).with_name("dagster")), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1"]
    return subprocess.Popen([*command, "-p", str(port)], env=env, start_new_session=True)  # noqa: S603 (our argv)


RUN_STOP_WAIT_S = 30.0
"""How long stopping waits for terminated runs to end before stopping `dagster dev` anyway."""
DAGSTER_STOP_WAIT_S = 30.0
SESSION_END_WAIT_S = 10.0
_POLL_S = 0.25


def stop_runs(instance: dg.DagsterInstance, wait_s: float = RUN_STOP_WAIT_S) -> list[str]:
    """Cancel every queued run and terminate every in-flight one (through the code server that launched it, which
    must still be up), then wait up to `wait_s` for them all to end; runs the daemon launches meanwhile get the same.
    Returns the ids of runs still unfinished at the deadline."""
    import dagster as dg

    unfinished = dg.RunsFilter(
        statuses=[
            dg.DagsterRunStatus.NOT_STARTED,
            dg.DagsterRunStatus.QUEUED,
            dg.DagsterRunStatus.STARTING,
            dg.DagsterRunStatus.STARTED,
            dg.DagsterRunStatus.CANCELING,
        ]
    )
    asked: set[str] = set()
    deadline = time.monotonic() + wait_s
    while True:
        runs = instance.get_runs(filters=unfinished)
        for run in runs:
            # A starting run's worker marks itself failed if it finds the run already canceling: terminate it once
            # it has started, so it ends canceled.
            if run.run_id in asked or run.status == dg.DagsterRunStatus.STARTING:
                continue
            asked.add(run.run_id)
            if run.status == dg.DagsterRunStatus.NOT_STARTED:
                instance.report_run_canceled(run, message="Canceled: the dev stack is stopping.")
            else:  # queued: cancelled from the queue; launched: terminated by its run worker
                instance.run_coordinator.cancel_run(run.run_id)
        if not runs or time.monotonic() > deadline:
            return [run.run_id for run in runs]
        time.sleep(_POLL_S)  # polling the run storage: no event to await across processes


def stop_dagster_dev(dagster: subprocess.Popen[bytes], dagster_home: Path | None = None) -> None:
    """Stop the runs of the instance in `dagster_home` (when given), then `dagster dev` itself, then whatever of
    its session is left (a run worker that ignored its termination)."""
    if dagster_home is not None and dagster.poll() is None:
        import dagster as dg

        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            stuck = stop_runs(instance)
        if stuck:
            click.echo(f"{len(stuck)} runs still running after {RUN_STOP_WAIT_S:.0f} s; stopping them with dagster dev")
    dagster.send_signal(signal.SIGINT)  # dagster dev stops its own webserver, daemon and code servers
    try:
        dagster.wait(timeout=DAGSTER_STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        dagster.kill()
        dagster.wait()
    end_session(dagster.pid)


def end_session(session_id: int, wait_s: float = SESSION_END_WAIT_S) -> None:
    """End what is left of the session `start_dagster_dev` created (its code servers shut down only after it
    exits; a run worker may have ignored its termination): SIGTERM, a bounded wait, then SIGKILL."""
    for stop_signal in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.monotonic() + wait_s
        try:
            os.killpg(session_id, stop_signal)
            while time.monotonic() < deadline:
                os.killpg(session_id, 0)  # raises once no process of the session is left
                time.sleep(_POLL_S)
        except ProcessLookupError:
            return


def run_dev_stack(*, dagster_port: int, gateway_port: int, sandbox_port: int) -> None:
    # Handle both signals explicitly: a shell that starts us in the background leaves SIGINT ignored, and an
    # ignored signal would be inherited by `dagster dev` too. Handled ones reset to default in the child.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    written = ensure_env_file(dev_environment(gateway_port, sandbox_port))
    if written:
        click.echo(f"wrote {len(written)} local settings to {ENV_FILE} (git-ignored)")
    settings = load_settings()
    # Each emulator is served where the settings point (an older .env may use other ports than the defaults).
    emulator_ports = {
        provider: urlsplit(str(settings.provider_app(provider).base_url)).port or 0 for provider in sorted(EMULATORS)
    }
    require_free_ports(
        {"Dagster UI": dagster_port, "gateway": gateway_port}
        | {f"sandbox {provider} emulator": port for provider, port in emulator_ports.items() if port}
        | dict(zip(ZOHO_SECOND_PORT_NAMES, zoho_data_centre_ports(sandbox_port), strict=True))
    )
    engine = create_store_engine(settings.state_database_url)
    migrations.upgrade(engine)
    store = StateStore(engine, settings.keyring())
    with ExitStack() as servers:
        for provider, port in emulator_ports.items():
            emulator = build_emulator(provider, settings)
            server = servers.enter_context(BackgroundServer(emulator.app, port=port))
            click.echo(f"sandbox {provider} emulator on {server.url}")
            if provider == "zoho":
                ports = zoho_data_centre_ports(sandbox_port)
                accounts = serve_zoho_data_centres(emulator, servers, server.url, ports)
                click.echo(f"sandbox zoho {ZOHO_SECOND_DATA_CENTRE} data centre: accounts {accounts}, API :{ports[1]}")
        gateway_server = servers.enter_context(BackgroundServer(create_app(settings, store), port=gateway_port))
        click.echo(f"gateway on {gateway_server.url}")
        api_key = settings.require_api_key().get_secret_value()
        for provider in sorted(EMULATORS):
            click.echo(connect_sandbox(gateway_server.url, api_key, provider, SANDBOX_TENANT))
        click.echo(f"Dagster UI: http://127.0.0.1:{dagster_port}  (Ctrl-C stops everything)")
        dagster = start_dagster_dev(dagster_port, DAGSTER_HOME)
        try:
            dagster.wait()
        except KeyboardInterrupt:
            # A second Ctrl-C must not cut the ordered stop short; every wait in it is bounded.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            click.echo("stopping: the daemon's runs first, then dagster dev, then the emulators and the gateway")
        finally:
            stop_dagster_dev(dagster, DAGSTER_HOME)
    engine.dispose()
    click.echo("stopped")
