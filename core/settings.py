"""Settings of the connector: one typed object read once from ``FLAVOURS_*`` variables.

Every setting is an environment variable with the ``FLAVOURS_`` prefix; a ``.env`` file in the
working directory is read too (real environment variables win). The README lists them all.
The receiver, the pipelines and the command line each build one ``Settings`` and pass it down.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

TOPICS = ("customers", "orders", "products", "loyalty", "errors")
"""Webhook topics the receiver accepts; only customers and errors are modelled downstream."""

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class Settings(BaseSettings):
    """Connector settings; field names are the variables without the ``FLAVOURS_`` prefix."""

    model_config = SettingsConfigDict(
        env_prefix="FLAVOURS_", env_file=".env", extra="ignore", frozen=True
    )

    landing_url: str = Field(
        "./data/landing",
        description="Landing store: a local folder or an fsspec URL such as s3://bucket/prefix.",
    )
    landing_compression: Literal["none", "gzip"] = Field(
        "none", description="Compression of landed objects (gzip writes .jsonl.gz)."
    )
    landing_timeout_s: float = Field(
        5.0,
        gt=0,
        le=9,
        description="Longest a webhook waits for its batch to be durable before answering 503.",
    )
    warehouse: str = Field(
        "./data/warehouse.sqlite",
        description="Warehouse (DuckLake) catalog: a SQLite file or a postgresql:// URL.",
    )
    warehouse_data_url: str | None = Field(
        None,
        description="Where the warehouse's Parquet files go: a folder or s3://bucket/prefix "
        "(default: <catalog>.files/ beside a SQLite catalog).",
    )
    warehouse_retention_hours: float = Field(
        24,
        gt=0,
        description="Snapshots (and their files) are kept this long: a reader's connection and "
        "time travel stay valid at least that long.",
    )
    sensor_interval_s: int = Field(
        30,
        ge=5,
        description="How often Dagster's sensor lists the landing store for new objects.",
    )
    dlt_dir: str = Field(
        "./data/dlt", description="dlt working folder (pending load packages survive crashes)."
    )
    webhook_token: SecretStr | None = Field(
        None, description="Shared secret every webhook must carry (?token= or X-Flavours-Token)."
    )
    webhook_hmac_secret: SecretStr | None = Field(
        None, description="Standard Webhooks signing secret (whsec_...); signatures required."
    )
    api_url: str | None = Field(
        None,
        description="Flavours API base URL for the backfill, e.g. https://api.flavours.sa/dev/api/v2.",
    )
    api_token: SecretStr | None = Field(
        None, description="Bearer token of the Flavours API (never logged)."
    )
    market_id: str | None = Field(
        None, description="filter[market_id] of the Customers API (required for SUBSCRIBER tokens)."
    )
    api_timeout_s: float = Field(30, gt=0, description="Timeout of one Customers API request.")
    api_max_attempts: int = Field(
        8, ge=1, description="Attempts per Customers API page on 429, 5xx and timeouts."
    )
    actions_file: str | None = Field(
        None, description="YAML rules for actions on customer events (unset: no actions)."
    )
    actions_max_attempts: int = Field(
        8, ge=1, description="Attempts of one action before it is dead."
    )
    actions_retry_base_s: float = Field(
        60, ge=0, description="Wait before an action's first retry; doubles each time, at most 1 h."
    )
    actions_concurrency: int = Field(
        4, ge=1, le=64, description="Actions sent at once (SMTP connections, HTTP requests)."
    )
    smtp_host: str | None = Field(None, description="SMTP server of e-mail actions.")
    smtp_port: int = Field(587, gt=0, lt=65536, description="SMTP port (587 STARTTLS, 465 SSL).")
    smtp_tls: Literal["starttls", "ssl", "none"] = Field(
        "starttls", description="SMTP transport security."
    )
    smtp_username: str | None = Field(None, description="SMTP login (unset: no login).")
    smtp_password: SecretStr | None = Field(None, description="SMTP password (never logged).")
    smtp_from: str | None = Field(None, description="From address of e-mail actions.")
    smtp_timeout_s: float = Field(10, gt=0, description="Timeout of one SMTP operation.")
    smtp_ca_file: str | None = Field(
        None, description="CA bundle that signs the SMTP server's certificate (default: system)."
    )
    dashboard_personal_data: bool = Field(
        False, description="Show names, e-mails and phones on the dashboard (default: masked)."
    )
    max_body_bytes: int = Field(1024 * 1024, gt=0, description="Largest accepted body (413).")
    batch_max_wait_ms: float = Field(
        20, ge=0, description="Longest a batch gathers events before it is written."
    )
    batch_max_events: int = Field(1000, gt=0, description="Most events in one landed object.")
    trusted_proxies: Annotated[tuple[IpNetwork, ...], NoDecode] = Field(
        (), description="Comma-separated proxy addresses/CIDRs whose X-Forwarded-* are trusted."
    )
    require_https: bool = Field(False, description="Answer plain-HTTP webhooks with 403.")
    instance_id: str = Field(
        default_factory=lambda: _safe_name(socket.gethostname()),
        description="Receiver instance name used in landed object names (default: hostname).",
    )
    log_level: str = Field("INFO", description="Log level of the receiver and pipelines.")

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"{value!r} is not one of {', '.join(LOG_LEVELS)}")
        return level

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            return tuple(ipaddress.ip_network(part, strict=False) for part in value)
        return value

    @field_validator("instance_id")
    @classmethod
    def _check_instance_id(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._]+", value):
            raise ValueError("instance_id may hold only letters, digits, '.' and '_'")
        return value


def _safe_name(name: str) -> str:
    """A hostname reduced to characters that are safe in an object key segment."""
    return re.sub(r"[^A-Za-z0-9.]+", "_", name)[:64] or "receiver"
