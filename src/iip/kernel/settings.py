"""One typed settings object, built once at start-up and passed in.

No other module reads the environment: contexts receive `Settings` (or their own section of it).
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

SECRET_KEY_FILE = "secret_key"  # noqa: S105 - a file name, not a secret


class Mode(StrEnum):
    DEV = "dev"
    PRODUCTION = "production"


class LogFormat(StrEnum):
    JSON = "json"
    TEXT = "text"


class ApiSettings(BaseModel):
    """HTTP behaviour shared by the API and the console."""

    cors_origins: list[str] = Field(default_factory=list, description="Allowed CORS origins; empty turns CORS off.")
    trusted_proxies: list[str] = Field(
        default_factory=list, description="Proxy addresses whose X-Forwarded-For is believed."
    )
    session_hours: int = Field(default=12, ge=1, le=24 * 30, description="Console session lifetime in hours.")


class AuthSettings(BaseModel):
    """Login policy."""

    lockout_threshold: int = Field(default=5, ge=1, description="Failed logins in a row that lock an account.")
    lockout_minutes: int = Field(default=15, ge=1, description="How long a locked account stays locked.")
    min_password_length: int = Field(default=10, ge=8, description="Shortest accepted password.")


class NodeRole(StrEnum):
    """Where an identifier node sits in the IDIS hierarchy: root -> secondary (industry) -> enterprise."""

    ROOT = "root"
    SECONDARY = "secondary"
    ENTERPRISE = "enterprise"


def _base_url(value: str) -> str:
    """An http(s) URL with a host, without a trailing slash; "" stays unset."""
    value = value.strip().rstrip("/")
    if value and not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", value):
        raise ValueError("must be an http:// or https:// URL such as https://idis.example.com")
    return value


class IdentifierSettings(BaseModel):
    """This node's place in the identifier hierarchy, and the recursive resolver."""

    role: NodeRole = Field(
        default=NodeRole.SECONDARY,
        description="`root`, `secondary` or `enterprise`; enterprise nodes home prefixes but do not delegate.",
    )
    base_url: str = Field(default="", description="This node's public base URL, as other nodes and clients reach it.")
    root_url: str = Field(
        default="", description="Base URL of the root node resolution starts from; empty: start at this node."
    )
    root_public_key: str = Field(
        default="", description="The root node's Ed25519 public key (raw, base64) to pin; empty: trust on first use."
    )
    resolution_cache_mib: int = Field(
        default=64,
        ge=0,
        le=65_536,
        description="Rendered answers each server worker keeps for anonymous resolution on SQLite, in MiB; "
        "emptied by every commit; 0: none.",
    )
    resolver_cache_size: int = Field(default=10_000, ge=0, description="Answers the recursive resolver keeps.")
    resolver_max_ttl: int = Field(default=86_400, ge=0, description="Longest a resolver answer is cached, in seconds.")
    resolver_negative_ttl: int = Field(default=60, ge=0, description="How long 'not found' is cached, in seconds.")
    resolver_timeout: float = Field(default=5.0, gt=0, le=120, description="Timeout of each upstream request, seconds.")
    resolver_max_depth: int = Field(default=8, ge=1, le=32, description="Most referrals followed for one handle.")

    @field_validator("base_url", "root_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return _base_url(value)

    @field_validator("root_public_key")
    @classmethod
    def _check_key(cls, value: str) -> str:
        value = value.strip()
        if value and not re.match(r"^[A-Za-z0-9+/]{43}=$", value):
            raise ValueError("must be a raw 32-byte Ed25519 public key in base64 (44 characters)")
        return value


class DevicesSettings(BaseModel):
    """Plant connectivity: the MQTT broker devices publish to, ingest batching, what counts as bad input."""

    mqtt_url: str = Field(
        default="",
        description="Broker devices publish to, mqtt://[user:pass@]host:port; empty: `iip run` starts an embedded one.",
    )
    embedded_broker_port: int = Field(default=1883, ge=1, le=65535, description="Port of the embedded broker.")
    mqtt_enabled: bool = Field(
        default=False,
        description="Run MQTT ingest, the Sparkplug host and (without mqtt_url) the embedded broker in this process; "
        "`iip run` turns it on.",
    )
    polling_enabled: bool = Field(
        default=False,
        description="Poll registered Modbus, OPC UA and simulated devices from this process; `iip run` turns it on.",
    )
    simulate_plant: bool = Field(
        default=False, description="Run the simulated plant in this process; `iip run --demo` turns it on."
    )
    mqtt_client_id: str = Field(default="iip-platform", description="Client id (persistent session) on the broker.")
    sparkplug_host_id: str = Field(default="iip", description="Sparkplug host application id (STATE topic).")
    batch_max_points: int = Field(default=5_000, ge=1, description="Points collected before a batch is published.")
    batch_max_ms: int = Field(default=50, ge=1, description="Longest a point waits to be batched, milliseconds.")
    max_future_skew_s: int = Field(default=300, ge=0, description="Timestamps further in the future are rejected.")
    offline_after_s: int = Field(default=300, ge=1, description="A device silent this long is marked offline.")
    command_timeout_s: float = Field(default=10.0, gt=0, le=600, description="Wait for a command's acknowledgement.")


class TelemetrySettings(BaseModel):
    """The time-series store."""

    retention_days: int = Field(
        default=400, ge=1, description="Raw points older than this are deleted (per tenant override)."
    )
    rollups: bool = Field(default=True, description="Maintain 1-minute and 1-hour rollups continuously.")


class SmtpSecurity(StrEnum):
    NONE = "none"  # plain SMTP, for a relay on a trusted network
    STARTTLS = "starttls"  # upgrade the connection (port 587, or 25)
    TLS = "tls"  # TLS from the first byte (port 465)


class AlarmNotificationSettings(BaseModel):
    """How alarm notifications leave the platform: SMTP for e-mail, webhook timeouts, limits, retries."""

    smtp_host: str = Field(default="", description="SMTP server for e-mail channels; empty: e-mail is not sent.")
    smtp_port: int = Field(default=587, ge=1, le=65535, description="SMTP server port.")
    smtp_security: SmtpSecurity = Field(default=SmtpSecurity.STARTTLS, description="`none`, `starttls` or `tls`.")
    smtp_username: str = Field(default="", description="SMTP login; empty: no authentication.")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP password.")
    smtp_from: str = Field(default="iip@localhost", description="Sender address of alarm e-mail.")
    smtp_timeout_s: float = Field(default=10.0, gt=0, le=300, description="Timeout of each SMTP operation, seconds.")
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=300, description="Timeout of one webhook call, seconds.")
    console_url: str = Field(
        default="", description="Public base URL of the console, put before alarm links; empty: links are paths."
    )
    rate_limit: int = Field(
        default=30, ge=0, description="Messages a channel sends per window unless it sets its own; 0: no limit."
    )
    rate_window_s: int = Field(
        default=60, ge=1, le=86_400, description="Rate limit window; what exceeds it is sent as one digest after it."
    )
    max_attempts: int = Field(default=6, ge=1, le=50, description="Tries of one delivery before it is failed.")
    retry_base_s: float = Field(default=10.0, gt=0, description="Wait before the first retry; doubles after each.")
    retry_max_s: float = Field(default=900.0, gt=0, description="Longest wait between two tries, seconds.")
    check_interval_s: float = Field(
        default=15.0, gt=0, le=3600, description="How often escalations, retries and digests are looked at, seconds."
    )

    @field_validator("console_url")
    @classmethod
    def _check_console_url(cls, value: str) -> str:
        return _base_url(value)


class AlarmsSettings(BaseModel):
    """The alarm lifecycle."""

    max_shelve_hours: float = Field(
        default=24, gt=0, le=24 * 30, description="Longest an operator may shelve an alarm, in hours."
    )
    notifications: AlarmNotificationSettings = Field(default_factory=AlarmNotificationSettings)


class SecuritySettings(BaseModel):
    """The security context's platform services: live monitoring, the decoy PLC, bulletin delivery."""

    monitor_interface: str = Field(
        default="",
        description="Network interface whose ICS traffic is monitored live (AF_PACKET: root or CAP_NET_RAW); "
        "empty: no live monitoring.",
    )
    monitor_tenant: str = Field(default="", description="Tenant (name or id) the monitored network belongs to.")
    monitor_site: str = Field(
        default="", description="Site within the tenant whose active baseline live traffic is checked against."
    )
    monitor_flush_s: float = Field(
        default=1.0, gt=0, le=300, description="Seconds between writes of the hosts and alerts seen live."
    )
    decoy_enabled: bool = Field(default=False, description="Run the decoy PLC (honeypot) in this process.")
    decoy_tenant: str = Field(
        default="", description="Tenant (name or id) whose indicators the decoy's visitors become."
    )
    decoy_seed: str = Field(default="", description="Makes the decoy's identity and values its own.")
    decoy_host: str = Field(default="0.0.0.0", description="Address the decoy listens on.")  # noqa: S104 - a decoy is meant to be reached
    decoy_modbus_port: int = Field(default=502, ge=0, le=65535, description="The decoy's Modbus/TCP port; 0: none.")
    decoy_s7_port: int = Field(default=102, ge=0, le=65535, description="The decoy's S7comm port; 0: none.")
    decoy_flush_s: float = Field(default=5.0, gt=0, le=300, description="Seconds between writes of sightings.")
    delivery_max_attempts: int = Field(
        default=6, ge=1, le=50, description="Tries of one bulletin webhook or e-mail before it is given up."
    )
    delivery_retry_base_s: float = Field(
        default=10.0, gt=0, description="Wait before a failed bulletin delivery is tried again; doubles each time."
    )
    delivery_retry_max_s: float = Field(default=900.0, gt=0, description="Longest wait between two tries, seconds.")
    delivery_check_s: float = Field(
        default=15.0, gt=0, le=3600, description="How often bulletin deliveries due for a retry are looked for."
    )
    share_intelligence: bool = Field(
        default=True,
        description="Every tenant's monitor and detector use the indicators of every decoy on the platform "
        "(without learning whose decoy saw them); off: each tenant's own decoy only.",
    )
    monitor_flow_idle_s: float = Field(
        default=300.0, gt=0, le=86400, description="Seconds a live flow may stay idle before its state is forgotten."
    )
    monitor_max_flows: int = Field(
        default=20000, ge=100, le=5_000_000,
        description="Most flows live monitoring follows at once; beyond, the longest idle is forgotten.",
    )  # fmt: skip
    monitor_fragment_timeout_s: float = Field(
        default=30.0, gt=0, le=600, description="Seconds a fragmented IP datagram seen live may take to complete."
    )
    monitor_fragment_max_datagrams: int = Field(
        default=1024, ge=1, le=1_000_000, description="Incomplete fragmented IP datagrams held at once (live)."
    )
    monitor_fragment_max_bytes: int = Field(
        default=4 * 1024 * 1024, ge=65535, le=1024**3, description="Bytes of IP fragments held at once (live)."
    )
    monitor_ics_ports_only: bool = Field(
        default=False,
        description="The kernel keeps only ICS traffic (TCP/UDP 502, 20000, 2404, 102) and IP fragments for live "
        "monitoring; off: every packet, so the inventory and scan detection see non-ICS talkers too.",
    )
    monitor_buffer_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024 * 1024, le=1024**3,
        description="Bytes of the live capture's receive ring (or socket buffer) that absorb bursts.",
    )  # fmt: skip
    detection_max_sources: int = Field(
        default=100, ge=1, le=100_000,
        description="Alerts of one kind opened for one target per alert window; the sources beyond are folded into "
        "one aggregate alert.",
    )  # fmt: skip

    @model_validator(mode="after")
    def _services_named(self) -> SecuritySettings:
        if self.monitor_interface.strip() and not self.monitor_tenant.strip():
            raise ValueError("monitor_interface needs monitor_tenant")
        if self.decoy_enabled and not (self.decoy_tenant.strip() and self.decoy_seed.strip()):
            raise ValueError("decoy_enabled needs decoy_tenant and decoy_seed")
        if self.decoy_enabled and not (self.decoy_modbus_port or self.decoy_s7_port):
            raise ValueError("decoy_enabled needs decoy_modbus_port or decoy_s7_port")
        return self


class Settings(BaseSettings):
    """All configuration of one IIP process. Environment prefix `IIP_`, nested sections use `__`."""

    model_config = SettingsConfigDict(
        env_prefix="IIP_",
        env_nested_delimiter="__",
        extra="ignore",
        validate_default=True,
    )

    mode: Mode = Field(default=Mode.DEV, description="`dev` or `production` (production requires IIP_SECRET_KEY).")
    data_dir: Path = Field(default=Path("./var"), description="Directory for the SQLite file and local state.")
    database_url: str = Field(default="", description="SQLAlchemy URL; default SQLite file `iip.db` in the data dir.")
    host: str = Field(default="127.0.0.1", description="Address the HTTP server binds.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port the HTTP server binds.")
    secret_key: SecretStr | None = Field(
        default=None,
        description="Key for signing sessions and tokens and for sealing stored secrets (changing it makes "
        "sealed secrets unreadable until rotated); generated into the data dir in dev mode.",
    )
    bus: str = Field(default="memory", description="Event bus: `memory` or a `nats://host:port` URL (JetStream).")
    log_level: str = Field(default="INFO", description="Logging level.")
    log_format: LogFormat = Field(default=LogFormat.JSON, description="`json` (structured) or `text`.")
    default_language: str = Field(default="zh_CN", description="Console language when the user has chosen none.")
    api: ApiSettings = Field(default_factory=ApiSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    identifiers: IdentifierSettings = Field(default_factory=IdentifierSettings)
    devices: DevicesSettings = Field(default_factory=DevicesSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    alarms: AlarmsSettings = Field(default_factory=AlarmsSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)

    @field_validator("bus")
    @classmethod
    def _check_bus(cls, value: str) -> str:
        if value != "memory" and not value.startswith(("nats://", "tls://")):
            raise ValueError("must be 'memory' or a nats:// URL")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if not value:
            return value
        try:
            url = make_url(value)
        except ArgumentError as err:
            raise ValueError(f"not a database URL ({err})") from None
        if url.get_backend_name() not in {"sqlite", "postgresql"}:
            raise ValueError(f"unsupported database '{url.get_backend_name()}'; use sqlite:// or postgresql+psycopg://")
        if url.get_backend_name() == "postgresql" and url.get_driver_name() not in {"psycopg", "psycopg2"}:
            raise ValueError("PostgreSQL URLs must use the psycopg driver (postgresql+psycopg://...)")
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return upper

    @model_validator(mode="after")
    def _production_needs_secret(self) -> Settings:
        if self.mode is Mode.PRODUCTION and self.secret_key is None:
            raise ValueError("production mode refuses to start without IIP_SECRET_KEY")
        return self

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            url = make_url(self.database_url)
            if url.get_backend_name() == "postgresql" and url.get_driver_name() == "psycopg2":
                return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
            if url.drivername == "postgresql":
                return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'iip.db').resolve()}"

    def ensure_data_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def resolved_secret_key(self) -> str:
        """The signing key: configured, or (dev mode) generated once and kept in the data dir."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        self.ensure_data_dir()
        path = self.data_dir / SECRET_KEY_FILE
        if path.exists():
            return path.read_text().strip()
        # Written whole under a temporary name, then linked into place: a reader never sees a partial
        # key, and of two processes starting at once the first link wins and both use its key.
        fd, staged = tempfile.mkstemp(dir=self.data_dir, prefix=f".{SECRET_KEY_FILE}.")  # mode 0600
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_urlsafe(48))
        try:
            os.link(staged, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(staged)
        return path.read_text().strip()


class SettingsError(Exception):
    """Settings could not be built; the message is one readable line."""


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment (and overrides), turning validation errors into one line."""
    try:
        return Settings(**overrides)
    except SourceError as err:  # a section or list variable that is not valid JSON
        match = re.search(r'field "(\w+)"', str(err))
        name = f"IIP_{match.group(1).upper()}" if match else "an IIP_ variable"
        detail = f"value is not valid JSON ({err.__cause__})"
        raise SettingsError(f"invalid settings: {name} (or {name}__...): {detail}") from None
    except ValidationError as err:
        parts = []
        for e in err.errors():
            loc = "__".join(str(p) for p in e["loc"]).upper()
            msg = str(e["msg"]).removeprefix("Value error, ")
            parts.append(f"IIP_{loc}: {msg}" if loc else msg)
        raise SettingsError("invalid settings: " + "; ".join(parts)) from None
