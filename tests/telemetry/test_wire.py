"""The binary frame of `telemetry.points`: round trips, every refusal, the JSON it still reads, and
the frame over the in-process bus and NATS JetStream (skipped locally without NATS, required under
CI=true)."""

from __future__ import annotations

import asyncio
import logging
import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from iip.kernel.bus import DEAD_LETTERS, DeadLetter, Delivery
from iip.kernel.runtime import Runtime
from iip.telemetry.public import (
    DEVICE_STATUS,
    TELEMETRY_POINTS,
    TWIN_DESIRED,
    PointBatch,
    PointBatchBuilder,
    Quality,
)
from iip.telemetry.wire import MAGIC, VERSION, FrameError, PointBatchCodec
from iip.telemetry.writer import writer_lifespan
from tests.conftest import TenantFixture
from tests.kernel.test_bus_contract import open_harness, recorder, wait_until

FIXED = struct.Struct("<4sBI")
TS = 1_767_225_600_000


def sample(n: int = 5, *, tenant: str = "t-1") -> PointBatch:
    builder = PointBatchBuilder(tenant, source="mqtt")
    for i in range(n):
        builder.add(f"dev-{i % 2}", f"m{i % 3}", TS + i, i * 0.5, [Quality.GOOD, Quality.UNCERTAIN, Quality.BAD][i % 3])
    builder.attribute("dev-0", "firmware", "1.2.3")
    return builder.build()


def split(frame: bytes) -> tuple[dict[str, Any], bytes]:
    """The header (as JSON) and the column bytes of a frame."""
    _, _, size = FIXED.unpack_from(frame)
    return orjson.loads(frame[FIXED.size : FIXED.size + size]), frame[FIXED.size + size :]


def columns(ts: Sequence[int], value: Sequence[float], index: Sequence[int], quality: Sequence[int]) -> bytes:
    return (
        np.asarray(ts, "<i8").tobytes()
        + np.asarray(value, "<f8").tobytes()
        + np.asarray(index, "<u4").tobytes()
        + bytes(quality)
    )


def frame_of(header: dict[str, Any], body: bytes, *, magic: bytes = MAGIC, version: int = VERSION) -> bytes:
    """A frame as another encoder might write it: no padding of the header."""
    raw = orjson.dumps(header)
    return FIXED.pack(magic, version, len(raw)) + raw + body


def header_of(n: int, **changes: Any) -> dict[str, Any]:
    return {"tenant_id": "t", "source": "s", "count": n, "series": [["d", "a"], ["d", "b"]], "attributes": {}} | changes


def same(a: PointBatch, b: PointBatch) -> None:
    """Equal field by field, NaN equal to NaN and -0.0 told from 0.0."""
    assert a.model_dump(exclude={"value"}) == b.model_dump(exclude={"value"})
    assert len(a.value) == len(b.value)
    for x, y in zip(a.value, b.value, strict=True):
        assert (math.isnan(x) and math.isnan(y)) or (x == y and math.copysign(1, x) == math.copysign(1, y)), (x, y)


# --- round trips ----------------------------------------------------------------------------------


def test_a_batch_comes_back_equal_with_its_attributes() -> None:
    batch = sample(7)
    batch.attributes["dev-1"] = {
        "state": "running",
        "count": 3,
        "ratio": 0.5,
        "on": True,
        "none": None,
        "list": [1, "a"],
    }
    frame = TELEMETRY_POINTS.encode(batch)
    assert frame.startswith(MAGIC + bytes([VERSION]))
    back = TELEMETRY_POINTS.decode(frame)
    assert back == batch
    assert back.attributes["dev-1"]["list"] == [1, "a"]


def test_decoded_columns_are_plain_python_numbers() -> None:
    back = TELEMETRY_POINTS.decode(TELEMETRY_POINTS.encode(sample(3)))
    assert {type(v) for v in back.series_index + back.ts_ms + back.quality} == {int}
    assert {type(v) for v in back.value} == {float}
    assert all(type(s) is tuple for s in back.series)


def test_columns_as_arrays_match_the_lists_whether_built_or_decoded() -> None:
    built = sample(300)
    decoded = TELEMETRY_POINTS.decode(TELEMETRY_POINTS.encode(built))
    for batch in (built, decoded):
        columns = batch.columns()
        assert columns.series_index.tolist() == built.series_index
        assert columns.ts_ms.dtype == np.int64
        assert columns.ts_ms.tolist() == built.ts_ms
        assert columns.value.dtype == np.float64
        assert columns.value.tolist() == built.value
        assert columns.quality.tolist() == built.quality
        assert batch.columns() is columns


def test_columns_of_large_codes_fall_back_to_int64() -> None:
    batch = PointBatch(
        tenant_id="t", series=[("d", f"m{i}") for i in range(300)], series_index=[299, 0], ts_ms=[1, 2],
        value=[1.0, 2.0], quality=[0, 0],
    )  # fmt: skip
    assert batch.columns().series_index.tolist() == [299, 0]
    assert batch.columns().series_index.dtype == np.int64


def test_an_empty_batch_round_trips() -> None:
    empty = PointBatch(tenant_id="t-1")
    back = TELEMETRY_POINTS.decode(TELEMETRY_POINTS.encode(empty))
    assert back == empty
    assert len(back) == 0
    attributes_only = PointBatchBuilder("t-1", source="http")
    attributes_only.attribute("gw", "firmware", "2.0")
    assert TELEMETRY_POINTS.decode(TELEMETRY_POINTS.encode(attributes_only.build())) == attributes_only.build()


def test_nan_and_infinities_survive_the_frame() -> None:
    builder = PointBatchBuilder("t-1")
    specials = [math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308]
    for i, value in enumerate(specials):
        builder.add("d", "m", TS + i, value)
    batch = builder.build()
    back = TELEMETRY_POINTS.decode(TELEMETRY_POINTS.encode(batch))
    same(back, batch)
    assert math.isnan(back.value[0])
    assert back.value[1:3] == [math.inf, -math.inf]


def test_json_cannot_carry_nan_which_is_why_such_batches_were_dead_lettered() -> None:
    builder = PointBatchBuilder("t-1")
    builder.add("d", "m", TS, math.nan)
    json = builder.build().model_dump_json().encode()
    assert b'"value":[null]' in json
    with pytest.raises(ValidationError, match="valid number"):
        TELEMETRY_POINTS.decode(json)


def test_unicode_names_and_extreme_timestamps_round_trip() -> None:
    builder = PointBatchBuilder("租户-1", source="opcua")
    names = [("反应器-1", "温度 °C"), ('pump "A"', "flow\\rate\nline"), ("🛢️", "level ✓"), ("", "")]
    for i, (device, metric) in enumerate(names):
        builder.add(device, metric, [-(2**63), 2**63 - 1, 0, -1][i], float(i))
    builder.attribute("反应器-1", "固件", "版本 ③")
    batch = builder.build()
    back = TELEMETRY_POINTS.decode(TELEMETRY_POINTS.encode(batch))
    assert back == batch
    assert back.ts_ms == [-(2**63), 2**63 - 1, 0, -1]


def test_the_frame_is_binary_compact_and_its_columns_aligned() -> None:
    batch = sample(1000)
    batch.value[:] = np.random.default_rng(0).standard_normal(1000).tolist()  # measured values, not round ones
    frame = TELEMETRY_POINTS.encode(batch)
    header, body = split(frame)
    assert header["count"] == 1000
    assert (len(frame) - len(body)) % 8 == 0  # the columns start on 8 bytes
    assert len(body) == 1000 * (8 + 8 + 4 + 1)
    assert len(frame) < 0.6 * len(batch.model_dump_json())
    with pytest.raises(UnicodeDecodeError):
        frame.decode("utf-8")  # so a dead letter keeps it as base64, never mangled


def test_a_frame_without_padding_from_another_encoder_decodes() -> None:
    frame = frame_of(header_of(2, source="ss"), columns([TS, TS + 1], [1.5, -2.0], [1, 0], [0, 2]))
    assert (len(frame) - 21 * 2) % 8 != 0  # numpy reads the columns where they are
    back = TELEMETRY_POINTS.decode(frame)
    assert list(back.points()) == [("d", "b", TS, 1.5, 0), ("d", "a", TS + 1, -2.0, 2)]


def test_other_subjects_keep_pydantic_json() -> None:
    assert isinstance(TELEMETRY_POINTS.codec, PointBatchCodec)
    assert DEVICE_STATUS.codec is None
    assert TWIN_DESIRED.codec is None


# --- the older JSON form --------------------------------------------------------------------------


def test_json_published_before_the_frame_still_decodes() -> None:
    batch = sample(4)
    assert TELEMETRY_POINTS.decode(batch.model_dump_json().encode()) == batch
    assert TELEMETRY_POINTS.decode(b"\n  " + batch.model_dump_json().encode()) == batch


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"{not json", "json_invalid"),
        (b'{"tenant_id": "t", "series": [], "series_index": [0], "ts_ms": [1], "value": [1], "quality": [0]}', "range"),
        (b'{"series": []}', "tenant_id"),
    ],
    ids=["invalid-json", "index-out-of-range", "missing-tenant"],
)
def test_bad_json_is_refused_as_before(data: bytes, expected: str) -> None:
    with pytest.raises(ValidationError) as refused:
        TELEMETRY_POINTS.decode(data)
    assert expected in str(refused.value) or expected in refused.value.errors()[0]["type"]


# --- refusals -------------------------------------------------------------------------------------

GOOD_BODY = columns([TS, TS + 1], [1.0, 2.0], [0, 1], [0, 0])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a point batch: starts with nothing"),
        (b"hello", "not a point batch: starts with 68 65 6c 6c, neither the frame's magic 89 49 50 42"),
        (frame_of(header_of(2), GOOD_BODY, magic=b"\x89IPX"), "not a point batch: starts with 89 49 50 58"),
        (MAGIC + b"\x01\x00", "truncated point batch frame: 6 bytes, its fixed part alone is 9"),
        (frame_of(header_of(2), GOOD_BODY, version=2), "point batch frame version 2 is not supported"),
        (FIXED.pack(MAGIC, VERSION, 500) + b"{}", "truncated point batch frame: a header of 500 bytes, 2 bytes follow"),
        (FIXED.pack(MAGIC, VERSION, 5) + b"{nope", "bad point batch frame header: Invalid JSON"),
        (frame_of({"count": 0}, b""), "bad point batch frame header: tenant_id: Field required"),
        (
            frame_of(header_of(0, tenant_id=7), b""),
            "bad point batch frame header: tenant_id: Input should be a valid string",
        ),
        (frame_of(header_of(0, series=[["d"]]), b""), "bad point batch frame header: series.0.1: Field required"),
        (frame_of(header_of(0, attributes={"d": 1}), b""), "bad point batch frame header: attributes.d"),
        (
            frame_of(header_of(-1), b""),
            "bad point batch frame header: count: Input should be greater than or equal to 0",
        ),
        (frame_of(header_of(3), GOOD_BODY), "point batch frame of 3 points must be 159 bytes, it is 138 (truncated)"),
        (frame_of(header_of(1), GOOD_BODY), "point batch frame of 1 points must be 117 bytes, it is 138"),
        (frame_of(header_of(2), GOOD_BODY + b"\x00"), "point batch frame of 2 points must be 138 bytes, it is 139"),
        (frame_of(header_of(2), GOOD_BODY[:-1]), "(truncated)"),
        (
            frame_of(header_of(2), columns([TS, TS], [1.0, 2.0], [1, 2], [0, 0])),
            "series_index[1] = 2 is out of range: the frame has 2 series",
        ),
        (
            frame_of(header_of(1, series=[]), columns([TS], [1.0], [0], [0])),
            "series_index[0] = 0 is out of range: the frame has 0 series",
        ),
        (
            frame_of(header_of(2), columns([TS, TS], [1.0, 2.0], [0, 1], [2, 3])),
            "quality[1] = 3 is not a quality code (0, 1, 2)",
        ),
        (
            frame_of(header_of(2), columns([TS, TS], [1.0, 2.0], [0, 1], [255, 0])),
            "quality[0] = 255 is not a quality code (0, 1, 2)",
        ),
    ],
    ids=[
        "empty",
        "not-a-frame",
        "bad-magic",
        "shorter-than-fixed-part",
        "unknown-version",
        "header-truncated",
        "header-not-json",
        "header-without-tenant",
        "header-tenant-not-text",
        "header-series-not-pairs",
        "header-attributes-not-objects",
        "negative-count",
        "count-above-columns",
        "count-below-columns",
        "trailing-byte",
        "last-byte-missing",
        "index-out-of-range",
        "index-without-series",
        "unknown-quality",
        "quality-255",
    ],
)
def test_what_the_decoder_refuses(data: bytes, message: str) -> None:
    with pytest.raises(FrameError) as refused:
        TELEMETRY_POINTS.decode(data)
    assert message in str(refused.value)
    assert isinstance(refused.value, ValueError)  # what the bus dead-letters


def test_every_truncation_of_a_frame_is_refused() -> None:
    frame = TELEMETRY_POINTS.encode(sample(6))
    for cut in range(len(frame)):
        with pytest.raises(FrameError):
            TELEMETRY_POINTS.decode(frame[:cut])


def test_any_flipped_byte_gives_a_batch_or_a_value_error() -> None:
    frame = TELEMETRY_POINTS.encode(sample(6))
    outcomes = {"batch": 0, "refused": 0}
    for at in range(len(frame)):
        garbled = bytearray(frame)
        garbled[at] ^= 0xFF
        try:
            decoded = TELEMETRY_POINTS.decode(bytes(garbled))
        except ValueError:  # FrameError, or a ValidationError of the header
            outcomes["refused"] += 1
        else:
            assert isinstance(decoded, PointBatch)
            outcomes["batch"] += 1
    # A flipped timestamp or value is still a batch; a flipped magic, length, header, index or quality is not.
    assert outcomes["batch"] >= 6 * 16
    assert outcomes["refused"] >= FIXED.size + 6 * 5


# --- encoding what the frame cannot hold ------------------------------------------------------


def test_a_batch_the_columns_cannot_hold_travels_as_json(caplog: pytest.LogCaptureFixture) -> None:
    builder = PointBatchBuilder("t-1")
    builder.add("d", "m", 2**64, 1.0)  # past int64: the store refuses it, but that is its call
    batch = builder.build()
    with caplog.at_level(logging.WARNING, logger="iip.telemetry.wire"):
        data = TELEMETRY_POINTS.encode(batch)
    assert data == batch.model_dump_json().encode()
    assert TELEMETRY_POINTS.decode(data) == batch
    assert "sent as JSON" in caplog.text


def test_columns_of_different_lengths_travel_as_json_and_are_refused_as_before() -> None:
    batch = PointBatch.model_construct(
        tenant_id="t", series=[("d", "m")], series_index=[0, 0], ts_ms=[1], value=[1.0], quality=[0], attributes={}
    )
    data = TELEMETRY_POINTS.encode(batch)
    assert data.startswith(b"{")
    with pytest.raises(ValidationError, match="same length"):
        TELEMETRY_POINTS.decode(data)


def test_the_codec_needs_quality_codes_that_fit_a_byte() -> None:
    with pytest.raises(ValueError, match="byte"):
        PointBatchCodec(PointBatch, [0, 256])
    with pytest.raises(ValueError, match="byte"):
        PointBatchCodec(PointBatch, [])


# --- over the buses -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "nats"])
async def test_a_batch_crosses_the_bus_as_a_frame_and_arrives_equal(kind: str) -> None:
    async with open_harness(kind) as harness:
        got: list[Delivery[PointBatch]] = []
        await harness.subscribe(TELEMETRY_POINTS, recorder(got), durable="points")
        batch = sample(1000)
        batch.value[3] = math.nan
        batch.value[4] = -math.inf
        await harness.bus.publish(TELEMETRY_POINTS, batch, message_id="b-1")
        await harness.bus.publish_bytes(TELEMETRY_POINTS.name, sample(3).model_dump_json().encode())  # queued as JSON
        await wait_until(lambda: len(got) == 2)
        same(got[0].payload, batch)
        assert got[0].message_id == "b-1"
        assert got[1].payload == sample(3)


@pytest.mark.parametrize("kind", ["memory", "nats"])
async def test_a_garbled_frame_is_dead_lettered_with_its_bytes(kind: str) -> None:
    async with open_harness(kind) as harness:
        letters = await harness.collect_dead_letters()
        got: list[Delivery[PointBatch]] = []
        await harness.subscribe(TELEMETRY_POINTS, recorder(got), durable="points")
        garbled = TELEMETRY_POINTS.encode(sample(10))[:-7]
        await harness.bus.publish_bytes(TELEMETRY_POINTS.name, garbled, message_id="bad-1")
        await harness.bus.publish(TELEMETRY_POINTS, sample(2))
        await wait_until(lambda: len(letters) == 1 and len(got) == 1)

        letter = letters[0]
        assert (letter.subject, letter.durable, letter.message_id, letter.attempts) == (
            TELEMETRY_POINTS.name,
            "points",
            "bad-1",
            1,
        )
        assert letter.reason.startswith("malformed payload: point batch frame of 10 points must be")
        assert letter.reason.endswith("(truncated)")
        assert letter.encoding == "base64"
        assert letter.raw() == garbled
        assert got[0].payload == sample(2)


# --- the writer's own dead letters ----------------------------------------------------------------


async def test_a_batch_with_nan_reaches_the_writer_and_its_letter_keeps_the_nan(
    runtime: Runtime, tenant_a: TenantFixture
) -> None:
    await runtime.bus.start()
    letters: list[DeadLetter] = []

    async def collect(delivery: Delivery[DeadLetter]) -> None:
        letters.append(delivery.payload)

    subscription = await runtime.bus.subscribe(DEAD_LETTERS, collect, durable="test-letters")
    async with writer_lifespan(runtime):
        builder = PointBatchBuilder(tenant_a.id, source="test")
        builder.add("pump", "flow", TS, math.nan)
        await runtime.bus.publish(TELEMETRY_POINTS, builder.build())
        for _ in range(1000):  # ten seconds at most
            if letters:
                break
            await asyncio.sleep(0.01)
    await subscription.stop()
    await runtime.bus.close()
    [letter] = letters
    assert letter.reason.startswith("refused by the store")  # not refused by the bus: the NaN got through
    assert letter.encoding == "base64"
    replayed = TELEMETRY_POINTS.decode(letter.raw())
    assert replayed.tenant_id == tenant_a.id
    assert math.isnan(replayed.value[0])
