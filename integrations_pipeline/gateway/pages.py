"""The few pages a person's browser lands on at the gateway (everything else answers JSON)."""

from __future__ import annotations

import html

from starlette.requests import Request
from starlette.responses import HTMLResponse

from integrations_pipeline.gateway.schemas import ConnectionView


def wants_html(request: Request) -> bool:
    """A browser navigating (Accept names text/html); API clients, and any that ask for JSON, get JSON."""
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "application/json" not in accept


def connected_page(view: ConnectionView) -> HTMLResponse:
    """Where the OAuth flow ends when the connect request gave no return_path: what was connected, then close."""
    scopes = "".join(f"<li><code>{html.escape(scope)}</code></li>" for scope in view.granted_scopes)
    missing = (
        f"<p>Not granted (some data will not sync): {html.escape(', '.join(view.missing_scopes))}</p>"
        if view.missing_scopes
        else ""
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Connected</title>
<style>body{{font-family:sans-serif;max-width:34rem;margin:3rem auto}}</style></head><body>
<h1>Connected</h1>
<p><strong>{html.escape(view.provider)}</strong> is connected for <strong>{html.escape(view.tenant)}</strong>
(connection <code>{html.escape(view.id)}</code>, {html.escape(view.status)}). Its first sync starts within a minute.</p>
<ul>{scopes}</ul>{missing}
<p>You can close this window.</p>
</body></html>
"""
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})
