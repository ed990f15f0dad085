"""The simulated plant: every simulated device and server, started together in one event loop.

`SimulatedPlant(config)` is an async context manager. On entry it starts the Modbus servers
(pumps, power meters), the OPC UA reactor, the Sparkplug B packaging line, the MQTT room sensors
and the lightweight load devices the configuration asks for, then steps the signals every
`period_s` and pushes what changed. On exit it stops them all (the edge node with an NDEATH).
Ports given as 0 are chosen free at start; `config` then holds the ports in use, and `document()`
the registry document pointing at them.

Failing to listen on a port is an `Unavailable` naming the port, raised before anything keeps
running; an unreachable broker is not: MQTT parts keep retrying in the background.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from iip.devices.sim.catalog import (
    OPCUA_PATH,
    PROFILES,
    REACTOR_OBJECT,
    Kind,
    PlantConfig,
    PlantDevice,
    load_key,
    plant_devices,
    plant_document,
)
from iip.devices.sim.modbus_devices import ModbusUnit, SimulatedModbusServer
from iip.devices.sim.mqtt_devices import LoadFleet, MqttStats, RoomSensors, stop_task
from iip.devices.sim.opcua_reactor import OpcUaObject, SimulatedOpcUaServer
from iip.devices.sim.signals import DeviceModel, PlantSignals
from iip.devices.sim.sparkplug_line import SparkplugDevice, SparkplugEdgeNode

logger = logging.getLogger(__name__)


class _Part(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PlantPart:
    """One running part of the plant, for the summary."""

    name: str
    endpoint: str
    devices: int
    detail: str

    def describe(self) -> str:
        return f"{self.name}: {self.endpoint} ({self.devices} devices; {self.detail})"


def free_port(host: str) -> int:
    """A port nothing listens on now (the caller binds it right away)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class SimulatedPlant:
    """Simulated devices of several kinds and the servers they are reached through."""

    def __init__(self, config: PlantConfig | None = None, *, clock: Callable[[], float] = time.time) -> None:
        config = config or PlantConfig()
        self.config = config
        self.devices = plant_devices(config, with_load=False)
        mqtt = bool(config.broker_url)
        self.signals = PlantSignals(
            config.seed,
            pumps=config.pumps,
            meters=config.meters,
            reactor=config.reactor,
            line=config.packaging_line and mqtt,
            sensors=config.sensors if mqtt else 0,
            random_faults=config.faults,
        )
        self._clock = clock
        self._models: dict[str, DeviceModel] = {d.key: self._model_of(d) for d in self.devices}
        self.pump_server: SimulatedModbusServer | None = None
        self.meter_server: SimulatedModbusServer | None = None
        self.opcua: SimulatedOpcUaServer | None = None
        self.edge_node: SparkplugEdgeNode | None = None
        self.sensors: RoomSensors | None = None
        self.load: LoadFleet | None = None
        self._build_parts()
        self._started: list[_Part] = []
        self._ticker: asyncio.Task[None] | None = None
        self.steps = 0

    def _model_of(self, device: PlantDevice) -> DeviceModel:
        signals = self.signals
        if device.kind is Kind.PUMP:
            return signals.pumps[device.index]
        if device.kind is Kind.METER:
            return signals.meters[device.index]
        if device.kind is Kind.SENSOR:
            return signals.sensors[device.index]
        if device.kind is Kind.REACTOR and signals.reactor is not None:
            return signals.reactor
        if device.kind is Kind.LINE and signals.line is not None:
            return signals.line
        if device.kind is Kind.MACHINE and signals.line is not None:
            return signals.line.machines[device.index]
        raise ValueError(f"no model for {device.key}")  # plant_devices and PlantSignals disagree

    def model(self, key: str) -> DeviceModel:
        """The signals behind a device, by its key (load devices have none)."""
        return self._models[key]

    def _of_kind(self, kind: Kind) -> list[PlantDevice]:
        return [d for d in self.devices if d.kind is kind]

    def _build_parts(self) -> None:
        config = self.config
        for kind, name, port in (
            (Kind.PUMP, "pumps", config.pump_port),
            (Kind.METER, "power meters", config.meter_port),
        ):
            units = [ModbusUnit(d.unit_id or 0, d.key, d.profile, self._models[d.key]) for d in self._of_kind(kind)]
            if units:
                server = SimulatedModbusServer(name, config.host, port, units)
                if kind is Kind.PUMP:
                    self.pump_server = server
                else:
                    self.meter_server = server
        reactors = self._of_kind(Kind.REACTOR)
        if reactors:
            objects = [OpcUaObject(REACTOR_OBJECT, d.key, d.profile, self._models[d.key]) for d in reactors]
            self.opcua = SimulatedOpcUaServer(config.host, config.opcua_port, objects)
        broker = config.broker
        if broker is None:
            return
        lines = self._of_kind(Kind.LINE)
        if lines:
            machines = [
                SparkplugDevice(d.sparkplug_device or d.key, d.key, d.profile, self._models[d.key])
                for d in self._of_kind(Kind.MACHINE)
            ]
            self.edge_node = SparkplugEdgeNode(
                broker,
                config.group_id,
                config.edge_node,
                PROFILES["sim-packaging-line"],
                self._models[lines[0].key],
                machines,
                primary_host_id=config.primary_host_id,
                clock=self._clock,
            )
        sensors = [(d.key, self._models[d.key]) for d in self._of_kind(Kind.SENSOR)]
        if sensors:
            client_id = f"iip-sim-{config.tenant}-sensors"
            self.sensors = RoomSensors(broker, config.tenant, sensors, client_id=client_id, clock=self._clock)
        if config.mqtt_devices:
            self.load = LoadFleet(
                broker,
                config.tenant,
                lambda index: load_key(config, index),
                config.mqtt_devices,
                rate=config.mqtt_rate,
                connections=config.mqtt_connections,
                client_prefix=f"iip-sim-{config.tenant}",
                seed=config.seed,
                clock=self._clock,
                time_scale=config.time_scale,
            )

    # life cycle

    async def __aenter__(self) -> SimulatedPlant:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start every part; if one cannot start, stop the others and raise its error."""
        if self._ticker is not None:
            return
        try:
            for part in (self.pump_server, self.meter_server):
                if part is not None:
                    await part.start()
                    self._started.append(part)
            if self.opcua is not None:
                if self.opcua.port == 0:
                    self.opcua.port = free_port(self.config.host)
                await self.opcua.start()
                self._started.append(self.opcua)
            for mqtt_part in (self.edge_node, self.sensors, self.load):
                if mqtt_part is not None:
                    await mqtt_part.start()
                    self._started.append(mqtt_part)
        except BaseException:
            await self.stop()
            raise
        self.config = self._bound_config()
        self._ticker = asyncio.create_task(self._tick_forever(), name="simulated plant")

    async def stop(self) -> None:
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            await stop_task(ticker)
        while self._started:
            part = self._started.pop()
            try:
                await part.stop()
            except Exception:  # one part failing to stop must not keep the others running
                logger.exception("stopping the simulated plant: %s", type(part).__name__)

    def _bound_config(self) -> PlantConfig:
        changes: dict[str, Any] = {}
        if self.pump_server is not None:
            changes["pump_port"] = self.pump_server.port
        if self.meter_server is not None:
            changes["meter_port"] = self.meter_server.port
        if self.opcua is not None:
            changes["opcua_port"] = self.opcua.port
        return self.config.model_copy(update=changes)

    async def _tick_forever(self) -> None:
        loop = asyncio.get_running_loop()
        period = self.config.period_s
        next_tick = loop.time()
        while True:
            next_tick += period
            delay = next_tick - loop.time()
            if delay < -period:  # the loop was busy: skip the missed steps rather than burst
                next_tick = loop.time()
                delay = 0.0
            await asyncio.sleep(max(delay, 0.0))
            try:
                await self.step()
            except Exception:  # a failing step must not stop the plant
                logger.exception("simulated plant step failed")

    async def step(self) -> None:
        """Advance the signals by one period (times the time scale) and push what changed."""
        self.signals.step(self.config.period_s * self.config.time_scale)
        self.steps += 1
        if self.opcua is not None:
            await self.opcua.update()
        if self.edge_node is not None:
            await self.edge_node.publish_changes()
        if self.sensors is not None:
            self.sensors.publish()

    # what runs where

    def document(self) -> dict[str, Any]:
        """The registry document of the running plant (its actual ports)."""
        return plant_document(self.config)

    @property
    def mqtt_stats(self) -> MqttStats:
        """Counters of the MQTT JSON devices (sensors and load devices together)."""
        total = MqttStats()
        for part in (self.sensors, self.load):
            if part is not None:
                for name in ("connections", "connected", "published", "acknowledged", "dropped", "connects"):
                    setattr(total, name, getattr(total, name) + getattr(part.stats, name))
        return total

    def summary(self) -> list[PlantPart]:
        config = self.config
        parts: list[PlantPart] = []
        for server in (self.pump_server, self.meter_server):
            if server is not None:
                units = f"unit ids 1..{len(server.units)}"
                parts.append(PlantPart(f"Modbus {server.name}", server.endpoint, len(server.units), units))
        if self.opcua is not None:
            endpoint = f"opc.tcp://{config.host}:{self.opcua.port}{OPCUA_PATH}"
            parts.append(PlantPart("OPC UA reactor", endpoint, len(self.opcua.objects), "namespace index 2"))
        broker = config.broker_url
        if self.edge_node is not None:
            detail = f"group {config.group_id}, edge node {config.edge_node}"
            parts.append(PlantPart("Sparkplug B line", broker, 1 + len(self.edge_node.devices), detail))
        if self.sensors is not None:
            topic = f"iip/{config.tenant}/+/telemetry"
            parts.append(PlantPart("MQTT room sensors", broker, len(self.sensors.sensors), topic))
        if self.load is not None:
            links = (
                "one connection each" if not config.mqtt_connections else f"{self.load.stats.connections} connections"
            )
            detail = f"{config.mqtt_rate:g} msg/s each, {links}, keys {config.load_prefix}-00001..."
            parts.append(PlantPart("MQTT load devices", broker, self.load.count, detail))
        return parts
