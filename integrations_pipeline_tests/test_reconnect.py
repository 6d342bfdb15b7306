"""A tenant reconnecting through a different provider account: refused (and audited) unless the connect request
confirmed it, through the real gateway and the HubSpot sandbox."""

from typing import Any

import httpx

from integrations_pipeline.store import ConnectionStatus
from integrations_pipeline_tests.conftest import API_KEY, Stack

OTHER_PORTAL = 70001


def reconnect(stack: Stack, **request: Any) -> httpx.Response:
    """What a person does in a browser: start at the gateway, consent at the sandbox, land on the callback."""
    with httpx.Client(timeout=30, follow_redirects=True) as browser:
        started = browser.post(
            f"{stack.gateway_url}/connections/hubspot/connect",
            json={"tenant": "acme", **request},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        assert started.status_code == 200, started.text
        return browser.get(started.json()["authorization_url"])


def test_another_account_is_refused_unless_confirmed_and_audited_either_way(stack: Stack) -> None:
    connection_id = stack.connect("acme")
    first_account = str(stack.emulator.portal_id)
    stack.store.set_cursor(connection_id, "contacts", "cursor-of-the-first-account")
    tokens_before = stack.store.load_tokens(connection_id)
    stack.emulator.portal_id = OTHER_PORTAL  # the person consents while signed in to another portal

    refused = reconnect(stack)

    assert refused.status_code == 409
    assert refused.json()["error"] == "account_mismatch"
    assert refused.json()["message"] == (
        f"connection {connection_id} belongs to provider account {first_account}, and this authorization was for "
        f"account {OTHER_PORTAL}: nothing was changed. Disconnect it first (DELETE /connections/{connection_id}), "
        "or connect again with replace_account=true to switch accounts"
    )
    connection = stack.store.get_connection(connection_id)
    assert connection is not None and connection.external_account_id == first_account
    assert stack.store.load_tokens(connection_id) == tokens_before
    assert stack.store.get_cursor(connection_id, "contacts") == "cursor-of-the-first-account"
    change = {"previous_account": first_account, "new_account": str(OTHER_PORTAL)}
    (refusal,) = stack.store.audit_entries(action="connection.account_replace_refused")
    assert refusal.connection_id == connection_id and refusal.detail == change

    confirmed = reconnect(stack, replace_account=True)

    assert confirmed.status_code == 200, confirmed.text
    connection = stack.store.get_connection(connection_id)
    assert connection is not None and connection.external_account_id == str(OTHER_PORTAL)
    assert stack.store.get_cursor(connection_id, "contacts") is None  # the old account's cursor means nothing now
    actions = [entry.action for entry in stack.store.audit_entries(connection_id=connection_id)]
    assert actions[-2:] == ["connection.account_replaced", "connection.reauthorized"]
    assert stack.store.audit_entries(action="connection.account_replaced")[0].detail == change

    # The same account again needs no confirmation; after a disconnect, any account may connect.
    assert reconnect(stack).status_code == 200
    with stack.api() as api:
        assert api.delete(f"/connections/{connection_id}").status_code == 200
    stack.emulator.portal_id = OTHER_PORTAL + 1
    assert reconnect(stack).status_code == 200
    connection = stack.store.get_connection(connection_id)
    assert connection is not None and connection.status == ConnectionStatus.ACTIVE
    assert connection.external_account_id == str(OTHER_PORTAL + 1)
