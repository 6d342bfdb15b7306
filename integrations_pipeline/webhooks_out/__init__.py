"""Outgoing webhooks on the wire: Standard Webhooks signing, the destination guard, the retry policy and the
sender. Clients layer: httpx and the store below, never Dagster; the delivery sensor drives it."""
