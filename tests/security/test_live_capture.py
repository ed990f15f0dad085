"""Live capture on the loopback interface: a real pymodbus client reads from a real pymodbus server
and the capture decodes both the requests and the responses off the wire."""

from __future__ import annotations

import asyncio
import os
import socket
import threading

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from iip.security.live import LiveCapture, live_packets
from iip.security.protocols.base import Direction, IcsMessage, PacketInfo
from tests.security.conftest import LOOPBACK_CAPTURE
from tests.services import in_ci

pytestmark = LOOPBACK_CAPTURE

HOLDING = [100 + n for n in range(20)]
COILS = [True, False, True, True, False, False, True, False]


def _can_capture() -> bool:
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)).close()
    except (OSError, AttributeError):
        return False
    return True


@pytest.fixture(autouse=True)
def _raw_sockets_allowed() -> None:
    if not _can_capture():
        message = f"raw AF_PACKET sockets not allowed here (uid {os.getuid()})"
        if in_ci():
            pytest.fail(message + " (CI runs as root)")
        pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_modbus_exchange(port: int) -> None:
    """A pymodbus server on `port` (unusual: found by content) and a client reading from it."""
    device = SimDevice(
        id=0,
        simdata=(
            [SimData(0, values=COILS, datatype=DataType.BITS)],
            [SimData(0, values=[False] * 8, datatype=DataType.BITS)],
            [SimData(0, values=HOLDING, datatype=DataType.REGISTERS)],
            [SimData(0, values=[0] * 8, datatype=DataType.REGISTERS)],
        ),
    )
    server = ModbusTcpServer(device, address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, reconnect_delay=0)
    try:
        assert await client.connect()
        holding = await client.read_holding_registers(3, count=4, device_id=5)
        assert list(holding.registers) == HOLDING[3:7]
        coils = await client.read_coils(1, count=3, device_id=5)
        assert list(coils.bits[:3]) == COILS[1:4]
    finally:
        client.close()
        await server.shutdown()  # type: ignore[no-untyped-call]


async def _wait_for(condition: threading.Event | asyncio.Event, seconds: float = 5.0) -> None:
    for _ in range(int(seconds * 20)):
        if condition.is_set():
            return
        await asyncio.sleep(0.05)


async def test_thread_capture_decodes_reads_and_responses() -> None:
    messages: list[IcsMessage] = []
    seen_all = threading.Event()

    def on_packet(info: PacketInfo, records: list[IcsMessage]) -> None:
        messages.extend(records)
        if sum(1 for m in messages if m.direction is Direction.RESPONSE) >= 2:
            seen_all.set()

    port = free_port()
    capture = LiveCapture("lo", on_packet, poll_interval=0.05)
    capture.start()
    try:
        await run_modbus_exchange(port)
        await _wait_for(seen_all)
    finally:
        leftovers = capture.stop()
    assert capture.error == ""
    ours = [m for port_pair in [port] for m in messages if port_pair in (m.source.port, m.destination.port)]
    assert not [m for m in ours if m.malformed]
    assert not leftovers
    requests = [(m.unit, m.function_name, m.address, m.quantity) for m in ours if m.direction is Direction.REQUEST]
    assert requests == [(5, "READ_HOLDING_REGISTERS", 3, 4), (5, "READ_COILS", 1, 3)]
    responses = [m for m in ours if m.direction is Direction.RESPONSE]
    assert [(m.unit, m.function_name, m.address, m.quantity) for m in responses] == [
        (5, "READ_HOLDING_REGISTERS", 3, 4),
        (5, "READ_COILS", 1, 3),
    ]
    assert responses[0].values == HOLDING[3:7]
    assert responses[1].values == COILS[1:4]
    assert {m.destination.port for m in requests_of(ours)} == {port}


def requests_of(messages: list[IcsMessage]) -> list[IcsMessage]:
    return [m for m in messages if m.direction is Direction.REQUEST]


async def test_async_iterator_stops_cleanly() -> None:
    port = free_port()
    found: list[IcsMessage] = []

    async def consume() -> None:
        packets = live_packets("lo", poll_interval=0.05)
        try:
            async for _info, records in packets:
                found.extend(m for m in records if port in (m.source.port, m.destination.port))
                if len(found) >= 4:
                    return
        finally:
            await packets.aclose()

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.2)  # the socket is open before the traffic starts
    await run_modbus_exchange(port)
    await asyncio.wait_for(consumer, timeout=10)
    assert [m.function_name for m in found] == ["READ_HOLDING_REGISTERS"] * 2 + ["READ_COILS"] * 2
    assert found[1].values == HOLDING[3:7]
