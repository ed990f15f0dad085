"""The simulated plant: its signals, its registry document, and the plant running against real peers.

The running plant is read and written the way the platform and other tools reach devices: a
pymodbus client and the platform's Modbus driver, an asyncua client, a paho subscriber on the real
Mosquitto whose Sparkplug messages go through the platform's own host state machine. One plant
(each Sparkplug group and topic tenant unique to the run) is shared by the module; its signals
step every 0.1 s, ten simulated seconds per real second.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import pytest_asyncio
import typer
from asyncua import ua
from asyncua.client.client import Client as UaClient
from asyncua.ua.uaerrors import BadOutOfRange
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from typer.testing import CliRunner

from iip.devices.codecs import sparkplug as spb
from iip.devices.codecs.modbus import decode, encode
from iip.devices.codecs.mqtt_json import decode_message
from iip.devices.directory import KnownDevice
from iip.devices.drivers.base import create_driver
from iip.devices.ingest.sparkplug_host import SparkplugHost
from iip.devices.profiles import DeviceProfile, ModbusTable
from iip.devices.schemas import CONNECTION_MODELS
from iip.devices.service import DeviceRegistry, parse_document
from iip.devices.sim import PROFILES, PlantConfig, SimulatedPlant, plant_document, render_catalog
from iip.devices.sim.cli import sim_app
from iip.devices.sim.modbus_devices import ModbusUnit, SimulatedModbusServer
from iip.devices.sim.signals import (
    LINE_MACHINES,
    LineSignals,
    MachineState,
    PlantSignals,
    PowerMeterSignals,
    PumpSignals,
    ReactorSignals,
    Reading,
    SetpointError,
    apply_setpoints,
)
from iip.kernel.auth import AccessService, Principal, Role
from iip.kernel.db import Database
from iip.kernel.errors import Invalid, Unavailable
from tests.services import MQTT_HOST, MQTT_PORT, require_service

in_module_loop = pytest.mark.asyncio(loop_scope="module")
WAIT_S = 10.0
RUN = uuid.uuid4().hex[:8]
TENANT = f"sim-{RUN}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def until(condition: Callable[[], Any], what: str) -> Any:
    """Poll `condition` (without blocking the loop the plant runs in) until it gives something true."""
    deadline = time.monotonic() + WAIT_S
    while True:
        result = condition()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- signals, no I/O


def run_for(step: Callable[[float], None], seconds: float, dt: float = 1.0) -> None:
    for _ in range(round(seconds / dt)):
        step(dt)


def test_same_seed_same_signals_and_another_seed_others() -> None:
    def trace(seed: int) -> list[dict[str, Reading]]:
        plant = PlantSignals(seed, pumps=2, meters=3, reactor=True, line=True, sensors=2)
        out = []
        for _ in range(50):
            plant.step(1.0)
            out.append(plant.pumps[1].readings() | plant.meters[0].readings() | plant.reactor.readings())  # type: ignore[union-attr]
        return out

    assert trace(7) == trace(7)
    assert trace(7) != trace(8)


def test_pump_follows_its_speed_by_the_affinity_laws_and_stops() -> None:
    pump = PumpSignals("a")
    pump.apply({"speed_setpoint": 100.0})
    run_for(pump.step, 20)
    full = pump.readings()
    pump.apply({"speed_setpoint": 50.0})
    run_for(pump.step, 20)
    half = pump.readings()
    assert full["speed"] == 100.0
    assert half["speed"] == 50.0
    assert float(half["flow"]) == pytest.approx(float(full["flow"]) / 2, rel=0.05)  # flow ~ n
    head_full = float(full["discharge_pressure"]) - float(full["suction_pressure"])
    head_half = float(half["discharge_pressure"]) - float(half["suction_pressure"])
    assert head_half == pytest.approx(head_full / 4, rel=0.08)  # head ~ n²
    assert float(half["motor_current"]) < float(full["motor_current"]) / 3  # power ~ n³
    assert half["running"] is True
    assert half["fault"] is False
    pump.apply({"run": False})
    run_for(pump.step, 10)
    stopped = pump.readings()
    assert stopped["running"] is False
    assert stopped["flow"] == 0.0
    assert stopped["motor_current"] == 0.0
    assert stopped["speed_setpoint"] == 50.0  # kept for the next start


def test_pump_faults_show_in_flow_vibration_and_bearing_temperature() -> None:
    healthy, faulty = PumpSignals("b"), PumpSignals("b")
    run_for(healthy.step, 60)
    run_for(faulty.step, 60)
    faulty.inject_cavitation(120)
    run_for(healthy.step, 30)
    run_for(faulty.step, 30)
    assert faulty.cavitating
    assert faulty.fault
    assert not healthy.fault
    assert faulty.flow < healthy.flow * 0.92
    assert faulty.suction_pressure < healthy.suction_pressure - 0.2
    assert faulty.vibration > healthy.vibration + 1.0
    run_for(faulty.step, 120)
    assert faulty.cavitation_s == 0  # the episode ends
    faulty.inject_bearing_wear()
    before = (faulty.vibration, faulty.bearing_temperature)
    run_for(faulty.step, 14 * 3600, dt=60)  # the ramp reaches the alarm level in about 12 h
    assert faulty.vibration > before[0] + 3.0
    assert faulty.bearing_temperature > before[1] + 15.0
    assert faulty.fault


def test_meter_energy_only_increases_and_power_is_consistent() -> None:
    meter = PowerMeterSignals("m", rated_kw=50.0)
    energy = meter.energy
    for load in [30.0, 0.0, 55.0, 12.5] * 10:
        meter.step(2.0, load)
        readings = meter.readings()
        assert float(readings["energy"]) >= energy
        energy = float(readings["energy"])
        phases = sum(float(readings[f"voltage_l{n}"]) * float(readings[f"current_l{n}"]) for n in (1, 2, 3)) * float(
            readings["power_factor"]
        )
        assert phases / 1000 == pytest.approx(load, rel=0.05, abs=1e-9)
        assert 210 < float(readings["voltage_l1"]) < 240
        assert 49.8 < float(readings["frequency"]) < 50.2
    assert energy == pytest.approx(meter.readings()["energy"])
    before = meter.energy
    meter.step(3600.0, 40.0)
    assert meter.energy - before == pytest.approx(40.0)  # one hour at 40 kW


def test_reactor_holds_and_then_follows_its_setpoint() -> None:
    reactor = ReactorSignals(3)
    run_for(reactor.step, 600)
    assert reactor.temperature == pytest.approx(78.0, abs=1.0)
    assert reactor.phase == "REACTING"
    reactor.apply({"temperature_setpoint": 95.0})
    reactor.step(1.0)
    assert reactor.jacket_valve > 90  # steam
    assert reactor.phase == "HEATING"
    run_for(reactor.step, 1200)
    assert reactor.temperature == pytest.approx(95.0, abs=1.0)
    assert float(reactor.readings()["pressure"]) > 1.6  # vapour pressure rises with temperature
    reactor.apply({"temperature_setpoint": 60.0})
    reactor.step(1.0)
    assert reactor.jacket_valve < 10  # cooling water
    run_for(reactor.step, 1800)
    assert reactor.temperature == pytest.approx(60.0, abs=1.0)
    assert 40 < reactor.level < 80


def test_line_counts_only_grow_faults_starve_the_machines_after_and_oee_stays_in_range() -> None:
    line = LineSignals(5, random_faults=False)
    counts = {m.spec.device_id: (0, 0) for m in line.machines}
    for second in range(600):
        if second == 200:
            line.machine("capper").inject_fault(60.0)
        line.step(1.0)
        if second == 210:
            states = [m.state for m in line.machines]
            assert states[:3] == [MachineState.RUNNING, MachineState.FAULT, MachineState.STARVED]
            assert line.readings()["line_state"] == MachineState.FAULT
        for machine in line.machines:
            good, reject = counts[machine.spec.device_id]
            assert machine.good_count >= good
            assert machine.reject_count >= reject
            counts[machine.spec.device_id] = (machine.good_count, machine.reject_count)
            assert all(0 <= v <= 100 for v in machine.oee())
    filler, capper = line.machine("filler"), line.machine("capper")
    assert capper.state == MachineState.RUNNING
    assert capper.fault_code == 0
    assert filler.good_count > 2000
    assert capper.oee()[0] < 95  # the fault cost availability
    assert capper.oee()[3] == pytest.approx(capper.oee()[0] * capper.oee()[1] * capper.oee()[2] / 10_000)
    filler.apply({"run": False})
    line.step(1.0)
    assert filler.state == MachineState.STOPPED
    assert line.state == MachineState.STOPPED


def test_setpoints_are_checked_all_or_nothing() -> None:
    pump = PumpSignals("c")
    before = pump.readings()
    for changes, message in [
        ({"speed_setpoint": 50.0, "run": 7}, "run takes true or false"),
        ({"speed_setpoint": 101.0}, r"within 0\.\.100"),
        ({"speed_setpoint": float("nan")}, "takes a number"),
        ({"flow": 3.0}, "flow cannot be written"),
    ]:
        with pytest.raises(SetpointError, match=message):
            pump.apply(changes)
    assert pump.readings() == before
    with pytest.raises(SetpointError, match="cannot be written"):
        apply_setpoints(object(), {"x": 1}, {})


# --------------------------------------------------------------------------- the registry document


def test_profiles_validate_and_every_metric_has_a_signal() -> None:
    plant = PlantSignals(1, pumps=1, meters=2, reactor=True, line=True, sensors=1)
    models = {
        "sim-pump": plant.pumps[0].readings(),
        "sim-power-meter": plant.meters[1].readings(),
        "sim-reactor": plant.reactor.readings(),  # type: ignore[union-attr]
        "sim-packaging-machine": plant.line.machines[0].readings(),  # type: ignore[union-attr]
        "sim-packaging-line": plant.line.readings(),  # type: ignore[union-attr]
    }
    for name, readings in models.items():
        assert {m.name for m in PROFILES[name].metrics} == set(readings), name
    sensor_keys = {m.mqtt.key for m in PROFILES["sim-room-sensor"].metrics if m.mqtt}
    assert sensor_keys == set(plant.sensors[0].readings())


def test_document_validates_as_profiles_and_connections() -> None:
    config = PlantConfig(tenant="acme", pump_port=1502, meter_port=1503, opcua_port=4841, mqtt_devices=3)
    document = plant_document(config)
    profiles = {p["name"]: DeviceProfile.model_validate(p) for p in document["profiles"]}
    assert profiles == {name: PROFILES[name] for name in profiles}
    keys = [d["key"] for d in document["devices"]]
    assert len(keys) == len(set(keys)) == 6 + 7 + 1 + 6 + 10 + 3
    for device in document["devices"]:
        CONNECTION_MODELS[profiles[device["profile"]].protocol].model_validate(device.get("connection", {}))
    by_key = {d["key"]: d for d in document["devices"]}
    assert by_key["pump-03"]["connection"] == {"host": "127.0.0.1", "port": 1502, "unit_id": 3}
    assert by_key["meter-01"]["connection"]["port"] == 1503
    assert by_key["reactor-01"]["connection"] == {"endpoint": "opc.tcp://127.0.0.1:4841/iip/sim/"}
    assert by_key["line-1"]["sparkplug"] == {"group_id": "iip-sim-acme", "edge_node_id": "line-1"}
    assert by_key["line-1-filler"]["sparkplug"]["device_id"] == "filler"
    assert by_key["load-00003"]["profile"] == "sim-load-sensor"
    # The YAML a user reads is the same document, with a header saying how to use it.
    text = render_catalog(config)
    assert text.startswith("# The simulated plant")
    assert parse_document(text) == document
    # Without a broker, nothing that publishes over MQTT is in it.
    offline = plant_document(config.model_copy(update={"broker_url": ""}))
    assert {d["profile"] for d in offline["devices"]} == {"sim-pump", "sim-power-meter", "sim-reactor"}


def test_bad_configurations_are_refused_with_the_reason() -> None:
    with pytest.raises(ValidationError, match="must look like mqtt://"):
        PlantConfig(broker_url="http://broker")
    with pytest.raises(ValidationError, match="tenant names"):
        PlantConfig(tenant="Not A Tenant")
    with pytest.raises(ValidationError, match="Sparkplug id"):
        PlantConfig(sparkplug_group="a/b")
    with pytest.raises(Invalid, match="device key 'env-01' would be used twice"):
        plant_document(PlantConfig(edge_node="env-01"))
    with pytest.raises(Invalid, match="would be used twice"):
        plant_document(PlantConfig(edge_node="pump-01"))


def test_document_imports_into_the_registry_and_again_changes_nothing(migrated_db: Database) -> None:
    config = PlantConfig(tenant=f"t-{uuid.uuid4().hex[:8]}", mqtt_devices=2)
    with migrated_db.session() as session:
        tenant = AccessService(session).create_tenant(config.tenant)
        actor = Principal("apikey", "test", tenant.name, tenant.id, Role.ADMIN)
        first = DeviceRegistry(session, actor).import_document(plant_document(config))
    assert sorted(first.profiles.created) == sorted(PROFILES)
    assert len(first.devices.created) == 6 + 7 + 1 + 6 + 10 + 2
    with migrated_db.session() as session:
        again = DeviceRegistry(session, actor).import_document(plant_document(config))
        exported = DeviceRegistry(session, actor).export_document()
    assert not again.profiles.created
    assert not again.profiles.updated
    assert not again.devices.created
    assert not again.devices.updated
    assert {d["key"] for d in exported["devices"]} == {d["key"] for d in plant_document(config)["devices"]}


# --------------------------------------------------------------------------- the running plant


class Subscriber:
    """A paho subscriber in its own thread, recording every message in order."""

    def __init__(self, *topics: str) -> None:
        require_service("Mosquitto", MQTT_HOST, MQTT_PORT)
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sim-test-{uuid.uuid4().hex[:8]}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.connect(MQTT_HOST, MQTT_PORT)
        self.client.loop_start()
        self.client.subscribe([(topic, 1) for topic in topics])
        assert self._subscribed.wait(WAIT_S), "no SUBACK"

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload)))

    def received(self, prefix: str = "") -> list[tuple[str, bytes]]:
        with self._lock:
            return [(t, p) for t, p in self.messages if t.startswith(prefix)]

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(WAIT_S)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def sparkplug_of(messages: list[tuple[str, bytes]]) -> list[tuple[spb.EdgeTopic, spb.Payload]]:
    out = []
    for topic, data in messages:
        parsed = spb.parse_topic(topic)
        if isinstance(parsed, spb.EdgeTopic):
            out.append((parsed, spb.decode_payload(data)))
    return out


def seq_of(payload: spb.Payload) -> int:
    assert payload.seq is not None
    return payload.seq


def bd_seq_of(payload: spb.Payload) -> int:
    metric = payload.metric(spb.BD_SEQ_METRIC)
    assert metric is not None
    assert metric.datatype is spb.DataType.UINT64
    assert isinstance(metric.value, int)
    return metric.value


class Directory:
    """The plant's devices as ingest finds them, from its registry document."""

    def __init__(self, config: PlantConfig) -> None:
        self.by_key: dict[str, KnownDevice] = {}
        self.sparkplug: dict[tuple[str, str, str | None], KnownDevice] = {}
        for entry in plant_document(config)["devices"]:
            known = KnownDevice.of(config.tenant, entry["key"], PROFILES[entry["profile"]])
            self.by_key[entry["key"]] = known
            if "sparkplug" in entry:
                ids = entry["sparkplug"]
                self.sparkplug[(ids["group_id"], ids["edge_node_id"], ids.get("device_id"))] = known

    def by_name(self, tenant: str, device: str) -> KnownDevice | None:
        return self.by_key.get(device)

    def by_token(self, token: str) -> KnownDevice | None:
        return None

    def by_sparkplug(self, group_id: str, edge_node_id: str, device_id: str | None) -> KnownDevice | None:
        return self.sparkplug.get((group_id, edge_node_id, device_id))


PLANT = PlantConfig(
    tenant=TENANT,
    pumps=5,  # one per test that reads or changes one
    meters=3,
    sensors=3,
    pump_port=0,
    meter_port=0,
    opcua_port=0,
    broker_url=f"mqtt://{MQTT_HOST}:{MQTT_PORT}",
    period_s=0.1,
    time_scale=10.0,
    seed=11,
    faults=False,  # the tests below inject the faults they need
)


@pytest.fixture(scope="module")
def subscriber() -> Iterator[Subscriber]:
    client = Subscriber(f"spBv1.0/{PLANT.group_id}/#", f"iip/{TENANT}/+/telemetry")
    yield client
    client.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def plant(subscriber: Subscriber) -> AsyncIterator[SimulatedPlant]:
    async with SimulatedPlant(PLANT) as running:
        yield running


class Modbus:
    """A pymodbus client decoding a device's registers through its profile."""

    def __init__(self, port: int, unit_id: int, profile: DeviceProfile) -> None:
        self.client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, reconnect_delay=0)
        self.unit_id = unit_id
        self.profile = profile

    async def __aenter__(self) -> Modbus:
        assert await self.client.connect()
        return self

    async def __aexit__(self, *_: object) -> None:
        self.client.close()

    async def read(self) -> dict[str, Any]:
        """Every metric of the profile, one request per table."""
        c, unit = self.client, self.unit_id
        readers: dict[ModbusTable, Callable[..., Awaitable[Any]]] = {
            ModbusTable.HOLDING: c.read_holding_registers,
            ModbusTable.INPUT: c.read_input_registers,
            ModbusTable.COIL: c.read_coils,
            ModbusTable.DISCRETE: c.read_discrete_inputs,
        }
        mappings = {m.name: m.modbus for m in self.profile.metrics if m.modbus is not None}
        values = {}
        for table, reader in readers.items():
            ends = [m.address + max(m.register_count, 1) for m in mappings.values() if m.table is table]
            if not ends:
                continue
            response = await reader(0, count=max(ends), device_id=unit)
            assert not response.isError(), response
            raw = response.bits if table in {ModbusTable.COIL, ModbusTable.DISCRETE} else response.registers
            for name, mapping in mappings.items():
                if mapping.table is table:
                    values[name] = decode(
                        mapping, raw[mapping.address : mapping.address + max(mapping.register_count, 1)]
                    )
        return values

    async def write(self, metric: str, value: float | bool) -> Any:
        spec = self.profile.metric(metric)
        assert spec is not None
        assert spec.modbus is not None
        if spec.modbus.table is ModbusTable.COIL:
            return await self.client.write_coil(spec.modbus.address, bool(value), device_id=self.unit_id)
        registers = encode(spec.modbus, value)
        return await self.client.write_registers(spec.modbus.address, registers, device_id=self.unit_id)


def pump(plant: SimulatedPlant, unit_id: int) -> Modbus:
    return Modbus(plant.config.pump_port, unit_id, PROFILES["sim-pump"])


async def later(plant: SimulatedPlant, steps: int = 3) -> None:
    """Wait until the plant has stepped `steps` more times."""
    target = plant.steps + steps
    await until(lambda: plant.steps >= target, f"{steps} steps of the plant")


@in_module_loop
async def test_a_pump_read_through_its_profile_is_plausible(plant: SimulatedPlant) -> None:
    async with pump(plant, 1) as client:
        values = await client.read()
    assert 65.0 <= values["speed_setpoint"] <= 90.0
    assert values["speed"] == pytest.approx(values["speed_setpoint"], abs=0.2)
    assert values["run"] is True
    assert values["running"] is True
    assert values["fault"] is False
    rated = values["speed"] / 100 * 120.0
    assert values["flow"] == pytest.approx(rated, rel=0.05)  # float32, big word order
    head = values["discharge_pressure"] - values["suction_pressure"]  # float32 word-swapped, int16 x 0.001
    assert head == pytest.approx(6.0 * (values["speed"] / 100) ** 2, rel=0.05)
    assert 5.0 < values["motor_current"] < 80.0
    assert 0.5 < values["vibration"] < 7.1
    assert 25.0 < values["bearing_temperature"] < 70.0
    assert 2_000 <= values["run_hours"] <= 30_001


@in_module_loop
async def test_a_speed_setpoint_written_over_modbus_takes_effect(plant: SimulatedPlant) -> None:
    async with pump(plant, 2) as client:
        before = await client.read()
        response = await client.write("speed_setpoint", 30.0)
        assert not response.isError()
        assert (await client.read())["speed_setpoint"] == 30.0
        model = plant.model("pump-02")
        await until(lambda: model.readings()["speed"] == 30.0, "the drive's ramp to 30 %")
        after = await client.read()
        assert after["speed"] == pytest.approx(30.0, abs=0.2)
        assert after["flow"] == pytest.approx(36.0, rel=0.05)
        assert after["motor_current"] < before["motor_current"] / 5
        assert (await client.write("run", False)).isError() is False
        await until(lambda: model.readings()["running"] is False, "the pump to stop")
        stopped = await client.read()
    assert stopped["run"] is False
    assert stopped["running"] is False
    assert stopped["flow"] == 0.0
    assert stopped["motor_current"] == 0.0


@in_module_loop
async def test_a_cavitating_pump_shows_its_fault_over_modbus(plant: SimulatedPlant) -> None:
    model = plant.model("pump-05")
    assert isinstance(model, PumpSignals)
    async with pump(plant, 5) as client:
        healthy = await client.read()
        model.inject_cavitation(600.0)
        await later(plant, 2)
        cavitating = await client.read()
    assert healthy["fault"] is False
    assert cavitating["fault"] is True  # discrete input 1
    assert cavitating["flow"] < healthy["flow"] * 0.92
    assert cavitating["suction_pressure"] < healthy["suction_pressure"] - 0.2
    assert cavitating["vibration"] > healthy["vibration"] + 1.0


@in_module_loop
async def test_bad_writes_are_refused_and_change_nothing(plant: SimulatedPlant) -> None:
    async with pump(plant, 3) as client:
        before = await client.read()
        refused = await client.write("speed_setpoint", 150.0)
        assert refused.isError()
        assert refused.exception_code == ExcCodes.ILLEGAL_VALUE
        assert (await client.read())["speed_setpoint"] == before["speed_setpoint"]
        beyond = await client.client.write_registers(0, [0, 0, 0], device_id=3)  # past the setpoint
        assert beyond.isError()
        assert beyond.exception_code == ExcCodes.ILLEGAL_ADDRESS
        nobody = await client.client.read_input_registers(0, count=2, device_id=99)
        assert nobody.isError()
        assert nobody.exception_code == ExcCodes.GATEWAY_NO_RESPONSE


async def test_a_write_touching_a_read_only_register_is_refused() -> None:
    class Model:
        def __init__(self) -> None:
            self.values: dict[str, Reading] = {"setpoint": 5.0, "measured": 7.0}

        def readings(self) -> dict[str, Reading]:
            return dict(self.values)

        def apply(self, changes: Any) -> None:
            apply_setpoints(self, changes, {"setpoint": (0.0, 10.0)})
            self.values.update(changes)

    profile = DeviceProfile.model_validate(
        {
            "name": "p",
            "protocol": "modbus",
            "metrics": [
                {"name": "setpoint", "writable": True, "modbus": {"address": 0, "scale": 0.1}},
                {"name": "measured", "modbus": {"address": 1, "scale": 0.1}},
            ],
        }
    )
    model = Model()
    server = SimulatedModbusServer("test", "127.0.0.1", 0, [ModbusUnit(1, "p-1", profile, model)])
    await server.start()
    try:
        async with Modbus(server.port, 1, profile) as client:
            both = await client.client.write_registers(0, [80, 90], device_id=1)
            assert both.isError()
            assert both.exception_code == ExcCodes.ILLEGAL_ADDRESS
            assert model.values == {"setpoint": 5.0, "measured": 7.0}
            assert not (await client.client.write_register(0, 80, device_id=1)).isError()
            assert model.values["setpoint"] == pytest.approx(8.0)
            read = await client.client.read_holding_registers(0, count=2, device_id=1)
            assert read.registers == [80, 70]
    finally:
        await server.stop()


@in_module_loop
async def test_meters_count_energy_and_the_main_incomer_carries_the_pumps(plant: SimulatedPlant) -> None:
    async with Modbus(plant.config.meter_port, 1, PROFILES["sim-power-meter"]) as main:
        first = await main.read()
        await later(plant, 3)
        second = await main.read()
    assert second["energy"] > first["energy"]  # uint32 x 0.01, word-swapped
    assert second["reactive_energy"] > first["reactive_energy"]
    pumps_kw = sum(p.power_kw for p in plant.signals.pumps)
    assert second["active_power"] > pumps_kw  # plus the building
    per_phase = sum(second[f"voltage_l{n}"] * second[f"current_l{n}"] for n in (1, 2, 3))
    assert per_phase * second["power_factor"] / 1000 == pytest.approx(second["active_power"], rel=0.01)


@in_module_loop
async def test_the_platform_driver_reads_and_writes_a_pump_from_its_registry_entry(plant: SimulatedPlant) -> None:
    entry = next(d for d in plant.document()["devices"] if d["key"] == "pump-04")
    driver = create_driver("modbus", PROFILES["sim-pump"], {**entry["connection"], "timeout_s": 2})
    async with driver:
        readings = {r.metric: r for r in await driver.read()}
        assert {r.quality for r in readings.values()} == {0}
        assert set(readings) == {m.name for m in PROFILES["sim-pump"].metrics}
        await driver.write("speed_setpoint", 55.5, timeout=2)  # confirmed by reading it back
        assert plant.model("pump-04").readings()["speed_setpoint"] == 55.5


@in_module_loop
async def test_the_reactor_over_opcua(plant: SimulatedPlant) -> None:
    profile = PROFILES["sim-reactor"]
    node_ids = {m.name: m.opcua.node_id for m in profile.metrics if m.opcua}
    client = UaClient(plant.config.opcua_endpoint, timeout=4)
    async with client:

        async def read() -> dict[str, Any]:
            nodes = [client.get_node(node_ids[name]) for name in node_ids]
            return dict(zip(node_ids, await client.read_values(nodes), strict=True))

        values = await read()
        assert values["temperature"] == pytest.approx(78.0, abs=2.0)
        assert values["temperature_setpoint"] == 78.0
        assert 0 <= values["jacket_valve"] <= 100
        assert 40 <= values["level"] <= 80
        assert 1.0 < values["pressure"] < 2.5
        assert values["phase"] == "REACTING"
        setpoint = client.get_node(node_ids["temperature_setpoint"])
        await setpoint.write_value(ua.Variant(92.0, ua.VariantType.Double))
        await until(lambda: plant.model("reactor-01").readings()["temperature_setpoint"] == 92.0, "the new setpoint")
        await later(plant, 3)
        heating = await read()
        assert heating["temperature_setpoint"] == 92.0
        assert heating["jacket_temperature"] > values["jacket_temperature"] + 5  # the PI loop opened the steam
        with pytest.raises(BadOutOfRange):
            await setpoint.write_value(ua.Variant(500.0, ua.VariantType.Double))
        assert await setpoint.read_value() == 92.0
        assert plant.model("reactor-01").readings()["temperature_setpoint"] == 92.0


@in_module_loop
async def test_sparkplug_births_data_by_alias_and_seq_are_what_the_host_accepts(
    plant: SimulatedPlant, subscriber: Subscriber
) -> None:
    prefix = f"spBv1.0/{PLANT.group_id}/"
    await later(plant, 5)
    commands = {spb.MessageType.NCMD, spb.MessageType.DCMD}  # other tests' commands, if they ran first
    messages = [m for m in sparkplug_of(subscriber.received(prefix)) if m[0].message_type not in commands]
    kinds = [topic.message_type for topic, _ in messages]
    assert kinds[: 1 + len(LINE_MACHINES)] == [spb.MessageType.NBIRTH] + [spb.MessageType.DBIRTH] * len(LINE_MACHINES)
    assert spb.MessageType.DDATA in kinds
    nbirth = messages[0][1]
    assert nbirth.seq == 0
    assert nbirth.metric(spb.BD_SEQ_METRIC) is not None
    assert nbirth.metric(spb.REBIRTH_METRIC) is not None
    # seq goes up by one with every message, wrapping at 256, and starts again at 0 with an NBIRTH
    for (_, before), (topic, payload) in itertools.pairwise(messages):
        expected = 0 if topic.message_type is spb.MessageType.NBIRTH else (seq_of(before) + 1) % 256
        assert seq_of(payload) == expected
    # DATA names nothing: every alias it uses was defined by the birth of its device
    births = {
        topic.device_id: {m.alias: m for m in p.metrics} for topic, p in messages if "BIRTH" in topic.message_type
    }
    aliases = [m.alias for born in births.values() for m in born.values() if m.alias is not None]
    assert len(aliases) == len(set(aliases))  # unique across the edge node
    for topic, payload in messages:
        if topic.message_type in {spb.MessageType.DDATA, spb.MessageType.NDATA}:
            assert all(m.name is None and m.alias in births[topic.device_id] for m in payload.metrics)
    # the platform's host takes every message: no rejection, points under the profile's metric names
    directory = Directory(plant.config)
    host = SparkplugHost("test", directory, lambda: int(time.time() * 1000), 300_000)
    points: dict[str, set[str]] = {}
    for raw_topic, data in subscriber.received(prefix):
        outcome = host.on_message(raw_topic, data)
        assert not outcome.rejected
        assert not outcome.publish
        for device, metric, *_ in outcome.points:
            points.setdefault(device.key, set()).add(metric)
        for device, name, _ in outcome.attributes:
            points.setdefault(device.key, set()).add(name)
    assert points["line-1-filler"] == {m.name for m in PROFILES["sim-packaging-machine"].metrics}
    assert points["line-1"] == {"line_state", "line_speed", "uptime"}


@in_module_loop
async def test_a_rebirth_request_gives_a_new_nbirth_and_dbirths(plant: SimulatedPlant, subscriber: Subscriber) -> None:
    prefix = f"spBv1.0/{PLANT.group_id}/"
    assert plant.edge_node is not None
    first = sparkplug_of(subscriber.received(prefix))[0][1]
    seen, births = len(subscriber.received(prefix)), plant.edge_node.stats.births
    host = SparkplugHost("test", Directory(plant.config), lambda: int(time.time() * 1000), 300_000)
    topic, payload = host.rebirth_request(PLANT.group_id, PLANT.edge_node)
    await asyncio.to_thread(subscriber.publish, topic, payload)

    def new_births() -> list[tuple[spb.EdgeTopic, spb.Payload]]:
        fresh = sparkplug_of(subscriber.received(prefix)[seen:])
        born = [m for m in fresh if "BIRTH" in m[0].message_type]
        return born if len(born) == 1 + len(LINE_MACHINES) else []

    born = await until(new_births, "NBIRTH and DBIRTHs after the rebirth request")
    nbirth = born[0][1]
    assert born[0][0].message_type is spb.MessageType.NBIRTH
    assert nbirth.seq == 0
    assert bd_seq_of(nbirth) == bd_seq_of(first)
    assert [p.seq for _, p in born] == list(range(1 + len(LINE_MACHINES)))
    assert plant.edge_node.stats.births == births + 1


@in_module_loop
async def test_a_dcmd_is_applied_and_reported_in_the_next_ddata(plant: SimulatedPlant, subscriber: Subscriber) -> None:
    prefix = f"spBv1.0/{PLANT.group_id}/"
    births = [(t, p) for t, p in sparkplug_of(subscriber.received(prefix)) if t.message_type is spb.MessageType.DBIRTH]
    capper_birth = [p for t, p in births if t.device_id == "capper"][-1]
    setpoint = capper_birth.metric("Speed Setpoint")
    assert setpoint is not None
    assert setpoint.alias is not None
    assert plant.edge_node is not None
    seen, refusals = len(subscriber.received(prefix)), plant.edge_node.stats.refused_commands
    command = spb.Metric(
        name="Speed Setpoint", timestamp=int(time.time() * 1000), datatype=spb.DataType.DOUBLE, value=240.0
    )
    topic = f"{prefix}DCMD/{PLANT.edge_node}/capper"
    await asyncio.to_thread(subscriber.publish, topic, spb.encode_payload(spb.Payload(metrics=(command,))))

    def reported() -> list[float]:
        return [
            m.value  # type: ignore[misc]
            for t, p in sparkplug_of(subscriber.received(prefix)[seen:])
            if t.message_type is spb.MessageType.DDATA and t.device_id == "capper"
            for m in p.metrics
            if m.alias == setpoint.alias
        ]

    assert (await until(reported, "the new setpoint in a DDATA"))[0] == 240.0
    assert plant.model("line-1-capper").readings()["speed_setpoint"] == 240.0
    # the same value again is reported again: the report acknowledges the command
    await asyncio.to_thread(subscriber.publish, topic, spb.encode_payload(spb.Payload(metrics=(command,))))
    await until(lambda: len(reported()) == 2, "the unchanged setpoint reported again")
    refused = spb.Metric(name="Count/Good", datatype=spb.DataType.UINT64, value=0)  # not writable
    await asyncio.to_thread(subscriber.publish, topic, spb.encode_payload(spb.Payload(metrics=(refused,))))
    await until(lambda: plant.edge_node.stats.refused_commands == refusals + 1, "the refusal")  # type: ignore[union-attr]
    assert int(plant.model("line-1-capper").readings()["good_count"]) > 0


@in_module_loop
async def test_room_sensors_publish_json_the_platform_decodes(plant: SimulatedPlant, subscriber: Subscriber) -> None:
    prefix = f"iip/{TENANT}/env-"
    await until(lambda: {t for t, _ in subscriber.received(prefix)} == {
        f"iip/{TENANT}/env-0{i}/telemetry" for i in (1, 2, 3)
    }, "messages of the three sensors")  # fmt: skip
    directory = Directory(plant.config)
    now = int(time.time() * 1000)
    for topic, payload in subscriber.received(prefix)[:6]:
        document = json.loads(payload)
        assert set(document) == {"ts", "values"}
        assert abs(document["ts"] - now) < 60_000
        outcome = decode_message(topic, payload, directory, now_ms=now, max_future_ms=300_000)
        assert not outcome.rejected
        assert {metric for _, metric, *_ in outcome.points} == {"temperature", "humidity", "co2", "battery"}
        values = {metric: value for _, metric, _, value, _ in outcome.points}
        assert 10 < values["temperature"] < 35
        assert 5 <= values["humidity"] <= 95
        assert values["co2"] >= 400
    assert plant.mqtt_stats.dropped == 0


@in_module_loop
async def test_summary_and_document_name_the_ports_in_use(plant: SimulatedPlant) -> None:
    config = plant.config
    assert 0 not in {config.pump_port, config.meter_port, config.opcua_port}
    lines = [part.describe() for part in plant.summary()]
    assert any(f"modbus://127.0.0.1:{config.pump_port}" in line and "5 devices" in line for line in lines)
    assert any(config.opcua_endpoint.replace("/iip/sim/", "") in line for line in lines)
    assert any(f"group {PLANT.group_id}" in line for line in lines)
    entries = {d["key"]: d for d in plant.document()["devices"]}
    assert entries["meter-02"]["connection"]["port"] == config.meter_port


# --------------------------------------------------------------------------- one part at a time


@in_module_loop
@pytest.mark.parametrize("connections", [0, 2], ids=["one-per-device", "shared"])
async def test_many_lightweight_devices_publish_from_every_device(connections: int) -> None:
    tenant = f"load-{uuid.uuid4().hex[:8]}"
    count = 40
    config = PlantConfig(
        tenant=tenant,
        pumps=0,
        meters=0,
        reactor=False,
        packaging_line=False,
        sensors=0,
        broker_url=f"mqtt://{MQTT_HOST}:{MQTT_PORT}",
        mqtt_devices=count,
        mqtt_rate=5.0,
        mqtt_connections=connections,
    )
    subscriber = Subscriber(f"iip/{tenant}/+/telemetry")
    try:
        async with SimulatedPlant(config) as plant:
            assert plant.load is not None
            expected = {f"iip/{tenant}/load-{i:05d}/telemetry" for i in range(1, count + 1)}
            await until(lambda: {t for t, _ in subscriber.received()} == expected, "a message from every device")
            stats = plant.load.stats
            assert stats.connections == (connections or count)
            await until(lambda: stats.acknowledged >= count, "PUBACKs")
            assert stats.connected == stats.connections
    finally:
        subscriber.close()
    directory = Directory(config)
    topic, payload = subscriber.received()[0]
    outcome = decode_message(topic, payload, directory, now_ms=int(time.time() * 1000), max_future_ms=300_000)
    assert not outcome.rejected
    assert {m for _, m, *_ in outcome.points} == {"temperature", "humidity"}


@in_module_loop
async def test_a_clean_stop_publishes_ndeath_with_the_births_bdseq() -> None:
    group = f"iip-sim-t-{uuid.uuid4().hex[:8]}"
    config = PlantConfig(
        tenant=TENANT,
        pumps=0,
        meters=0,
        reactor=False,
        sensors=0,
        sparkplug_group=group,
        broker_url=f"mqtt://{MQTT_HOST}:{MQTT_PORT}",
    )
    subscriber = Subscriber(f"spBv1.0/{group}/#")
    try:
        async with SimulatedPlant(config) as plant:
            assert plant.edge_node is not None
            await asyncio.wait_for(plant.edge_node.wait_born(), WAIT_S)
        death = await until(
            lambda: [p for t, p in sparkplug_of(subscriber.received()) if t.message_type is spb.MessageType.NDEATH],
            "NDEATH",
        )
    finally:
        subscriber.close()
    birth = sparkplug_of(subscriber.received())[0][1]
    assert bd_seq_of(death[0]) == bd_seq_of(birth)


@in_module_loop
async def test_with_a_primary_host_the_line_is_born_while_the_host_is_online() -> None:
    group, host_id = f"iip-sim-t-{uuid.uuid4().hex[:8]}", f"host-{uuid.uuid4().hex[:8]}"
    config = PlantConfig(
        tenant=TENANT,
        pumps=0,
        meters=0,
        reactor=False,
        sensors=0,
        sparkplug_group=group,
        primary_host_id=host_id,
        broker_url=f"mqtt://{MQTT_HOST}:{MQTT_PORT}",
    )
    subscriber = Subscriber(f"spBv1.0/{group}/#")
    state_topic = str(spb.StateTopic(host_id))

    async def host_state(online: bool, timestamp: int) -> None:
        """As a host announces itself: retained, so a node subscribing later learns it too."""
        await asyncio.to_thread(subscriber.publish, state_topic, spb.encode_state(online, timestamp), retain=True)

    def of_type(kind: spb.MessageType) -> list[spb.Payload]:
        return [p for t, p in sparkplug_of(subscriber.received()) if t.message_type is kind]

    try:
        async with SimulatedPlant(config) as plant:
            node = plant.edge_node
            assert node is not None
            await until(lambda: node.stats.connections == 1, "the connection")
            assert not node.born  # connected and subscribed, but the host has said nothing
            now = int(time.time() * 1000)
            await host_state(True, now)
            first = (await until(lambda: of_type(spb.MessageType.NBIRTH), "NBIRTH once the host is online"))[0]
            await host_state(False, now + 1)
            death = (await until(lambda: of_type(spb.MessageType.NDEATH), "NDEATH when the host goes offline"))[0]
            await until(lambda: node.stats.connections == 2, "the reconnection")
            assert not node.born
            await host_state(True, now + 2)
            births = await until(lambda: of_type(spb.MessageType.NBIRTH)[1:], "NBIRTH when the host is back")
    finally:
        subscriber.publish(state_topic, b"", retain=True)  # clears the retained STATE
        subscriber.close()
    assert bd_seq_of(death) == bd_seq_of(first)
    assert bd_seq_of(births[0]) == (bd_seq_of(first) + 1) % 256  # a new connection, a new bdSeq


@in_module_loop
async def test_a_port_in_use_is_a_readable_error_and_nothing_keeps_running() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = int(taken.getsockname()[1])
        pumps = free_port()
        plant = SimulatedPlant(PlantConfig(pump_port=pumps, meter_port=busy, reactor=False, broker_url=""))
        with pytest.raises(Unavailable, match=f"Modbus power meters cannot listen on 127.0.0.1:{busy}"):
            await plant.start()
    with pytest.raises(OSError, match="refused"):
        socket.create_connection(("127.0.0.1", pumps), timeout=1).close()  # the pumps were stopped again


# --------------------------------------------------------------------------- the command line


@pytest.fixture
def iip() -> Callable[..., Any]:
    root = typer.Typer()
    root.add_typer(sim_app, name="sim")
    return lambda *args: CliRunner().invoke(root, ["sim", *args])


def test_catalog_prints_the_document(iip: Callable[..., Any], tmp_path: Path) -> None:
    result = iip("catalog", "--tenant", "acme", "--format", "json", "--modbus-port", "1502", "--no-reactor")
    assert result.exit_code == 0, result.output
    expected = plant_document(PlantConfig(tenant="acme", pump_port=1502, meter_port=1503, reactor=False))
    assert json.loads(result.stdout) == expected
    result = iip("catalog", "--tenant", "acme", str(tmp_path / "plant.yaml"))
    assert result.exit_code == 0
    assert "wrote" in result.stdout
    assert parse_document((tmp_path / "plant.yaml").read_text()) == plant_document(PlantConfig(tenant="acme"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["catalog", "--pumps", "300"], "error: --pumps: Input should be less than or equal to 247"),
        (["catalog", "--format", "xml"], "error: --format: unknown format 'xml'"),
        (["catalog", "--tenant", "Bad Name"], "error: --tenant: tenant names use lower-case"),
        (["run", "--broker", "ftp://x", "--duration", "1"], "error: --broker: must look like mqtt://"),
        (["run", "--modbus-port", "65535"], "error: --modbus-port: the power meters need the next port"),
    ],
    ids=["pumps", "format", "tenant", "broker", "modbus-port"],
)
def test_bad_options_give_one_line(iip: Callable[..., Any], args: list[str], message: str) -> None:
    result = iip(*args)
    assert result.exit_code == 2
    assert result.stderr.strip().startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1


def test_run_serves_for_a_while_and_writes_the_document(iip: Callable[..., Any], tmp_path: Path) -> None:
    require_service("Mosquitto", MQTT_HOST, MQTT_PORT)
    path = tmp_path / "plant.yaml"
    result = iip(
        "run", "--tenant", f"cli-{RUN}", "--broker", f"mqtt://{MQTT_HOST}:{MQTT_PORT}", "--modbus-port", "0",
        "--no-reactor", "--pumps", "2", "--meters", "1", "--sensors", "1", "--duration", "0.5", "--period", "0.1",
        "--document", str(path),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Modbus pumps: modbus://127.0.0.1:" in result.stdout
    assert "Sparkplug B line" in result.stdout
    assert "simulated plant running for 0.5 s" in result.stdout
    assert result.stdout.strip().splitlines()[-1].startswith("steps ")
    document = parse_document(path.read_text())
    ports = {d["connection"]["port"] for d in document["devices"] if d["profile"] == "sim-pump"}
    assert len(ports) == 1
    assert ports != {0}
