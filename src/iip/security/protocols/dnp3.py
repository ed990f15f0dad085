"""DNP3 (IEEE 1815) over TCP or UDP: link frames with their CRCs, transport reassembly, and the
application layer (function code, IIN bits, object headers, point values of the common groups).

One record per application fragment, with the fields of CISA ICSNPP's `dnp3` and `dnp3_objects`
logs: `function`/`function_name`, `fields["iin"]` (and the names of the bits set), and per object
header `fields["objects"]` with group, variation, qualifier, range or count and, for the common
groups (binary and analog inputs and outputs, CROB g12v1, counters, time g50), the points read.
File, authentication and other groups are listed by header without values. A link frame that
carries no user data (reset, link status...) is a record of its own, named `LINK_...`.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from iip.security.protocols.base import NOWHERE, Direction, Endpoint, IcsMessage, IcsProtocol
from iip.security.protocols.framing import FrameSplitter

START = b"\x05\x64"
HEADER_LENGTH = 10  # start(2) length(1) control(1) destination(2) source(2) CRC(2)
BLOCK = 16
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA6BC if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """DNP3's CRC-16 (polynomial 0x3D65, reflected, complemented)."""
    crc = 0
    table = _CRC_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return ~crc & 0xFFFF


def _crc_ok(block: bytes) -> bool:
    return crc16(block[:-2]) == block[-2] | block[-1] << 8


def frame_size(length_field: int) -> int:
    """Bytes on the wire of a link frame whose length field is `length_field` (>= 5)."""
    data = length_field - 5
    return HEADER_LENGTH + data + 2 * ((data + BLOCK - 1) // BLOCK)


def measure_frame(buffer: bytes, position: int) -> int | None:
    """Length of the link frame at `position`: 0 unless it starts 05 64 with a good header CRC."""
    if len(buffer) - position < HEADER_LENGTH:
        if buffer[position] != 0x05 or (len(buffer) - position > 1 and buffer[position + 1] != 0x64):
            return 0
        return None
    if buffer[position] != 0x05 or buffer[position + 1] != 0x64 or buffer[position + 2] < 5:
        return 0
    if not _crc_ok(buffer[position : position + HEADER_LENGTH]):
        return 0
    return frame_size(buffer[position + 2])


PRIMARY_LINK_FUNCTIONS = {
    0: "RESET_LINK_STATES",
    2: "TEST_LINK_STATES",
    3: "CONFIRMED_USER_DATA",
    4: "UNCONFIRMED_USER_DATA",
    9: "REQUEST_LINK_STATUS",
}
SECONDARY_LINK_FUNCTIONS = {0: "ACK", 1: "NACK", 11: "LINK_STATUS", 15: "NOT_SUPPORTED"}

FUNCTION_NAMES: dict[int, str] = {
    0: "CONFIRM",
    1: "READ",
    2: "WRITE",
    3: "SELECT",
    4: "OPERATE",
    5: "DIRECT_OPERATE",
    6: "DIRECT_OPERATE_NR",
    7: "IMMED_FREEZE",
    8: "IMMED_FREEZE_NR",
    9: "FREEZE_CLEAR",
    10: "FREEZE_CLEAR_NR",
    11: "FREEZE_AT_TIME",
    12: "FREEZE_AT_TIME_NR",
    13: "COLD_RESTART",
    14: "WARM_RESTART",
    15: "INITIALIZE_DATA",
    16: "INITIALIZE_APPL",
    17: "START_APPL",
    18: "STOP_APPL",
    19: "SAVE_CONFIG",
    20: "ENABLE_UNSOLICITED",
    21: "DISABLE_UNSOLICITED",
    22: "ASSIGN_CLASS",
    23: "DELAY_MEASURE",
    24: "RECORD_CURRENT_TIME",
    25: "OPEN_FILE",
    26: "CLOSE_FILE",
    27: "DELETE_FILE",
    28: "GET_FILE_INFO",
    29: "AUTHENTICATE_FILE",
    30: "ABORT_FILE",
    31: "ACTIVATE_CONFIG",
    32: "AUTHENTICATE_REQ",
    33: "AUTHENTICATE_ERR",
    129: "RESPONSE",
    130: "UNSOLICITED_RESPONSE",
    131: "AUTHENTICATE_RESP",
}

IIN_BITS = (  # bit 15 (IIN1.7) down to bit 0 (IIN2.0)
    "DEVICE_RESTART",
    "DEVICE_TROUBLE",
    "LOCAL_CONTROL",
    "NEED_TIME",
    "CLASS_3_EVENTS",
    "CLASS_2_EVENTS",
    "CLASS_1_EVENTS",
    "ALL_STATIONS",
    "RESERVED_1",
    "RESERVED_2",
    "CONFIG_CORRUPT",
    "ALREADY_EXECUTING",
    "EVENT_BUFFER_OVERFLOW",
    "PARAMETER_ERROR",
    "OBJECT_UNKNOWN",
    "NO_FUNC_CODE_SUPPORT",
)

CONTROL_STATUS = {
    0: "SUCCESS",
    1: "TIMEOUT",
    2: "NO_SELECT",
    3: "FORMAT_ERROR",
    4: "NOT_SUPPORTED",
    5: "ALREADY_ACTIVE",
    6: "HARDWARE_ERROR",
    7: "LOCAL",
    8: "TOO_MANY_OBJS",
    9: "NOT_AUTHORIZED",
    10: "AUTOMATION_INHIBIT",
    11: "PROCESSING_LIMITED",
    12: "OUT_OF_RANGE",
}
OPERATION_TYPES = {0: "NUL", 1: "PULSE_ON", 2: "PULSE_OFF", 3: "LATCH_ON", 4: "LATCH_OFF"}
TRIP_CLOSE = {0: "NUL", 1: "CLOSE", 2: "TRIP", 3: "RESERVED"}

# Functions whose request object headers carry no object data.
HEADER_ONLY_FUNCTIONS = frozenset({1, 7, 8, 9, 10, 20, 21, 22})


class Malformed(ValueError):
    """A fragment that breaks the protocol; its text is the record's `malformed` reason."""


# --- point values -----------------------------------------------------------------------------

Point = dict[str, Any]
ValueReader = Callable[[bytes], Point]


def _time48(data: bytes) -> str:
    millis = int.from_bytes(data[:6], "little")
    try:
        return (_EPOCH + dt.timedelta(milliseconds=millis)).isoformat()
    except OverflowError:
        return str(millis)


def _flagged_state(data: bytes) -> Point:
    return {"value": bool(data[0] & 0x80), "flags": data[0]}


def _flagged_state_time(data: bytes) -> Point:
    return {"value": bool(data[0] & 0x80), "flags": data[0], "time": _time48(data[1:7])}


def _flagged_state_relative(data: bytes) -> Point:
    return {"value": bool(data[0] & 0x80), "flags": data[0], "relative_time_ms": int.from_bytes(data[1:3], "little")}


def _double_bit(data: bytes) -> Point:
    return {"value": data[0] >> 6 & 3, "flags": data[0]}


def _double_bit_time(data: bytes) -> Point:
    return {"value": data[0] >> 6 & 3, "flags": data[0], "time": _time48(data[1:7])}


def _crob(data: bytes) -> Point:
    code, count, on_time, off_time, status = struct.unpack("<BBIIB", data)
    return {
        "value": OPERATION_TYPES.get(code & 0x0F, f"UNKNOWN_{code & 0x0F}"),
        "control_code": code,
        "operation_type": OPERATION_TYPES.get(code & 0x0F, f"UNKNOWN_{code & 0x0F}"),
        "trip_control_code": TRIP_CLOSE[code >> 6],
        "queue": bool(code & 0x10),
        "clear": bool(code & 0x20),
        "execute_count": count,
        "on_time": on_time,
        "off_time": off_time,
        "status_code": CONTROL_STATUS.get(status & 0x7F, f"UNKNOWN_{status & 0x7F}"),
    }


def _number(fmt: str, *, flags: bool, time: bool = False, status: bool = False) -> ValueReader:
    """A point of `[flags] value [time48]` or `value status` (fmt is the value's struct code)."""
    size = struct.calcsize("<" + fmt)
    start = 1 if flags else 0

    def read(data: bytes) -> Point:
        (value,) = struct.unpack_from("<" + fmt, data, start)
        point: Point = {"value": value}
        if flags:
            point["flags"] = data[0]
        if time:
            point["time"] = _time48(data[start + size : start + size + 6])
        if status:
            point["status_code"] = CONTROL_STATUS.get(data[size] & 0x7F, f"UNKNOWN_{data[size] & 0x7F}")
        return point

    return read


def _time_and_date(data: bytes) -> Point:
    point: Point = {"value": _time48(data[:6])}
    if len(data) >= 10:
        point["interval"] = int.from_bytes(data[6:10], "little")
    return point


@dataclass(frozen=True, slots=True)
class ObjectType:
    size: int  # bytes per object, or bits when `bits` (packed formats)
    read: ValueReader | None = None
    bits: bool = False


def _fixed(size: int, read: ValueReader | None = None) -> ObjectType:
    return ObjectType(size, read)


def _packed(bits: int) -> ObjectType:
    return ObjectType(bits, None, bits=True)


def _numbers(table: dict[int, tuple[str, bool, bool]]) -> dict[int, ObjectType]:
    """variation -> (struct code, flagged, timed) as object types."""
    types = {}
    for variation, (fmt, flags, time) in table.items():
        size = struct.calcsize("<" + fmt) + (1 if flags else 0) + (6 if time else 0)
        types[variation] = _fixed(size, _number(fmt, flags=flags, time=time))
    return types


_COUNTER = {1: ("I", True, False), 2: ("H", True, False), 3: ("I", True, False), 4: ("H", True, False)}
_COUNTER |= {5: ("I", False, False), 6: ("H", False, False), 7: ("I", False, False), 8: ("H", False, False)}
_FROZEN_COUNTER = {1: ("I", True, False), 2: ("H", True, False), 3: ("I", True, False), 4: ("H", True, False)}
_FROZEN_COUNTER |= {5: ("I", True, True), 6: ("H", True, True), 7: ("I", True, True), 8: ("H", True, True)}
_FROZEN_COUNTER |= {9: ("I", False, False), 10: ("H", False, False), 11: ("I", False, False), 12: ("H", False, False)}
_COUNTER_EVENT = {1: ("I", True, False), 2: ("H", True, False), 3: ("I", True, False), 4: ("H", True, False)}
_COUNTER_EVENT |= {5: ("I", True, True), 6: ("H", True, True), 7: ("I", True, True), 8: ("H", True, True)}
_ANALOG_INPUT = {1: ("i", True, False), 2: ("h", True, False), 3: ("i", False, False), 4: ("h", False, False)}
_ANALOG_INPUT |= {5: ("f", True, False), 6: ("d", True, False)}
_FROZEN_ANALOG = {1: ("i", True, False), 2: ("h", True, False), 3: ("i", True, True), 4: ("h", True, True)}
_FROZEN_ANALOG |= {5: ("i", False, False), 6: ("h", False, False), 7: ("f", True, False), 8: ("d", True, False)}
_ANALOG_EVENT = {1: ("i", True, False), 2: ("h", True, False), 3: ("i", True, True), 4: ("h", True, True)}
_ANALOG_EVENT |= {5: ("f", True, False), 6: ("d", True, False), 7: ("f", True, True), 8: ("d", True, True)}
_ANALOG_OUTPUT_STATUS = {1: ("i", True, False), 2: ("h", True, False), 3: ("f", True, False), 4: ("d", True, False)}


def _output_blocks() -> dict[int, ObjectType]:
    types = {}
    for variation, fmt in {1: "i", 2: "h", 3: "f", 4: "d"}.items():
        types[variation] = _fixed(struct.calcsize("<" + fmt) + 1, _number(fmt, flags=False, status=True))
    return types


OBJECT_TYPES: dict[int, dict[int, ObjectType]] = {
    1: {1: _packed(1), 2: _fixed(1, _flagged_state)},
    2: {1: _fixed(1, _flagged_state), 2: _fixed(7, _flagged_state_time), 3: _fixed(3, _flagged_state_relative)},
    3: {1: _packed(2), 2: _fixed(1, _double_bit)},
    4: {1: _fixed(1, _double_bit), 2: _fixed(7, _double_bit_time), 3: _fixed(3, _double_bit)},
    10: {1: _packed(1), 2: _fixed(1, _flagged_state)},
    11: {1: _fixed(1, _flagged_state), 2: _fixed(7, _flagged_state_time)},
    12: {1: _fixed(11, _crob), 2: _fixed(11, _crob), 3: _packed(1)},
    13: {1: _fixed(1, _flagged_state), 2: _fixed(7, _flagged_state_time)},
    20: _numbers(_COUNTER),
    21: _numbers(_FROZEN_COUNTER),
    22: _numbers(_COUNTER_EVENT),
    23: _numbers(_COUNTER_EVENT),
    30: _numbers(_ANALOG_INPUT),
    31: _numbers(_FROZEN_ANALOG),
    32: _numbers(_ANALOG_EVENT),
    33: _numbers(_ANALOG_EVENT),
    34: _numbers({1: ("H", False, False), 2: ("I", False, False), 3: ("f", False, False)}),
    40: _numbers(_ANALOG_OUTPUT_STATUS),
    41: _output_blocks(),
    42: _numbers(_ANALOG_EVENT),
    43: _numbers(_ANALOG_EVENT),
    50: {1: _fixed(6, _time_and_date), 2: _fixed(10, _time_and_date), 3: _fixed(6, _time_and_date)},
    51: {1: _fixed(6, _time_and_date), 2: _fixed(6, _time_and_date)},
    52: {1: _fixed(2, _number("H", flags=False)), 2: _fixed(2, _number("H", flags=False))},
    80: {1: _packed(1)},
}
OBJECT_TYPES[50][4] = _fixed(11, _time_and_date)

# Groups whose variation is the length in bytes of each object (octet strings, virtual terminal).
LENGTH_IS_VARIATION = frozenset({110, 111, 112, 113})


@dataclass(slots=True)
class Header:
    group: int
    variation: int
    qualifier: int
    range_low: int | None = None
    range_high: int | None = None
    count: int = 0
    indexes: list[int] | None = None  # from index prefixes, when the qualifier has them

    def as_fields(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "variation": self.variation,
            "object_type": f"g{self.group}v{self.variation}",
            "qualifier": self.qualifier,
            "range_low": self.range_low,
            "range_high": self.range_high,
            "count": self.count,
        }


_RANGE_FORMATS = {0: "<BB", 1: "<HH", 2: "<II", 3: "<BB", 4: "<HH", 5: "<II"}
_COUNT_FORMATS = {7: "<B", 8: "<H", 9: "<I", 0x0B: "<B"}
_PREFIX_SIZES = {0: 0, 1: 1, 2: 2, 3: 4, 4: 1, 5: 2, 6: 4}


class _Cursor:
    __slots__ = ("data", "offset")

    def __init__(self, data: bytes, offset: int) -> None:
        self.data, self.offset = data, offset

    def take(self, size: int) -> bytes:
        if self.offset + size > len(self.data):
            raise Malformed("object data truncated")
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def unpack(self, fmt: str) -> tuple[int, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    @property
    def remaining(self) -> int:
        return len(self.data) - self.offset


def _read_header(cursor: _Cursor) -> Header:
    group, variation, qualifier = cursor.unpack("<BBB")
    header = Header(group, variation, qualifier)
    code = qualifier & 0x0F
    if code in _RANGE_FORMATS:
        header.range_low, header.range_high = cursor.unpack(_RANGE_FORMATS[code])
        if header.range_high < header.range_low:
            raise Malformed("object range stop before start")
        header.count = header.range_high - header.range_low + 1
    elif code in _COUNT_FORMATS:
        (header.count,) = cursor.unpack(_COUNT_FORMATS[code])
    elif code != 6:
        raise Malformed("unknown range specifier code")
    if (qualifier >> 4 & 7) not in _PREFIX_SIZES:
        raise Malformed("unknown object prefix code")
    return header


def _object_type(header: Header) -> ObjectType | None:
    if header.group in LENGTH_IS_VARIATION:
        return _fixed(header.variation)
    return OBJECT_TYPES.get(header.group, {}).get(header.variation)


def _read_objects(cursor: _Cursor, header: Header, *, with_data: bool) -> list[Point] | None:
    """The header's objects; None when their size is unknown (the rest of the fragment is unreadable).

    Without data (a READ's headers) only index prefixes and size-prefixed (free-format) objects
    take bytes.
    """
    prefix_code = header.qualifier >> 4 & 7
    prefix_size = _PREFIX_SIZES[prefix_code]
    size_prefix = prefix_code >= 4
    object_type = _object_type(header)
    if not with_data and not prefix_size:
        return []
    if with_data and header.group == 0 and header.variation < 254 and not size_prefix:
        return _device_attributes(cursor, header)
    if with_data and object_type is None and not size_prefix:
        return None
    if with_data and object_type is not None and object_type.bits and not prefix_size:
        return _packed_points(cursor, header, object_type.size)
    fixed = 0
    if with_data and object_type is not None and not size_prefix:
        fixed = (object_type.size + 7) // 8 if object_type.bits else object_type.size
    if header.count * max(prefix_size + fixed, 1) > cursor.remaining + (0 if prefix_size + fixed else 4096):
        raise Malformed("object count beyond fragment")
    points = []
    for position in range(header.count):
        prefix = int.from_bytes(cursor.take(prefix_size), "little") if prefix_size else None
        data = cursor.take(prefix or 0) if size_prefix else cursor.take(fixed)
        read = object_type.read if object_type is not None and with_data else None
        if read is not None and ((size_prefix and len(data) != object_type.size) or object_type.bits):  # type: ignore[union-attr]
            read = None
        index = prefix if prefix is not None and not size_prefix else (header.range_low or 0) + position
        point: Point = {"index": index}
        if read is not None:
            point.update(read(data))
        elif header.group in LENGTH_IS_VARIATION and with_data:
            point["value"] = data.hex()
        points.append(point)
    return points


def _packed_points(cursor: _Cursor, header: Header, bits: int) -> list[Point]:
    data = cursor.take((header.count * bits + 7) // 8)
    start = header.range_low or 0
    mask = (1 << bits) - 1
    points = []
    for position in range(header.count):
        bit = position * bits
        value = data[bit // 8] >> (bit % 8) & mask
        points.append({"index": start + position, "value": bool(value) if bits == 1 else value})
    return points


def _device_attributes(cursor: _Cursor, header: Header) -> list[Point]:
    points = []
    for position in range(header.count):
        data_type, length = cursor.unpack("<BB")
        value = cursor.take(length)
        text = value.decode("latin-1") if data_type == 1 else value.hex()
        points.append({"index": (header.range_low or 0) + position, "data_type": data_type, "value": text})
    return points


def _read_object_headers(data: bytes, offset: int, *, with_data: bool, msg: IcsMessage) -> list[dict[str, Any]]:
    cursor = _Cursor(data, offset)
    objects: list[dict[str, Any]] = []
    while cursor.remaining:
        header = _read_header(cursor)
        entry = header.as_fields()
        objects.append(entry)
        if header.group == 60:
            continue
        points = _read_objects(cursor, header, with_data=with_data)
        if points is None:
            msg.fields["objects_unread"] = f"object data of g{header.group}v{header.variation} not decoded"
            break
        if points and ("value" in points[0] or header.group == 0):
            entry["points"] = points
        elif points and not with_data:
            entry["indexes"] = [point["index"] for point in points]
    return objects


# --- the application layer --------------------------------------------------------------------


def decode_fragment(fragment: bytes, msg: IcsMessage) -> None:
    """Fills `msg` from one reassembled application fragment; raises `Malformed`."""
    if len(fragment) < 2:
        raise Malformed("application fragment shorter than 2 bytes")
    control, function = fragment[0], fragment[1]
    msg.function = function
    msg.function_name = FUNCTION_NAMES.get(function, f"UNKNOWN_{function}")
    msg.transaction = control & 0x0F
    msg.fields.update(
        application_control=control,
        fir=bool(control & 0x80),
        fin=bool(control & 0x40),
        con=bool(control & 0x20),
        uns=bool(control & 0x10),
    )
    response = function >= 129
    offset = 2
    if response:
        if len(fragment) < 4:
            raise Malformed("response without IIN")
        iin = fragment[2] << 8 | fragment[3]
        msg.fields["iin"] = iin
        msg.fields["iin_flags"] = [name for bit, name in enumerate(IIN_BITS) if iin >> (15 - bit) & 1]
        offset = 4
        msg.direction = Direction.UNSOLICITED if function == 130 else Direction.RESPONSE
    else:
        msg.direction = Direction.REQUEST
    with_data = response or function not in HEADER_ONLY_FUNCTIONS
    objects = _read_object_headers(fragment, offset, with_data=with_data, msg=msg)
    msg.fields["objects"] = objects
    msg.quantity = sum(entry["count"] for entry in objects)
    points = [point for entry in objects for point in entry.get("points", ())]
    msg.values = [point.get("value") for point in points]
    if points:
        msg.address = points[0]["index"]
    elif objects:
        msg.address = objects[0]["range_low"]


@dataclass(slots=True)
class LinkFrame:
    control: int
    destination: int
    source: int
    user_data: bytes


def read_link_frame(frame: bytes) -> LinkFrame:
    """Checks every CRC of one link frame and returns its header and user data; raises `Malformed`."""
    if len(frame) < HEADER_LENGTH or frame[:2] != START:
        raise Malformed("not a DNP3 link frame")
    if not _crc_ok(frame[:HEADER_LENGTH]):
        raise Malformed("link header CRC mismatch")
    if frame[2] < 5 or len(frame) != frame_size(frame[2]):
        raise Malformed("link length does not match frame")
    control, destination, source = struct.unpack_from("<BHH", frame, 3)
    chunks = []
    position = HEADER_LENGTH
    while position < len(frame):
        block = frame[position : position + BLOCK + 2]
        if not _crc_ok(block):
            raise Malformed("link data block CRC mismatch")
        chunks.append(block[:-2])
        position += len(block)
    return LinkFrame(control, destination, source, b"".join(chunks))


def _link_function_name(control: int) -> str:
    names = PRIMARY_LINK_FUNCTIONS if control & 0x40 else SECONDARY_LINK_FUNCTIONS
    return names.get(control & 0x0F, f"UNKNOWN_{control & 0x0F}")


def _user_data(control: int) -> bool:
    return bool(control & 0x40) and control & 0x0F in (3, 4)


def decode_frame(
    frame: bytes,
    *,
    to_server: bool,
    source: Endpoint = NOWHERE,
    destination: Endpoint = NOWHERE,
    time: dt.datetime | None = None,
    frame_number: int | None = None,
) -> IcsMessage:
    """One link frame holding a whole application fragment (FIR and FIN) as a record; never raises."""
    decoder = Dnp3StreamDecoder(source, destination, to_server=to_server)
    messages = decoder.feed(frame, time=time, frame=frame_number) + decoder.finish(time=time, frame=frame_number)
    if messages:
        return messages[0]
    return IcsMessage(
        protocol=IcsProtocol.DNP3,
        direction=Direction.REQUEST if to_server else Direction.RESPONSE,
        source=source,
        destination=destination,
        time=time,
        frame=frame_number,
        raw=bytes(frame),
        malformed="transport segment does not finish a fragment",
    )


class Dnp3StreamDecoder:
    """One direction of a DNP3 TCP stream (or a UDP flow): link frames, transport, application."""

    MAX_FRAGMENT = 65536

    def __init__(self, source: Endpoint, destination: Endpoint, *, to_server: bool) -> None:
        self.source, self.destination, self.to_server = source, destination, to_server
        self._splitter = FrameSplitter(measure_frame)
        # (link source, link destination) -> (next transport sequence, fragment so far, raw frames)
        self._fragments: dict[tuple[int, int], tuple[int, bytearray, bytearray]] = {}

    def feed(self, data: bytes, *, time: dt.datetime | None = None, frame: int | None = None) -> list[IcsMessage]:
        messages: list[IcsMessage] = []
        for is_frame, chunk in self._splitter.push(data):
            if not is_frame:
                messages.append(self._record(chunk, time, frame, malformed=_garbage_reason(chunk)))
                continue
            msg = self._link_frame(chunk, time, frame)
            if msg is not None:
                messages.append(msg)
        return messages

    def finish(self, *, time: dt.datetime | None = None, frame: int | None = None) -> list[IcsMessage]:
        """The end of the stream: an unfinished frame left over becomes a malformed record."""
        rest = self._splitter.take_rest()
        if not rest:
            return []
        reason = "stream ended inside a frame" if measure_frame(rest, 0) != 0 else _garbage_reason(rest)
        return [self._record(rest, time, frame, malformed=reason)]

    def _record(self, raw: bytes, time: dt.datetime | None, frame: int | None, *, malformed: str = "") -> IcsMessage:
        return IcsMessage(
            protocol=IcsProtocol.DNP3,
            direction=Direction.REQUEST if self.to_server else Direction.RESPONSE,
            source=self.source,
            destination=self.destination,
            time=time,
            frame=frame,
            raw=raw,
            malformed=malformed,
        )

    def _link_frame(self, chunk: bytes, time: dt.datetime | None, frame: int | None) -> IcsMessage | None:
        try:
            link = read_link_frame(chunk)
        except Malformed as err:
            return self._record(chunk, time, frame, malformed=str(err))
        link_fields: dict[str, Any] = {
            "link_control": link.control,
            "link_function": _link_function_name(link.control),
            "link_source": link.source,
            "link_destination": link.destination,
            "from_master": bool(link.control & 0x80),
        }
        if not _user_data(link.control) or not link.user_data:
            msg = self._record(chunk, time, frame)
            msg.unit, msg.function_name = link.destination, "LINK_" + link_fields["link_function"]
            msg.direction = Direction.REQUEST if link.control & 0x80 else Direction.RESPONSE
            msg.fields.update(link_fields)
            return msg
        return self._transport(link, chunk, link_fields, time, frame)

    def _transport(
        self, link: LinkFrame, chunk: bytes, link_fields: dict[str, Any], time: dt.datetime | None, frame: int | None
    ) -> IcsMessage | None:
        key = (link.source, link.destination)
        header, payload = link.user_data[0], link.user_data[1:]
        sequence = header & 0x3F
        if header & 0x40:  # FIR: a new fragment starts, whatever was pending
            self._fragments[key] = (sequence, bytearray(), bytearray())
        pending = self._fragments.get(key)
        if pending is None or pending[0] != sequence:
            self._fragments.pop(key, None)
            return self._record(chunk, time, frame, malformed="transport segment out of sequence")
        _, fragment, raw = pending
        fragment += payload
        raw += chunk
        if len(fragment) > self.MAX_FRAGMENT:
            self._fragments.pop(key, None)
            return self._record(bytes(raw), time, frame, malformed="application fragment too long")
        if not header & 0x80:  # not FIN: wait for the next segment
            self._fragments[key] = ((sequence + 1) & 0x3F, fragment, raw)
            return None
        del self._fragments[key]
        msg = self._record(bytes(raw), time, frame)
        msg.unit = link.destination
        msg.fields.update(link_fields)
        try:
            decode_fragment(bytes(fragment), msg)
        except (Malformed, struct.error, IndexError, ValueError, KeyError) as err:
            msg.malformed = str(err) if isinstance(err, Malformed) else "object data truncated"
        return msg


def _garbage_reason(chunk: bytes) -> str:
    if chunk[:2] == START and len(chunk) >= HEADER_LENGTH:
        return "link header CRC mismatch"
    return "bytes that are not a DNP3 link frame"
