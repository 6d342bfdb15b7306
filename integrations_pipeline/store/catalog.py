"""The field catalog: every field each connection's provider describes, per entity, as last discovered.

Discovery (clients/catalog.py) calls the provider's metadata API and hands the result to `FieldCatalog.record`,
which adds new fields, refreshes changed labels and types, and marks fields the provider no longer describes as
removed (never deletes them: a mapping naming one then gets a message saying so, and a field that comes back is
the same row again). A sync reads the entity's live `fields` (assets.entities.current_catalog) and requests them
by name; the gateway and the CLI list `fields`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa

from integrations_pipeline.fields import FieldInfo, FieldType
from integrations_pipeline.store import schema
from integrations_pipeline.store.repository import StateStore


@dataclass(frozen=True)
class CatalogField(FieldInfo):
    discovered_at: datetime | None = None
    removed_at: datetime | None = None


@dataclass(frozen=True)
class CatalogChange:
    """What one discovery changed: field names added (or back after a removal) and removed."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def _field(row: sa.Row) -> CatalogField:  # type: ignore[type-arg]
    return CatalogField(
        entity=row.entity,
        name=row.name,
        label=row.label,
        type=FieldType(row.type),
        provider_type=row.provider_type,
        is_custom=row.is_custom,
        raw_path=row.raw_path,
        discovered_at=row.discovered_at,
        removed_at=row.removed_at,
    )


class FieldCatalog:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    def fields(
        self, connection_id: str, entity: str | None = None, *, include_removed: bool = False
    ) -> list[CatalogField]:
        """The connection's fields ordered by entity and name; removed ones only when asked for."""
        table = schema.field_catalog
        query = sa.select(table).where(table.c.connection_id == connection_id)
        if entity is not None:
            query = query.where(table.c.entity == entity)
        if not include_removed:
            query = query.where(table.c.removed_at.is_(None))
        with self.store.engine.connect() as conn:
            return [_field(row) for row in conn.execute(query.order_by(table.c.entity, table.c.name))]

    def field_names(self, connection_id: str, entity: str) -> list[str]:
        """The names of the entity's live (not removed) fields, sorted."""
        return [f.name for f in self.fields(connection_id, entity)]

    def last_discovered_at(self, connection_id: str, entity: str) -> datetime | None:
        table = schema.field_catalog
        query = sa.select(sa.func.max(table.c.seen_at)).where(
            (table.c.connection_id == connection_id) & (table.c.entity == entity)
        )
        with self.store.engine.connect() as conn:
            value = conn.execute(query).scalar()
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def record(
        self, connection_id: str, entity: str, discovered: Sequence[FieldInfo], now: datetime | None = None
    ) -> CatalogChange:
        """Make the entity's catalog what the provider just described, in one transaction per entity."""
        now = now or datetime.now(UTC)
        table = schema.field_catalog
        key = (table.c.connection_id == connection_id) & (table.c.entity == entity)
        by_name = {f.name: f for f in discovered}
        change = CatalogChange()
        with self.store.locked(f"catalog:{connection_id}:{entity}") as conn:
            existing = {row.name: row for row in conn.execute(sa.select(table).where(key))}
            for name, info in sorted(by_name.items()):
                values = {
                    "label": info.label[:255],
                    "type": info.type.value,
                    "provider_type": info.provider_type[:64],
                    "is_custom": info.is_custom,
                    "raw_path": info.path,
                    "seen_at": now,
                    "removed_at": None,
                }
                row = existing.get(name)
                if row is None:
                    conn.execute(
                        table.insert().values(
                            connection_id=connection_id, entity=entity, name=name, discovered_at=now, **values
                        )
                    )
                    change.added.append(name)
                else:
                    conn.execute(table.update().where(key & (table.c.name == name)).values(**values))
                    if row.removed_at is not None:
                        change.added.append(name)
            gone = sorted(name for name, row in existing.items() if name not in by_name and row.removed_at is None)
            if gone:
                conn.execute(table.update().where(key & table.c.name.in_(gone)).values(removed_at=now))
            change.removed.extend(gone)
        return change
