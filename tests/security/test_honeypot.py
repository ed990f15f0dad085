"""The decoy PLC against real clients: pymodbus for Modbus/TCP, python-snap7 for S7comm.

Both services run on free ports of 127.0.0.1 with a clock the tests move by hand, so "a minute
later" is exact and no test waits.
"""

from __future__ import annotations

import ast
import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import snap7
from pymodbus.client import AsyncModbusTcpClient

from iip.security import honeypot as honeypot_package
from iip.security.honeypot import (
    HoneypotConfig,
    HoneypotSighting,
    RunningHoneypot,
    SightingKind,
    build_indicators,
    identity_for,
    run_honeypot,
)
from iip.security.honeypot.blocks import program_for
from iip.security.honeypot.identity import FAMILIES
from iip.security.honeypot.intel import IndicatorBook
from iip.security.protocols import s7comm
from iip.security.protocols.base import Endpoint, IcsMessage, IcsProtocol

START = 1_717_243_200.0  # 2024-06-01T12:00:00Z


@dataclass
class ManualClock:
    now: float = START

    def __call__(self) -> float:
        return self.now


@dataclass
class Recorder:
    sightings: list[HoneypotSighting] = field(default_factory=list)

    def __call__(self, sighting: HoneypotSighting) -> None:
        self.sightings.append(sighting)

    def requests(self, service: IcsProtocol) -> list[IcsMessage]:
        return [
            s.message for s in self.sightings if s.kind is SightingKind.REQUEST and s.service is service and s.message
        ]


async def _start(seed: str, clock: ManualClock, sink: Recorder, **options: object) -> RunningHoneypot:
    config = HoneypotConfig(seed=seed, host="127.0.0.1", modbus_port=0, s7_port=0, clock=clock, **options)  # type: ignore[arg-type]
    return await run_honeypot(config, sink)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sink() -> Recorder:
    return Recorder()


@pytest.fixture
async def decoy(clock: ManualClock, sink: Recorder) -> AsyncIterator[RunningHoneypot]:
    running = await _start("plant-a", clock, sink)
    async with running:
        yield running


async def _modbus(port: int | None) -> AsyncModbusTcpClient:
    assert port is not None
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0)
    assert await client.connect()
    return client


async def _settle(sink: Recorder, kind: SightingKind, count: int) -> None:
    """Lets the server side finish reporting (closing happens after the client returns)."""
    for _ in range(200):
        if sum(s.kind is kind for s in sink.sightings) >= count:
            return
        await asyncio.sleep(0.01)


# -- identity -----------------------------------------------------------------------------------


def test_identity_is_stable_per_seed_and_differs_between_seeds() -> None:
    assert identity_for("site-17") == identity_for("site-17")
    identities = [identity_for(f"site-{n}") for n in range(40)]
    assert len({i.serial_number for i in identities}) == 40
    assert len({i.family for i in identities}) >= 4
    for identity in identities:
        family = next(f for f in FAMILIES if f.family == identity.family)
        assert (identity.model, identity.order_number) in family.models
        assert identity.firmware in family.firmware
    assert all(identity_for(f"s7-{n}", speaks_s7=True).speaks_s7 for n in range(20))


# -- Modbus/TCP -------------------------------------------------------------------------------------


async def test_two_seeds_show_different_registers(clock: ManualClock, sink: Recorder) -> None:
    async with await _start("plant-a", clock, sink) as first, await _start("plant-b", clock, sink) as second:
        values = []
        for running in (first, second):
            client = await _modbus(running.modbus_port)
            response = await client.read_holding_registers(0, count=25)
            client.close()
            assert not response.isError()
            values.append(response.registers)
        assert values[0] != values[1]


async def test_values_move_plausibly_over_time(decoy: RunningHoneypot, clock: ManualClock) -> None:
    client = await _modbus(decoy.modbus_port)
    before = (await client.read_holding_registers(0, count=25)).registers
    clock.now += 60.0
    after = (await client.read_holding_registers(0, count=25)).registers
    clock.now += 3600.0
    hour_later = (await client.read_holding_registers(0, count=25)).registers
    client.close()

    assert before[0:8] == after[0:8] == hour_later[0:8]  # setpoints stay
    counters = [
        [struct.unpack(">I", struct.pack(">HH", *r[8 + 2 * i : 10 + 2 * i]))[0] for i in range(4)]
        for r in (before, after, hour_later)
    ]
    for index in range(4):
        assert counters[0][index] < counters[1][index] < counters[2][index]  # counters only go up
    process = [r[16:24] for r in (before, after, hour_later)]
    assert process[0] != process[1]  # a live process moves within a minute ...
    for channel, (a, b) in enumerate(zip(process[0], process[1], strict=True)):
        span = decoy.image.channels[channel].amplitude * decoy.image.channels[channel].scale
        assert (
            abs(a - b) <= 0.5 * span + 2 * decoy.image.channels[channel].noise * decoy.image.channels[channel].scale + 1
        )
    inputs_now = decoy.image.input_registers(0, 8)
    assert inputs_now == process[2]  # input registers mirror the process values


async def test_writes_are_kept_and_reported(decoy: RunningHoneypot, sink: Recorder) -> None:
    client = await _modbus(decoy.modbus_port)
    assert not (await client.write_register(3, 4321)).isError()
    assert not (await client.write_registers(40, [7, 8, 9])).isError()
    assert not (await client.write_coil(100, True)).isError()
    assert (await client.read_holding_registers(3, count=1)).registers == [4321]
    assert (await client.read_holding_registers(40, count=3)).registers == [7, 8, 9]
    assert (await client.read_coils(100, count=1)).bits[0] is True
    client.close()
    writes = [m for m in sink.requests(IcsProtocol.MODBUS) if m.function in (5, 6, 16)]
    assert [(m.function_name, m.address, m.values) for m in writes] == [
        ("WRITE_SINGLE_REGISTER", 3, [4321]),
        ("WRITE_MULTIPLE_REGISTERS", 40, [7, 8, 9]),
        ("WRITE_SINGLE_COIL", 100, [True]),
    ]


async def test_device_identification_returns_the_identity(decoy: RunningHoneypot) -> None:
    client = await _modbus(decoy.modbus_port)
    basic = await client.read_device_information(read_code=1)
    regular = await client.read_device_information(read_code=2)
    one = await client.read_device_information(read_code=4, object_id=5)
    client.close()
    identity = decoy.identity
    assert basic.information == {
        0: identity.vendor.encode(),
        1: identity.order_number.encode(),
        2: identity.firmware_text.encode(),
    }
    assert regular.information[5] == identity.model.encode()
    assert regular.information[6] == identity.plc_name.encode()
    assert one.information == {5: identity.model.encode()}


async def test_unsupported_functions_and_addresses_get_exceptions(decoy: RunningHoneypot) -> None:
    client = await _modbus(decoy.modbus_port)
    outside = await client.read_holding_registers(1000, count=2)
    beyond_coils = await client.read_coils(120, count=20)
    unsupported = await client.report_device_id()
    client.close()
    assert outside.isError()
    assert outside.exception_code == 2
    assert beyond_coils.isError()
    assert beyond_coils.exception_code == 2
    assert unsupported.isError()
    assert unsupported.exception_code == 1


async def test_every_modbus_request_reaches_the_sink_with_its_bytes(decoy: RunningHoneypot, sink: Recorder) -> None:
    frames = [
        struct.pack(">HHHBBHH", 1, 0, 6, 1, 3, 0, 2),
        struct.pack(">HHHBBHH", 2, 0, 6, 1, 4, 0, 1),
        struct.pack(">HHHBBHH", 3, 0, 6, 1, 6, 5, 99),
    ]
    assert decoy.modbus_port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", decoy.modbus_port)
    writer.write(b"".join(frames))  # three requests in one segment
    await writer.drain()
    answers = []
    for _ in frames:
        header = await asyncio.wait_for(reader.readexactly(6), 5)
        answers.append(header + await reader.readexactly(struct.unpack(">H", header[4:6])[0]))
    writer.close()
    await writer.wait_closed()
    await _settle(sink, SightingKind.CLOSED, 1)
    requests = [s for s in sink.sightings if s.kind is SightingKind.REQUEST]
    assert [s.raw for s in requests] == frames
    assert [s.message.transaction for s in requests if s.message] == [1, 2, 3]
    assert len(answers) == 3
    kinds = [s.kind for s in sink.sightings]
    assert kinds[0] is SightingKind.CONNECTED
    assert kinds[-1] is SightingKind.CLOSED
    assert {s.peer.host for s in sink.sightings} == {"127.0.0.1"}


# -- S7comm --------------------------------------------------------------------------------------


def _s7_session(port: int, *, identity_slot: int) -> dict[str, object]:
    """A snap7 client session (blocking, so the test runs it in a thread)."""
    client = snap7.Client()
    client.connect("127.0.0.1", 0, identity_slot, tcp_port=port)
    try:
        info = client.get_cpu_info()
        order = client.get_order_code()
        status_before = client.read_szl(0x0424, 0)
        db1 = client.db_read(1, 0, 64)
        flags = client.mb_read(0, 16)
        client.db_write(3, 4, bytearray(b"\x12\x34"))
        written = client.db_read(3, 4, 2)
        client.plc_stop()
        status_after = client.read_szl(0x0424, 0)
        missing_db = None
        try:
            client.db_read(99, 0, 2)
        except Exception as error:  # noqa: BLE001 - snap7 raises its own error types
            missing_db = str(error)
        return {
            "info": info,
            "order": order,
            "mode_before": status_before.Data[7] & 0xFF,
            "mode_after": status_after.Data[7] & 0xFF,
            "db1": bytes(db1),
            "flags": bytes(flags),
            "written": bytes(written),
            "missing_db": missing_db,
        }
    finally:
        client.disconnect()


async def test_snap7_client_reads_identity_and_data(decoy: RunningHoneypot, sink: Recorder) -> None:
    assert decoy.s7_port is not None
    session = await asyncio.to_thread(_s7_session, decoy.s7_port, identity_slot=decoy.identity.slot)
    identity = decoy.identity
    info, order = session["info"], session["order"]
    assert info.ModuleTypeName.decode() == identity.model  # type: ignore[attr-defined]
    assert info.SerialNumber.decode() == identity.serial_number  # type: ignore[attr-defined]
    assert info.ASName.decode() == identity.plc_name  # type: ignore[attr-defined]
    assert info.ModuleName.decode() == identity.module_name  # type: ignore[attr-defined]
    assert order.OrderCode.decode() == identity.order_number  # type: ignore[attr-defined]
    assert identity.firmware == (order.V1, order.V2, order.V3)  # type: ignore[attr-defined]
    assert (session["mode_before"], session["mode_after"]) == (0x08, 0x04)  # RUN, then STOP after plc_stop
    values = struct.unpack(">16f", session["db1"])  # type: ignore[arg-type]
    for channel, value in enumerate(values[:8]):
        spec = decoy.image.channels[channel]
        assert spec.base - 2 * spec.noise <= value <= spec.base + spec.amplitude + 2 * spec.noise
    assert session["written"] == b"\x12\x34"
    assert "0x0a" in str(session["missing_db"]).lower() or "not exist" in str(session["missing_db"]).lower()

    await _settle(sink, SightingKind.CLOSED, 1)
    requests = sink.requests(IcsProtocol.S7COMM)
    names = [m.function_name for m in requests]
    assert names[:2] == ["COTP_CR", "SETUP_COMMUNICATION"]
    assert {"CPU_FUNCTIONS", "READ_VAR", "WRITE_VAR", "PLC_STOP"} <= set(names)
    szl_ids = [m.fields.get("szl_id") for m in requests if m.fields.get("subfunction_name") == "READ_SZL"]
    assert {0x001C, 0x0011, 0x0424} <= set(szl_ids)
    assert any(m.fields.get("method") == 0x12 for m in requests)  # 0x001C came in two pieces
    write = next(m for m in requests if m.function_name == "WRITE_VAR")
    assert write.values == [b"\x12\x34"]
    assert write.fields["items"][0]["db"] == 3
    assert all(s.raw == s.message.raw for s in sink.sightings if s.message)


async def test_s7_garbage_and_unsupported_jobs(decoy: RunningHoneypot, sink: Recorder) -> None:
    assert decoy.s7_port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", decoy.s7_port)
    cr = bytes.fromhex("0300001611e00000000100c0010ac1020100c2020102")
    writer.write(cr)
    confirm = await reader.readexactly(22)
    assert confirm[5] == s7comm.COTP_CC
    upload = s7comm.encode_cotp_dt(bytes.fromhex("320100000700001200001d00000000000000095f3041303030303141"))
    writer.write(upload)
    header = await reader.readexactly(4)
    answer = await reader.readexactly(struct.unpack(">H", header[2:])[0] - 4)
    refusal = program_for(decoy.identity).refusal  # a protected CPU's answer to an upload
    assert struct.unpack(">H", answer[3 + 10 : 3 + 12])[0] == refusal
    writer.write(b"GET / HTTP/1.0\r\n\r\n")
    assert await reader.read() == b""  # a CPU hangs up on what is not ISO-on-TCP ... after the garbage run ends
    writer.close()
    await writer.wait_closed()
    await _settle(sink, SightingKind.CLOSED, 1)
    requests = sink.requests(IcsProtocol.S7COMM)
    assert requests[1].function_name == "START_UPLOAD"


# -- intelligence ----------------------------------------------------------------------------------


async def test_indicators_aggregate_both_services(decoy: RunningHoneypot, sink: Recorder) -> None:
    client = await _modbus(decoy.modbus_port)
    await client.read_device_information(read_code=1)
    await client.write_register(1, 5)
    client.close()
    assert decoy.s7_port is not None
    await asyncio.to_thread(_s7_session, decoy.s7_port, identity_slot=decoy.identity.slot)
    await _settle(sink, SightingKind.CLOSED, 2)

    indicators = build_indicators(sink.sightings)
    assert len(indicators) == 1
    indicator = indicators[0]
    assert indicator.address == "127.0.0.1"
    assert indicator.connections == sum(s.kind is SightingKind.CONNECTED for s in sink.sightings) == 2
    assert indicator.requests == sum(s.kind is SightingKind.REQUEST for s in sink.sightings)
    assert indicator.protocols == {IcsProtocol.MODBUS, IcsProtocol.S7COMM}
    assert {"write", "identification", "stop_cpu", "scan_both_services"} <= indicator.notable
    assert indicator.actions["write"] == 2  # one Modbus write, one S7 write var
    assert indicator.severity == "high"
    assert indicator.first_seen == min(s.time for s in sink.sightings)
    assert indicator.last_seen == max(s.time for s in sink.sightings)
    assert indicator.to_dict()["protocols"] == ["modbus", "s7comm"]


def test_indicators_separate_sources_and_order_by_last_seen() -> None:
    import datetime as dt

    base = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    local = Endpoint("192.0.2.1", 502)

    def sighting(host: str, minute: int, kind: SightingKind, message: IcsMessage | None = None) -> HoneypotSighting:
        return HoneypotSighting(
            kind, IcsProtocol.MODBUS, Endpoint(host, 40000), local, base + dt.timedelta(minutes=minute), 1, message
        )

    read = IcsMessage(
        IcsProtocol.MODBUS,
        s7comm.Direction.REQUEST,
        Endpoint("x", 1),
        local,
        function=3,
        function_name="READ_HOLDING_REGISTERS",
    )
    book = IndicatorBook()
    for item in [
        sighting("198.51.100.7", 5, SightingKind.CONNECTED),
        sighting("203.0.113.9", 1, SightingKind.CONNECTED),
        sighting("203.0.113.9", 2, SightingKind.REQUEST, read),
        sighting("198.51.100.7", 6, SightingKind.CLOSED),
    ]:
        book.add(item)
    probe, reader = book.indicators()
    assert (probe.address, probe.first_seen.minute, probe.last_seen.minute) == ("198.51.100.7", 5, 6)
    assert probe.notable == {"connect_only"}
    assert probe.severity == "low"
    assert (reader.requests, reader.functions["modbus:READ_HOLDING_REGISTERS"]) == (1, 1)


# -- no outbound connections -------------------------------------------------------------------------


async def test_decoy_only_listens(decoy: RunningHoneypot) -> None:
    for server in decoy.servers.values():
        for sock in server.sockets:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    source_dir = Path(honeypot_package.__file__).parent
    outbound = {
        "open_connection",
        "create_connection",
        "sock_connect",
        "connect",
        "connect_ex",
        "create_datagram_endpoint",
        "urlopen",
    }
    for path in source_dir.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        calls = {
            n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
            for n in ast.walk(tree)
            if isinstance(n, ast.Call)
        }
        assert not calls & outbound, f"{path.name} opens connections"
        imported = {
            alias.name for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom) for alias in n.names
        }
        assert not imported & {"httpx", "requests", "urllib", "smtplib"}
