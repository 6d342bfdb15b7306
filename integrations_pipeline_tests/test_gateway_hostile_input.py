"""Bad input is a 4xx, never a 5xx, on SQLite and PostgreSQL: each case of the malformed-request probe, then a
property-based sweep of every route in `/openapi.json` with hostile values (huge integers, NUL, NaN, Unicode
digits, control characters, oversized bodies). Over real HTTP on 127.0.0.1."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from integrations_pipeline.httpserver import BackgroundServer
from integrations_pipeline.store import schema
from integrations_pipeline.store.inbox import WebhookInbox
from integrations_pipeline_tests import webhook_senders as senders
from integrations_pipeline_tests.webhook_senders import API_KEY, RunningReceiver, running_receiver

AUTH = {"Authorization": f"Bearer {API_KEY}"}
HUGE_INTEGER = b"1" + b"0" * 5000  # json.loads raises ValueError past 4,300 digits
NOT_JSON_NUMBERS = [b"NaN", b"Infinity", b"-Infinity", b"1e999999"]


@pytest.fixture
def gateway(store_url: str, key_spec: str) -> Iterator[RunningReceiver]:
    with running_receiver(store_url, key_spec) as running:
        yield running


def post(gateway: RunningReceiver, request: senders.SignedRequest) -> httpx.Response:
    return httpx.post(gateway.url + request.target, content=request.body, headers=request.headers)


def stored(gateway: RunningReceiver) -> int:
    return len(WebhookInbox(gateway.store).pending(limit=1000))


# -- each case of the probe ---------------------------------------------------------------------------------------


def test_integers_python_will_not_convert_are_a_400_on_every_webhook(gateway: RunningReceiver) -> None:
    secrets = gateway.secrets
    body = b'{"value": [{"subscriptionId": ' + HUGE_INTEGER + b"}]}"
    requests = [
        replace(senders.zoho(secrets, 1), body=b'{"channel_id": ' + HUGE_INTEGER + b"}"),
        replace(senders.graph(secrets, 1), body=body),
        replace(senders.graph(secrets, 1), path="/webhooks/microsoft/lifecycle", body=body),
        senders.standard(secrets, 1, raw=b'{"type": "event.updated", "data": {"n": ' + HUGE_INTEGER + b"}}"),
        senders.hubspot(secrets, 1, raw=b'[{"eventId": ' + HUGE_INTEGER + b"}]"),
    ]
    for request in requests:
        response = post(gateway, request)
        assert response.status_code == 400 and response.json()["error"] == "malformed_body", request.path
    assert stored(gateway) == 0


@pytest.mark.parametrize("number", NOT_JSON_NUMBERS)
def test_numbers_json_has_no_room_for_are_refused_before_they_are_stored(
    gateway: RunningReceiver, number: bytes
) -> None:
    """Python's json accepts NaN, Infinity and 1e999999 (as inf); PostgreSQL's json column refuses them, so a
    signed event carrying one would never be acknowledged and its sender would retry forever."""
    secrets = gateway.secrets
    standard = b'{"type": "event.updated", "data": {"id": "evt-1", "amount": ' + number + b"}}"
    hubspot = senders.hubspot(secrets, 1).body.replace(b'"attemptNumber": 0', b'"attemptNumber": ' + number)
    for request in [senders.standard(secrets, 1, raw=standard), senders.hubspot(secrets, 1, raw=hubspot)]:
        response = post(gateway, request)
        assert response.status_code == 400 and response.json()["error"] == "malformed_body", request.path
    subscription = httpx.post(
        f"{gateway.url}/subscriptions/sub_x/rotate", content=b'{"overlap_hours": ' + number + b"}", headers=AUTH
    )
    assert subscription.status_code in (400, 422)
    assert stored(gateway) == 0


def test_nul_in_an_identifier_is_a_4xx(gateway: RunningReceiver) -> None:
    """psycopg2 refuses a NUL in a text parameter with a ValueError: refused up front, on both backends."""
    nul = quote("a\x00b")
    with httpx.Client(base_url=gateway.url, headers=AUTH) as api:
        for response in [
            api.get(f"/connections/{nul}"),
            api.delete(f"/connections/{nul}"),
            api.get(f"/subscriptions/{nul}"),
            api.post(f"/subscriptions/{nul}/rotate"),
            api.get(f"/subscriptions/{nul}/deliveries"),
            api.post(f"/subscriptions/sub_1/deliveries/{nul}/replay"),
            api.get("/connections", params={"tenant": "a\x00"}),
            api.get(f"/oauth/hubspot/callback?state={nul}&code=c"),
            api.post(
                "/subscriptions",
                json={"url": "http://93.184.215.14/h", "event_types": ["integration.error"], "description": "a\x00"},
            ),
            api.post("/connections/hubspot/connect", json={"tenant": "acme", "return_path": "/a\x00"}),
        ]:
            assert 400 <= response.status_code < 500, (response.request.url, response.text)
    secrets = gateway.secrets
    graph = senders.graph(secrets, 1)
    for request in [
        replace(graph, body=graph.body.replace(senders.GRAPH_SUBSCRIPTION.encode(), b"a\\u0000b")),
        senders.zoho(secrets, 1, channel_id="a\x00b"),
        replace(senders.salesforce(secrets, 1), query={"subscription": "a\x00b", "token": "t"}),
    ]:
        response = post(gateway, request)
        assert response.status_code in (400, 422), (request.path, response.text)


def test_a_limit_of_unicode_digits_is_a_400(gateway: RunningReceiver) -> None:
    response = httpx.get(f"{gateway.url}/subscriptions/sub_x/deliveries", params={"limit": "²"}, headers=AUTH)
    assert response.status_code == 400 and list(response.json()["fields"]) == ["limit"]


def test_a_salesforce_date_past_the_calendar_is_stored_without_a_day(gateway: RunningReceiver) -> None:
    request = senders.salesforce(gateway.secrets, 1)
    edge = request.body.replace(b"2025-03-04T23:30:00.000-02:00", b"9999-12-31T23:30:00.000-05:00")
    response = post(gateway, replace(request, body=edge))
    assert response.status_code == 200 and b"<Ack>true</Ack>" in response.content
    [event] = WebhookInbox(gateway.store).pending(limit=10)
    assert event.partition_key is None


def test_rotate_parses_its_body_strictly(gateway: RunningReceiver) -> None:
    with httpx.Client(base_url=gateway.url, headers=AUTH) as api:
        # A public address, never called: no delivery worker runs here.
        subscription = {"url": "http://93.184.215.14/h", "event_types": ["integration.error"]}
        created = api.post("/subscriptions", json=subscription)
        rotate = f"/subscriptions/{created.json()['id']}/rotate"
        for lenient in [False, True, "12", None, [12]]:
            refused = api.post(rotate, json={"overlap_hours": lenient})
            assert refused.status_code == 422 and list(refused.json()["fields"]) == ["overlap_hours"], lenient
        assert api.post(rotate, json={"overlap_hours": 12}).status_code == 200
        assert api.post(rotate).status_code == 200  # the body is optional


def test_every_body_meets_the_streamed_size_limit(gateway: RunningReceiver) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is counted while the body streams
        for _ in range(64):
            yield b" " * 16384

    with httpx.Client(base_url=gateway.url, headers=AUTH) as api:
        for path in ["/subscriptions/sub_x/rotate", "/subscriptions", "/connections/hubspot/connect"]:
            response = api.post(path, content=chunks())
            assert response.status_code == 413 and response.json()["error"] == "body_too_large", path


def corrupt(gateway: RunningReceiver, table: sa.Table, column: sa.Column[Any]) -> None:
    """Every ciphertext of the column with its last characters changed: the right key, a failed authentication."""
    with gateway.store.engine.begin() as conn:
        conn.execute(
            table.update().values({column.name: sa.func.substr(column, 1, sa.func.length(column) - 4) + "AAAA"})
        )


def test_an_unreadable_oauth_state_is_a_400_at_the_callback(gateway: RunningReceiver) -> None:
    with httpx.Client(base_url=gateway.url, headers=AUTH) as api:
        started = api.post("/connections/hubspot/connect", json={"tenant": "beta"}).json()
        state = httpx.URL(started["authorization_url"]).params["state"]
        corrupt(gateway, schema.oauth_states, schema.oauth_states.c.code_verifier_ciphertext)
        response = api.get("/oauth/hubspot/callback", params={"state": state, "code": "c"})
    assert response.status_code == 400 and response.json()["error"] == "invalid_state"


def test_a_connection_with_unreadable_tokens_can_still_be_disconnected(
    gateway: RunningReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    corrupt(gateway, schema.credentials, schema.credentials.c.ciphertext)
    connection_id = gateway.connections["hubspot"]
    with httpx.Client(base_url=gateway.url, headers=AUTH) as api:
        response = api.delete(f"/connections/{connection_id}")
        assert response.status_code == 200, response.text
        assert response.json() == {"id": connection_id, "status": "disconnected", "revoked_at_provider": False}
    with gateway.store.engine.connect() as conn:
        left = conn.execute(sa.select(schema.credentials).where(schema.credentials.c.connection_id == connection_id))
        assert left.all() == []
    assert any("revoke skipped" in record.getMessage() for record in caplog.records)


# -- what is logged ------------------------------------------------------------------------------------------------


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "integrations_pipeline.gateway.access"]


def test_a_client_leaving_mid_body_is_no_error(gateway: RunningReceiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    host, port = httpx.URL(gateway.url).host, httpx.URL(gateway.url).port
    with socket.create_connection((host, port or 80)) as client:
        client.sendall(b'POST /subscriptions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"url":')
        client.shutdown(socket.SHUT_WR)
        client.recv(65536)  # returns once the server has answered or closed: the request is over
    with httpx.Client() as http:  # one more request, so the first one's access line is certainly written
        http.get(f"{gateway.url}/health")
    assert any(line.startswith("POST /subscriptions 4") for line in access_lines(caplog)), access_lines(caplog)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []


def test_control_characters_are_escaped_in_the_access_log(
    gateway: RunningReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    forged = "/x%0A2026-12-03 INFO integrations_pipeline.gateway.access GET /admin 200%0D%1B[2J"
    httpx.get(gateway.url + forged)
    [line] = [line for line in access_lines(caplog) if line.startswith("GET /x")]
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert line.startswith("GET /x\\n2026-12-03 INFO")


def test_uvicorn_logs_an_escaped_exception_by_its_type_only() -> None:
    async def broken(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            raise RuntimeError("secret detail that must not reach the log")

    seen: list[logging.LogRecord] = []
    capture = logging.Handler()
    capture.emit = seen.append  # type: ignore[method-assign]
    with BackgroundServer(broken, lifespan="off") as server:
        logging.getLogger("uvicorn.error").addHandler(capture)
        try:
            assert httpx.get(server.url).status_code == 500
        finally:
            logging.getLogger("uvicorn.error").removeHandler(capture)
    [record] = [r for r in seen if r.levelno >= logging.ERROR]
    assert record.exc_info is None and record.getMessage().endswith(": RuntimeError")
    assert "secret detail" not in record.getMessage()


# -- every route, hostile values ---------------------------------------------------------------------------------

HOSTILE_TEXT = st.sampled_from(
    [
        "a\x00b",
        "\x00",
        "²",
        "١٢",
        "1e999999",
        "NaN",
        "-1",
        "\n\r",
        "\u2028",
        "\ud800".encode("utf-8", "surrogatepass").decode("latin-1"),
        "x" * 5000,
    ]
)
HOSTILE_JSON = st.sampled_from(
    [HUGE_INTEGER, *NOT_JSON_NUMBERS, b'"a\\u0000b"', b"[" * 5000, b'{"a": "\\ud800"}', b"\xff\xfe", b"{"]
)


def hostile_requests(paths: dict[str, dict[str, Any]]) -> st.SearchStrategy[tuple[str, str, dict[str, str], bytes]]:
    """(method, URL path, query, body) for a documented operation, with hostile path, query and body values."""

    @st.composite
    def build(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes]:
        template = draw(st.sampled_from(sorted(paths)))
        method = draw(st.sampled_from(sorted(paths[template])))
        spec = paths[template][method]
        parts = [quote(draw(HOSTILE_TEXT), safe="") if p.startswith("{") else p for p in template.split("/")]
        names = [p["name"] for p in spec.get("parameters", []) if p["in"] == "query"]
        query = {name: draw(HOSTILE_TEXT) for name in names if draw(st.booleans())}
        value = draw(HOSTILE_JSON)
        wrapped = draw(st.sampled_from([value, b'{"tenant": ' + value + b"}", b'{"value": [' + value + b"]}"]))
        return method.upper(), "/".join(parts), query, wrapped

    return build()


def test_no_route_answers_hostile_input_with_a_5xx(gateway: RunningReceiver) -> None:
    paths = httpx.get(f"{gateway.url}/openapi.json").json()["paths"]
    answered: list[tuple[str, str, int]] = []
    with httpx.Client(base_url=gateway.url, headers=AUTH, timeout=30) as api:

        @given(hostile_requests(paths))
        @settings(
            max_examples=150,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def sweep(request: tuple[str, str, dict[str, str], bytes]) -> None:
            method, path, query, body = request
            content = body if method in ("POST", "PUT") else None
            response = api.request(method, path, params=query, content=content)
            answered.append((method, path, response.status_code))
            assert response.status_code < 500, (method, path, query, body[:80], response.text)

        sweep()
    assert len({(method, path.split("/")[1]) for method, path, _ in answered}) >= 8  # the sweep reached the API
