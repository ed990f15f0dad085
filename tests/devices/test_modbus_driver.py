"""The Modbus TCP driver against a real pymodbus server in the test's event loop."""

from __future__ import annotations

import asyncio
import math
import socket
import struct
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from iip.devices.drivers.base import CommandRejected, DeviceUnavailable, create_driver
from iip.devices.drivers.modbus import ModbusConnection, ModbusDriver
from iip.devices.profiles import DeviceProfile
from iip.kernel.errors import Invalid
from iip.telemetry.public import Quality

Written = list[int] | list[bool] | None  # what a request writes; None for reads
Action = Callable[[int, int, int, int, list[int], Written], Coroutine[None, None, ExcCodes | None]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def words(code: str, value: float, little: bool = False) -> list[int]:
    """Registers of a value, computed with struct (independent of the codec under test)."""
    packed = struct.pack(">" + code, value)
    registers = [int.from_bytes(packed[i : i + 2], "big") for i in range(0, len(packed), 2)]
    return registers[::-1] if little else registers


def text(value: str, registers: int) -> list[int]:
    packed = value.encode().ljust(registers * 2, b"\x00")
    return [int.from_bytes(packed[i : i + 2], "big") for i in range(0, len(packed), 2)]


# Holding registers 0..37, every data type and both word orders; input registers 0..1; coils and
# discrete inputs 0..15. Address 40..44 is left undefined: the server answers "illegal data address".
HOLDING: list[int] = [
    *words("h", -1234),  # 0 int16
    *words("H", 54321),  # 1 uint16
    *words("i", -123456789),  # 2 int32 big
    *words("i", -123456789, little=True),  # 4 int32 little
    *words("I", 3_000_000_000),  # 6 uint32
    *words("q", -(2**62) + 7),  # 8 int64 big
    *words("q", -(2**62) + 7, little=True),  # 12 int64 little
    *words("Q", 2**63 + 11),  # 16 uint64
    *words("f", 21.5),  # 20 float32 big
    *words("f", 21.5, little=True),  # 22 float32 little
    *words("d", -1e300),  # 24 float64 big
    *words("d", math.pi, little=True),  # 28 float64 little
    *text("PUMP-7", 3),  # 32 string
    1,  # 35 bool
    215,  # 36 setpoint, uint16 scale 0.1
    0,  # 37 int16 setpoint
]
HOLDING_END = len(HOLDING)
INPUT = [0x0C80, 100]  # 0: 3200 * 0.01 - 10 = 22.0 ; 1: plain
COILS = [True, False, True] + [False] * 13
DISCRETE = [False, True] + [False] * 14

METRICS: list[dict[str, Any]] = [
    {"name": "i16", "modbus": {"address": 0, "data_type": "int16"}},
    {"name": "u16", "modbus": {"address": 1, "data_type": "uint16"}},
    {"name": "i32", "modbus": {"address": 2, "data_type": "int32"}},
    {"name": "i32_le", "modbus": {"address": 4, "data_type": "int32", "word_order": "little"}},
    {"name": "u32", "modbus": {"address": 6, "data_type": "uint32"}},
    {"name": "i64", "modbus": {"address": 8, "data_type": "int64"}},
    {"name": "i64_le", "modbus": {"address": 12, "data_type": "int64", "word_order": "little"}},
    {"name": "u64", "modbus": {"address": 16, "data_type": "uint64"}},
    {"name": "f32", "writable": True, "modbus": {"address": 20, "data_type": "float32"}},
    {"name": "f32_le", "writable": True, "modbus": {"address": 22, "data_type": "float32", "word_order": "little"}},
    {"name": "f64", "modbus": {"address": 24, "data_type": "float64"}},
    {"name": "f64_le", "modbus": {"address": 28, "data_type": "float64", "word_order": "little"}},
    {
        "name": "tag",
        "data_type": "string",
        "writable": True,
        "modbus": {"address": 32, "data_type": "string", "length": 3},
    },
    {"name": "running", "data_type": "bool", "modbus": {"address": 35, "data_type": "bool"}},
    {"name": "setpoint", "writable": True, "modbus": {"address": 36, "data_type": "uint16", "scale": 0.1}},
    {"name": "trim", "writable": True, "modbus": {"address": 37, "data_type": "int16"}},
    {"name": "temperature", "modbus": {"table": "input", "address": 0, "scale": 0.01, "offset": -10}},
    {"name": "raw_in", "writable": True, "modbus": {"table": "input", "address": 1}},
    {
        "name": "pump",
        "data_type": "bool",
        "writable": True,
        "modbus": {"table": "coil", "address": 0, "data_type": "bool"},
    },
    {"name": "valve", "data_type": "bool", "modbus": {"table": "coil", "address": 2, "data_type": "bool"}},
    {"name": "door", "data_type": "bool", "modbus": {"table": "discrete", "address": 1, "data_type": "bool"}},
]
EXPECTED: dict[str, object] = {
    "i16": -1234,
    "u16": 54321,
    "i32": -123456789,
    "i32_le": -123456789,
    "u32": 3_000_000_000,
    "i64": -(2**62) + 7,
    "i64_le": -(2**62) + 7,
    "u64": 2**63 + 11,
    "f32": 21.5,
    "f32_le": 21.5,
    "f64": -1e300,
    "f64_le": math.pi,
    "tag": "PUMP-7",
    "running": True,
    "setpoint": pytest.approx(21.5),
    "trim": 0,
    "temperature": pytest.approx(22.0),
    "raw_in": 100,
    "pump": True,
    "valve": True,
    "door": True,
}


def profile(metrics: list[dict[str, Any]] = METRICS) -> DeviceProfile:
    return DeviceProfile.model_validate(
        {"name": "plc", "protocol": "modbus", "poll_interval_s": 0.1, "metrics": metrics}
    )


def device(action: Action | None = None) -> SimDevice:
    return SimDevice(
        id=0,
        simdata=(
            [SimData(0, values=COILS, datatype=SimType.BITS)],
            [SimData(0, values=DISCRETE, datatype=SimType.BITS)],
            [
                SimData(0, values=list(HOLDING), datatype=SimType.REGISTERS),
                SimData(45, values=[45, 46], datatype=SimType.REGISTERS),
            ],
            [SimData(0, values=INPUT, datatype=SimType.REGISTERS)],
        ),
        action=action,
    )


@asynccontextmanager
async def modbus_server(port: int, action: Action | None = None) -> AsyncIterator[ModbusTcpServer]:
    server = ModbusTcpServer(device(action), address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    try:
        yield server
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]


def connection(port: int, **extra: Any) -> ModbusConnection:
    return ModbusConnection.model_validate({"host": "127.0.0.1", "port": port, "timeout_s": 2.0, **extra})


@pytest.fixture
def port() -> int:
    return free_port()


async def holding(port: int, address: int, count: int) -> list[int]:
    """What the server holds, read by a separate client."""
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, reconnect_delay=0)
    try:
        assert await client.connect()
        response = await client.read_holding_registers(address, count=count, device_id=1)
        assert not response.isError()
        return list(response.registers)
    finally:
        client.close()


async def test_reads_every_type_word_order_and_table_in_few_requests(port: int) -> None:
    async with modbus_server(port):
        driver = ModbusDriver(profile(), connection(port), clock=lambda: 1_700_000_000.5)
        async with driver:
            readings = await driver.read()
    assert {r.metric: r.value for r in readings} == EXPECTED
    assert {r.quality for r in readings} == {Quality.GOOD}
    assert {r.ts_ms for r in readings} == {1_700_000_000_500}
    # One request per table: holding 0..37, input 0..1, coils 0..2, discrete 1.
    assert [(r.table.value, r.address, r.count) for r in driver.plan] == [
        ("holding", 0, HOLDING_END),
        ("input", 0, 2),
        ("coil", 0, 3),
        ("discrete", 1, 1),
    ]


async def test_exception_response_marks_only_its_metrics_bad(port: int) -> None:
    metrics = [
        {"name": "ok", "modbus": {"address": 1}},
        {"name": "missing", "modbus": {"address": 42}},
        {"name": "in", "modbus": {"table": "input", "address": 1}},
    ]
    async with modbus_server(port):
        driver = ModbusDriver(profile(metrics), connection(port, max_register_gap=0))
        async with driver:
            readings = {r.metric: r for r in await driver.read()}
    assert readings["ok"].value == 54321
    assert readings["in"].value == 100
    assert readings["missing"].quality is Quality.BAD
    assert readings["missing"].value is None
    assert "modbus exception 2 (illegal address)" in readings["missing"].detail


async def test_request_refused_across_a_gap_is_split_and_stays_split(port: int) -> None:
    # 37 and 45 are 8 apart: one request 37..46 bridges the undefined 38..44, which the server refuses.
    metrics = [
        {"name": "trim", "modbus": {"address": 37, "data_type": "int16"}},
        {"name": "far", "modbus": {"address": 46}},
    ]
    async with modbus_server(port):
        driver = ModbusDriver(profile(metrics), connection(port, max_register_gap=8))
        assert [(r.address, r.count) for r in driver.plan] == [(37, 10)]
        async with driver:
            first = {r.metric: (r.value, r.quality) for r in await driver.read()}
            assert [(r.address, r.count) for r in driver.plan] == [(37, 1), (46, 1)]
            second = {r.metric: (r.value, r.quality) for r in await driver.read()}
    assert first == second == {"trim": (0, Quality.GOOD), "far": (46, Quality.GOOD)}


async def test_nan_from_a_float_register_is_a_bad_reading(port: int) -> None:
    async with modbus_server(port):
        driver = ModbusDriver(profile(), connection(port))
        async with driver:
            await driver.write("f32", 1.0, timeout=2)
            client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, reconnect_delay=0)
            assert await client.connect()
            await client.write_registers(20, words("f", math.nan), device_id=1)
            client.close()
            readings = {r.metric: r for r in await driver.read()}
    assert readings["f32"].quality is Quality.BAD
    assert readings["f32"].value is None
    assert readings["f32_le"].quality is Quality.GOOD


@pytest.mark.parametrize(
    ("metric", "value", "address", "registers"),
    [
        ("f32", -3.25, 20, words("f", -3.25)),
        ("f32_le", 1.5, 22, words("f", 1.5, little=True)),
        ("setpoint", 65.4, 36, [654]),  # scale 0.1 inverted
        ("trim", -2, 37, words("h", -2)),
        ("tag", "AB", 32, text("AB", 3)),
    ],
)
async def test_writes_land_in_the_registers_and_are_confirmed(
    port: int, metric: str, value: float | str, address: int, registers: list[int]
) -> None:
    async with modbus_server(port), ModbusDriver(profile(), connection(port)) as driver:
        await driver.write(metric, value, timeout=2)
        assert await holding(port, address, len(registers)) == registers
        readings = {r.metric: r.value for r in await driver.read()}
    assert readings[metric] == pytest.approx(value) if isinstance(value, float) else readings[metric] == value


async def test_write_a_coil(port: int) -> None:
    async with modbus_server(port), ModbusDriver(profile(), connection(port)) as driver:
        await driver.write("pump", False, timeout=2)
        assert {r.metric: r.value for r in await driver.read()}["pump"] is False
        await driver.write("pump", 1, timeout=2)
        assert {r.metric: r.value for r in await driver.read()}["pump"] is True


async def test_invalid_writes_are_rejected_and_nothing_is_written(port: int) -> None:
    async with modbus_server(port), ModbusDriver(profile(), connection(port)) as driver:
        before = await holding(port, 0, HOLDING_END)
        with pytest.raises(CommandRejected, match=r"out of range for uint16") as out_of_range:
            await driver.write("setpoint", 7000, timeout=2)  # raw 70000
        assert out_of_range.value.instance_code == "modbus_value_out_of_range"
        with pytest.raises(CommandRejected, match="read-only input table"):
            await driver.write("raw_in", 1, timeout=2)
        with pytest.raises(CommandRejected, match="not writable") as not_writable:
            await driver.write("u16", 1, timeout=2)
        assert not_writable.value.instance_code == "metric_not_writable"
        with pytest.raises(CommandRejected, match="has no metric 'nope'"):
            await driver.write("nope", 1, timeout=2)
        with pytest.raises(CommandRejected, match="does not fit 3 registers"):
            await driver.write("tag", "TOO LONG TEXT", timeout=2)
        assert await holding(port, 0, HOLDING_END) == before


async def refuse_writes_to_37(
    function_code: int,
    start: int,
    address: int,
    count: int,
    registers: list[int],
    values: Written,
) -> ExcCodes | None:
    del function_code, start, count, registers
    if values is not None and address == 37:
        return ExcCodes.ILLEGAL_VALUE
    return None


async def test_exception_response_to_a_write_is_a_rejection_with_the_code(port: int) -> None:
    async with modbus_server(port, refuse_writes_to_37), ModbusDriver(profile(), connection(port)) as driver:
        with pytest.raises(CommandRejected, match=r"modbus exception 3 \(illegal value\) on write holding 37") as err:
            await driver.write("trim", 5, timeout=2)
        assert err.value.details["modbus_exception"] == 3
        await driver.write("setpoint", 1.0, timeout=2)  # other registers still take writes
    assert err.value.instance_code == "modbus_exception"


async def test_read_back_mismatch_is_a_rejection(port: int) -> None:
    async def clamp_to_100(
        function_code: int,
        start: int,
        address: int,
        count: int,
        registers: list[int],
        values: Written,
    ) -> ExcCodes | None:
        del function_code, start, count
        if values is not None and address == 36:
            cast(list[int], values)[:] = [100]  # the device applies its own limit, and acknowledges
        return None

    async with modbus_server(port, clamp_to_100), ModbusDriver(profile(), connection(port)) as driver:
        with pytest.raises(CommandRejected, match=r"holds \[100\] for 'setpoint' after writing \[500\]") as err:
            await driver.write("setpoint", 50.0, timeout=2)
        assert err.value.instance_code == "write_not_kept"
        await driver.write("setpoint", 10.0, timeout=2)  # within the device's limit


async def test_unconfirmed_write_times_out_as_unavailable(port: int) -> None:
    release = asyncio.Event()

    async def hang_on_write(
        function_code: int,
        start: int,
        address: int,
        count: int,
        registers: list[int],
        values: Written,
    ) -> ExcCodes | None:
        del function_code, start, address, count, registers
        if values is not None:
            await release.wait()
        return None

    async with modbus_server(port, hang_on_write):
        driver = ModbusDriver(profile(), connection(port, timeout_s=5))
        try:
            with pytest.raises(DeviceUnavailable, match=r"did not confirm 'trim' within 0.2 s") as err:
                await driver.write("trim", 5, timeout=0.2)
            assert err.value.instance_code == "command_timeout"
            assert not driver.connected  # dropped, so a late answer cannot be mistaken for another
        finally:
            release.set()
            await driver.close()


async def test_poll_recovers_after_the_server_stops_mid_poll_and_restarts(port: int) -> None:
    entered, release = asyncio.Event(), asyncio.Event()
    block = False

    async def hang_on_input_read(
        function_code: int,
        start: int,
        address: int,
        count: int,
        registers: list[int],
        values: Written,
    ) -> ExcCodes | None:
        del start, address, count, registers
        if block and function_code == 4 and values is None:
            entered.set()
            await release.wait()
        return None

    driver = ModbusDriver(profile(), connection(port, timeout_s=1.0))
    try:
        async with modbus_server(port, hang_on_input_read):
            assert {r.metric: r.value for r in await driver.read()} == EXPECTED
            block = True
            poll = asyncio.create_task(driver.read())
            await entered.wait()  # the holding request has been answered, the input request hangs
        # The server is gone while the poll waits for its answer.
        with pytest.raises(DeviceUnavailable, match=r"did not answer read input 0\.\.1"):
            await poll
        assert not driver.connected
        with pytest.raises(DeviceUnavailable, match="cannot connect"):
            await driver.read()
        block = False
        async with modbus_server(port):
            readings = await driver.read()
        assert {r.metric: r.value for r in readings} == EXPECTED
        assert {r.quality for r in readings} == {Quality.GOOD}
    finally:
        release.set()
        await driver.close()


async def test_nothing_listening_is_unavailable(port: int) -> None:
    driver = ModbusDriver(profile(), connection(port))
    with pytest.raises(DeviceUnavailable, match=f"cannot connect to modbus device 127.0.0.1:{port}"):
        await driver.read()
    with pytest.raises(DeviceUnavailable):
        await driver.write("trim", 1, timeout=1)
    await driver.close()


def test_factory_builds_the_driver_from_stored_json() -> None:
    driver = create_driver("modbus", profile(), {"host": "10.0.0.5", "unit_id": 3})
    assert isinstance(driver, ModbusDriver)
    assert driver.settings.port == 502
    assert driver.settings.unit_id == 3
    with pytest.raises(Invalid, match=r"invalid modbus connection: port: Input should be less than or equal to 65535"):
        create_driver("modbus", profile(), {"host": "10.0.0.5", "port": 70000})
    with pytest.raises(Invalid, match="host: Field required; colour: Extra inputs are not permitted"):
        create_driver("modbus", profile(), {"colour": "red"})
    with pytest.raises(Invalid, match="maps no metric to Modbus"):
        create_driver(
            "modbus",
            DeviceProfile.model_validate(
                {"name": "ua", "protocol": "opcua", "metrics": [{"name": "t", "opcua": {"node_id": "ns=2;i=1"}}]}
            ),
            {"host": "h"},
        )
