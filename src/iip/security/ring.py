"""A PACKET_MMAP receive ring, TPACKET_V3: the kernel writes frames into blocks of memory shared
with the reader, so reading costs one wake-up per block instead of a system call per frame.

The ring is `blocks` blocks of `block_bytes`. The kernel fills one block at a time and hands it
over (block status TP_STATUS_USER) when it is full or `retire_ms` after its first frame; the
reader copies the block's frames out, gives the block back (status TP_STATUS_KERNEL) and decodes
them afterwards, so the kernel can refill the block meanwhile. While every block is still the
reader's, the kernel drops frames (counted in PACKET_STATISTICS). Layouts: linux/if_packet.h.
"""

from __future__ import annotations

import mmap
import socket
import struct
from typing import NamedTuple

from iip.security.bpf import SetOption

SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_VERSION = 10
TPACKET_V1 = 0
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
FRAME_BYTES = 2048  # the nominal frame size the kernel checks; V3 packs frames by their real size

# struct tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1: block_status, num_pkts,
# offset_to_first_pkt, ...
_BLOCK = struct.Struct("=III")
_BLOCK_STATUS_AT = 8
# struct tpacket3_hdr: tp_next_offset, tp_sec, tp_nsec, tp_snaplen, tp_len, tp_status, tp_mac
_FRAME = struct.Struct("=IIIIIIH")
# struct sockaddr_ll follows the header at TPACKET_ALIGN(sizeof(struct tpacket3_hdr)) = 48:
# sll_family, sll_protocol, sll_ifindex, then sll_hatype and sll_pkttype.
_LINK = struct.Struct("=HB")
_LINK_AT = 48 + 8


class RingFrame(NamedTuple):
    data: bytes
    packet_type: int  # PACKET_HOST, PACKET_OUTGOING ...
    hardware_type: int  # ARPHRD_*
    seconds: int
    nanoseconds: int


class RxRing:
    """Sets the ring up on a packet socket not yet bound (OSError when the kernel refuses)."""

    def __init__(
        self, sock: socket.socket, *, block_bytes: int, blocks: int, retire_ms: int, set_option: SetOption
    ) -> None:
        if block_bytes % mmap.PAGESIZE or block_bytes < FRAME_BYTES or blocks < 1:
            raise ValueError(f"ring blocks must be whole pages: {blocks} x {block_bytes} bytes")
        self.block_bytes = block_bytes
        self.blocks = blocks
        self.size = block_bytes * blocks
        self._current = 0
        set_option(sock, SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        frames = self.size // FRAME_BYTES
        # struct tpacket_req3: block size and count, frame size and count, retire timeout (ms),
        # private bytes per block, feature word.
        request = struct.pack("=7I", block_bytes, blocks, FRAME_BYTES, frames, retire_ms, 0, 0)
        try:
            set_option(sock, SOL_PACKET, PACKET_RX_RING, request)
        except OSError:
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V1)  # recvfrom does not need V3
            raise
        try:
            self._map = mmap.mmap(sock.fileno(), self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError:
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, struct.pack("=7I", 0, 0, 0, 0, 0, 0, 0))  # frees it
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V1)
            raise

    def take_block(self) -> list[RingFrame] | None:
        """The frames of the next block if the kernel has handed it over (the block is given back
        before returning); None when it has not."""
        ring = self._map
        base = self._current * self.block_bytes
        status, count, offset = _BLOCK.unpack_from(ring, base + _BLOCK_STATUS_AT)
        if not status & TP_STATUS_USER:
            return None
        offset += base
        frames: list[RingFrame] = []
        for _ in range(count):
            next_offset, seconds, nanoseconds, captured, _length, _status, mac = _FRAME.unpack_from(ring, offset)
            hardware_type, packet_type = _LINK.unpack_from(ring, offset + _LINK_AT)
            start = offset + mac
            frames.append(RingFrame(ring[start : start + captured], packet_type, hardware_type, seconds, nanoseconds))
            offset += next_offset
        struct.pack_into("=I", ring, base + _BLOCK_STATUS_AT, TP_STATUS_KERNEL)
        self._current = (self._current + 1) % self.blocks
        return frames

    def close(self) -> None:
        self._map.close()
