"""Live ICS traffic from a network interface (Linux AF_PACKET raw socket; needs root or CAP_NET_RAW).

Frames go through the same `PacketDecoder` as capture files, so flows, codecs and records are the
same. `LiveCapture` reads in a thread and hands each IP packet with its records to a callback;
`live_packets` is the same as an async iterator. Both stop cleanly: the socket is polled, so
`stop()` returns within a poll interval. While the interface is quiet the decoder still forgets idle
flows and gives up stale IP fragments (`DecoderLimits`). `kernel_counts()` says how many packets the
kernel handed to the socket and how many it dropped because the reader fell behind.

So that the reader keeps up, the socket is set up in three steps, each with a fallback
(`CaptureSetup` says what was granted; every fallback is logged):

1. a classic BPF filter in the kernel (`bpf.py`): on loopback it drops the outgoing copy of every
   packet, and with `ics_ports_only` it keeps only TCP/UDP on the ICS ports and IP fragments.
   Without it (refused), outgoing copies are skipped here as they are read and all ports are kept;
2. a TPACKET_V3 receive ring of `buffer_bytes` (`ring.py`): one wake-up per block of frames.
   Without it, the socket is read with `recvfrom`, draining everything queued per wake-up;
3. for `recvfrom`, a receive buffer of `buffer_bytes` (`SO_RCVBUFFORCE`, which needs
   CAP_NET_ADMIN, else `SO_RCVBUF`, capped by net.core.rmem_max).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fcntl
import logging
import os
import select
import socket
import struct
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import TracebackType

from iip.kernel.settings import SecuritySettings
from iip.security.bpf import (
    ARPHRD_LOOPBACK,
    ETHERNET_TYPES,
    PACKET_OUTGOING,
    RAW_IP_TYPES,
    attach,
    capture_program,
)
from iip.security.capture import LINKTYPE_ETHERNET, LINKTYPE_RAW, DecoderLimits, PacketDecoder
from iip.security.protocols.base import IcsMessage, PacketInfo
from iip.security.ring import RxRing

logger = logging.getLogger(__name__)

ETH_P_ALL = 0x0003
MAX_FRAME = 65535
SOL_PACKET = 263
PACKET_STATISTICS = 6  # struct tpacket_stats: packets, drops (both reset on every read)
SO_RCVBUFFORCE = 33
SIOCGIFHWADDR = 0x8927
DEFAULT_BUFFER_BYTES = 32 * 1024 * 1024
RING_BLOCK_BYTES = 256 * 1024  # holds the largest frame loopback carries (64 KiB) several times
RING_RETIRE_MS = 50  # a block not yet full is handed over this long after its first frame
MAX_BATCH = 4096  # frames read per wake-up at most, so stopping and expiry are not held up
_POLL_FAILED = select.POLLERR | select.POLLHUP | select.POLLNVAL

READER_RING = "ring"
READER_RECVFROM = "recvfrom"

PacketCallback = Callable[[PacketInfo, list[IcsMessage]], None]


@dataclass(frozen=True, slots=True)
class CaptureOptions:
    """How the capture socket is set up (see the module's docstring)."""

    ics_ports_only: bool = False  # the kernel keeps only ICS ports and IP fragments
    buffer_bytes: int = DEFAULT_BUFFER_BYTES  # the ring's size, or the receive buffer asked for
    ring: bool = True  # False: recvfrom only
    ring_block_bytes: int = RING_BLOCK_BYTES  # whole pages; the ring has at least two blocks
    ring_retire_ms: int = RING_RETIRE_MS


def capture_options(settings: SecuritySettings) -> CaptureOptions:
    """The live monitor's capture options the settings give."""
    return CaptureOptions(ics_ports_only=settings.monitor_ics_ports_only, buffer_bytes=settings.monitor_buffer_bytes)


@dataclass(slots=True)
class CaptureSetup:
    """What the kernel granted when the socket was opened."""

    reader: str = ""  # READER_RING or READER_RECVFROM
    kernel_drops_outgoing: bool = False  # loopback's outgoing copies dropped by the filter
    kernel_ics_ports_only: bool = False  # the ICS-ports part of the filter is attached
    buffer_bytes: int = 0  # the ring's size, or SO_RCVBUF as the kernel reports it (twice what was asked)
    fallbacks: list[str] = field(default_factory=list)  # what was asked for and not granted, and why


class LiveCapture:
    """Reads one interface in a thread; `on_packet(info, records)` for every IP packet."""

    def __init__(
        self,
        interface: str,
        on_packet: PacketCallback,
        *,
        poll_interval: float = 0.2,
        limits: DecoderLimits | None = None,
        options: CaptureOptions | None = None,
    ) -> None:
        self.interface = interface
        self.on_packet = on_packet
        self.poll_interval = poll_interval
        self.options = options or CaptureOptions()
        self.decoder = PacketDecoder(limits)
        self.frames = 0
        self.kernel_received = 0  # packets the kernel queued for the socket, as last read
        self.kernel_dropped = 0  # packets it dropped because the socket's queue was full
        self.setup = CaptureSetup()
        self._counts_lock = threading.Lock()
        self.error = ""  # why reading stopped early (the socket failed); "" otherwise
        self._socket: socket.socket | None = None
        self._ring: RxRing | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        """Opens the socket (raises OSError without the right to, or for an unknown interface) and
        starts reading."""
        # Protocol 0: nothing is queued before the filter and the ring are in place and bind names one.
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        ring: RxRing | None = None
        try:
            hardware_type = self._hardware_type(sock)
            self.setup, ring = self._prepare(sock, hardware_type)
            sock.bind((self.interface, ETH_P_ALL))
        except BaseException:
            if ring is not None:
                ring.close()
            sock.close()
            raise
        self._socket, self._ring = sock, ring
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"ics-capture-{self.interface}", daemon=True)
        self._thread.start()

    def stop(self) -> list[IcsMessage]:
        """Stops reading and returns what the codecs still held (unfinished frames, as records)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._socket is not None:
            self.kernel_counts()
            if self._ring is not None:
                self._ring.close()
                self._ring = None
            self._socket.close()
            self._socket = None
        return self.decoder.finish()

    def kernel_counts(self) -> tuple[int, int]:
        """(received, dropped) by the kernel since the socket opened (PACKET_STATISTICS); what
        was read last when the socket is closed. Frames the kernel filter refuses are in neither."""
        sock = self._socket
        with self._counts_lock:
            if sock is not None:
                try:
                    received, dropped = struct.unpack("II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
                except OSError:
                    received = dropped = 0
                # The kernel counts dropped packets among the received ones and resets both on reading.
                self.kernel_received += received
                self.kernel_dropped += dropped
            return self.kernel_received, self.kernel_dropped

    def __enter__(self) -> LiveCapture:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    # --- setting the socket up

    def _set_option(self, sock: socket.socket, level: int, option: int, value: int | bytes) -> None:
        """Every option the set-up asks the kernel for goes through here."""
        sock.setsockopt(level, option, value)

    def _hardware_type(self, sock: socket.socket) -> int:
        """The interface's ARPHRD_* type (SIOCGIFHWADDR: struct ifreq, the address family after the name)."""
        request = struct.pack("16s16x", self.interface.encode())
        answer = fcntl.ioctl(sock.fileno(), SIOCGIFHWADDR, request)
        return int(struct.unpack_from("H", answer, 16)[0])

    def _prepare(self, sock: socket.socket, hardware_type: int) -> tuple[CaptureSetup, RxRing | None]:
        options, setup = self.options, CaptureSetup()
        loopback = hardware_type == ARPHRD_LOOPBACK
        ics_ports_only = options.ics_ports_only
        if ics_ports_only and hardware_type not in ETHERNET_TYPES | RAW_IP_TYPES:
            setup.fallbacks.append(f"no ICS port filter for hardware type {hardware_type}: all ports kept")
            ics_ports_only = False
        program = capture_program(hardware_type, drop_outgoing=loopback, ics_ports_only=ics_ports_only)
        if program is not None:
            try:
                attach(sock, program, self._set_option)
            except OSError as err:
                kept = "; outgoing copies skipped as they are read" if loopback else ""
                ports = ", all ports kept" if ics_ports_only else ""
                setup.fallbacks.append(f"kernel filter not attached ({_reason(err)}){kept}{ports}")
            else:
                setup.kernel_drops_outgoing, setup.kernel_ics_ports_only = loopback, ics_ports_only
        ring: RxRing | None = None
        if options.ring:
            block = options.ring_block_bytes
            try:
                ring = RxRing(
                    sock, block_bytes=block, blocks=max(2, options.buffer_bytes // block),
                    retire_ms=options.ring_retire_ms, set_option=self._set_option,
                )  # fmt: skip
            except OSError as err:
                setup.fallbacks.append(f"no TPACKET_V3 ring ({_reason(err)}): read with recvfrom")
        if ring is not None:
            setup.reader, setup.buffer_bytes = READER_RING, ring.size
        else:
            setup.reader, setup.buffer_bytes = READER_RECVFROM, self._receive_buffer(sock, setup)
        for fallback in setup.fallbacks:
            logger.warning("capture on %s: %s", self.interface, fallback)
        logger.info(
            "capture on %s: %s of %d bytes, kernel filter: %s", self.interface, setup.reader, setup.buffer_bytes,
            ", ".join(name for name, on in (("outgoing copies", setup.kernel_drops_outgoing),
                                            ("ICS ports only", setup.kernel_ics_ports_only)) if on) or "none",
        )  # fmt: skip
        return setup, ring

    def _receive_buffer(self, sock: socket.socket, setup: CaptureSetup) -> int:
        """Asks for `buffer_bytes` of receive buffer; what the kernel granted."""
        wanted = self.options.buffer_bytes
        try:
            self._set_option(sock, socket.SOL_SOCKET, SO_RCVBUFFORCE, wanted)
        except OSError as forced:
            try:
                self._set_option(sock, socket.SOL_SOCKET, socket.SO_RCVBUF, wanted)
            except OSError as err:
                setup.fallbacks.append(f"receive buffer left as it was ({_reason(forced)}; {_reason(err)})")
        granted = int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
        if granted < 2 * wanted:  # the kernel doubles what it grants, for its bookkeeping
            setup.fallbacks.append(f"receive buffer {granted // 2} bytes of {wanted} asked (net.core.rmem_max)")
        return granted

    # --- reading

    def _run(self) -> None:
        sock = self._socket
        if sock is None:
            return
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        if self._ring is not None:
            self._read_ring(sock, self._ring, poller)
        else:
            self._read_socket(sock, poller)

    def _wait(self, sock: socket.socket, poller: select.poll) -> bool:
        """Waits up to a poll interval for frames; False when none came (idle state expired then)
        or the socket failed (`error` set)."""
        events = poller.poll(max(1, round(self.poll_interval * 1000)))
        if not events:
            self.decoder.expire(dt.datetime.now(dt.UTC))
            return False
        if events[0][1] & _POLL_FAILED:
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code or events[0][1] & select.POLLNVAL:
                self.error = f"capture socket failed: {os.strerror(code) if code else 'closed'}"
                return False
        return True

    def _read_ring(self, sock: socket.socket, ring: RxRing, poller: select.poll) -> None:
        while not self._stopping.is_set():
            frames = ring.take_block()
            if frames is None:
                if not self._wait(sock, poller) and self.error:
                    return
                continue
            for frame in frames:
                time = dt.datetime.fromtimestamp(frame.seconds + frame.nanoseconds / 1e9, dt.UTC)
                self._frame(frame.data, frame.packet_type, frame.hardware_type, time)

    def _read_socket(self, sock: socket.socket, poller: select.poll) -> None:
        sock.setblocking(False)
        while not self._stopping.is_set():
            if not self._wait(sock, poller):
                if self.error:
                    return
                continue
            for _ in range(MAX_BATCH):  # everything queued, one system call per frame
                try:
                    data, address = sock.recvfrom(MAX_FRAME)
                except BlockingIOError:
                    break
                except OSError as err:
                    self.error = f"capture socket failed: {_reason(err)}"
                    return
                _name, _protocol, packet_type, hardware_type, _mac = address
                self._frame(data, packet_type, hardware_type, dt.datetime.now(dt.UTC))

    def _frame(self, data: bytes, packet_type: int, hardware_type: int, time: dt.datetime) -> None:
        if packet_type == PACKET_OUTGOING and hardware_type == ARPHRD_LOOPBACK:
            return  # loopback shows every packet twice; the kernel filter drops this copy when attached
        linktype = LINKTYPE_RAW[0] if hardware_type in RAW_IP_TYPES else LINKTYPE_ETHERNET
        self.frames += 1
        decoded = self.decoder.packet(self.frames, time, linktype, data)
        if decoded is not None:
            self.on_packet(*decoded)


def _reason(err: OSError) -> str:
    return str(err.strerror or err)


async def live_packets(
    interface: str, *, poll_interval: float = 0.2, max_queued: int = 10000, options: CaptureOptions | None = None
) -> AsyncIterator[tuple[PacketInfo, list[IcsMessage]]]:
    """The packets of `interface` with their records, as they arrive; closing the iterator stops it.

    When the consumer falls `max_queued` packets behind, newer packets are dropped (counted in
    the iterator's capture `frames` but not yielded) rather than growing without bound.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[PacketInfo, list[IcsMessage]]] = asyncio.Queue(max_queued)

    def put(info: PacketInfo, messages: list[IcsMessage]) -> None:
        loop.call_soon_threadsafe(_offer, queue, (info, messages))

    capture = LiveCapture(interface, put, poll_interval=poll_interval, options=options)
    capture.start()
    try:
        while True:
            yield await queue.get()
    finally:
        await asyncio.to_thread(capture.stop)


def _offer(
    queue: asyncio.Queue[tuple[PacketInfo, list[IcsMessage]]], item: tuple[PacketInfo, list[IcsMessage]]
) -> None:
    if not queue.full():
        queue.put_nowait(item)
