"""`make dev` in its first hour, with real processes: a busy port is one line saying what to do; stopping stops the
daemon's runs first (the in-flight one terminated, the queued one cancelled), then `dagster dev`, leaving no process
of its session behind; loading the code prints no BetaWarning; a provider that cannot connect is one line."""

import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import dagster as dg
import httpx
import pytest
import yaml

from integrations_pipeline.definitions import build_definitions
from integrations_pipeline.devstack import connect_sandbox, start_dagster_dev, stop_dagster_dev
from integrations_pipeline_tests.conftest import API_KEY, Stack, client_credentials

REPOSITORY = Path(__file__).resolve().parents[1]
STARTUP_S = 180  # dagster dev on 2 busy cores
RUN_START_S = 180  # the daemon dequeues the run, the code server starts its worker
CLI = [sys.executable, "-c", "from integrations_pipeline.cli import main; main()"]  # this worktree's code

LAUNCH_RUN = """
mutation ($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: object, timeout_s: float, what: str) -> object:
    assert callable(condition)
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.25)  # polling another process's state: no event to await
    return result


def clean_environment(tmp_path: Path) -> dict[str, str]:
    """This worktree's code first, and none of the test session's INTEGRATIONS_* or DAGSTER_HOME."""
    keep = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    return keep | {"PYTHONPATH": str(REPOSITORY), "TMPDIR": str(tmp_path)}


def test_make_dev_on_a_busy_port_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = ["--gateway-port", str(busy), "--dagster-port", str(free_port()), "--sandbox-port", str(free_port())]
        finished = subprocess.run(
            [*CLI, "dev", *ports],
            cwd=tmp_path,
            env=clean_environment(tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert finished.returncode == 1
    assert finished.stderr.strip().splitlines() == [
        f"Error: port {busy} (gateway) is already in use: is `make dev` already running? Stop it with Ctrl-C in its "
        "terminal, or free the port, then run `make dev` again"
    ]


def test_stopping_the_dev_stack_stops_its_runs_first_then_dagster_dev(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The repository's dagster.yaml with one run at a time: the second launch stays queued.
    config = yaml.safe_load((REPOSITORY / "dagster.yaml").read_text())
    config["concurrency"]["runs"]["max_concurrent_runs"] = 1
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    location = {
        "python_file": {
            "relative_path": str(REPOSITORY / "integrations_pipeline_tests" / "blocking_location.py"),
            "location_name": "blocking",
        }
    }
    (tmp_path / "workspace.yaml").write_text(yaml.safe_dump({"load_from": [location]}))
    monkeypatch.chdir(tmp_path)
    home, port = tmp_path / "dagster_home", free_port()
    dagster = start_dagster_dev(port, home, clean_environment(tmp_path))
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _serving(url), STARTUP_S, "dagster dev to serve")
        params = {
            "selector": {
                "repositoryLocationName": "blocking",
                "repositoryName": "__repository__",
                "jobName": "block_forever",
            }
        }
        run_ids = [_launch(url, params) for _ in range(2)]
        with dg.DagsterInstance.from_config(str(home)) as instance:
            started = wait_for(
                lambda: next((run_id for run_id in run_ids if _step_started(instance, run_id)), None),
                RUN_START_S,
                "a run's step to start",
            )
            stop_dagster_dev(dagster, home)
            statuses = {run_id: instance.get_run_by_id(run_id).status for run_id in run_ids}  # type: ignore[union-attr]
    finally:
        if dagster.poll() is None:
            stop_dagster_dev(dagster)
    assert dagster.returncode is not None
    # Terminated through its code server, which was still up: the order held.
    assert statuses[started] == dg.DagsterRunStatus.CANCELED
    assert set(statuses.values()) == {dg.DagsterRunStatus.CANCELED}  # the queued one cancelled, not left queued
    with pytest.raises(ProcessLookupError):
        os.killpg(dagster.pid, 0)  # nothing of dagster dev's session is left running


def _serving(url: str) -> bool:
    try:
        return httpx.get(f"{url}/server_info", timeout=5).is_success
    except httpx.HTTPError:
        return False


def _launch(url: str, params: dict[str, object]) -> str:
    answer = httpx.post(f"{url}/graphql", json={"query": LAUNCH_RUN, "variables": {"params": params}}, timeout=60)
    launched = answer.json()["data"]["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return str(launched["run"]["runId"])


def _step_started(instance: dg.DagsterInstance, run_id: str) -> bool:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START).records
    return bool(records)


def test_loading_the_code_prints_no_beta_warning() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_definitions()
    assert [str(warning.message) for warning in caught if issubclass(warning.category, dg.BetaWarning)] == []


def test_plain_dagster_dev_needs_no_dagster_home(tmp_path: Path) -> None:
    """The root dagster.yaml names no DAGSTER_HOME, so `dagster dev` without it opens a temporary instance."""
    shutil.copyfile(REPOSITORY / "dagster.yaml", tmp_path / "dagster.yaml")
    assert "DAGSTER_HOME" not in yaml.safe_dump(yaml.safe_load((tmp_path / "dagster.yaml").read_text()))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.get_runs() == []


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # the store is not what is tested
def test_a_sandbox_that_refuses_the_connect_is_one_line_and_the_next_still_connects(stack: Stack) -> None:
    client_id, client_secret = client_credentials("hubspot")
    stack.emulator._oauth.clients[client_id] = "rotated-elsewhere"  # the .env's secret is no longer the app's
    refused, connected = (connect_sandbox(stack.gateway_url, API_KEY, p, "sandbox") for p in ("hubspot", "google"))
    assert refused.startswith("could not connect the sandbox tenant to sandbox hubspot (127.0.0.1:"), refused
    assert "\n" not in refused and "Traceback" not in refused and client_secret not in refused
    assert "INTEGRATIONS_HUBSPOT__CLIENT_SECRET" in refused and "run `make dev` again" in refused
    assert connected == "connected google-sandbox (active) through the OAuth flow"
    assert stack.store.get_connection("hubspot-sandbox") is None

    unreachable = connect_sandbox(f"http://127.0.0.1:{free_port()}", API_KEY, "zoho", "sandbox")
    assert unreachable.startswith("could not connect the sandbox tenant to sandbox zoho (ConnectError at 127.0.0.1:")
