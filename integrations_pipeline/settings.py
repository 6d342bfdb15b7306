"""The one settings model (env prefix `INTEGRATIONS_`), read lazily by whoever needs it.

Nested provider apps use a double underscore: `INTEGRATIONS_HUBSPOT__CLIENT_ID`. A `.env` file in the working
directory is read too (`make dev` writes one, git-ignored). Errors name the variable and what it expects.

One rule, so every process reads the same configuration: a variable has one value, from the environment or from
`.env`; set in both with different values, it is refused. (This process would let the environment win, but
`dagster dev` loads `.env` over the environment for its code servers, so they would run with the other value:
a key set in the shell would reach the gateway and not the syncs.)
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path

from dotenv import dotenv_values
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from integrations_pipeline.crypto import Keyring, KeyringError

ENV_PREFIX = "INTEGRATIONS_"
NESTED_DELIMITER = "__"


class ProviderApp(BaseModel):
    """One OAuth app registered at a provider (ours, shared by every tenant)."""

    client_id: str = Field(min_length=1, description="the OAuth client id of our app at the provider")
    client_secret: SecretStr = Field(min_length=1, description="the OAuth client secret of our app")
    base_url: AnyHttpUrl | None = Field(
        default=None,
        description="one origin serving both OAuth and the API (the sandbox emulators); unset for the real provider",
    )
    scopes: list[str] | None = Field(default=None, description="scopes to request instead of the provider's defaults")
    accounts_servers: list[AnyHttpUrl] = Field(
        default_factory=list,
        description="Zoho with a base_url (the sandbox) only: the accounts servers of its other data centres, believed "
        "when a callback names one",
    )
    rate_limit: int | None = Field(
        default=None, ge=1, description="calls per rate window for one connection, instead of the provider's default"
    )
    rate_window_s: float | None = Field(
        default=None, gt=0, description="seconds of that rolling window, instead of the provider's default"
    )
    app_id: int | None = Field(
        default=None, ge=1, description="HubSpot only: the app's id, to set its webhook target URL and subscriptions"
    )
    developer_api_key: SecretStr | None = Field(
        default=None,
        min_length=1,
        description="HubSpot only: the developer account's API key (hapikey) that HubSpot's webhooks API requires",
    )


SOURCE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class StandardWebhookSource(BaseModel):
    """A Standard Webhooks sender and the connection its events are about (docs/architecture.md, "Webhooks in")."""

    secrets: list[SecretStr] = Field(
        min_length=1,
        description="`whsec_<base64>` signing secrets; list the new one next to the old during a rotation",
    )
    connection_id: str = Field(min_length=1, description="the connection (e.g. hubspot-acme) this sender reports on")

    @field_validator("secrets")
    @classmethod
    def _whsec_base64(cls, secrets: list[SecretStr]) -> list[SecretStr]:
        for position, secret in enumerate(secrets):
            if not whsec_key(secret.get_secret_value()):
                raise ValueError(f"secret {position + 1} must be `whsec_` followed by base64 (never echoed here)")
        return secrets


def whsec_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_` secret, or b"" when it is not one."""
    if not secret.startswith("whsec_"):
        return b""
    encoded = secret.removeprefix("whsec_").rstrip("=")
    try:  # padding optional, as the reference implementation reads it
        return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        return b""


class WebhookSettings(BaseModel):
    """The webhook receiver (`POST /webhooks/...`). Providers' own secrets come from their apps and subscriptions."""

    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="larger webhook bodies get 413"
    )
    standard_sources: dict[str, StandardWebhookSource] = Field(
        default_factory=dict,
        description='JSON object: {"<source>": {"secrets": ["whsec_..."], "connection_id": "<connection>"}}; '
        "each is served at POST /webhooks/standard/<source>",
    )

    @field_validator("standard_sources")
    @classmethod
    def _source_names(cls, sources: dict[str, StandardWebhookSource]) -> dict[str, StandardWebhookSource]:
        for name in sources:
            if not re.match(SOURCE_NAME_PATTERN, name):
                raise ValueError(f"source name {name!r} must be lowercase letters, digits, _ or -, up to 64")
        return sources


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        env_file=".env",
        extra="ignore",
        frozen=True,
    )

    state_database_url: str = Field(
        default="sqlite:///.data/state.db",
        description="SQLAlchemy URL of the integration state store (sqlite:///path or postgresql+psycopg2://...)",
    )
    warehouse_path: Path = Field(default=Path(".data/warehouse.duckdb"), description="the DuckDB warehouse file")
    backfill_rate_share: float = Field(
        default=0.5, gt=0, le=1, description="the share of each rate-limit window that backfill runs may take"
    )
    sync_concurrency: int = Field(
        default=4, ge=1, le=32, description="partitions a batched sync run syncs at once (each mostly waits on HTTP)"
    )
    warehouse_url: SecretStr | None = Field(
        default=None,
        description="postgresql://user:pass@host/db to keep the warehouse on PostgreSQL instead of the DuckDB file",
    )
    sync_schedules: dict[str, str] = Field(
        default_factory=dict,
        description='JSON object {"<tenant>": "<cron, UTC>"}: a tenant\'s sync schedule instead of hourly '
        "(resolved to the schedules' 5-minute tick)",
    )
    catalog_max_age_s: float = Field(
        default=60,
        ge=0,
        description="a sync first asks the provider for its entity's fields when the connection's stored field "
        "catalog is older than this many seconds (0: every sync), so a field added at the provider reaches the "
        "next sync's raw records",
    )
    sync_batch_size: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="at most this many connections of a provider in one scheduled sync run (consecutive due "
        "partitions are synced together; the run isolates each connection's failure)",
    )
    encryption_keys: SecretStr | None = Field(
        default=None,
        description="comma-separated `key_id:base64-32-byte-key` entries, the first one primary "
        "(make one with `integrations-pipeline keys generate`)",
    )
    api_key: SecretStr | None = Field(
        default=None, min_length=16, description="bearer key for the gateway's management endpoints (16+ characters)"
    )
    public_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("http://127.0.0.1:8080"), description="the gateway's public base URL (OAuth callbacks)"
    )
    allowed_return_origins: list[str] = Field(
        default_factory=list, description="origins (scheme://host[:port]) a post-connect redirect may go to"
    )
    webhook_allowed_networks: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description='addresses or networks (JSON list, e.g. ["127.0.0.1"]) outgoing webhooks may reach although '
        "they are loopback, private or link-local; empty: public addresses only",
    )
    hubspot: ProviderApp | None = None
    zoho: ProviderApp | None = None
    google: ProviderApp | None = None
    microsoft: ProviderApp | None = None
    salesforce: ProviderApp | None = None
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)

    @field_validator("warehouse_url")
    @classmethod
    def _postgres_url(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None and not url.get_secret_value().startswith(("postgresql://", "postgresql+psycopg2://")):
            raise ValueError("must start with postgresql:// (unset it for the DuckDB file)")  # never echo the URL
        return url

    @field_validator("sync_schedules")
    @classmethod
    def _five_field_crons(cls, schedules: dict[str, str]) -> dict[str, str]:
        for tenant, cron in schedules.items():
            if len(cron.split()) != 5:
                raise ValueError(f"{tenant}: {cron!r} is not a five-field cron expression like '*/15 * * * *'")
        return schedules

    @field_validator("allowed_return_origins")
    @classmethod
    def _origins_have_no_path(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            url = AnyHttpUrl(origin)
            if url.path not in (None, "", "/") or url.query or url.fragment:
                raise ValueError(f"{origin!r} must be an origin like https://app.example.com, without a path")
        return [origin.rstrip("/") for origin in origins]

    def keyring(self) -> Keyring:
        """The token keyring; commands that touch secrets call this first, so a missing key fails at start."""
        name = env_name(("encryption_keys",))
        if self.encryption_keys is None:
            raise SettingsError(f"{name} is missing: expected {_describe(('encryption_keys',))}")
        try:
            return Keyring.from_spec(self.encryption_keys.get_secret_value())
        except KeyringError as error:
            raise SettingsError(f"{name} is invalid: {error}") from None

    def require_api_key(self) -> SecretStr:
        if self.api_key is None:
            raise SettingsError(f"{env_name(('api_key',))} is missing: expected {_describe(('api_key',))}")
        return self.api_key

    def provider_app(self, provider: str) -> ProviderApp:
        app = getattr(self, provider, None)
        if not isinstance(app, ProviderApp):
            name = env_name((provider, "client_id"))
            raise SettingsError(f"provider {provider!r} is not configured: set {name} and its CLIENT_SECRET")
        return app


class SettingsError(Exception):
    """A setting is missing or invalid; the message names the variable and what it expects."""


def env_name(location: tuple[str | int, ...]) -> str:
    return ENV_PREFIX + NESTED_DELIMITER.join(str(part).upper() for part in location)


def _describe(location: tuple[str | int, ...]) -> str:
    field = Settings.model_fields.get(str(location[0]))
    if field is not None and len(location) > 1 and str(location[1]) in ProviderApp.model_fields:
        field = ProviderApp.model_fields[str(location[1])]
    return field.description or "" if field is not None else ""


ENV_FILE = Path(".env")


def conflicting_variables(env_file: Path = ENV_FILE) -> list[str]:
    """INTEGRATIONS_* variables that the environment and `env_file` both set, to different values."""
    if not env_file.is_file():
        return []
    environment = {name.upper(): value for name, value in os.environ.items()}
    return sorted(
        name
        for name, value in dotenv_values(env_file).items()
        if value is not None and name.upper().startswith(ENV_PREFIX) and environment.get(name.upper(), value) != value
    )


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment (and `.env`); raise SettingsError with an actionable message."""
    conflicts = conflicting_variables()
    if conflicts:  # never the values: they may be secrets
        raise SettingsError(
            f"{', '.join(conflicts)} set both in the environment and in {ENV_FILE.resolve()}, with different "
            "values: Dagster's processes would read the file and this one the environment. Unset it in the shell "
            "or remove it from .env (a key lost from .env must be restored, not regenerated)"
        )
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        problems = []
        for issue in error.errors(include_url=False, include_input=False):
            location = tuple(issue["loc"])
            expected = _describe(location)
            what = "is missing" if issue["type"] == "missing" else f"is invalid ({issue['msg']})"
            problems.append(f"{env_name(location)} {what}" + (f": expected {expected}" if expected else ""))
        raise SettingsError("; ".join(problems)) from None
