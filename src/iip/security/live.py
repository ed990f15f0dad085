"""Live ICS traffic from a network interface (Linux AF_PACKET raw socket; needs root or CAP_NET_RAW).

Frames go through the same `PacketDecoder` as capture files, so flows, codecs and records are the
same. `LiveCapture` reads in a thread and hands each IP packet with its records to a callback;
`live_packets` is the same as an async iterator. Both stop cleanly: the socket is polled, so
`stop()` returns within a poll interval. While the interface is quiet the decoder still forgets idle
flows and gives up stale IP fragments (`DecoderLimits`). `kernel_counts()` says how many packets the
kernel handed to the socket and how many it dropped because the reader fell behind.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import struct
import threading
from collections.abc import AsyncIterator, Callable
from types import TracebackType

from iip.security.capture import LINKTYPE_ETHERNET, LINKTYPE_RAW, DecoderLimits, PacketDecoder
from iip.security.protocols.base import IcsMessage, PacketInfo

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
ARPHRD_LOOPBACK = 772
ARPHRD_NONE = 0xFFFE  # tun devices: raw IP
ARPHRD_IP_TYPES = frozenset({ARPHRD_NONE, 0x0100 + 31})  # none, IP-in-IP tunnel
MAX_FRAME = 65535
SOL_PACKET = 263
PACKET_STATISTICS = 6  # struct tpacket_stats: packets, drops (both reset on every read)

PacketCallback = Callable[[PacketInfo, list[IcsMessage]], None]


class LiveCapture:
    """Reads one interface in a thread; `on_packet(info, records)` for every IP packet."""

    def __init__(
        self,
        interface: str,
        on_packet: PacketCallback,
        *,
        poll_interval: float = 0.2,
        limits: DecoderLimits | None = None,
    ) -> None:
        self.interface = interface
        self.on_packet = on_packet
        self.poll_interval = poll_interval
        self.decoder = PacketDecoder(limits)
        self.frames = 0
        self.kernel_received = 0  # packets the kernel queued for the socket, as last read
        self.kernel_dropped = 0  # packets it dropped because the socket's queue was full
        self._counts_lock = threading.Lock()
        self.error = ""  # why reading stopped early (the socket failed); "" otherwise
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        """Opens the socket (raises OSError without the right to) and starts reading."""
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            sock.bind((self.interface, 0))
            sock.settimeout(self.poll_interval)
        except OSError:
            sock.close()
            raise
        self._socket = sock
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
            self._socket.close()
            self._socket = None
        return self.decoder.finish()

    def kernel_counts(self) -> tuple[int, int]:
        """(received, dropped) by the kernel since the socket opened (PACKET_STATISTICS); what
        was read last when the socket is closed."""
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

    def _run(self) -> None:
        sock = self._socket
        if sock is None:
            return
        while not self._stopping.is_set():
            try:
                data, address = sock.recvfrom(MAX_FRAME)
            except TimeoutError:
                self.decoder.expire(dt.datetime.now(dt.UTC))
                continue
            except OSError as err:
                self.error = f"capture socket failed: {err.strerror or err}"
                return
            self._frame(data, address)

    def _frame(self, data: bytes, address: tuple[str, int, int, int, bytes]) -> None:
        _name, _protocol, packet_type, hardware_type, _mac = address
        if packet_type == PACKET_OUTGOING and hardware_type == ARPHRD_LOOPBACK:
            return  # loopback shows every packet twice: going out and coming in
        linktype = LINKTYPE_RAW[0] if hardware_type in ARPHRD_IP_TYPES else LINKTYPE_ETHERNET
        self.frames += 1
        decoded = self.decoder.packet(self.frames, dt.datetime.now(dt.UTC), linktype, data)
        if decoded is not None:
            self.on_packet(*decoded)


async def live_packets(
    interface: str, *, poll_interval: float = 0.2, max_queued: int = 10000
) -> AsyncIterator[tuple[PacketInfo, list[IcsMessage]]]:
    """The packets of `interface` with their records, as they arrive; closing the iterator stops it.

    When the consumer falls `max_queued` packets behind, newer packets are dropped (counted in
    the iterator's capture `frames` but not yielded) rather than growing without bound.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[PacketInfo, list[IcsMessage]]] = asyncio.Queue(max_queued)

    def put(info: PacketInfo, messages: list[IcsMessage]) -> None:
        loop.call_soon_threadsafe(_offer, queue, (info, messages))

    capture = LiveCapture(interface, put, poll_interval=poll_interval)
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
