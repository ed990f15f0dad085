"""pcapng files with several interfaces: each packet is read with its own interface's link type.

The files are written by scapy's `PcapNgWriter`, which adds an Interface Description Block for each
interface a packet names (`sniffed_on`) with the link type of the packet's first layer.
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path
from typing import Any

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from scapy.all import IP, TCP, CookedLinux, Ether, PcapNgWriter, Raw, wrpcap

from iip.security.capture import CaptureReader, read_capture

READS = [bytes.fromhex(f"{n:04x}0000000601030010000{n % 8 + 1}") for n in range(1, 10)]


def packets() -> list[Any]:
    """Nine Modbus reads on one connection, with their TCP payload in order."""
    out, seq = [], 100
    for number, request in enumerate(READS):
        packet = IP(src="192.168.7.2", dst="192.168.7.10") / TCP(sport=45000, dport=502, flags="PA", seq=seq)
        packet = packet / Raw(request)
        packet.time = 1_700_000_000 + number
        out.append(packet)
        seq += len(request)
    return out


def framed(packet: Any, index: int) -> Any:
    """Ethernet on eth0, Linux cooked capture on `any`, raw IPv4 on tun0, in turn."""
    kind = index % 3
    if kind == 0:
        frame = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / packet
        frame.sniffed_on = "eth0"
    elif kind == 1:
        frame = CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=b"\x02\0\0\0\0\x01\0\0", proto=0x0800) / packet
        frame.sniffed_on = "any"
    else:
        frame = packet.copy()
        frame.sniffed_on = "tun0"
    frame.time = packet.time
    return frame


def addresses(path: Path) -> list[tuple[int | None, int | None]]:
    summary = read_capture(path)
    assert summary.error == ""
    return [(m.transaction, m.quantity) for m in summary.messages]


def test_each_packet_takes_its_interfaces_link_type(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pcap"
    wrpcap(str(plain), [Ether() / packet for packet in packets()])
    mixed = tmp_path / "mixed.pcapng"
    with PcapNgWriter(str(mixed)) as writer:
        for index, packet in enumerate(packets()):
            writer.write(framed(packet, index))
    reader = CaptureReader(mixed)
    decoded = list(reader)
    assert reader.error == ""
    assert reader.link_types == {1, 113, 228}
    assert len(decoded) == len(READS)  # every frame read as an IP packet, whatever its interface
    assert [info.time.timestamp() for info, _ in decoded] == [p.time for p in packets()]
    expected = [(n, n % 8 + 1) for n in range(1, 10)]
    assert addresses(plain) == expected
    assert addresses(mixed) == expected


def test_packet_naming_an_undescribed_interface_stops_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "bad.pcapng"
    with PcapNgWriter(str(path)) as writer:
        writer.write(Ether() / packets()[0])
    data = bytearray(path.read_bytes())
    # The Enhanced Packet Block follows the section header and the one interface: name interface 5.
    at = data.index(struct.pack("<I", 6))
    data[at + 8 : at + 12] = struct.pack("<I", 5)
    path.write_bytes(bytes(data))
    summary = read_capture(path)
    assert summary.error == "packet block names interface 5, which no interface description block describes"
    assert summary.messages == []


def test_timestamp_resolution_and_offset_per_interface(tmp_path: Path) -> None:
    """Blocks assembled per the pcapng spec: two interfaces, one in nanoseconds with an offset, and a
    big-endian section; each packet's time follows its own interface."""
    ethernet = bytes(Ether() / packets()[0])
    raw_ip = bytes(packets()[1])

    def block(order: str, kind: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return struct.pack(order + "II", kind, len(body) + 12) + body + struct.pack(order + "I", len(body) + 12)

    def section(order: str) -> bytes:
        return block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))

    def option(order: str, code: int, value: bytes) -> bytes:
        return struct.pack(order + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)

    def packet(order: str, interface: int, ticks: int, data: bytes) -> bytes:
        head = struct.pack(order + "IIIII", interface, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data))
        return block(order, 6, head + data)

    le, be = "<", ">"
    nanoseconds = option(le, 9, b"\x09") + option(le, 14, struct.pack(le + "q", 100)) + option(le, 0, b"")
    content = (
        section(le)
        + block(le, 1, struct.pack(le + "HHI", 1, 0, 65535))
        + block(le, 1, struct.pack(le + "HHI", 101, 0, 65535) + nanoseconds)
        + packet(le, 0, 1_700_000_000_250_000, ethernet)  # microseconds
        + packet(le, 1, 1_700_000_001_500_000_000, raw_ip)  # nanoseconds, 100 s later by the offset
        + section(be)  # a new section starts its own interfaces
        + block(be, 1, struct.pack(be + "HHI", 101, 0, 65535))
        + packet(be, 0, 1_700_000_002_000_000, raw_ip)
    )
    path = tmp_path / "spec.pcapng"
    path.write_bytes(content)
    reader = CaptureReader(path)
    times = [info.time.timestamp() for info, _ in reader]
    assert reader.error == ""
    assert reader.link_types == {1, 101}
    assert times == [1_700_000_000.25, 1_700_000_101.5, 1_700_000_002.0]
