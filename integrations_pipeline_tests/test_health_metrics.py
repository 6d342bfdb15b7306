"""`GET /health/integrations` and `GET /metrics` on a real gateway over a real state store, both backends."""

from datetime import timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from integrations_pipeline import metrics
from integrations_pipeline.crypto import Keyring, generate_key_entry
from integrations_pipeline.gateway import create_app
from integrations_pipeline.httpserver import BackgroundServer
from integrations_pipeline.resources import IntegrationsResource
from integrations_pipeline.sensors.push import PushLifecycle
from integrations_pipeline.store import ConnectionStatus, schema
from integrations_pipeline.store.budget import Observation, RateBudgets, Window
from integrations_pipeline.store.inbox import NewEvent, WebhookInbox
from integrations_pipeline.store.push import PushSubscriptions
from integrations_pipeline.store.repository import utcnow
from integrations_pipeline_tests.conftest import API_KEY, Stack


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, parsed by prometheus_client's own parser."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def dead_letter(stack: Stack, connection_id: str, event_id: str) -> None:
    """Drive one event through the real inbox until it is dead-lettered."""
    inbox = WebhookInbox(stack.store)
    inbox.receive([NewEvent("hubspot", event_id, "change", connection_id, "contacts", None, {"objectId": 1})])
    for attempt in range(5):
        pending = inbox.pending(limit=10)
        inbox.mark_requested([event.id for event in pending], f"run-{event_id}-{attempt}")
        inbox.fail(f"run-{event_id}-{attempt}", "the sync failed")


def test_health_needs_the_api_key(stack: Stack) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-key-0123456789"}):
        for path in ("/health/integrations", "/metrics"):
            response = httpx.get(stack.gateway_url + path, headers=headers)
            assert response.status_code == 401, path
            assert response.json()["error"] == "unauthorized"


def test_health_reports_each_connection_and_its_problems(stack: Stack) -> None:
    healthy = stack.connect("acme", "hubspot")
    troubled = stack.connect("beta", "zoho")
    with stack.api() as api:
        report = api.get("/health/integrations").json()
        assert report["status"] == "ok"
        by_id = {item["connection_id"]: item for item in report["connections"]}
        assert set(by_id) == {healthy, troubled}
        fresh = by_id[healthy]
        assert fresh["health"] == "ok" and fresh["problems"] == [] and fresh["status"] == "active"
        assert fresh["token_expires_at"] is not None and fresh["last_successful_sync_at"] is None
        assert fresh["dead_letters"] == 0 and fresh["push_subscription_expires_at"] is None

        synced_at = utcnow() - timedelta(hours=3)
        stack.store.record_sync(troubled, synced_at)
        dead_letter(stack, troubled, "evt-1")
        # A normal lifetime, however short, is no problem: only a renewal overdue is.
        push_expiry = utcnow() + timedelta(hours=2)
        push, _ = PushSubscriptions(stack.store).create(
            connection_id=troubled, provider="zoho", entity="contacts", resource="Contacts", expires_at=push_expiry
        )
        assert api.get("/health/integrations", params={"tenant": "beta"}).json()["connections"][0]["problems"] == [
            "3.0 h since the last successful sync",
            "1 webhook events in dead letters",
        ]
        with stack.store.engine.begin() as conn:  # granted 10 h ago for 12 h: renewal was due 4 h ago
            table = schema.push_subscriptions
            conn.execute(table.update().where(table.c.id == push.id).values(renewed_at=utcnow() - timedelta(hours=10)))
        blocked_until = (utcnow() + timedelta(minutes=5)).replace(microsecond=0)
        with stack.store.engine.begin() as conn:  # as a 429 with Retry-After leaves the shared budget
            conn.execute(
                schema.rate_budgets.insert().values(
                    connection_id=troubled,
                    provider="zoho",
                    bucket="window",
                    call_limit=100,
                    window_s=60.0,
                    slots=[],
                    blocked_until=blocked_until,
                    updated_at=utcnow(),
                )
            )
        report = api.get("/health/integrations", params={"tenant": "beta"}).json()
        [item] = report["connections"]
        assert report["status"] == "warning" and report["counts"]["warning"] == 1
        assert item["lag_seconds"] == pytest.approx(3 * 3600, abs=120)
        assert item["dead_letters"] == 1 and item["push_subscriptions"] == 1
        assert item["push_subscription_expires_at"].startswith(push_expiry.isoformat()[:19])
        assert item["problems"] == [
            "3.0 h since the last successful sync",
            "1 webhook events in dead letters",
            "a push subscription's renewal is 4.0 h overdue (it expires in 2.0 h)",
            f"rate limited by the provider until {blocked_until:%Y-%m-%d %H:%M:%S} UTC",
        ]
        assert item["rate_limited_until"].startswith(blocked_until.isoformat()[:19])

        with stack.store.locked(troubled) as conn:
            stack.store.set_status(conn, troubled, ConnectionStatus.NEEDS_REAUTH, "invalid_grant")
        report = api.get("/health/integrations").json()
        assert report["status"] == "critical"
        item = next(item for item in report["connections"] if item["connection_id"] == troubled)
        assert item["health"] == "critical" and item["problems"][0] == "needs re-authorization: invalid_grant"
        unknown = api.get("/health/integrations", params={"provider": "nowhere"})
        assert unknown.status_code == 400 and list(unknown.json()["fields"]) == ["provider"]


def test_metrics_parse_as_prometheus_text_and_agree_with_the_database(stack: Stack) -> None:
    connection_id = stack.connect("acme", "hubspot")
    stack.store.record_sync(connection_id)
    dead_letter(stack, connection_id, "evt-2")
    WebhookInbox(stack.store).receive([NewEvent("hubspot", "evt-3", "change", connection_id, "users", None, {})])
    metrics.record_webhook_verification_failure("hubspot")
    with stack.api() as api:
        api.get(f"/connections/{connection_id}")
        api.get("/connections/hubspot-nobody")  # a 404 counted under the same route template
        response = api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = samples(response.text)
    route = "/connections/{connection_id}"
    assert found[("integrations_gateway_requests_total", (("method", "GET"), ("route", route), ("status", "200")))] >= 1
    assert found[("integrations_gateway_requests_total", (("method", "GET"), ("route", route), ("status", "404")))] >= 1
    assert not any("hubspot-acme" in dict(labels).get("route", "") for _, labels in found)
    assert found[("integrations_webhook_verification_failures_total", (("source", "hubspot"),))] >= 1
    assert found[("integrations_webhook_inbox_events", (("status", "pending"),))] == 1
    assert found[("integrations_webhook_inbox_events", (("status", "dead"),))] == 1
    assert found[("integrations_dead_letters", ())] == 1
    labels = (("connection_id", connection_id), ("provider", "hubspot"))
    assert found[("integrations_connection_sync_lag_seconds", labels)] < 60
    assert found[("integrations_connection_healthy", labels)] == 0  # a dead letter is a problem
    assert found[("integrations_connections", (("health", "warning"), ("provider", "hubspot"), ("status", "active")))]
    assert found[("integrations_webhook_deliveries", (("status", "pending"),))] == 0
    assert ("integrations_webhook_delivery_attempts_total", (("outcome", "success"),)) in found


def test_two_gateway_processes_report_the_same_state(stack: Stack) -> None:
    """State figures come from the database at scrape time: a second app over the same store agrees at once."""
    connection_id = stack.connect("acme", "hubspot")
    dead_letter(stack, connection_id, "evt-4")
    second = BackgroundServer()
    with second.start(create_app(stack.settings, stack.store)):
        headers = {"Authorization": f"Bearer {API_KEY}"}
        first_figures = samples(httpx.get(stack.gateway_url + "/metrics", headers=headers).text)
        second_figures = samples(httpx.get(second.url + "/metrics", headers=headers).text)
    for name in ("integrations_dead_letters", "integrations_webhook_inbox_events", "integrations_connections"):
        assert {k: v for k, v in first_figures.items() if k[0] == name} == {
            k: v for k, v in second_figures.items() if k[0] == name
        }


def test_health_reports_the_recent_429_rate_from_the_budget_counts(stack: Stack) -> None:
    connection_id = stack.connect("acme", "hubspot")
    budgets, window = RateBudgets(stack.store), Window("burst", limit=100, window_s=10.0)
    calls = sum(budgets.lease(connection_id, "hubspot", [window], up_to=5)[0] for _ in range(4))
    refusal = [Observation("burst", retry_after_s=0.001)]
    for _ in range(2):
        budgets.observe(connection_id, "hubspot", [window], refusal, refused=True)
    with stack.api() as api:
        [item] = api.get("/health/integrations").json()["connections"]
    assert calls == 20 and item["recent_429_rate"] == pytest.approx(2 / 20)
    assert "10% of recent provider calls were rate limited (429)" in item["problems"]


def test_a_connection_whose_secrets_cannot_be_decrypted_is_critical(stack: Stack) -> None:
    """As after `make dev` regenerated a key under the id the stored tokens name: the status column still says
    active, but no sync can read the tokens, and health says so."""
    readable = stack.connect("acme", "hubspot")
    unreadable = stack.connect("beta", "hubspot")
    key_id = stack.store.keyring.primary_key_id
    impostor = Keyring.from_spec(generate_key_entry(key_id))
    with stack.store.engine.begin() as conn:
        table = schema.credentials
        for name in ("access_token", "refresh_token"):
            aad = f"connection:{unreadable}:{name}"
            where = (table.c.connection_id == unreadable) & (table.c.name == name)
            conn.execute(table.update().where(where).values(ciphertext=impostor.encrypt("x", associated_data=aad)))
    with stack.api() as api:
        report = api.get("/health/integrations").json()
        found = samples(api.get("/metrics").text)
    labels = (("connection_id", unreadable), ("provider", "hubspot"))
    assert found[("integrations_connection_healthy", labels)] == 0  # /metrics agrees with /health
    by_id = {item["connection_id"]: item for item in report["connections"]}
    assert report["status"] == "critical" and by_id[readable]["health"] == "ok"
    assert by_id[unreadable]["health"] == "critical" and by_id[unreadable]["status"] == "active"
    assert by_id[unreadable]["problems"] == [
        f"its secrets cannot be decrypted with the keyring: access_token (key {key_id!r}), refresh_token "
        f"(key {key_id!r}); no sync can run. Put the key that encrypted them back in INTEGRATIONS_ENCRYPTION_KEYS, "
        "or reconnect"
    ]


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_fresh_sandbox_is_quiet(stack: Stack) -> None:
    """Every provider connected and its push subscriptions created with their normal lifetimes (hours to days):
    nothing to report until a renewal is overdue."""
    connected = [stack.connect("sandbox", provider) for provider in sorted(stack.emulators)]
    summary = PushLifecycle(IntegrationsResource(), utcnow()).run().summary()
    subscriptions = PushSubscriptions(stack.store).list()
    assert "failed 0" in summary
    # Google's events channel (6 h) and Zoho's watch (23 h) live less than a day, which used to read as a problem.
    short_lived = {row.provider for row in subscriptions if row.expires_at - utcnow() < timedelta(days=1)}
    assert short_lived == {"google", "zoho"}
    with stack.api() as api:
        report = api.get("/health/integrations").json()
    assert report["status"] == "ok", report
    assert sorted(item["connection_id"] for item in report["connections"]) == sorted(connected)
    assert all(item["problems"] == [] for item in report["connections"])
