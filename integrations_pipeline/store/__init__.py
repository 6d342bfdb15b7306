"""Integration state: connections, encrypted tokens, OAuth states, sync cursors and the audit log."""

from integrations_pipeline.store.engine import create_store_engine
from integrations_pipeline.store.models import (
    Connection,
    ConnectionStatus,
    PendingAuthorization,
    TokenSet,
)
from integrations_pipeline.store.repository import (
    InvalidState,
    StateStore,
    StoreError,
    connection_id_for,
)

__all__ = [
    "Connection",
    "ConnectionStatus",
    "InvalidState",
    "PendingAuthorization",
    "StateStore",
    "StoreError",
    "TokenSet",
    "connection_id_for",
    "create_store_engine",
]
