"""The decoy PLC's Modbus mask write (22) and read/write multiple registers (23) against pymodbus,
and its S7 block functions against python-snap7: the program it lists and describes, and the block
transfers a protected CPU refuses. Same style as test_honeypot: free ports, a hand-moved clock."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
import snap7
from snap7.error import S7Error
from snap7.type import Block

from iip.security.honeypot import RunningHoneypot, SightingKind, build_indicators
from iip.security.honeypot.blocks import ERROR_NOT_IMPLEMENTED, ERROR_PROTECTION_LEVEL, program_for
from iip.security.honeypot.identity import identity_for
from iip.security.honeypot.registers import DB_SIZES
from iip.security.protocols import s7comm
from iip.security.protocols.base import IcsProtocol
from tests.security.test_honeypot import ManualClock, Recorder, _modbus, _settle, _start, clock, decoy, sink

__all__ = ["clock", "decoy", "sink"]  # fixtures, used by name

BLOCK_KINDS = (Block.OB, Block.FB, Block.FC, Block.DB, Block.SDB, Block.SFC, Block.SFB)


@pytest.fixture
async def s7_300(clock: ManualClock, sink: Recorder) -> AsyncIterator[RunningHoneypot]:
    running = await _start("plant-300", clock, sink, family="S7-300")
    async with running:
        yield running


@pytest.fixture
async def s7_1200(clock: ManualClock, sink: Recorder) -> AsyncIterator[RunningHoneypot]:
    running = await _start("plant-1200", clock, sink, family="S7-1200")
    async with running:
        yield running


# -- Modbus 22 and 23 -------------------------------------------------------------------------------


async def test_mask_write_changes_the_register_as_a_device_does(decoy: RunningHoneypot, sink: Recorder) -> None:
    client = await _modbus(decoy.modbus_port)
    assert not (await client.write_register(40, 0x0012)).isError()
    masked = await client.mask_write_register(address=40, and_mask=0x00F2, or_mask=0x0025)
    after = (await client.read_holding_registers(40, count=1)).registers
    outside = await client.mask_write_register(address=400, and_mask=0, or_mask=1)
    client.close()
    assert not masked.isError()
    assert (masked.address, masked.and_mask, masked.or_mask) == (40, 0x00F2, 0x0025)
    assert after == [0x0017]  # the worked example of the Modbus specification, §6.16
    assert outside.isError()
    assert outside.exception_code == 2
    assert decoy.image.holding_registers(40, 1) == [0x0017]
    await _settle(sink, SightingKind.CLOSED, 1)
    names = [m.function_name for m in sink.requests(IcsProtocol.MODBUS)]
    assert names.count("MASK_WRITE_REGISTER") == 2  # the refused one is logged too


async def test_read_write_registers_writes_first_then_reads(decoy: RunningHoneypot, sink: Recorder) -> None:
    client = await _modbus(decoy.modbus_port)
    setpoints = (await client.read_holding_registers(0, count=3)).registers
    both = await client.readwrite_registers(read_address=0, read_count=4, write_address=2, values=[111, 222])
    read_back = (await client.read_holding_registers(0, count=4)).registers
    too_many = await _raw_read_write(decoy, read_count=126, write_address=50, values=[1])
    beyond = await client.readwrite_registers(read_address=120, read_count=10, write_address=60, values=[9])
    client.close()
    assert not both.isError()
    assert both.registers == [setpoints[0], setpoints[1], 111, 222]  # the read sees the write
    assert read_back == both.registers
    assert too_many == bytes([23 | 0x80, 3])  # pymodbus will not send it: read the answer by hand
    assert beyond.isError()
    assert beyond.exception_code == 2
    assert decoy.image.holding_registers(50, 1) == [0]  # a refused request writes nothing
    assert decoy.image.holding_registers(60, 1) == [0]
    await _settle(sink, SightingKind.CLOSED, 1)
    requests = [m for m in sink.requests(IcsProtocol.MODBUS) if m.function == 23]
    assert len(requests) == 3
    assert requests[0].fields["write_registers"] == [111, 222]
    (indicator,) = build_indicators(sink.sightings)
    assert indicator.actions["write"] == 3  # each 23 is a write, refused or not


async def _raw_read_write(decoy: RunningHoneypot, *, read_count: int, write_address: int, values: list[int]) -> bytes:
    """A function 23 request built by hand (beyond what pymodbus agrees to send); the answer PDU."""
    assert decoy.modbus_port is not None
    body = struct.pack(">BHHHHB", 23, 0, read_count, write_address, len(values), 2 * len(values))
    body += struct.pack(f">{len(values)}H", *values)
    reader, writer = await asyncio.open_connection("127.0.0.1", decoy.modbus_port)
    writer.write(struct.pack(">HHHB", 9, 0, len(body) + 1, 1) + body)
    await writer.drain()
    header = await asyncio.wait_for(reader.readexactly(7), 5)
    answer = await reader.readexactly(struct.unpack(">H", header[4:6])[0] - 1)
    writer.close()
    await writer.wait_closed()
    return answer


# -- S7 block functions ----------------------------------------------------------------------------


def _client(port: int, slot: int) -> Any:
    client = snap7.Client()
    client.connect("127.0.0.1", 0, slot, tcp_port=port)
    return client


def _directory(port: int, slot: int) -> dict[str, Any]:
    """python-snap7's view of the program (blocking, run in a thread)."""
    client = _client(port, slot)
    try:
        counts = client.list_blocks()
        numbers: dict[str, list[int] | str] = {}
        for kind in BLOCK_KINDS:
            try:
                numbers[kind.name] = client.list_blocks_of_type(kind, 10_000)
            except S7Error as error:
                numbers[kind.name] = str(error)
        infos = {}
        for kind in (Block.OB, Block.FB, Block.FC, Block.DB):
            listed = numbers[kind.name]
            assert isinstance(listed, list)
            infos[kind.name] = [client.get_block_info(kind, number) for number in listed]
        try:
            client.get_block_info(Block.FB, 999)
            missing = ""
        except S7Error as error:
            missing = str(error)
        db1 = bytes(client.db_read(1, 0, DB_SIZES[1]))
        return {"counts": counts, "numbers": numbers, "infos": infos, "missing": missing, "db1": db1}
    finally:
        client.disconnect()


async def test_the_program_is_listed_consistently_on_an_s7_300(s7_300: RunningHoneypot, sink: Recorder) -> None:
    assert s7_300.s7_port is not None
    seen = await asyncio.to_thread(_directory, s7_300.s7_port, s7_300.identity.slot)
    counts, numbers = seen["counts"], seen["numbers"]
    for kind in BLOCK_KINDS:
        assert getattr(counts, f"{kind.name}Count") == len(numbers[kind.name]), kind.name
        assert numbers[kind.name] == sorted(numbers[kind.name])
    assert numbers["DB"] == sorted(DB_SIZES)  # the process image's data blocks, no more
    assert 1 in numbers["OB"]
    assert 100 in numbers["OB"]
    assert len(numbers["SFC"]) * 4 > 240  # longer than one PDU: python-snap7 asked for the rest
    for info in seen["infos"]["DB"]:
        assert info.MC7Size == DB_SIZES[info.BlkNumber]
        assert info.BlkLang == 0x05
        assert info.LoadSize > info.MC7Size
    for kind in ("OB", "FB", "FC"):
        assert [i.BlkNumber for i in seen["infos"][kind]] == numbers[kind]
        assert {i.BlkType for i in seen["infos"][kind]} == {Block[kind].value}
        assert all(i.MC7Size > 0 and i.Author for i in seen["infos"][kind])
    assert "0xd209" in seen["missing"].lower()
    assert len(seen["db1"]) == DB_SIZES[1]

    # The same program on every connection, and after a restart: it is the seed's.
    again = await asyncio.to_thread(_directory, s7_300.s7_port, s7_300.identity.slot)
    assert again["numbers"] == numbers
    assert program_for(identity_for("plant-300", family="S7-300", speaks_s7=True)).numbers(0x45) == numbers["FB"]

    await _settle(sink, SightingKind.CLOSED, 2)
    block_requests = [m for m in sink.requests(IcsProtocol.S7COMM) if m.function == s7comm.GROUP_BLOCK]
    assert {m.fields["subfunction_name"] for m in block_requests} == {
        "LIST_BLOCKS",
        "LIST_BLOCKS_OF_TYPE",
        "GET_BLOCK_INFO",
    }
    assert any(m.fields.get("method") == 0x12 for m in block_requests)  # the follow-ups are logged too
    (indicator,) = build_indicators(sink.sightings)
    assert "block_listing" in indicator.notable


async def test_an_s7_1200_lists_only_its_user_program(s7_1200: RunningHoneypot) -> None:
    assert s7_1200.s7_port is not None
    seen = await asyncio.to_thread(_directory, s7_1200.s7_port, s7_1200.identity.slot)
    assert (seen["counts"].SFCCount, seen["counts"].SFBCount, seen["counts"].SDBCount) == (0, 0, 0)
    assert "0x0a" in str(seen["numbers"]["SFC"]).lower()  # object does not exist
    assert seen["numbers"]["DB"] == sorted(DB_SIZES)
    assert seen["counts"].FBCount == len(seen["numbers"]["FB"]) > 0


def _transfers(port: int, slot: int) -> dict[str, int | None]:
    """Upload and download through python-snap7: the error code each is refused with."""
    codes: dict[str, int | None] = {}
    client = _client(port, slot)
    try:
        for name, call in (
            ("upload", lambda: client.upload(1)),
            ("full_upload", lambda: client.full_upload(Block.OB, 1)),
            ("download", lambda: client.download(bytearray(64), 7)),
        ):
            try:
                call()
                codes[name] = None
            except S7Error as error:
                codes[name] = error.error_code
    finally:
        client.disconnect()
    return codes


async def _delete_block(port: int) -> bytes:
    """A delete of FC 5 as STEP 7 sends it (PI service _DELE); the decoy's answer PDU."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(bytes.fromhex("0300001611e00000000100c0010ac1020100c2020102"))
    await reader.readexactly(22)
    block = b"\x00\x01\x00" + b"0C00005B"  # one block, ASCII type and number, file system
    param = bytes([0x28, 0, 0, 0, 0, 0, 0, 0xFD]) + struct.pack(">H", len(block)) + block + b"\x05_DELE"
    pdu = struct.pack(">BBHHHH", 0x32, 1, 0, 0x0500, len(param), 0) + param
    writer.write(s7comm.encode_cotp_dt(pdu))
    header = await reader.readexactly(4)
    answer = await reader.readexactly(struct.unpack(">H", header[2:])[0] - 4)
    writer.close()
    await writer.wait_closed()
    return answer[3:]  # without the COTP DT header


async def test_a_protected_s7_300_refuses_block_transfers_and_they_are_notable(
    s7_300: RunningHoneypot, sink: Recorder
) -> None:
    assert s7_300.s7_port is not None
    codes = await asyncio.to_thread(_transfers, s7_300.s7_port, s7_300.identity.slot)
    assert codes == {"upload": ERROR_PROTECTION_LEVEL, "full_upload": ERROR_PROTECTION_LEVEL, "download": 0xD241}
    answer = await _delete_block(s7_300.s7_port)
    assert answer[1] == s7comm.ROSCTR_ACK_DATA
    assert struct.unpack(">H", answer[10:12])[0] == ERROR_PROTECTION_LEVEL
    await _settle(sink, SightingKind.CLOSED, 2)
    requests = sink.requests(IcsProtocol.S7COMM)
    names = [m.function_name for m in requests]
    assert names.count("START_UPLOAD") == 2
    assert "REQUEST_DOWNLOAD" in names
    delete = next(m for m in requests if m.fields.get("pi_service") == "_DELE")
    assert delete.function_name == "PI_SERVICE"
    (indicator,) = build_indicators(sink.sightings)
    assert {"upload", "download", "delete"} <= indicator.notable
    assert indicator.severity == "high"
    assert s7_300.image.s7_size(0x84, 1) == DB_SIZES[1]  # nothing was replaced


async def test_an_s7_1200_refuses_them_as_not_offered(s7_1200: RunningHoneypot) -> None:
    assert s7_1200.s7_port is not None
    codes = await asyncio.to_thread(_transfers, s7_1200.s7_port, s7_1200.identity.slot)
    assert set(codes.values()) == {ERROR_NOT_IMPLEMENTED}
    answer = await _delete_block(s7_1200.s7_port)
    assert struct.unpack(">H", answer[10:12])[0] == ERROR_NOT_IMPLEMENTED
