"""IP fragment reassembly: a Modbus/TCP exchange fragmented by scapy reads as the unfragmented one;
fragments out of order, overlapping, duplicated, never completed; bounded buffers; IPv6; live."""

from __future__ import annotations

import datetime as dt
import random
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from scapy.all import IP, TCP, Ether, IPv6, IPv6ExtHdrFragment, Raw, fragment, fragment6, wrpcap

from iip.security.capture import CaptureReader, read_capture
from iip.security.captures import decode_capture
from iip.security.fragments import FragmentLimits, Reassembler
from iip.security.live import LiveCapture
from iip.security.protocols.base import IcsMessage, PacketInfo
from tests.security.conftest import LOOPBACK_CAPTURE, require_raw_sockets

CLIENT, SERVER = "10.0.0.5", "10.0.0.9"
# Write Multiple Registers, 40 values (93 bytes of Modbus), and its response; a read of 60 registers
# and its 129-byte response: every one of them spans several fragments of 16 or 24 bytes.
WRITE_VALUES = list(range(1000, 1040))
WRITE = bytes.fromhex("00070000") + (7 + 80).to_bytes(2, "big") + bytes([1, 16, 0, 10, 0, 40, 80])
WRITE += b"".join(v.to_bytes(2, "big") for v in WRITE_VALUES)
WRITE_ANSWER = bytes.fromhex("000700000006011000" + "0a0028")
READ = bytes.fromhex("000800000006010300640" + "03c")
READ_ANSWER = bytes.fromhex("000800000" + "07b") + bytes([1, 3, 120]) + bytes(range(120))


def exchange(ip: Any = IP) -> list[Any]:
    """A whole Modbus/TCP connection: handshake, a write, a read, each answered."""
    c, s = (CLIENT, SERVER) if ip is IP else ("fd00::5", "fd00::9")
    sport, cseq, sseq = 40123, 1000, 5000
    frames = [
        Ether() / ip(src=c, dst=s) / TCP(sport=sport, dport=502, flags="S", seq=cseq),
        Ether() / ip(src=s, dst=c) / TCP(sport=502, dport=sport, flags="SA", seq=sseq, ack=cseq + 1),
        Ether() / ip(src=c, dst=s) / TCP(sport=sport, dport=502, flags="A", seq=cseq + 1, ack=sseq + 1),
    ]
    cseq, sseq = cseq + 1, sseq + 1
    for request, answer in ((WRITE, WRITE_ANSWER), (READ, READ_ANSWER)):
        frames.append(Ether() / ip(src=c, dst=s, **_id(ip)) / TCP(sport=sport, dport=502, flags="PA", seq=cseq,
                                                                   ack=sseq) / Raw(request))  # fmt: skip
        frames.append(Ether() / ip(src=s, dst=c, **_id(ip)) / TCP(sport=502, dport=sport, flags="PA", seq=sseq,
                                                                   ack=cseq + len(request)) / Raw(answer))  # fmt: skip
        cseq, sseq = cseq + len(request), sseq + len(answer)
    for number, frame in enumerate(frames):
        frame.time = 1_700_000_000 + number * 0.01
    return frames


def _id(ip: Any) -> dict[str, int]:
    return {"id": random.randint(1, 65000)} if ip is IP else {}  # noqa: S311 - not for secrets


def fragmented(frames: list[Any], size: int) -> list[Any]:
    """Each data packet split by scapy into fragments of `size` payload bytes (the rest untouched)."""
    out: list[Any] = []
    for frame in frames:
        if Raw not in frame:
            out.append(frame)
            continue
        pieces = fragment(frame, fragsize=size)
        for piece in pieces:
            piece.time = frame.time
        out += pieces
    return out


def records(path: Path) -> list[tuple[Any, ...]]:
    summary = read_capture(path)
    assert summary.error == ""
    return [(m.direction, m.function_name, m.unit, m.address, m.quantity, m.values, m.malformed, m.transaction)
            for m in summary.messages]  # fmt: skip


@pytest.mark.parametrize("size", [16, 24, 512])
def test_fragmented_exchange_reads_as_the_whole_one(tmp_path: Path, size: int) -> None:
    frames = exchange()
    wrpcap(str(tmp_path / "whole.pcap"), frames)
    pieces = fragmented(frames, size)
    assert len(pieces) > len(frames) + 4 or size == 512
    wrpcap(str(tmp_path / "fragments.pcap"), pieces)
    whole = records(tmp_path / "whole.pcap")
    assert [(r[1], r[5][:2]) for r in whole] == [
        ("WRITE_MULTIPLE_REGISTERS", [1000, 1001]),
        ("WRITE_MULTIPLE_REGISTERS", []),
        ("READ_HOLDING_REGISTERS", []),
        ("READ_HOLDING_REGISTERS", [1, 515]),
    ]
    assert records(tmp_path / "fragments.pcap") == whole
    reader = CaptureReader(tmp_path / "fragments.pcap")
    packets = list(reader)
    reader.finish()
    stats = reader.decoder.stats.fragments
    expected = sum(1 for frame in frames if Raw in frame and len(frame[IP].payload) > size)
    assert stats.reassembled == expected
    assert not stats.malformed
    assert not stats.dropped
    assert len(packets) == len(frames)  # a datagram is one IP packet, whatever its fragments


def test_out_of_order_fragments(tmp_path: Path) -> None:
    frames = exchange()
    wrpcap(str(tmp_path / "whole.pcap"), frames)
    pieces: list[Any] = []
    for frame in frames:
        split = fragmented([frame], 16)
        pieces += [split[-1], *reversed(split[:-1])] if len(split) > 2 else split  # last first, then backwards
    wrpcap(str(tmp_path / "shuffled.pcap"), pieces)
    assert records(tmp_path / "shuffled.pcap") == records(tmp_path / "whole.pcap")


def test_overlapping_fragments_are_refused_and_counted(tmp_path: Path) -> None:
    frames = exchange()
    write = frames[3]
    pieces = fragmented([write], 24)
    assert len(pieces) >= 4
    # A forged fragment over the second one's bytes, carrying other register values.
    forged = pieces[1].copy()
    forged[IP].frag = pieces[1][IP].frag + 1  # 8 bytes further: overlaps the second and third
    forged[Raw].load = b"\xff" * 24
    wrpcap(str(tmp_path / "overlap.pcap"), [*frames[:3], pieces[0], pieces[1], forged, *pieces[2:], *frames[4:]])
    summary = read_capture(tmp_path / "overlap.pcap")
    assert summary.error == ""
    assert summary.malformed["IPv4 fragments overlap (datagram refused)"] == 1
    assert summary.dropped["IPv4 fragments of a refused datagram"] == len(pieces) - 2  # refused after it, too
    # The write never reaches the codec, neither its bytes nor the forged ones; the read still does.
    assert not any(m.values == WRITE_VALUES or 0xFFFF in m.values for m in summary.messages)
    assert [m.function_name for m in summary.messages if m.direction.value == "request"][-1] == "READ_HOLDING_REGISTERS"
    stored = decode_capture(tmp_path / "overlap.pcap")  # what an upload stores says so too
    assert stored.malformed["IPv4 fragments overlap (datagram refused)"] == 1


def test_duplicate_fragments_are_dropped_not_refused(tmp_path: Path) -> None:
    frames = exchange()
    pieces = fragmented([frames[3]], 16)
    wrpcap(str(tmp_path / "dup.pcap"), [*frames[:3], pieces[0], pieces[1], pieces[1], *pieces[2:], *frames[4:]])
    wrpcap(str(tmp_path / "whole.pcap"), frames)
    summary = read_capture(tmp_path / "dup.pcap")
    assert summary.dropped == {"IPv4 duplicate fragments": 1}
    assert not summary.malformed
    assert records(tmp_path / "dup.pcap") == records(tmp_path / "whole.pcap")


def test_fragment_set_that_never_completes(tmp_path: Path) -> None:
    frames = exchange()
    pieces = fragmented([frames[3]], 16)
    wrpcap(str(tmp_path / "lost.pcap"), [*frames[:3], *pieces[:-1]])  # the last fragment never comes
    summary = read_capture(tmp_path / "lost.pcap")
    assert summary.error == ""
    assert summary.dropped == {"IPv4 datagrams incomplete when the traffic ended": 1}
    assert summary.messages == []
    # Traffic going on long after: given up on the timeout, and what follows still decodes.
    late = frames[4:]
    for frame in late:
        frame.time += 120
    wrpcap(str(tmp_path / "late.pcap"), [*frames[:3], *pieces[:-1], *late])
    summary = read_capture(tmp_path / "late.pcap")
    assert summary.dropped == {"IPv4 datagrams incomplete after 30 s": 1}
    assert [m.function_name for m in summary.messages][-1] == "READ_HOLDING_REGISTERS"


def test_ipv6_fragments_are_reassembled(tmp_path: Path) -> None:
    frames = exchange(IPv6)
    wrpcap(str(tmp_path / "whole6.pcap"), frames)
    pieces: list[Any] = []
    split_count: list[int] = []
    for frame in frames:
        if Raw not in frame:
            pieces.append(frame)
            continue
        packet = frame[IPv6]
        payload = packet.payload
        packet.remove_payload()
        with_header = Ether() / (packet / IPv6ExtHdrFragment(id=random.randint(1, 1 << 30)) / payload)  # noqa: S311
        split = fragment6(with_header, 96)  # 96 bytes of IPv6 packet: 48 of payload each
        split_count.append(len(split))
        for piece in split:
            piece.time = frame.time
        pieces += [Ether() / piece if IPv6 in piece and Ether not in piece else piece for piece in split]
    assert max(split_count) >= 3  # the write and the read's answer; the small ones are atomic fragments
    wrpcap(str(tmp_path / "fragments6.pcap"), pieces)
    assert records(tmp_path / "fragments6.pcap") == records(tmp_path / "whole6.pcap")
    summary = read_capture(tmp_path / "fragments6.pcap")
    assert not summary.dropped
    assert not summary.malformed


def test_buffers_are_bounded_in_count_and_bytes() -> None:
    reassembler = Reassembler(FragmentLimits(timeout_s=30, max_datagrams=4, max_bytes=1000))
    for n in range(10):  # ten datagrams, each missing its end
        assert reassembler.add(("IPv4", "a", "b", 6, n), 0, b"x" * 80, True, 1.0) is None
    assert reassembler.pending == 4
    assert reassembler.stats.dropped == {"IPv4 datagrams dropped: fragment buffers full": 6}
    for n in range(10, 14):  # larger ones: now bytes are the bound
        reassembler.add(("IPv4", "a", "b", 6, n), 0, b"y" * 400, True, 2.0)
    assert reassembler.held_bytes <= 1000
    assert reassembler.pending == 2
    # The newest complete normally.
    assert reassembler.add(("IPv4", "a", "b", 6, 13), 400, b"z" * 5, False, 2.5) == b"y" * 400 + b"z" * 5
    reassembler.expire(100.0)
    assert reassembler.pending == 0
    assert reassembler.held_bytes == 0
    assert reassembler.stats.dropped["IPv4 datagrams incomplete after 30 s"] == 1


END = "IPv4 fragments disagree on the datagram's end (datagram refused)"


@pytest.mark.parametrize(
    ("fragments", "reason"),
    [
        ([(0, b"a" * 12, True)], "IPv4 fragment payload not a multiple of 8 bytes (datagram refused)"),
        ([(65528, b"a" * 16, False)], "IPv4 fragments reassemble beyond 65,535 bytes (datagram refused)"),
        ([(16, b"a" * 8, False), (24, b"b" * 8, True)], END),
        ([(16, b"a" * 8, False), (32, b"b" * 8, False)], END),
        ([(0, b"a" * 16, True), (8, b"b" * 16, False)], "IPv4 fragments overlap (datagram refused)"),
        ([(8, b"a" * 16, False), (0, b"b" * 16, True)], "IPv4 fragments overlap (datagram refused)"),
        ([(0, b"a" * 16, True), (0, b"b" * 16, True)], "IPv4 fragments overlap (datagram refused)"),
    ],
)  # fmt: skip
def test_inconsistent_fragments_are_malformed(fragments: list[tuple[int, bytes, bool]], reason: str) -> None:
    reassembler = Reassembler()
    for offset, payload, more in fragments:
        assert reassembler.add(("IPv4", "a", "b", 6, 1), offset, payload, more, 1.0) is None
    assert reassembler.stats.malformed == {reason: 1}
    assert reassembler.held_bytes == 0
    # The refused datagram's missing piece does not bring it back.
    assert reassembler.add(("IPv4", "a", "b", 6, 1), 0, b"c" * 8, True, 1.5) is None
    assert reassembler.stats.reassembled == 0


@LOOPBACK_CAPTURE
def test_live_capture_reassembles_fragments() -> None:
    """Fragments sent on the loopback interface through a packet socket are put back together by the
    live capture: the Modbus write they carry is decoded whole."""
    require_raw_sockets()
    net = f"127.{random.randint(64, 250)}.{random.randint(1, 250)}"  # noqa: S311 - not for secrets
    client, server = f"{net}.5", f"{net}.9"
    frame = Ether(src="00:00:00:00:00:00", dst="00:00:00:00:00:00") / IP(src=client, dst=server, id=4242)
    frame = frame / TCP(sport=40999, dport=502, flags="PA", seq=7, ack=1) / Raw(WRITE)
    pieces = [bytes(piece) for piece in fragment(frame, fragsize=24)]
    assert len(pieces) > 3
    found: list[IcsMessage] = []
    seen = threading.Event()

    def on_packet(info: PacketInfo, messages: list[IcsMessage]) -> None:
        if info.source.host == client:
            found.extend(messages)
            seen.set()

    capture = LiveCapture("lo", on_packet, poll_interval=0.05)
    capture.start()
    try:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sender:
            sender.bind(("lo", 0))
            for piece in reversed(pieces):  # out of order, too
                sender.send(piece)
        deadline = time.monotonic() + 5
        while not seen.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        capture.stop()
    assert capture.error == ""
    assert [(m.function_name, m.address, m.quantity, m.values) for m in found] == [
        ("WRITE_MULTIPLE_REGISTERS", 10, 40, WRITE_VALUES)
    ]
    assert capture.decoder.stats.fragments.reassembled >= 1
    assert dt.datetime.now(dt.UTC) - found[0].time < dt.timedelta(seconds=30)  # type: ignore[operator]
