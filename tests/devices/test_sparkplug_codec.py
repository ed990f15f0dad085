"""Sparkplug B codec: topics, every scalar datatype both ways, wire compatibility, malformed input."""

from __future__ import annotations

import ast
import datetime as dt
import math
import struct
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iip.devices.codecs import sparkplug_b_pb2 as pb
from iip.devices.codecs.sparkplug import (
    DataType,
    EdgeTopic,
    HostState,
    MessageType,
    Metric,
    Payload,
    Property,
    SparkplugError,
    StateTopic,
    decode_payload,
    decode_state,
    encode_payload,
    encode_state,
    parse_topic,
    with_datatype,
)

ROOT = Path(__file__).resolve().parents[2]
CODECS = ROOT / "src" / "iip" / "devices" / "codecs"
UTC = dt.UTC

# --- topics


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("spBv1.0/plant/NBIRTH/gw1", EdgeTopic("plant", MessageType.NBIRTH, "gw1")),
        ("spBv1.0/plant/NDEATH/gw1", EdgeTopic("plant", MessageType.NDEATH, "gw1")),
        ("spBv1.0/plant/NDATA/gw1", EdgeTopic("plant", MessageType.NDATA, "gw1")),
        ("spBv1.0/plant/NCMD/gw1", EdgeTopic("plant", MessageType.NCMD, "gw1")),
        ("spBv1.0/plant/DBIRTH/gw1/pump 1", EdgeTopic("plant", MessageType.DBIRTH, "gw1", "pump 1")),
        ("spBv1.0/plant/DDEATH/gw1/pump1", EdgeTopic("plant", MessageType.DDEATH, "gw1", "pump1")),
        ("spBv1.0/plant/DDATA/gw1/泵1", EdgeTopic("plant", MessageType.DDATA, "gw1", "泵1")),
        ("spBv1.0/plant/DCMD/gw1/pump1", EdgeTopic("plant", MessageType.DCMD, "gw1", "pump1")),
        ("spBv1.0/STATE/scada-1", StateTopic("scada-1")),
    ],
)
def test_topics_parse_and_build_back(text: str, expected: EdgeTopic | StateTopic) -> None:
    parsed = parse_topic(text)
    assert parsed == expected
    assert str(parsed) == text


def test_topic_parts() -> None:
    topic = parse_topic("spBv1.0/plant/DDATA/gw1/pump1")
    assert isinstance(topic, EdgeTopic)
    assert topic.message_type.is_device
    assert topic.path == "plant/gw1/pump1"
    state = parse_topic("spBv1.0/STATE/h")
    assert state.message_type is MessageType.STATE


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "namespace"),
        ("spBv1.0", "expected spBv1.0/{group_id}"),
        ("spAv1.0/plant/NBIRTH/gw1", "namespace"),
        ("STATE/scada", "namespace"),  # Sparkplug 2.x STATE topic
        ("spBv1.0/plant/NBIRTH", "expected"),
        ("spBv1.0/plant/NBIRTH/gw1/dev/extra", "expected"),
        ("spBv1.0/plant/BIRTH/gw1", "unknown Sparkplug message type 'BIRTH'"),
        ("spBv1.0/plant/nbirth/gw1", "unknown Sparkplug message type"),
        ("spBv1.0/plant/DBIRTH/gw1", "ends with a device_id"),
        ("spBv1.0/plant/NDATA/gw1/dev", "has no device_id"),
        ("spBv1.0//NDATA/gw1", "group_id is empty"),
        ("spBv1.0/plant/NDATA/", "edge_node_id is empty"),
        ("spBv1.0/plant/DDATA/gw1/", "device_id is empty"),
        ("spBv1.0/pl+nt/NDATA/gw1", "contains '/', '+' or '#'"),
        ("spBv1.0/plant/NDATA/#", "contains"),
        ("spBv1.0/STATE", "STATE topic is"),
        ("spBv1.0/STATE/h/x", "STATE topic is"),
        ("spBv1.0/STATE/", "host_id is empty"),
    ],
)
def test_malformed_topics_say_why(text: str, reason: str) -> None:
    with pytest.raises(SparkplugError) as caught:
        parse_topic(text)
    assert reason in caught.value.message


def test_topics_refuse_to_be_built_wrong() -> None:
    with pytest.raises(SparkplugError, match="needs a device_id"):
        EdgeTopic("plant", MessageType.DDATA, "gw1")
    with pytest.raises(SparkplugError, match="has no device_id"):
        EdgeTopic("plant", MessageType.NCMD, "gw1", "pump")
    with pytest.raises(SparkplugError, match="reserved"):
        EdgeTopic("STATE", MessageType.NDATA, "gw1")
    with pytest.raises(SparkplugError, match="use StateTopic"):
        EdgeTopic("plant", MessageType.STATE, "gw1")
    with pytest.raises(SparkplugError, match="contains"):
        StateTopic("a/b")


# --- datatypes


def test_datatypes_are_the_specification_enumeration() -> None:
    numbers = dict(pb.DataType.items())
    assert len(numbers) == len(DataType)
    for name, number in numbers.items():
        assert DataType(number).label == name
        assert DataType(number).name.replace("_", "") == name.upper()


def _millis(value: dt.datetime) -> dt.datetime:
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


SCALARS: dict[DataType, st.SearchStrategy[object]] = {
    DataType.INT8: st.integers(-(2**7), 2**7 - 1),
    DataType.INT16: st.integers(-(2**15), 2**15 - 1),
    DataType.INT32: st.integers(-(2**31), 2**31 - 1),
    DataType.INT64: st.integers(-(2**63), 2**63 - 1),
    DataType.UINT8: st.integers(0, 2**8 - 1),
    DataType.UINT16: st.integers(0, 2**16 - 1),
    DataType.UINT32: st.integers(0, 2**32 - 1),
    DataType.UINT64: st.integers(0, 2**64 - 1),
    DataType.FLOAT: st.floats(width=32, allow_nan=False),
    DataType.DOUBLE: st.floats(allow_nan=False),
    DataType.BOOLEAN: st.booleans(),
    DataType.STRING: st.text(),
    DataType.TEXT: st.text(),
    DataType.UUID: st.uuids(),
    DataType.DATETIME: st.datetimes(
        min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(9999, 12, 31), timezones=st.just(UTC)
    ).map(_millis),
    DataType.BYTES: st.binary(),
    DataType.FILE: st.binary(),
}


def test_every_scalar_datatype_has_a_strategy_and_a_python_type() -> None:
    scalar = [t for t in DataType if 1 <= t <= 18 and t not in {DataType.DATASET}]
    assert set(scalar) == set(SCALARS)
    for datatype in scalar:
        assert datatype.python_type is not None
    assert DataType.DATASET.python_type is None
    assert DataType.TEMPLATE.python_type is None


@settings(max_examples=300, deadline=None)
@given(data=st.data(), datatype=st.sampled_from(sorted(SCALARS)))
def test_every_scalar_datatype_round_trips(data: st.DataObject, datatype: DataType) -> None:
    value = data.draw(SCALARS[datatype])
    metric = Metric(name="m", alias=7, timestamp=1_700_000_000_000, datatype=datatype, value=value)  # type: ignore[arg-type]
    payload = Payload(timestamp=1_700_000_000_001, metrics=(metric,), seq=3)
    decoded = decode_payload(encode_payload(payload))
    assert decoded == payload
    assert type(decoded.metrics[0].value) is datatype.python_type
    # as DATA sends it: no datatype on the wire, typed again from the birth
    bare = decode_payload(encode_payload(payload, with_datatypes=False)).metrics[0]
    assert bare.datatype is DataType.UNKNOWN
    assert with_datatype(bare, datatype) == metric


@pytest.mark.parametrize(
    ("datatype", "value", "field", "wire"),
    [
        (DataType.INT8, -1, "int_value", 0xFF),
        (DataType.INT8, -128, "int_value", 0x80),
        (DataType.INT16, -1, "int_value", 0xFFFF),
        (DataType.INT16, -32768, "int_value", 0x8000),
        (DataType.INT32, -1, "int_value", 0xFFFFFFFF),
        (DataType.INT32, -(2**31), "int_value", 0x80000000),
        (DataType.INT64, -1, "long_value", 2**64 - 1),
        (DataType.INT64, -(2**63), "long_value", 2**63),
        (DataType.UINT32, 2**32 - 1, "int_value", 2**32 - 1),
        (DataType.UINT64, 2**64 - 1, "long_value", 2**64 - 1),
        (DataType.DATETIME, dt.datetime(2024, 5, 1, 8, 30, 0, 123000, tzinfo=UTC), "long_value", 1714552200123),
        (DataType.UUID, uuid.UUID(int=1), "string_value", "00000000-0000-0000-0000-000000000001"),
    ],
)
def test_signed_values_are_twos_complement_at_their_width(
    datatype: DataType, value: object, field: str, wire: object
) -> None:
    data = encode_payload(Payload(metrics=(Metric(name="m", datatype=datatype, value=value),)))  # type: ignore[arg-type]
    metric = pb.Payload.FromString(data).metrics[0]
    assert metric.WhichOneof("value") == field
    assert getattr(metric, field) == wire
    assert decode_payload(data).metrics[0].value == value


@pytest.mark.parametrize(
    ("datatype", "field", "wire", "value"),
    [
        (DataType.INT8, "int_value", 0xFFFFFFFF, -1),  # sign-extended to 32 bits, as Java and C encoders do
        (DataType.INT8, "int_value", 0xFFFFFF80, -128),
        (DataType.INT8, "long_value", 2**64 - 1, -1),
        (DataType.INT16, "int_value", 0xFFFF8000, -32768),
        (DataType.INT32, "long_value", 2**64 - 2**31, -(2**31)),
        (DataType.INT32, "long_value", 7, 7),
        (DataType.UINT8, "int_value", 255, 255),
    ],
)
def test_sign_extended_integers_decode(datatype: DataType, field: str, wire: int, value: int) -> None:
    message = pb.Payload()
    metric = message.metrics.add(name="m", datatype=int(datatype))
    setattr(metric, field, wire)
    assert decode_payload(message.SerializeToString()).metrics[0].value == value


@pytest.mark.parametrize(
    ("datatype", "field", "wire"),
    [
        (DataType.INT8, "int_value", 0x100),
        (DataType.INT8, "int_value", 0xFFFFFF7F),  # would be -129
        (DataType.INT16, "int_value", 0x10000),
        (DataType.UINT8, "int_value", 256),
        (DataType.UINT16, "int_value", 0xFFFFFFFF),
        (DataType.UINT32, "long_value", 2**32),
        (DataType.DATETIME, "long_value", 2**63),
    ],
)
def test_integers_out_of_range_are_refused(datatype: DataType, field: str, wire: int) -> None:
    message = pb.Payload()
    metric = message.metrics.add(name="m", datatype=int(datatype))
    setattr(metric, field, wire)
    with pytest.raises(SparkplugError, match="'m'"):
        decode_payload(message.SerializeToString())


@pytest.mark.parametrize(
    ("datatype", "value", "reason"),
    [
        (DataType.INT8, 128, "out of range for Int8 (-128..127)"),
        (DataType.INT64, 2**63, "out of range for Int64"),
        (DataType.UINT8, -1, "out of range for UInt8 (0..255)"),
        (DataType.UINT64, 2**64, "out of range for UInt64"),
        (DataType.FLOAT, 1e39, "out of range for Float"),
        (DataType.INT32, True, "Int32 needs int, not bool"),
        (DataType.INT32, "3", "Int32 needs int, not str"),
        (DataType.BOOLEAN, 1, "Boolean needs bool, not int"),
        (DataType.DOUBLE, "1.5", "Double needs int or float"),
        (DataType.STRING, b"x", "String needs str"),
        (DataType.UUID, "00000000-0000-0000-0000-000000000001", "UUID needs UUID, not str"),
        (DataType.DATETIME, dt.datetime(2024, 1, 1), "has no time zone"),
        (DataType.DATETIME, dt.datetime(1969, 12, 31, tzinfo=UTC), "before 1970"),
        (DataType.BYTES, "x", "Bytes needs bytes"),
        (DataType.DATASET, b"", "writing DataSet values here is not supported"),
        (DataType.UNKNOWN, 1, "needs a datatype"),
    ],
)
def test_values_that_cannot_be_encoded_say_why(datatype: DataType, value: object, reason: str) -> None:
    payload = Payload(metrics=(Metric(name="m", datatype=datatype, value=value),))  # type: ignore[arg-type]
    with pytest.raises(SparkplugError) as caught:
        encode_payload(payload)
    assert reason in caught.value.message
    assert "'m'" in caught.value.message


def test_out_of_range_header_fields_are_refused() -> None:
    with pytest.raises(SparkplugError, match="payload seq"):
        encode_payload(Payload(seq=-1))
    with pytest.raises(SparkplugError, match="alias"):
        encode_payload(Payload(metrics=(Metric(name="m", alias=2**64),)))
    with pytest.raises(SparkplugError, match="cannot be written as UTF-8"):
        encode_payload(Payload(metrics=(Metric(name="m", datatype=DataType.STRING, value="\ud800"),)))


def test_nulls_nan_and_flags_round_trip() -> None:
    payload = Payload(
        metrics=(
            Metric(name="n", datatype=DataType.INT32, is_null=True),
            Metric(name="h", datatype=DataType.DOUBLE, value=2.5, timestamp=5, is_historical=True, is_transient=True),
            Metric(name="d", datatype=DataType.DOUBLE),  # a definition without a value
        ),
        uuid="schema-1",
        body=b"\x00\x01",
    )
    assert decode_payload(encode_payload(payload)) == payload
    nan = decode_payload(encode_payload(Payload(metrics=(Metric(name="x", datatype=DataType.FLOAT, value=math.nan),))))
    assert isinstance(nan.metrics[0].value, float)
    assert math.isnan(nan.metrics[0].value)


def test_properties_round_trip_nested() -> None:
    properties = (
        Property("Quality", DataType.INT32, 192),
        Property("engUnit", DataType.STRING, "°C"),
        Property("limits", DataType.PROPERTYSET, (Property("high", DataType.DOUBLE, 90.5),)),
        Property(
            "history",
            DataType.PROPERTYSET_LIST,
            ((Property("a", DataType.BOOLEAN, True),), (Property("b", DataType.INT8, -3),)),
        ),
        Property("missing", DataType.STRING, None, is_null=True),
    )
    payload = Payload(metrics=(Metric(name="t", datatype=DataType.DOUBLE, value=1.0, properties=properties),))
    decoded = decode_payload(encode_payload(payload))
    assert decoded == payload
    quality = decoded.metrics[0].find_property("Quality")
    assert quality is not None
    assert quality.value == 192
    assert decoded.metric("t") is decoded.metrics[0]


def test_a_metric_cannot_change_its_datatype() -> None:
    metric = Metric(name="m", datatype=DataType.INT8, value=-1)
    assert with_datatype(metric, DataType.INT8) is metric
    with pytest.raises(SparkplugError, match="'m' is Int8 here but was born UInt8"):
        with_datatype(metric, DataType.UINT8)
    raw = decode_payload(encode_payload(Payload(metrics=(metric,)), with_datatypes=False)).metrics[0]
    with pytest.raises(SparkplugError, match="Boolean value carried as int"):
        with_datatype(raw, DataType.BOOLEAN)


# --- wire compatibility with the generated module and with bytes built by hand


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _int(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _bytes(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _double(number: int, value: float) -> bytes:
    return _varint(number << 3 | 1) + struct.pack("<d", value)


def _float(number: int, value: float) -> bytes:
    return _varint(number << 3 | 5) + struct.pack("<f", value)


EXPECTED = Payload(
    timestamp=1_714_552_200_000,
    seq=0,
    metrics=(
        Metric(name="bdSeq", timestamp=1_714_552_200_000, datatype=DataType.INT64, value=3),
        Metric(name="Node Control/Rebirth", alias=1, datatype=DataType.BOOLEAN, value=False),
        Metric(name="Temperature", alias=2, datatype=DataType.FLOAT, value=-12.5),
        Metric(name="Pressure", alias=3, datatype=DataType.DOUBLE, value=101.325),
        Metric(name="Offset", alias=4, datatype=DataType.INT16, value=-2),
        Metric(name="Count", alias=5, datatype=DataType.UINT64, value=2**64 - 1),
        Metric(name="Serial", alias=6, datatype=DataType.STRING, value="SN-1"),
        Metric(name="Fault", alias=7, datatype=DataType.INT32, is_null=True),
        Metric(
            name="Level",
            alias=8,
            datatype=DataType.INT32,
            value=-40,
            properties=(Property("engUnit", DataType.STRING, "mm"),),
        ),
    ),
)


def _built_with_generated_module() -> bytes:
    """The payload as Eclipse Tahu's Python library builds it: signed values at their width."""
    message = pb.Payload(timestamp=1_714_552_200_000, seq=0)
    message.metrics.add(name="bdSeq", timestamp=1_714_552_200_000, datatype=pb.Int64, long_value=3)
    message.metrics.add(name="Node Control/Rebirth", alias=1, datatype=pb.Boolean, boolean_value=False)
    message.metrics.add(name="Temperature", alias=2, datatype=pb.Float, float_value=-12.5)
    message.metrics.add(name="Pressure", alias=3, datatype=pb.Double, double_value=101.325)
    message.metrics.add(name="Offset", alias=4, datatype=pb.Int16, int_value=-2 + 2**16)
    message.metrics.add(name="Count", alias=5, datatype=pb.UInt64, long_value=2**64 - 1)
    message.metrics.add(name="Serial", alias=6, datatype=pb.String, string_value="SN-1")
    message.metrics.add(name="Fault", alias=7, datatype=pb.Int32, is_null=True)
    level = message.metrics.add(name="Level", alias=8, datatype=pb.Int32, int_value=2**32 - 40)
    level.properties.keys.append("engUnit")
    level.properties.values.add(type=pb.String, string_value="mm")
    return message.SerializeToString()


def _built_by_hand() -> bytes:
    """The same payload written field by field from the schema's field numbers, without protobuf."""
    metrics = [
        _bytes(1, b"bdSeq") + _int(3, 1_714_552_200_000) + _int(4, 4) + _int(11, 3),
        _bytes(1, b"Node Control/Rebirth") + _int(2, 1) + _int(4, 11) + _int(14, 0),
        _bytes(1, b"Temperature") + _int(2, 2) + _int(4, 9) + _float(12, -12.5),
        _bytes(1, b"Pressure") + _int(2, 3) + _int(4, 10) + _double(13, 101.325),
        _bytes(1, b"Offset") + _int(2, 4) + _int(4, 2) + _int(10, 0xFFFE),
        _bytes(1, b"Count") + _int(2, 5) + _int(4, 8) + _int(11, 2**64 - 1),
        _bytes(1, b"Serial") + _int(2, 6) + _int(4, 12) + _bytes(15, b"SN-1"),
        _bytes(1, b"Fault") + _int(2, 7) + _int(4, 3) + _int(7, 1),
        _bytes(1, b"Level")
        + _int(2, 8)
        + _int(4, 3)
        + _bytes(9, _bytes(1, b"engUnit") + _bytes(2, _int(1, 12) + _bytes(8, b"mm")))
        + _int(10, 2**32 - 40),
    ]
    return _int(1, 1_714_552_200_000) + b"".join(_bytes(2, m) for m in metrics) + _int(3, 0)


def test_generated_module_and_hand_built_bytes_decode_identically() -> None:
    generated, by_hand = _built_with_generated_module(), _built_by_hand()
    assert decode_payload(generated) == EXPECTED
    assert decode_payload(by_hand) == EXPECTED
    assert encode_payload(EXPECTED) == generated == by_hand


def _serialized_schema(module_source: str) -> bytes:
    """The file descriptor a generated module registers (the argument of its AddSerializedFile call)."""
    for node in ast.walk(ast.parse(module_source)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile":
            value = ast.literal_eval(node.args[0])
            assert isinstance(value, bytes)
            return value
    raise AssertionError("no AddSerializedFile call")


def test_generated_module_matches_the_schema(tmp_path: Path) -> None:
    """sparkplug_b_pb2.py and .pyi are what protoc makes of sparkplug_b.proto, plus a three-line header."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'src'}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            str(CODECS / "sparkplug_b.proto"),
        ],
        check=True,
        capture_output=True,
    )
    fresh_dir = tmp_path / "iip" / "devices" / "codecs"
    stale = "is stale: regenerate it as the header of sparkplug_b.proto says"
    assert pb.DESCRIPTOR.serialized_pb == _serialized_schema((fresh_dir / "sparkplug_b_pb2.py").read_text()), stale
    files = {}
    for suffix in ("py", "pyi"):
        committed = (CODECS / f"sparkplug_b_pb2.{suffix}").read_text().splitlines()
        header, body = committed[:3], committed[3:]
        assert all(line.startswith("# ") for line in header)
        assert "grpc_tools.protoc" in header[1]
        files[suffix] = body, (fresh_dir / f"sparkplug_b_pb2.{suffix}").read_text().splitlines()
    version = "# Protobuf Python Version:"
    if [line for line in files["py"][0] if line.startswith(version)] != [
        line for line in files["py"][1] if line.startswith(version)
    ]:
        return  # another protoc release writes other code for the same schema: the schema is compared above
    for suffix, (body, fresh) in files.items():
        assert body == fresh, f"sparkplug_b_pb2.{suffix} {stale}"


# --- malformed payloads


def _metric_bytes(**fields: object) -> bytes:
    message = pb.Payload()
    message.metrics.add(**fields)
    return message.SerializeToString()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff", "not a Sparkplug B protobuf message"),
        (b"\x12\x05\x0a\x01", "not a Sparkplug B protobuf message"),  # truncated metric
        (b"\x08", "not a Sparkplug B protobuf message"),  # tag without value
        (_bytes(2, _bytes(1, b"\xff\xfe")), "metric name is not valid UTF-8"),
        (_bytes(4, b"\xc3\x28"), "payload uuid is not valid UTF-8"),
        (_bytes(2, _bytes(1, b"m") + _int(4, 11) + _bytes(15, b"\xff")), "'m' is not valid UTF-8"),
        (_metric_bytes(name="m", datatype=99, int_value=1), "metric 'm': unknown datatype 99"),
        (_metric_bytes(name="m", datatype=1, string_value="1"), "Int8 value carried as str"),
        (_metric_bytes(name="m", datatype=9, int_value=1), "Float value carried as int"),
        (_metric_bytes(name="m", datatype=11, int_value=1), "Boolean value carried as int"),
        (_metric_bytes(name="m", datatype=12, bytes_value=b"x"), "String value carried as bytes"),
        (_metric_bytes(name="m", datatype=15, string_value="not-a-uuid"), "'not-a-uuid' is not a UUID"),
        (_metric_bytes(alias=4, datatype=17, boolean_value=True), "metric alias 4: Bytes value carried as bool"),
    ],
)
def test_undecodable_payloads_raise_one_error_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(SparkplugError) as caught:
        decode_payload(data)
    assert reason in caught.value.message
    assert caught.value.code == "sparkplug_invalid"


def test_malformed_property_sets_are_refused() -> None:
    message = pb.Payload()
    metric = message.metrics.add(name="m", datatype=pb.Int32, int_value=1)
    metric.properties.keys.extend(["a", "b"])
    metric.properties.values.add(type=pb.Int32, int_value=1)
    with pytest.raises(SparkplugError, match="2 keys for 1 values"):
        decode_payload(message.SerializeToString())
    metric.properties.values.add(type=pb.Bytes, string_value="x")
    with pytest.raises(SparkplugError, match="property 'b': Bytes value carried as str"):
        decode_payload(message.SerializeToString())
    with pytest.raises(SparkplugError, match="PropertySet needs a tuple of Property"):
        encode_payload(Payload(metrics=(Metric(name="m", properties=(Property("p", DataType.PROPERTYSET, 1),)),)))
    with pytest.raises(SparkplugError, match="writing Bytes values here is not supported"):
        encode_payload(Payload(metrics=(Metric(name="m", properties=(Property("p", DataType.BYTES, 1),)),)))


def test_dataset_and_template_values_are_not_decoded() -> None:
    message = pb.Payload()
    message.metrics.add(name="table", datatype=pb.DataSet).dataset_value.num_of_columns = 1
    message.metrics.add(name="udt", datatype=pb.Template).template_value.is_definition = True
    message.metrics.add(name="arr", datatype=pb.Int16Array, bytes_value=b"\x01\x00\xff\xff")
    table, udt, array = decode_payload(message.SerializeToString()).metrics
    assert (table.datatype, table.value, table.is_null) == (DataType.DATASET, None, False)
    assert (udt.datatype, udt.value) == (DataType.TEMPLATE, None)
    assert (array.datatype, array.value) == (DataType.INT16_ARRAY, b"\x01\x00\xff\xff")  # left packed


# --- STATE


def test_state_payloads_are_sparkplug_3_json() -> None:
    assert encode_state(True, 1_714_552_200_000) == b'{"online":true,"timestamp":1714552200000}'
    assert decode_state(b'{"online": false, "timestamp": 5, "extra": 1}') == HostState(False, 5)
    assert decode_state(encode_state(True, 7)) == HostState(True, 7)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"ONLINE", "not JSON"),  # Sparkplug 2.x
        (b"\xff", "not JSON"),
        (b"[true, 1]", "not a JSON object"),
        (b'{"online": "true", "timestamp": 1}', '"online"'),
        (b'{"timestamp": 1}', '"online"'),
        (b'{"online": true}', '"timestamp"'),
        (b'{"online": true, "timestamp": -1}', '"timestamp"'),
        (b'{"online": true, "timestamp": true}', '"timestamp"'),
        (b'{"online": true, "timestamp": 1.5}', '"timestamp"'),
    ],
)
def test_malformed_state_payloads_say_why(data: bytes, reason: str) -> None:
    with pytest.raises(SparkplugError) as caught:
        decode_state(data)
    assert reason in caught.value.message


def test_state_timestamp_must_be_unsigned() -> None:
    with pytest.raises(SparkplugError, match="STATE timestamp"):
        encode_state(True, -5)
