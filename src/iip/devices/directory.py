"""How ingest finds a device and files what it rejects, without a database round trip per message.

The registry implements both protocols (an in-memory snapshot refreshed when the registry changes);
ingest paths depend only on these shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from iip.devices.profiles import DeviceProfile


@dataclass(frozen=True, slots=True)
class KnownDevice:
    """A registered device as ingest sees it."""

    tenant_id: str
    key: str  # unique within the tenant; the `{device}` of MQTT topics and the store's series
    profile: DeviceProfile | None = None
    gateway: str | None = None  # key of the gateway it is reached through
    # payload name -> metric name, from the profile's mappings (MQTT JSON key, Sparkplug metric name)
    mqtt_keys: dict[str, str] = field(default_factory=dict)
    sparkplug_metrics: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, tenant_id: str, key: str, profile: DeviceProfile | None, gateway: str | None = None) -> KnownDevice:
        mqtt = {m.mqtt.key if m.mqtt else m.name: m.name for m in profile.metrics} if profile else {}
        spb = {m.sparkplug.metric if m.sparkplug else m.name: m.name for m in profile.metrics} if profile else {}
        return cls(tenant_id, key, profile, gateway, mqtt, spb)


class DeviceDirectory(Protocol):
    def by_name(self, tenant: str, device: str) -> KnownDevice | None:
        """`tenant` is a tenant's name or id (MQTT topics use the name)."""

    def by_token(self, token: str) -> KnownDevice | None:
        """A device's access token (HTTP ingest, ThingsBoard-style MQTT username)."""

    def by_sparkplug(self, group_id: str, edge_node_id: str, device_id: str | None) -> KnownDevice | None:
        """The device (or, with `device_id` None, the edge node) registered under these Sparkplug ids."""


class DeadLetterSink(Protocol):
    def record(
        self,
        *,
        source: str,  # mqtt, sparkplug, http, modbus, opcua, edge
        reason: str,
        raw: bytes,
        topic: str = "",
        tenant_id: str | None = None,
        device: str | None = None,
    ) -> None:
        """Keep a rejected message with its reason; never raises for a well-formed call."""


@dataclass(slots=True)
class IngestOutcome:
    """What one received message amounts to; the ingest loop batches, publishes and files it."""

    points: list[tuple[KnownDevice, str, int, float, int]] = field(
        default_factory=list
    )  # metric, ts_ms, value, quality
    attributes: list[tuple[KnownDevice, str, Any]] = field(default_factory=list)  # non-numeric values for the twin
    statuses: list[tuple[KnownDevice, bool, str]] = field(default_factory=list)  # online?, reason
    publish: list[tuple[str, bytes, int, bool]] = field(default_factory=list)  # topic, payload, qos, retain
    rejected: list[tuple[str, KnownDevice | None]] = field(default_factory=list)  # reason, device if known
