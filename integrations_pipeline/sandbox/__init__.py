"""Sandbox emulators of the SaaS APIs we sync from, served over real HTTP for tests, the dev stack and benchmarks.

This layer imports nothing from the rest of `integrations_pipeline` (only the standard library, starlette and
pydantic), so the connectors are tested against an independent implementation of each provider's contract.
"""

from integrations_pipeline.sandbox.common import RequestRecord
from integrations_pipeline.sandbox.hubspot import HubSpotEmulator

EMULATORS: dict[str, type] = {"hubspot": HubSpotEmulator}
"""Provider name -> emulator class; Zoho, Google, Microsoft Graph and Salesforce join as they are written."""

__all__ = ["EMULATORS", "HubSpotEmulator", "RequestRecord"]
