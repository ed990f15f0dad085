"""The IEC 60870-5-104 codec: APCI and ASDU fields, real captures checked against scapy's IEC 104
layer, and properties (never raises, any split gives the same records)."""

from __future__ import annotations

import itertools
import struct
import warnings
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iip.security.capture import iter_capture, read_capture
from iip.security.protocols.base import Direction, Endpoint, IcsMessage
from iip.security.protocols.iec104 import Iec104StreamDecoder, cp56time2a, decode_frame
from tests.security.conftest import PCAPS, require_dataset

CLIENT, SERVER = Endpoint("10.0.0.1", 50000), Endpoint("10.0.0.2", 2404)
IEC104_CAPTURES = ["090813_diverse.pcap", "JavaRMI_and_IEC_Misc.pcap", "TestDissectIec104.pcap"]


def apdu(body: bytes) -> bytes:
    return bytes([0x68, len(body)]) + body


def i_frame(tx: int, rx: int, asdu: bytes) -> bytes:
    return apdu(struct.pack("<HH", tx << 1, rx << 1) + asdu)


def cp56(millis: int, minute: int, hour: int, day: int, month: int, year: int) -> bytes:
    return struct.pack("<H", millis) + bytes([minute, hour, day, month, year])


def key(msg: IcsMessage) -> tuple[Any, ...]:
    return (msg.function, msg.unit, msg.address, msg.quantity, msg.values, msg.malformed, msg.raw)


# M_ME_NC_1, 2 objects, spontaneous, originator 0, common address 3: IOA 1300 = 30.5, IOA 1301 = -2.0
FLOATS = i_frame(77, 20, bytes([13, 2, 3, 0, 3, 0]) + (1300).to_bytes(3, "little") + struct.pack("<fB", 30.5, 0)
                 + (1301).to_bytes(3, "little") + struct.pack("<fB", -2.0, 0x80))  # fmt: skip
# C_SC_TA_1 (single command with time), activation, IOA 5000, ON, select; 2024-02-29 13:45:12.345
COMMAND = i_frame(1, 2, bytes([58, 1, 6, 7, 0x34, 0x12]) + (5000).to_bytes(3, "little") + bytes([0x81])
                  + cp56(12345, 45, 13, 29, 2, 24))  # fmt: skip
# M_SP_NA_1 with SQ: 3 consecutive points from IOA 100, interrogated (inrogen), negative confirm bit clear
SEQUENCE = i_frame(5, 6, bytes([1, 0x83, 20, 0, 1, 0]) + (100).to_bytes(3, "little") + bytes([1, 0, 0x81]))


def test_float_measurements() -> None:
    msg = decode_frame(FLOATS, to_server=False)
    assert msg.malformed == ""
    assert (msg.function, msg.function_name, msg.unit, msg.address, msg.quantity) == (13, "M_ME_NC_1", 3, 1300, 2)
    assert msg.values == [30.5, -2.0]
    assert msg.direction is Direction.UNSOLICITED
    assert (msg.fields["apci_type"], msg.fields["apci_tx"], msg.fields["apci_rx"]) == ("I", 77, 20)
    assert (msg.fields["cause_tx_name"], msg.fields["negative"], msg.fields["test"]) == ("spont", False, False)
    assert msg.fields["objects"][1]["invalid"] is True


def test_command_with_cp56_time() -> None:
    msg = decode_frame(COMMAND, to_server=True)
    assert (msg.function_name, msg.direction, msg.unit) == ("C_SC_TA_1", Direction.REQUEST, 0x1234)
    [element] = msg.fields["objects"]
    assert (element["ioa"], element["value"], element["select"]) == (5000, True, True)
    assert element["time"] == "2024-02-29T13:45:12.345"
    assert msg.fields["originator_address"] == 7


def test_sequence_of_elements() -> None:
    msg = decode_frame(SEQUENCE, to_server=False)
    assert [o["ioa"] for o in msg.fields["objects"]] == [100, 101, 102]
    assert msg.values == [True, False, True]
    assert msg.fields["objects"][2]["invalid"] is True
    assert msg.direction is Direction.RESPONSE  # an answer to a general interrogation


@pytest.mark.parametrize(
    ("control", "name", "direction"),
    [("07000000", "STARTDT_ACT", Direction.REQUEST), ("0b000000", "STARTDT_CON", Direction.RESPONSE),
     ("13000000", "STOPDT_ACT", Direction.REQUEST), ("83000000", "TESTFR_CON", Direction.RESPONSE)],
)  # fmt: skip
def test_u_frames(control: str, name: str, direction: Direction) -> None:
    msg = decode_frame(apdu(bytes.fromhex(control)), to_server=direction is Direction.REQUEST)
    assert (msg.function_name, msg.fields["apci_type"], msg.direction) == (name, "U", direction)


def test_s_frame() -> None:
    msg = decode_frame(apdu(struct.pack("<HH", 1, 300 << 1)), to_server=True)
    assert (msg.fields["apci_type"], msg.fields["apci_rx"]) == ("S", 300)


def test_negative_confirmation_is_an_exception() -> None:
    refused = i_frame(3, 4, bytes([45, 1, 0x40 | 47, 0, 1, 0]) + (9).to_bytes(3, "little") + b"\x01")
    msg = decode_frame(refused, to_server=False)
    assert (msg.fields["negative"], msg.exception, msg.exception_name) == (True, 47, "unknown_object_address")


def test_invalid_cp56_time_is_none() -> None:
    assert cp56time2a(cp56(0, 0, 0, 31, 2, 24)) is None  # 31 February


def test_wrong_object_count_is_malformed() -> None:
    short = FLOATS[:-8]
    msg = decode_frame(bytes([0x68, len(short) - 2]) + short[2:], to_server=False)
    assert msg.malformed == "ASDU length does not match its objects"


VALID = [FLOATS, COMMAND, SEQUENCE, apdu(bytes.fromhex("07000000")), apdu(bytes.fromhex("01000a00"))]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    decode_frame(data, to_server=False)
    decode_frame(b"\x68" + bytes([len(data)]) + data if len(data) < 256 else data, to_server=True)
    decoder = Iec104StreamDecoder(SERVER, CLIENT, to_server=False)
    decoder.feed(data)
    decoder.finish()


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VALID), st.lists(st.tuples(st.integers(2, 300), st.integers(0, 255)), min_size=1, max_size=5))
def test_mutated_frames_never_raise(valid: bytes, edits: list[tuple[int, int]]) -> None:
    mutated = bytearray(valid)
    for position, value in edits:
        mutated[2 + position % (len(mutated) - 2)] = value  # keep the APCI start and length: reach the ASDU
    msg = decode_frame(bytes(mutated), to_server=False)
    assert msg.fields.get("apci_type") or msg.malformed


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(st.sampled_from(VALID), st.binary(max_size=20)), min_size=1, max_size=8),
    st.lists(st.integers(0, 1000), max_size=10),
)
def test_any_split_gives_the_same_records(pieces: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(pieces)
    whole = Iec104StreamDecoder(SERVER, CLIENT, to_server=False)
    expected = [key(m) for m in whole.feed(stream) + whole.finish()]
    split = Iec104StreamDecoder(SERVER, CLIENT, to_server=False)
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    got = [m for a, b in itertools.pairwise(bounds) for m in split.feed(stream[a:b])] + split.finish()
    assert [key(m) for m in got] == expected


# --- real captures ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", IEC104_CAPTURES)
def test_captures_agree_with_scapy_iec104_layer(name: str) -> None:
    """Every packet holding exactly one APDU: APCI type and sequence numbers, and for I frames the
    type id, cause, common address, object count and IOAs as scapy's dissector reads them."""
    path = require_dataset(PCAPS / "IEC60870-5-104" / name)
    pytest.importorskip("scapy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from scapy.contrib.scada import iec104
        from scapy.layers.inet import TCP
        from scapy.utils import rdpcap
    ours = {m.frame: m for _info, messages in iter_capture(path) for m in messages if not m.malformed}
    compared = 0
    for number, packet in enumerate(rdpcap(str(path)), start=1):
        msg = ours.get(number)
        if TCP not in packet or msg is None or bytes(packet[TCP].payload) != msg.raw:
            continue
        layer = packet[TCP].payload
        if isinstance(layer, iec104.IEC104_U_Message):
            assert msg.fields["apci_type"] == "U"
        elif isinstance(layer, iec104.IEC104_S_Message):
            assert (msg.fields["apci_type"], msg.fields["apci_rx"]) == ("S", layer.rx_seq_num)
        elif isinstance(layer, iec104.IEC104_I_Message):
            assert (msg.fields["apci_tx"], msg.fields["apci_rx"]) == (layer.tx_seq_num, layer.rx_seq_num)
            assert (msg.function, msg.unit, msg.fields["cause_tx"]) == (layer.type_id, layer.common_asdu_address,
                                                                        layer.cot)  # fmt: skip
            assert msg.quantity == layer.num_io
            ioas = [io.information_object_address for io in layer.io if hasattr(io, "information_object_address")]
            if "objects" in msg.fields and ioas and layer.sq == 0:
                assert [o["ioa"] for o in msg.fields["objects"]] == ioas
        else:
            continue
        compared += 1
    assert compared > 20


def test_every_iec104_capture_reads_with_counts() -> None:
    counts = {}
    for name in IEC104_CAPTURES:
        summary = read_capture(require_dataset(PCAPS / "IEC60870-5-104" / name))
        assert summary.error == ""
        counts[name] = summary.protocols["iec104"]
        good = [m for m in summary.messages if not m.malformed]
        assert {m.fields["apci_type"] for m in good} == {"I", "S", "U"}
    assert all(count > 20 for count in counts.values())
