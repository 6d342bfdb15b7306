"""Group commit of webhook intake over real HTTP, on SQLite and PostgreSQL: concurrent webhooks share a transaction,
none is acknowledged before that transaction commits, each event is stored exactly once, and a request the database
refuses fails alone (5xx, so its sender retries) while the others of its group land."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
import sqlalchemy as sa

from integrations_pipeline.gateway import create_app
from integrations_pipeline.gateway.intake import GroupCommit
from integrations_pipeline.httpserver import BackgroundServer
from integrations_pipeline.store import StateStore, schema
from integrations_pipeline_tests import webhook_senders as senders

CONCURRENT = 24
POISON = 666  # the sender's event number whose row the database refuses (a trigger)
QUEUE_TIMEOUT_S = 30.0


@dataclass
class Gateway:
    http: httpx.Client
    secrets: senders.Secrets
    intake: GroupCommit
    store: StateStore

    def send(self, n: int) -> httpx.Response:
        request = senders.hubspot(self.secrets, n)
        return self.http.post(request.target, content=request.body, headers=request.headers)

    def stored_event_ids(self) -> list[str]:
        with self.store.engine.connect() as conn:
            return list(conn.execute(sa.select(schema.webhook_inbox.c.event_id)).scalars())

    def wait_until(self, groups: int, queued: int) -> None:
        """Until the writer has begun `groups` transactions (the last one blocked by `inbox_locked`) and `queued`
        requests wait behind it: polled state, not a guessed sleep."""
        deadline = time.monotonic() + QUEUE_TIMEOUT_S
        while (self.intake.groups, self.intake.queued()) != (groups, queued):
            assert time.monotonic() < deadline, f"{self.intake.groups} groups, {self.intake.queued()} queued"
            time.sleep(0.005)


@pytest.fixture
def gateway(store: StateStore, store_url: str, key_spec: str) -> Iterator[Gateway]:
    server = BackgroundServer()
    settings = senders.receiver_settings(server.url, store_url, key_spec)
    secrets, _ = senders.prepare(store, server.url)
    app = create_app(settings, store)
    with (
        server.start(app),
        httpx.Client(base_url=server.url, timeout=60, limits=httpx.Limits(max_connections=CONCURRENT)) as http,
    ):
        yield Gateway(http, secrets, app.state.gateway.webhooks.intake, store)


@contextmanager
def inbox_locked(store: StateStore) -> Iterator[None]:
    """Another transaction holds the inbox's write lock, so the intake's writer waits inside its transaction."""
    with store.write() as conn:
        if conn.dialect.name == "postgresql":  # SQLite's BEGIN IMMEDIATE (store.write) already locks every table
            conn.execute(sa.text("LOCK TABLE webhook_inbox IN EXCLUSIVE MODE"))
        yield


def _send_concurrently(gateway: Gateway, pool: ThreadPoolExecutor, numbers: list[int]) -> list[Future[httpx.Response]]:
    return [pool.submit(gateway.send, n) for n in numbers]


def _event_id(n: int) -> str:
    return str(4_000_000 + n)  # senders.hubspot's eventId


def test_concurrent_webhooks_share_a_commit_and_land_exactly_once(gateway: Gateway) -> None:
    # Event numbers, with two sent twice in the same group (a provider retrying while the first try waits).
    group = [*range(1, CONCURRENT - 2), 3, 7]
    with ThreadPoolExecutor(CONCURRENT) as pool:
        with inbox_locked(gateway.store):
            first = pool.submit(gateway.send, 0)
            gateway.wait_until(groups=1, queued=0)  # the writer took it and waits for the lock
            rest = _send_concurrently(gateway, pool, group)
            gateway.wait_until(groups=1, queued=len(group))
            assert not first.done() and not any(f.done() for f in rest)  # nothing acknowledged before the commit
        answers = [first.result(), *(f.result() for f in rest)]
    assert [a.status_code for a in answers] == [200] * len(answers)
    assert gateway.intake.groups == 2  # the first request alone, then every request that queued behind it
    assert sum(a.json()["stored"] for a in answers) == len(set(group)) + 1
    stored = gateway.stored_event_ids()
    assert sorted(stored) == sorted(_event_id(n) for n in {0, *group})  # each once


def test_a_request_the_database_refuses_fails_alone_and_lands_on_retry(gateway: Gateway) -> None:
    engine = gateway.store.engine
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON webhook_inbox "
                f"WHEN NEW.event_id = '{_event_id(POISON)}' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.event_id = '{_event_id(POISON)}' THEN RAISE EXCEPTION 'refused by the test'; END IF; "
                "RETURN NEW; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON webhook_inbox "
                "FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
            )
    group = [1, 2, POISON, 4, 5]
    with ThreadPoolExecutor(CONCURRENT) as pool:
        with inbox_locked(gateway.store):
            first = pool.submit(gateway.send, 0)
            gateway.wait_until(groups=1, queued=0)
            rest = _send_concurrently(gateway, pool, group)
            gateway.wait_until(groups=1, queued=len(group))
        answers = {n: f.result() for n, f in zip(group, rest, strict=True)}
    assert first.result().status_code == 200
    refused = answers.pop(POISON)
    assert refused.status_code == 500 and refused.json()["error"] == "internal_error"  # the sender will retry
    assert {n: a.json()["stored"] for n, a in answers.items()} == dict.fromkeys(answers, 1)
    assert gateway.intake.groups == 2 + len(group)  # the failed group, then each of its requests alone
    assert sorted(gateway.stored_event_ids()) == sorted(_event_id(n) for n in (0, *answers))

    with engine.begin() as conn:
        conn.exec_driver_sql(
            "DROP TRIGGER refuse_poison" + (" ON webhook_inbox" if conn.dialect.name != "sqlite" else "")
        )
    retried = gateway.send(POISON)
    assert (retried.status_code, retried.json()["stored"]) == (200, 1)
    assert gateway.stored_event_ids().count(_event_id(POISON)) == 1
