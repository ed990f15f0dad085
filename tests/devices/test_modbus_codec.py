"""The Modbus value codec and read planner: pure, no I/O."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iip.devices.codecs.modbus import (
    INTEGER_RANGE,
    MAX_READ_BITS,
    MAX_READ_REGISTERS,
    ModbusValueError,
    decode,
    encode,
    plan_reads,
    slice_values,
    split_request,
)
from iip.devices.profiles import DataType, ModbusMapping, ModbusTable, WordOrder

BIG, LITTLE = WordOrder.BIG, WordOrder.LITTLE
STRUCT_CODE = {
    DataType.INT16: "h",
    DataType.UINT16: "H",
    DataType.INT32: "i",
    DataType.UINT32: "I",
    DataType.INT64: "q",
    DataType.UINT64: "Q",
    DataType.FLOAT32: "f",
    DataType.FLOAT64: "d",
}


def registers_of(data_type: DataType, value: float, order: WordOrder = BIG) -> list[int]:
    """An independent oracle: the big-endian bytes of the value, cut into registers, words ordered."""
    packed = struct.pack(">" + STRUCT_CODE[data_type], value)
    registers = [int.from_bytes(packed[i : i + 2], "big") for i in range(0, len(packed), 2)]
    return registers[::-1] if order is LITTLE else registers


def mapping(data_type: DataType, order: WordOrder = BIG, **extra: object) -> ModbusMapping:
    return ModbusMapping.model_validate({"address": 10, "data_type": data_type, "word_order": order, **extra})


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("data_type", "order", "registers", "value"),
    [
        (DataType.INT16, BIG, [0xFFFF], -1),
        (DataType.UINT16, BIG, [0xFFFF], 65535),
        (DataType.INT32, BIG, [0x1234, 0x5678], 0x12345678),
        (DataType.INT32, LITTLE, [0x5678, 0x1234], 0x12345678),
        (DataType.INT32, BIG, [0xFFFF, 0xFFFE], -2),
        (DataType.UINT32, LITTLE, [0x0001, 0x8000], 0x80000001),
        (DataType.INT64, BIG, [0x0102, 0x0304, 0x0506, 0x0708], 0x0102030405060708),
        (DataType.INT64, LITTLE, [0x0708, 0x0506, 0x0304, 0x0102], 0x0102030405060708),
        (DataType.UINT64, BIG, [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], 2**64 - 1),
        (DataType.FLOAT32, BIG, [0x3F80, 0x0000], 1.0),
        (DataType.FLOAT32, LITTLE, [0x0000, 0x3F80], 1.0),
        (DataType.FLOAT32, BIG, [0xC148, 0x0000], -12.5),
        (DataType.FLOAT64, BIG, [0x4009, 0x21FB, 0x5444, 0x2D18], math.pi),
        (DataType.FLOAT64, LITTLE, [0x2D18, 0x5444, 0x21FB, 0x4009], math.pi),
    ],
)
def test_known_register_layouts(data_type: DataType, order: WordOrder, registers: list[int], value: float) -> None:
    m = mapping(data_type, order)
    assert decode(m, registers) == value
    assert encode(m, value) == registers


@pytest.mark.parametrize("order", [BIG, LITTLE])
@pytest.mark.parametrize(
    ("data_type", "value"),
    [
        (DataType.INT16, -1234),
        (DataType.UINT16, 54321),
        (DataType.INT32, -123_456_789),
        (DataType.UINT32, 3_000_000_000),
        (DataType.INT64, -(2**62) + 7),
        (DataType.UINT64, 2**63 + 11),
        (DataType.FLOAT32, 21.5),
        (DataType.FLOAT64, -1e300),
    ],
)
def test_every_numeric_type_round_trips_against_struct(data_type: DataType, order: WordOrder, value: float) -> None:
    m = mapping(data_type, order)
    expected = registers_of(data_type, value, order)
    assert encode(m, value) == expected
    assert decode(m, expected) == value


def test_64_bit_integers_keep_full_precision() -> None:
    m = mapping(DataType.UINT64)
    value = 2**64 - 3  # not representable as a float
    decoded = decode(m, encode(m, value))
    assert isinstance(decoded, int)
    assert decoded == value


@pytest.mark.parametrize(
    ("order", "registers"),
    [(BIG, [0x4142, 0x4300, 0x0000]), (LITTLE, [0x0000, 0x4300, 0x4142])],
)
def test_strings_pad_with_nul_and_follow_word_order(order: WordOrder, registers: list[int]) -> None:
    m = mapping(DataType.STRING, order, length=3)
    assert encode(m, "ABC") == registers
    assert decode(m, registers) == "ABC"
    assert encode(m, "") == [0, 0, 0]
    assert decode(m, [0, 0, 0]) == ""


def test_strings_are_utf8() -> None:
    m = mapping(DataType.STRING, length=4)
    assert decode(m, encode(m, "泵-1")) == "泵-1"


def test_string_errors() -> None:
    m = mapping(DataType.STRING, length=2)
    with pytest.raises(ModbusValueError, match="does not fit 2 registers"):
        encode(m, "ABCDE")
    with pytest.raises(ModbusValueError, match="needs text"):
        encode(m, 12)
    with pytest.raises(ModbusValueError, match="NUL"):
        encode(m, "A\x00B")
    with pytest.raises(ModbusValueError, match="not UTF-8"):
        decode(m, [0xFFFE, 0x0000])


def test_scale_and_offset_apply_on_read_and_invert_on_write() -> None:
    m = mapping(DataType.INT16, scale=0.1, offset=-40.0)
    assert decode(m, [0x00D7]) == pytest.approx(215 * 0.1 - 40)
    assert encode(m, -18.5) == [215]
    assert encode(m, -40.0) == [0]
    assert encode(m, -45.0) == registers_of(DataType.INT16, -50)  # negative raw values


def test_integer_writes_round_half_away_from_zero() -> None:
    m = mapping(DataType.INT16)
    assert encode(m, 2.5) == [3]
    assert encode(m, -2.5) == registers_of(DataType.INT16, -3)
    assert encode(m, 2.4999) == [2]
    scaled = mapping(DataType.UINT16, scale=0.1)
    assert encode(scaled, 21.5) == [215]  # 21.5 / 0.1 is 214.99999999999997 in floating point


@pytest.mark.parametrize(
    ("m", "value"),
    [
        (mapping(DataType.UINT16), 65536),
        (mapping(DataType.UINT16), -1),
        (mapping(DataType.INT16), 32767.5),  # rounds to 32768
        (mapping(DataType.INT16, scale=0.1), 5000),  # raw 50000
        (mapping(DataType.UINT32, offset=100), 50),  # raw -50
        (mapping(DataType.INT64), 2**63),
        (mapping(DataType.FLOAT32), 1e39),
        (mapping(DataType.FLOAT64), math.inf),
        (mapping(DataType.INT32), math.nan),
    ],
)
def test_values_a_type_cannot_hold_are_refused(m: ModbusMapping, value: float) -> None:
    with pytest.raises(ModbusValueError) as caught:
        encode(m, value)
    assert str(value) in caught.value.message or "cannot be written" in caught.value.message


def test_out_of_range_error_names_the_range() -> None:
    with pytest.raises(ModbusValueError, match=r"out of range for uint16 \(raw 70000, allowed 0\.\.65535\)") as caught:
        encode(mapping(DataType.UINT16), 70000)
    assert caught.value.instance_code == "modbus_value_out_of_range"


def test_numbers_refuse_text_and_zero_scale_cannot_be_written() -> None:
    with pytest.raises(ModbusValueError, match="needs a number"):
        encode(mapping(DataType.FLOAT32), "12")
    with pytest.raises(ModbusValueError, match="scale 0"):
        encode(mapping(DataType.FLOAT32, scale=0.0), 1.0)


def test_bits() -> None:
    coil = ModbusMapping(table=ModbusTable.COIL, address=3, data_type=DataType.BOOL)
    assert decode(coil, [True]) is True
    assert decode(coil, [False]) is False
    assert encode(coil, True) == [1]
    assert encode(coil, 0) == [0]
    flag = mapping(DataType.BOOL)
    assert decode(flag, [0x0100]) is True  # any non-zero register is set
    assert decode(flag, [0]) is False
    with pytest.raises(ModbusValueError, match="true/false or 0/1"):
        encode(coil, 2)
    with pytest.raises(ModbusValueError, match="true/false or 0/1"):
        encode(coil, "on")


def test_bits_ignore_scale() -> None:
    flag = mapping(DataType.BOOL, scale=10.0, offset=1.0)
    assert decode(flag, [1]) is True


def test_decode_checks_the_register_count() -> None:
    with pytest.raises(ModbusValueError, match="takes 2 registers, got 1"):
        decode(mapping(DataType.FLOAT32), [1])
    with pytest.raises(ModbusValueError, match=r"0\.\.65535"):
        decode(mapping(DataType.UINT16), [70000])


@given(st.integers(min_value=-(2**31), max_value=2**31 - 1), st.sampled_from([BIG, LITTLE]))
def test_int32_round_trip_property(value: int, order: WordOrder) -> None:
    m = mapping(DataType.INT32, order)
    assert decode(m, encode(m, value)) == value


@given(st.floats(width=32, allow_nan=False, allow_infinity=False), st.sampled_from([BIG, LITTLE]))
def test_float32_round_trip_property(value: float, order: WordOrder) -> None:
    m = mapping(DataType.FLOAT32, order)
    assert decode(m, encode(m, value)) == value


@given(
    st.sampled_from(sorted(INTEGER_RANGE)),
    st.integers(min_value=-(2**64), max_value=2**65),
    st.sampled_from([BIG, LITTLE]),
)
def test_integer_writes_succeed_exactly_within_range(data_type: DataType, value: int, order: WordOrder) -> None:
    m = mapping(data_type, order)
    low, high = INTEGER_RANGE[data_type]
    if low <= value <= high:
        assert decode(m, encode(m, value)) == value
    else:
        with pytest.raises(ModbusValueError):
            encode(m, value)


# --------------------------------------------------------------------------- read plans


def point(name: str, address: int, data_type: DataType = DataType.UINT16, **extra: object) -> tuple[str, ModbusMapping]:
    return name, ModbusMapping.model_validate({"address": address, "data_type": data_type, **extra})


def test_contiguous_and_nearly_contiguous_points_share_a_request() -> None:
    points = [
        point("a", 0),
        point("b", 1, DataType.FLOAT32),  # 1..2
        point("c", 5),  # gap of 2
        point("d", 30),  # gap of 24: new request
        point("e", 0, table="input"),
    ]
    plan = plan_reads(points, max_register_gap=8)
    assert [(r.table, r.address, r.count, [p.metric for p in r.points]) for r in plan] == [
        (ModbusTable.HOLDING, 0, 6, ["a", "b", "c"]),
        (ModbusTable.HOLDING, 30, 1, ["d"]),
        (ModbusTable.INPUT, 0, 1, ["e"]),
    ]


def test_gap_zero_reads_only_contiguous_runs() -> None:
    plan = plan_reads([point("a", 0), point("b", 1), point("c", 3)], max_register_gap=0)
    assert [(r.address, r.count) for r in plan] == [(0, 2), (3, 1)]


def test_requests_respect_the_protocol_limits() -> None:
    registers = [point(f"r{i}", i * 2, DataType.FLOAT32) for i in range(100)]  # 200 registers
    plan = plan_reads(registers)
    assert [(r.address, r.count) for r in plan] == [(0, 124), (124, 76)]
    assert all(r.count <= MAX_READ_REGISTERS for r in plan)
    assert sum(len(r.points) for r in plan) == 100

    coils = [point(f"c{i}", i, DataType.BOOL, table="coil") for i in range(2500)]
    coil_plan = plan_reads(coils)
    assert [(r.address, r.count) for r in coil_plan] == [(0, MAX_READ_BITS), (2000, 500)]


def test_overlapping_mappings_are_read_once() -> None:
    # A 32-bit counter and its low word as a separate metric.
    plan = plan_reads([point("total", 10, DataType.UINT32), point("low", 11)])
    assert [(r.address, r.count) for r in plan] == [(10, 2)]
    values = [0x0001, 0x0002]
    sliced = {p.metric: list(raw) for p, raw in slice_values(plan[0], values)}
    assert sliced == {"total": [1, 2], "low": [2]}


def test_slice_values_cuts_each_point_out_of_the_response() -> None:
    plan = plan_reads([point("a", 100), point("f", 102, DataType.FLOAT32, word_order="little"), point("s", 104)])
    (request,) = plan
    response = [7, 0xDEAD, 0x0000, 0x3F80, 9]
    decoded = {p.metric: decode(p.mapping, raw) for p, raw in slice_values(request, response)}
    assert decoded == {"a": 7, "f": 1.0, "s": 9}
    with pytest.raises(ModbusValueError, match="expected 5 values, got 4"):
        list(slice_values(request, response[:4]))


def test_split_request_gives_one_read_per_point() -> None:
    (request,) = plan_reads([point("a", 0), point("b", 4, DataType.INT32)])
    singles = split_request(request)
    assert [(r.address, r.count, r.points[0].metric) for r in singles] == [(0, 1, "a"), (4, 2, "b")]
