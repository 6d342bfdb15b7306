"""Provider connectors: plain httpx clients, OAuth and typed errors. No Dagster here."""
