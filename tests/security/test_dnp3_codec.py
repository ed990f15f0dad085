"""The DNP3 codec: CRCs, transport reassembly, application objects, real captures and properties."""

from __future__ import annotations

import itertools
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iip.security.capture import read_capture
from iip.security.protocols.base import Direction, Endpoint, IcsMessage
from iip.security.protocols.dnp3 import Dnp3StreamDecoder, crc16, decode_frame
from tests.security.conftest import PCAPS, require_dataset

MASTER, OUTSTATION = Endpoint("10.0.0.1", 40000), Endpoint("10.0.0.2", 20000)


def link_frame(user_data: bytes, *, control: int = 0xC4, destination: int = 10, source: int = 1) -> bytes:
    """A link frame with its CRCs (the CRC itself is checked against a published vector below)."""
    header = b"\x05\x64" + bytes([len(user_data) + 5, control]) + struct.pack("<HH", destination, source)
    out = header + crc16(header).to_bytes(2, "little")
    for start in range(0, len(user_data), 16):
        block = user_data[start : start + 16]
        out += block + crc16(block).to_bytes(2, "little")
    return out


def segments(fragment: bytes, size: int, *, first_seq: int = 0) -> list[bytes]:
    """The fragment cut into transport segments of `size` bytes, each in its own link frame."""
    chunks = [fragment[i : i + size] for i in range(0, len(fragment), size)]
    frames = []
    for n, chunk in enumerate(chunks):
        header = (first_seq + n) & 0x3F | (0x40 if n == 0 else 0) | (0x80 if n == len(chunks) - 1 else 0)
        frames.append(link_frame(bytes([header]) + chunk))
    return frames


def key(msg: IcsMessage) -> tuple[Any, ...]:
    return (msg.function, msg.unit, msg.address, msg.quantity, msg.values, msg.malformed, msg.raw)


# A response (seq 3) with IIN DEVICE_RESTART|NEED_TIME: g30v1 points 0..1, g1v1 packed 0..9,
# g20v2 count-qualified, g50v1 time.
RESPONSE = (
    bytes([0xC3, 0x81, 0x90, 0x00])
    + bytes([30, 1, 0x00, 0, 1])
    + bytes([0x01]) + struct.pack("<i", -5)
    + bytes([0x01]) + struct.pack("<i", 70000)
    + bytes([1, 1, 0x00, 0, 9]) + bytes([0b10100101, 0b10])
    + bytes([20, 2, 0x17, 1, 7, 0x01]) + struct.pack("<H", 321)
    + bytes([50, 1, 0x07, 1]) + (1_700_000_000_123).to_bytes(6, "little")
)  # fmt: skip
CROB = bytes([0xC1, 0x05, 12, 1, 0x28, 1, 0]) + struct.pack("<HBBIIB", 7, 0x41, 2, 500, 1000, 0)


def test_crc_matches_the_published_example() -> None:
    # IEEE 1815 annex example: reset link states from 1 to 1024, CRC E9 21 on the wire.
    assert crc16(bytes.fromhex("056405C001000004")) == 0x21E9


def test_response_objects_and_iin() -> None:
    msg = decode_frame(link_frame(b"\xc0" + RESPONSE), to_server=False)
    assert msg.malformed == ""
    assert (msg.function_name, msg.direction, msg.transaction, msg.unit) == ("RESPONSE", Direction.RESPONSE, 3, 10)
    assert msg.fields["iin"] == 0x9000
    assert msg.fields["iin_flags"] == ["DEVICE_RESTART", "NEED_TIME"]
    objects = msg.fields["objects"]
    assert [o["object_type"] for o in objects] == ["g30v1", "g1v1", "g20v2", "g50v1"]
    assert [(o["range_low"], o["range_high"], o["count"]) for o in objects[:2]] == [(0, 1, 2), (0, 9, 10)]
    assert [p["value"] for p in objects[0]["points"]] == [-5, 70000]
    assert [p["value"] for p in objects[1]["points"]] == [True, False, True, False, False, True, False, True,
                                                          False, True]  # fmt: skip
    assert objects[2]["points"] == [{"index": 7, "value": 321, "flags": 1}]
    assert objects[3]["points"][0]["value"] == "2023-11-14T22:13:20.123000+00:00"
    assert msg.quantity == 2 + 10 + 1 + 1


def test_crob_fields() -> None:
    msg = decode_frame(link_frame(b"\xc0" + CROB), to_server=True)
    assert (msg.function_name, msg.direction) == ("DIRECT_OPERATE", Direction.REQUEST)
    [point] = msg.fields["objects"][0]["points"]
    assert point["index"] == 7
    assert (point["operation_type"], point["trip_control_code"], point["execute_count"]) == ("PULSE_ON", "CLOSE", 2)
    assert (point["on_time"], point["off_time"], point["status_code"]) == (500, 1000, "SUCCESS")


def test_fragment_over_several_segments_is_reassembled() -> None:
    decoder = Dnp3StreamDecoder(OUTSTATION, MASTER, to_server=False)
    frames = segments(RESPONSE, 9, first_seq=62)  # the transport sequence wraps past 63
    records = [m for f in frames for m in decoder.feed(f)]
    assert len(records) == 1
    assert records[0].fields["objects"][0]["points"][1]["value"] == 70000


def test_out_of_sequence_segment_is_malformed() -> None:
    frames = segments(RESPONSE, 9)
    decoder = Dnp3StreamDecoder(OUTSTATION, MASTER, to_server=False)
    records = [m for f in [frames[0], frames[2]] for m in decoder.feed(f)]
    assert [m.malformed for m in records] == ["transport segment out of sequence"]


def test_bad_data_crc_is_malformed_and_decoding_goes_on() -> None:
    bad = bytearray(link_frame(b"\xc0" + CROB))
    bad[12] ^= 0xFF  # a byte of the first data block
    decoder = Dnp3StreamDecoder(MASTER, OUTSTATION, to_server=True)
    records = decoder.feed(bytes(bad) + link_frame(b"\xc1" + CROB))
    assert [m.malformed for m in records] == ["link data block CRC mismatch", ""]
    assert records[1].function_name == "DIRECT_OPERATE"


def test_bad_header_crc_resynchronises() -> None:
    bad = bytearray(link_frame(b"\xc0" + CROB))
    bad[8] ^= 0x01
    decoder = Dnp3StreamDecoder(MASTER, OUTSTATION, to_server=True)
    records = decoder.feed(bytes(bad) + link_frame(b"\xc1" + CROB))
    assert records[0].malformed == "link header CRC mismatch"
    assert records[-1].function_name == "DIRECT_OPERATE"
    assert not records[-1].malformed


def test_link_only_frame() -> None:
    msg = decode_frame(bytes.fromhex("056405C001000004E921"), to_server=True)
    assert (msg.function_name, msg.unit, msg.malformed) == ("LINK_RESET_LINK_STATES", 1, "")


VALID = [link_frame(b"\xc0" + RESPONSE), link_frame(b"\xc0" + CROB), *segments(RESPONSE, 20)]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    decode_frame(data, to_server=True)
    decoder = Dnp3StreamDecoder(MASTER, OUTSTATION, to_server=False)
    decoder.feed(data)
    decoder.feed(b"\x05\x64" + data)
    decoder.finish()


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([b"\xc0" + RESPONSE, b"\xc0" + CROB]), st.lists(st.tuples(st.integers(0, 400),
       st.integers(0, 255)), min_size=1, max_size=6))  # fmt: skip
def test_mutated_fragments_with_good_crcs_never_raise(user_data: bytes, edits: list[tuple[int, int]]) -> None:
    """Mutations under valid CRCs reach the application layer (not just the CRC check)."""
    mutated = bytearray(user_data)
    for position, value in edits:
        mutated[position % len(mutated)] = value
    mutated[0] |= 0xC0  # keep FIR and FIN so the fragment is decoded
    msg = decode_frame(link_frame(bytes(mutated)), to_server=False)
    assert msg.function is not None or msg.malformed


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(st.sampled_from(VALID), st.binary(max_size=20)), min_size=1, max_size=8),
    st.lists(st.integers(0, 3000), max_size=10),
)
def test_any_split_gives_the_same_records(pieces: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(pieces)
    whole = Dnp3StreamDecoder(OUTSTATION, MASTER, to_server=False)
    expected = [key(m) for m in whole.feed(stream) + whole.finish()]
    split = Dnp3StreamDecoder(OUTSTATION, MASTER, to_server=False)
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    got = [m for a, b in itertools.pairwise(bounds) for m in split.feed(stream[a:b])] + split.finish()
    assert [key(m) for m in got] == expected


# --- real captures ------------------------------------------------------------------------------


def test_every_dnp3_capture_decodes() -> None:
    captures = sorted((require_dataset(PCAPS / "dnp3")).rglob("*.pcap")) + sorted(
        (PCAPS / "bro" / "dnp3").glob("*.pcap")
    )
    assert len(captures) > 150
    total = malformed = 0
    for path in captures:
        summary = read_capture(path)
        assert summary.error == "", path
        records = [m for m in summary.messages if m.protocol == "dnp3"]
        total += len(records)
        malformed += sum(1 for m in records if m.malformed)
    assert total > 1300
    assert malformed < total * 0.02


def test_select_operate_capture() -> None:
    summary = read_capture(require_dataset(PCAPS / "dnp3" / "select_operate_and_responses.pcap"))
    names = [m.function_name for m in summary.messages]
    assert names == ["SELECT", "RESPONSE", "OPERATE", "RESPONSE"]
    points = [m.fields["objects"][0]["points"][0] for m in summary.messages]
    assert {p["operation_type"] for p in points} == {"LATCH_ON"}
    assert {p["status_code"] for p in points} == {"SUCCESS"}


def test_unusual_port_found_by_content() -> None:
    summary = read_capture(require_dataset(PCAPS / "bro" / "dnp3" / "dnp3_read_p20001.pcap"))
    read, response = summary.messages
    assert (read.function_name, read.direction) == ("READ", Direction.REQUEST)
    assert [o["object_type"] for o in response.fields["objects"]] == ["g1v2", "g10v2", "g30v1"]
    assert response.values[:4] == [True, False, True, False]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("direct_operate_crob_malform_but_good_crc.pcap", "object count beyond fragment"),
    ],
)
def test_malformed_capture_says_why(name: str, reason: str) -> None:
    summary = read_capture(require_dataset(PCAPS / "dnp3" / name))
    assert summary.malformed == {reason: 1}
