"""Sparkplug B 3.0 as plain values: topics, payloads and the host application's STATE message (no I/O).

Payloads follow the specification's protobuf schema (`sparkplug_b.proto`, compiled to `sparkplug_b_pb2`)
and are mapped to frozen dataclasses here, so the rest of the platform never touches protobuf objects.
Every scalar datatype maps to one Python type (`DataType.python_type`):

- Int8..Int64, UInt8..UInt64: `int`. Signed values travel in the unsigned `int_value` / `long_value`
  fields as two's complement. We write them at the type's own width (Int8 -1 is 0xFF, as Eclipse Tahu's
  Python library does); we read that, and the 32- and 64-bit sign-extended forms other encoders write
  (0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF), and refuse anything else out of range.
- Float, Double: `float`; Boolean: `bool`; String, Text: `str`; UUID: `uuid.UUID`;
  DateTime: timezone-aware `datetime` in UTC (milliseconds since the Unix epoch on the wire);
  Bytes, File: `bytes`.
- Array types stay packed (`bytes`, as on the wire); DataSet and Template values are not decoded
  (`value` is None, `is_null` False).

DATA and command metrics usually omit their datatype (only births carry it): such a metric decodes to
`DataType.UNKNOWN` with the raw wire value, and `with_datatype` types it once the birth is known.

Every malformed topic, payload or value raises `SparkplugError` with a readable reason.
"""

from __future__ import annotations

import datetime as dt
import json
import struct
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import IntEnum, StrEnum
from typing import Any, TypeAlias

from google.protobuf.message import DecodeError

from iip.devices.codecs import sparkplug_b_pb2 as pb
from iip.kernel.errors import Invalid

NAMESPACE = "spBv1.0"
STATE_QOS = 1  # Sparkplug 3.0: the host's STATE birth and death are published with QoS 1, retained
STATE_RETAIN = True
SEQ_MODULUS = 256  # seq runs 0..255, then wraps to 0
BD_SEQ_METRIC = "bdSeq"
REBIRTH_METRIC = "Node Control/Rebirth"

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
UINT64_MAX = 2**64 - 1


class SparkplugError(Invalid):
    """A Sparkplug topic, payload or value that cannot be read or written; the message says why."""

    code = "sparkplug_invalid"
    title = "Invalid Sparkplug B message"


# --- topics


class MessageType(StrEnum):
    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    NDATA = "NDATA"
    DDATA = "DDATA"
    NCMD = "NCMD"
    DCMD = "DCMD"
    STATE = "STATE"

    @property
    def is_device(self) -> bool:
        """Addressed to a device behind the edge node (the topic ends with a device id)."""
        return self in _DEVICE_TYPES


_DEVICE_TYPES = frozenset({MessageType.DBIRTH, MessageType.DDEATH, MessageType.DDATA, MessageType.DCMD})
_EDGE_TYPES = {t.value: t for t in MessageType if t is not MessageType.STATE}
_ID_FORBIDDEN = frozenset("/+#")


def _check_id(kind: str, value: str) -> None:
    if not value:
        raise SparkplugError(f"Sparkplug {kind} is empty")
    if _ID_FORBIDDEN.intersection(value):
        raise SparkplugError(f"Sparkplug {kind} {value!r} contains '/', '+' or '#'")


@dataclass(frozen=True, slots=True)
class EdgeTopic:
    """`spBv1.0/{group_id}/{message_type}/{edge_node_id}[/{device_id}]`; `str()` gives the topic."""

    group_id: str
    message_type: MessageType
    edge_node_id: str
    device_id: str | None = None

    def __post_init__(self) -> None:
        if self.message_type is MessageType.STATE:
            raise SparkplugError("STATE topics have no group or edge node: use StateTopic")
        _check_id("group_id", self.group_id)
        if self.group_id == MessageType.STATE:
            raise SparkplugError("Sparkplug group_id 'STATE' is reserved for host application topics")
        _check_id("edge_node_id", self.edge_node_id)
        if self.message_type.is_device:
            if self.device_id is None:
                raise SparkplugError(f"a {self.message_type} topic needs a device_id")
            _check_id("device_id", self.device_id)
        elif self.device_id is not None:
            raise SparkplugError(f"a {self.message_type} topic has no device_id")

    def __str__(self) -> str:
        base = f"{NAMESPACE}/{self.group_id}/{self.message_type}/{self.edge_node_id}"
        return base if self.device_id is None else f"{base}/{self.device_id}"

    @property
    def path(self) -> str:
        """`group/node[/device]`, to name the sender in messages."""
        base = f"{self.group_id}/{self.edge_node_id}"
        return base if self.device_id is None else f"{base}/{self.device_id}"


@dataclass(frozen=True, slots=True)
class StateTopic:
    """`spBv1.0/STATE/{host_id}`: a host application's STATE birth and death."""

    host_id: str

    def __post_init__(self) -> None:
        _check_id("host_id", self.host_id)

    def __str__(self) -> str:
        return f"{NAMESPACE}/STATE/{self.host_id}"

    @property
    def message_type(self) -> MessageType:
        return MessageType.STATE


def parse_topic(topic: str) -> EdgeTopic | StateTopic:
    """Split a Sparkplug B topic; `SparkplugError` says what is wrong with a malformed one."""
    parts = topic.split("/")
    if parts[0] != NAMESPACE:
        raise SparkplugError(f"topic {topic!r} is not in the Sparkplug B namespace {NAMESPACE!r}")
    if len(parts) >= 2 and parts[1] == "STATE":
        if len(parts) != 3:
            raise SparkplugError(f"topic {topic!r}: a STATE topic is {NAMESPACE}/STATE/{{host_id}}")
        return StateTopic(parts[2])
    if len(parts) not in {4, 5}:
        raise SparkplugError(
            f"topic {topic!r}: expected {NAMESPACE}/{{group_id}}/{{message_type}}/{{edge_node_id}}[/{{device_id}}]"
        )
    message_type = _EDGE_TYPES.get(parts[2])
    if message_type is None:
        raise SparkplugError(f"topic {topic!r}: unknown Sparkplug message type {parts[2]!r}")
    device_id = parts[4] if len(parts) == 5 else None
    if message_type.is_device and device_id is None:
        raise SparkplugError(f"topic {topic!r}: a {message_type} topic ends with a device_id")
    if not message_type.is_device and device_id is not None:
        raise SparkplugError(f"topic {topic!r}: a {message_type} topic has no device_id")
    return EdgeTopic(parts[1], message_type, parts[3], device_id)


# --- datatypes and values


class DataType(IntEnum):
    """The specification's datatype numbers (`DataType` in sparkplug_b.proto)."""

    UNKNOWN = 0
    INT8 = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    UINT8 = 5
    UINT16 = 6
    UINT32 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12
    DATETIME = 13
    TEXT = 14
    UUID = 15
    DATASET = 16
    BYTES = 17
    FILE = 18
    TEMPLATE = 19
    PROPERTYSET = 20
    PROPERTYSET_LIST = 21
    INT8_ARRAY = 22
    INT16_ARRAY = 23
    INT32_ARRAY = 24
    INT64_ARRAY = 25
    UINT8_ARRAY = 26
    UINT16_ARRAY = 27
    UINT32_ARRAY = 28
    UINT64_ARRAY = 29
    FLOAT_ARRAY = 30
    DOUBLE_ARRAY = 31
    BOOLEAN_ARRAY = 32
    STRING_ARRAY = 33
    DATETIME_ARRAY = 34

    @property
    def label(self) -> str:
        """The specification's name, e.g. 'Int8', for messages."""
        return pb.DataType.Name(self.value)

    @property
    def python_type(self) -> type | None:
        """The Python type values of this datatype decode to; None when values are not decoded."""
        rule = _RULES.get(self)
        return rule.python[-1] if rule else None

    @property
    def is_numeric(self) -> bool:
        """Integers and floating point numbers (not Boolean)."""
        return self in _NUMERIC


MetricValue: TypeAlias = int | float | bool | str | bytes | uuid.UUID | dt.datetime | None
PropertyValue: TypeAlias = (
    int
    | float
    | bool
    | str
    | uuid.UUID
    | dt.datetime
    | tuple["Property", ...]  # PropertySet
    | tuple[tuple["Property", ...], ...]  # PropertySetList
    | None
)
RawValue: TypeAlias = int | float | bool | str | bytes  # what the protobuf `value` oneof holds


@dataclass(frozen=True, slots=True)
class Property:
    """One entry of a metric's property set."""

    name: str
    datatype: DataType
    value: PropertyValue = None
    is_null: bool = False


@dataclass(frozen=True, slots=True)
class Metric:
    name: str | None = None  # births name every metric; DATA may send the alias only
    alias: int | None = None
    timestamp: int | None = None  # ms since the Unix epoch, UTC
    datatype: DataType = DataType.UNKNOWN
    value: MetricValue = None
    is_null: bool = False
    is_historical: bool = False
    is_transient: bool = False
    properties: tuple[Property, ...] = ()

    def find_property(self, name: str) -> Property | None:
        return next((p for p in self.properties if p.name == name), None)


@dataclass(frozen=True, slots=True)
class Payload:
    timestamp: int | None = None  # ms since the Unix epoch, UTC, at sending
    metrics: tuple[Metric, ...] = ()
    seq: int | None = None
    uuid: str | None = None
    body: bytes | None = None

    def metric(self, name: str) -> Metric | None:
        return next((m for m in self.metrics if m.name == name), None)


@dataclass(frozen=True, slots=True)
class HostState:
    """A host application's STATE payload (Sparkplug 3.0 JSON)."""

    online: bool
    timestamp: int  # ms since the Unix epoch, UTC


def datetime_to_ms(value: dt.datetime) -> int:
    """Milliseconds since the Unix epoch of a timezone-aware datetime (sub-millisecond part dropped)."""
    if value.tzinfo is None:
        raise SparkplugError(f"DateTime {value.isoformat()} has no time zone")
    return int((value - EPOCH) // dt.timedelta(milliseconds=1))


def ms_to_datetime(ms: int) -> dt.datetime:
    try:
        return EPOCH + dt.timedelta(milliseconds=ms)
    except OverflowError:
        raise SparkplugError(f"DateTime {ms} ms is past the year 9999") from None


# --- one rule per scalar datatype: the Python type, the protobuf field, and the conversions


@dataclass(frozen=True, slots=True)
class _ValueRule:
    python: tuple[type, ...]  # accepted when encoding; the last one is what decoding gives
    field: str  # the `value` oneof field written
    wire: type  # the raw type read back (float_value and double_value both read as float)
    to_wire: Callable[[Any, DataType, str], RawValue]
    from_wire: Callable[[Any, DataType, str], MetricValue]


def _to_int(value: int, datatype: DataType, what: str) -> int:
    bits, signed = _INT_BITS[datatype]
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not low <= value <= high:
        raise SparkplugError(f"{what}: {value} is out of range for {datatype.label} ({low}..{high})")
    return value & ((1 << bits) - 1)  # two's complement at the type's width


def _from_int(raw: int, datatype: DataType, what: str) -> int:
    bits, signed = _INT_BITS[datatype]
    value: int | None = raw if raw < 1 << bits else None
    if signed:
        half = 1 << (bits - 1)
        if value is not None and value >= half:
            value -= 1 << bits
        for carrier in (32, 64):  # sign-extended by encoders that write the 32- or 64-bit field's width
            if bits < carrier and (1 << carrier) - half <= raw < 1 << carrier:
                value = raw - (1 << carrier)
    if value is None:
        raise SparkplugError(f"{what}: {raw} is out of range for {datatype.label}")
    return value


def _to_float32(value: float, datatype: DataType, what: str) -> float:
    try:
        struct.pack("<f", value)
    except OverflowError:
        raise SparkplugError(f"{what}: {value} is out of range for Float (32-bit)") from None
    return float(value)


def _to_datetime_ms(value: dt.datetime, datatype: DataType, what: str) -> int:
    try:
        ms = datetime_to_ms(value)
    except SparkplugError as err:
        raise SparkplugError(f"{what}: {err.message}") from None
    if ms < 0:
        raise SparkplugError(f"{what}: DateTime {value.isoformat()} is before 1970")
    return ms


def _from_datetime_ms(raw: int, datatype: DataType, what: str) -> dt.datetime:
    try:
        return ms_to_datetime(raw)
    except SparkplugError as err:
        raise SparkplugError(f"{what}: {err.message}") from None


def _to_uuid(raw: str, datatype: DataType, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise SparkplugError(f"{what}: {raw!r} is not a UUID") from None


def _same(value: Any, datatype: DataType, what: str) -> Any:
    return value


_INT_BITS: dict[DataType, tuple[int, bool]] = {
    DataType.INT8: (8, True),
    DataType.INT16: (16, True),
    DataType.INT32: (32, True),
    DataType.INT64: (64, True),
    DataType.UINT8: (8, False),
    DataType.UINT16: (16, False),
    DataType.UINT32: (32, False),
    DataType.UINT64: (64, False),
}
_NUMERIC = frozenset({*_INT_BITS, DataType.FLOAT, DataType.DOUBLE})
_PACKED = frozenset({DataType.BYTES, DataType.FILE} | {t for t in DataType if t.name.endswith("_ARRAY")})
_RULES: dict[DataType, _ValueRule] = {
    **{
        t: _ValueRule((int,), "int_value" if bits <= 32 else "long_value", int, _to_int, _from_int)
        for t, (bits, _) in _INT_BITS.items()
    },
    DataType.FLOAT: _ValueRule((int, float), "float_value", float, _to_float32, _same),
    DataType.DOUBLE: _ValueRule((int, float), "double_value", float, _same, _same),
    DataType.BOOLEAN: _ValueRule((bool,), "boolean_value", bool, _same, _same),
    DataType.STRING: _ValueRule((str,), "string_value", str, _same, _same),
    DataType.TEXT: _ValueRule((str,), "string_value", str, _same, _same),
    DataType.UUID: _ValueRule((uuid.UUID,), "string_value", str, lambda v, t, w: str(v), _to_uuid),
    DataType.DATETIME: _ValueRule((dt.datetime,), "long_value", int, _to_datetime_ms, _from_datetime_ms),
    **{t: _ValueRule((bytes,), "bytes_value", bytes, _same, _same) for t in _PACKED},
}


def _is_a(value: object, types: tuple[type, ...]) -> bool:
    # bool is an int to Python, not to Sparkplug
    return isinstance(value, types) and (bool in types or not isinstance(value, bool))


def _set_value(target: Any, datatype: DataType, value: object, what: str) -> None:
    """Write a typed value into the `value` oneof of a Metric or PropertyValue message."""
    rule = _RULES.get(datatype)
    if rule is None or not hasattr(target, rule.field):
        raise SparkplugError(f"{what}: writing {datatype.label} values here is not supported")
    if not _is_a(value, rule.python):
        expected = " or ".join(t.__name__ for t in rule.python)
        raise SparkplugError(f"{what}: {datatype.label} needs {expected}, not {type(value).__name__}")
    setattr(target, rule.field, rule.to_wire(value, datatype, what))


def _typed_value(datatype: DataType, raw: RawValue, what: str) -> MetricValue:
    """The Python value of a raw wire value; None for datatypes whose values are not decoded."""
    rule = _RULES.get(datatype)
    if rule is None:
        return None  # DataSet, Template, property sets
    if not _is_a(raw, (rule.wire,)):
        raise SparkplugError(f"{what}: {datatype.label} value carried as {type(raw).__name__}")
    return rule.from_wire(raw, datatype, what)


# --- encoding


def _label(metric: Metric) -> str:
    if metric.name is not None:
        return f"metric {metric.name!r}"
    return f"metric alias {metric.alias}" if metric.alias is not None else "unnamed metric"


def _uint64(what: str, value: int) -> int:
    if not _is_a(value, (int,)) or not 0 <= value <= UINT64_MAX:
        raise SparkplugError(f"{what} must be an integer from 0 to {UINT64_MAX}, not {value!r}")
    return value


def _property_sets(value: PropertyValue, depth: int, where: str) -> tuple[tuple[Property, ...], ...]:
    """The property sets a PropertySet (depth 1) or PropertySetList (depth 2) value holds."""
    sets = (value,) if depth == 1 else value
    if not isinstance(sets, tuple) or not all(
        isinstance(s, tuple) and all(isinstance(p, Property) for p in s) for s in sets
    ):
        shape = "a tuple of Property" if depth == 1 else "a tuple of tuples of Property"
        raise SparkplugError(f"{where}: {'PropertySet' if depth == 1 else 'PropertySetList'} needs {shape}")
    return sets  # type: ignore[return-value]  # checked just above


def _encode_properties(target: pb.Payload.PropertySet, properties: Iterable[Property], what: str) -> None:
    for prop in properties:
        where = f"{what}, property {prop.name!r}"
        target.keys.append(prop.name)
        value = target.values.add()
        value.type = int(prop.datatype)
        if prop.is_null or prop.value is None:
            value.is_null = True
        elif prop.datatype is DataType.PROPERTYSET:
            _encode_properties(value.propertyset_value, _property_sets(prop.value, 1, where)[0], where)
        elif prop.datatype is DataType.PROPERTYSET_LIST:
            value.propertysets_value.SetInParent()
            for item in _property_sets(prop.value, 2, where):
                _encode_properties(value.propertysets_value.propertyset.add(), item, where)
        else:
            _set_value(value, prop.datatype, prop.value, where)


def _encode_metric(out: pb.Payload.Metric, metric: Metric, with_datatypes: bool) -> None:
    what = _label(metric)
    if metric.name is not None:
        out.name = metric.name
    if metric.alias is not None:
        out.alias = _uint64(f"{what}: alias", metric.alias)
    if metric.timestamp is not None:
        out.timestamp = _uint64(f"{what}: timestamp", metric.timestamp)
    if with_datatypes and metric.datatype is not DataType.UNKNOWN:
        out.datatype = int(metric.datatype)
    if metric.is_historical:
        out.is_historical = True
    if metric.is_transient:
        out.is_transient = True
    if metric.properties:
        _encode_properties(out.properties, metric.properties, what)
    if metric.is_null:
        out.is_null = True
    elif metric.value is not None:
        if metric.datatype is DataType.UNKNOWN:
            raise SparkplugError(f"{what}: a value needs a datatype to be encoded")
        _set_value(out, metric.datatype, metric.value, what)


def encode_payload(payload: Payload, *, with_datatypes: bool = True) -> bytes:
    """Serialise a payload. `with_datatypes=False` leaves metric datatypes out, as DATA and commands may."""
    message = pb.Payload()
    try:
        if payload.timestamp is not None:
            message.timestamp = _uint64("payload timestamp", payload.timestamp)
        if payload.seq is not None:
            message.seq = _uint64("payload seq", payload.seq)
        if payload.uuid is not None:
            message.uuid = payload.uuid
        if payload.body is not None:
            message.body = payload.body
        for metric in payload.metrics:
            _encode_metric(message.metrics.add(), metric, with_datatypes)
    except UnicodeEncodeError as err:  # a lone surrogate in a name or string value
        raise SparkplugError(f"text {err.object!r} cannot be written as UTF-8") from None
    return message.SerializeToString()


# --- decoding


def _text(value: str | bytes, what: str) -> str:
    # proto2 strings are not checked for UTF-8 when parsed: invalid ones come back as bytes
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise SparkplugError(f"{what} is not valid UTF-8") from None
    return value


def _datatype(number: int, what: str) -> DataType:
    try:
        return DataType(number)
    except ValueError:
        raise SparkplugError(f"{what}: unknown datatype {number}") from None


def _raw_value(source: Any, what: str) -> RawValue | None:
    field = source.WhichOneof("value")
    if field is None or field in _NOT_DECODED_FIELDS:
        return None
    raw: RawValue = getattr(source, field)
    return _text(raw, what) if field == "string_value" else raw  # type: ignore[arg-type]


_NOT_DECODED_FIELDS = frozenset({"dataset_value", "template_value", "extension_value"})


def _decode_properties(source: pb.Payload.PropertySet, what: str) -> tuple[Property, ...]:
    if len(source.keys) != len(source.values):
        raise SparkplugError(f"{what}: property set has {len(source.keys)} keys for {len(source.values)} values")
    out = []
    for key, value in zip(source.keys, source.values, strict=True):
        name = _text(key, f"{what}: property name")
        where = f"{what}, property {name!r}"
        datatype = _datatype(value.type, where)
        field = value.WhichOneof("value")
        decoded: PropertyValue = None
        if value.is_null:
            pass
        elif field == "propertyset_value":
            decoded = _decode_properties(value.propertyset_value, where)
        elif field == "propertysets_value":
            decoded = tuple(_decode_properties(s, where) for s in value.propertysets_value.propertyset)
        elif (raw := _raw_value(value, where)) is not None:
            typed = _typed_value(datatype, raw, where)
            if isinstance(typed, bytes):
                raise SparkplugError(f"{where}: {datatype.label} is not a property datatype")
            decoded = typed
        out.append(Property(name, datatype, decoded, bool(value.is_null)))
    return tuple(out)


def _decode_metric(source: pb.Payload.Metric) -> Metric:
    name = _text(source.name, "metric name") if source.HasField("name") else None
    alias = source.alias if source.HasField("alias") else None
    what = f"metric {name!r}" if name is not None else f"metric alias {alias}"
    datatype = _datatype(source.datatype, what) if source.HasField("datatype") else DataType.UNKNOWN
    is_null = bool(source.is_null)
    value: MetricValue = None
    if not is_null and (raw := _raw_value(source, what)) is not None:
        value = raw if datatype is DataType.UNKNOWN else _typed_value(datatype, raw, what)
    return Metric(
        name=name,
        alias=alias,
        timestamp=source.timestamp if source.HasField("timestamp") else None,
        datatype=datatype,
        value=value,
        is_null=is_null,
        is_historical=bool(source.is_historical),
        is_transient=bool(source.is_transient),
        properties=_decode_properties(source.properties, what) if source.HasField("properties") else (),
    )


def decode_payload(data: bytes) -> Payload:
    """Parse a Sparkplug B payload; `SparkplugError` if it is not one."""
    try:
        message = pb.Payload.FromString(data)
    except DecodeError:
        raise SparkplugError("payload is not a Sparkplug B protobuf message") from None
    return Payload(
        timestamp=message.timestamp if message.HasField("timestamp") else None,
        metrics=tuple(_decode_metric(m) for m in message.metrics),
        seq=message.seq if message.HasField("seq") else None,
        uuid=_text(message.uuid, "payload uuid") if message.HasField("uuid") else None,
        body=message.body if message.HasField("body") else None,
    )


def with_datatype(metric: Metric, datatype: DataType) -> Metric:
    """The metric with its raw wire value typed as `datatype`, known from the birth that defined it.

    A metric that carries its own datatype keeps it; one different from `datatype` is an error."""
    if metric.datatype is datatype:
        return metric
    what = _label(metric)
    if metric.datatype is not DataType.UNKNOWN:
        raise SparkplugError(f"{what} is {metric.datatype.label} here but was born {datatype.label}")
    raw = metric.value
    if metric.is_null or raw is None:
        return replace(metric, datatype=datatype, value=None)
    if not isinstance(raw, int | float | str | bytes):  # only decoding gives UNKNOWN metrics their values
        raise SparkplugError(f"{what}: {type(raw).__name__} is not a raw wire value")
    return replace(metric, datatype=datatype, value=_typed_value(datatype, raw, what))


# --- the host application's STATE message


def encode_state(online: bool, timestamp: int) -> bytes:
    """`{"online": bool, "timestamp": ms}`, the Sparkplug 3.0 STATE payload (UTF-8 JSON)."""
    _uint64("STATE timestamp", timestamp)
    return json.dumps({"online": online, "timestamp": timestamp}, separators=(",", ":")).encode()


def decode_state(data: bytes) -> HostState:
    try:
        document = json.loads(data)
    except ValueError:  # UnicodeDecodeError included
        raise SparkplugError("STATE payload is not JSON") from None
    if not isinstance(document, dict):
        raise SparkplugError("STATE payload is not a JSON object")
    online, timestamp = document.get("online"), document.get("timestamp")
    if not isinstance(online, bool):
        raise SparkplugError('STATE payload needs "online": true or false')
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or not 0 <= timestamp <= UINT64_MAX:
        raise SparkplugError('STATE payload needs "timestamp": milliseconds since the Unix epoch')
    return HostState(online, timestamp)
