"""`connection_health`: the health of every connection, observed (not materialized) by `connection_health_sensor`.

An operator finds it under the `operations` group: its latest observation holds the same facts as
`GET /health/integrations` (status, token expiry, last successful sync, lag, 429 rate, dead letters, push expiry,
problems), and its history shows when each changed.
"""

import dagster as dg

CONNECTION_HEALTH = dg.AssetKey("connection_health")

connection_health = dg.AssetSpec(
    CONNECTION_HEALTH,
    group_name="operations",
    description=(
        "Every connection's health, from the state store: status, token expiry, last successful sync, lag, "
        "recent 429 rate, dead letters and push-subscription expiry. Observed by connection_health_sensor each "
        "minute, so it is never older than one sensor interval."
    ),
)
