"""The gateway against its own `/openapi.json`, on SQLite and PostgreSQL, over real HTTP on 127.0.0.1.

Every operation is driven property-based by schemathesis (schema-valid and schema-violating requests) and every
answer must conform to the document: status, media type, headers and body, no 5xx, violating requests refused
with a 4xx, `Allow` on a 405, 401 without the API key. Bounded: a fixed number of examples per operation and
mode, derandomized so that a failure reproduces.

Two checks are left out, both for documented behaviour: `positive_data_acceptance` (a schema-valid request can
still name an unknown OAuth state, an unknown source field or a refused destination: the schema cannot know the
database) and `use_after_free` (a disconnected connection stays readable, with its status, by design).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance, use_after_free

from integrations_pipeline.gateway.app import OPERATIONS
from integrations_pipeline.gateway.openapi import openapi_document
from integrations_pipeline_tests.webhook_senders import API_KEY, running_receiver

EXAMPLES = 12  # per operation and generation mode
AUTH = {"Authorization": f"Bearer {API_KEY}"}
EXCLUDED = [positive_data_acceptance, use_after_free]
HOST_NAME = re.compile(r"[a-z0-9-]+(\.[a-z0-9-]+)*")
PUBLIC_ADDRESS = "93.184.215.14"  # never called: no delivery worker runs in these tests


@pytest.fixture
def gateway_url(store_url: str, key_spec: str) -> Iterator[str]:
    with running_receiver(store_url, key_spec) as running:
        yield running.url


def without_dns(case: Case) -> Case:
    """A subscription URL naming a host gets a public IP address instead: the destination check would resolve the
    name, and tests talk to 127.0.0.1 only. Only well-formed host names are replaced, so a violation stays one."""
    url = case.body.get("url") if isinstance(case.body, dict) else None
    if isinstance(url, str):
        parts = urlsplit(url)
        if parts.hostname and HOST_NAME.fullmatch(parts.hostname) and parts.port is None:
            case.body["url"] = parts._replace(netloc=PUBLIC_ADDRESS).geturl()
    return case


BOUNDED = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: the failure is reported as found
    suppress_health_check=list(HealthCheck),
)


def failures_of(operation: schemathesis.APIOperation, mode: GenerationMode) -> list[str]:
    found: list[str] = []

    @given(case=operation.as_strategy(generation_mode=mode).map(without_dns))
    @BOUNDED
    def run(case: Case) -> None:
        try:
            case.call_and_validate(headers=AUTH, excluded_checks=EXCLUDED, timeout=30)
        except Exception as failure:  # a FailureGroup: one message per failed check
            found.append(f"{operation.label} ({mode.value}): {failure}")

    run()
    return found


def modes(operation: schemathesis.APIOperation) -> list[GenerationMode]:
    """Schema-violating requests need something to violate: a parameter or a body."""
    inputs = [operation.path_parameters, operation.query, operation.headers, operation.body]
    return [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if any(len(part) for part in inputs) else [])


def test_every_operation_conforms_to_the_document(gateway_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    looked_up: list[str] = []
    lookup = socket.getaddrinfo

    def addresses_only(host: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            looked_up.append(str(host))
        return lookup(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", addresses_only)
    schema = schemathesis.openapi.from_url(f"{gateway_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(OPERATIONS)
    failures = [
        failure for operation in operations for mode in modes(operation) for failure in failures_of(operation, mode)
    ]
    assert failures == []
    assert looked_up == []  # no name left the machine for resolution


def test_a_405_lists_every_method_of_the_path_in_allow(gateway_url: str) -> None:
    paths = httpx.get(f"{gateway_url}/openapi.json").json()["paths"]
    for template, operations in paths.items():
        path = "/".join("x" if part.startswith("{") else part for part in template.split("/"))
        response = httpx.patch(f"{gateway_url}{path}", headers=AUTH)
        assert response.status_code == 405 and response.json()["error"] == "method_not_allowed", template
        allowed = {method.strip() for method in response.headers["allow"].split(",")}
        assert allowed - {"HEAD"} == {method.upper() for method in operations}, template


# -- schema-valid requests with one hostile value ------------------------------------------------------------------

HOSTILE = st.sampled_from(
    [
        "a\x00b",
        "\x00",
        "/a\x00",
        "²",
        "١٢",
        "1e999999",
        "NaN",
        "Infinity",
        "-1",
        "\n\r\x1b[2J",
        "\u2028",
        "\ufeff",
        "x" * 5000,
    ]
)


def places_in(document: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) of a JSON document's values, at any depth."""
    if isinstance(document, dict):
        return [(document, key) for key in document] + [p for value in document.values() for p in places_in(value)]
    if isinstance(document, list):
        return [(document, i) for i in range(len(document))] + [p for value in document for p in places_in(value)]
    return []


def test_a_hostile_value_in_any_parameter_or_field_is_never_a_5xx(gateway_url: str) -> None:
    """Schema-valid requests for every operation, with one path parameter, query parameter or body value replaced
    by a hostile string, so the value travels as deep as a valid request does (the store, on both backends)."""
    schema = schemathesis.openapi.from_url(f"{gateway_url}/openapi.json")
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy().map(without_dns), data=st.data())
        @BOUNDED
        def sweep(case: Case, data: st.DataObject) -> None:
            places = [(c, key) for c in (case.path_parameters, case.query) if c for key in c] + places_in(case.body)
            if places:
                container, key = data.draw(st.sampled_from(places))
                container[key] = data.draw(HOSTILE)
            response = case.call(headers=AUTH, timeout=30)
            assert response.status_code < 500, (case.operation.label, case.as_curl_command(), response.text)

        sweep()


def test_the_document_names_what_the_issue_found_missing() -> None:
    paths = openapi_document(OPERATIONS)["paths"]

    def parameters(path: str, method: str, where: str) -> dict[str, Any]:
        return {p["name"]: p for p in paths[path][method].get("parameters", []) if p["in"] == where}

    assert {"tenant", "provider"} <= set(parameters("/connections", "get", "query"))
    assert parameters("/oauth/{provider}/callback", "get", "query")["state"]["required"] is True
    assert set(parameters("/subscriptions/{subscription_id}/deliveries", "get", "query")) == {"limit"}
    assert "validationToken" in parameters("/webhooks/microsoft", "post", "query")
    assert {"subscription", "token"} == set(parameters("/webhooks/salesforce", "post", "query"))
    headers = {
        "/webhooks/hubspot": {"X-HubSpot-Signature-v3", "X-HubSpot-Request-Timestamp"},
        "/webhooks/standard/{source}": {"webhook-id", "webhook-timestamp", "webhook-signature"},
        "/webhooks/google": {"X-Goog-Channel-ID", "X-Goog-Channel-Token"},
    }
    for path, names in headers.items():
        assert names <= set(parameters(path, "post", "header")), path
    for path in ["/webhooks/hubspot", "/webhooks/microsoft", "/webhooks/zoho", "/webhooks/standard/{source}"]:
        assert "application/json" in paths[path]["post"]["requestBody"]["content"], path
    assert "text/xml" in paths["/webhooks/salesforce"]["post"]["requestBody"]["content"]
    assert "text/plain" in paths["/webhooks/microsoft"]["post"]["responses"]["200"]["content"]
    assert any(media.startswith("text/plain") for media in paths["/metrics"]["get"]["responses"]["200"]["content"])
    assert "Retry-After" in paths["/ready"]["get"]["responses"]["503"]["headers"]
    assert "5XX" in paths["/connections"]["get"]["responses"]
    assert paths["/subscriptions/{subscription_id}/rotate"]["post"]["requestBody"]["required"] is False
