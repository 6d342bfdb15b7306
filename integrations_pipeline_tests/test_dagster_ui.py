"""The Dagster UI in a real browser: the product started as `make dev` starts it (devstack.py's functions: the
emulators and gateway of the `stack` fixture, tenant `sandbox` connected through OAuth, then `dagster dev` with its
daemon), opened in Debian's headless Chromium through Playwright.

Skips where /usr/bin/chromium is missing, except under CI (the CI variable set), where it fails: `.ci/run`
installs the package. No test tool ever downloads a browser.

The screenshot goes to the test's own directory, or to $UI_SCREENSHOT when set: `make docs-screenshot` refreshes
docs/dagster-ui.png that way, and `make test` never rewrites a tracked file.
"""

import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from integrations_pipeline.definitions import defs
from integrations_pipeline.devstack import SANDBOX_TENANT, start_dagster_dev, stop_dagster_dev
from integrations_pipeline.sandbox import EMULATORS
from integrations_pipeline_tests.conftest import Stack

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPOSITORY = Path(__file__).resolve().parents[1]
LOCATION = "integrations_pipeline"
STARTUP_S = 180  # dagster dev: webserver, daemon and code server on 2 busy cores
NEWSLETTER_PROMPT_MS = 5_000
FIRST_SYNC_S = 300  # the sensor's tick, a queued run, its subprocess loading the code, the sync
UI_WAIT_MS = 60_000

LATEST_MATERIALIZATIONS = """
query {
  assetsOrError {
    ... on AssetConnection { nodes { key { path } assetMaterializations(limit: 1) { partition } } }
  }
}
"""


def require_chromium() -> None:
    if CHROMIUM.exists():
        return
    message = f"no Chromium at {CHROMIUM}: `apt-get install chromium` (Debian's package) to run the UI test"
    if os.environ.get("CI"):
        pytest.fail(message + "; under CI it must run (.ci/run installs it)")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll `condition` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = condition()
        except httpx.HTTPError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.5)  # polling interval of an awaited condition, not a fixed wait


@pytest.fixture
def dagster_ui(stack: Stack) -> Iterator[str]:
    require_chromium()
    for provider in sorted(EMULATORS):
        stack.connect(SANDBOX_TENANT, provider)
    # `make dev` runs from the repository's root; here the test's own directory (the cwd) gets copies of its
    # dagster.yaml and workspace.yaml instead, because `dagster dev` loads a `.env` from its working directory
    # over the environment, and the root's `.env` is a developer's `make dev` state.
    for name in ("dagster.yaml", "workspace.yaml"):
        shutil.copyfile(REPOSITORY / name, Path.cwd() / name)
    port = free_port()
    # In the test's own directory, which pytest removes later: runs still finishing may write after the stop.
    home = Path.cwd() / "dagster_home"
    dagster = start_dagster_dev(port, home, dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{url}/server_info").is_success, STARTUP_S, "dagster dev to serve")
        yield url
    finally:
        stop_dagster_dev(dagster, home)


def materialized_sandbox_partition(url: str) -> tuple[str, str] | None:
    """(asset, partition) of any asset whose latest materialization is a sandbox connection's partition."""
    response = httpx.post(f"{url}/graphql", json={"query": LATEST_MATERIALIZATIONS}, timeout=30)
    nodes = response.json()["data"]["assetsOrError"].get("nodes", [])
    for node in nodes:
        for materialization in node["assetMaterializations"]:
            partition = materialization["partition"] or ""
            if f"-{SANDBOX_TENANT}" in partition:
                return "/".join(node["key"]["path"]), partition
    return None


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # the UI is the subject, not the store
def test_the_dagster_ui_shows_groups_automation_and_a_synced_partition(dagster_ui: str, tmp_path: Path) -> None:
    screenshot = Path(os.environ.get("UI_SCREENSHOT") or tmp_path / "dagster-ui.png")
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
    from playwright.sync_api import expect, sync_playwright

    repository = defs.get_repository_def()
    groups = sorted({spec.group_name for spec in defs.resolve_all_asset_specs() if spec.group_name})
    assert {"hubspot", "google", "microsoft", "salesforce", "zoho", "unified"} <= set(groups)
    asset, partition = wait_for(
        lambda: materialized_sandbox_partition(dagster_ui), FIRST_SYNC_S, "a sandbox partition to be materialized"
    )

    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1440, "height": 900},
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(UI_WAIT_MS)
            expect.set_options(timeout=UI_WAIT_MS)  # pages render slowly on two busy cores
            # The UI's first-visit newsletter prompt may open over any page: dismiss it whenever it shows.
            page.add_locator_handler(page.get_by_role("button", name="Skip"), lambda skip: skip.click())
            for group in groups:
                page.goto(f"{dagster_ui}/locations/{LOCATION}/asset-groups/{group}/list")
                member = next(
                    spec.key.to_user_string() for spec in defs.resolve_all_asset_specs() if spec.group_name == group
                )
                expect(page.get_by_text(member, exact=True).first).to_be_visible()

            page.goto(f"{dagster_ui}/locations/{LOCATION}/sensors")
            for sensor in repository.sensor_defs:
                expect(page.get_by_text(sensor.name, exact=True).first).to_be_visible()
            page.goto(f"{dagster_ui}/locations/{LOCATION}/schedules")
            for schedule in repository.schedule_defs:
                expect(page.get_by_text(schedule.name, exact=True).first).to_be_visible()

            page.goto(f"{dagster_ui}/assets/{asset}?view=partitions")
            expect(page.get_by_text(partition, exact=True).first).to_be_visible()

            page.goto(f"{dagster_ui}/assets")
            expect(page.get_by_text(asset, exact=True).first).to_be_visible()
            page.wait_for_load_state("networkidle")  # the statuses' queries answered
            # The UI's first-visit newsletter prompt mounts late: await it for a few seconds, dismiss it if it came.
            skip = page.get_by_role("button", name="Skip")
            try:
                skip.first.wait_for(state="visible", timeout=NEWSLETTER_PROMPT_MS)
                skip.first.click()
            except PlaywrightTimeoutError:
                pass  # this instance had already seen it
            expect(page.get_by_text("Join the Dagster community")).to_have_count(0)
            page.screenshot(path=str(screenshot))
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000, json.dumps({"asset": asset, "partition": partition})
