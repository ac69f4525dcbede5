"""Settings: FLEETCORE_* environment variables, an optional TOML file, validated at start."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

# Refused outside development mode: anyone can read it here.
DEVELOPMENT_SECRET_KEY = "fleetcore-development-secret-do-not-use-in-production"  # noqa: S105
CONFIG_FILE_ENV = "FLEETCORE_CONFIG_FILE"
# Hard ceilings of the media limits (the routes' body limits are fixed at import).
MEDIA_MAX_BYTES_CEILING = 100 * 1024 * 1024
MEDIA_REQUEST_CEILING = 8 * MEDIA_MAX_BYTES_CEILING + 1024 * 1024
OTA_MAX_PACKAGE_MB_CEILING = 4096  # the upload route's body limit is this plus the framing

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


class ConfigError(Exception):
    """A setting is invalid; the message names it in one line."""


def normalize_database_url(raw: str) -> str:
    """Return the URL with the async driver Fleetcore uses, or raise ValueError."""
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ValueError(
            "not a database URL (expected sqlite:///path or postgresql://...)"
        ) from None
    driver = _DRIVERS.get(url.drivername)
    if driver is None:
        raise ValueError(f"unsupported database {url.drivername!r} (use sqlite or postgresql)")
    url = url.set(drivername=driver)
    if driver.startswith("postgresql") and not url.host and "host" not in url.query:
        raise ValueError("a PostgreSQL URL needs a host (postgresql://user:pass@host/db)")
    if driver.startswith("sqlite") and not url.database:
        raise ValueError("a SQLite URL needs a file path (sqlite:///var/fleetcore.db)")
    return url.render_as_string(hide_password=False)


class Settings(BaseSettings):
    """Everything the server reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="FLEETCORE_", extra="forbid", validate_default=True, frozen=True
    )

    environment: Literal["development", "test", "production"] = Field(
        "production",
        description="production (the default) needs FLEETCORE_SECRET_KEY; only an explicit "
        "development may serve with the built-in key, and is warned at every start",
    )
    host: str = Field("127.0.0.1", description="HTTP bind address")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port")
    mqtt_port: int = Field(1883, ge=0, le=65535, description="embedded MQTT broker port; 0 = off")
    mqtt_host: str | None = Field(None, description="MQTT bind address (default: the HTTP host)")
    mqtt_tls_port: int = Field(8883, ge=1, le=65535, description="MQTT over TLS, if cert and key")
    mqtt_tls_cert: Path | None = Field(None, description="PEM certificate for MQTT over TLS")
    mqtt_tls_key: Path | None = Field(None, description="PEM private key for MQTT over TLS")
    mqtt_ws_port: int = Field(0, ge=0, le=65535, description="MQTT over WebSocket port; 0 = off")
    # -- an external broker instead of the embedded one (fleetcore.external_broker) --
    mqtt_url: SecretStr | None = Field(
        None,
        description="mqtt://user:password@host:1883 or mqtts://... of an external broker "
        "(Mosquitto, EMQX); set, the embedded broker is off and --mqtt-port is ignored",
    )
    mqtt_share_group: str = Field(
        "fleetcore",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="the shared-subscription group ingest workers join ($share/<group>/...)",
    )
    mqtt_dynsec: bool = Field(
        False,
        description="keep device credentials in Mosquitto's dynamic-security plugin (through "
        "the platform client of FLEETCORE_MQTT_URL, which must be a dynsec admin)",
    )
    mqtt_ca_file: Path | None = Field(None, description="CA bundle for an mqtts:// broker")
    mqtt_ingest_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="this ingest worker's stable id (its MQTT client id is fleetcore-ingest-<id>; "
        "default <host>-<http port>): a restarted worker resumes its broker session",
    )
    mqtt_ingest_session_expiry_s: int = Field(
        86_400,
        ge=0,
        le=7 * 86_400,
        description="how long the broker keeps a stopped worker's session and its messages",
    )
    mqtt_ingest_inflight: int = Field(
        10_000,
        ge=10,
        le=65_535,
        description="unacknowledged messages a worker accepts at once (MQTT 5 receive maximum)",
    )
    role: Literal["all", "api", "ingest", "worker"] = Field(
        "all",
        description="all: everything in one process; api: HTTP and WebSocket; ingest: device "
        "traffic (the embedded broker, or FLEETCORE_MQTT_URL's); worker: periodic jobs and "
        "notifications (ingest and worker serve /health, /ready and /metrics only; every role "
        "but all needs PostgreSQL)",
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="api processes sharing the HTTP port (uvicorn workers; role api on "
        "PostgreSQL only)",
    )
    presence_sweep_s: float = Field(
        5.0, ge=0.1, le=3600, description="how often silent devices are checked for offline"
    )
    analytics_enabled: bool = Field(
        True, description="judge the keys profiles watch (advisory analytics); off: none"
    )
    analytics_process: bool = Field(
        True,
        description="judge in a child process of its own (another core), not the ingest one",
    )
    analytics_flush_s: float = Field(
        30.0, ge=0.1, le=3600, description="how often analytics saves its per-series state"
    )
    recommendations_sweep_s: float = Field(
        15.0, ge=0.1, le=3600, description="how often recommendations expire and follow commands"
    )
    analytics_explainer: str | None = Field(
        None, description='a plug-in "module:attribute" putting findings in words (off)'
    )
    rules_sweep_s: float = Field(
        15.0, ge=0.1, le=3600, description='how often "no data" rules are evaluated'
    )
    public_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        max_length=200,
        description=(
            "the address users open Fleetcore at (https://fleet.example.com): links in "
            "notifications (a watchlist hit's read and image) are made absolute with it"
        ),
    )
    plates_visit_window_s: int = Field(
        60,
        ge=0,
        le=86_400,
        description="reads of one plate on one camera this close together are one visit",
    )
    notification_poll_s: float = Field(
        2.0, ge=0.01, le=3600, description="how often the notification outbox is checked"
    )
    notification_retry_base_s: float = Field(
        10.0, ge=0.01, le=3600, description="first retry delay; doubles per attempt, jittered"
    )
    notification_retry_max_s: float = Field(
        3600.0, ge=0.01, le=86400, description="longest delay between two attempts"
    )
    notification_max_attempts: int = Field(
        8, ge=1, le=100, description="attempts before a delivery is given up (failed)"
    )
    notification_timeout_s: float = Field(
        10.0,
        ge=0.1,
        le=300,
        description="webhook and SMTP deadline per attempt (connecting, sending and the answer)",
    )
    notification_lease_s: float = Field(
        120.0, ge=1, le=3600, description="how long a sender holds a delivery before another may"
    )
    webhook_allow_private_networks: bool | None = Field(
        None,
        description="let webhooks reach loopback, private and link-local addresses "
        "(default: allowed except in production)",
    )
    # Egress hardening (issue 14): notification sends that cannot hold each other, /metrics.
    notification_concurrency: int = Field(
        50, ge=1, le=1000, description="notification deliveries sent at once, in all"
    )
    notification_concurrency_per_org: int = Field(
        10,
        ge=1,
        le=1000,
        description="deliveries of one organization sent at once (its slow receivers hold "
        "no more slots than this)",
    )
    notification_concurrency_per_channel: int = Field(
        4, ge=1, le=1000, description="deliveries of one channel sent at once"
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="bearer token /metrics requires; without one, production serves /metrics "
        "to loopback clients only",
    )
    smtp_host: str | None = Field(None, description="SMTP server for email channels")
    smtp_port: int = Field(587, ge=1, le=65535, description="SMTP port")
    smtp_from: str = Field("fleetcore@localhost", description="sender address of emails")
    smtp_starttls: bool = Field(True, description="upgrade the SMTP connection with STARTTLS")
    smtp_user: str | None = Field(None, description="SMTP login, if the server needs one")
    smtp_password: SecretStr | None = Field(None, description="SMTP password")
    mqtt_session_expiry_s: int = Field(
        7 * 86400, ge=60, description="how long a disconnected persistent session is kept"
    )
    # MQTT limits before and after authentication, and dead-letter bounds (issue 14, finding 1)
    mqtt_max_connections: int = Field(
        5000, ge=1, le=1_000_000, description="MQTT connections in all (lowered to fit ulimit -n)"
    )
    mqtt_max_pending: int = Field(
        512, ge=1, le=100_000, description="MQTT connections still in their CONNECT phase"
    )
    mqtt_max_pending_per_address: int = Field(
        128, ge=1, le=100_000, description="of those, from one client address"
    )
    mqtt_connect_timeout_s: float = Field(
        10.0, ge=0.1, le=300, description="time from TCP accept to a complete CONNECT"
    )
    mqtt_max_connect_bytes: int = Field(
        8 * 1024, ge=128, le=16 * 1024 * 1024, description="largest CONNECT packet, checked unread"
    )
    mqtt_max_packet_bytes: int = Field(
        1024 * 1024 + 64 * 1024,
        ge=1024,
        le=256 * 1024 * 1024,
        description="largest packet after the CONNECT, checked unread (default: a profile's "
        "largest max_payload_bytes, 1 MiB, plus room for the topic)",
    )
    mqtt_max_keepalive_s: int = Field(
        1200, ge=1, le=65535, description="keep-alive 0 or longer is cut to this (idle limit)"
    )
    mqtt_min_keepalive_s: int = Field(
        5, ge=1, le=65535, description="a shorter keep-alive is raised to this"
    )
    mqtt_max_connections_per_address: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="MQTT connections from one client address (raise it for large fleets "
        "behind one NAT address)",
    )
    mqtt_listener_max_connections: dict[str, int] = Field(
        default_factory=dict,
        description='caps per listener name ("default", "tls", "ws"), JSON: {"ws": 500}',
    )
    mqtt_max_provisioning_sessions: int = Field(
        32, ge=1, le=100_000, description='concurrent MQTT "provision" connections'
    )
    mqtt_provisioning_session_s: float = Field(
        30.0, ge=1, le=3600, description='a "provision" connection is closed after this long'
    )
    mqtt_provisioning_rate_per_min: float = Field(
        60.0, gt=0, le=100_000, description="provisioning connects + requests per address a minute"
    )
    mqtt_provisioning_burst: int = Field(
        30, ge=1, le=100_000, description="provisioning connects + requests per address at once"
    )
    dead_letters_rate_per_s: float = Field(
        1.0, gt=0, le=100_000, description="dead letters stored per device (or address) a second"
    )
    dead_letters_burst: int = Field(
        100, ge=1, le=1_000_000, description="dead letters stored per device (or address) at once"
    )
    dead_letters_retention_days: int = Field(
        30, ge=0, le=3650, description="dead letters kept (per organization: its own); 0 = all"
    )
    dead_letters_max_rows: int = Field(
        1_000_000, ge=0, le=1_000_000_000, description="newest dead letters kept; 0 = no cap"
    )
    # -- housekeeping: retention of every growing table but telemetry (fleetcore.housekeeping)
    housekeeping_interval_s: float = Field(
        3600.0, ge=1, le=86400, description="how often the housekeeping job deletes old rows"
    )
    usage_flush_interval_s: float = Field(
        10.0,
        ge=0.1,
        le=3600,
        description="how often usage counters go from memory to the database (a crash loses "
        "at most this much metering)",
    )
    usage_daily_retention_days: int = Field(
        400,
        ge=0,
        le=36500,
        description="days of daily usage kept before they are rolled up into months (0: never)",
    )
    usage_storage_interval_s: float = Field(
        86400.0,
        ge=60,
        le=86400,
        description="how often the storage snapshot (telemetry rows and bytes, media bytes) "
        "is taken; the day's latest snapshot is its level",
    )
    housekeeping_chunk_rows: int = Field(
        5000, ge=1, le=1_000_000, description="rows per delete transaction of housekeeping"
    )
    audit_retention_days: int = Field(
        365, ge=0, le=3650, description="audit events kept (per organization: its own); 0 = all"
    )
    device_events_retention_days: int = Field(
        365, ge=0, le=3650, description="device events kept (per organization: its own); 0 = all"
    )
    status_history_retention_days: int = Field(
        90, ge=0, le=3650, description="online/offline transitions kept; 0 = all"
    )
    notification_deliveries_retention_days: int = Field(
        30, ge=0, le=3650, description="delivered or failed notification sends kept; 0 = all"
    )
    notifications_retention_days: int = Field(
        90, ge=0, le=3650, description="in-app notifications kept, read or not; 0 = all"
    )
    commands_retention_days: int = Field(
        90, ge=0, le=3650, description="finished commands kept (open ones always); 0 = all"
    )
    analytics_findings_retention_days: int = Field(
        365, ge=0, le=3650, description="analytics findings kept; 0 = all"
    )
    refresh_tokens_retention_days: int = Field(
        7,
        ge=0,
        le=3650,
        description="days an expired refresh token (a session's row) is kept, counted from the "
        "end of the longest access token it could vouch for; 0 = all",
    )
    device_credentials_retention_days: int = Field(
        30, ge=0, le=3650, description="revoked device tokens' hashes kept; 0 = all"
    )
    broker_outbox_retention_days: int = Field(
        7, ge=0, le=3650, description="applied broker credential changes kept; 0 = all"
    )
    account_links_retention_days: int = Field(
        7, ge=0, le=3650, description="expired sign-up, invitation and reset links kept; 0 = all"
    )
    data_dir: Path = Field(Path("./var"), description="where the SQLite file and state live")
    database_url: str | None = Field(
        None, description="sqlite:///... or postgresql://...; default SQLite in data_dir"
    )
    auto_migrate: bool | None = Field(
        None, description="apply migrations at start; default on for SQLite, off for PostgreSQL"
    )
    secret_key: SecretStr = Field(SecretStr(DEVELOPMENT_SECRET_KEY), min_length=32)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: console lines on a terminal, JSON lines otherwise"
    )
    password_hash_time_cost: int = Field(3, ge=1, le=20, description="argon2id iterations")
    password_hash_memory_kib: int = Field(65536, ge=1024, description="argon2id memory")
    access_token_ttl_s: int = Field(900, ge=60, le=86400)
    refresh_token_ttl_s: int = Field(30 * 86400, ge=3600)
    session_cookie_ttl_s: int = Field(12 * 3600, ge=300, description="browser session")
    remember_me_ttl_s: int = Field(30 * 86400, ge=3600, description="browser, remember me")
    login_max_failures_per_account: int = Field(
        10, ge=1, description="sign-in attempts on one account from one client address, per window"
    )
    login_max_failures_per_address: int = Field(
        50, ge=1, description="failed sign-ins from one client address, any account, per window"
    )
    login_failure_window_s: int = Field(15 * 60, ge=1, description="the two windows above")
    login_max_attempts_per_account_per_minute: int = Field(
        30,
        ge=1,
        description="sign-in attempts on one account from all addresses together, per minute: "
        "slows a distributed guesser; the owner waits a minute at most",
    )
    # -- API rate limits (fleetcore.auth.api_limits): requests per minute, 0 = unlimited --
    api_rate_limit_per_api_key: int = Field(
        0, ge=0, description="API requests per minute of one API key; 0 = unlimited"
    )
    api_rate_limit_per_user: int = Field(
        0, ge=0, description="API requests per minute of one user (token or cookie); 0 = unlimited"
    )
    api_rate_limit_per_organization: int = Field(
        0,
        ge=0,
        description="API requests per minute of one organization, its users and keys "
        "together; 0 = unlimited",
    )
    # -- accounts: sign-up, invitations, password reset (fleetcore.accounts) --
    signup: Literal["invite-only", "open"] = Field(
        "invite-only",
        description="open: anyone may create an organization at /auth/register (its email "
        "verified first); invite-only: organizations are made by a superuser, users invited",
    )
    signup_link_ttl_s: int = Field(
        86_400, ge=300, le=30 * 86_400, description="how long a sign-up verification link works"
    )
    password_reset_link_ttl_s: int = Field(
        3600, ge=300, le=7 * 86_400, description="how long a password reset link works"
    )
    invitation_ttl_s: int = Field(
        7 * 86_400, ge=3600, le=90 * 86_400, description="how long an invitation link works"
    )
    account_requests_per_address: int = Field(
        30,
        ge=1,
        description="sign-ups, resets, verifications and invitation acceptances from one "
        "client address, per hour",
    )
    account_mails_per_email: int = Field(
        5, ge=1, description="sign-up and reset mails to one address, per hour"
    )
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description="proxies trusted to set X-Forwarded-For (comma-separated addresses or *); "
        "the per-address sign-in limits see the client address they report",
    )
    # -- HTTP authentication for an external broker (fleetcore.broker_auth) --
    broker_auth_secret: SecretStr | None = Field(
        None,
        min_length=16,
        description="shared secret EMQX or mosquitto-go-auth sends to /api/v1/broker/...; "
        "unset: those endpoints answer 404",
    )
    broker_auth_cache_s: float = Field(
        5.0, ge=0, le=300, description="seconds a broker authentication answer is reused"
    )
    broker_auth_platform_username: str = Field(
        "fleetcore",
        min_length=3,
        max_length=64,
        description="MQTT username of the platform's own client on an external broker "
        "(its password is FLEETCORE_BROKER_AUTH_SECRET)",
    )
    redis_url: str | None = Field(
        None, description="redis://... for shared rate limits and fan-out"
    )
    ingest_batch_size: int = Field(5000, ge=1, le=100_000, description="readings per write")
    ingest_flush_ms: int = Field(
        20,
        ge=0,
        le=10_000,
        description="longest the writer waits to fill a batch (0: writes at once; a batch is "
        "then what arrived while the last one was written)",
    )
    ingest_max_pending: int = Field(200_000, ge=100, description="readings queued before 503")
    retention_raw_days: int = Field(90, ge=0, le=3650, description="default raw days; 0 = forever")
    retention_rollup_1m_days: int = Field(365, ge=0, le=3650, description="default, 1m roll-ups")
    retention_rollup_1h_days: int = Field(0, ge=0, le=3650, description="default, 1h roll-ups")
    retention_interval_s: float = Field(3600.0, ge=1, le=86400, description="retention job period")
    retention_chunk_rows: int = Field(10_000, ge=100, le=1_000_000, description="rows per delete")
    partitions_ahead_days: int = Field(7, ge=1, le=60, description="PostgreSQL daily partitions")
    telemetry_compact_after_days: int = Field(
        2,
        ge=0,
        le=3650,
        description="PostgreSQL: pack numeric readings of days older than this into one row "
        "per series and hour (telemetry/compaction.py); 0 = off",
    )
    telemetry_compact_interval_s: float = Field(
        3600.0, ge=1, le=86400, description="compaction job period"
    )
    retention_requires_archive: bool = Field(
        False,
        description="default: raw readings of a day are deleted only once that day is archived "
        "(fleetcore archive) with a matching row count; an organization's policy may override",
    )
    # -- archives: closed days as Parquet, Hive-partitioned (fleetcore.archive) --
    archive_enabled: bool = Field(False, description="run the archive job")
    archive_after_days: int = Field(
        2, ge=1, le=3650, description="a day is archived once it ended this many days ago"
    )
    archive_interval_s: float = Field(3600.0, ge=60, le=86400, description="archive job period")
    archive_max_days_per_run: int = Field(
        50, ge=1, le=10_000, description="organization-days the job archives per run at most"
    )
    archive_rows_per_file: int = Field(
        1_000_000, ge=1000, le=50_000_000, description="readings per Parquet file at most"
    )
    archive_store: Literal["file", "s3"] = Field(
        "file", description="file: under FLEETCORE_ARCHIVE_DIR; s3: an S3-compatible bucket"
    )
    archive_dir: Path | None = Field(
        None, description="the file store's root (default data_dir/archive)"
    )
    archive_s3_bucket: str | None = Field(None, description="the bucket, with archive_store=s3")
    archive_s3_prefix: str = Field(
        "", pattern=r"^[A-Za-z0-9._/-]{0,128}$", description="key prefix inside the bucket"
    )
    archive_s3_endpoint: str | None = Field(
        None, description="S3-compatible endpoint URL (MinIO, ...); default AWS"
    )
    archive_s3_region: str | None = Field(None, description="the bucket's region")
    # -- media: images devices attach to events (fleetcore.media, docs/media.md) --
    media_store: Literal["file", "s3"] = Field(
        "file", description="file: under FLEETCORE_MEDIA_DIR; s3: an S3-compatible bucket"
    )
    media_dir: Path | None = Field(
        None, description="the file store's root (default data_dir/media)"
    )
    media_s3_bucket: str | None = Field(None, description="the bucket, with media_store=s3")
    media_s3_prefix: str = Field(
        "", pattern=r"^[A-Za-z0-9._/-]{0,128}$", description="key prefix inside the bucket"
    )
    media_s3_endpoint: str | None = Field(
        None, description="S3-compatible endpoint URL (MinIO, ...); default AWS"
    )
    media_s3_region: str | None = Field(None, description="the bucket's region")
    media_max_bytes: int = Field(
        10 * 1024 * 1024,
        ge=1024,
        le=MEDIA_MAX_BYTES_CEILING,
        description="largest image a device may send, unless its profile says (media_max_bytes)",
    )
    media_max_pixels: int = Field(
        40_000_000,
        ge=1,
        le=178_000_000,
        description="largest width x height decoded; beyond it an image is refused unread",
    )
    media_request_max_bytes: int = Field(
        81 * 1024 * 1024,
        ge=64 * 1024,
        le=MEDIA_REQUEST_CEILING,
        description="largest multipart event request (the event and all its files)",
    )
    media_retention_days: int = Field(
        90, ge=0, le=3650, description="default days media are kept; 0 = forever"
    )
    media_upload_url_ttl_s: int = Field(
        900, ge=10, le=86400, description="how long an upload URL works"
    )
    media_unattached_ttl_s: int = Field(
        86400,
        ge=60,
        le=30 * 86400,
        description="an uploaded file no event refers to within this is deleted",
    )
    media_link_ttl_s: int = Field(
        300, ge=10, le=7 * 86400, description="how long a signed media link works"
    )
    media_cache_max_age_s: int = Field(
        3600, ge=0, le=365 * 86400, description="Cache-Control max-age of served media (private)"
    )
    media_housekeeping_interval_s: float = Field(
        3600.0, ge=1, le=86400, description="retention and clean-up of media"
    )
    # -- OTA: firmware and software packages, rollouts (fleetcore.ota, docs/ota.md) --
    ota_max_package_mb: int = Field(
        512, ge=1, le=OTA_MAX_PACKAGE_MB_CEILING, description="largest package upload, in MiB"
    )
    ota_store: Literal["file", "s3"] = Field(
        "file", description="file: under FLEETCORE_OTA_DIR; s3: an S3-compatible bucket"
    )
    ota_dir: Path | None = Field(None, description="the file store's root (default data_dir/ota)")
    ota_s3_bucket: str | None = Field(
        None, description="the bucket, with ota_store=s3 (default: the media bucket)"
    )
    ota_s3_prefix: str = Field(
        "ota",
        pattern=r"^[A-Za-z0-9._/-]{1,128}$",
        description="key prefix inside the bucket; never inside the media prefix (its orphan "
        "sweep would delete packages)",
    )
    ota_job_interval_s: float = Field(
        10.0, ge=0.2, le=3600, description="how often rollouts advance stages and check failures"
    )
    # HTTP request limits (issue 14)
    max_body_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        le=1024**3,
        description="largest request body on any route, refused (413) before it is read; "
        "the ingest and import routes keep their own limits",
    )
    ready_disk_warn_percent: float = Field(
        10.0,
        ge=0,
        le=100,
        description="/ready warns (status warn, still ready) when the data, media or archive "
        "directory's filesystem has less free space than this",
    )
    ready_disk_min_percent: float = Field(
        1.0,
        ge=0,
        le=100,
        description="/ready fails (503) under this much free space: writes are about to fail",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="origins of a separate front-end allowed to call the API from a browser "
        '(JSON: ["https://app.example.com"]); empty: CORS off. Exact origins only, never *',
    )
    cors_allow_credentials: bool = Field(
        False,
        description="let the listed origins send the session cookie (credentials mode); "
        "bearer tokens and API keys do not need it",
    )
    db_pool_size: int = Field(10, ge=1, le=200)
    shutdown_grace_s: float = Field(20.0, ge=0, le=600)

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        return None if value in (None, "") else normalize_database_url(value)

    @field_validator("cors_origins")
    @classmethod
    def _check_cors_origins(cls, value: list[str]) -> list[str]:
        # An origin is scheme://host[:port], nothing more; a wildcard would let any site
        # read what a signed-in browser may.
        for origin in value:
            url = urlsplit(origin)
            if (
                url.scheme not in ("http", "https")
                or not url.hostname
                or "*" in origin
                or origin != f"{url.scheme}://{url.netloc}"
            ):
                raise ValueError(
                    f"{origin!r} is not an origin: give scheme://host[:port], no path, no wildcard"
                )
        return [origin.lower() for origin in value]

    @field_validator("mqtt_url")
    @classmethod
    def _check_mqtt_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        url = urlsplit(value.get_secret_value())
        if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
            # The URL carries a password: never echo it back.
            raise ValueError("must look like mqtt://user:password@host:1883 or mqtts://...")
        try:
            url.port  # noqa: B018 (raises on a bad port)
        except ValueError:
            raise ValueError("the port must be a number from 1 to 65535") from None
        return value

    @model_validator(mode="after")
    def _roles_need_postgresql(self) -> Settings:
        # SQLite is one process's file: a second process (another role) would be a second
        # writer with its own copy of every in-memory state.
        if self.role != "all" and self.is_sqlite:
            raise ValueError(
                f"FLEETCORE_ROLE={self.role} runs beside other processes, which needs "
                "PostgreSQL (FLEETCORE_DATABASE_URL); on SQLite run one process, role all"
            )
        if self.workers > 1 and (self.role != "api" or self.is_sqlite):
            raise ValueError(
                "FLEETCORE_WORKERS > 1 starts several api processes: it needs "
                "FLEETCORE_ROLE=api and PostgreSQL (the embedded broker, the jobs and SQLite "
                "belong to one process)"
            )
        return self

    @model_validator(mode="after")
    def _ingest_needs_a_broker(self) -> Settings:
        if self.role == "ingest" and self.mqtt_url is None and not self.mqtt_port:
            raise ValueError(
                "FLEETCORE_ROLE=ingest takes device traffic: set FLEETCORE_MQTT_URL (an "
                "external broker) or FLEETCORE_MQTT_PORT (the embedded one)"
            )
        if self.mqtt_dynsec and self.mqtt_url is None:
            raise ValueError(
                "FLEETCORE_MQTT_DYNSEC manages credentials in an external Mosquitto: "
                "set FLEETCORE_MQTT_URL"
            )
        return self

    @model_validator(mode="after")
    def _disk_floor_under_warning(self) -> Settings:
        if self.ready_disk_min_percent > self.ready_disk_warn_percent:
            raise ValueError(
                "FLEETCORE_READY_DISK_MIN_PERCENT must not exceed FLEETCORE_READY_DISK_WARN_PERCENT"
            )
        return self

    @model_validator(mode="after")
    def _lease_outlasts_a_send(self) -> Settings:
        # A lease that expires during a send lets a second sender send the same delivery.
        if self.notification_lease_s < 3 * self.notification_timeout_s:
            raise ValueError(
                "FLEETCORE_NOTIFICATION_LEASE_S must be at least 3 times "
                "FLEETCORE_NOTIFICATION_TIMEOUT_S"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Command-line values win over the environment, which wins over the file."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    @property
    def resolved_database_url(self) -> URL:
        """The database URL in use: the configured one or SQLite under the data directory."""
        if self.database_url:
            return make_url(self.database_url)
        path = (self.data_dir / "fleetcore.db").resolve()
        return make_url(f"sqlite+aiosqlite:///{path}")

    @property
    def uses_development_key(self) -> bool:
        """True when tokens would be signed with the key published in this file."""
        return self.secret_key.get_secret_value() == DEVELOPMENT_SECRET_KEY

    def check_signing_key(self) -> None:
        """Refuse to sign with the published key unless the environment is development.

        Checked where tokens are signed (the server), not in every command: the simulator,
        exports and migrations never sign, and need no key.
        """
        if self.uses_development_key and self.environment != "development":
            raise ConfigError(
                "FLEETCORE_SECRET_KEY: set it to a random value of 32+ characters "
                f"(environment={self.environment}); only FLEETCORE_ENVIRONMENT=development "
                "may run with the built-in key"
            )

    @cached_property
    def api_rate_limited(self) -> bool:
        """Whether any API rate limit is set: computed once, so an unlimited install pays one
        attribute check per request (auth.deps)."""
        return bool(
            self.api_rate_limit_per_api_key
            or self.api_rate_limit_per_user
            or self.api_rate_limit_per_organization
        )

    @property
    def external_broker(self) -> bool:
        """True when devices talk to an external broker (FLEETCORE_MQTT_URL)."""
        return self.mqtt_url is not None

    @property
    def is_sqlite(self) -> bool:
        """True when the database is the embedded SQLite file."""
        return self.resolved_database_url.get_backend_name() == "sqlite"

    @property
    def migrate_on_start(self) -> bool:
        """Whether the lifespan applies migrations before serving."""
        return self.is_sqlite if self.auto_migrate is None else self.auto_migrate


def load_settings(**overrides: Any) -> Settings:
    """Build Settings, turning any validation failure into a one-line ConfigError."""
    config_file = os.environ.get(CONFIG_FILE_ENV)
    if config_file and not Path(config_file).is_file():
        raise ConfigError(f"{CONFIG_FILE_ENV}: no such file: {config_file}")
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except (OSError, ValueError) as exc:  # an unreadable or malformed config file
        raise ConfigError(f"{CONFIG_FILE_ENV}: {exc}") from None


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"])
        name = f"FLEETCORE_{field.upper()}" if field else "configuration"
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{name}: {message}" if field else message)
    return "invalid configuration: " + "; ".join(parts)
