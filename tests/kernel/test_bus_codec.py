"""Subjects with a codec of their own, and dead letters that keep bytes which are not UTF-8.

Bus runs use both implementations through the contract tests' harness (NATS skipped locally when it
is absent, required under CI=true).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from iip.kernel.bus import (
    DEAD_LETTERS,
    Codec,
    DeadLetter,
    Delivery,
    Subject,
    dead_letter,
    describe_malformed,
)
from tests.kernel.test_bus_contract import Harness, Reading, open_harness, recorder, wait_until

TAG = b"\x00R"  # not UTF-8 once followed by the packed value


class ReadingCodec:
    """A toy binary codec: a tag, the value as 8 bytes, the sensor name."""

    def __init__(self) -> None:
        self.encoded = 0
        self.decoded = 0

    def encode(self, payload: Reading) -> bytes:
        self.encoded += 1
        return TAG + payload.value.hex().encode() + b"\xff" + payload.sensor.encode()

    def decode(self, data: bytes) -> Reading:
        if not data.startswith(TAG):
            raise ValueError(f"not a reading frame: starts with {data[:2].hex()}")
        value, sep, sensor = data[len(TAG) :].partition(b"\xff")
        if not sep:
            raise ValueError("reading frame without its separator")
        if sensor == b"boom":
            raise TypeError("codec bug")
        self.decoded += 1
        return Reading(sensor=sensor.decode(), value=float.fromhex(value.decode()))


@pytest_asyncio.fixture(params=["memory", "nats"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    async with open_harness(request.param) as h:
        yield h


def coded_subject(harness: Harness, codec: ReadingCodec) -> Subject[Reading]:
    return Subject(harness.subject().name, Reading, codec)


# --- Subject ------------------------------------------------------------------------------------


def test_a_subject_without_codec_speaks_pydantic_json() -> None:
    subject = Subject("test.plain", Reading)
    reading = Reading(sensor="t-1", value=2.5)
    assert subject.codec is None
    assert subject.encode(reading) == reading.model_dump_json().encode()
    assert subject.decode(b'{"sensor": "t-1", "value": 2.5}') == reading


def test_a_subject_with_a_codec_uses_it_both_ways() -> None:
    codec = ReadingCodec()
    subject: Subject[Reading] = Subject("test.coded", Reading, codec)
    data = subject.encode(Reading(sensor="t-1", value=2.5))
    assert data.startswith(TAG)
    assert subject.decode(data) == Reading(sensor="t-1", value=2.5)
    assert (codec.encoded, codec.decoded) == (1, 1)
    with pytest.raises(ValueError, match="not a reading frame"):
        subject.decode(b'{"sensor": "t-1", "value": 2.5}')


def test_a_subject_stays_frozen_and_slotted() -> None:
    subject = Subject("test.frozen", Reading, ReadingCodec())
    with pytest.raises(dataclasses.FrozenInstanceError):
        subject.codec = None  # type: ignore[misc]
    assert not hasattr(subject, "__dict__")
    codec: Codec[Reading] = ReadingCodec()  # the protocol is satisfied structurally
    assert Subject("test.frozen", Reading, codec).codec is codec


def test_describe_malformed_says_what_the_codec_said() -> None:
    assert describe_malformed(ValueError("bad magic")) == "malformed payload: bad magic"
    assert describe_malformed(TypeError("oops")) == "malformed payload: TypeError: oops"


# --- dead letters -------------------------------------------------------------------------------


def test_a_letter_of_utf8_data_keeps_it_as_text() -> None:
    letter = dead_letter("s", "d", "m", "why", 1, '{"ok": "ünïcode"}'.encode())
    assert letter.encoding == "utf-8"
    assert letter.data == '{"ok": "ünïcode"}'
    assert letter.raw() == '{"ok": "ünïcode"}'.encode()


def test_a_letter_of_binary_data_keeps_every_byte() -> None:
    data = bytes(range(256)) * 3
    letter = dead_letter("s", "d", "m", "why", 1, data)
    assert letter.encoding == "base64"
    assert base64.b64decode(letter.data) == data
    assert letter.raw() == data
    # And so after travelling as JSON on DEAD_LETTERS.
    again = DEAD_LETTERS.decode(DEAD_LETTERS.encode(letter))
    assert (again.encoding, again.raw()) == ("base64", data)


def test_a_letter_written_before_the_encoding_field_still_loads() -> None:
    old = (
        b'{"subject": "s", "durable": "d", "message_id": "m", "reason": "why", "attempts": 2,'
        b' "data": "{\\"x\\": 1}", "failed_at": "2026-01-01T00:00:00Z"}'
    )
    letter = DEAD_LETTERS.decode(old)
    assert letter.encoding == "utf-8"
    assert letter.raw() == b'{"x": 1}'
    assert letter.failed_at == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_a_letter_with_an_unknown_encoding_is_refused() -> None:
    with pytest.raises(ValueError, match="encoding"):
        DeadLetter(
            subject="s",
            durable="d",
            message_id="m",
            reason="r",
            attempts=1,
            data="",
            failed_at=dt.datetime.now(dt.UTC),
            encoding="latin-1",  # type: ignore[arg-type]
        )


# --- on both buses ------------------------------------------------------------------------------


async def test_publish_and_delivery_go_through_the_codec(harness: Harness) -> None:
    codec = ReadingCodec()
    subject = coded_subject(harness, codec)
    got: list[Delivery[Reading]] = []
    await harness.subscribe(subject, recorder(got), durable="d")

    await harness.bus.publish(subject, Reading(sensor="t-101", value=-0.1), message_id="m-1")
    await wait_until(lambda: len(got) == 1)
    assert got[0].payload == Reading(sensor="t-101", value=-0.1)
    assert (codec.encoded, codec.decoded) == (1, 1)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x89garbage\x00\xfe", "malformed payload: not a reading frame: starts with 8967"),
        (TAG + b"no separator", "malformed payload: reading frame without its separator"),
        (TAG + b"0x1p+0\xffboom", "malformed payload: TypeError: codec bug"),
    ],
    ids=["value-error", "value-error-utf8", "other-error"],
)
async def test_data_the_codec_refuses_is_dead_lettered_with_its_bytes(
    harness: Harness, data: bytes, reason: str
) -> None:
    subject = coded_subject(harness, ReadingCodec())
    letters = await harness.collect_dead_letters()
    got: list[Delivery[Reading]] = []
    await harness.subscribe(subject, recorder(got), durable="parser", max_deliver=5)

    await harness.bus.publish_bytes(subject.name, data, message_id="bad-1")
    await harness.bus.publish(subject, Reading(sensor="after", value=1))
    await wait_until(lambda: len(letters) == 1 and len(got) == 1)

    letter = letters[0]
    assert (letter.subject, letter.durable, letter.message_id, letter.attempts) == (subject.name, "parser", "bad-1", 1)
    assert letter.reason == reason
    assert letter.raw() == data
    assert [d.payload.sensor for d in got] == ["after"]


async def test_binary_garbage_on_a_json_subject_is_kept_whole(harness: Harness) -> None:
    subject = harness.subject()
    letters = await harness.collect_dead_letters()
    got: list[Delivery[Reading]] = []
    await harness.subscribe(subject, recorder(got), durable="parser")

    garbage = b"\xff\xfe\x00garbage\x80"
    await harness.bus.publish_bytes(subject.name, garbage)
    await wait_until(lambda: len(letters) == 1)
    assert letters[0].reason.startswith("malformed payload")
    assert letters[0].encoding == "base64"
    assert letters[0].raw() == garbage


async def test_a_dead_letter_published_again_from_its_bytes_is_delivered(harness: Harness) -> None:
    """What a fixed consumer would do: the letter's bytes are the message as it was published."""
    codec = ReadingCodec()
    subject = coded_subject(harness, codec)
    letters = await harness.collect_dead_letters()
    failing = True
    got: list[Delivery[Reading]] = []

    async def handler(delivery: Delivery[Reading]) -> None:
        if failing:
            raise RuntimeError("not yet")
        got.append(delivery)

    await harness.subscribe(subject, handler, durable="d", max_deliver=2)
    await harness.bus.publish(subject, Reading(sensor="t-9", value=3.25))
    await wait_until(lambda: len(letters) == 1)
    assert letters[0].encoding == "base64"

    failing = False
    await harness.bus.publish_bytes(letters[0].subject, letters[0].raw())
    await wait_until(lambda: len(got) == 1)
    assert got[0].payload == Reading(sensor="t-9", value=3.25)
