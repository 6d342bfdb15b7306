"""The OAuth flow as a person's browser sees it, for every provider: the emulator's consent page names the app and
the scopes; Deny comes back to the gateway as `error=access_denied` (a clear refusal, no connection); Allow ends on
the gateway's "connected" page. Scripted clients keep the JSON flow (connect_through_oauth, used everywhere)."""

from html.parser import HTMLParser
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest

from integrations_pipeline.sandbox import EMULATORS
from integrations_pipeline_tests.conftest import Stack, client_credentials

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


class ConsentForm(HTMLParser):
    """The page's form: where it posts and its hidden fields."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.action = ""
        self.fields: dict[str, str] = {}
        self.decisions: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.action = attributes["action"]
        elif tag == "input" and attributes.get("type") == "hidden":
            self.fields[attributes["name"]] = attributes["value"]
        elif tag == "button":
            self.decisions.append(attributes["value"])


def consent_page(stack: Stack, browser: httpx.Client, provider: str) -> tuple[str, ConsentForm]:
    with stack.api() as api:
        started = api.post(f"/connections/{provider}/connect", json={"tenant": "acme"})
    authorization_url = started.json()["authorization_url"]
    page = browser.get(authorization_url)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    return authorization_url, ConsentForm(page.text)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_every_provider_shows_a_consent_page_and_the_gateway_a_connected_page(stack: Stack) -> None:
    with httpx.Client(timeout=30, headers={"Accept": BROWSER_ACCEPT}) as browser:
        for provider in sorted(EMULATORS):
            authorization_url, form = consent_page(stack, browser, provider)
            assert form.fields["client_id"] == client_credentials(provider)[0]
            assert form.decisions == ["allow", "deny"]
            posted_to = urljoin(authorization_url, form.action)

            denied = browser.post(posted_to, data={**form.fields, "decision": "deny"})
            assert denied.status_code == 302
            returned = parse_qs(urlsplit(denied.headers["location"]).query)
            assert returned["error"] == ["access_denied"] and "code" not in returned
            assert returned["state"] == [form.fields["state"]]
            refused = browser.get(denied.headers["location"])
            assert refused.status_code == 400 and "access_denied" in refused.text

            authorization_url, form = consent_page(stack, browser, provider)
            allowed = browser.post(urljoin(authorization_url, form.action), data={**form.fields, "decision": "allow"})
            assert allowed.status_code == 302 and "code" in parse_qs(urlsplit(allowed.headers["location"]).query)
            landed = browser.get(allowed.headers["location"])
            assert landed.status_code == 200 and landed.headers["content-type"].startswith("text/html")
            assert "Connected" in landed.text and f"{provider}-acme" in landed.text
    with stack.api() as api:
        statuses = {view["id"]: view["status"] for view in api.get("/connections").json()["connections"]}
    assert statuses == {f"{provider}-acme": "active" for provider in EMULATORS}


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_refused_authorize_request_gets_its_refusal_not_a_consent_page(stack: Stack) -> None:
    with stack.api() as api:
        started = api.post("/connections/hubspot/connect", json={"tenant": "acme"})
    forged = started.json()["authorization_url"].replace("client_id=", "client_id=someone-else", 1)
    answer = httpx.get(forged, headers={"Accept": BROWSER_ACCEPT}, timeout=30)
    assert answer.status_code == 400 and "Allow" not in answer.text
