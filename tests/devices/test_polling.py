"""The polling supervisor: real pymodbus servers, simulated devices, the registry on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from iip.devices.directory import KnownDevice
from iip.devices.drivers.base import Backoff, DeviceUnavailable
from iip.devices.polling import STOPPED_REASON, PollingSupervisor
from iip.devices.profiles import DeviceProfile
from iip.devices.profiles import Protocol as DeviceProtocol
from iip.devices.registry_directory import ConnectedDevice, DbDeviceDirectory
from iip.devices.schemas import DeviceSpec, DeviceUpdate, GatewaySpec
from iip.devices.service import DeviceRegistry
from iip.kernel.auth import Principal, Role
from iip.kernel.bus import Bus, Delivery, MemoryBus
from iip.kernel.runtime import Runtime
from iip.telemetry.public import DEVICE_STATUS, TELEMETRY_POINTS, DeviceStatus, Point, PointBatch, Quality
from tests.conftest import TenantFixture

WAIT = 15.0  # upper bound for anything awaited; normally reached in milliseconds

Written = list[int] | list[bool] | None
Action = Callable[[int, int, int, int, list[int], Written], Coroutine[None, None, ExcCodes | None]]

# Holding 0 setpoint (x0.1), 1 temperature, 2..3 a tag; coil 0 a pump. Holding 10 is undefined:
# the server answers "illegal data address".
HOLDING = [215, 0xFFF6, *(int.from_bytes(b"P1", "big"), 0)]
COILS = [True, False, False, False]
PLC_METRICS: list[dict[str, Any]] = [
    {"name": "setpoint", "unit": "°C", "writable": True, "modbus": {"address": 0, "scale": 0.1}},
    {"name": "temperature", "unit": "°C", "data_type": "int16", "modbus": {"address": 1, "data_type": "int16"}},
    {"name": "limit", "data_type": "int16", "writable": True, "modbus": {"address": 1, "data_type": "int16"}},
    {
        "name": "tag",
        "data_type": "string",
        "writable": True,
        "modbus": {"address": 2, "data_type": "string", "length": 2},
    },
    {
        "name": "pump",
        "data_type": "bool",
        "writable": True,
        "modbus": {"table": "coil", "address": 0, "data_type": "bool"},
    },
]
BROKEN_METRIC: dict[str, Any] = {"name": "broken", "modbus": {"address": 10}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def plc_profile(name: str = "plc", metrics: list[dict[str, Any]] | None = None, poll_s: float = 0.05) -> dict[str, Any]:
    return {"name": name, "protocol": "modbus", "poll_interval_s": poll_s, "metrics": metrics or PLC_METRICS}


@asynccontextmanager
async def modbus_server(port: int, action: Action | None = None) -> AsyncIterator[ModbusTcpServer]:
    """A real Modbus TCP server with the registers above, in the test's event loop."""
    device = SimDevice(
        id=0,
        simdata=(
            [SimData(0, values=list(COILS), datatype=SimType.BITS)],
            [SimData(0, values=[False] * 4, datatype=SimType.BITS)],
            [SimData(0, values=list(HOLDING), datatype=SimType.REGISTERS)],
            [SimData(0, values=[0] * 4, datatype=SimType.REGISTERS)],
        ),
        action=action,
    )
    server = ModbusTcpServer(device, address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    try:
        yield server
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]


async def until(condition: Callable[[], bool], what: str, within: float = WAIT) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.01)


def quick_backoff() -> Backoff:
    return Backoff(0.05, 0.2)


@dataclass
class Collector:
    """What the bus carries: point batches and device statuses."""

    batches: list[PointBatch] = field(default_factory=list)
    statuses: list[DeviceStatus] = field(default_factory=list)

    async def attach(self, bus: Bus) -> None:
        await bus.subscribe(TELEMETRY_POINTS, self._on_points, durable=f"test-{uuid.uuid4().hex[:8]}")
        await bus.subscribe(DEVICE_STATUS, self._on_status, durable=f"test-{uuid.uuid4().hex[:8]}")

    async def _on_points(self, delivery: Delivery[PointBatch]) -> None:
        self.batches.append(delivery.payload)

    async def _on_status(self, delivery: Delivery[DeviceStatus]) -> None:
        self.statuses.append(delivery.payload)

    def points(self, tenant_id: str, device: str | None = None) -> list[Point]:
        return [
            p
            for b in self.batches
            if b.tenant_id == tenant_id
            for p in b.points()
            if device is None or p.device == device
        ]

    def status_of(self, device: str) -> list[tuple[bool, str]]:
        return [(s.online, s.reason) for s in self.statuses if s.device == device]


class Listing:
    """A device directory of a fixed list, changed by the test (the shape the supervisor reads)."""

    def __init__(self) -> None:
        self.devices: list[ConnectedDevice] = []
        self.invalidations = 0

    def connected(self, protocol: DeviceProtocol) -> tuple[ConnectedDevice, ...]:
        return tuple(d for d in self.devices if d.device.profile is not None and d.device.profile.protocol is protocol)

    def invalidate(self) -> None:
        self.invalidations += 1

    def add(self, tenant_id: str, key: str, profile: dict[str, Any], connection: dict[str, Any]) -> None:
        known = KnownDevice.of(tenant_id, key, DeviceProfile.model_validate(profile))
        self.devices.append(ConnectedDevice(known, connection))

    def remove(self, key: str) -> None:
        self.devices = [d for d in self.devices if d.device.key != key]


# --- readings, batches, statuses (a real Modbus server; the directory is a plain list)


async def test_readings_of_several_devices_become_one_batch_with_attributes_and_bad_points() -> None:
    port = free_port()
    bus = MemoryBus()
    collector = Collector()
    await collector.attach(bus)
    listing = Listing()
    profile = plc_profile(metrics=[*PLC_METRICS, BROKEN_METRIC])
    connection = {"host": "127.0.0.1", "port": port, "timeout_s": 2, "max_register_gap": 0}
    listing.add("t1", "plc-1", profile, connection)
    listing.add("t1", "plc-2", profile, connection)
    listing.add("t2", "plc-9", profile, connection)
    # Flushed by the test only, so the batch's contents do not depend on timing.
    supervisor = PollingSupervisor(bus, listing, flush_ms=3_600_000, backoff=quick_backoff)
    async with modbus_server(port):
        await supervisor.start()
        try:
            runners = [supervisor.runner(t, k) for t, k in (("t1", "plc-1"), ("t1", "plc-2"), ("t2", "plc-9"))]
            await until(lambda: all(r is not None and r.polls >= 1 for r in runners), "a poll of every device")
            await supervisor.flush()
            await until(lambda: len(collector.batches) >= 2, "the batches on the bus")
        finally:
            await supervisor.stop()

    first = collector.batches[:2]
    assert sorted(b.tenant_id for b in first) == ["t1", "t2"]
    (t1,) = [b for b in first if b.tenant_id == "t1"]
    assert t1.source == "modbus"
    assert {device for device, _ in t1.series} == {"plc-1", "plc-2"}  # one batch across devices
    latest = {(p.device, p.metric): (p.value, p.quality) for p in t1.points()}
    for device in ("plc-1", "plc-2"):
        assert latest[(device, "setpoint")][0] == pytest.approx(21.5)
        assert latest[(device, "setpoint")][1] == Quality.GOOD
        assert latest[(device, "temperature")] == (-10.0, Quality.GOOD)
        assert latest[(device, "pump")] == (1.0, Quality.GOOD)  # a boolean is 1 or 0
        assert latest[(device, "broken")] == (0.0, Quality.BAD)  # refused by the device: BAD, value 0
        assert (device, "tag") not in latest
    assert t1.attributes == {"plc-1": {"tag": "P1"}, "plc-2": {"tag": "P1"}}  # text goes to the twin
    assert {s.device for s in collector.statuses if s.online} == {"plc-1", "plc-2", "plc-9"}
    assert supervisor.runner("t1", "plc-1") is None  # stopped


async def test_outage_is_reported_and_a_device_dropped_from_the_registry_goes_offline() -> None:
    port = free_port()
    bus = MemoryBus()
    collector = Collector()
    await collector.attach(bus)
    listing = Listing()
    listing.add("t1", "plc-1", plc_profile(), {"host": "127.0.0.1", "port": port, "timeout_s": 1})
    supervisor = PollingSupervisor(bus, listing, flush_ms=20, backoff=quick_backoff)
    await supervisor.start()
    try:
        # Nothing listens on the port yet.
        await until(lambda: bool(collector.status_of("plc-1")), "an offline report")
        online, reason = collector.status_of("plc-1")[0]
        assert not online
        assert "cannot connect" in reason
        async with modbus_server(port):
            await until(lambda: (True, "") in collector.status_of("plc-1"), "the device back online")
            await until(lambda: bool(collector.points("t1", "plc-1")), "its points")
            listing.remove("plc-1")
            await supervisor.refresh()
            assert listing.invalidations == 1
            assert supervisor.runner("t1", "plc-1") is None
            assert collector.status_of("plc-1")[-1] == (False, STOPPED_REASON)
    finally:
        await supervisor.stop()
    assert [online for online, _ in collector.status_of("plc-1")] == [False, True, False]


async def test_a_connection_the_driver_refuses_is_skipped_until_it_changes() -> None:
    bus = MemoryBus()
    listing = Listing()
    listing.add("t1", "bad", plc_profile(), {"host": "127.0.0.1", "port": 0})  # port 0 is not a port
    listing.add("t1", "sim", {"name": "sim", "protocol": "simulated", "metrics": [{"name": "level"}]}, {})
    supervisor = PollingSupervisor(bus, listing, flush_ms=20)
    await supervisor.start()
    try:
        assert supervisor.runner("t1", "bad") is None
        assert "invalid modbus connection" in supervisor.refused[("t1", "bad")][1]
        assert supervisor.runner("t1", "sim") is not None  # the others run
        listing.remove("bad")
        listing.add("t1", "bad", plc_profile(), {"host": "127.0.0.1", "port": free_port()})
        await supervisor.refresh()
        assert supervisor.runner("t1", "bad") is not None
        assert ("t1", "bad") not in supervisor.refused
    finally:
        await supervisor.stop()


# --- following the registry (SQLite and PostgreSQL)


SIM_PROFILE = DeviceProfile.model_validate(
    {
        "name": "kiln",
        "protocol": "simulated",
        "poll_interval_s": 0.05,
        "metrics": [{"name": "temperature", "unit": "°C"}, {"name": "setpoint", "unit": "°C", "writable": True}],
    }
)


def admin_of(tenant: TenantFixture) -> Principal:
    return Principal("user", tenant.admin_user_id, "admin", tenant.id, Role.ADMIN)


async def test_supervisor_follows_registry_changes(runtime: Runtime, tenant_a: TenantFixture) -> None:
    directory = DbDeviceDirectory(runtime.db)
    collector = Collector()
    await collector.attach(runtime.bus)

    def change(action: Callable[[DeviceRegistry], object]) -> None:
        with runtime.db.session() as session:
            action(DeviceRegistry(session, admin_of(tenant_a), on_change=directory.invalidate))

    def device(key: str, **extra: Any) -> DeviceSpec:
        return DeviceSpec(key=key, profile="kiln", connection={"seed": 1}, **extra)

    change(lambda r: r.create_profile(SIM_PROFILE))
    change(lambda r: r.create_device(device("kiln-1")))
    supervisor = PollingSupervisor(runtime.bus, directory, reload_s=3600, flush_ms=20)
    await supervisor.start()
    try:
        first = supervisor.runner(tenant_a.id, "kiln-1")
        assert first is not None  # polled from the start

        change(lambda r: r.create_device(device("kiln-2")))
        await supervisor.refresh()
        kiln_2 = supervisor.runner(tenant_a.id, "kiln-2")
        assert kiln_2 is not None
        assert supervisor.runner(tenant_a.id, "kiln-1") is first  # untouched
        await until(lambda: bool(collector.points(tenant_a.id, "kiln-2")), "points of the new device")
        assert {b.source for b in collector.batches} == {"sim"}

        # An edited connection restarts the runner; the old one is stopped.
        change(lambda r: r.update_device("kiln-1", DeviceUpdate(connection={"seed": 2})))
        await supervisor.refresh()
        restarted = supervisor.runner(tenant_a.id, "kiln-1")
        assert restarted is not None
        assert restarted is not first
        with pytest.raises(DeviceUnavailable, match="stopped"):
            await first.write("setpoint", 50.0, 1.0)
        assert supervisor.devices[(tenant_a.id, "kiln-1")].connection == {"seed": 2}

        # Behind a gateway: an edge agent polls it, not the platform.
        change(lambda r: r.create_gateway(GatewaySpec(key="gw-1")))
        change(lambda r: r.create_device(device("kiln-3", gateway="gw-1")))
        await supervisor.refresh()
        assert supervisor.runner(tenant_a.id, "kiln-3") is None

        # Disabled: stopped, and reported offline since it was online.
        await until(lambda: kiln_2.online is True, "kiln-2 online")
        change(lambda r: r.update_device("kiln-2", DeviceUpdate(enabled=False)))
        await supervisor.refresh()
        assert supervisor.runner(tenant_a.id, "kiln-2") is None
        assert collector.status_of("kiln-2")[-1] == (False, STOPPED_REASON)

        change(lambda r: r.delete_device("kiln-1"))
        await supervisor.refresh()
        assert set(supervisor.devices) == set()
    finally:
        await supervisor.stop()


async def test_supervisor_reloads_the_registry_periodically(runtime: Runtime, tenant_a: TenantFixture) -> None:
    directory = DbDeviceDirectory(runtime.db)

    def change(action: Callable[[DeviceRegistry], object]) -> None:
        with runtime.db.session() as session:
            action(DeviceRegistry(session, admin_of(tenant_a), on_change=directory.invalidate))

    change(lambda r: r.create_profile(SIM_PROFILE))
    supervisor = PollingSupervisor(runtime.bus, directory, reload_s=0.05, flush_ms=20)
    await supervisor.start()
    try:
        assert supervisor.devices == {}
        change(lambda r: r.create_device(DeviceSpec(key="kiln-7", profile="kiln")))
        await until(lambda: supervisor.runner(tenant_a.id, "kiln-7") is not None, "the periodic reload")
    finally:
        await supervisor.stop()
