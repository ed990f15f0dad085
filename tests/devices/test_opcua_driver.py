"""The OPC UA driver against a real asyncua server: reads, subscriptions, reconnects, writes.

An asyncua server takes seconds to build its standard address space, so the module shares one
(and one event loop); each test uses its own variables.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from asyncua import ua
from asyncua.common.node import Node
from asyncua.server.server import Server
from asyncua.ua.status_codes import StatusCodes

from iip.devices.drivers.base import CommandRejected, DeviceUnavailable, Reading, create_driver
from iip.devices.drivers.opcua import OpcUaConnection, OpcUaDriver
from iip.devices.drivers.runner import DeviceRunner
from iip.devices.profiles import DeviceProfile
from iip.kernel.errors import Invalid
from iip.telemetry.public import Quality

in_module_loop = pytest.mark.asyncio(loop_scope="module")  # the loop the shared server runs in

SOURCE_TIME = ua.DateTime(2026, 3, 1, 8, 30, 0, 250_000, tzinfo=dt.UTC)
SOURCE_MS = int(SOURCE_TIME.timestamp() * 1000)
VARIABLES: dict[str, tuple[Any, ua.VariantType, bool]] = {  # name: initial value, type, writable on the server
    "Static.Temperature": (21.5, ua.VariantType.Double, False),
    "Static.Count": (7, ua.VariantType.UInt32, False),
    "Static.Mode": ("auto", ua.VariantType.String, False),
    "Static.Running": (True, ua.VariantType.Boolean, False),
    "Static.Stale": (3.0, ua.VariantType.Double, False),
    "Static.Broken": (0.0, ua.VariantType.Double, False),
    "Live.Pressure": (1.0, ua.VariantType.Double, False),
    "Cmd.Setpoint": (10, ua.VariantType.Int16, True),
    "Cmd.Flow": (1.5, ua.VariantType.Float, True),
    "Cmd.Enable": (False, ua.VariantType.Boolean, True),
    "Cmd.Recipe": ("A", ua.VariantType.String, True),
    "Cmd.Locked": (5.0, ua.VariantType.Double, False),
    "Restart.Level": (1.0, ua.VariantType.Double, False),
    "Runner.Speed": (1500.0, ua.VariantType.Double, False),
}


@dataclass
class Plant:
    server: Server
    endpoint: str
    namespace: int
    nodes: dict[str, Node] = field(default_factory=dict)

    def node_id(self, name: str) -> str:
        return f"ns={self.namespace};s={name}"

    async def set(
        self, name: str, value: Any, status: int = StatusCodes.Good, source: ua.DateTime | None = None
    ) -> None:
        variant = ua.Variant(value, VARIABLES[name][1])
        await self.nodes[name].write_value(
            ua.DataValue(
                variant, StatusCode=ua.StatusCode(ua.UInt32(status)), SourceTimestamp=source or ua.DateTime.now(dt.UTC)
            )
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def plant() -> AsyncIterator[Plant]:
    server = Server()
    await server.init()
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/iip/"
    server.set_endpoint(endpoint)
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    namespace = await server.register_namespace("urn:iip:test:plant")
    objects = await server.nodes.objects.add_object(ua.NodeId(ua.String("Reactor"), ua.Int16(namespace)), "Reactor")
    result = Plant(server, endpoint, namespace)
    for name, (value, variant, writable) in VARIABLES.items():
        node = await objects.add_variable(
            ua.NodeId(ua.String(name), ua.Int16(namespace)), name, ua.Variant(value, variant)
        )
        if writable:
            await node.set_writable()
        result.nodes[name] = node
    await server.start()
    await result.set("Static.Temperature", 21.5, source=SOURCE_TIME)
    await result.set("Static.Stale", 3.0, status=StatusCodes.UncertainLastUsableValue, source=SOURCE_TIME)
    await result.set("Static.Broken", 0.0, status=StatusCodes.BadSensorFailure, source=SOURCE_TIME)
    try:
        yield result
    finally:
        await server.stop()


def profile(plant: Plant, metrics: dict[str, str], writable: Collection[str] = ()) -> DeviceProfile:
    return DeviceProfile.model_validate(
        {
            "name": "reactor",
            "protocol": "opcua",
            "metrics": [
                {"name": metric, "writable": metric in writable, "opcua": {"node_id": plant.node_id(variable)}}
                for metric, variable in metrics.items()
            ],
        }
    )


def fast(endpoint: str, **extra: Any) -> OpcUaConnection:
    return OpcUaConnection.model_validate(
        {
            "endpoint": endpoint,
            "timeout_s": 2.0,
            "publish_interval_ms": 20,
            "watchdog_s": 0.2,
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.4,
            **extra,
        }
    )


class Inbox:
    """Readings and status reports as a subscription delivers them."""

    def __init__(self) -> None:
        self.readings: asyncio.Queue[Reading] = asyncio.Queue()
        self.statuses: asyncio.Queue[tuple[bool, str]] = asyncio.Queue()

    async def sink(self, readings: list[Reading]) -> None:
        for reading in readings:
            self.readings.put_nowait(reading)

    async def status(self, online: bool, reason: str) -> None:
        self.statuses.put_nowait((online, reason))

    async def until(self, metric: str, value: Any) -> Reading:
        while True:
            reading = await asyncio.wait_for(self.readings.get(), 10)
            if reading.metric == metric and reading.value == value:
                return reading


@in_module_loop
async def test_read_gives_values_source_timestamps_and_quality(plant: Plant) -> None:
    metrics = {
        "temperature": "Static.Temperature",
        "count": "Static.Count",
        "mode": "Static.Mode",
        "running": "Static.Running",
        "stale": "Static.Stale",
        "broken": "Static.Broken",
        "ghost": "Static.DoesNotExist",
    }
    async with OpcUaDriver(profile(plant, metrics), fast(plant.endpoint)) as driver:
        readings = {r.metric: r for r in await driver.read()}
    assert readings["temperature"] == Reading("temperature", SOURCE_MS, 21.5, Quality.GOOD, "")
    assert (readings["count"].value, readings["mode"].value, readings["running"].value) == (7, "auto", True)
    assert readings["stale"] == Reading("stale", SOURCE_MS, 3.0, Quality.UNCERTAIN, "UncertainLastUsableValue")
    assert readings["broken"].quality is Quality.BAD
    assert readings["broken"].detail == "BadSensorFailure"
    assert readings["ghost"].quality is Quality.BAD
    assert readings["ghost"].value is None
    assert readings["ghost"].detail == "BadNodeIdUnknown"


@in_module_loop
async def test_subscription_delivers_data_changes(plant: Plant) -> None:
    inbox = Inbox()
    driver = OpcUaDriver(profile(plant, {"pressure": "Live.Pressure", "ghost": "Live.Nothing"}), fast(plant.endpoint))
    try:
        await driver.subscribe(inbox.sink, inbox.status)
        first = await inbox.until("pressure", 1.0)  # the current value comes first
        assert first.quality is Quality.GOOD
        await plant.set("Live.Pressure", 2.5, source=SOURCE_TIME)
        change = await inbox.until("pressure", 2.5)
        assert change.ts_ms == SOURCE_MS
        await plant.set("Live.Pressure", 2.6, status=StatusCodes.UncertainSensorNotAccurate)
        uncertain = await inbox.until("pressure", 2.6)
        assert (uncertain.quality, uncertain.detail) == (Quality.UNCERTAIN, "UncertainSensorNotAccurate")
        with pytest.raises(Invalid, match="already subscribed"):
            await driver.subscribe(inbox.sink)
    finally:
        await driver.close()
    assert not driver.connected


@in_module_loop
async def test_an_unknown_node_is_reported_bad_by_the_subscription(plant: Plant) -> None:
    inbox = Inbox()
    driver = OpcUaDriver(profile(plant, {"ghost": "Live.Nothing"}), fast(plant.endpoint))
    try:
        await driver.subscribe(inbox.sink)
        reading = await asyncio.wait_for(inbox.readings.get(), 10)
    finally:
        await driver.close()
    assert (reading.metric, reading.value, reading.quality, reading.detail) == (
        "ghost",
        None,
        Quality.BAD,
        "BadNodeIdUnknown",
    )


@in_module_loop
async def test_reconnects_and_resubscribes_after_the_server_restarts(plant: Plant) -> None:
    inbox = Inbox()
    driver = OpcUaDriver(profile(plant, {"level": "Restart.Level"}), fast(plant.endpoint))
    try:
        await driver.subscribe(inbox.sink, inbox.status)
        await inbox.until("level", 1.0)
        await plant.server.stop()
        online, reason = await asyncio.wait_for(inbox.statuses.get(), 10)
        assert online is False
        assert reason
        with pytest.raises(DeviceUnavailable):
            await driver.read()
        await plant.set("Restart.Level", 2.0)  # changed while nobody could see it
        await plant.server.start()
        assert await asyncio.wait_for(inbox.statuses.get(), 10) == (True, "")
        await inbox.until("level", 2.0)  # the new subscription sends the current value
        await plant.set("Restart.Level", 3.0)
        await inbox.until("level", 3.0)  # and later changes
        assert driver.connected
    finally:
        await driver.close()


@in_module_loop
async def test_writes_use_the_node_type_and_are_confirmed(plant: Plant) -> None:
    metrics = {
        "setpoint": "Cmd.Setpoint",
        "flow": "Cmd.Flow",
        "enable": "Cmd.Enable",
        "recipe": "Cmd.Recipe",
        "locked": "Cmd.Locked",
        "ghost": "Cmd.Nothing",
        "temperature": "Static.Temperature",
    }
    writable = {"setpoint", "flow", "enable", "recipe", "locked", "ghost"}
    async with OpcUaDriver(profile(plant, metrics, writable), fast(plant.endpoint)) as driver:
        await driver.write("setpoint", 42, timeout=5)
        await driver.write("flow", 2.25, timeout=5)
        await driver.write("enable", True, timeout=5)
        await driver.write("recipe", "B", timeout=5)
        for name, value, variant in [
            ("Cmd.Setpoint", 42, ua.VariantType.Int16),
            ("Cmd.Flow", 2.25, ua.VariantType.Float),
            ("Cmd.Enable", True, ua.VariantType.Boolean),
            ("Cmd.Recipe", "B", ua.VariantType.String),
        ]:
            held = await plant.nodes[name].read_data_value()
            assert held.Value is not None
            assert (held.Value.Value, held.Value.VariantType) == (value, variant)
        with pytest.raises(CommandRejected, match=r"40000 is out of range for Int16 \(-32768\.\.32767\)"):
            await driver.write("setpoint", 40000, timeout=5)
        with pytest.raises(CommandRejected, match="takes a whole number"):
            await driver.write("setpoint", 1.5, timeout=5)
        with pytest.raises(CommandRejected, match="takes true/false"):
            await driver.write("enable", "yes", timeout=5)
        with pytest.raises(CommandRejected, match="the server refused 'locked': Bad") as refused:
            await driver.write("locked", 1.0, timeout=5)
        assert refused.value.instance_code == "opcua_status"
        with pytest.raises(CommandRejected, match="BadNodeIdUnknown"):
            await driver.write("ghost", 1.0, timeout=5)
        with pytest.raises(CommandRejected, match="not writable"):
            await driver.write("temperature", 1.0, timeout=5)
        assert (await plant.nodes["Cmd.Setpoint"].read_value()) == 42  # refused writes changed nothing
        assert (await plant.nodes["Cmd.Locked"].read_value()) == 5.0


@in_module_loop
async def test_runner_keeps_a_subscription(plant: Plant) -> None:
    inbox = Inbox()
    driver = OpcUaDriver(profile(plant, {"speed": "Runner.Speed"}), fast(plant.endpoint))
    async with DeviceRunner(driver, inbox.sink, status=inbox.status) as runner:
        await inbox.until("speed", 1500.0)
        await plant.set("Runner.Speed", 1490.0)
        await inbox.until("speed", 1490.0)
        assert await asyncio.wait_for(inbox.statuses.get(), 10) == (True, "")
        assert runner.online is True
    assert not driver.connected


async def test_nothing_listening_is_unavailable() -> None:
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/"
    driver = OpcUaDriver(
        DeviceProfile.model_validate(
            {
                "name": "x",
                "protocol": "opcua",
                "metrics": [{"name": "t", "writable": True, "opcua": {"node_id": "ns=2;i=5"}}],
            }
        ),
        fast(endpoint),
    )
    with pytest.raises(DeviceUnavailable, match="cannot connect to OPC UA server"):
        await driver.read()

    async def sink(readings: list[Reading]) -> None:
        del readings

    with pytest.raises(DeviceUnavailable):
        await driver.subscribe(sink)
    with pytest.raises(DeviceUnavailable):
        await driver.write("t", 1.0, timeout=2)
    await driver.close()


def test_configuration_errors_are_readable() -> None:
    metrics = [{"name": "t", "opcua": {"node_id": "ns=2;x=bogus"}}]
    bad_node = DeviceProfile.model_validate({"name": "x", "protocol": "opcua", "metrics": metrics})
    with pytest.raises(Invalid, match="'ns=2;x=bogus' is not an OPC UA node id"):
        create_driver("opcua", bad_node, {"endpoint": "opc.tcp://plc:4840"})
    good = DeviceProfile.model_validate(
        {"name": "x", "protocol": "opcua", "metrics": [{"name": "t", "opcua": {"node_id": "ns=2;i=1"}}]}
    )
    assert isinstance(create_driver("opcua", good, {"endpoint": "opc.tcp://plc:4840/ua"}), OpcUaDriver)
    with pytest.raises(Invalid, match="endpoint: String should match pattern"):
        create_driver("opcua", good, {"endpoint": "http://plc"})
    with pytest.raises(Invalid, match="a password needs a username"):
        create_driver("opcua", good, {"endpoint": "opc.tcp://plc:4840", "password": "secret"})
    with pytest.raises(Invalid, match="security: Input should be 'none'"):
        create_driver("opcua", good, {"endpoint": "opc.tcp://plc:4840", "security": "sign"})
    shown = repr(OpcUaConnection(endpoint="opc.tcp://plc:4840", username="u", password="secret"))
    assert "secret" not in shown
