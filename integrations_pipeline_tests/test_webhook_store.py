"""The webhook inbox and push subscriptions on a real SQLite file and a real PostgreSQL server."""

from datetime import timedelta

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from integrations_pipeline.store import StateStore, TokenSet, schema
from integrations_pipeline.store.inbox import MAX_ATTEMPTS, InboxStatus, NewEvent, WebhookInbox
from integrations_pipeline.store.push import PushStatus, PushSubscriptions
from integrations_pipeline.store.repository import utcnow


def _connect(store: StateStore, tenant: str = "acme") -> str:
    with store.write() as conn:
        return store.save_connection(
            conn,
            tenant=tenant,
            provider="microsoft",
            requested_scopes=["User.Read"],
            granted_scopes=["User.Read"],
            tokens=TokenSet(access_token=SecretStr("access"), refresh_token=None, expires_at=None),
        ).id


def _event(event_id: str, connection_id: str | None = "microsoft-acme") -> NewEvent:
    return NewEvent(
        source="microsoft",
        event_id=event_id,
        kind="change",
        connection_id=connection_id,
        entity="contacts",
        partition_key=None,
        payload={"changeType": "updated", "n": event_id},
    )


def test_duplicates_are_stored_once_even_within_one_batch(store: StateStore) -> None:
    inbox = WebhookInbox(store)
    assert inbox.receive([_event("a"), _event("b"), _event("a")]) == 2
    assert inbox.receive([_event("b"), _event("c")]) == 1
    assert [e.event_id for e in inbox.pending(limit=10)] == ["a", "b", "c"]
    assert inbox.depth()[InboxStatus.PENDING] == 3


def test_a_run_outcome_moves_exactly_its_events(store: StateStore) -> None:
    inbox = WebhookInbox(store)
    inbox.receive([_event("a"), _event("b"), _event("c")])
    first, second, third = inbox.pending(limit=10)
    inbox.mark_requested([first.id, second.id], "run-1")
    inbox.mark_requested([third.id], "run-2")
    assert inbox.pending(limit=10) == []
    assert [e.event_id for e in inbox.requested(run_key="run-1")] == ["a", "b"]
    assert inbox.complete("run-1") == 2
    assert inbox.complete("run-1") == 0  # a second success report changes nothing
    assert inbox.fail("run-2", "HTTP 500 from the provider") == (1, 0)
    retried = inbox.pending(limit=10)
    assert [(e.event_id, e.attempts, e.last_error) for e in retried] == [("c", 1, "HTTP 500 from the provider")]
    assert inbox.depth() == {"pending": 1, "requested": 0, "done": 2, "dead": 0}


def test_the_fifth_failure_dead_letters_with_the_cause_and_replay_revives(store: StateStore) -> None:
    inbox = WebhookInbox(store)
    inbox.receive([_event("a")])
    for attempt in range(1, MAX_ATTEMPTS + 1):
        (event,) = inbox.pending(limit=1)
        inbox.mark_requested([event.id], f"run-{attempt}")
        retried, dead = inbox.fail(f"run-{attempt}", f"failure {attempt}")
        assert (retried, dead) == ((1, 0) if attempt < MAX_ATTEMPTS else (0, 1))
    assert inbox.pending(limit=1) == []
    (letter,) = inbox.dead_letters()
    assert (letter.event_id, letter.attempts, letter.cause) == ("a", MAX_ATTEMPTS, f"failure {MAX_ATTEMPTS}")
    assert inbox.receive([_event("a")]) == 0  # a dead event still deduplicates

    assert inbox.replay(None, actor="cli") == 1
    assert inbox.replay(None, actor="cli") == 0
    assert inbox.dead_letters() == []
    assert inbox.dead_letters(include_replayed=True)[0].replayed_at is not None
    (revived,) = inbox.pending(limit=1)
    assert (revived.event_id, revived.attempts) == ("a", 0)
    assert store.audit_entries()[-1].action == "dead_letters.replayed"


def test_purge_keeps_the_dedup_window(store: StateStore) -> None:
    inbox = WebhookInbox(store)
    inbox.receive([_event("old"), _event("new"), _event("waiting")])
    old, new, _ = inbox.pending(limit=10)
    inbox.mark_done([old.id, new.id])
    with store.engine.begin() as conn:
        table = schema.webhook_inbox
        conn.execute(table.update().where(table.c.id == old.id).values(received_at=utcnow() - timedelta(days=9)))
    assert inbox.purge() == 1
    assert inbox.receive([_event("old")]) == 1  # past the window, the same id is news again
    assert inbox.receive([_event("new")]) == 0


def test_push_secrets_are_kept_as_hashes_and_verified(store: StateStore) -> None:
    connection_id = _connect(store)
    push = PushSubscriptions(store)
    expires = utcnow() + timedelta(days=2)
    subscription, secret = push.create(
        connection_id=connection_id, provider="microsoft", entity="contacts", resource="me/contacts", expires_at=expires
    )
    with store.engine.connect() as conn:
        stored = conn.execute(sa.select(schema.push_subscriptions)).one()
    assert secret not in str(stored._asdict())
    assert push.verify_secret(subscription.id, secret) == subscription
    assert push.verify_secret(subscription.id, secret + "x") is None
    assert push.verify_secret("unknown", secret) is None

    renewed = push.renewed(subscription.id, expires_at=expires + timedelta(days=1), external_id="graph-1")
    assert push.find("microsoft", external_id="graph-1") == renewed
    assert not renewed.half_life_passed(utcnow())
    assert renewed.half_life_passed(renewed.renewed_at + (renewed.expires_at - renewed.renewed_at) / 2)

    push.set_status(subscription.id, PushStatus.REMOVED, "subscriptionRemoved")
    assert push.verify_secret(subscription.id, secret) is None  # only active subscriptions verify
    assert push.list(connection_id=connection_id) == []
    assert [s.status for s in push.list(statuses=None)] == [PushStatus.REMOVED]
    actions = [entry.action for entry in store.audit_entries(connection_id=connection_id)]
    assert actions[-3:] == ["push_subscription.created", "push_subscription.renewed", "push_subscription.removed"]
    assert all(secret not in str(entry.detail) for entry in store.audit_entries())


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_subscriptions_go_with_their_connection(store: StateStore) -> None:
    connection_id = _connect(store)
    push = PushSubscriptions(store)
    push.create(
        connection_id=connection_id,
        provider="microsoft",
        entity="events",
        resource="me/events",
        expires_at=utcnow() + timedelta(hours=1),
    )
    with store.engine.begin() as conn:
        conn.execute(schema.connections.delete().where(schema.connections.c.id == connection_id))
    assert push.list(statuses=None) == []
