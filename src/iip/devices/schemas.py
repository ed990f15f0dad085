"""Wire models of the device registry, the registry document, dead letters and HTTP ingest.

Connection settings are validated per protocol by the small models here: what the registry needs
to know to reach a device, not every option a driver may have.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from iip.devices.profiles import NAME, DeviceProfile, Protocol

# PostgreSQL text cannot hold NUL while SQLite can; refusing it here keeps both backends alike.
NO_NUL = r"^[^\x00]*$"
# Device and gateway keys follow the profile name rule; they name MQTT topics and telemetry series.
Key = Annotated[str, StringConstraints(pattern=NAME.pattern, max_length=128)]
Text200 = Annotated[str, StringConstraints(max_length=200, pattern=NO_NUL)]
# Sparkplug ids are topic levels: no '/', '+', '#' and no control characters.
SparkplugId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^/+#\x00-\x1f\x7f]+$")]
HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.\-]{0,252})$")
# Paths of the API and the console under /devices that a device key must not shadow.
RESERVED_KEYS = frozenset({"import", "export", "profiles", "dead-letters"})


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Orm(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# --- connection settings, per protocol


def _host(value: str) -> str:
    value = value.strip()
    candidate = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        if not HOST.match(value):
            raise ValueError("must be a host name or an IP address") from None
        return value
    return candidate


class ModbusConnection(Strict):
    """A Modbus TCP server (a device, or a gateway to a serial line)."""

    host: str = Field(min_length=1, max_length=253, examples=["10.0.4.21"])
    port: int = Field(default=502, ge=1, le=65535)
    unit_id: int = Field(default=1, ge=0, le=255, description="unit (slave) id; 255 or 0 for a device without one")
    timeout_s: float = Field(default=3.0, gt=0, le=60)

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        return _host(value)


class OpcUaConnection(Strict):
    """An OPC UA server, without security or with a user chosen on the driver's side."""

    endpoint: str = Field(
        min_length=12,
        max_length=500,
        pattern=r"^opc\.tcp://[^\s/?#]+(/[^\s]*)?$",
        examples=["opc.tcp://10.0.4.30:4840"],
    )
    timeout_s: float = Field(default=5.0, gt=0, le=120)


class NoConnection(Strict):
    """Devices that send their data (MQTT, Sparkplug, HTTP) are not connected to: nothing to set."""


class SimulatedConnection(BaseModel):
    """The simulator's own parameters; any JSON object."""

    model_config = ConfigDict(extra="allow")


CONNECTION_MODELS: dict[Protocol, type[BaseModel]] = {
    Protocol.MODBUS: ModbusConnection,
    Protocol.OPCUA: OpcUaConnection,
    Protocol.MQTT: NoConnection,
    Protocol.SPARKPLUG: NoConnection,
    Protocol.HTTP: NoConnection,
    Protocol.SIMULATED: SimulatedConnection,
}


# --- registry objects


class SparkplugIds(Strict):
    """Where a device publishes in the Sparkplug namespace; without `device_id` it is an edge node itself."""

    group_id: SparkplugId
    edge_node_id: SparkplugId
    device_id: SparkplugId | None = None


class DeviceSpec(Strict):
    """A device as the registry document and the API describe it."""

    key: Key = Field(examples=["pump-01"])
    display_name: Text200 = ""
    site: Text200 = ""
    profile: Key = Field(description="name of a profile of the same tenant", examples=["pump"])
    connection: dict[str, Any] = Field(
        default_factory=dict, description="per protocol: modbus {host, port, unit_id}, opcua {endpoint}, else {}"
    )
    gateway: Key | None = Field(default=None, description="key of the gateway it is reached through")
    sparkplug: SparkplugIds | None = None
    enabled: bool = True

    @field_validator("key")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_KEYS:
            raise ValueError(f"'{value}' is reserved")
        return value


class DeviceCreate(DeviceSpec):
    issue_token: bool = Field(default=True, description="Create an access token, returned once in the answer.")


class DeviceUpdate(Strict):
    """Fields to change; `gateway` and `sparkplug` set to null detach them."""

    display_name: Text200 | None = None
    site: Text200 | None = None
    profile: Key | None = None
    connection: dict[str, Any] | None = None
    gateway: Key | None = None
    sparkplug: SparkplugIds | None = None
    enabled: bool | None = None


class GatewaySpec(Strict):
    key: Key = Field(examples=["gw-line-1"])
    name: Text200 = ""
    site: Text200 = ""


class GatewayCreate(GatewaySpec):
    issue_token: bool = Field(default=True, description="Create an access token, returned once in the answer.")


class GatewayUpdate(Strict):
    name: Text200 | None = None
    site: Text200 | None = None


class ProfileOut(BaseModel):
    id: str
    tenant_id: str
    name: str
    protocol: Protocol
    version: int = Field(description="grows by one on each change")
    definition: DeviceProfile
    devices: int = Field(description="devices using it")
    created_at: dt.datetime
    updated_at: dt.datetime


class GatewayOut(Orm):
    id: str
    tenant_id: str
    key: str
    name: str
    site: str
    token_prefix: str | None = Field(description="public part of the current token; null when it has none")
    token_created_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


class GatewayCreated(GatewayOut):
    token: str | None = Field(description="The access token; shown once, never again.")


class DeviceOut(BaseModel):
    id: str
    tenant_id: str
    key: str
    display_name: str
    site: str
    profile: str
    protocol: Protocol
    connection: dict[str, Any]
    gateway: str | None
    sparkplug: SparkplugIds | None
    enabled: bool
    token_prefix: str | None = Field(description="public part of the current token; null when it has none")
    token_created_at: dt.datetime | None
    rejected_count: int = Field(description="messages of this device sent to the dead letters")
    created_at: dt.datetime
    updated_at: dt.datetime


class DeviceCreated(DeviceOut):
    token: str | None = Field(description="The access token; shown once, never again.")


class TokenIssued(BaseModel):
    key: str = Field(description="the device's or gateway's key")
    token: str = Field(description="The access token; shown once, never again.")
    token_prefix: str
    token_created_at: dt.datetime


class SectionReport(BaseModel):
    created: list[str] = Field(default_factory=list)
    updated: list[str] = Field(default_factory=list)
    unchanged: list[str] = Field(default_factory=list)


class ImportReport(BaseModel):
    profiles: SectionReport = Field(default_factory=SectionReport)
    gateways: SectionReport = Field(default_factory=SectionReport)
    devices: SectionReport = Field(default_factory=SectionReport)


# --- dead letters


class DeadLetterOut(BaseModel):
    id: int
    tenant_id: str | None
    device: str | None
    source: str
    topic: str
    reason: str
    received_at: dt.datetime
    raw: str = Field(description="the message as received: text when it is UTF-8, else base64")
    raw_encoding: Literal["utf-8", "base64"]
    raw_size: int


class PurgeResult(BaseModel):
    deleted: int


# --- HTTP ingest


class LineError(BaseModel):
    line: int = Field(description="1-based: the line (NDJSON) or the object's place in the list (columnar)")
    reason: str


class IngestResult(BaseModel):
    accepted: int = Field(description="points stored")
    rejected: int = Field(description="lines (or columnar objects) refused, each named in `errors`")
    errors: list[LineError]
