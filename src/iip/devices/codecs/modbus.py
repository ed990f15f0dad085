"""Modbus values and read plans. Pure: no I/O.

Registers are 16-bit and big-endian within a register; `WordOrder` orders the registers of a
multi-register value (strings included: `little` reverses the string's registers, as pymodbus does).
Engineering value = raw * scale + offset; bits (coils, discrete inputs, `bool` registers) are not scaled.
Conversions use pymodbus's own `convert_from_registers` / `convert_to_registers`, so a device read
here and one read by another pymodbus client agree; only rounding, range checks and string padding
are ours.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.exceptions import ModbusException

from iip.devices.profiles import DataType, ModbusMapping, ModbusTable, WordOrder
from iip.kernel.errors import Invalid

Value: TypeAlias = bool | int | float | str

MAX_READ_REGISTERS = 125  # function codes 3 and 4
MAX_READ_BITS = 2000  # function codes 1 and 2
BIT_TABLES = frozenset({ModbusTable.COIL, ModbusTable.DISCRETE})
WRITABLE_TABLES = frozenset({ModbusTable.HOLDING, ModbusTable.COIL})
FLOAT32_MAX = 3.4028234663852886e38

_PYMODBUS_TYPE = {
    DataType.INT16: ModbusClientMixin.DATATYPE.INT16,
    DataType.UINT16: ModbusClientMixin.DATATYPE.UINT16,
    DataType.INT32: ModbusClientMixin.DATATYPE.INT32,
    DataType.UINT32: ModbusClientMixin.DATATYPE.UINT32,
    DataType.INT64: ModbusClientMixin.DATATYPE.INT64,
    DataType.UINT64: ModbusClientMixin.DATATYPE.UINT64,
    DataType.FLOAT32: ModbusClientMixin.DATATYPE.FLOAT32,
    DataType.FLOAT64: ModbusClientMixin.DATATYPE.FLOAT64,
}

INTEGER_RANGE: dict[DataType, tuple[int, int]] = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT64: (0, 2**64 - 1),
}


class ModbusValueError(Invalid):
    """A value does not fit its register mapping, or registers do not hold a value of the mapping's type."""

    code = "modbus_value_invalid"


def _word_order(mapping: ModbusMapping) -> Literal["big", "little"]:
    return "little" if mapping.word_order is WordOrder.LITTLE else "big"


def _is_identity(mapping: ModbusMapping) -> bool:
    return mapping.scale == 1.0 and mapping.offset == 0.0


def decode(mapping: ModbusMapping, raw: Sequence[int] | Sequence[bool]) -> Value:
    """The engineering value of one mapping from its registers (or its single bit)."""
    expected = max(mapping.register_count, 1)
    if len(raw) != expected:
        raise ModbusValueError(f"{mapping.data_type} at {mapping.address} takes {expected} registers, got {len(raw)}")
    if mapping.table in BIT_TABLES or mapping.data_type is DataType.BOOL:
        return bool(raw[0])
    registers = [int(r) for r in raw]
    if any(not 0 <= r <= 0xFFFF for r in registers):
        raise ModbusValueError(f"register values must be 0..65535, got {registers}")
    if mapping.data_type is DataType.STRING:
        try:
            text = ModbusClientMixin.convert_from_registers(
                registers, ModbusClientMixin.DATATYPE.STRING, word_order=_word_order(mapping)
            )
        except UnicodeDecodeError as err:
            raise ModbusValueError(f"registers at {mapping.address} are not UTF-8 text") from err
        if not isinstance(text, str):
            raise ModbusValueError(f"registers at {mapping.address} do not hold text")
        return text
    number = ModbusClientMixin.convert_from_registers(
        registers, _PYMODBUS_TYPE[mapping.data_type], word_order=_word_order(mapping)
    )
    if not isinstance(number, int | float):
        raise ModbusValueError(f"registers at {mapping.address} do not hold one {mapping.data_type}")
    if _is_identity(mapping):
        return number
    return number * mapping.scale + mapping.offset


def encode(mapping: ModbusMapping, value: Value) -> list[int]:
    """The registers that hold `value` (an engineering value); coils and discrete inputs give `[0]` or `[1]`.

    Scale and offset are inverted, integer types are rounded half away from zero, and a value the
    type cannot hold is refused rather than clipped.
    """
    if mapping.table in BIT_TABLES or mapping.data_type is DataType.BOOL:
        return [int(_as_bool(value))]
    if mapping.data_type is DataType.STRING:
        return _encode_string(mapping, value)
    if isinstance(value, str):
        raise ModbusValueError(f"{mapping.data_type} needs a number, got text {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ModbusValueError(f"{value} cannot be written")
    raw: int | float = value
    if not _is_identity(mapping):
        if mapping.scale == 0:
            raise ModbusValueError("a mapping with scale 0 cannot be written")
        raw = (value - mapping.offset) / mapping.scale
    pymodbus_type = _PYMODBUS_TYPE[mapping.data_type]
    if mapping.data_type in INTEGER_RANGE:
        low, high = INTEGER_RANGE[mapping.data_type]
        whole = _round_half_away(raw)
        if not low <= whole <= high:
            raise ModbusValueError(
                f"{value} is out of range for {mapping.data_type} (raw {whole}, allowed {low}..{high})",
                code="modbus_value_out_of_range",
            )
        raw = whole
    else:
        raw = float(raw)
        if not math.isfinite(raw) or (mapping.data_type is DataType.FLOAT32 and abs(raw) > FLOAT32_MAX):
            raise ModbusValueError(f"{value} is out of range for {mapping.data_type}", code="modbus_value_out_of_range")
    try:
        return ModbusClientMixin.convert_to_registers(raw, pymodbus_type, word_order=_word_order(mapping))
    except (struct.error, OverflowError, ModbusException) as err:  # guarded above; kept so no library error leaks
        raise ModbusValueError(f"{value} cannot be encoded as {mapping.data_type}") from err


def _as_bool(value: Value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in {0, 1}:
        return bool(value)
    raise ModbusValueError(f"a bit takes true/false or 0/1, got {value!r}")


def _round_half_away(number: float) -> int:
    if isinstance(number, int):
        return number
    if not math.isfinite(number):
        raise ModbusValueError(f"{number} cannot be written")
    return int(math.copysign(math.floor(abs(number) + 0.5), number))


def _encode_string(mapping: ModbusMapping, value: Value) -> list[int]:
    if not isinstance(value, str):
        raise ModbusValueError(f"a string mapping needs text, got {value!r}")
    data = value.encode()
    if len(data) > mapping.length * 2:
        raise ModbusValueError(
            f"text of {len(data)} bytes does not fit {mapping.length} registers ({mapping.length * 2} bytes)",
            code="modbus_value_out_of_range",
        )
    if b"\x00" in data:
        raise ModbusValueError("text cannot contain NUL characters (they pad the registers)")
    registers = ModbusClientMixin.convert_to_registers(value, ModbusClientMixin.DATATYPE.STRING) if data else []
    registers += [0] * (mapping.length - len(registers))
    # Pad first, then order: the padding belongs after the text in reading order.
    return registers[::-1] if mapping.word_order is WordOrder.LITTLE else registers


# --------------------------------------------------------------------------- read plans


@dataclass(frozen=True, slots=True)
class PlannedPoint:
    metric: str
    mapping: ModbusMapping


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One Modbus read (function 1, 2, 3 or 4) and the metrics it covers."""

    table: ModbusTable
    address: int
    count: int
    points: tuple[PlannedPoint, ...]

    @property
    def end(self) -> int:
        """First address after the request."""
        return self.address + self.count

    def describe(self) -> str:
        return f"{self.table} {self.address}..{self.end - 1}"


def _span(mapping: ModbusMapping) -> int:
    return max(mapping.register_count, 1)


def plan_reads(
    points: Iterable[tuple[str, ModbusMapping]], *, max_register_gap: int = 8, max_bit_gap: int = 64
) -> list[ReadRequest]:
    """Group points into as few reads as possible: per table, by address, bridging gaps up to the limits.

    A gap is read and thrown away, which is cheaper than another round trip, but some devices refuse
    reads that touch unmapped addresses: the gaps are per device (0 reads only contiguous runs).
    """
    by_table: dict[ModbusTable, list[PlannedPoint]] = {}
    for metric, mapping in points:
        by_table.setdefault(mapping.table, []).append(PlannedPoint(metric, mapping))
    requests: list[ReadRequest] = []
    for table in ModbusTable:
        planned = sorted(by_table.get(table, []), key=lambda p: (p.mapping.address, p.metric))
        bits = table in BIT_TABLES
        limit = MAX_READ_BITS if bits else MAX_READ_REGISTERS
        gap = max_bit_gap if bits else max_register_gap
        group: list[PlannedPoint] = []
        start = end = 0
        for point in planned:
            point_start = point.mapping.address
            point_end = point_start + _span(point.mapping)
            if group and point_start - end <= gap and max(end, point_end) - start <= limit:
                group.append(point)
                end = max(end, point_end)
                continue
            if group:
                requests.append(ReadRequest(table, start, end - start, tuple(group)))
            group, start, end = [point], point_start, point_end
        if group:
            requests.append(ReadRequest(table, start, end - start, tuple(group)))
    return requests


def split_request(request: ReadRequest) -> list[ReadRequest]:
    """One read per point: the fallback when a device refuses a request that bridges a gap."""
    return [ReadRequest(request.table, p.mapping.address, _span(p.mapping), (p,)) for p in request.points]


def slice_values(
    request: ReadRequest, values: Sequence[int] | Sequence[bool]
) -> Iterator[tuple[PlannedPoint, Sequence[int] | Sequence[bool]]]:
    """Each point of a request with its own registers (or bit) cut out of the response."""
    if len(values) < request.count:
        raise ModbusValueError(f"{request.describe()}: expected {request.count} values, got {len(values)}")
    for point in request.points:
        first = point.mapping.address - request.address
        yield point, values[first : first + _span(point.mapping)]
