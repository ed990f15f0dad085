"""The Modbus/TCP codec: frames built by pymodbus' own framer, real captures cross-checked with
scapy's Modbus layer, and properties (never raises, any split gives the same records)."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymodbus.framer import FramerSocket
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu import bit_message as bits
from pymodbus.pdu import diag_message as diag
from pymodbus.pdu import file_message as files
from pymodbus.pdu import mei_message as mei
from pymodbus.pdu import other_message as other
from pymodbus.pdu import register_message as registers

from iip.security.capture import iter_capture, read_capture
from iip.security.protocols.base import Direction, Endpoint, IcsMessage
from iip.security.protocols.modbus import ModbusSession, ModbusStreamDecoder, decode_frame
from tests.security.conftest import MODBUS_ATTACKS, PCAPS, require_dataset

CLIENT, SERVER = Endpoint("10.0.0.1", 50000), Endpoint("10.0.0.2", 502)


def frame(pdu: ModbusPDU) -> bytes:
    return bytes(FramerSocket(DecodePDU(False)).buildFrame(pdu))


def record_key(msg: IcsMessage) -> tuple[Any, ...]:
    return (msg.function, msg.unit, msg.transaction, msg.address, msg.quantity, msg.values, msg.malformed, msg.raw)


# (pdu built by pymodbus, is it a request, what the record must say)
CASES: list[tuple[ModbusPDU, bool, dict[str, Any]]] = [
    (bits.ReadCoilsRequest(address=10, count=12, dev_id=3, transaction_id=7), True,
     {"function_name": "READ_COILS", "unit": 3, "transaction": 7, "address": 10, "quantity": 12}),
    (bits.ReadDiscreteInputsRequest(address=1, count=2, dev_id=1), True,
     {"function_name": "READ_DISCRETE_INPUTS", "address": 1, "quantity": 2}),
    (bits.ReadCoilsResponse(bits=[True, False, True, True, False, False, False, False], dev_id=3), False,
     {"values": [True, False, True, True, False, False, False, False]}),
    (registers.ReadHoldingRegistersRequest(address=100, count=3, dev_id=9, transaction_id=65535), True,
     {"function_name": "READ_HOLDING_REGISTERS", "unit": 9, "transaction": 65535, "address": 100, "quantity": 3}),
    (registers.ReadInputRegistersResponse(registers=[1, 65535, 0x1234], dev_id=1), False,
     {"function_name": "READ_INPUT_REGISTERS", "values": [1, 65535, 0x1234], "quantity": 3}),
    (bits.WriteSingleCoilRequest(address=17, bits=[True], dev_id=1), True,
     {"function_name": "WRITE_SINGLE_COIL", "address": 17, "values": [True]}),
    (registers.WriteSingleRegisterRequest(address=40, registers=[777], dev_id=1), True,
     {"function_name": "WRITE_SINGLE_REGISTER", "address": 40, "values": [777]}),
    (bits.WriteMultipleCoilsRequest(address=5, bits=[True, True, False, True, False, False, True, False, True]), True,
     {"function_name": "WRITE_MULTIPLE_COILS", "address": 5, "quantity": 9,
      "values": [True, True, False, True, False, False, True, False, True]}),
    (registers.WriteMultipleRegistersRequest(address=2, registers=[10, 20, 30], dev_id=1), True,
     {"function_name": "WRITE_MULTIPLE_REGISTERS", "address": 2, "quantity": 3, "values": [10, 20, 30]}),
    (registers.WriteMultipleRegistersResponse(address=2, count=3, dev_id=1), False,
     {"address": 2, "quantity": 3}),
    (registers.MaskWriteRegisterRequest(address=4, and_mask=0xF2, or_mask=0x25), True,
     {"function_name": "MASK_WRITE_REGISTER", "address": 4, "fields": {"and_mask": 0xF2, "or_mask": 0x25}}),
    (registers.ReadWriteMultipleRegistersRequest(read_address=3, read_count=6, write_address=14,
                                                 write_registers=[0xFF, 0xFF, 0xFF]), True,
     {"function_name": "READ_WRITE_MULTIPLE_REGISTERS", "address": 3, "quantity": 6, "values": [0xFF] * 3,
      "fields": {"write_start_address": 14, "read_quantity": 6}}),
    (registers.ReadWriteMultipleRegistersResponse(registers=[5, 6], dev_id=1), False,
     {"values": [5, 6], "fields": {"read_registers": [5, 6]}}),
    (other.ReadExceptionStatusRequest(dev_id=1), True, {"function_name": "READ_EXCEPTION_STATUS"}),
    (other.ReadExceptionStatusResponse(status=0x6D, dev_id=1), False, {"values": [0x6D]}),
    (diag.ReturnQueryDataRequest(message=0xA537, dev_id=1), True,
     {"function_name": "DIAGNOSTICS", "values": [0xA537], "fields": {"sub_function_name": "RETURN_QUERY_DATA"}}),
    (other.GetCommEventCounterRequest(dev_id=1), True, {"function_name": "GET_COMM_EVENT_COUNTER"}),
    (other.GetCommEventCounterResponse(count=264, dev_id=1), False, {"fields": {"event_count": 264}}),
    (other.GetCommEventLogRequest(dev_id=1), True, {"function_name": "GET_COMM_EVENT_LOG"}),
    (other.GetCommEventLogResponse(message_count=0x121, event_count=0x108, events=[0x20, 0x00], dev_id=1), False,
     {"fields": {"event_count": 0x108, "message_count": 0x121, "events": [0x20, 0x00]}}),
    (other.ReportDeviceIdRequest(dev_id=1), True, {"function_name": "REPORT_SERVER_ID"}),
    (other.ReportDeviceIdResponse(identifier=b"PLC-7", dev_id=1), False,
     {"fields": {"server_id": b"PLC-7".hex(), "run_indicator": True}}),
    (files.ReadFileRecordRequest(records=[files.FileRecord(file_number=4, record_number=1, record_data=b"abcd")]), True,
     {"function_name": "READ_FILE_RECORD", "quantity": 1,
      "fields": {"file_records": [{"file_number": 4, "record_number": 1, "record_length": 2}]}}),
    (files.WriteFileRecordRequest(records=[files.FileRecord(file_number=4, record_number=7,
                                                            record_data=b"\x06\xaf\x04\xbe")]), True,
     {"function_name": "WRITE_FILE_RECORD", "values": [0x06AF, 0x04BE]}),
    (files.ReadFifoQueueRequest(address=0x4D2, dev_id=1), True, {"function_name": "READ_FIFO_QUEUE", "address": 0x4D2}),
    (files.ReadFifoQueueResponse(values=[0x1B8, 0x1284], dev_id=1), False, {"values": [0x1B8, 0x1284], "quantity": 2}),
    (mei.ReadDeviceInformationRequest(read_code=1, object_id=0, dev_id=1), True,
     {"function_name": "ENCAP_INTERFACE_TRANSPORT", "fields": {"mei_type": 14, "device_id_code": 1}}),
    (ExceptionResponse(3, 2, device_id=4), False,
     {"function_name": "READ_HOLDING_REGISTERS", "unit": 4, "exception": 2, "exception_name": "ILLEGAL_DATA_ADDRESS"}),
]  # fmt: skip


@pytest.mark.parametrize(("pdu", "request_", "expected"), CASES, ids=lambda v: type(v).__name__)
def test_pymodbus_frames_decode_to_what_they_say(pdu: ModbusPDU, request_: bool, expected: dict[str, Any]) -> None:
    msg = decode_frame(frame(pdu), to_server=request_)
    assert msg.malformed == ""
    assert msg.direction is (Direction.REQUEST if request_ else Direction.RESPONSE)
    assert msg.function == pdu.function_code & 0x7F
    for name, value in expected.items():
        if name == "fields":
            for key, want in value.items():
                assert msg.fields[key] == want, key
        else:
            assert getattr(msg, name) == value, name


def test_device_identification_objects_by_name() -> None:
    information = {0: b"Acme Corp", 1: b"PX-200", 2: b"v2.1", 0x81: b"line 3"}
    pdu = mei.ReadDeviceInformationResponse(read_code=3, information=information, dev_id=1, transaction_id=3)
    msg = decode_frame(frame(pdu), to_server=False)
    assert msg.malformed == ""
    assert msg.fields["device_identification"] == {
        "VendorName": "Acme Corp",
        "ProductCode": "PX-200",
        "MajorMinorRevision": "v2.1",
        "Object0x81": "line 3",
    }
    assert msg.quantity == 4


def test_session_lends_request_address_and_trims_coils() -> None:
    session = ModbusSession()
    requests = ModbusStreamDecoder(CLIENT, SERVER, to_server=True, session=session)
    responses = ModbusStreamDecoder(SERVER, CLIENT, to_server=False, session=session)
    requests.feed(frame(bits.ReadCoilsRequest(address=20, count=3, dev_id=1, transaction_id=5)))
    [msg] = responses.feed(frame(bits.ReadCoilsResponse(bits=[True, False, True] + [False] * 5, transaction_id=5,
                                                        dev_id=1)))  # fmt: skip
    assert (msg.address, msg.quantity, msg.values) == (20, 3, [True, False, True])


@pytest.mark.parametrize(
    ("raw", "to_server", "reason"),
    [
        ("0001000000060103000a", True, "MBAP length does not match frame"),
        ("00010000000401030001", True, "wrong PDU length for function"),
        ("000100000006010304000100", False, "byte count does not match data"),
        ("00010000000601050001abcd", True, "coil value is neither 0x0000 nor 0xFF00"),
        ("000100000002", True, "frame shorter than MBAP header and function code"),
        ("00010001000201030001", True, "protocol id is not 0"),
        ("000100000003018302", True, "exception function code in a request"),
    ],
)
def test_malformed_frames_say_why(raw: str, to_server: bool, reason: str) -> None:
    msg = decode_frame(bytes.fromhex(raw), to_server=to_server)
    assert msg.malformed == reason


def test_garbage_then_frames_resynchronises() -> None:
    good = frame(registers.ReadHoldingRegistersRequest(address=1, count=2, dev_id=1, transaction_id=9))
    decoder = ModbusStreamDecoder(CLIENT, SERVER, to_server=True)
    messages = decoder.feed(b"GET / HTTP/1.1\r\n\r\n" + good + good)
    assert [m.malformed for m in messages] == ["bytes that are not a Modbus/TCP frame", "", ""]
    assert [m.address for m in messages[1:]] == [1, 1]


VALID_FRAMES = [frame(pdu) for pdu, _, _ in CASES]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    for to_server in (True, False):
        decode_frame(data, to_server=to_server)
        decoder = ModbusStreamDecoder(CLIENT, SERVER, to_server=to_server)
        decoder.feed(data)
        decoder.finish()


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VALID_FRAMES), st.lists(st.tuples(st.integers(0, 300), st.integers(0, 255)), max_size=6),
       st.booleans())  # fmt: skip
def test_mutated_frames_never_raise(valid: bytes, edits: list[tuple[int, int]], to_server: bool) -> None:
    mutated = bytearray(valid)
    for position, value in edits:
        if mutated:
            mutated[position % len(mutated)] = value
    msg = decode_frame(bytes(mutated), to_server=to_server)
    assert msg.raw == bytes(mutated)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(st.sampled_from(VALID_FRAMES), st.binary(max_size=20)), min_size=1, max_size=8),
    st.lists(st.integers(0, 2000), max_size=10),
)
def test_any_split_gives_the_same_records(pieces: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(pieces)
    whole = ModbusStreamDecoder(CLIENT, SERVER, to_server=True)
    expected = [record_key(m) for m in whole.feed(stream) + whole.finish()]
    split = ModbusStreamDecoder(CLIENT, SERVER, to_server=True)
    got: list[IcsMessage] = []
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    for start, end in itertools.pairwise(bounds):
        got += split.feed(stream[start:end])
    got += split.finish()
    assert [record_key(m) for m in got] == expected


# --- real captures ------------------------------------------------------------------------------


def _scapy_modbus() -> Any:
    scapy = pytest.importorskip("scapy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from scapy.contrib import modbus
        from scapy.layers.inet import TCP
        from scapy.utils import rdpcap
    return scapy, modbus, TCP, rdpcap


def test_capture_agrees_with_scapy_modbus_layer() -> None:
    """Every single-frame Modbus packet of a real capture: unit, function, address, quantity and
    register values as scapy's independent dissector reads them."""
    path = require_dataset(PCAPS / "ModbusTCP" / "ModbusTCP.pcap")
    _scapy, modbus, tcp_layer, rdpcap = _scapy_modbus()
    ours: dict[int, IcsMessage] = {}
    for _info, messages in iter_capture(path):
        for msg in messages:
            if msg.frame is not None and not msg.malformed:
                ours[msg.frame] = msg
    compared = 0
    for number, packet in enumerate(rdpcap(str(path), count=2000), start=1):
        if tcp_layer not in packet or number not in ours:
            continue
        payload = bytes(packet[tcp_layer].payload)
        request = packet[tcp_layer].dport == 502
        adu = (modbus.ModbusADURequest if request else modbus.ModbusADUResponse)(payload)
        msg = ours[number]
        if payload != msg.raw:
            continue  # several frames in one segment, or one split over several: scapy reads one packet
        pdu = adu.payload
        if not hasattr(pdu, "funcCode"):
            continue  # a function scapy has no layer for
        assert (msg.unit, msg.transaction, msg.function) == (adu.unitId, adu.transId, pdu.funcCode & 0x7F)
        if hasattr(pdu, "startAddr"):
            assert msg.address == pdu.startAddr
        if hasattr(pdu, "quantity"):
            assert msg.quantity == pdu.quantity
        if hasattr(pdu, "registerVal") and pdu.funcCode in (3, 4):
            assert msg.values == list(pdu.registerVal)
        compared += 1
    assert compared > 500


MODBUS_CAPTURES = [
    "ModbusTCP/ModbusTCP.pcap",
    "ModbusTCP/mb2.pcap",
    "ModbusTCP/modbus_test_data_part1.pcap",
    "ModbusTCP/modbus_test_data_part2.pcap",
    "ModbusTCP/Modbus/modbus_test.pcap",
    "ModbusTCP/Modbus/modbus_test_2.pcap",
    "bro/modbus/modbusSmall.pcap",
    "bro/modbus/modbusBig.pcap",
    "bro/modbus/fuzz-72.pcap",
    "bro/modbus/fuzz-1011.pcap",
]


@pytest.mark.parametrize("name", MODBUS_CAPTURES)
def test_modbus_captures_decode(name: str) -> None:
    summary = read_capture(require_dataset(PCAPS / name))
    assert summary.error == ""
    assert summary.protocols["modbus"] > 0
    good = [m for m in summary.messages if m.protocol == "modbus" and not m.malformed]
    assert len(good) >= summary.protocols["modbus"] * 0.5  # the fuzz captures are mostly garbage
    assert all(m.function is not None for m in good)


def test_modbus_attack_captures_show_the_writes(tmp_path: Path) -> None:
    """The CSET'16 captures: every one reads to its end, and the fake-command one holds writes."""
    folder = require_dataset(MODBUS_ATTACKS)
    summaries = {path.name: read_capture(path) for path in sorted(folder.glob("*.pcap"))}
    assert len(summaries) == 5
    for summary in summaries.values():
        assert summary.error == ""
        assert summary.protocols["modbus"] > 100
    fake = summaries["send_a_fake_command_modbus_6RTU_with_operate.pcap"]
    writes = [m for m in fake.messages if m.function in (5, 6, 15, 16) and m.direction is Direction.REQUEST]
    assert writes
    assert all(m.address is not None and m.values for m in writes if not m.malformed)
