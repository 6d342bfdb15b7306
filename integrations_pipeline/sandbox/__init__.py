"""Sandbox emulators of the SaaS APIs we sync from, served over real HTTP for tests, the dev stack and benchmarks.

This layer imports nothing from the rest of `integrations_pipeline` (only the standard library, starlette and
pydantic), so the connectors are tested against an independent implementation of each provider's contract.
"""

from integrations_pipeline.sandbox.common import RequestRecord
from integrations_pipeline.sandbox.google import GoogleEmulator
from integrations_pipeline.sandbox.hubspot import HubSpotEmulator
from integrations_pipeline.sandbox.microsoft import MicrosoftEmulator
from integrations_pipeline.sandbox.salesforce import SalesforceEmulator
from integrations_pipeline.sandbox.zoho import ZohoEmulator

EMULATORS: dict[str, type] = {
    "google": GoogleEmulator,
    "hubspot": HubSpotEmulator,
    "microsoft": MicrosoftEmulator,
    "salesforce": SalesforceEmulator,
    "zoho": ZohoEmulator,
}
"""Provider name -> emulator class. Each takes client_id, client_secret and sizes (users, contacts, events)."""

__all__ = [
    "EMULATORS",
    "GoogleEmulator",
    "HubSpotEmulator",
    "MicrosoftEmulator",
    "RequestRecord",
    "SalesforceEmulator",
    "ZohoEmulator",
]
