"""The HTTP gateway (Starlette): connects tenants through OAuth and, later, lands webhooks. No Dagster here."""

from integrations_pipeline.gateway.app import create_app

__all__ = ["create_app"]
