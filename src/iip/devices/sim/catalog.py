"""What the simulated plant is made of: its configuration, its profiles and devices, its registry document.

The profiles are data, written the way a user writes them for real devices; `plant_document` gives
the registry import document (`profiles:`, `devices:`) whose connection settings point at the
simulated servers and whose Sparkplug ids are the edge node's, so a tenant provisioned with it
sees exactly the devices `SimulatedPlant` runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from iip.devices.ingest.mqtt import BrokerAddress
from iip.devices.profiles import NAME, DeviceProfile
from iip.devices.sim.signals import LINE_MACHINES
from iip.kernel.documents import render_document
from iip.kernel.errors import Invalid
from iip.kernel.settings import DevicesSettings, SettingsError

TENANT = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,99}$")  # the tenant name rule
SPARKPLUG_ID = re.compile(r"^[^/+#\x00-\x1f\x7f]{1,128}$")
OPCUA_NAMESPACE_URI = "urn:iip:sim:plant"
OPCUA_NAMESPACE_INDEX = 2  # the first namespace a server registers; the profiles' node ids use it
OPCUA_PATH = "/iip/sim/"
REACTOR_OBJECT = "R-101"
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 - names the wildcard, binds nothing


# --------------------------------------------------------------------------- configuration


class PlantConfig(BaseModel):
    """What the simulated plant runs and where. Ports 0 are chosen free when the plant starts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str = Field(default="demo", description="tenant of the MQTT topics; default Sparkplug group suffix")
    host: str = Field(default="127.0.0.1", description="address the Modbus and OPC UA servers listen on")
    advertised_host: str = Field(default="", description="host the registry document points at; default `host`")
    pumps: int = Field(default=6, ge=0, le=247, description="Modbus pumps (unit ids 1..n)")
    meters: int = Field(default=7, ge=0, le=247, description="Modbus power meters: a main incomer, then feeders")
    reactor: bool = Field(default=True, description="the OPC UA reactor")
    packaging_line: bool = Field(default=True, description="the Sparkplug B packaging line (needs a broker)")
    sensors: int = Field(default=10, ge=0, le=10_000, description="MQTT JSON room sensors (need a broker)")
    pump_port: int = Field(default=5020, ge=0, le=65_535)
    meter_port: int = Field(default=5021, ge=0, le=65_535)
    opcua_port: int = Field(default=4840, ge=0, le=65_535)
    broker_url: str = Field(default="mqtt://127.0.0.1:1883", description="mqtt://[user:pass@]host:port; '' none")
    sparkplug_group: str = Field(default="", description="Sparkplug group id; default iip-sim-{tenant}")
    edge_node: str = Field(default="line-1", description="Sparkplug edge node id, also the line's device key")
    primary_host_id: str = Field(default="", description="Sparkplug host to wait for (STATE) before births")
    mqtt_devices: int = Field(default=0, ge=0, le=100_000, description="lightweight MQTT devices for load tests")
    mqtt_rate: float = Field(default=1.0, gt=0, le=100, description="messages per second per lightweight device")
    mqtt_connections: int = Field(default=0, ge=0, le=100_000, description="shared connections; 0: one per device")
    load_prefix: str = Field(default="load", description="key prefix of the lightweight devices")
    period_s: float = Field(default=1.0, ge=0.01, le=60, description="update period of the signals")
    time_scale: float = Field(default=1.0, gt=0, le=86_400, description="simulated seconds per real second")
    seed: int = Field(default=1, description="same seed, same signals")
    faults: bool = Field(default=True, description="random faults: pump cavitation and bearing wear, machine stops")

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, value: str) -> str:
        if not TENANT.match(value):
            raise ValueError("tenant names use lower-case letters, digits, '_', '.', '-' (2 to 100)")
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker(cls, value: str) -> str:
        if value:
            try:
                BrokerAddress.parse(value)
            except SettingsError:
                raise ValueError("must look like mqtt://[user:password@]host:port (mqtts:// for TLS)") from None
        return value

    @field_validator("sparkplug_group", "primary_host_id")
    @classmethod
    def _sparkplug_id(cls, value: str) -> str:
        if value and (not SPARKPLUG_ID.match(value) or value == "STATE"):
            raise ValueError("a Sparkplug id has no '/', '+', '#' or control characters and is not 'STATE'")
        return value

    @field_validator("edge_node", "load_prefix")
    @classmethod
    def _key_part(cls, value: str) -> str:
        if not NAME.match(value) or len(value) > 100:
            raise ValueError("use letters, digits, '_', '.', '-', starting with a letter (max 100)")
        return value

    @classmethod
    def for_platform(cls, devices: DevicesSettings, tenant: str, **changes: Any) -> PlantConfig:
        """The plant publishing to the platform's broker: the configured one, else the embedded one."""
        broker = devices.mqtt_url or f"mqtt://127.0.0.1:{devices.embedded_broker_port}"
        return cls.model_validate({"tenant": tenant, "broker_url": broker, **changes})

    @property
    def group_id(self) -> str:
        return self.sparkplug_group or f"iip-sim-{self.tenant}"

    @property
    def document_host(self) -> str:
        if self.advertised_host:
            return self.advertised_host
        return "127.0.0.1" if self.host in WILDCARD_HOSTS else self.host

    @property
    def broker(self) -> BrokerAddress | None:
        return BrokerAddress.parse(self.broker_url) if self.broker_url else None

    @property
    def opcua_endpoint(self) -> str:
        return f"opc.tcp://{self.document_host}:{self.opcua_port}{OPCUA_PATH}"


# --------------------------------------------------------------------------- profiles


def _modbus(table: str, address: int, data_type: str, **extra: Any) -> dict[str, Any]:
    return {"modbus": {"table": table, "address": address, "data_type": data_type, **extra}}


def _node(name: str) -> dict[str, Any]:
    return {"opcua": {"node_id": f"ns={OPCUA_NAMESPACE_INDEX};s={REACTOR_OBJECT}.{name}"}}


def _spb(name: str) -> dict[str, Any]:
    return {"sparkplug": {"metric": name}}


PUMP_PROFILE: dict[str, Any] = {
    "name": "sim-pump",
    "description": "Centrifugal pump on a variable-speed drive (120 m3/h, 6 bar at full speed), Modbus TCP",
    "protocol": "modbus",
    "poll_interval_s": 1.0,
    "metrics": [
        {"name": "speed_setpoint", "unit": "%", "writable": True, "description": "Drive speed setpoint, 0..100 %",
         **_modbus("holding", 0, "float32")},
        {"name": "run", "data_type": "bool", "writable": True, "description": "Run command",
         **_modbus("coil", 0, "bool")},
        {"name": "running", "data_type": "bool", "description": "Motor running", **_modbus("discrete", 0, "bool")},
        {"name": "fault", "data_type": "bool", "description": "Cavitation, vibration or bearing temperature alarm",
         **_modbus("discrete", 1, "bool")},
        {"name": "flow", "unit": "m3/h", "description": "Discharge flow", **_modbus("input", 0, "float32")},
        {"name": "discharge_pressure", "unit": "bar", "description": "Discharge pressure (word-swapped float)",
         **_modbus("input", 2, "float32", word_order="little")},
        {"name": "suction_pressure", "unit": "bar", **_modbus("input", 4, "int16", scale=0.001)},
        {"name": "motor_current", "unit": "A", **_modbus("input", 5, "uint16", scale=0.01)},
        {"name": "vibration", "unit": "mm/s", "description": "Bearing housing vibration velocity, RMS",
         **_modbus("input", 6, "uint16", scale=0.01)},
        {"name": "bearing_temperature", "unit": "°C", **_modbus("input", 7, "int16", scale=0.1)},
        {"name": "speed", "unit": "%", "description": "Actual drive speed", **_modbus("input", 8, "uint16", scale=0.1)},
        {"name": "run_hours", "unit": "h", **_modbus("input", 9, "uint32", scale=0.1)},
    ],
}  # fmt: skip

POWER_METER_PROFILE: dict[str, Any] = {
    "name": "sim-power-meter",
    "description": "Three-phase power meter (400/230 V, 50 Hz), float32 input registers, Modbus TCP",
    "protocol": "modbus",
    "poll_interval_s": 1.0,
    "metrics": [
        *(
            {"name": f"voltage_l{n}", "unit": "V", "description": f"Phase {n} to neutral",
             **_modbus("input", 2 * (n - 1), "float32")}
            for n in (1, 2, 3)
        ),
        *(
            {"name": f"current_l{n}", "unit": "A", **_modbus("input", 6 + 2 * (n - 1), "float32")}
            for n in (1, 2, 3)
        ),
        {"name": "active_power", "unit": "kW", **_modbus("input", 12, "float32")},
        {"name": "reactive_power", "unit": "kvar", **_modbus("input", 14, "float32")},
        {"name": "power_factor", "unit": "", **_modbus("input", 16, "float32")},
        {"name": "frequency", "unit": "Hz", **_modbus("input", 18, "float32")},
        {"name": "energy", "unit": "kWh", "description": "Active energy imported; only increases",
         **_modbus("input", 20, "uint32", scale=0.01, word_order="little")},
        {"name": "reactive_energy", "unit": "kvarh", **_modbus("input", 22, "uint32", scale=0.01, word_order="little")},
    ],
}  # fmt: skip

REACTOR_PROFILE: dict[str, Any] = {
    "name": "sim-reactor",
    "description": f"Jacketed stirred-tank reactor {REACTOR_OBJECT} with a PI temperature loop, OPC UA",
    "protocol": "opcua",
    "metrics": [
        {"name": "temperature", "unit": "°C", **_node("Temperature")},
        {"name": "temperature_setpoint", "unit": "°C", "writable": True, "description": "20..140 °C",
         **_node("TemperatureSetpoint")},
        {"name": "jacket_temperature", "unit": "°C", **_node("JacketTemperature")},
        {"name": "jacket_valve", "unit": "%", "description": "Split range: below 50 % cooling water, above steam",
         **_node("JacketValve")},
        {"name": "pressure", "unit": "bar", **_node("Pressure")},
        {"name": "level", "unit": "%", **_node("Level")},
        {"name": "feed_flow", "unit": "kg/h", **_node("FeedFlow")},
        {"name": "agitator_speed", "unit": "rpm", **_node("AgitatorSpeed")},
        {"name": "agitator_setpoint", "unit": "rpm", "writable": True, "description": "0..300 rpm",
         **_node("AgitatorSetpoint")},
        {"name": "phase", "data_type": "string", "description": "HEATING, REACTING or COOLING", **_node("Phase")},
    ],
}  # fmt: skip

PACKAGING_MACHINE_PROFILE: dict[str, Any] = {
    "name": "sim-packaging-machine",
    "description": "A machine of the packaging line (filler, capper, ...), Sparkplug B device",
    "protocol": "sparkplug",
    "metrics": [
        {"name": "state", "data_type": "string", "description": "RUNNING, STOPPED, FAULT or STARVED", **_spb("State")},
        {"name": "run", "data_type": "bool", "writable": True, "description": "Run command", **_spb("Run")},
        {"name": "speed", "unit": "1/min", **_spb("Speed")},
        {"name": "speed_setpoint", "unit": "1/min", "writable": True, "description": "0..150 % of nominal",
         **_spb("Speed Setpoint")},
        {"name": "good_count", "data_type": "uint64", **_spb("Count/Good")},
        {"name": "reject_count", "data_type": "uint64", **_spb("Count/Reject")},
        {"name": "fault_code", "data_type": "int32", "description": "0 when there is no fault", **_spb("Fault Code")},
        {"name": "availability", "unit": "%", "data_type": "float32", **_spb("OEE/Availability")},
        {"name": "performance", "unit": "%", "data_type": "float32", **_spb("OEE/Performance")},
        {"name": "quality", "unit": "%", "data_type": "float32", **_spb("OEE/Quality")},
        {"name": "oee", "unit": "%", "data_type": "float32", **_spb("OEE/OEE")},
    ],
}  # fmt: skip

PACKAGING_LINE_PROFILE: dict[str, Any] = {
    "name": "sim-packaging-line",
    "description": "The packaging line's Sparkplug B edge node",
    "protocol": "sparkplug",
    "metrics": [
        {"name": "line_state", "data_type": "string", **_spb("Line/State")},
        {"name": "line_speed", "unit": "bottles/min", **_spb("Line/Speed")},
        {"name": "uptime", "unit": "s", "data_type": "uint64", **_spb("Node/Uptime")},
    ],
}

ROOM_SENSOR_PROFILE: dict[str, Any] = {
    "name": "sim-room-sensor",
    "description": 'Room sensor publishing {"ts": ms, "values": {...}} over MQTT',
    "protocol": "mqtt",
    "metrics": [
        {"name": "temperature", "unit": "°C", "mqtt": {"key": "temp"}},
        {"name": "humidity", "unit": "%", "mqtt": {"key": "hum"}},
        {"name": "co2", "unit": "ppm", "mqtt": {"key": "co2"}},
        {"name": "battery", "unit": "%", "mqtt": {"key": "bat"}},
    ],
}

LOAD_SENSOR_PROFILE: dict[str, Any] = {
    "name": "sim-load-sensor",
    "description": "Lightweight MQTT device for load and memory measurements",
    "protocol": "mqtt",
    "metrics": [
        {"name": "temperature", "unit": "°C", "mqtt": {"key": "t"}},
        {"name": "humidity", "unit": "%", "mqtt": {"key": "h"}},
    ],
}

PROFILES: dict[str, DeviceProfile] = {
    document["name"]: DeviceProfile.model_validate(document)
    for document in (
        PUMP_PROFILE,
        POWER_METER_PROFILE,
        REACTOR_PROFILE,
        PACKAGING_MACHINE_PROFILE,
        PACKAGING_LINE_PROFILE,
        ROOM_SENSOR_PROFILE,
        LOAD_SENSOR_PROFILE,
    )
}


# --------------------------------------------------------------------------- devices


class Kind(StrEnum):
    PUMP = "pump"
    METER = "meter"
    REACTOR = "reactor"
    LINE = "line"
    MACHINE = "machine"
    SENSOR = "sensor"
    LOAD = "load"


PROFILE_OF: dict[Kind, str] = {
    Kind.PUMP: "sim-pump",
    Kind.METER: "sim-power-meter",
    Kind.REACTOR: "sim-reactor",
    Kind.LINE: "sim-packaging-line",
    Kind.MACHINE: "sim-packaging-machine",
    Kind.SENSOR: "sim-room-sensor",
    Kind.LOAD: "sim-load-sensor",
}


@dataclass(frozen=True, slots=True)
class PlantDevice:
    """One device of the plant: its registry entry, and which model and server stand behind it."""

    key: str
    kind: Kind
    index: int  # position among the devices of its kind (0-based)
    display_name: str
    site: str
    unit_id: int | None = None  # Modbus
    sparkplug_device: str | None = None  # Sparkplug device id; None for the edge node itself

    @property
    def profile(self) -> DeviceProfile:
        return PROFILES[PROFILE_OF[self.kind]]


def load_key(config: PlantConfig, index: int) -> str:
    return f"{config.load_prefix}-{index + 1:05d}"


def plant_devices(config: PlantConfig, *, with_load: bool = True) -> list[PlantDevice]:
    """The devices `config` runs, in a stable order (load devices last)."""
    devices = [
        PlantDevice(f"pump-{i + 1:02d}", Kind.PUMP, i, f"Pump P-{101 + i}", "Utilities", unit_id=i + 1)
        for i in range(config.pumps)
    ]
    for i in range(config.meters):
        name = "Main incomer" if i == 0 else f"Feeder {i}" + (f" (pump P-{100 + i})" if i <= config.pumps else "")
        devices.append(PlantDevice(f"meter-{i + 1:02d}", Kind.METER, i, name, "Main substation", unit_id=i + 1))
    if config.reactor:
        devices.append(PlantDevice("reactor-01", Kind.REACTOR, 0, f"Reactor {REACTOR_OBJECT}", "Reactor hall"))
    if config.packaging_line and config.broker_url:
        node = config.edge_node
        devices.append(PlantDevice(node, Kind.LINE, 0, "Packaging line 1", "Packaging hall"))
        devices += [
            PlantDevice(f"{node}-{spec.device_id}", Kind.MACHINE, i, spec.title, "Packaging hall",
                        sparkplug_device=spec.device_id)
            for i, spec in enumerate(LINE_MACHINES)
        ]  # fmt: skip
    if config.broker_url:
        devices += [
            PlantDevice(f"env-{i + 1:02d}", Kind.SENSOR, i, f"Room sensor {i + 1:02d}", "Warehouse")
            for i in range(config.sensors)
        ]
        if with_load:
            devices += [
                PlantDevice(load_key(config, i), Kind.LOAD, i, "", "Load test") for i in range(config.mqtt_devices)
            ]
    seen: set[str] = set()
    for device in devices:
        if device.key in seen:
            raise Invalid(
                f"device key '{device.key}' would be used twice: choose another edge node id or load prefix",
                code="sim_key_clash",
            )
        seen.add(device.key)
    return devices


def _connection(config: PlantConfig, device: PlantDevice) -> dict[str, Any]:
    host = config.document_host
    if device.kind is Kind.PUMP:
        return {"host": host, "port": config.pump_port, "unit_id": device.unit_id}
    if device.kind is Kind.METER:
        return {"host": host, "port": config.meter_port, "unit_id": device.unit_id}
    if device.kind is Kind.REACTOR:
        return {"endpoint": config.opcua_endpoint}
    return {}


def device_entry(config: PlantConfig, device: PlantDevice) -> dict[str, Any]:
    """The device as the registry document writes it."""
    entry: dict[str, Any] = {"key": device.key}
    if device.display_name:
        entry["display_name"] = device.display_name
    entry["site"] = device.site
    entry["profile"] = PROFILE_OF[device.kind]
    connection = _connection(config, device)
    if connection:
        entry["connection"] = connection
    if device.kind in {Kind.LINE, Kind.MACHINE}:
        ids = {"group_id": config.group_id, "edge_node_id": config.edge_node}
        if device.sparkplug_device is not None:
            ids["device_id"] = device.sparkplug_device
        entry["sparkplug"] = ids
    return entry


def plant_document(config: PlantConfig) -> dict[str, Any]:
    """The registry import document of the plant `config` describes (profiles of the kinds it runs)."""
    devices = plant_devices(config)
    kinds = {d.kind for d in devices}
    profiles = [
        PROFILES[name].model_dump(mode="json", exclude_defaults=True)
        for kind, name in PROFILE_OF.items()
        if kind in kinds
    ]
    # `protocol` has no default, the rest of a metric is left out when it is the default
    return {"profiles": profiles, "devices": [device_entry(config, d) for d in devices]}


def render_catalog(config: PlantConfig, document_format: str = "yaml") -> str:
    """The document as text; YAML starts with comments saying what it is and how to use it."""
    text = render_document(plant_document(config), document_format)
    if document_format != "yaml":
        return text
    header = (
        f"# The simulated plant (`iip sim run`) for tenant {config.tenant}.\n"
        f"# Import it with: iip devices import plant.yaml --tenant {config.tenant}\n"
        f"# Modbus pumps {config.document_host}:{config.pump_port}, power meters "
        f"{config.document_host}:{config.meter_port}, OPC UA {config.opcua_endpoint},\n"
        f"# Sparkplug B group {config.group_id}, edge node {config.edge_node}; "
        f"MQTT topics iip/{config.tenant}/{{device}}/telemetry.\n"
    )
    return header + text
