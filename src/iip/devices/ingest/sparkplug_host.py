"""The Sparkplug B host application as a pure state machine: sessions, sequence numbers, aliases, deaths.

The MQTT loop subscribes to `spBv1.0/#`, hands every message to `SparkplugHost.on_message` and
publishes what the outcome asks; time comes from the injected clock, so nothing here does I/O.

- NBIRTH starts an edge node's session: its seq (0), its `bdSeq`, and the names, aliases and datatypes
  of the node's metrics. DBIRTH does the same for one device. Births mark online.
- seq runs 0..255 and wraps; NBIRTH, DBIRTH, NDATA, DDATA and DDEATH of a node each take the next one.
  A gap rejects that message's points and resynchronises on the seq received, so one lost message
  costs one message. A gap, DATA before its BIRTH, or an unknown alias or name also asks the node to
  rebirth (NCMD `Node Control/Rebirth`), at most once per `rebirth_interval_ms` per node.
- NDEATH with the session's bdSeq (or with none) marks the node and every device born under it
  offline; an NDEATH carrying another bdSeq is the late will of an earlier connection and is ignored.
  DDEATH marks one device offline.
- Numeric and Boolean values become points (Boolean 1/0), named through `KnownDevice.sparkplug_metrics`
  or else by their Sparkplug name; String, Text, UUID and DateTime values become attributes. Null
  values, NaN and infinities become points of quality BAD and value 0 (the value means nothing and NaN
  does not survive JSON on the bus); a "Quality" property (192 good, 0 bad, other uncertain) sets the
  quality of other values. Bytes, File, arrays, DataSet and Template values, `bdSeq` and the
  `Node Control/*` and `Device Control/*` metrics are not ingested.
- A point's timestamp is the metric's, else the payload's, else now; one more than `max_future_ms`
  ahead of now is rejected.
- Historical values (`is_historical`) are stored under their own timestamps, which must be older than
  the newest live value of their metric seen so far: one without its own timestamp, or not older, is
  rejected rather than let the store and twin take it for the current value.
- Devices and edge nodes are found with `DeviceDirectory.by_sparkplug`; messages of unregistered ones
  are rejected with a reason (their seq is still followed, so registered devices behind the same node
  are not disturbed), and rebirths are asked only of nodes with something registered.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from iip.devices.codecs.sparkplug import (
    BD_SEQ_METRIC,
    REBIRTH_METRIC,
    SEQ_MODULUS,
    STATE_QOS,
    STATE_RETAIN,
    DataType,
    EdgeTopic,
    MessageType,
    Metric,
    Payload,
    SparkplugError,
    StateTopic,
    decode_payload,
    decode_state,
    encode_payload,
    encode_state,
    parse_topic,
    with_datatype,
)
from iip.devices.directory import DeviceDirectory, IngestOutcome, KnownDevice
from iip.telemetry.public import Quality

REBIRTH_INTERVAL_MS = 5_000  # at most one rebirth request per edge node in this time
COMMAND_QOS = 0  # Sparkplug: NCMD and DCMD are published with QoS 0, not retained
CONTROL_PREFIXES = ("Node Control/", "Device Control/")
QUALITY_PROPERTY = "Quality"
QUALITY_CODES = {192: Quality.GOOD, 0: Quality.BAD}  # Sparkplug 3.0 codes; any other (500 stale...) is uncertain
ATTRIBUTE_TYPES = frozenset({DataType.STRING, DataType.TEXT, DataType.UUID, DataType.DATETIME})


@dataclass(frozen=True, slots=True)
class _Definition:
    name: str
    datatype: DataType


@dataclass(slots=True)
class _Catalogue:
    """The metrics one birth defined, by alias and by name."""

    by_alias: dict[int, _Definition] = field(default_factory=dict)
    by_name: dict[str, _Definition] = field(default_factory=dict)

    def find(self, metric: Metric) -> _Definition | None:
        if metric.alias is not None and metric.alias in self.by_alias:
            return self.by_alias[metric.alias]
        return self.by_name.get(metric.name) if metric.name is not None else None


@dataclass(slots=True)
class _Session:
    """One edge node session, from its NBIRTH to its NDEATH."""

    bd_seq: int | None
    seq: int  # the last seq received
    node: _Catalogue
    devices: dict[str, _Catalogue] = field(default_factory=dict)  # born and not dead
    registered: bool = False  # the node or a device born in it is registered: worth a rebirth request


@dataclass(slots=True)
class _Message:
    topic: EdgeTopic
    payload: Payload
    device: KnownDevice | None
    now: int
    outcome: IngestOutcome

    @property
    def node_key(self) -> tuple[str, str]:
        return self.topic.group_id, self.topic.edge_node_id

    def reject(self, reason: str) -> None:
        self.outcome.rejected.append((f"{self.topic.message_type} from {self.topic.path}: {reason}", self.device))


class SparkplugHost:
    """A Sparkplug B 3.0 host application (pure: the caller does the MQTT, the clock is injected)."""

    def __init__(
        self,
        host_id: str,
        directory: DeviceDirectory,
        now_ms: Callable[[], int],
        max_future_ms: int,
        *,
        rebirth_interval_ms: int = REBIRTH_INTERVAL_MS,
    ) -> None:
        self.host_id = host_id
        self._state_topic = str(StateTopic(host_id))  # checks the id
        if max_future_ms < 0 or rebirth_interval_ms < 0:
            raise ValueError("max_future_ms and rebirth_interval_ms cannot be negative")
        self._directory = directory
        self._now_ms = now_ms
        self._max_future_ms = max_future_ms
        self._rebirth_interval_ms = rebirth_interval_ms
        self._state_timestamp: int | None = None
        self._online = False
        self._sessions: dict[tuple[str, str], _Session] = {}
        self._born_devices: dict[tuple[str, str], set[str]] = {}  # every device born under a node
        self._last_rebirth: dict[tuple[str, str], int] = {}
        self._newest_live: dict[tuple[str, str, str], int] = {}  # (tenant, device, metric) -> ts
        self._handlers: dict[MessageType, Callable[[_Message], None]] = {
            MessageType.NBIRTH: self._on_nbirth,
            MessageType.DBIRTH: self._on_dbirth,
            MessageType.NDATA: self._on_data,
            MessageType.DDATA: self._on_data,
            MessageType.NDEATH: self._on_ndeath,
            MessageType.DDEATH: self._on_ddeath,
        }

    # --- the host's own STATE

    def state_topic(self) -> str:
        return self._state_topic

    def offline_payload(self) -> bytes:
        """STATE death: the will of each MQTT CONNECT, and the last message of a clean shutdown.

        Each call starts a new STATE timestamp (never lower than the previous one), which the next
        `online_payload` repeats: Sparkplug 3.0 wants the birth to carry its connection's will timestamp."""
        now = self._now_ms()
        previous = self._state_timestamp
        self._state_timestamp = now if previous is None else max(now, previous + 1)
        self._online = False
        return encode_state(False, self._state_timestamp)

    def online_payload(self) -> bytes:
        """STATE birth, published (QoS 1, retained) once the subscriptions are in place."""
        if self._state_timestamp is None:
            self._state_timestamp = self._now_ms()
        self._online = True
        return encode_state(True, self._state_timestamp)

    def rebirth_request(self, group_id: str, edge_node_id: str) -> tuple[str, bytes]:
        """NCMD asking an edge node to publish its NBIRTH and DBIRTHs again."""
        now = self._now_ms()
        command = Metric(name=REBIRTH_METRIC, timestamp=now, datatype=DataType.BOOLEAN, value=True)
        topic = EdgeTopic(group_id, MessageType.NCMD, edge_node_id)
        return str(topic), encode_payload(Payload(timestamp=now, metrics=(command,)))

    # --- messages

    def on_message(self, topic: str, payload: bytes) -> IngestOutcome:
        outcome = IngestOutcome()
        try:
            parsed = parse_topic(topic)
        except SparkplugError as err:
            outcome.rejected.append((err.message, None))
            return outcome
        if isinstance(parsed, StateTopic):
            self._on_state(parsed, payload, outcome)
            return outcome
        handler = self._handlers.get(parsed.message_type)
        if handler is None:  # NCMD, DCMD: our own commands or another host's
            return outcome
        device = self._directory.by_sparkplug(parsed.group_id, parsed.edge_node_id, parsed.device_id)
        try:
            decoded = decode_payload(payload)
        except SparkplugError as err:
            outcome.rejected.append((f"{parsed.message_type} from {parsed.path}: {err.message}", device))
            return outcome
        handler(_Message(parsed, decoded, device, self._now_ms(), outcome))
        return outcome

    def _on_state(self, topic: StateTopic, payload: bytes, outcome: IngestOutcome) -> None:
        if topic.host_id != self.host_id:
            return  # another host application's
        try:
            state = decode_state(payload)
        except SparkplugError as err:
            outcome.rejected.append((f"STATE of host {self.host_id}: {err.message}", None))
            return
        if state.online or not self._online:
            return
        if self._state_timestamp is not None and state.timestamp > self._state_timestamp:
            outcome.rejected.append(
                (f"STATE of host {self.host_id}: a newer death than ours; is another host using this id?", None)
            )
            return
        # the will of an earlier connection, delivered late: say again that we are online
        outcome.publish.append((self._state_topic, self.online_payload(), STATE_QOS, STATE_RETAIN))

    def _on_nbirth(self, msg: _Message) -> None:
        seq = msg.payload.seq if msg.payload.seq is not None else 0
        if seq >= SEQ_MODULUS:
            msg.reject(f"seq {seq} is outside 0..{SEQ_MODULUS - 1}")
            self._request_rebirth(msg, concerned=msg.device is not None)
            return
        catalogue, problems = _catalogue(msg.payload.metrics)
        bd_metric = msg.payload.metric(BD_SEQ_METRIC)
        session = _Session(_int_value(bd_metric), seq, catalogue, registered=msg.device is not None)
        self._sessions[msg.node_key] = session
        self._births(msg, problems, in_order=True)

    def _on_dbirth(self, msg: _Message) -> None:
        session = self._sessions.get(msg.node_key)
        device_id = msg.topic.device_id or ""  # never empty: the topic parser requires it for DBIRTH
        if session is None:
            self._before_birth(msg, "DBIRTH before the edge node's NBIRTH")
            return
        gap = _advance(session, msg.payload.seq)
        catalogue, problems = _catalogue(msg.payload.metrics)
        session.devices[device_id] = catalogue
        session.registered = session.registered or msg.device is not None
        self._born_devices.setdefault(msg.node_key, set()).add(device_id)
        if gap:
            msg.reject(gap)
            self._request_rebirth(msg, concerned=session.registered)
        self._births(msg, problems, in_order=gap is None)

    def _births(self, msg: _Message, problems: list[str], *, in_order: bool) -> None:
        for problem in problems:
            msg.reject(problem)
        if msg.device is None:
            msg.reject(f"unknown Sparkplug device {msg.topic.path}")
            return
        msg.outcome.statuses.append((msg.device, True, f"Sparkplug {msg.topic.message_type}"))
        if in_order and not problems:
            self._ingest(msg, msg.device, msg.payload.metrics)

    def _on_data(self, msg: _Message) -> None:
        session = self._sessions.get(msg.node_key)
        if session is None:
            self._before_birth(msg, f"{msg.topic.message_type} before the edge node's NBIRTH")
            return
        gap = _advance(session, msg.payload.seq)
        if gap:
            msg.reject(gap)
            self._request_rebirth(msg, concerned=session.registered or msg.device is not None)
            return
        device_id = msg.topic.device_id
        catalogue = session.node if device_id is None else session.devices.get(device_id)
        if catalogue is None:
            self._before_birth(msg, "DDATA before the device's DBIRTH")
            return
        if msg.device is None:
            msg.reject(f"unknown Sparkplug device {msg.topic.path}")
            return
        metrics = []
        for metric in msg.payload.metrics:
            definition = catalogue.find(metric)
            if definition is None:
                known = f"alias {metric.alias}" if metric.alias is not None else f"name {metric.name!r}"
                msg.reject(f"metric {known} was not in the birth")
                self._request_rebirth(msg, concerned=True)
                return
            try:
                metrics.append(with_datatype(replace(metric, name=definition.name), definition.datatype))
            except SparkplugError as err:
                msg.reject(err.message)
                self._request_rebirth(msg, concerned=True)
                return
        self._ingest(msg, msg.device, metrics)

    def _on_ddeath(self, msg: _Message) -> None:
        session = self._sessions.get(msg.node_key)
        if session is not None:
            gap = _advance(session, msg.payload.seq)
            if gap:
                msg.reject(gap)
                self._request_rebirth(msg, concerned=session.registered or msg.device is not None)
            session.devices.pop(msg.topic.device_id or "", None)
        if msg.device is None:
            msg.reject(f"unknown Sparkplug device {msg.topic.path}")
            return
        msg.outcome.statuses.append((msg.device, False, "Sparkplug DDEATH"))

    def _on_ndeath(self, msg: _Message) -> None:
        key = msg.node_key
        session = self._sessions.get(key)
        bd_seq = _int_value(msg.payload.metric(BD_SEQ_METRIC))
        if session is not None and session.bd_seq is not None and bd_seq is not None and bd_seq != session.bd_seq:
            return  # the will of an earlier connection, arriving after the node was born again
        self._sessions.pop(key, None)
        offline = [msg.device] if msg.device is not None else []
        for device_id in sorted(self._born_devices.get(key, ())):
            device = self._directory.by_sparkplug(msg.topic.group_id, msg.topic.edge_node_id, device_id)
            if device is not None:
                offline.append(device)
        if not offline:
            msg.reject(f"unknown Sparkplug device {msg.topic.path}")
        msg.outcome.statuses.extend((device, False, "Sparkplug NDEATH") for device in offline)

    def _before_birth(self, msg: _Message, reason: str) -> None:
        """A message that needs a birth not seen (yet, or since a death)."""
        if msg.device is None:
            msg.reject(f"unknown Sparkplug device {msg.topic.path}")
            return
        msg.reject(reason)
        self._request_rebirth(msg, concerned=True)

    def _request_rebirth(self, msg: _Message, *, concerned: bool) -> None:
        if not concerned:
            return
        key = msg.node_key
        last = self._last_rebirth.get(key)
        if last is not None and 0 <= msg.now - last < self._rebirth_interval_ms:
            return
        self._last_rebirth[key] = msg.now
        topic, payload = self.rebirth_request(*key)
        msg.outcome.publish.append((topic, payload, COMMAND_QOS, False))

    # --- values

    def _ingest(self, msg: _Message, device: KnownDevice, metrics: Iterable[Metric]) -> None:
        accepted: list[tuple[Metric, str, int]] = []
        for metric in metrics:
            name = metric.name or ""
            if name == BD_SEQ_METRIC or name.startswith(CONTROL_PREFIXES):
                continue
            ts = next(t for t in (metric.timestamp, msg.payload.timestamp, msg.now) if t is not None)
            if ts > msg.now + self._max_future_ms:
                msg.reject(f"metric {name!r}: timestamp {ts} is more than {self._max_future_ms} ms ahead of now")
                continue
            accepted.append((metric, device.sparkplug_metrics.get(name, name), ts))
        # live values first, so that historical ones of the same message are compared with them
        for metric, name, ts in accepted:
            if not metric.is_historical:
                key = (device.tenant_id, device.key, name)
                self._newest_live[key] = max(ts, self._newest_live.get(key, ts))
        for metric, name, ts in accepted:
            if metric.is_historical:
                if metric.timestamp is None:
                    msg.reject(f"metric {metric.name!r}: historical value without its own timestamp")
                    continue
                newest = self._newest_live.get((device.tenant_id, device.key, name))
                if newest is not None and ts >= newest:
                    msg.reject(
                        f"metric {metric.name!r}: historical value at {ts} is not older than the live one at {newest}"
                    )
                    continue
            _emit(msg.outcome, device, name, ts, metric)


def _catalogue(metrics: Iterable[Metric]) -> tuple[_Catalogue, list[str]]:
    """The definitions a birth makes, and what is wrong with them."""
    catalogue, problems, ambiguous = _Catalogue(), [], set()
    for metric in metrics:
        if metric.name is None:
            problems.append(f"metric alias {metric.alias} has no name")
            continue
        if metric.datatype is DataType.UNKNOWN:
            problems.append(f"metric {metric.name!r} has no datatype")
            continue
        definition = _Definition(metric.name, metric.datatype)
        catalogue.by_name[metric.name] = definition
        if metric.alias is None:
            continue
        other = catalogue.by_alias.setdefault(metric.alias, definition)
        if other.name != metric.name:
            problems.append(f"alias {metric.alias} names both {other.name!r} and {metric.name!r}")
            ambiguous.add(metric.alias)
    for alias in ambiguous:
        del catalogue.by_alias[alias]
    return catalogue, problems


def _advance(session: _Session, seq: int | None) -> str | None:
    """Take the next seq of a session; what is wrong with it, or None when it is the expected one."""
    if seq is None:
        return "no seq"
    if seq >= SEQ_MODULUS:
        return f"seq {seq} is outside 0..{SEQ_MODULUS - 1}"
    expected = (session.seq + 1) % SEQ_MODULUS
    session.seq = seq
    if seq != expected:
        return f"seq {seq} where {expected} was expected: messages were lost or reordered"
    return None


def _int_value(metric: Metric | None) -> int | None:
    value = metric.value if metric is not None else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _quality(metric: Metric) -> Quality:
    prop = metric.find_property(QUALITY_PROPERTY)
    if prop is None or not isinstance(prop.value, int) or isinstance(prop.value, bool):
        return Quality.GOOD
    return QUALITY_CODES.get(prop.value, Quality.UNCERTAIN)


def _emit(outcome: IngestOutcome, device: KnownDevice, name: str, ts: int, metric: Metric) -> None:
    """The point or attribute one typed metric gives, if any."""
    value = None if metric.is_null else metric.value
    if metric.datatype.is_numeric or metric.datatype is DataType.BOOLEAN:
        if isinstance(value, int | float) and math.isfinite(value):
            outcome.points.append((device, name, ts, float(value), int(_quality(metric))))
        else:  # null, NaN or infinite
            outcome.points.append((device, name, ts, 0.0, int(Quality.BAD)))
    elif metric.datatype in ATTRIBUTE_TYPES:
        text = value.isoformat() if isinstance(value, dt.datetime) else None if value is None else str(value)
        outcome.attributes.append((device, name, text))
