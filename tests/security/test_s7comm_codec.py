"""The S7comm codec on real captures (Wireshark's S7 samples, snap7, STEP 7, TIA Portal, WinCC) and on
hostile bytes: every capture decodes without error, known frames give the known fields, and no input
or segmentation makes the decoder raise or change its records."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import dpkt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iip.security.protocols import s7comm
from iip.security.protocols.base import Direction, Endpoint, IcsMessage
from tests.security.conftest import PCAPS, require_dataset

S7_PCAPS = PCAPS / "s7"
CLIENT, SERVER = Endpoint("10.0.0.1", 49152), Endpoint("10.0.0.2", 102)


def _packets(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        magic = handle.read(4)
        handle.seek(0)
        reader = dpkt.pcapng.Reader(handle) if magic == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(handle)
        for number, (_, buffer) in enumerate(reader, 1):
            yield number, buffer


def _tcp_segments(path: Path) -> Iterator[tuple[int, tuple[bytes, int, bytes, int], bytes]]:
    """In-order new bytes of each TCP direction (retransmissions and keep-alives dropped)."""
    expected: dict[tuple[bytes, int, bytes, int], int] = {}
    for number, buffer in _packets(path):
        ip = dpkt.ethernet.Ethernet(buffer).data
        tcp = getattr(ip, "data", None)
        if not isinstance(tcp, dpkt.tcp.TCP):
            continue
        key = (bytes(ip.src), tcp.sport, bytes(ip.dst), tcp.dport)
        if tcp.flags & dpkt.tcp.TH_SYN:
            expected.pop(key, None)
        data = bytes(tcp.data)
        if not data:
            continue
        if key in expected:
            behind = (expected[key] - tcp.seq) & 0xFFFFFFFF
            if behind < 0x80000000:
                if behind >= len(data):
                    continue
                data = data[behind:]
        expected[key] = (tcp.seq + len(tcp.data)) & 0xFFFFFFFF
        yield number, key, data


def decode_capture(path: Path) -> list[IcsMessage]:
    decoders: dict[tuple[bytes, int, bytes, int], s7comm.S7commStreamDecoder] = {}
    records: list[IcsMessage] = []
    for number, key, data in _tcp_segments(path):
        if s7comm.S7_PORT not in (key[1], key[3]):
            continue
        if key not in decoders:
            source, destination = Endpoint(key[0].hex(), key[1]), Endpoint(key[2].hex(), key[3])
            decoders[key] = s7comm.S7commStreamDecoder(source, destination, to_server=key[3] == s7comm.S7_PORT)
        records.extend(decoders[key].feed(data, frame=number))
    return records


def _captures() -> list[Path]:
    return sorted(p for p in S7_PCAPS.rglob("*.pcap*") if p.is_file()) if S7_PCAPS.exists() else []


@pytest.fixture(scope="module")
def everything() -> list[IcsMessage]:
    return decode_capture(require_dataset(S7_PCAPS / "snap7_s300_everything.pcapng"))


def _one(records: list[IcsMessage], **wanted: object) -> IcsMessage:
    found = [r for r in records if all(r.fields.get(k, getattr(r, k, None)) == v for k, v in wanted.items())]
    assert found, f"no record with {wanted}"
    return found[0]


# -- real captures ------------------------------------------------------------------------------


def test_s7_captures_are_present() -> None:
    require_dataset(S7_PCAPS)
    assert len(_captures()) >= 30


@pytest.mark.parametrize("path", _captures(), ids=lambda p: p.name)
def test_every_s7_capture_decodes_without_malformed_records(path: Path) -> None:
    records = decode_capture(path)
    malformed = [(r.frame, r.malformed) for r in records if r.is_malformed]
    assert malformed == []
    for record in records:
        assert record.raw, "every record keeps its bytes as evidence"
        assert record.function_name, "every record says what it is"


def test_captures_with_port_102_traffic_yield_records() -> None:
    require_dataset(S7_PCAPS)
    empty = [p.name for p in _captures() if not decode_capture(p)]
    assert empty == ["wrapup.pcapng"]  # the one capture without ISO-on-TCP traffic


def test_module_identification_names_the_cpu(everything: list[IcsMessage]) -> None:
    response = _one(everything, szl_id=0x0011, direction=Direction.RESPONSE)
    assert response.fields["order_number"] == "6ES7 315-2EH14-0AB0"
    assert response.fields["firmware_version"] == "V3.2.7"
    assert response.quantity == 4
    assert [r["index"] for r in response.fields["szl_records"]] == [0x0001, 0x0006, 0x0007, 0x0081]
    request = _one(everything, szl_id=0x0011, direction=Direction.REQUEST)
    assert request.fields["szl_id_name"] == "MODULE_IDENTIFICATION"
    assert request.transaction == response.transaction


def test_component_identification_names_station_module_and_serial(everything: list[IcsMessage]) -> None:
    response = _one(everything, szl_id=0x001C, direction=Direction.RESPONSE)
    assert response.fields["plc_name"] == "S7300/ET200M station_1"
    assert response.fields["module_name"] == "PLC_1"
    assert response.fields["copyright"] == "Original Siemens Equipment"
    assert response.fields["serial_number"] == "S C-B1U393142011"
    assert response.fields["module_type"] == "CPU 315-2 PN/DP"
    assert response.fields["last_data_unit"] == 1  # the list continues in the next response
    following = everything[everything.index(response) + 2]
    assert following.fields["subfunction_name"] == "READ_SZL"
    assert "szl_fragment" in following.fields  # read as a continuation, not as a new list


def test_cpu_status_clock_and_blocks(everything: list[IcsMessage]) -> None:
    assert _one(everything, szl_id=0x0424, direction=Direction.RESPONSE).fields["cpu_mode"] == "RUN"
    clock = _one(everything, subfunction_name="READ_CLOCK", direction=Direction.RESPONSE)
    assert clock.fields["clock"] == "2016-02-08T14:51:37.916000"
    upload = _one(everything, function_name="START_UPLOAD", direction=Direction.REQUEST)
    assert (upload.fields["block_type"], upload.fields["block_number"]) == ("SDB", 0)
    refused = _one(everything, rosctr_name="ACK")
    assert refused.exception == 0xD20C


def test_read_and_write_var_items_and_return_codes(everything: list[IcsMessage]) -> None:
    write = _one(everything, function_name="WRITE_VAR", quantity=1, direction=Direction.REQUEST)
    item = write.fields["items"][0]
    assert (item["area_name"], item["byte"], item["bit"], item["transport_size_name"]) == ("FLAGS", 16, 0, "REAL")
    assert write.values == [bytes.fromhex("79e9f642")]
    multi = _one(everything, function_name="WRITE_VAR", quantity=5, direction=Direction.RESPONSE)
    assert multi.fields["return_codes"] == [0xFF, 0xFF, 0xFF, 0x03, 0x03]
    assert multi.exception_name == "ACCESS_DENIED"
    read = _one(everything, function_name="READ_VAR", quantity=5, direction=Direction.RESPONSE)
    assert [len(v) for v in read.values] == [16, 16, 16, 16, 16]
    assert read.values[1] == bytes.fromhex("aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbb")


def test_stop_and_pi_services(everything: list[IcsMessage]) -> None:
    assert _one(everything, function_name="PLC_STOP", direction=Direction.REQUEST).fields["pi_service"] == "P_PROGRAM"
    services = [
        r.fields["pi_service"] for r in everything if r.function_name == "PI_SERVICE" and "pi_service" in r.fields
    ]
    assert services == ["_MODU", "_GARB", "P_PROGRAM"]


def test_cotp_connect_gives_rack_and_slot() -> None:
    records = decode_capture(require_dataset(S7_PCAPS / "s7comm_reading_plc_status.pcap"))
    request = _one(records, function_name="COTP_CR")
    assert (request.fields["rack"], request.fields["slot"], request.fields["tpdu_size"]) == (0, 2, 1024)
    assert all(r.unit == 2 for r in records if r.direction is Direction.REQUEST)


def test_download_request_names_the_block() -> None:
    records = decode_capture(require_dataset(S7_PCAPS / "s7comm_downloading_block_db1.pcap"))
    request = _one(records, function_name="REQUEST_DOWNLOAD", direction=Direction.REQUEST)
    assert request.fields["filename"] == "_0A00001P"
    assert (request.fields["block_type"], request.fields["block_number"]) == ("DB", 1)
    assert request.fields["destination_filesystem"] == "PASSIVE"


def test_s7comm_plus_is_recognised_not_malformed() -> None:
    records = decode_capture(require_dataset(S7_PCAPS / "S7-1511_db2_var1_HMI.pcap"))
    plus = [r for r in records if r.fields.get("s7comm_plus")]
    assert plus
    assert all(r.function_name == "S7COMM_PLUS" and not r.is_malformed for r in plus)
    assert {r.fields["opcode_name"] for r in plus} >= {"REQUEST", "RESPONSE"}


# -- encoders read back by the decoder ----------------------------------------------------------


def _decode_one(frame: bytes, *, to_server: bool = False) -> IcsMessage:
    records = s7comm.S7commStreamDecoder(SERVER, CLIENT, to_server=to_server).feed(frame)
    assert len(records) == 1
    return records[0]


def test_encoded_szl_answers_decode_to_the_identity() -> None:
    module = [
        s7comm.encode_module_record(1, "6ES7 214-1AG40-0XB0", None, hw=2),
        s7comm.encode_module_record(7, "", (4, 5, 2)),
    ]
    payload = s7comm.encode_szl(0x0011, 0, 28, module)
    frame = s7comm.encode_cotp_dt(
        s7comm.encode_userdata_response(9, group=4, subfunction=1, sequence=1, payload=payload)
    )
    record = _decode_one(frame)
    assert (record.fields["order_number"], record.fields["firmware_version"]) == ("6ES7 214-1AG40-0XB0", "V4.5.2")
    assert record.transaction == 9
    status = s7comm.encode_szl(0x0424, 0, 20, [s7comm.encode_cpu_status_record(0x04, dt.datetime(2024, 5, 6, 7, 8, 9))])
    record = _decode_one(
        s7comm.encode_cotp_dt(s7comm.encode_userdata_response(3, group=4, subfunction=1, sequence=1, payload=status))
    )
    assert record.fields["cpu_mode"] == "STOP"


def test_encoded_read_answer_and_clock_decode() -> None:
    items = [s7comm.encode_data_item(0xFF, b"\x01\x02\x03"), s7comm.encode_data_item(0x0A, b"")]
    record = _decode_one(s7comm.encode_cotp_dt(s7comm.encode_read_var_ack(5, items)))
    assert record.values == [b"\x01\x02\x03", b""]
    assert record.exception_name == "OBJECT_DOES_NOT_EXIST"
    moment = dt.datetime(2031, 12, 24, 18, 30, 5, 250000)
    clock = s7comm.encode_userdata_response(1, group=7, subfunction=1, sequence=0, payload=s7comm.encode_clock(moment))
    assert _decode_one(s7comm.encode_cotp_dt(clock)).fields["clock"] == moment.isoformat()


# -- hostile input --------------------------------------------------------------------------------


def _sample_frames() -> list[bytes]:
    """Real TPKT frames of both directions, for mutation."""
    path = S7_PCAPS / "snap7_s300_everything.pcapng"
    if not path.exists():
        return [s7comm.encode_cotp_dt(s7comm.encode_function_ack(1, 0x29))]
    return [data for _, _, data in _tcp_segments(path)]


SAMPLES = _sample_frames()


def _signature(records: list[IcsMessage]) -> list[tuple[object, ...]]:
    return [
        (r.function_name, r.direction, r.transaction, r.malformed, repr(r.fields), r.values, r.raw) for r in records
    ]


def _feed_all(chunks: list[bytes]) -> list[IcsMessage]:
    decoder = s7comm.S7commStreamDecoder(CLIENT, SERVER, to_server=True)
    records: list[IcsMessage] = []
    for chunk in chunks:
        records.extend(decoder.feed(chunk))
    return records


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_arbitrary_bytes_never_raise(chunks: list[bytes]) -> None:
    records = _feed_all(chunks)
    total = sum(len(r.raw) for r in records)
    assert total <= sum(len(c) for c in chunks)  # records never invent bytes


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SAMPLES), st.data())
def test_mutated_real_frames_never_raise(frame: bytes, data: st.DataObject) -> None:
    mutated = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 6))):
        position = data.draw(st.integers(0, len(mutated) - 1))
        mutated[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(mutated)))
    records = _feed_all([bytes(mutated[:cut]), b"\x03\x00\x00\x07\x02\xf0\x80"])
    assert all(isinstance(r, IcsMessage) for r in records)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(SAMPLES), min_size=1, max_size=6), st.binary(max_size=20), st.data())
def test_any_split_gives_the_same_records(frames: list[bytes], junk: bytes, data: st.DataObject) -> None:
    stream = junk + b"".join(frames) + junk
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert _signature(_feed_all(chunks)) == _signature(_feed_all([stream]))


def test_garbage_becomes_one_malformed_record_and_the_stream_recovers() -> None:
    frame = s7comm.encode_cotp_dt(s7comm.encode_function_ack(7, 0x29))
    records = _feed_all([b"\xde\xad\xbe\xef" * 3, frame])
    assert [bool(r.malformed) for r in records] == [True, False]
    assert records[0].raw == b"\xde\xad\xbe\xef" * 3
    assert records[1].function_name == "PLC_STOP"


def test_cotp_fragments_are_reassembled() -> None:
    pdu = s7comm.encode_read_var_ack(11, [s7comm.encode_data_item(0xFF, bytes(range(40)))])
    first = s7comm.encode_tpkt(bytes([2, 0xF0, 0x00]) + pdu[:20])
    last = s7comm.encode_tpkt(bytes([2, 0xF0, 0x80]) + pdu[20:])
    records = s7comm.S7commStreamDecoder(SERVER, CLIENT, to_server=False).feed(first + last)
    assert len(records) == 1
    assert records[0].values == [bytes(range(40))]
    assert records[0].raw == first + last


def test_truncated_s7_pdu_is_malformed_with_a_reason() -> None:
    record = _decode_one(s7comm.encode_cotp_dt(bytes.fromhex("3201000000050010")), to_server=True)
    assert "truncated" in record.malformed


def test_finish_reports_what_the_stream_left_unread() -> None:
    decoder = s7comm.S7commStreamDecoder(CLIENT, SERVER, to_server=True)
    assert decoder.feed(b"GET / HTTP/1.0\r\n") == []
    assert decoder.skipping
    records = decoder.finish()
    assert [r.raw for r in records] == [b"GET / HTTP/1.0\r\n"]
    assert records[0].is_malformed
