"""The live capture socket's set-up on the loopback interface, with real frames: the kernel filter
(outgoing copies, ICS ports, VLAN tags, fragments), the TPACKET_V3 ring, the receive buffer, the
kernel's counts, and the fallbacks when the kernel refuses an option (refused by a subclass)."""

from __future__ import annotations

import asyncio
import errno
import os
import random
import socket
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from scapy.all import ICMP, IP, TCP, UDP, Dot1AD, Dot1Q, Ether, IPv6, IPv6ExtHdrFragment, Raw

from iip.kernel.db import Database
from iip.kernel.settings import SecuritySettings, Settings
from iip.security.bpf import PACKET_OUTGOING, SO_ATTACH_FILTER
from iip.security.live import (
    READER_RECVFROM,
    READER_RING,
    SO_RCVBUFFORCE,
    CaptureOptions,
    CaptureSetup,
    LiveCapture,
    capture_options,
)
from iip.security.monitor import LiveMonitor
from iip.security.protocols.base import IcsMessage, PacketInfo
from iip.security.ring import PACKET_RX_RING, PACKET_VERSION, SOL_PACKET
from tests.conftest import TenantFixture
from tests.security.conftest import LOOPBACK_CAPTURE, require_raw_sockets

pytestmark = LOOPBACK_CAPTURE

PACKET_HOST = 0
ELSEWHERE = "02:00:00:00:00:01"  # not lo's address: the IP stack ignores these frames, packet sockets see them
FILTER = (socket.SOL_SOCKET, SO_ATTACH_FILTER)
RING = (SOL_PACKET, PACKET_RX_RING)
VERSION = (SOL_PACKET, PACKET_VERSION)
RCVBUFFORCE = (socket.SOL_SOCKET, SO_RCVBUFFORCE)
RCVBUF = (socket.SOL_SOCKET, socket.SO_RCVBUF)


@pytest.fixture(autouse=True)
def _raw_sockets_allowed() -> None:
    require_raw_sockets()


class Recording(LiveCapture):
    """Keeps (packet type, bytes) of every frame read that carries `marker`, before anything is skipped;
    refuses the socket options named in `refuse` as a kernel without them would; waits while `hold`
    is clear, as a reader that falls behind."""

    def __init__(self, marker: bytes, *, refuse: frozenset[tuple[int, int]] = frozenset(), **kwargs: Any) -> None:
        self.decoded: list[PacketInfo] = []
        super().__init__("lo", self._decoded, poll_interval=0.05, **kwargs)
        self.marker = marker
        self.refuse = refuse
        self.seen: list[tuple[int, bytes]] = []
        self.hold = threading.Event()
        self.hold.set()

    def _decoded(self, info: PacketInfo, messages: list[IcsMessage]) -> None:
        self.decoded.append(info)

    def decoded_from(self, net: str) -> list[PacketInfo]:
        return [info for info in self.decoded if info.source.host.startswith(net + ".")]

    def _set_option(self, sock: socket.socket, level: int, option: int, value: int | bytes) -> None:
        if (level, option) in self.refuse:
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))
        super()._set_option(sock, level, option, value)

    def _frame(self, data: bytes, packet_type: int, hardware_type: int, time: Any) -> None:
        if self.marker in data:
            self.seen.append((packet_type, data))
        self.hold.wait()
        super()._frame(data, packet_type, hardware_type, time)


def unique_net() -> str:
    return f"127.{random.randint(64, 250)}.{random.randint(1, 250)}"  # noqa: S311 - not for secrets


def wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def settle(capture: LiveCapture) -> None:
    """Until the reader has read everything it was given (no new frame for a few ring timeouts)."""
    last = -1
    while capture.frames != last:
        last = capture.frames
        time.sleep(0.3)


def send_frames(frames: list[bytes]) -> None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sender:
        sender.bind(("lo", 0))
        for frame in frames:
            sender.send(frame)


def udp_exchange(net: str, marker: bytes, count: int) -> None:
    """`count` datagrams between two real sockets on lo (received, so the kernel answers nothing)."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
    ):
        server.bind((f"{net}.9", 0))
        client.bind((f"{net}.5", 0))
        for n in range(count):
            client.sendto(marker + n.to_bytes(4, "big"), server.getsockname())
            server.recv(100)


@pytest.mark.parametrize("ring", [True, False], ids=["ring", "recvfrom"])
def test_the_kernel_drops_loopbacks_outgoing_copies(ring: bool) -> None:
    net, marker = unique_net(), os.urandom(8)
    capture = Recording(marker, options=CaptureOptions(ring=ring))
    with capture:
        udp_exchange(net, marker, 50)
        assert wait_until(lambda: len(capture.decoded_from(net)) >= 50)
        settle(capture)
    assert capture.error == ""
    assert capture.setup.kernel_drops_outgoing
    assert capture.setup.reader == (READER_RING if ring else READER_RECVFROM)
    assert capture.setup.fallbacks == []
    # Each datagram read once, the copy coming in.
    assert [packet_type for packet_type, _ in capture.seen] == [PACKET_HOST] * 50
    assert len(capture.decoded_from(net)) == 50


@pytest.mark.parametrize("ring", [True, False], ids=["ring", "recvfrom"])
def test_outgoing_copies_are_skipped_when_the_filter_is_refused(ring: bool, caplog: pytest.LogCaptureFixture) -> None:
    net, marker = unique_net(), os.urandom(8)
    capture = Recording(marker, refuse=frozenset({FILTER}), options=CaptureOptions(ring=ring))
    with caplog.at_level("WARNING", logger="iip.security.live"), capture:
        udp_exchange(net, marker, 30)
        assert wait_until(lambda: len(capture.seen) >= 60)
        settle(capture)
    assert not capture.setup.kernel_drops_outgoing
    assert capture.setup.fallbacks == ["kernel filter not attached (Operation not permitted); outgoing copies "
                                       "skipped as they are read"]  # fmt: skip
    assert "kernel filter not attached" in caplog.text
    # Both copies reach the socket; the decoder gets each datagram once all the same.
    assert sorted(packet_type for packet_type, _ in capture.seen) == [PACKET_HOST] * 30 + [PACKET_OUTGOING] * 30
    assert len(capture.decoded_from(net)) == 30


def ics_frames(net: str) -> dict[str, tuple[bytes, bool]]:
    """Frames named by what they carry, each with its name in the payload, and whether the ICS-only
    filter must keep it."""
    client, server = f"{net}.5", f"{net}.9"
    ether = Ether(dst=ELSEWHERE, src="02:00:00:00:00:02")
    ipv4 = IP(src=client, dst=server)
    ipv6 = IPv6(src="fd00::5", dst="fd00::9")
    cases: dict[str, tuple[Any, bool]] = {
        "modbus request": (ether / ipv4 / TCP(sport=40001, dport=502, flags="PA"), True),
        "modbus response": (ether / IP(src=server, dst=client) / TCP(sport=502, dport=40001, flags="PA"), True),
        "dnp3 udp": (ether / ipv4 / UDP(sport=40002, dport=20000), True),
        "dnp3 tcp": (ether / ipv4 / TCP(sport=40003, dport=20000), True),
        "iec104": (ether / ipv4 / TCP(sport=40004, dport=2404), True),
        "s7comm": (ether / ipv4 / TCP(sport=40005, dport=102), True),
        "ip options": (ether / IP(src=client, dst=server, options=b"\x01" * 8) / TCP(sport=40006, dport=502), True),
        "ip options http": (ether / IP(src=client, dst=server, options=b"\x01" * 8) / TCP(sport=502 + 1, dport=80),
                            False),
        "http": (ether / ipv4 / TCP(sport=40007, dport=8080), False),
        "mdns": (ether / ipv4 / UDP(sport=5353, dport=5353), False),
        "ping": (ether / ipv4 / ICMP(), False),
        "first fragment": (ether / IP(src=client, dst=server, flags="MF", id=77) / TCP(sport=40008, dport=8080), True),
        "later fragment": (ether / IP(src=client, dst=server, frag=3, id=77, proto=6), True),
        "ipv6 modbus": (ether / ipv6 / TCP(sport=40009, dport=502), True),
        "ipv6 other": (ether / ipv6 / UDP(sport=40010, dport=9999), False),
        "ipv6 fragment": (ether / ipv6 / IPv6ExtHdrFragment(offset=2, id=9, nh=6), True),
        "vlan modbus": (ether / Dot1Q(vlan=12) / ipv4 / TCP(sport=40011, dport=502), True),
        "vlan http": (ether / Dot1Q(vlan=12) / ipv4 / TCP(sport=40012, dport=8080), False),
        "qinq modbus": (ether / Dot1AD(vlan=3) / Dot1Q(vlan=12) / ipv4 / TCP(sport=40013, dport=502), True),
        "qinq http": (ether / Dot1AD(vlan=3) / Dot1Q(vlan=12) / ipv4 / TCP(sport=40014, dport=8080), False),
        "arp-like": (Ether(dst=ELSEWHERE, type=0x0806) / Raw(b"\x00" * 28), False),
    }  # fmt: skip
    return {name: (bytes(frame / Raw(b"IIPMARK:" + name.encode())), keep) for name, (frame, keep) in cases.items()}


@pytest.mark.parametrize("ics_ports_only", [True, False], ids=["ics-only", "all-ports"])
def test_the_ics_port_filter_keeps_ics_fragments_and_vlans_only(ics_ports_only: bool) -> None:
    frames = ics_frames(unique_net())
    capture = Recording(b"IIPMARK:", options=CaptureOptions(ics_ports_only=ics_ports_only))
    with capture:
        send_frames([frame for frame, _ in frames.values()])
        wanted = sum(1 for _, keep in frames.values() if keep or not ics_ports_only)
        assert wait_until(lambda: len(capture.seen) >= wanted, 5)
        settle(capture)
    assert capture.setup.kernel_ics_ports_only is ics_ports_only
    seen = [data.rsplit(b"IIPMARK:", 1)[1].decode() for _, data in capture.seen]
    expected = [name for name, (_, keep) in frames.items() if keep or not ics_ports_only]
    assert seen == expected
    # The kernel took the outer VLAN tag off; the QinQ frame's inner tag reached the filter in the data.
    qinq = next(data for _, data in capture.seen if data.endswith(b"qinq modbus"))
    assert qinq[12:14] == b"\x81\x00"


@pytest.mark.parametrize("ring", [True, False], ids=["ring", "recvfrom"])
def test_every_frame_of_bursts_is_read_in_order(ring: bool) -> None:
    """Three bursts of 1,500 frames through a ring of eight 64 KiB blocks (about 3,600 frames of this
    size): each burst fits, the three together go round the ring. recvfrom's buffer counts every
    frame's kernel overhead, so it gets more room."""
    net, marker = unique_net(), os.urandom(8)
    size = 8 * 64 * 1024 if ring else 8 << 20
    options = CaptureOptions(ring=ring, ring_block_bytes=64 * 1024, buffer_bytes=size, ics_ports_only=True)
    capture = Recording(marker, options=options)
    base = Ether(dst=ELSEWHERE) / IP(src=f"{net}.5", dst=f"{net}.9") / UDP(sport=40000, dport=20000)
    with capture:
        assert capture.setup.buffer_bytes >= size
        for burst in range(3):
            send_frames(
                [bytes(base / Raw(marker + n.to_bytes(2, "big"))) for n in range(burst * 1500, (burst + 1) * 1500)]
            )
            assert wait_until(lambda burst=burst: len(capture.seen) >= (burst + 1) * 1500)
        settle(capture)
        _received, dropped = capture.kernel_counts()
    assert capture.setup.reader == (READER_RING if ring else READER_RECVFROM)
    order = [int.from_bytes(data[-2:], "big") for _, data in capture.seen]
    assert order == list(range(4500))
    assert dropped == 0


@pytest.mark.parametrize("refused", [RING, VERSION], ids=["rx-ring", "version"])
def test_without_a_ring_the_socket_is_read_with_recvfrom(
    refused: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    net, marker = unique_net(), os.urandom(8)
    capture = Recording(marker, refuse=frozenset({refused}), options=CaptureOptions(buffer_bytes=1 << 20))
    with caplog.at_level("WARNING", logger="iip.security.live"), capture:
        udp_exchange(net, marker, 200)
        assert wait_until(lambda: len(capture.seen) >= 200)
    assert capture.setup.reader == READER_RECVFROM
    assert capture.setup.fallbacks == ["no TPACKET_V3 ring (Operation not permitted): read with recvfrom"]
    assert "no TPACKET_V3 ring" in caplog.text
    assert capture.setup.buffer_bytes == 2 << 20  # SO_RCVBUFFORCE as root; the kernel doubles it
    assert [int.from_bytes(data[-4:], "big") for _, data in capture.seen] == list(range(200))


def test_receive_buffer_falls_back_to_so_rcvbuf_capped_by_rmem_max() -> None:
    rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
    asked = rmem_max + 64 * 1024
    capture = Recording(b"-", refuse=frozenset({RCVBUFFORCE}), options=CaptureOptions(ring=False, buffer_bytes=asked))
    with capture:
        pass
    assert capture.setup.buffer_bytes == 2 * rmem_max
    assert capture.setup.fallbacks == [f"receive buffer {rmem_max} bytes of {asked} asked (net.core.rmem_max)"]


def test_receive_buffer_left_alone_when_both_are_refused() -> None:
    rmem_default = int(Path("/proc/sys/net/core/rmem_default").read_text())
    capture = Recording(b"-", refuse=frozenset({RCVBUFFORCE, RCVBUF}), options=CaptureOptions(ring=False))
    with capture:
        pass
    assert capture.setup.buffer_bytes == rmem_default
    assert capture.setup.fallbacks[0].startswith("receive buffer left as it was (Operation not permitted;")


@pytest.mark.parametrize("ring", [True, False], ids=["ring", "recvfrom"])
def test_kernel_counts_what_it_dropped_while_the_reader_was_behind(ring: bool) -> None:
    net, marker = unique_net(), os.urandom(8)
    options = CaptureOptions(ring=ring, ring_block_bytes=64 * 1024, buffer_bytes=64 * 1024, ics_ports_only=True)
    capture = Recording(marker, options=options)
    frame = Ether(dst=ELSEWHERE) / IP(src=f"{net}.5", dst=f"{net}.9") / UDP(sport=40000, dport=502) / Raw(marker)
    capture.start()
    try:
        capture.hold.clear()  # the reader stops at the first frame it reads
        send_frames([bytes(frame)] * 3000)
        time.sleep(0.2)
    finally:
        capture.hold.set()
    settle(capture)
    capture.stop()
    received, dropped = capture.kernel_counts()
    assert capture.kernel_counts() == (received, dropped)  # read last when the socket closed
    assert dropped > 0
    assert len(capture.seen) < 3000
    assert capture.frames + dropped == received  # every frame queued was read, or counted as dropped


@pytest.mark.parametrize("filtered", [True, False], ids=["kernel-filter", "filter-refused"])
def test_kernel_counts_leave_out_what_the_filter_drops(filtered: bool) -> None:
    """400 Modbus frames on lo: with the filter the kernel counts each once (others' ICS traffic on lo
    aside); without it both copies of every frame on lo."""
    net, marker = unique_net(), os.urandom(8)
    refuse = frozenset() if filtered else frozenset({FILTER})
    capture = Recording(marker, refuse=refuse, options=CaptureOptions(ics_ports_only=True))
    frame = Ether(dst=ELSEWHERE) / IP(src=f"{net}.5", dst=f"{net}.9") / TCP(sport=40000, dport=502) / Raw(marker)
    with capture:
        before, _ = capture.kernel_counts()
        send_frames([bytes(frame)] * 400)
        assert wait_until(lambda: len(capture.seen) >= (400 if filtered else 800))
        settle(capture)
        received = capture.kernel_counts()[0] - before
    if filtered:
        assert 400 <= received < 600
    else:
        assert received >= 800


def test_an_unknown_interface_cannot_be_opened() -> None:
    capture = LiveCapture("nosuch0", lambda info, messages: None)
    with pytest.raises(OSError, match="No such device"):
        capture.start()


def test_settings_give_the_capture_options() -> None:
    settings = SecuritySettings(monitor_ics_ports_only=True, monitor_buffer_bytes=8 << 20)
    assert capture_options(settings) == CaptureOptions(ics_ports_only=True, buffer_bytes=8 << 20)
    assert capture_options(SecuritySettings()) == CaptureOptions()
    with pytest.raises(ValidationError, match="monitor_buffer_bytes"):
        SecuritySettings(monitor_buffer_bytes=4096)


async def test_the_monitor_opens_its_capture_as_the_settings_say(
    migrated_db: Database, tenant_a: TenantFixture, settings: Settings
) -> None:
    security = SecuritySettings(monitor_ics_ports_only=True, monitor_buffer_bytes=2 << 20)
    monitor = LiveMonitor(
        migrated_db, tenant_a.id, "line-1", settings=settings.model_copy(update={"security": security})
    )
    stop = asyncio.Event()
    setups: list[CaptureSetup] = []

    def started(running: LiveMonitor) -> None:
        assert running._capture is not None
        setups.append(running._capture.setup)
        stop.set()

    state = await asyncio.wait_for(monitor.run("lo", stop, poll_interval=0.05, started=started), timeout=10)
    assert state.error == ""
    assert setups == [CaptureSetup(READER_RING, True, True, 2 << 20, [])]
