"""Learned-allowlist detection: traffic checked against a `Baseline`, findings as aggregated alerts.

What raises an alert (kinds in `AlertKind`, ATT&CK for ICS techniques in `TECHNIQUES`):

- a flow the baseline never saw: to a service (server, transport, port) nobody used (`new_service`),
  or a known service used by a new client (`new_talker`); broadcasts and multicasts are judged by
  sender and group only (`announcements_any_port`);
- on ICS pairs: a function code the pair never used (`new_function`), a write from a pair that never
  wrote (`unauthorized_write`), a write to an address the pair never wrote (`new_write_target`; by
  default the ranges the pair reads in the same address space count as written: an HMI operates the
  points it monitors, and a short training window rarely shows every point operated), a written
  value outside the learned range widened by the baseline's margin (`write_out_of_range`);
- functions that matter whatever the baseline: diagnostics and identification (Modbus 7, 8, 11, 12,
  17, 43; S7 SZL reads) unless the pair used them in training, restarts, stops, program download and
  upload, file operations (Modbus 20/21, DNP3 25-30, IEC 104 F_*);
- scans within `scan_window_s`: one source reaching many hosts or ports it never used, many unit ids
  or addresses a server was never asked for, TCP SYNs whose handshake never completed;
- malformed frames; floods (a window's packets far above the flow's learned peak); bursts of
  exception responses.

Alerts are aggregated: one per kind and (source, destination) per `alert_window_s`, with the count,
first and last time, the frame numbers (up to `evidence_frames`) and a few raw frames as evidence.
A flood from spoofed sources would still open one alert per source, so at most `max_sources` alerts
of one kind are opened for one destination within the window: the sources beyond are folded into one
aggregate alert of that kind for the destination (source `*`, "N more sources", the count of
sources and a sample of their addresses as evidence; severity and techniques as any alert of the kind).

State kept per flow (conversations, packet and exception rates, scan windows) is bounded so a
detector can watch live traffic for months: conversations idle for `flow_idle_s` are forgotten,
counters and scan windows once their window has passed (forgetting them then loses nothing), and
none of these tables (nor the targets and folded sources of aggregate alerts) holds more than
`max_flows` entries (the longest idle makes room). What is forgotten is counted in
`Detector.evictions`.
`to_alarm_event` makes the alarms context's `AlarmEvent` of an alert (the caller publishes it).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from iip.alarms.public import AlarmEvent
from iip.security.baseline import (
    TCP_ACK,
    TCP_SYN,
    Baseline,
    Connection,
    FlowKey,
    FlowTracker,
    PairKey,
    WindowCounter,
    is_group_address,
    is_write,
    pair_of,
    space_key,
    write_range,
    written_values,
)
from iip.security.inventory import IntervalSet, address_space, requested_range
from iip.security.protocols.base import Direction, IcsMessage, IcsProtocol, PacketInfo, Transport
from iip.security.recent import RecentTable
from iip.security.records import NewAlert, Severity

ALARM_SOURCE = "security"
MANY_SOURCES = "*"  # the source of an aggregate alert: the sources beyond `max_sources` for one target
SOURCE_SAMPLE = 20  # addresses an aggregate alert names

# -- ATT&CK for ICS: every technique an alert may name, in one table --------------------------

TECHNIQUES: dict[str, str] = {
    "T0814": "Denial of Service",
    "T0816": "Device Restart/Shutdown",
    "T0836": "Modify Parameter",
    "T0843": "Program Download",
    "T0845": "Program Upload",
    "T0846": "Remote System Discovery",
    "T0855": "Unauthorized Command Message",
    "T0858": "Change Operating Mode",
    "T0861": "Point & Tag Identification",
    "T0867": "Lateral Tool Transfer",
    "T0869": "Standard Application Layer Protocol",
    "T0886": "Remote Services",
    "T0888": "Remote System Information Discovery",
}


class AlertKind(StrEnum):
    NEW_SERVICE = "new_service"
    NEW_TALKER = "new_talker"
    NEW_FUNCTION = "new_function"
    UNAUTHORIZED_WRITE = "unauthorized_write"
    NEW_WRITE_TARGET = "new_write_target"
    WRITE_OUT_OF_RANGE = "write_out_of_range"
    DIAGNOSTIC = "diagnostic"
    DEVICE_RESTART = "device_restart"
    OPERATING_MODE = "operating_mode"
    PROGRAM_DOWNLOAD = "program_download"
    PROGRAM_UPLOAD = "program_upload"
    FILE_TRANSFER = "file_transfer"
    HOST_SCAN = "host_scan"
    PORT_SCAN = "port_scan"
    UNIT_SCAN = "unit_scan"
    REGISTER_SCAN = "register_scan"
    HALF_OPEN = "half_open"
    MALFORMED = "malformed"
    FLOOD = "flood"
    EXCEPTION_BURST = "exception_burst"
    KNOWN_ATTACKER = "known_attacker"


@dataclass(frozen=True, slots=True)
class KindSpec:
    severity: Severity
    techniques: tuple[str, ...]
    summary: str


KINDS: dict[AlertKind, KindSpec] = {
    AlertKind.NEW_SERVICE: KindSpec(Severity.HIGH, ("T0869",), "service never used in training"),
    AlertKind.NEW_TALKER: KindSpec(Severity.HIGH, ("T0869",), "client never seen using this service"),
    AlertKind.NEW_FUNCTION: KindSpec(Severity.MEDIUM, ("T0855",), "function code never used by this pair"),
    AlertKind.UNAUTHORIZED_WRITE: KindSpec(
        Severity.CRITICAL, ("T0855", "T0836"), "write from a client that never wrote"
    ),
    AlertKind.NEW_WRITE_TARGET: KindSpec(Severity.HIGH, ("T0836",), "write to an address never written"),
    AlertKind.WRITE_OUT_OF_RANGE: KindSpec(Severity.HIGH, ("T0836",), "written value outside the learned range"),
    AlertKind.DIAGNOSTIC: KindSpec(Severity.MEDIUM, ("T0888",), "diagnostic or identification request"),
    AlertKind.DEVICE_RESTART: KindSpec(Severity.CRITICAL, ("T0816",), "device restart"),
    AlertKind.OPERATING_MODE: KindSpec(Severity.CRITICAL, ("T0858", "T0816"), "controller stop or mode change"),
    AlertKind.PROGRAM_DOWNLOAD: KindSpec(Severity.CRITICAL, ("T0843",), "program download"),
    AlertKind.PROGRAM_UPLOAD: KindSpec(Severity.HIGH, ("T0845",), "program upload"),
    AlertKind.FILE_TRANSFER: KindSpec(Severity.HIGH, ("T0867",), "file operation on a field device"),
    AlertKind.HOST_SCAN: KindSpec(Severity.HIGH, ("T0846",), "one source reaching many new hosts"),
    AlertKind.PORT_SCAN: KindSpec(Severity.HIGH, ("T0846",), "one source reaching many new ports"),
    AlertKind.UNIT_SCAN: KindSpec(Severity.MEDIUM, ("T0846",), "requests to many unit ids never used"),
    AlertKind.REGISTER_SCAN: KindSpec(Severity.MEDIUM, ("T0861",), "requests to many addresses never read"),
    AlertKind.HALF_OPEN: KindSpec(Severity.MEDIUM, ("T0846",), "TCP handshakes never completed"),
    AlertKind.MALFORMED: KindSpec(Severity.MEDIUM, ("T0814",), "malformed ICS frames"),
    AlertKind.FLOOD: KindSpec(Severity.HIGH, ("T0814",), "traffic far above the learned rate"),
    AlertKind.EXCEPTION_BURST: KindSpec(Severity.MEDIUM, ("T0888",), "burst of exception responses"),
    # Whoever probed a decoy was discovering and querying control systems: the plant is next.
    AlertKind.KNOWN_ATTACKER: KindSpec(
        Severity.CRITICAL, ("T0846", "T0888"), "traffic from an address seen attacking a decoy"
    ),
}

# A new flow to these ports is also a remote service or a way to move tools.
REMOTE_SERVICE_PORTS = frozenset({22, 23, 135, 139, 445, 3389, 5900, 5985, 5986})
FILE_TRANSFER_PORTS = frozenset({20, 21, 69, 139, 445})

# (protocol, function name) -> the kind of alert it always raises.
FUNCTION_KINDS: dict[tuple[IcsProtocol, str], AlertKind] = {
    (IcsProtocol.MODBUS, "READ_EXCEPTION_STATUS"): AlertKind.DIAGNOSTIC,
    (IcsProtocol.MODBUS, "DIAGNOSTICS"): AlertKind.DIAGNOSTIC,
    (IcsProtocol.MODBUS, "GET_COMM_EVENT_COUNTER"): AlertKind.DIAGNOSTIC,
    (IcsProtocol.MODBUS, "GET_COMM_EVENT_LOG"): AlertKind.DIAGNOSTIC,
    (IcsProtocol.MODBUS, "REPORT_SERVER_ID"): AlertKind.DIAGNOSTIC,
    (IcsProtocol.MODBUS, "ENCAP_INTERFACE_TRANSPORT"): AlertKind.DIAGNOSTIC,
    (IcsProtocol.MODBUS, "READ_FILE_RECORD"): AlertKind.FILE_TRANSFER,
    (IcsProtocol.MODBUS, "WRITE_FILE_RECORD"): AlertKind.FILE_TRANSFER,
    (IcsProtocol.DNP3, "COLD_RESTART"): AlertKind.DEVICE_RESTART,
    (IcsProtocol.DNP3, "WARM_RESTART"): AlertKind.DEVICE_RESTART,
    (IcsProtocol.DNP3, "INITIALIZE_APPL"): AlertKind.OPERATING_MODE,
    (IcsProtocol.DNP3, "START_APPL"): AlertKind.OPERATING_MODE,
    (IcsProtocol.DNP3, "STOP_APPL"): AlertKind.OPERATING_MODE,
    (IcsProtocol.DNP3, "OPEN_FILE"): AlertKind.FILE_TRANSFER,
    (IcsProtocol.DNP3, "CLOSE_FILE"): AlertKind.FILE_TRANSFER,
    (IcsProtocol.DNP3, "DELETE_FILE"): AlertKind.FILE_TRANSFER,
    (IcsProtocol.DNP3, "GET_FILE_INFO"): AlertKind.FILE_TRANSFER,
    (IcsProtocol.DNP3, "AUTHENTICATE_FILE"): AlertKind.FILE_TRANSFER,
    (IcsProtocol.DNP3, "ABORT_FILE"): AlertKind.FILE_TRANSFER,
    (IcsProtocol.S7COMM, "PLC_STOP"): AlertKind.OPERATING_MODE,
    (IcsProtocol.S7COMM, "PI_SERVICE"): AlertKind.OPERATING_MODE,
    (IcsProtocol.S7COMM, "REQUEST_DOWNLOAD"): AlertKind.PROGRAM_DOWNLOAD,
    (IcsProtocol.S7COMM, "DOWNLOAD_BLOCK"): AlertKind.PROGRAM_DOWNLOAD,
    (IcsProtocol.S7COMM, "DOWNLOAD_ENDED"): AlertKind.PROGRAM_DOWNLOAD,
    (IcsProtocol.S7COMM, "START_UPLOAD"): AlertKind.PROGRAM_UPLOAD,
    (IcsProtocol.S7COMM, "UPLOAD"): AlertKind.PROGRAM_UPLOAD,
    (IcsProtocol.S7COMM, "END_UPLOAD"): AlertKind.PROGRAM_UPLOAD,
    (IcsProtocol.IEC104, "C_RP_NA_1"): AlertKind.DEVICE_RESTART,
    **{(IcsProtocol.IEC104, name): AlertKind.FILE_TRANSFER for name in ("F_FR_NA_1", "F_SR_NA_1", "F_SC_NA_1")},
    **{(IcsProtocol.IEC104, name): AlertKind.FILE_TRANSFER for name in ("F_LS_NA_1", "F_AF_NA_1", "F_SG_NA_1")},
}
MODBUS_RESTART_SUBFUNCTIONS = frozenset({1, 4})  # restart communications, force listen-only mode
ALWAYS_ALERT = frozenset(set(FUNCTION_KINDS.values()) - {AlertKind.DIAGNOSTIC})


def function_kind(message: IcsMessage) -> AlertKind | None:
    """The alert a request's function raises whatever the baseline says (diagnostics: unless learned)."""
    restart = message.fields.get("sub_function") in MODBUS_RESTART_SUBFUNCTIONS
    if message.protocol is IcsProtocol.MODBUS and message.function == 8 and restart:
        return AlertKind.DEVICE_RESTART
    if message.protocol is IcsProtocol.S7COMM and message.fields.get("subfunction_name") == "READ_SZL":
        return AlertKind.DIAGNOSTIC
    return FUNCTION_KINDS.get((message.protocol, message.function_name))


# -- alerts -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Alert:
    """One finding, aggregated over a window: what, who, when, how often, and the evidence."""

    kind: AlertKind
    severity: Severity
    source: str
    destination: str
    first_time: dt.datetime
    last_time: dt.datetime
    techniques: tuple[str, ...]
    protocol: str = ""
    count: int = 0
    frames: list[int] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    details: dict[str, set[Any]] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)  # an aggregate's sample of the sources it folds
    source_count: int = 0  # an aggregate's distinct sources

    @property
    def message(self) -> str:
        items = "; ".join(f"{name} {', '.join(sorted(map(str, values))[:8])}" for name, values in self.details.items())
        source = self.source
        if self.source_count:
            more = " ..." if self.source_count > 3 else ""
            source = f"{self.source_count} more sources ({', '.join(self.sources[:3])}{more})"
        text = f"{KINDS[self.kind].summary}: {source} -> {self.destination} ({self.count}x)"
        return f"{text}: {items}" if items else text

    def detail_lists(self) -> dict[str, list[Any]]:
        lists: dict[str, list[Any]] = {name: sorted(values, key=str) for name, values in self.details.items()}
        if self.source_count:
            lists["source_count"] = [self.source_count]
            lists["sources"] = list(self.sources)
        return lists

    def to_record(self) -> NewAlert:
        """The storage shape (`iip.security.records.NewAlert`)."""
        return NewAlert(
            kind=self.kind.value,
            severity=self.severity,
            first_time=self.first_time,
            last_time=self.last_time,
            techniques=list(self.techniques),
            protocol=self.protocol,
            source=self.source,
            destination=self.destination,
            message=self.message,
            count=self.count,
            frames=list(self.frames),
            raw=[chunk.hex() for chunk in self.raw],
            details=self.detail_lists(),
        )


SEVERITY_SCORES: dict[Severity, float] = {
    Severity.LOW: 2.5,
    Severity.MEDIUM: 5.0,
    Severity.HIGH: 7.5,
    Severity.CRITICAL: 9.5,
}


def to_alarm_event(alert: Alert, *, tenant_id: str) -> AlarmEvent:
    """The alarms context's event for an alert (kind `ics.<kind>`, subject the destination)."""
    return AlarmEvent(
        tenant_id=tenant_id,
        source=ALARM_SOURCE,
        kind=f"ics.{alert.kind.value}",
        subject=alert.destination,
        severity=SEVERITY_SCORES[alert.severity],
        message=alert.message,
        at=alert.last_time,
        details={
            "source": alert.source,
            "destination": alert.destination,
            "protocol": alert.protocol,
            "techniques": list(alert.techniques),
            "technique_names": [TECHNIQUES[t] for t in alert.techniques],
            "count": alert.count,
            "first_time": alert.first_time.isoformat(),
            "frames": alert.frames[:20],
            **{name: [str(v) for v in values][:20] for name, values in alert.detail_lists().items()},
        },
    )


# -- detector ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DetectionSettings:
    alert_window_s: float = 600.0  # one alert per kind and (source, destination) per window
    evidence_frames: int = 100
    evidence_raw: int = 3
    scan_window_s: float = 60.0
    scan_hosts: int = 5  # new hosts one source reaches within the scan window
    scan_ports: int = 10  # new ports one source reaches on one host
    scan_units: int = 5  # unit ids a server was never asked for
    scan_addresses: int = 10  # distinct addresses a server was never asked for
    half_open: int = 5  # TCP handshakes one source left incomplete
    handshake_timeout_s: float = 5.0
    flood_factor: float = 5.0  # packets per rate window above this times the learned peak ...
    flood_excess: int = 100  # ... and above the peak by at least this many
    exception_burst: int = 5  # exceptions per rate window, at least, and above ...
    exception_factor: float = 3.0  # ... this times the learned peak
    writes_within_read_ranges: bool = True
    # A broadcast or multicast is an announcement, not a service: a host that announced itself to a
    # group in training may do so on another port (NetBIOS name and datagram services, SSDP, mDNS).
    announcements_any_port: bool = True
    flow_idle_s: float = 300.0  # a conversation without packets for this long is forgotten
    max_flows: int = 20_000  # conversations (and rate counters, scan windows) tracked at once
    # Alerts of one kind opened for one destination per alert window; further sources are folded
    # into one aggregate alert (a flood from spoofed addresses stays a handful of alerts).
    max_sources: int = 100


class _RecentFlows(FlowTracker):
    """A `FlowTracker` whose conversations live in a `RecentTable`: idle ones and, beyond the
    limit, the longest idle are forgotten."""

    def __init__(self, table: RecentTable[tuple[Any, ...], Connection]) -> None:
        super().__init__()
        self.table = table

    def track(self, packet: PacketInfo) -> tuple[Connection, bool]:
        key = self._key(packet)
        connection = self.table.get(key, packet.time)
        syn_only = packet.transport is Transport.TCP and packet.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
        if connection is None or (syn_only and (connection.closed or connection.completed)):
            connection = self.table.put(key, self._open(packet, syn_only=syn_only), packet.time)
        from_client = packet.source == connection.client
        self._advance(connection, packet, from_client=from_client)
        return connection, from_client

    def prune(self, now: dt.datetime) -> list[Connection]:
        self.table.expire(now)
        return []

    def connections(self) -> list[Connection]:
        return self.table.values()


@dataclass(slots=True)
class _Distinct:
    """Distinct items seen in a tumbling window, with the frames that brought them."""

    window: dt.timedelta
    start: dt.datetime | None = None
    items: set[Any] = field(default_factory=set)
    frames: list[int] = field(default_factory=list)

    def add(self, when: dt.datetime, item: Any, frame: int | None) -> int:
        if self.start is None or when >= self.start + self.window or when < self.start:
            self.start, self.items, self.frames = when, set(), []
        if item not in self.items:
            self.items.add(item)
            if frame is not None and len(self.frames) < 1000:
                self.frames.append(frame)
        return len(self.items)


class Detector:
    """Checks `(PacketInfo, [IcsMessage])` items against a baseline; `finish()` returns the alerts.

    A detector that never finishes (live traffic) hands over what it found so far with `take()`.
    """

    def __init__(
        self,
        baseline: Baseline,
        settings: DetectionSettings | None = None,
        *,
        known_attackers: Mapping[str, str] | None = None,
    ) -> None:
        """`known_attackers`: threat intelligence, address -> what it was seen doing (honeypot sightings)."""
        self.baseline = baseline
        self.settings = settings or DetectionSettings()
        self.known_attackers = dict(known_attackers or {})
        self.evictions: Counter[str] = Counter()  # per-flow state forgotten, per table and reason
        self._alert_window = dt.timedelta(seconds=self.settings.alert_window_s)
        self._scan_window = dt.timedelta(seconds=self.settings.scan_window_s)
        self._rate_window = dt.timedelta(seconds=baseline.rate_window_s)
        self._handshake_timeout = dt.timedelta(seconds=self.settings.handshake_timeout_s)
        most = self.settings.max_flows
        conversations: RecentTable[tuple[Any, ...], Connection] = RecentTable(
            "conversations", idle=dt.timedelta(seconds=self.settings.flow_idle_s), max_entries=most,
            evictions=self.evictions, on_evict=self._forget_connection,
        )  # fmt: skip
        self._tracker = _RecentFlows(conversations)
        self._open: dict[tuple[AlertKind, str, str], Alert] = {}
        # (kind, destination) -> when each of its alerts still in the window opened (at most max_sources)
        self._opened: RecentTable[tuple[AlertKind, str], deque[dt.datetime]] = RecentTable(
            "alert targets", idle=self._alert_window, max_entries=most, evictions=self.evictions
        )
        # (kind, source, destination) -> the aggregate the source was folded into
        self._folded: RecentTable[tuple[AlertKind, str, str], Alert] = RecentTable(
            "folded sources", idle=self._alert_window, max_entries=most, evictions=self.evictions
        )
        self._alerts: list[Alert] = []
        # A window that has passed restarts on its next use, so forgetting it then loses nothing.
        self._distinct: RecentTable[tuple[Any, ...], _Distinct] = RecentTable(
            "scan windows", idle=self._scan_window, max_entries=most, evictions=self.evictions
        )
        self._rates: RecentTable[Any, WindowCounter] = RecentTable(
            "rate counters", idle=self._rate_window, max_entries=most, evictions=self.evictions
        )
        self._pending: dict[int, Connection] = {}
        self._last_sweep: dt.datetime | None = None
        self._last_expiry: dt.datetime | None = None
        self._latest: dt.datetime | None = None  # the newest packet time checked
        self._taken: dict[int, tuple[int, int, int]] = {}  # id(alert) -> count, frames, raw handed over
        self._index_baseline()

    def _index_baseline(self) -> None:
        b = self.baseline
        self._services = {(k.server, k.transport, k.port) for k in b.flows}
        self._announcements = {(k.client, k.server, k.transport) for k in b.flows if is_group_address(k.server)}
        self._server_ranges: dict[tuple[str, str, str], IntervalSet] = {}
        self._server_units: dict[tuple[str, str], set[int]] = {}
        for pair, profile in b.pairs.items():
            self._server_units.setdefault((pair.server, pair.protocol), set()).update(profile.units)
            for key, ranges in (*profile.reads.items(), *profile.writes.items()):
                known = self._server_ranges.setdefault((pair.server, pair.protocol, key), IntervalSet())
                for lo, hi in ranges.intervals:
                    known.add(lo, hi)

    # -- public ------------------------------------------------------------------------------

    @property
    def tracked(self) -> dict[str, int]:
        """Entries held now per table of per-flow state."""
        return {"conversations": len(self._tracker.table), "rate counters": len(self._rates),
                "scan windows": len(self._distinct), "pending handshakes": len(self._pending),
                "alert targets": len(self._opened), "folded sources": len(self._folded)}  # fmt: skip

    def check(self, packet: PacketInfo, messages: Iterable[IcsMessage] = ()) -> None:
        if self._latest is None or packet.time > self._latest:
            self._latest = packet.time
        if self._last_expiry is None or abs(packet.time - self._last_expiry) >= dt.timedelta(seconds=1):
            self._expire(packet.time)
        connection, _ = self._tracker.track(packet)
        for end in (packet.source, packet.destination):
            seen_doing = self.known_attackers.get(end.host)
            if seen_doing is not None:
                other = packet.destination if end is packet.source else packet.source
                self._raise(
                    AlertKind.KNOWN_ATTACKER, end.host, other.host, packet.time, packet.frame, indicator=seen_doing
                )
        self._check_flow(connection, packet)
        self._check_handshakes(connection, packet.time)
        for message in messages:
            self._check_message(message, packet)

    def finish(self) -> list[Alert]:
        """Closes what is pending (handshakes never completed) and returns every alert, oldest first."""
        for connection in list(self._pending.values()):
            if not connection.completed:
                self._half_open(connection, connection.last)
        self._pending.clear()
        return self.alerts()

    def alerts(self) -> list[Alert]:
        return sorted(self._alerts, key=lambda a: (a.first_time, a.kind.value))

    def take(self) -> list[Alert]:
        """What was found since the last `take`: each alert with only its new findings (their count,
        frames and raw evidence), oldest first. Alerts whose window has closed are forgotten once
        handed over, so a detector checking live traffic keeps only the open ones."""
        found: list[Alert] = []
        for alert in self.alerts():
            count, frames, raw = self._taken.get(id(alert), (0, 0, 0))
            if alert.count > count:
                details = {name: set(values) for name, values in alert.details.items()}
                found.append(
                    replace(
                        alert, count=alert.count - count, frames=alert.frames[frames:], raw=alert.raw[raw:],
                        details=details,
                    )
                )  # fmt: skip
            self._taken[id(alert)] = (alert.count, len(alert.frames), len(alert.raw))
        self._forget_closed()
        return found

    def _expire(self, now: dt.datetime) -> None:
        self._last_expiry = now
        self._tracker.prune(now)
        self._distinct.expire(now)
        self._rates.expire(now)
        self._opened.expire(now)
        self._folded.expire(now)

    def _forget_connection(self, connection: Connection) -> None:
        self._pending.pop(id(connection), None)

    def _forget_closed(self) -> None:
        if self._latest is not None:
            horizon = self._latest - self._alert_window
            self._open = {key: alert for key, alert in self._open.items() if alert.first_time > horizon}
        still_open = {id(alert) for alert in self._open.values()}
        self._alerts = [alert for alert in self._alerts if id(alert) in still_open]
        self._taken = {key: taken for key, taken in self._taken.items() if key in still_open}

    # -- flows -------------------------------------------------------------------------------

    def _check_flow(self, connection: Connection, packet: PacketInfo) -> None:
        key = connection.key
        if self.baseline.knows_flow(key):
            self._check_rate(key, packet)
            return
        if self.settings.announcements_any_port and (key.client, key.server, key.transport) in self._announcements:
            return
        service_known = (key.server, key.transport, key.port) in self._services
        kind = AlertKind.NEW_TALKER if service_known else AlertKind.NEW_SERVICE
        techniques = self._service_techniques(key)
        self._raise(kind, key.client, key.server, packet.time, packet.frame, techniques=techniques, port=key.label())
        if not is_group_address(key.server):  # a broadcast reaches everyone: no scan of its own
            self._count_scan(key, packet)

    @staticmethod
    def _service_techniques(key: FlowKey) -> tuple[str, ...]:
        techniques = ["T0869"]
        if key.port in REMOTE_SERVICE_PORTS:
            techniques.append("T0886")
        if key.port in FILE_TRANSFER_PORTS:
            techniques.append("T0867")
        return tuple(techniques)

    def _count_scan(self, key: FlowKey, packet: PacketInfo) -> None:
        hosts = self._distinct_in(("hosts", key.client), packet.time)
        if hosts.add(packet.time, key.server, packet.frame) >= self.settings.scan_hosts:
            self._raise_many(AlertKind.HOST_SCAN, key.client, "*", packet.time, hosts)
        ports = self._distinct_in(("ports", key.client, key.server), packet.time)
        if ports.add(packet.time, (key.transport, key.port), packet.frame) >= self.settings.scan_ports:
            self._raise_many(AlertKind.PORT_SCAN, key.client, key.server, packet.time, ports)

    def _check_rate(self, key: FlowKey, packet: PacketInfo) -> None:
        counter = self._rates.setdefault(key, lambda: WindowCounter(self._rate_window), packet.time)
        count = counter.add(packet.time)
        peak = self.baseline.flows[key].peak_packets
        if count > max(peak * self.settings.flood_factor, peak + self.settings.flood_excess):
            self._raise(AlertKind.FLOOD, key.client, key.server, packet.time, packet.frame, rate=f"{count}/window")

    def _check_handshakes(self, connection: Connection, now: dt.datetime) -> None:
        if connection.began_with_syn and not connection.completed and not connection.counted_incomplete:
            self._pending[id(connection)] = connection
            if connection.closed:
                self._half_open(connection, now)
        elif id(connection) in self._pending and connection.completed:
            del self._pending[id(connection)]
        if self._last_sweep is None or now - self._last_sweep >= dt.timedelta(seconds=1):
            self._last_sweep = now
            for pending in list(self._pending.values()):
                if pending.completed:
                    del self._pending[id(pending)]
                elif now - pending.opened > self._handshake_timeout:
                    self._half_open(pending, now)

    def _half_open(self, connection: Connection, now: dt.datetime) -> None:
        self._pending.pop(id(connection), None)
        if connection.counted_incomplete:
            return
        connection.counted_incomplete = True
        client = connection.client.host
        tries = self._distinct_in(("half_open", client), now)
        target = (connection.server.host, connection.server.port, connection.client.port)
        if tries.add(now, target, connection.first_frame) >= self.settings.half_open:
            self._raise_many(AlertKind.HALF_OPEN, client, "*", now, tries)

    # -- ICS messages ------------------------------------------------------------------------

    def _check_message(self, message: IcsMessage, packet: PacketInfo) -> None:
        when = message.time or packet.time
        frame = message.frame or packet.frame
        if message.is_malformed:
            self._raise(
                AlertKind.MALFORMED,
                message.source.host,
                message.destination.host,
                when,
                frame,
                raw=message.raw,
                protocol=message.protocol.value,
                reason=message.malformed,
            )
            return
        pair = pair_of(message)
        if pair is None:
            return
        if message.exception is not None:
            self._check_exceptions(pair, message, when, frame)
        if message.direction is Direction.REQUEST:
            self._check_request(pair, message, when, frame)

    def _check_request(self, pair: PairKey, message: IcsMessage, when: dt.datetime, frame: int) -> None:
        profile = self.baseline.pairs.get(pair)
        learned = profile is not None and message.function in profile.functions
        special = function_kind(message)
        function = f"{message.function} {message.function_name}".strip()
        if special in ALWAYS_ALERT or (special is AlertKind.DIAGNOSTIC and not learned):
            assert special is not None  # noqa: S101 (narrowing for the type checker)
            self._raise(
                special,
                pair.client,
                pair.server,
                when,
                frame,
                function=function,
                raw=message.raw,
                protocol=pair.protocol,
            )
        elif profile is not None and not learned:
            self._raise(
                AlertKind.NEW_FUNCTION,
                pair.client,
                pair.server,
                when,
                frame,
                function=function,
                raw=message.raw,
                protocol=pair.protocol,
            )
        if is_write(message):
            self._check_write(pair, message, when, frame)
        else:
            self._check_read_scan(pair, message, when, frame)
        self._check_unit(pair, message, when, frame)

    def _check_write(self, pair: PairKey, message: IcsMessage, when: dt.datetime, frame: int) -> None:
        profile = self.baseline.pairs.get(pair)
        skey = space_key(message.unit, address_space(message))
        target = write_range(message)
        where = f"{skey}/{target[0]}-{target[1]}" if target else skey
        if profile is None or not profile.writes:
            self._raise(
                AlertKind.UNAUTHORIZED_WRITE,
                pair.client,
                pair.server,
                when,
                frame,
                target=where,
                raw=message.raw,
                protocol=pair.protocol,
            )
            return
        allowed = IntervalSet(list(profile.writes.get(skey, IntervalSet()).intervals))
        if self.settings.writes_within_read_ranges:
            for lo, hi in profile.reads.get(skey, IntervalSet()).intervals:
                allowed.add(lo, hi)
        if target is not None and not allowed.covers(*target):
            self._raise(
                AlertKind.NEW_WRITE_TARGET,
                pair.client,
                pair.server,
                when,
                frame,
                target=where,
                raw=message.raw,
                protocol=pair.protocol,
            )
        for address, value in written_values(message):
            bounds = self.baseline.value_range(pair, skey, address)
            if bounds is not None and not bounds[0] <= value <= bounds[1]:
                shown = f"{skey}/{address}={value:g} (learned {bounds[0]:g}..{bounds[1]:g})"
                self._raise(
                    AlertKind.WRITE_OUT_OF_RANGE,
                    pair.client,
                    pair.server,
                    when,
                    frame,
                    value=shown,
                    raw=message.raw,
                    protocol=pair.protocol,
                )

    def _check_read_scan(self, pair: PairKey, message: IcsMessage, when: dt.datetime, frame: int) -> None:
        span = requested_range(message)
        if span is None:
            return
        skey = space_key(message.unit, address_space(message))
        known = self._server_ranges.get((pair.server, pair.protocol, skey))
        if known is not None and known.covers(*span):
            return
        seen = self._distinct_in(("addresses", pair.client, pair.server, pair.protocol), when)
        if seen.add(when, (skey, span), frame) >= self.settings.scan_addresses:
            self._raise_many(AlertKind.REGISTER_SCAN, pair.client, pair.server, when, seen, protocol=pair.protocol)

    def _check_unit(self, pair: PairKey, message: IcsMessage, when: dt.datetime, frame: int) -> None:
        if message.unit is None or message.unit in self._server_units.get((pair.server, pair.protocol), set()):
            return
        seen = self._distinct_in(("units", pair.client, pair.server, pair.protocol), when)
        if seen.add(when, message.unit, frame) >= self.settings.scan_units:
            self._raise_many(AlertKind.UNIT_SCAN, pair.client, pair.server, when, seen, protocol=pair.protocol)

    def _check_exceptions(self, pair: PairKey, message: IcsMessage, when: dt.datetime, frame: int) -> None:
        counter = self._rates.setdefault(("exceptions", pair), lambda: WindowCounter(self._rate_window), when)
        count = counter.add(when)
        profile = self.baseline.pairs.get(pair)
        peak = profile.peak_exceptions if profile else 0
        if count >= max(self.settings.exception_burst, peak * self.settings.exception_factor + 1):
            self._raise(
                AlertKind.EXCEPTION_BURST,
                message.source.host,
                message.destination.host,
                when,
                frame,
                raw=message.raw,
                protocol=pair.protocol,
                exception=message.exception_name or str(message.exception),
            )

    # -- aggregation -------------------------------------------------------------------------

    def _distinct_in(self, key: tuple[Any, ...], now: dt.datetime) -> _Distinct:
        return self._distinct.setdefault(key, lambda: _Distinct(self._scan_window), now)

    def _raise_many(
        self, kind: AlertKind, source: str, destination: str, when: dt.datetime, seen: _Distinct, protocol: str = ""
    ) -> None:
        """A threshold alert: the first time it fires it takes every frame that led to it."""
        alert = self._alert_for(kind, source, destination, when, protocol=protocol)
        alert.count += 1
        alert.last_time = max(alert.last_time, when)
        for frame in seen.frames:
            self._add_frame(alert, frame)
        seen.frames = []
        alert.details.setdefault("distinct", set()).add(len(seen.items))

    def _raise(
        self,
        kind: AlertKind,
        source: str,
        destination: str,
        when: dt.datetime,
        frame: int | None,
        *,
        raw: bytes = b"",
        protocol: str = "",
        techniques: tuple[str, ...] | None = None,
        **detail: str,
    ) -> None:
        alert = self._alert_for(kind, source, destination, when, protocol=protocol, techniques=techniques)
        alert.count += 1
        alert.last_time = max(alert.last_time, when)
        if frame is not None:
            self._add_frame(alert, frame)
        if raw and len(alert.raw) < self.settings.evidence_raw:
            alert.raw.append(bytes(raw))
        for name, value in detail.items():
            values = alert.details.setdefault(name, set())
            if len(values) < 100:
                values.add(value)

    def _add_frame(self, alert: Alert, frame: int) -> None:
        if len(alert.frames) < self.settings.evidence_frames and (not alert.frames or alert.frames[-1] != frame):
            alert.frames.append(frame)

    def _alert_for(
        self,
        kind: AlertKind,
        source: str,
        destination: str,
        when: dt.datetime,
        *,
        protocol: str = "",
        techniques: tuple[str, ...] | None = None,
    ) -> Alert:
        key = (kind, source, destination)
        alert = self._open.get(key)
        if alert is not None and when - alert.first_time < self._alert_window:
            return alert
        folded = self._folded.get(key, when)
        if folded is not None and when - folded.first_time < self._alert_window:
            return folded
        opened = self._opened.setdefault((kind, destination), deque, when)
        while opened and when - opened[0] >= self._alert_window:
            opened.popleft()
        if len(opened) < self.settings.max_sources:
            opened.append(when)
            alert = self._new_alert(kind, source, destination, when, protocol, techniques)
            self._open[key] = alert
            return alert
        return self._fold(kind, source, destination, when, protocol, techniques)

    def _fold(
        self,
        kind: AlertKind,
        source: str,
        destination: str,
        when: dt.datetime,
        protocol: str,
        techniques: tuple[str, ...] | None,
    ) -> Alert:
        """The target's aggregate alert of this kind, with `source` counted among its sources."""
        key = (kind, MANY_SOURCES, destination)
        aggregate = self._open.get(key)
        if aggregate is None or when - aggregate.first_time >= self._alert_window:
            aggregate = self._new_alert(kind, MANY_SOURCES, destination, when, protocol, None)
            self._open[key] = aggregate
        for technique in techniques or ():
            if technique not in aggregate.techniques:
                aggregate.techniques += (technique,)
        self._folded.put((kind, source, destination), aggregate, when)
        aggregate.source_count += 1
        if len(aggregate.sources) < SOURCE_SAMPLE:
            aggregate.sources.append(source)
        return aggregate

    def _new_alert(
        self,
        kind: AlertKind,
        source: str,
        destination: str,
        when: dt.datetime,
        protocol: str,
        techniques: tuple[str, ...] | None,
    ) -> Alert:
        spec = KINDS[kind]
        alert = Alert(
            kind=kind,
            severity=spec.severity,
            source=source,
            destination=destination,
            first_time=when,
            last_time=when,
            techniques=techniques or spec.techniques,
            protocol=protocol,
        )
        self._alerts.append(alert)
        return alert


def detect(
    baseline: Baseline,
    stream: Iterable[tuple[PacketInfo, list[IcsMessage]]],
    settings: DetectionSettings | None = None,
    *,
    known_attackers: Mapping[str, str] | None = None,
) -> list[Alert]:
    """Every alert a decoded capture raises against `baseline` (and the threat intelligence)."""
    detector = Detector(baseline, settings, known_attackers=known_attackers)
    for packet, messages in stream:
        detector.check(packet, messages)
    return detector.finish()


# -- scoring against labelled captures --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LabelledScore:
    """Alerts judged by per-frame labels: an alert is true when its evidence holds an attack frame."""

    packets: int
    attack_packets: int
    alerts: int
    true_alerts: int
    false_alerts: int
    benign_hours: float

    @property
    def detected(self) -> bool:
        return self.true_alerts > 0

    @property
    def false_per_hour(self) -> float:
        return self.false_alerts / self.benign_hours if self.benign_hours > 0 else 0.0


def score_alerts(
    alerts: Iterable[Alert], attack_frames: set[int], *, packets: int, attack_packets: int, benign_hours: float
) -> LabelledScore:
    listed = list(alerts)
    true = sum(1 for alert in listed if attack_frames.intersection(alert.frames))
    return LabelledScore(packets, attack_packets, len(listed), true, len(listed) - true, benign_hours)
