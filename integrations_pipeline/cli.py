"""`integrations-pipeline`: operate the state store, keys, gateway and the local sandbox stack.

Every refusal is one line naming what to fix, with exit status 1; never a stack trace.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

import click
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from integrations_pipeline.crypto import KeyringError, generate_key_entry
from integrations_pipeline.gateway.connections import GatewayError
from integrations_pipeline.gateway.fields import FieldService
from integrations_pipeline.gateway.mappings import MappingService, PreviewRequest, StoredRows
from integrations_pipeline.mapping import MappingUpdate
from integrations_pipeline.settings import Settings, SettingsError, load_settings
from integrations_pipeline.store import StateStore, StoreError, create_store_engine
from integrations_pipeline.store import audit as audit_log
from integrations_pipeline.store import migrate as migrations
from integrations_pipeline.store.dead_letters import replay_dead_letters
from integrations_pipeline.store.inbox import WebhookInbox
from integrations_pipeline.store.repository import unreadable_secrets


def friendly_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (SettingsError, KeyringError, StoreError) as error:
            raise click.ClickException(str(error)) from None
        except GatewayError as refusal:
            details = "; ".join(f"{field}: {problem}" for field, problem in refusal.fields.items())
            raise click.ClickException(f"{refusal.message}" + (f" ({details})" if details else "")) from None
        except OperationalError:
            raise click.ClickException(
                "the state database is unreachable: check INTEGRATIONS_STATE_DATABASE_URL"
            ) from None

    return wrapper


def open_store(settings: Settings) -> StateStore:
    return StateStore(create_store_engine(settings.state_database_url), settings.keyring())


@click.group(help=__doc__)
def main() -> None:
    pass


@main.group(help="The integration state database.")
def db() -> None:
    pass


@db.command("upgrade", help="Apply every pending Alembic migration.")
@friendly_errors
def db_upgrade() -> None:
    settings = load_settings()
    engine = create_store_engine(settings.state_database_url)
    migrations.upgrade(engine)
    click.echo(f"state store at revision {migrations.current_revision(engine)}")
    # An audit log written before its entries carried MACs is vouched for by one keyed entry (0009).
    if settings.encryption_keys is not None and audit_log.seal(StateStore(engine, settings.keyring()), actor="cli"):
        click.echo("audit log sealed: its entries from before keyed MACs are vouched for by a keyed entry")


@db.command("current", help="Show the applied and the latest migration.")
@friendly_errors
def db_current() -> None:
    engine = create_store_engine(load_settings().state_database_url)
    click.echo(f"applied: {migrations.current_revision(engine) or 'none'}; latest: {migrations.head_revision()}")


@main.group(help="Encryption keys for tokens at rest.")
def keys() -> None:
    pass


@keys.command("generate", help="Print a new key entry for INTEGRATIONS_ENCRYPTION_KEYS (prepend it to rotate).")
@click.option("--key-id", default=None, help="a name for the key (letters, digits, _ or -)")
@friendly_errors
def keys_generate(key_id: str | None) -> None:
    click.echo(generate_key_entry(key_id))


@keys.command("rotate", help="Re-encrypt every stored secret under the primary (first) key.")
@friendly_errors
def keys_rotate() -> None:
    store = open_store(load_settings())
    rotation = store.rotate_keys()
    primary = store.keyring.primary_key_id
    skipped = [f"{secret.table}:{secret.row}:{secret.name}" for secret in rotation.unreadable]
    with store.locked("audit_log") as conn:
        detail = {"rows": rotation.moved, "primary": primary, "unreadable": skipped}
        store.audit(conn, "keys.rotated", actor="cli", detail=detail)
    click.echo(f"re-encrypted {rotation.moved} secrets under key {primary}")
    _print_key_usage(store)
    if rotation.unreadable:
        # Every other secret moved; these (listed above as UNREADABLE) stay as they were until dealt with.
        unreadable = len(rotation.unreadable)
        raise click.ClickException(f"{unreadable} secrets could not be decrypted and were left as they were")


@keys.command("status", help="How many secrets each key protects; a key at 0 can be retired.")
@friendly_errors
def keys_status() -> None:
    _print_key_usage(open_store(load_settings()))


def _print_key_usage(store: StateStore) -> None:
    usage = store.key_usage()
    with store.engine.connect() as conn:
        unreadable = unreadable_secrets(conn, store.keyring)
    for key_id in sorted(store.keyring.key_ids | set(usage)):
        role = "primary" if key_id == store.keyring.primary_key_id else "secondary"
        known = "" if key_id in store.keyring.key_ids else " (NOT IN KEYRING: these rows cannot be read)"
        failing = sum(1 for secret in unreadable if secret.key_id == key_id)
        if failing and not known:
            known = f" ({failing} CANNOT BE DECRYPTED: this key is not the one that encrypted them)"
        click.echo(f"{key_id}\t{role}\t{usage.get(key_id, 0)} secrets{known}")
    for secret in unreadable:
        click.echo(f"UNREADABLE: {secret.describe()}")


@main.group(help="Connections of tenants' accounts.")
def connections() -> None:
    pass


@connections.command("list", help="Every connection with its status (never a secret).")
@friendly_errors
def connections_list() -> None:
    store = open_store(load_settings())
    with store.engine.connect() as conn:
        unreadable = {secret.connection_id for secret in unreadable_secrets(conn, store.keyring, credentials_only=True)}
    for connection in store.list_connections():
        expires = connection.token_expires_at.isoformat() if connection.token_expires_at else "-"
        # Whatever the stored status says, a connection whose tokens cannot be decrypted cannot sync.
        status = "UNREADABLE (secrets cannot be decrypted: see `keys status`)" if connection.id in unreadable else ""
        click.echo(f"{connection.id}\t{status or connection.status.value}\ttoken expires {expires}")


@connections.command(
    "connect-app-only",
    help="Connect TENANT's Microsoft directory app-only: tokens by client credentials for DIRECTORY_TENANT (its "
    "tenant id or domain), after an administrator there granted admin consent; directory-wide reads of users. "
    "Without consent yet, prints the admin consent URL to send the administrator.",
)
@click.argument("provider", type=click.Choice(["microsoft"]))
@click.option("--tenant", required=True, help="our tenant the connection belongs to, e.g. acme")
@click.option("--directory-tenant", required=True, help="the organisation's Entra tenant id (GUID) or domain")
@friendly_errors
def connections_connect_app_only(provider: str, tenant: str, directory_tenant: str) -> None:
    from integrations_pipeline.gateway.connections import ConnectionService

    settings = load_settings()
    service = ConnectionService(settings, open_store(settings))
    try:
        connection = service.connect_app_only(provider, tenant, directory_tenant)
    finally:
        service.close()
    click.echo(f"{connection.id}\t{connection.status.value}\tapp-only for {directory_tenant}")


@main.command(
    "salesforce-endpoint",
    help="For a real Salesforce org: issue the outbound-message endpoint URL (with a fresh token) an administrator "
    "configures for CONNECTION_ID; it replaces the previous one. Printed here once, never logged or stored.",
)
@click.argument("connection_id")
@friendly_errors
def salesforce_endpoint(connection_id: str) -> None:
    from integrations_pipeline.clients.push import (
        MANUAL_SETUP,
        SALESFORCE_RECORDED_LIFE,
        SALESFORCE_RESOURCES,
        salesforce_endpoint_url,
    )
    from integrations_pipeline.store.push import PushStatus, PushSubscriptions

    settings = load_settings()
    store = open_store(settings)
    connection = store.get_connection(connection_id)
    if connection is None or connection.provider != "salesforce":
        raise click.ClickException(f"no Salesforce connection {connection_id!r}")
    subscriptions = PushSubscriptions(store)
    for previous in subscriptions.list(connection_id=connection_id, provider="salesforce"):
        subscriptions.set_status(previous.id, PushStatus.REMOVED, "replaced by a new endpoint URL")
    row, secret = subscriptions.create(
        connection_id=connection_id,
        provider="salesforce",
        entity="contacts",
        resource=SALESFORCE_RESOURCES["contacts"],
        expires_at=datetime.now(UTC) + SALESFORCE_RECORDED_LIFE,
        external_id=MANUAL_SETUP,
    )
    click.echo(salesforce_endpoint_url(str(settings.public_url), row.id, secret))


@main.group(help="The hash-chained audit log of what was done to connections, keys and mappings.")
def audit() -> None:
    pass


@audit.command("verify", help="Check every entry's hash and link and the chain's head; exit 1 when broken.")
@click.option("--expect", "expected_hash", default=None, help="a head hash printed by an earlier verify")
@friendly_errors
def audit_verify(expected_hash: str | None) -> None:
    verdict = audit_log.verify(open_store(load_settings()), expected_hash)
    click.echo(verdict.summary())
    if not verdict.intact:
        raise SystemExit(1)


@audit.command("list", help="Audit entries, oldest first (never a secret: none is ever written).")
@click.option("--tenant", default=None)
@click.option("--provider", default=None)
@click.option("--connection", "connection_id", default=None, help="a connection id, e.g. hubspot-acme")
@click.option("--action", default=None, help="e.g. connection.connected, token.refreshed, mapping.changed")
@click.option("--since", default=None, type=click.DateTime(), help="ISO date or time, UTC")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=1), help="the newest N")
@friendly_errors
def audit_list(
    tenant: str | None,
    provider: str | None,
    connection_id: str | None,
    action: str | None,
    since: datetime | None,
    limit: int,
) -> None:
    entries = open_store(load_settings()).audit_entries(
        tenant=tenant,
        provider=provider,
        connection_id=connection_id,
        action=action,
        since=since.replace(tzinfo=UTC) if since else None,
        limit=limit,
    )
    for entry in entries:
        subject = entry.connection_id or "/".join(part for part in (entry.tenant, entry.provider) if part) or "-"
        when = entry.occurred_at.isoformat(timespec="seconds")
        detail = json.dumps(entry.detail, sort_keys=True, default=str)
        click.echo(f"{entry.id}\t{when}\t{entry.actor}\t{entry.action}\t{subject}\t{detail}")


@main.group(help="Webhook events that failed their run five times (dead letters), and replaying them.")
def dlq() -> None:
    pass


@dlq.command("list", help="Dead letters waiting for a replay, oldest first, with the cause of their last failure.")
@click.option("--include-replayed", is_flag=True, help="also list dead letters already replayed")
@friendly_errors
def dlq_list(include_replayed: bool) -> None:
    letters = WebhookInbox(open_store(load_settings())).dead_letters(include_replayed=include_replayed)
    if not letters:
        click.echo("no dead letters")
    for letter in letters:
        replayed = f"replayed {letter.replayed_at.isoformat()}" if letter.replayed_at else "waiting"
        where = f"{letter.connection_id or '-'}\t{letter.entity or '-'}\t{letter.partition_key or '-'}"
        cause = " ".join(letter.cause.split())
        click.echo(
            f"{letter.id}\t{letter.source}\t{where}\t{letter.attempts} attempts\t"
            f"failed {letter.failed_at.isoformat()}\t{replayed}\t{cause}"
        )


@dlq.command("replay", help="Put dead letters back in the inbox (audited); webhook_events_sensor runs them again.")
@click.option("--id", "ids", multiple=True, type=int, help="a dead letter's id (repeat for several)")
@click.option("--all", "replay_all", is_flag=True, help="every dead letter not yet replayed")
@friendly_errors
def dlq_replay(ids: tuple[int, ...], replay_all: bool) -> None:
    inbox = WebhookInbox(open_store(load_settings()))
    replayed = replay_dead_letters(inbox, ids, replay_all=replay_all, actor="cli")
    click.echo(f"replayed {replayed} dead letters; webhook_events_sensor requests their runs on its next tick")


@main.group(help="Tenants' field mappings for the unified tables.")
def mappings() -> None:
    pass


def warehouse_rows(settings: Settings) -> StoredRows:
    """Mapping previews read the connection's stored rows from the warehouse (loaded on first use: the warehouse
    module brings Dagster and DuckDB, which most commands do not need)."""

    def read(provider: str, entity: str, connection_id: str) -> Any:
        from integrations_pipeline.warehouse import open_warehouse

        return open_warehouse(settings).read(f"{provider}.{entity}", [connection_id], None, "start_at")

    return read


def _mapping_service() -> MappingService:
    settings = load_settings()
    return MappingService(open_store(settings), warehouse_rows(settings))


@mappings.command("show", help="Print a tenant's mapping for a provider as JSON.")
@click.argument("tenant")
@click.argument("provider")
@friendly_errors
def mappings_show(tenant: str, provider: str) -> None:
    click.echo(_mapping_service().get(tenant, provider).model_dump_json(indent=2))


@mappings.command("set", help="Merge a JSON file of changes into the mapping ({entity: {target: rule or null}}).")
@click.argument("tenant")
@click.argument("provider")
@click.argument("changes", type=click.File("r"))
@friendly_errors
def mappings_set(tenant: str, provider: str, changes: TextIO) -> None:
    update = _parse_update(changes.read())
    click.echo(_mapping_service().update(tenant, provider, update, actor="cli").model_dump_json(indent=2))


@mappings.command(
    "preview", help="Apply the mapping (with optional unsaved changes) to the connection's stored rows, or samples."
)
@click.argument("tenant")
@click.argument("provider")
@click.argument("changes", type=click.File("r"), required=False)
@friendly_errors
def mappings_preview(tenant: str, provider: str, changes: TextIO | None) -> None:
    request = PreviewRequest(changes=_parse_update(changes.read()) if changes else MappingUpdate())
    click.echo(_mapping_service().preview(tenant, provider, request).model_dump_json(indent=2))


@main.group(help="Connections' field catalogs: every field the provider describes, custom ones included.")
def fields() -> None:
    pass


@fields.command("list", help="List a connection's fields as its provider describes them now (custom ones included).")
@click.argument("connection")
@click.option("--entity", type=click.Choice(["users", "contacts", "events"]), default=None)
@click.option(
    "--refresh/--stored",
    default=None,
    help="--stored: the stored catalog only, without asking the provider; --refresh: ask the provider (refused for "
    "a connection that is not active). Default: ask it when the connection is active",
)
@click.option("--include-removed", is_flag=True, help="also fields the provider no longer describes")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@friendly_errors
def fields_list(
    connection: str, entity: str | None, refresh: bool | None, include_removed: bool, as_json: bool
) -> None:
    settings = load_settings()
    listing = FieldService(settings, open_store(settings)).list(
        connection, entity=entity, refresh=refresh, include_removed=include_removed
    )
    if as_json:
        click.echo(listing.model_dump_json(indent=2))
        return
    rows = [
        (f.entity, f.name, f.type, "custom" if f.custom else "standard", f.label, "removed" if f.removed_at else "")
        for f in listing.fields
    ]
    header = ("ENTITY", "NAME", "TYPE", "ORIGIN", "LABEL", "")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(str(value).ljust(width) for value, width in zip(row, widths, strict=True)).rstrip())


def _parse_update(text: str) -> MappingUpdate:
    try:
        return MappingUpdate.model_validate_json(text)
    except ValidationError as invalid:
        where = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc']) or 'file'}: {issue['msg']}"
            for issue in invalid.errors(include_url=False, include_input=False)
        )
        raise click.ClickException(f"the mapping file is invalid: {where}") from None


@main.command(help="Launch a Dagster backfill of a provider's assets for one tenant (or all) over a range of days.")
@click.option("--provider", required=True, help="hubspot, google, microsoft, salesforce or zoho")
@click.option("--tenant", default=None, help="one tenant; every tenant with an active connection if omitted")
@click.option("--from", "first_day", required=True, metavar="YYYY-MM-DD", help="first UTC day of events")
@click.option("--to", "last_day", required=True, metavar="YYYY-MM-DD", help="last UTC day of events (inclusive)")
@friendly_errors
def backfill(provider: str, tenant: str | None, first_day: str, last_day: str) -> None:
    # Dagster loads only for this command: the rest of the CLI stays quick to start.
    from integrations_pipeline.backfills import (
        BackfillError,
        BackfillRequest,
        launch_backfill,
        open_instance,
        parse_day,
    )
    from integrations_pipeline.definitions import defs

    try:
        request = BackfillRequest(provider, tenant, parse_day(first_day, "--from"), parse_day(last_day, "--to"))
        store = open_store(load_settings())
        with open_instance() as instance:
            launched = launch_backfill(instance, defs, store, request, actor="cli")
    except BackfillError as refusal:
        raise click.ClickException(str(refusal)) from None
    partitions = ", ".join(f"{asset}: {count}" for asset, count in launched.partitions_by_asset.items())
    click.echo(f"backfill {launched.backfill_id} launched for {', '.join(launched.connection_ids)} ({partitions})")


@main.command(help="Serve the HTTP gateway.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="worker processes on the one port"
)
@friendly_errors
def gateway(host: str, port: int, workers: int) -> None:
    import uvicorn

    from integrations_pipeline.httpserver import log_config

    settings = load_settings()
    settings.require_api_key()
    settings.keyring()
    # uvicorn's access log prints query strings, which carry OAuth codes: the app logs requests itself. Workers
    # each build the app from the same environment (uvicorn needs an import string to start them).
    # log_config: an exception that escapes the app is logged as its type only, never a traceback.
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "info",
        "access_log": False,
        "log_config": log_config(),
    }
    if workers == 1:
        uvicorn.run(gateway_app(), **options)
    else:
        uvicorn.run("integrations_pipeline.cli:gateway_app", factory=True, workers=workers, **options)


def gateway_app() -> Any:
    """The gateway as configured by the environment, logging as the command does (each `--workers` process calls
    this in its own interpreter)."""
    from integrations_pipeline.gateway import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    return create_app(settings, stored_rows=warehouse_rows(settings))


@main.command(help="Serve a provider's sandbox emulator (for local development and tests).")
@click.argument("provider")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8101, show_default=True, type=int)
@click.option("--contacts", default=2_000, show_default=True, type=int, help="generated contacts")
@friendly_errors
def sandbox(provider: str, host: str, port: int, contacts: int) -> None:
    import uvicorn

    from integrations_pipeline.devstack import build_emulator

    uvicorn.run(build_emulator(provider, load_settings(), contacts=contacts).app, host=host, port=port)


@main.command(help="The local stack behind `make dev`: sandbox, gateway, a connected tenant and `dagster dev`.")
@click.option("--dagster-port", default=3000, show_default=True, type=int)
@click.option("--gateway-port", default=8080, show_default=True, type=int)
@click.option("--sandbox-port", default=8101, show_default=True, type=int)
@friendly_errors
def dev(dagster_port: int, gateway_port: int, sandbox_port: int) -> None:
    from integrations_pipeline.devstack import run_dev_stack

    run_dev_stack(dagster_port=dagster_port, gateway_port=gateway_port, sandbox_port=sandbox_port)
