"""Reading captures: every ICS data set, link types, pcapng, TCP order, damaged files."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import dpkt
import pytest

from iip.security import capture
from iip.security.capture import CaptureReader, iter_capture, read_capture
from iip.security.protocols.base import IcsMessage, IcsProtocol, Transport
from tests.security.conftest import MODBUS_ATTACKS, PCAPS, require_dataset

SMALL = "ModbusTCP/modbus_test_data_part2.pcap"


def frames_of(path: Path) -> list[tuple[float, bytes]]:
    with path.open("rb") as stream:
        return [(ts, bytes(buf)) for ts, buf in dpkt.pcap.Reader(stream)]


def write_pcap(path: Path, packets: list[tuple[float, bytes]], linktype: int = 1) -> Path:
    with path.open("wb") as stream:
        writer = dpkt.pcap.Writer(stream, linktype=linktype)
        for ts, buf in packets:
            writer.writepkt(buf, ts=ts)
    return path


def key(msg: IcsMessage) -> tuple[Any, ...]:
    return (msg.protocol, msg.direction, msg.function, msg.unit, msg.address, msg.quantity, msg.values, msg.malformed)


def keys(path: Path) -> list[tuple[Any, ...]]:
    summary = read_capture(path)
    assert summary.error == ""
    return [key(m) for m in summary.messages]


def test_every_ics_capture_reads_to_its_end() -> None:
    """Modbus, DNP3 and IEC 104 captures (and the Modbus attack captures): no unhandled error,
    no damaged file, and records of the protocol the folder names."""
    pcaps = require_dataset(PCAPS)
    folders = {"ModbusTCP": "modbus", "bro/modbus": "modbus", "dnp3": "dnp3", "bro/dnp3": "dnp3",
               "IEC60870-5-104": "iec104"}  # fmt: skip
    totals: dict[str, int] = {}
    for folder, protocol in folders.items():
        for path in sorted((pcaps / folder).rglob("*.pcap")):
            summary = read_capture(path)
            assert summary.error == "", path
            totals[protocol] = totals.get(protocol, 0) + summary.protocols[protocol]
    for path in sorted(require_dataset(MODBUS_ATTACKS).glob("*.pcap")):
        summary = read_capture(path)
        assert summary.error == ""
        totals["attacks"] = totals.get("attacks", 0) + summary.protocols["modbus"]
    assert totals["modbus"] > 30000
    assert totals["dnp3"] > 1300
    assert totals["iec104"] > 300
    assert totals["attacks"] > 1000


def test_packet_info_for_every_ip_packet() -> None:
    path = require_dataset(PCAPS / SMALL)
    packets = list(iter_capture(path))
    assert len(packets) == len(frames_of(path))  # every frame of this capture is IPv4
    infos = [info for info, _ in packets]
    assert [info.frame for info in infos] == list(range(1, len(infos) + 1))
    assert Transport.TCP in {info.transport for info in infos}
    syns = [info for info in infos if info.tcp_flags & 0x02]
    assert syns
    assert all(
        info.protocol is IcsProtocol.MODBUS for info in infos if 502 in (info.source.port, info.destination.port)
    )


@pytest.mark.parametrize("linktype", ["sll", "sll2", "raw", "null", "vlan", "pcapng"])
def test_link_types_give_the_same_records(tmp_path: Path, linktype: str) -> None:
    path = require_dataset(PCAPS / SMALL)
    expected = keys(path)
    converted: list[tuple[float, bytes]] = []
    for ts, buf in frames_of(path):
        ether = dpkt.ethernet.Ethernet(buf)
        ip = bytes(ether.data)
        if linktype == "sll":
            converted.append((ts, struct.pack(">HHH8sH", 0, 1, 6, ether.src + b"\0\0", 0x0800) + ip))
        elif linktype == "sll2":
            converted.append((ts, struct.pack(">HHIHBB8s", 0x0800, 0, 2, 1, 0, 6, ether.src + b"\0\0") + ip))
        elif linktype == "raw":
            converted.append((ts, ip))
        elif linktype == "null":
            converted.append((ts, struct.pack("<I", 2) + ip))
        else:  # an 802.1Q tag between the MAC addresses and the IP type
            converted.append((ts, buf[:12] + struct.pack(">HH", 0x8100, 42) + buf[12:]))
    if linktype == "pcapng":
        out = tmp_path / "small.pcapng"
        with out.open("wb") as stream:
            writer = dpkt.pcapng.Writer(stream, linktype=1)
            for ts, buf in frames_of(path):
                writer.writepkt(buf, ts=ts)
    else:
        number = {"sll": 113, "sll2": 276, "raw": 101, "null": 0, "vlan": 1}[linktype]
        out = write_pcap(tmp_path / f"small-{linktype}.pcap", converted, number)
    assert keys(out) == expected
    assert len(expected) > 50


def _modbus_over_ipv6(payload: bytes, seq: int, *, to_server: bool = True) -> bytes:
    tcp = dpkt.tcp.TCP(sport=50000 if to_server else 502, dport=502 if to_server else 50000, seq=seq,
                       flags=dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH, data=payload)  # fmt: skip
    ip6 = dpkt.ip6.IP6(src=b"\xfe\x80" + b"\0" * 13 + b"\x01", dst=b"\xfe\x80" + b"\0" * 13 + b"\x02", nxt=6, hlim=64,
                       data=tcp, plen=len(bytes(tcp)))  # fmt: skip
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=0x86DD, data=ip6))


READ_REQUEST = bytes.fromhex("000100000006010300100002")
READ_REQUEST_2 = bytes.fromhex("000200000006010300200004")


def test_ipv6_and_tcp_order(tmp_path: Path) -> None:
    """Out-of-order and retransmitted segments over IPv6: records in stream order, once each."""
    first, second = READ_REQUEST, READ_REQUEST_2
    half = len(second) // 2
    packets = [
        (1.0, _modbus_over_ipv6(first, 1000)),
        (2.0, _modbus_over_ipv6(second[half:], 1000 + len(first) + half)),  # arrives before its first half
        (3.0, _modbus_over_ipv6(second[:half], 1000 + len(first))),
        (4.0, _modbus_over_ipv6(first, 1000)),  # a retransmission
    ]
    out = write_pcap(tmp_path / "v6.pcap", packets)
    reader = CaptureReader(out)
    records = [m for _info, messages in reader for m in messages] + reader.finish()
    assert [(m.transaction, m.address, m.quantity) for m in records] == [(1, 16, 2), (2, 32, 4)]
    assert records[0].source.host == "fe80::1"
    assert records[1].frame == 2  # the segment that completed it in stream order came from frame 2
    assert reader.decoder.stats.retransmissions == 1


def test_sequence_numbers_wrap(tmp_path: Path) -> None:
    start = (1 << 32) - 5
    packets = [(1.0, _modbus_over_ipv6(READ_REQUEST, start)),
               (2.0, _modbus_over_ipv6(READ_REQUEST_2, (start + len(READ_REQUEST)) % (1 << 32)))]  # fmt: skip
    summary = read_capture(write_pcap(tmp_path / "wrap.pcap", packets))
    assert [m.transaction for m in summary.messages] == [1, 2]


def test_non_modbus_bytes_on_port_502_are_counted(tmp_path: Path) -> None:
    packets = [(1.0, _modbus_over_ipv6(b"GET / HTTP/1.1\r\nHost: plc\r\n\r\n", 1)),
               (2.0, _modbus_over_ipv6(READ_REQUEST, 31))]  # fmt: skip
    summary = read_capture(write_pcap(tmp_path / "http.pcap", packets))
    assert summary.malformed == {"bytes that are not a Modbus/TCP frame": 1}
    assert summary.messages[-1].address == 16


def test_truncated_capture_keeps_what_came_before(tmp_path: Path) -> None:
    path = require_dataset(PCAPS / SMALL)
    data = path.read_bytes()
    whole = read_capture(path)
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) // 2])
    summary = read_capture(cut)
    assert summary.error in {"packet data truncated", "packet header truncated"}
    assert 0 < len(summary.messages) < len(whole.messages)
    complete = [key(m) for m in summary.messages if m.malformed != "stream ended inside a frame"]
    assert complete == [key(m) for m in whole.messages][: len(complete)]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"this is not a capture at all, just text", "not a pcap or pcapng file"),
        (b"\xd4\xc3\xb2\xa1\x02\x00", "pcap file header truncated"),
        (b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00", "pcapng block damaged or truncated (ValueError)"),
    ],
)
def test_unreadable_files_say_why(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.pcap"
    path.write_bytes(content)
    summary = read_capture(path)
    assert (summary.error, summary.messages) == (reason, [])


def test_corrupt_record_header(tmp_path: Path) -> None:
    path = require_dataset(PCAPS / SMALL)
    data = bytearray(path.read_bytes())
    first_length = struct.unpack_from("<I", data, 24 + 8)[0]
    second_record = 24 + 16 + first_length
    data[second_record + 8 : second_record + 12] = struct.pack("<I", 0x7FFFFFFF)
    out = tmp_path / "corrupt.pcap"
    out.write_bytes(bytes(data))
    summary = read_capture(out)
    assert summary.error == "packet length implausible (corrupt record header)"
    assert summary.packets == 1


def test_missing_file() -> None:
    assert read_capture("/nonexistent/capture.pcap").error.startswith("cannot open capture")


def test_binary_file_object() -> None:
    path = require_dataset(PCAPS / SMALL)
    summary = read_capture(io.BytesIO(path.read_bytes()))
    assert [key(m) for m in summary.messages] == keys(path)


def test_s7comm_without_its_codec_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    path = require_dataset(PCAPS / "bro" / "modbus" / "modbusBig.pcap")  # has S7comm on port 102 as well
    monkeypatch.setattr(capture, "_s7comm_decoder_class", lambda: None)
    summary = read_capture(path)
    assert summary.undecoded["s7comm"] > 100
    assert summary.protocols["s7comm"] == 0
    assert summary.protocols["modbus"] > 5000


def test_modbus_responses_carry_their_request_address() -> None:
    summary = read_capture(require_dataset(PCAPS / "ModbusTCP" / "ModbusTCP.pcap"))
    reads = [m for m in summary.messages if m.function == 4 and m.direction == "response" and not m.malformed]
    paired = [m for m in reads if m.address is not None]
    assert len(paired) > 0.9 * len(reads)
    assert all(m.quantity == len(m.values) for m in paired)
