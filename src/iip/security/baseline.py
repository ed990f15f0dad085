"""A site's normal network and ICS behaviour, learned over a training window (the allowlist).

What is learned:

- flows: who talks to whom, on which transport and server port, with or without an ICS protocol
  (non-ICS flows too: file shares, name services, DHCP). A TCP flow counts only once its server
  side answered (a SYN nobody answered is an attempt, not a relation); broadcast and multicast
  datagrams are flows to their group address.
- per ICS pair (client, server, protocol, port): the request function codes, unit ids, the ranges
  read and written per unit and address space, the values written per address (range kept raw,
  the margin applied when checking), exceptions.
- timing: packets per flow and requests and exceptions per pair in tumbling windows of
  `rate_window_s` (the peak window is what floods are judged against), request rate and
  inter-arrival times per pair.

Training may span several segments (captures or days): each segment is observed, then
`new_segment()` closes it so time between segments counts neither as training time nor as an
inter-arrival. The baseline is plain JSON (`to_json` / `from_json`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from iip.security.inventory import (
    MODBUS_WRITES,
    IntervalSet,
    address_space,
    client_and_server,
    requested_range,
)
from iip.security.protocols.base import Direction, Endpoint, IcsMessage, IcsProtocol, PacketInfo, Transport

FORMAT = 1
TCP_SYN, TCP_RST, TCP_ACK, TCP_FIN = 0x02, 0x04, 0x10, 0x01
ICS_PORTS: dict[int, IcsProtocol] = {
    502: IcsProtocol.MODBUS,
    20000: IcsProtocol.DNP3,
    2404: IcsProtocol.IEC104,
    102: IcsProtocol.S7COMM,
}


def is_service_port(port: int) -> bool:
    """Ports servers listen on: the well-known range and the ICS ports above it."""
    return 0 < port < 1024 or port in ICS_PORTS


def is_group_address(address: str) -> bool:
    """Broadcast or multicast: a datagram to many, not a relation between two hosts."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.is_multicast:
        return True
    # Without the netmask, a last octet of 255 is taken as the subnet's broadcast address.
    return isinstance(ip, ipaddress.IPv4Address) and ip.packed[-1] == 255


# -- flows ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class FlowKey:
    """A relation: `client` uses the service `server:port` over `transport`."""

    client: str
    server: str
    transport: str
    port: int

    def label(self) -> str:
        return f"{self.client} -> {self.server}:{self.port}/{self.transport}"


@dataclass(slots=True)
class Connection:
    """One transport conversation (a TCP connection, a UDP exchange) with its client side found."""

    client: Endpoint
    server: Endpoint
    transport: Transport
    opened: dt.datetime
    last: dt.datetime
    first_frame: int
    began_with_syn: bool = False
    answered: bool = False  # the server side sent something
    completed: bool = False  # the handshake finished (or data went both ways)
    closed: bool = False
    counted_incomplete: bool = False

    @property
    def key(self) -> FlowKey:
        return FlowKey(self.client.host, self.server.host, self.transport.value, self.server.port)


class FlowTracker:
    """Finds the client of each packet's conversation and follows TCP handshakes.

    A SYN names its sender the client; a SYN-ACK its receiver. A conversation met mid-way (the
    capture began after it) has its server on a service port, else at its first destination.
    """

    def __init__(self, *, idle_s: float = 300.0) -> None:
        self._connections: dict[tuple[Any, ...], Connection] = {}
        self._idle = dt.timedelta(seconds=idle_s)
        self._since_prune = 0

    def track(self, packet: PacketInfo) -> tuple[Connection, bool]:
        """The packet's conversation and whether the packet comes from its client."""
        key = self._key(packet)
        connection = self._connections.get(key)
        syn_only = packet.transport is Transport.TCP and packet.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
        if connection is None or (syn_only and (connection.closed or connection.completed)):
            connection = self._open(packet, syn_only=syn_only)
            self._connections[key] = connection
        from_client = packet.source == connection.client
        self._advance(connection, packet, from_client=from_client)
        self._since_prune += 1
        if self._since_prune >= 4096:
            self.prune(packet.time)
        return connection, from_client

    def prune(self, now: dt.datetime) -> list[Connection]:
        """Forgets conversations idle for longer than `idle_s`; returns them."""
        self._since_prune = 0
        stale = [key for key, c in self._connections.items() if now - c.last > self._idle]
        return [self._connections.pop(key) for key in stale]

    def connections(self) -> list[Connection]:
        return list(self._connections.values())

    @staticmethod
    def _key(packet: PacketInfo) -> tuple[Any, ...]:
        a = (packet.source.host, packet.source.port)
        b = (packet.destination.host, packet.destination.port)
        return (packet.transport.value, *(sorted([a, b])))

    @staticmethod
    def _open(packet: PacketInfo, *, syn_only: bool) -> Connection:
        source, destination = packet.source, packet.destination
        syn_ack = packet.transport is Transport.TCP and packet.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK
        source_serves = is_service_port(source.port) and not is_service_port(destination.port)
        client, server = (destination, source) if syn_ack or (not syn_only and source_serves) else (source, destination)
        return Connection(
            client=client,
            server=server,
            transport=packet.transport,
            opened=packet.time,
            last=packet.time,
            first_frame=packet.frame,
            began_with_syn=syn_only,
        )

    @staticmethod
    def _advance(connection: Connection, packet: PacketInfo, *, from_client: bool) -> None:
        connection.last = packet.time
        if not from_client:
            connection.answered = True
        if packet.transport is not Transport.TCP:
            connection.completed = connection.answered
            return
        flags = packet.tcp_flags
        if from_client and connection.answered and flags & TCP_ACK and not flags & (TCP_SYN | TCP_RST):
            connection.completed = True
        if packet.payload_length and connection.answered:
            connection.completed = True
        if flags & (TCP_RST | TCP_FIN):
            connection.closed = True


# -- tumbling windows -------------------------------------------------------------------------


@dataclass(slots=True)
class WindowCounter:
    """Counts in tumbling windows of fixed length; keeps the busiest closed window."""

    window: dt.timedelta
    start: dt.datetime | None = None
    count: int = 0
    peak: int = 0

    def add(self, when: dt.datetime, amount: int = 1) -> int:
        """Adds `amount` at `when`; returns the count of the window `when` falls in."""
        if self.start is None or when >= self.start + self.window or when < self.start:
            self.peak = max(self.peak, self.count)
            self.start, self.count = when, 0
        self.count += amount
        return self.count

    def close(self) -> int:
        self.peak = max(self.peak, self.count)
        self.start, self.count = None, 0
        return self.peak


# -- learned profiles -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class PairKey:
    """An ICS relation: `client` speaks `protocol` to `server:port`."""

    client: str
    server: str
    protocol: str
    port: int

    def label(self) -> str:
        return f"{self.client} -> {self.server}:{self.port} ({self.protocol})"


@dataclass(slots=True)
class FlowProfile:
    protocol: str = ""  # the ICS protocol, "" for other traffic
    packets: int = 0
    bytes: int = 0
    peak_packets: int = 0  # most packets in one rate window
    first_seen: dt.datetime | None = None
    last_seen: dt.datetime | None = None


def space_key(unit: int | None, space: str) -> str:
    return f"{'' if unit is None else unit}/{space}"


@dataclass(slots=True)
class PairProfile:
    requests: int = 0
    functions: Counter[int] = field(default_factory=Counter)
    units: set[int] = field(default_factory=set)
    reads: dict[str, IntervalSet] = field(default_factory=dict)  # space_key -> ranges read
    writes: dict[str, IntervalSet] = field(default_factory=dict)  # space_key -> ranges written
    written_values: dict[str, tuple[float, float]] = field(default_factory=dict)  # space_key/address -> range
    exceptions: int = 0
    peak_requests: int = 0
    peak_exceptions: int = 0
    interarrival_count: int = 0
    interarrival_sum_s: float = 0.0
    interarrival_min_s: float | None = None
    interarrival_max_s: float | None = None
    active_s: float = 0.0  # training time this pair was seen in

    @property
    def rate_per_s(self) -> float:
        return self.requests / self.active_s if self.active_s > 0 else 0.0

    @property
    def interarrival_mean_s(self) -> float | None:
        return self.interarrival_sum_s / self.interarrival_count if self.interarrival_count else None


@dataclass(slots=True)
class Baseline:
    """What normal looks like; see the module docstring."""

    rate_window_s: float = 10.0
    value_margin: float = 0.1  # fraction of the learned span (at least 1) a written value may exceed it by
    trained_from: dt.datetime | None = None
    trained_until: dt.datetime | None = None
    training_s: float = 0.0
    packets: int = 0
    messages: int = 0
    hosts: set[str] = field(default_factory=set)
    flows: dict[FlowKey, FlowProfile] = field(default_factory=dict)
    pairs: dict[PairKey, PairProfile] = field(default_factory=dict)

    # -- questions detection asks ------------------------------------------------------------

    def knows_flow(self, key: FlowKey) -> bool:
        return key in self.flows

    def knows_service(self, server: str, transport: str, port: int) -> bool:
        return any(k.server == server and k.transport == transport and k.port == port for k in self.flows)

    def knows_pair_hosts(self, client: str, server: str) -> bool:
        return any(k.client == client and k.server == server for k in self.flows)

    def server_reads(self, server: str, protocol: str, key: str) -> IntervalSet:
        """Everything any client read or wrote in one address space of a server."""
        found = IntervalSet()
        for pair, profile in self.pairs.items():
            if pair.server == server and pair.protocol == protocol:
                for ranges in (profile.reads.get(key), profile.writes.get(key)):
                    for lo, hi in ranges.intervals if ranges else []:
                        found.add(lo, hi)
        return found

    def server_units(self, server: str, protocol: str) -> set[int]:
        return {
            u for p, prof in self.pairs.items() if p.server == server and p.protocol == protocol for u in prof.units
        }

    def value_range(self, pair: PairKey, key: str, address: int) -> tuple[float, float] | None:
        """The range a written value may take (learned span widened by the margin), if learned."""
        profile = self.pairs.get(pair)
        learned = profile.written_values.get(f"{key}/{address}") if profile else None
        if learned is None:
            return None
        low, high = learned
        margin = max(1.0, (high - low) * self.value_margin)
        return low - margin, high + margin

    def summary(self) -> dict[str, Any]:
        return {
            "hosts": len(self.hosts),
            "flows": len(self.flows),
            "ics_pairs": len(self.pairs),
            "training_s": round(self.training_s, 3),
            "packets": self.packets,
            "messages": self.messages,
        }

    # -- JSON --------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "rate_window_s": self.rate_window_s,
            "value_margin": self.value_margin,
            "trained_from": _time_text(self.trained_from),
            "trained_until": _time_text(self.trained_until),
            "training_s": self.training_s,
            "packets": self.packets,
            "messages": self.messages,
            "hosts": sorted(self.hosts),
            "flows": [_flow_json(key, profile) for key, profile in sorted(self.flows.items())],
            "pairs": [_pair_json(key, profile) for key, profile in sorted(self.pairs.items())],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Baseline:
        if data.get("format") != FORMAT:
            raise ValueError(f"baseline format {data.get('format')!r} is not {FORMAT}")
        return cls(
            rate_window_s=float(data["rate_window_s"]),
            value_margin=float(data["value_margin"]),
            trained_from=_parse_time(data.get("trained_from")),
            trained_until=_parse_time(data.get("trained_until")),
            training_s=float(data["training_s"]),
            packets=int(data["packets"]),
            messages=int(data["messages"]),
            hosts=set(data["hosts"]),
            flows=dict(_flow_from_json(item) for item in data["flows"]),
            pairs=dict(_pair_from_json(item) for item in data["pairs"]),
        )


def _time_text(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def _parse_time(value: Any) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else None


def _flow_json(key: FlowKey, p: FlowProfile) -> dict[str, Any]:
    return {
        "client": key.client,
        "server": key.server,
        "transport": key.transport,
        "port": key.port,
        "protocol": p.protocol,
        "packets": p.packets,
        "bytes": p.bytes,
        "peak_packets": p.peak_packets,
        "first_seen": _time_text(p.first_seen),
        "last_seen": _time_text(p.last_seen),
    }


def _flow_from_json(item: dict[str, Any]) -> tuple[FlowKey, FlowProfile]:
    key = FlowKey(item["client"], item["server"], item["transport"], int(item["port"]))
    profile = FlowProfile(
        protocol=item["protocol"],
        packets=int(item["packets"]),
        bytes=int(item["bytes"]),
        peak_packets=int(item["peak_packets"]),
        first_seen=_parse_time(item["first_seen"]),
        last_seen=_parse_time(item["last_seen"]),
    )
    return key, profile


def _pair_json(key: PairKey, p: PairProfile) -> dict[str, Any]:
    return {
        "client": key.client,
        "server": key.server,
        "protocol": key.protocol,
        "port": key.port,
        "requests": p.requests,
        "functions": {str(code): count for code, count in sorted(p.functions.items())},
        "units": sorted(p.units),
        "reads": {k: v.to_json() for k, v in sorted(p.reads.items())},
        "writes": {k: v.to_json() for k, v in sorted(p.writes.items())},
        "written_values": {k: list(v) for k, v in sorted(p.written_values.items())},
        "exceptions": p.exceptions,
        "peak_requests": p.peak_requests,
        "peak_exceptions": p.peak_exceptions,
        "interarrival_count": p.interarrival_count,
        "interarrival_sum_s": p.interarrival_sum_s,
        "interarrival_min_s": p.interarrival_min_s,
        "interarrival_max_s": p.interarrival_max_s,
        "active_s": p.active_s,
        "rate_per_s": p.rate_per_s,
    }


def _pair_from_json(item: dict[str, Any]) -> tuple[PairKey, PairProfile]:
    key = PairKey(item["client"], item["server"], item["protocol"], int(item["port"]))
    profile = PairProfile(
        requests=int(item["requests"]),
        functions=Counter({int(code): int(count) for code, count in item["functions"].items()}),
        units={int(u) for u in item["units"]},
        reads={k: IntervalSet.from_json(v) for k, v in item["reads"].items()},
        writes={k: IntervalSet.from_json(v) for k, v in item["writes"].items()},
        written_values={k: (float(v[0]), float(v[1])) for k, v in item["written_values"].items()},
        exceptions=int(item["exceptions"]),
        peak_requests=int(item["peak_requests"]),
        peak_exceptions=int(item["peak_exceptions"]),
        interarrival_count=int(item["interarrival_count"]),
        interarrival_sum_s=float(item["interarrival_sum_s"]),
        interarrival_min_s=item["interarrival_min_s"],
        interarrival_max_s=item["interarrival_max_s"],
        active_s=float(item["active_s"]),
    )
    return key, profile


# -- learning ---------------------------------------------------------------------------------


def pair_of(message: IcsMessage) -> PairKey | None:
    """The ICS relation a message belongs to, or None when its direction is unknown."""
    peers = client_and_server(message)
    if peers is None:
        return None
    port = message.destination.port if message.direction is Direction.REQUEST else message.source.port
    return PairKey(peers[0], peers[1], message.protocol.value, port)


def written_values(message: IcsMessage) -> list[tuple[int, float]]:
    """(address, value) of every point a write request sets (Modbus; others by address and values)."""
    if message.direction is not Direction.REQUEST or message.address is None or message.is_malformed:
        return []
    if message.protocol is IcsProtocol.MODBUS and message.function not in MODBUS_WRITES:
        return []
    start = message.address
    if message.function == 23 and "write_start_address" in message.fields:
        start = int(message.fields["write_start_address"])
    out: list[tuple[int, float]] = []
    for offset, value in enumerate(message.values):
        if isinstance(value, bool | int | float):
            out.append((start + offset, float(value)))
    return out


def is_write(message: IcsMessage) -> bool:
    if message.protocol is IcsProtocol.MODBUS:
        return message.function in MODBUS_WRITES
    return (
        bool(message.fields.get("is_write")) or "WRITE" in message.function_name or "OPERATE" in message.function_name
    )


def write_range(message: IcsMessage) -> tuple[int, int] | None:
    if message.function == 23 and "write_start_address" in message.fields:
        start, quantity = int(message.fields["write_start_address"]), int(message.fields.get("write_quantity") or 1)
        return start, start + max(quantity, 1) - 1
    return requested_range(message)


class BaselineLearner:
    """Learns a `Baseline` from `(PacketInfo, [IcsMessage])` items, segment by segment."""

    def __init__(self, *, rate_window_s: float = 10.0, value_margin: float = 0.1) -> None:
        self._baseline = Baseline(rate_window_s=rate_window_s, value_margin=value_margin)
        self._window = dt.timedelta(seconds=rate_window_s)
        self._tracker = FlowTracker()
        self._segment_start: dt.datetime | None = None
        self._segment_end: dt.datetime | None = None
        self._flow_windows: dict[FlowKey, WindowCounter] = {}
        self._request_windows: dict[PairKey, WindowCounter] = {}
        self._exception_windows: dict[PairKey, WindowCounter] = {}
        self._last_request: dict[PairKey, dt.datetime] = {}
        self._pairs_seen: set[PairKey] = set()
        self._unanswered: list[tuple[Connection, PacketInfo]] = []

    def observe(self, packet: PacketInfo, messages: Iterable[IcsMessage] = ()) -> None:
        b = self._baseline
        b.packets += 1
        self._segment_start = self._segment_start or packet.time
        self._segment_end = packet.time
        connection, _ = self._tracker.track(packet)
        if not is_group_address(packet.source.host):
            b.hosts.add(packet.source.host)
        if connection.transport is Transport.TCP and not connection.answered:
            self._unanswered.append((connection, packet))
        else:
            self._flush_unanswered(connection)
            self._learn_flow(connection.key, packet)
        for message in messages:
            b.messages += 1
            self._learn_message(message, packet.time)

    def new_segment(self) -> None:
        """Closes the current segment (a capture, a day); the next observations start a new one."""
        b = self._baseline
        if self._segment_start is not None and self._segment_end is not None:
            span = (self._segment_end - self._segment_start).total_seconds()
            b.training_s += span
            b.trained_from = min(filter(None, (b.trained_from, self._segment_start)))
            b.trained_until = max(filter(None, (b.trained_until, self._segment_end)))
            for key in self._pairs_seen:
                b.pairs[key].active_s += span
        for flow, counter in self._flow_windows.items():
            b.flows[flow].peak_packets = max(b.flows[flow].peak_packets, counter.close())
        for key, counter in self._request_windows.items():
            b.pairs[key].peak_requests = max(b.pairs[key].peak_requests, counter.close())
        for key, counter in self._exception_windows.items():
            b.pairs[key].peak_exceptions = max(b.pairs[key].peak_exceptions, counter.close())
        self._start_segment()

    def baseline(self) -> Baseline:
        self.new_segment()
        return self._baseline

    def _start_segment(self) -> None:
        self._tracker = FlowTracker()
        self._segment_start = self._segment_end = None
        self._flow_windows, self._request_windows, self._exception_windows = {}, {}, {}
        self._last_request, self._pairs_seen, self._unanswered = {}, set(), []

    def _flush_unanswered(self, connection: Connection) -> None:
        """Packets of a TCP flow sent before its server answered count once it has."""
        if not self._unanswered:
            return
        waiting = [(c, p) for c, p in self._unanswered if c is connection]
        self._unanswered = [(c, p) for c, p in self._unanswered if c is not connection][-1024:]
        for _, packet in waiting:
            self._learn_flow(connection.key, packet)

    def _learn_flow(self, key: FlowKey, packet: PacketInfo) -> None:
        profile = self._baseline.flows.get(key)
        if profile is None:
            profile = self._baseline.flows[key] = FlowProfile(first_seen=packet.time)
            known = ICS_PORTS.get(key.port) if key.transport == Transport.TCP.value else None
            ics = packet.protocol or known
            profile.protocol = ics.value if ics else ""
        profile.packets += 1
        profile.bytes += packet.length
        profile.last_seen = packet.time
        self._flow_windows.setdefault(key, WindowCounter(self._window)).add(packet.time)

    def _learn_message(self, message: IcsMessage, time: dt.datetime) -> None:
        key = pair_of(message)
        if key is None or message.is_malformed:
            return
        profile = self._baseline.pairs.setdefault(key, PairProfile())
        self._pairs_seen.add(key)
        when = message.time or time
        if message.exception is not None:
            profile.exceptions += 1
            self._exception_windows.setdefault(key, WindowCounter(self._window)).add(when)
        if message.direction is not Direction.REQUEST:
            return
        self._learn_request(key, profile, message, when)

    def _learn_request(self, key: PairKey, profile: PairProfile, message: IcsMessage, when: dt.datetime) -> None:
        profile.requests += 1
        if message.function is not None:
            profile.functions[message.function] += 1
        if message.unit is not None:
            profile.units.add(message.unit)
        self._request_windows.setdefault(key, WindowCounter(self._window)).add(when)
        previous = self._last_request.get(key)
        if previous is not None:
            gap = (when - previous).total_seconds()
            profile.interarrival_count += 1
            profile.interarrival_sum_s += gap
            profile.interarrival_min_s = (
                gap if profile.interarrival_min_s is None else min(profile.interarrival_min_s, gap)
            )
            profile.interarrival_max_s = (
                gap if profile.interarrival_max_s is None else max(profile.interarrival_max_s, gap)
            )
        self._last_request[key] = when
        skey = space_key(message.unit, address_space(message))
        if is_write(message):
            span = write_range(message)
            if span is not None:
                profile.writes.setdefault(skey, IntervalSet()).add(*span)
            for address, value in written_values(message):
                low, high = profile.written_values.get(f"{skey}/{address}", (value, value))
                profile.written_values[f"{skey}/{address}"] = (min(low, value), max(high, value))
        if not is_write(message) or message.function == 23:
            span = requested_range(message)
            if span is not None:
                profile.reads.setdefault(skey, IntervalSet()).add(*span)


def learn_baseline(
    *segments: Iterable[tuple[PacketInfo, list[IcsMessage]]], rate_window_s: float = 10.0, value_margin: float = 0.1
) -> Baseline:
    """A baseline learned from one or more training segments (each an `iter_capture`-like stream)."""
    learner = BaselineLearner(rate_window_s=rate_window_s, value_margin=value_margin)
    for segment in segments:
        for packet, messages in segment:
            learner.observe(packet, messages)
        learner.new_segment()
    return learner.baseline()
