"""The edge agent's configuration file (YAML or JSON), validated once at start-up.

Relative paths in the file (outbox, profiles file) are relative to the file itself, so a
configuration directory can be moved as a whole.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from iip.devices.profiles import NAME, DeviceProfile


class EdgeConfigError(Exception):
    """The configuration cannot be used; the message is one readable line."""


class Transport(StrEnum):
    HTTP = "http"  # POST {platform_url}/api/telemetry; the platform acknowledges after its commit
    MQTT = "mqtt"  # QoS 1 to iip/{tenant}/{device}/telemetry; the broker acknowledges


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttLink(Strict):
    url: str = Field(description="mqtt://[user:password@]host[:port] (mqtts:// for TLS)")
    tenant: str = Field(min_length=1, description="Tenant name, the {tenant} of the topics")
    client_id: str = Field(default="", description="Client id of the persistent session; default iip-edge-<tenant>")
    keepalive_s: int = Field(default=30, ge=5, le=3600)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"mqtt", "mqtts"} or not parts.hostname:
            raise ValueError("must be an mqtt:// or mqtts:// URL such as mqtt://broker.example.com:1883")
        try:
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            raise ValueError("the port of the MQTT URL is not a number in 1-65535") from None
        return value

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, value: str) -> str:
        if any(c in value for c in "/+#") or value != value.strip():
            raise ValueError("a tenant name cannot hold '/', '+', '#' or surrounding spaces (it is a topic level)")
        return value

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def username(self) -> str | None:
        name = urlsplit(self.url).username
        return unquote(name) if name else None

    @property
    def password(self) -> str | None:
        secret = urlsplit(self.url).password
        return unquote(secret) if secret else None

    @property
    def session_id(self) -> str:
        return self.client_id or f"iip-edge-{self.tenant}"


class OutboxSettings(Strict):
    path: Path = Field(default=Path("edge-outbox.db"), description="SQLite file of the outbox")
    max_points: int = Field(default=5_000_000, ge=1, description="When full, the oldest points are dropped")
    max_age_s: int = Field(default=7 * 86_400, ge=0, description="Older points are dropped; 0 keeps them forever")


class EdgeDevice(Strict):
    key: str = Field(description="The device's key in the platform registry")
    profile: DeviceProfile = Field(description="Inline profile, or the name of one in `profiles_file`")
    token: SecretStr | None = Field(default=None, description="The device's own token (HTTP), instead of the gateway's")
    connection: dict[str, Any] = Field(default_factory=dict, description="Protocol connection settings of the driver")

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("device keys start with a letter and use letters, digits, '_', '.', '-' (max 128)")
        return value

    @field_validator("profile", mode="before")
    @classmethod
    def _profile_by_name(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, str):
            return value
        profiles: dict[str, DeviceProfile] = (info.context or {}).get("profiles", {})
        if value not in profiles:
            known = ", ".join(sorted(profiles)) or "none: set `profiles_file`"
            raise ValueError(f"unknown profile {value!r} (known: {known})")
        return profiles[value]


class EdgeConfig(Strict):
    platform_url: str = Field(default="", description="Base URL of the platform, e.g. https://iip.example.com")
    token: SecretStr | None = Field(default=None, description="Gateway token sent with every HTTP batch")
    transport: Transport = Transport.HTTP
    mqtt: MqttLink | None = None
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    batch_size: int = Field(default=500, ge=1, le=50_000, description="Points per request (HTTP) or burst (MQTT)")
    linger_ms: int = Field(default=200, ge=0, le=60_000, description="Wait this long for a batch to fill")
    request_timeout_s: float = Field(default=10.0, gt=0, le=300)
    retry_initial_s: float = Field(default=0.5, gt=0, le=60, description="First back-off after a failed send")
    retry_max_s: float = Field(default=30.0, gt=0, le=3600, description="Longest back-off between retries")
    profiles_file: Path | None = Field(default=None, description="Profiles in the registry's import format")
    log_level: str = "INFO"
    log_format: str = Field(default="text", pattern="^(text|json)$")
    devices: list[EdgeDevice] = Field(default_factory=list)

    @field_validator("platform_url")
    @classmethod
    def _platform_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", value):
            raise ValueError("must be an http:// or https:// URL such as https://iip.example.com")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return value.upper()

    @model_validator(mode="after")
    def _consistent(self) -> EdgeConfig:
        keys = [d.key for d in self.devices]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ValueError(f"device keys appear twice: {', '.join(twice)}")
        if self.retry_initial_s > self.retry_max_s:
            raise ValueError("retry_initial_s must not exceed retry_max_s")
        if self.transport is Transport.HTTP:
            if not self.platform_url:
                raise ValueError("the http transport needs `platform_url`")
            without = [d.key for d in self.devices if d.token is None]
            if self.token is None and without:
                raise ValueError(f"the http transport needs `token` (gateway) or a token on each device: {without[0]}")
        elif self.mqtt is None:
            raise ValueError("the mqtt transport needs an `mqtt` section (url, tenant)")
        return self

    def device_tokens(self) -> dict[str, str]:
        """Device key -> bearer token for HTTP: the device's own, else the gateway's."""
        gateway = self.token.get_secret_value() if self.token else ""
        return {d.key: d.token.get_secret_value() if d.token else gateway for d in self.devices}


def _read_document(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise EdgeConfigError(f"cannot read the {what} {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise EdgeConfigError(f"the {what} {path} is not UTF-8 text") from None
    try:
        return json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        first = " ".join(str(err).split())
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise EdgeConfigError(f"the {what} {path} is not valid {kind}: {first}") from None


def _problems(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = str(e["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def load_profiles(path: Path) -> dict[str, DeviceProfile]:
    """Profiles from a file in the registry's import format: `profiles:` list of profiles."""
    document = _read_document(path, "profiles file")
    if not isinstance(document, dict) or not isinstance(document.get("profiles"), list):
        raise EdgeConfigError(f"the profiles file {path} needs a top-level `profiles:` list")
    profiles: dict[str, DeviceProfile] = {}
    for index, raw in enumerate(document["profiles"]):
        try:
            profile = DeviceProfile.model_validate(raw)
        except ValidationError as err:
            raise EdgeConfigError(f"{path}: profiles.{index}: {_problems(err)}") from None
        if profile.name in profiles:
            raise EdgeConfigError(f"{path}: profile {profile.name!r} appears twice")
        profiles[profile.name] = profile
    return profiles


def load_config(path: Path) -> EdgeConfig:
    """Read and validate the configuration; relative paths become relative to its folder."""
    document = _read_document(path, "configuration")
    if not isinstance(document, dict):
        raise EdgeConfigError(f"the configuration {path} must be a mapping (key: value)")
    base = path.resolve().parent
    profiles: dict[str, DeviceProfile] = {}
    if document.get("profiles_file"):
        profiles_file = base / str(document["profiles_file"])
        document["profiles_file"] = str(profiles_file)
        profiles = load_profiles(profiles_file)
    try:
        config = EdgeConfig.model_validate(document, context={"profiles": profiles})
    except ValidationError as err:
        raise EdgeConfigError(f"{path}: {_problems(err)}") from None
    outbox = config.outbox.model_copy(update={"path": base / config.outbox.path})
    return config.model_copy(update={"outbox": outbox})
