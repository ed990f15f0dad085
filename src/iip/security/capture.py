"""Reading ICS traffic from pcap and pcapng captures: packets, TCP flows, and the codecs' records.

Frames are read with dpkt (Ethernet with VLAN tags, Linux cooked SLL and SLL2, raw IP, BSD
loopback; IPv4 and IPv6); in a pcapng file each packet takes the link type of the interface it
names. Fragmented IP datagrams are put back together first (`fragments.Reassembler`). Each TCP
direction is put back in sequence order (retransmissions dropped, out-of-order segments held until
the gap fills) and fed to the codec its well-known port names (502 Modbus, 20000 DNP3, 2404 IEC 104,
102 S7comm), or that its first bytes name when the port is unusual. Flows idle for `flow_idle_s`
are forgotten, and at most `max_flows` are followed at once (the longest idle goes first), so a
decoder watching an interface for months holds bounded state. A damaged capture file gives the
records up to the damage and says why it stopped.
"""

from __future__ import annotations

import datetime as dt
import importlib
import struct
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import dpkt  # type: ignore[import-untyped]

from iip.security.fragments import FragmentLimits, FragmentStats, Reassembler
from iip.security.protocols import dnp3, iec104, modbus
from iip.security.protocols.base import Endpoint, IcsMessage, IcsProtocol, PacketInfo, StreamDecoder, Transport

WELL_KNOWN_PORTS: dict[int, IcsProtocol] = {
    502: IcsProtocol.MODBUS,
    20000: IcsProtocol.DNP3,
    2404: IcsProtocol.IEC104,
    102: IcsProtocol.S7COMM,
}

# Link-layer header types (tcpdump.org/linktypes.html) read here.
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = (101, 12, 14, 228, 229)  # raw IP; 228, 229: IPv4 only, IPv6 only
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276

MAX_OUT_OF_ORDER = 32  # segments held per direction while waiting for a missing one
_SYN_ACK = 0x12
_SEQ_SPACE = 1 << 32
_HALF_SEQ = 1 << 31
_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
_PCAPNG_LITTLE, _PCAPNG_BIG = b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"
_PCAPNG_IDB, _PCAPNG_OLD_PB, _PCAPNG_SPB, _PCAPNG_EPB = 1, 2, 3, 6
_IP_MF_OFFSET = 0x3FFF  # IPv4 more-fragments flag and fragment offset
_IP6_FRAGMENT = 44
_DPKT_ERRORS = (dpkt.NeedData, dpkt.UnpackError, struct.error, ValueError, IndexError)


# --- frames to IP packets ---------------------------------------------------------------------


def _ip_of(linktype: int, data: bytes) -> Any:
    """The dpkt IP or IP6 packet inside a link-layer frame, or None."""
    if linktype == LINKTYPE_ETHERNET:
        return dpkt.ethernet.Ethernet(data).data
    if linktype in LINKTYPE_RAW:
        return _raw_ip(data)
    if linktype == LINKTYPE_LINUX_SLL:
        return dpkt.sll.SLL(data).data
    if linktype == LINKTYPE_LINUX_SLL2:
        return dpkt.sll2.SLL2(data).data
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        family = int.from_bytes(data[:4], "big" if linktype == LINKTYPE_LOOP else "little")
        if family > 0xFFFF:  # written on a big-endian machine
            family = int.from_bytes(data[:4], "big")
        return _raw_ip(data[4:]) if family in (2, 24, 28, 30) else None
    return None


def _raw_ip(data: bytes) -> Any:
    if not data:
        return None
    version = data[0] >> 4
    if version == 4:
        return dpkt.ip.IP(data)
    if version == 6:
        return dpkt.ip6.IP6(data)
    return None


def _address(ip: Any) -> tuple[str, str]:
    if isinstance(ip, dpkt.ip.IP):
        return _ipv4_text(ip.src), _ipv4_text(ip.dst)
    return dpkt.utils.inet_to_str(ip.src), dpkt.utils.inet_to_str(ip.dst)


_IPV4_CACHE: dict[bytes, str] = {}


def _ipv4_text(raw: bytes) -> str:
    text = _IPV4_CACHE.get(raw)
    if text is None:
        text = _IPV4_CACHE[raw] = "%d.%d.%d.%d" % tuple(raw)  # noqa: UP031 - faster than format for 4 bytes
        if len(_IPV4_CACHE) > 65536:
            _IPV4_CACHE.clear()
    return text


# --- flows ------------------------------------------------------------------------------------


def _sniff(payload: bytes) -> tuple[IcsProtocol, bool | None] | None:
    """The ICS protocol the first payload of a flow on an unusual port reads as, and whether it
    goes to the server when the bytes say (DNP3's DIR bit); cheap checks only."""
    if len(payload) >= dnp3.HEADER_LENGTH and payload[:2] == dnp3.START and dnp3.measure_frame(payload, 0):
        return IcsProtocol.DNP3, bool(payload[3] & 0x80)
    if payload[0] == iec104.START and iec104.measure_frame(payload, 0) == len(payload):
        return IcsProtocol.IEC104, None
    if (
        len(payload) > modbus.MBAP_LENGTH
        and modbus.measure_frame(payload, 0) == len(payload)
        and payload[modbus.MBAP_LENGTH] & 0x7F in modbus.FUNCTION_NAMES
    ):
        return IcsProtocol.MODBUS, None
    return None


def _segment_of(protocol: int, payload: bytes) -> Any:
    """The transport segment of a reassembled datagram's payload (bytes for other protocols)."""
    if protocol == dpkt.ip.IP_PROTO_TCP:
        return dpkt.tcp.TCP(payload)
    if protocol == dpkt.ip.IP_PROTO_UDP:
        return dpkt.udp.UDP(payload)
    return payload


class _Direction:
    """One direction of a flow: its codec and where the next in-order byte is."""

    __slots__ = ("decoder", "destination", "held", "next_seq", "source")

    def __init__(self, source: Endpoint, destination: Endpoint, decoder: StreamDecoder | None) -> None:
        self.source, self.destination, self.decoder = source, destination, decoder
        self.next_seq: int | None = None
        self.held: dict[int, tuple[bytes, dt.datetime, int]] = {}


@dataclass(slots=True)
class _Connection:
    protocol: IcsProtocol | None
    server: tuple[str, int] | None  # the endpoint that serves, when known
    last: dt.datetime  # its latest packet
    opened_to: tuple[str, int] | None = None  # the endpoint a SYN was sent to (it serves)
    session: modbus.ModbusSession = field(default_factory=modbus.ModbusSession)
    directions: dict[tuple[str, int, str, int], _Direction] = field(default_factory=dict)


@dataclass
class FlowStats:
    """What the flow tracker met besides records."""

    retransmissions: int = 0  # TCP segments already seen, dropped
    gaps: int = 0  # missing TCP data given up on (the codec restarted after it)
    undecoded: Counter[str] = field(default_factory=Counter)  # packets of protocols without a codec here
    evicted: Counter[str] = field(default_factory=Counter)  # flows forgotten: "idle", "over limit"
    held_dropped: int = 0  # gaps given up early because all flows together held too many segments
    fragments: FragmentStats = field(default_factory=FragmentStats)


@dataclass(frozen=True, slots=True)
class DecoderLimits:
    """What one `PacketDecoder` holds at most."""

    flow_idle_s: float = 300.0  # a flow without packets for this long is forgotten
    max_flows: int = 20_000  # flows followed at once; beyond, the longest idle is forgotten
    max_held_bytes: int = 16 * 1024 * 1024  # out-of-order TCP payload held, all flows together
    fragments: FragmentLimits = field(default_factory=FragmentLimits)


def _s7comm_decoder_class() -> type | None:
    try:
        module = importlib.import_module("iip.security.protocols.s7comm")
    except ImportError:
        return None
    found = getattr(module, "S7commStreamDecoder", None)
    return found if isinstance(found, type) else None


class PacketDecoder:
    """Turns link-layer frames into `PacketInfo` and the ICS records their flows complete."""

    def __init__(self, limits: DecoderLimits | None = None) -> None:
        self.limits = limits or DecoderLimits()
        self.stats = FlowStats()
        self._fragments = Reassembler(self.limits.fragments)
        self.stats.fragments = self._fragments.stats
        # Least recently active first, so the flow to forget is always at the front.
        self._connections: OrderedDict[tuple[str, int, str, int, Transport], _Connection] = OrderedDict()
        self._idle = dt.timedelta(seconds=self.limits.flow_idle_s)
        self._since_sweep = 0
        self._held_bytes = 0
        self._leftovers: list[IcsMessage] = []  # what forgotten flows' codecs still held
        self._decoder_classes: dict[IcsProtocol, Callable[..., StreamDecoder] | None] = {
            IcsProtocol.MODBUS: modbus.ModbusStreamDecoder,
            IcsProtocol.DNP3: dnp3.Dnp3StreamDecoder,
            IcsProtocol.IEC104: iec104.Iec104StreamDecoder,
        }

    @property
    def flows(self) -> int:
        """Flows followed now."""
        return len(self._connections)

    def packet(
        self, frame: int, time: dt.datetime, linktype: int, data: bytes
    ) -> tuple[PacketInfo, list[IcsMessage]] | None:
        """The packet's summary and records, or None when the frame holds no IP packet (or holds a
        fragment that does not complete its datagram). Records of forgotten flows ride along."""
        self._since_sweep += 1
        if self._since_sweep >= 1024:
            self.expire(time)
        elif self._fragments.waiting:  # fragments time out on the traffic's clock, whatever comes next
            self._fragments.expire(time.timestamp())
        decoded = self._packet(frame, time, linktype, data)
        if self._leftovers and decoded is not None:
            info, messages = decoded
            messages, self._leftovers = messages + self._leftovers, []
            return info, messages
        return decoded

    def expire(self, now: dt.datetime) -> None:
        """Forgets the flows idle since before `now - flow_idle_s` and gives up fragments too old."""
        self._since_sweep = 0
        self._fragments.expire(now.timestamp())
        while self._connections:
            key, oldest = next(iter(self._connections.items()))
            if now - oldest.last <= self._idle:
                break
            self._forget(key, "idle")

    def _packet(
        self, frame: int, time: dt.datetime, linktype: int, data: bytes
    ) -> tuple[PacketInfo, list[IcsMessage]] | None:
        found = self._ip_and_segment(linktype, data, time)
        if found is None:
            return None
        ip, segment = found
        source_host, destination_host = _address(ip)
        if isinstance(segment, dpkt.tcp.TCP):
            transport, flags, seq = Transport.TCP, segment.flags, segment.seq
        elif isinstance(segment, dpkt.udp.UDP):
            transport, flags, seq = Transport.UDP, 0, 0
        else:
            info = PacketInfo(frame, time, Endpoint(source_host, 0), Endpoint(destination_host, 0), Transport.OTHER,
                              len(data))  # fmt: skip
            return info, []
        payload = bytes(segment.data)
        source = Endpoint(source_host, segment.sport)
        destination = Endpoint(destination_host, segment.dport)
        info = PacketInfo(frame, time, source, destination, transport, len(data), flags, len(payload))
        connection = self._connection(source, destination, transport, payload, flags, time)
        if connection is None:
            return info, []
        info.protocol = connection.protocol
        key = (source.host, source.port, destination.host, destination.port)
        direction = connection.directions.get(key)
        if direction is None:
            decoder = self._decoder(connection, source, destination)
            direction = connection.directions[key] = _Direction(source, destination, decoder)
        if transport is Transport.UDP:
            return info, self._feed(connection, direction, payload, time, frame)
        return info, self._tcp(connection, direction, seq, flags, payload, time, frame)

    def finish(self) -> list[IcsMessage]:
        """The end of the capture: held segments in order, then what each codec has left over."""
        messages, self._leftovers = self._leftovers, []
        for connection in self._connections.values():
            messages += self._drain(connection)
        self._fragments.finish()
        return messages

    def _drain(self, connection: _Connection) -> list[IcsMessage]:
        """What a flow still holds: its held segments in order, then what each codec has left over."""
        messages: list[IcsMessage] = []
        for direction in connection.directions.values():
            for seq in sorted(direction.held, key=lambda s: (s - (direction.next_seq or s)) % _SEQ_SPACE):
                payload, time, frame = direction.held[seq]
                self._held_bytes -= len(payload)
                messages += self._feed(connection, direction, payload, time, frame)
            direction.held.clear()
            finish = getattr(direction.decoder, "finish", None)
            if finish is not None:
                messages += finish()
        return messages

    def _forget(self, key: tuple[str, int, str, int, Transport], reason: str) -> None:
        self.stats.evicted[reason] += 1
        self._leftovers += self._drain(self._connections.pop(key))

    def _ip_and_segment(self, linktype: int, data: bytes, time: dt.datetime) -> tuple[Any, Any] | None:
        """The frame's IP packet and its transport segment (a whole datagram's, once its last
        fragment came); None for anything else."""
        try:
            ip = _ip_of(linktype, data)
            if isinstance(ip, dpkt.ip.IP):
                segment = ip.data if not ip._flags_offset & _IP_MF_OFFSET else self._ipv4_fragment(ip, time)
            elif isinstance(ip, dpkt.ip6.IP6):
                fragment = ip.extension_hdrs.get(_IP6_FRAGMENT)
                segment = ip.data if fragment is None else self._ipv6_fragment(ip, fragment, time)
            else:
                return None
        except _DPKT_ERRORS:
            return None
        return None if segment is None else (ip, segment)

    def _ipv4_fragment(self, ip: Any, time: dt.datetime) -> Any:
        """The transport segment when this fragment completes its datagram, else None."""
        key = ("IPv4", ip.src, ip.dst, ip.p, ip.id)
        more = bool(ip._flags_offset & dpkt.ip.IP_MF)
        offset = (ip._flags_offset & dpkt.ip.IP_OFFMASK) * 8
        whole = self._fragments.add(key, offset, bytes(ip.data), more, time.timestamp())
        return None if whole is None else _segment_of(ip.p, whole)

    def _ipv6_fragment(self, ip: Any, fragment: Any, time: dt.datetime) -> Any:
        if not fragment.frag_off and not fragment.m_flag:
            return ip.data  # an atomic fragment (RFC 6946): the whole datagram
        if fragment.nxt in dpkt.ip6.EXT_HDRS:  # the fragmentable part is not plain payload: not followed
            self._fragments.stats.fragments += 1
            self._fragments.stats.dropped["IPv6 fragments with extension headers after the fragment header"] += 1
            return None
        key = ("IPv6", ip.src, ip.dst, fragment.id)
        whole = self._fragments.add(key, fragment.frag_off * 8, bytes(ip.data), bool(fragment.m_flag),
                                    time.timestamp())  # fmt: skip
        return None if whole is None else _segment_of(fragment.nxt, whole)

    def _connection(
        self,
        source: Endpoint,
        destination: Endpoint,
        transport: Transport,
        payload: bytes,
        flags: int,
        time: dt.datetime,
    ) -> _Connection | None:
        a, b = (source.host, source.port), (destination.host, destination.port)
        key = (*a, *b, transport) if a <= b else (*b, *a, transport)
        connection = self._connections.get(key)
        if connection is not None:
            connection.last = time
            self._connections.move_to_end(key)
        if flags & _SYN_ACK == dpkt.tcp.TH_SYN:  # a new connection: whoever it is sent to serves
            if connection is not None and connection.protocol is None:
                connection.server = None  # the 4-tuple is reused: identify it afresh
            connection = connection or self._new_connection(key, a, b, payload, time)
            connection.opened_to = b
        if connection is not None:
            if connection.protocol is None and payload and connection.server is None:
                self._identify(connection, source, destination, payload)
            return connection if connection.protocol is not None else None
        connection = self._new_connection(key, a, b, payload, time)
        return connection if connection.protocol is not None else None

    def _new_connection(
        self,
        key: tuple[str, int, str, int, Transport],
        a: tuple[str, int],
        b: tuple[str, int],
        payload: bytes,
        time: dt.datetime,
    ) -> _Connection:
        while len(self._connections) >= self.limits.max_flows:
            self._forget(next(iter(self._connections)), "over limit")
        connection = self._connections[key] = _Connection(None, None, time)
        if b[1] in WELL_KNOWN_PORTS:
            connection.protocol, connection.server = WELL_KNOWN_PORTS[b[1]], b
        elif a[1] in WELL_KNOWN_PORTS:
            connection.protocol, connection.server = WELL_KNOWN_PORTS[a[1]], a
        elif payload:
            self._identify(connection, Endpoint(*a), Endpoint(*b), payload)
        return connection

    @staticmethod
    def _identify(connection: _Connection, source: Endpoint, destination: Endpoint, payload: bytes) -> None:
        """Content sniffing, once per connection (its first payload)."""
        found = _sniff(payload)
        a, b = (source.host, source.port), (destination.host, destination.port)
        if found is None:
            connection.server = a  # decided: not ICS; never sniffed again
            return
        protocol, to_server = found
        if to_server is None and connection.opened_to is not None:
            to_server = connection.opened_to == b
        if to_server is None:
            to_server = destination.port < source.port  # servers listen on the lower port, as a rule
        connection.protocol, connection.server = protocol, b if to_server else a

    def _decoder(self, connection: _Connection, source: Endpoint, destination: Endpoint) -> StreamDecoder | None:
        protocol = connection.protocol
        if protocol is None:
            return None
        if protocol not in self._decoder_classes:
            self._decoder_classes[protocol] = _s7comm_decoder_class() if protocol is IcsProtocol.S7COMM else None
        factory = self._decoder_classes[protocol]
        if factory is None:
            return None
        to_server = connection.server == (destination.host, destination.port)
        if protocol is IcsProtocol.MODBUS:
            return modbus.ModbusStreamDecoder(source, destination, to_server=to_server, session=connection.session)
        return factory(source, destination, to_server=to_server)

    def _feed(
        self, connection: _Connection, direction: _Direction, payload: bytes, time: dt.datetime, frame: int
    ) -> list[IcsMessage]:
        if not payload:
            return []
        if direction.decoder is None:
            self.stats.undecoded[str(connection.protocol)] += 1
            return []
        return direction.decoder.feed(payload, time=time, frame=frame)

    def _tcp(
        self,
        connection: _Connection,
        direction: _Direction,
        seq: int,
        flags: int,
        payload: bytes,
        time: dt.datetime,
        frame: int,
    ) -> list[IcsMessage]:
        if flags & dpkt.tcp.TH_SYN:
            self._held_bytes -= sum(len(held[0]) for held in direction.held.values())
            direction.next_seq, direction.held = (seq + 1) % _SEQ_SPACE, {}
            return []
        if not payload:
            return []
        if direction.next_seq is None:  # the capture started mid-stream
            direction.next_seq = seq
        ahead = (seq - direction.next_seq) % _SEQ_SPACE
        if ahead >= _HALF_SEQ:  # starts before what was already fed: a retransmission, or an overlap
            behind = _SEQ_SPACE - ahead
            if behind >= len(payload):
                self.stats.retransmissions += 1
                return []
            payload, seq, ahead = payload[behind:], direction.next_seq, 0
        if ahead:
            return self._hold(connection, direction, seq, payload, time, frame)
        messages = self._feed(connection, direction, payload, time, frame)
        direction.next_seq = (seq + len(payload)) % _SEQ_SPACE
        if direction.held:
            messages += self._release(connection, direction)
        return messages

    def _hold(
        self,
        connection: _Connection,
        direction: _Direction,
        seq: int,
        payload: bytes,
        time: dt.datetime,
        frame: int,
    ) -> list[IcsMessage]:
        if seq in direction.held:
            self.stats.retransmissions += 1
            return []
        direction.held[seq] = (payload, time, frame)
        self._held_bytes += len(payload)
        over_budget = self._held_bytes > self.limits.max_held_bytes
        if over_budget:
            self.stats.held_dropped += 1
        if len(direction.held) <= MAX_OUT_OF_ORDER and not over_budget:
            return []
        # The missing segment is not coming (the capture lost it): restart the codec after the gap.
        self.stats.gaps += 1
        expected = direction.next_seq or 0
        first = min(direction.held, key=lambda s: (s - expected) % _SEQ_SPACE)
        direction.next_seq = first
        if direction.decoder is not None:
            direction.decoder = self._decoder(connection, direction.source, direction.destination)
        return self._release(connection, direction)

    def _release(self, connection: _Connection, direction: _Direction) -> list[IcsMessage]:
        messages: list[IcsMessage] = []
        while direction.next_seq in direction.held:
            payload, time, frame = direction.held.pop(direction.next_seq)
            self._held_bytes -= len(payload)
            messages += self._feed(connection, direction, payload, time, frame)
            direction.next_seq = (direction.next_seq + len(payload)) % _SEQ_SPACE
        return messages


# --- capture files ----------------------------------------------------------------------------


class CaptureError(Exception):
    """The capture file cannot be read (further); the text says why."""


def _pcap_frames(stream: IO[bytes], header: bytes) -> Iterator[tuple[float, int, bytes]]:
    """(time, link type, frame) of a libpcap file; raises `CaptureError` where it is damaged."""
    if len(header) < 24:
        raise CaptureError("pcap file header truncated")
    order, resolution = _PCAP_MAGICS[header[:4]]
    linktype = struct.unpack(order + "I", header[20:24])[0] & 0x0FFFFFFF
    record = struct.Struct(order + "IIII")
    while True:
        head = stream.read(16)
        if not head:
            return
        if len(head) < 16:
            raise CaptureError("packet header truncated")
        seconds, fraction, captured, _original = record.unpack(head)
        if captured > 0x4000000:
            raise CaptureError("packet length implausible (corrupt record header)")
        data = stream.read(captured)
        if len(data) < captured:
            raise CaptureError("packet data truncated")
        yield seconds + fraction * resolution, linktype, data


def _pcapng_frames(stream: IO[bytes]) -> Iterator[tuple[float, int, bytes]]:
    try:
        yield from _pcapng_blocks(stream)
    except (ValueError, struct.error) as err:
        raise CaptureError(f"pcapng block damaged or truncated ({type(err).__name__})") from err


@dataclass(frozen=True, slots=True)
class _Interface:
    """What a pcapng Interface Description Block says about the packets that name it."""

    linktype: int
    snaplen: int
    units: float = 1e6  # timestamp units per second (if_tsresol)
    offset: int = 0  # seconds added to every timestamp (if_tsoffset)


def _pcapng_blocks(stream: IO[bytes]) -> Iterator[tuple[float, int, bytes]]:
    """(time, link type, frame) of every packet block, each with its own interface's link type
    (pcapng, IETF draft-ietf-opsawg-pcapng): sections may change byte order, and each starts its
    own list of interfaces. Simple Packet Blocks carry no time: they take the previous packet's."""
    order = "<"
    interfaces: list[_Interface] = []
    last_time = 0.0
    while True:
        head = stream.read(8)
        if not head:
            return
        if len(head) < 8:
            raise ValueError("block header truncated")
        if head[:4] == _PCAPNG_MAGIC:
            magic = stream.read(4)
            if magic not in (_PCAPNG_LITTLE, _PCAPNG_BIG):
                raise ValueError("section header byte-order magic damaged")
            order = "<" if magic == _PCAPNG_LITTLE else ">"
            length = _block_length(order, head)
            if length < 28 or len(stream.read(length - 12)) < length - 12:
                raise ValueError("section header truncated")
            interfaces = []
            continue
        kind = struct.unpack(order + "I", head[:4])[0]
        length = _block_length(order, head)
        body = stream.read(length - 8)
        if len(body) < length - 8:
            raise ValueError("block truncated")
        if body[-4:] != head[4:8]:
            raise ValueError("block lengths disagree")
        if kind == _PCAPNG_IDB:
            interfaces.append(_interface(order, body[:-4]))
        elif kind in (_PCAPNG_EPB, _PCAPNG_OLD_PB, _PCAPNG_SPB):
            time, linktype, data = _packet_block(order, kind, body, interfaces)
            last_time = last_time if time is None else time
            yield last_time, linktype, data
        # Other blocks (name resolution, statistics, custom ...) say nothing about packets.


def _packet_block(order: str, kind: int, body: bytes, interfaces: list[_Interface]) -> tuple[float | None, int, bytes]:
    """(time, link type, frame) of an Enhanced, Simple or (obsolete) Packet Block; a Simple one has no time."""
    if kind == _PCAPNG_SPB:
        interface = _named(interfaces, 0)
        original = struct.unpack_from(order + "I", body)[0]
        return None, interface.linktype, body[4 : 4 + min(original, interface.snaplen or original, len(body) - 8)]
    if kind == _PCAPNG_EPB:
        number, high, low, captured = struct.unpack_from(order + "IIII", body)
    else:  # the obsolete Packet Block: a 16-bit interface id and a drops count
        number, _drops, high, low, captured = struct.unpack_from(order + "HHIII", body)
    interface = _named(interfaces, number)
    data = body[20 : 20 + captured]
    if len(data) < captured or 20 + captured > len(body) - 4:
        raise ValueError("packet data truncated")
    return interface.offset + ((high << 32) | low) / interface.units, interface.linktype, data


def _block_length(order: str, head: bytes) -> int:
    length: int = struct.unpack(order + "I", head[4:8])[0]
    if length < 12 or length % 4:
        raise ValueError("block length implausible")
    if length > 0x4000000:
        raise ValueError("block length implausible (corrupt block header)")
    return length


def _named(interfaces: list[_Interface], number: int) -> _Interface:
    if number >= len(interfaces):
        raise CaptureError(f"packet block names interface {number}, which no interface description block describes")
    return interfaces[number]


def _interface(order: str, body: bytes) -> _Interface:
    linktype, _reserved, snaplen = struct.unpack_from(order + "HHI", body)
    units, offset = 1e6, 0
    at = 8
    while at + 4 <= len(body):
        code, size = struct.unpack_from(order + "HH", body, at)
        value = body[at + 4 : at + 4 + size]
        if code == 0:  # opt_endofopt
            break
        if code == 9 and size >= 1:  # if_tsresol: a negative power of 10, or of 2 when the top bit is set
            units = float(2 ** (value[0] & 0x7F) if value[0] & 0x80 else 10 ** (value[0] & 0x7F))
        elif code == 14 and size >= 8:  # if_tsoffset
            offset = struct.unpack(order + "q", value[:8])[0]
        at += 4 + size + (-size % 4)
    return _Interface(linktype, snaplen, units, offset)


def capture_frames(stream: IO[bytes]) -> Iterator[tuple[float, int, bytes]]:
    """(time, link type, frame) of every record of a pcap or pcapng stream."""
    header = stream.read(24)
    if header[:4] in _PCAP_MAGICS:
        yield from _pcap_frames(stream, header)
    elif header[:4] == _PCAPNG_MAGIC:
        stream.seek(0)
        yield from _pcapng_frames(stream)
    elif not header:
        raise CaptureError("empty file")
    else:
        raise CaptureError("not a pcap or pcapng file")


class CaptureReader:
    """Iterates a capture's IP packets with the records each completed; `error` says why it stopped
    early ("" when it read to the end), `finish()` gives what was still pending at the end."""

    def __init__(self, source: str | Path | IO[bytes]) -> None:
        self.source = source
        self.decoder = PacketDecoder()
        self.error = ""
        self.frames = 0
        self.link_types: set[int] = set()

    def __iter__(self) -> Iterator[tuple[PacketInfo, list[IcsMessage]]]:
        if isinstance(self.source, (str, Path)):
            try:
                stream: IO[bytes] = Path(self.source).open("rb")  # noqa: SIM115 - closed below
            except OSError as err:
                self.error = f"cannot open capture: {err.strerror or err}"
                return
            with stream:
                yield from self._read(stream)
        else:
            yield from self._read(self.source)

    def _read(self, stream: IO[bytes]) -> Iterator[tuple[PacketInfo, list[IcsMessage]]]:
        utc = dt.UTC
        decode = self.decoder.packet
        try:
            for timestamp, linktype, data in capture_frames(stream):
                self.frames += 1
                self.link_types.add(linktype)
                try:
                    time = dt.datetime.fromtimestamp(timestamp, utc)
                except (OverflowError, OSError, ValueError):
                    time = dt.datetime.fromtimestamp(0, utc)
                decoded = decode(self.frames, time, linktype, data)
                if decoded is not None:
                    yield decoded
        except CaptureError as err:
            self.error = str(err)
        except OSError as err:
            self.error = f"cannot read capture: {err.strerror or err}"

    def finish(self) -> list[IcsMessage]:
        return self.decoder.finish()


def iter_capture(source: str | Path | IO[bytes]) -> Iterator[tuple[PacketInfo, list[IcsMessage]]]:
    """Every IP packet of a pcap/pcapng file (path or binary file) with the ICS records it completed.

    A damaged file ends the iteration where the damage is; use `CaptureReader` to learn why.
    """
    return iter(CaptureReader(source))


@dataclass
class CaptureSummary:
    """Everything read from one capture."""

    source: str
    packets: int = 0  # records in the file
    ip_packets: int = 0
    messages: list[IcsMessage] = field(default_factory=list)
    protocols: Counter[str] = field(default_factory=Counter)  # records per ICS protocol
    malformed: Counter[str] = field(default_factory=Counter)  # malformed records per reason
    undecoded: Counter[str] = field(default_factory=Counter)  # packets of protocols with no codec here
    retransmissions: int = 0
    gaps: int = 0
    dropped: Counter[str] = field(default_factory=Counter)  # IP fragments given up, per reason
    error: str = ""  # why the file could not be read to its end; "" when it could

    @property
    def ok(self) -> bool:
        return not self.error


def read_capture(source: str | Path | IO[bytes]) -> CaptureSummary:
    """Reads a whole capture; never raises for a bad or damaged file (see `error`)."""
    reader = CaptureReader(source)
    summary = CaptureSummary(source=str(getattr(source, "name", source)))
    for _info, messages in reader:
        summary.ip_packets += 1
        summary.messages += messages
    summary.messages += reader.finish()
    summary.packets, summary.error = reader.frames, reader.error
    for msg in summary.messages:
        summary.protocols[str(msg.protocol)] += 1
        if msg.malformed:
            summary.malformed[msg.malformed] += 1
    stats = reader.decoder.stats
    summary.undecoded, summary.retransmissions, summary.gaps = stats.undecoded, stats.retransmissions, stats.gaps
    summary.malformed.update(stats.fragments.malformed)  # datagrams refused before any codec saw them
    summary.dropped.update(stats.fragments.dropped)
    return summary
