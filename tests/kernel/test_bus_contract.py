"""One delivery contract, two buses: every test runs on `MemoryBus` and on `NatsBus` (JetStream).

The NATS runs use a stream and a subject prefix of their own (deleted afterwards), so they neither
see nor disturb anything else on the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from pydantic import BaseModel

from iip.kernel.bus import (
    DEAD_LETTERS,
    Bus,
    BusError,
    DeadLetter,
    Delivery,
    Handler,
    M,
    MemoryBus,
    Subject,
    Subscription,
)
from tests.services import NATS_URL, require_service

WAIT = 10.0  # upper bound for anything we wait on; normally reached in milliseconds


class Reading(BaseModel):
    sensor: str
    value: float


class Other(BaseModel):
    x: int


@dataclass
class Harness:
    bus: Bus
    kind: str
    subscriptions: list[Subscription] = field(default_factory=list)

    def subject(self) -> Subject[Reading]:
        return Subject(f"test.s{uuid.uuid4().hex[:12]}", Reading)

    async def subscribe(
        self,
        subject: Subject[M],
        handler: Handler[M],
        *,
        durable: str,
        max_deliver: int = 5,
        retry_delay: float = 0.05,
    ) -> Subscription:
        sub = await self.bus.subscribe(
            subject, handler, durable=durable, max_deliver=max_deliver, retry_delay=retry_delay
        )
        self.subscriptions.append(sub)
        return sub

    async def collect_dead_letters(self) -> list[DeadLetter]:
        """Subscribe an observer to DEAD_LETTERS; the returned list fills as letters arrive."""
        letters: list[DeadLetter] = []

        async def observe(delivery: Delivery[DeadLetter]) -> None:
            letters.append(delivery.payload)

        await self.subscribe(DEAD_LETTERS, observe, durable=f"observer-{uuid.uuid4().hex[:8]}")
        return letters


async def _delete_stream(stream: str) -> None:
    import nats
    import nats.js.errors

    nc = await nats.connect(NATS_URL, connect_timeout=2, allow_reconnect=False)
    try:
        with contextlib.suppress(nats.js.errors.NotFoundError):  # never created
            await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def open_harness(kind: str) -> AsyncIterator[Harness]:
    stream = ""
    bus: Bus
    if kind == "memory":
        bus = MemoryBus()
    else:
        require_service("NATS", "127.0.0.1", 4222)
        from iip.kernel.bus_nats import NatsBus

        token = uuid.uuid4().hex[:12]
        stream = f"IIPTEST_{token}"
        # ack_wait short so that a message held by a "crashed" consumer comes back quickly.
        bus = NatsBus(NATS_URL, stream=stream, ack_wait=1.0, connect_timeout=2.0, subject_prefix=f"iiptest{token}.")
    await bus.start()
    h = Harness(bus, kind)
    try:
        yield h
    finally:
        for sub in h.subscriptions:
            await sub.stop()
        await bus.close()
        if stream:
            await _delete_stream(stream)


@pytest_asyncio.fixture(params=["memory", "nats"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    async with open_harness(request.param) as h:
        yield h


@pytest_asyncio.fixture
async def nats_harness() -> AsyncIterator[Harness]:
    async with open_harness("nats") as h:
        yield h


async def wait_until(predicate: Callable[[], bool], within: float = WAIT) -> None:
    """Poll until `predicate()` holds; fail with TimeoutError after `within` seconds."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - polling plain lists filled by handlers
            await asyncio.sleep(0.01)


def recorder(into: list[Delivery[M]]) -> Callable[[Delivery[M]], Awaitable[None]]:
    async def handle(delivery: Delivery[M]) -> None:
        into.append(delivery)

    return handle


# --- delivery ----------------------------------------------------------------------------------


async def test_typed_round_trip(harness: Harness) -> None:
    subject = harness.subject()
    got: list[Delivery[Reading]] = []
    await harness.subscribe(subject, recorder(got), durable="d")

    sent = Reading(sensor="t-101", value=21.5)
    await harness.bus.publish(subject, sent, message_id="m-1")
    await wait_until(lambda: len(got) == 1)

    delivery = got[0]
    assert isinstance(delivery.payload, Reading)
    assert delivery.payload == sent
    assert delivery.subject == subject.name
    assert delivery.message_id == "m-1"
    assert delivery.attempt == 1


async def test_message_id_is_generated_when_not_given(harness: Harness) -> None:
    subject = harness.subject()
    got: list[Delivery[Reading]] = []
    await harness.subscribe(subject, recorder(got), durable="d")
    for i in range(2):
        await harness.bus.publish(subject, Reading(sensor="s", value=i))
    await wait_until(lambda: len(got) == 2)
    assert all(d.message_id for d in got)
    assert got[0].message_id != got[1].message_id


async def test_a_repeated_message_id_is_delivered_once(harness: Harness) -> None:
    subject = harness.subject()
    got: list[Delivery[Reading]] = []
    await harness.subscribe(subject, recorder(got), durable="d")
    await harness.bus.publish(subject, Reading(sensor="s", value=1), message_id="same")
    await harness.bus.publish(subject, Reading(sensor="s", value=2), message_id="same")
    await harness.bus.publish(subject, Reading(sensor="s", value=3), message_id="other")
    await wait_until(lambda: len(got) == 2)
    await asyncio.sleep(0.1)  # give a wrongly kept duplicate the chance to arrive
    assert [d.payload.value for d in got] == [1, 3]


async def test_fan_out_every_durable_gets_every_message(harness: Harness) -> None:
    subject = harness.subject()
    a: list[Delivery[Reading]] = []
    b: list[Delivery[Reading]] = []
    await harness.subscribe(subject, recorder(a), durable="a")
    await harness.subscribe(subject, recorder(b), durable="b")

    for i in range(5):
        await harness.bus.publish(subject, Reading(sensor="s", value=i))
    await wait_until(lambda: len(a) == 5 and len(b) == 5)
    assert sorted(d.payload.value for d in a) == [0, 1, 2, 3, 4]
    assert sorted(d.payload.value for d in b) == [0, 1, 2, 3, 4]


async def test_same_durable_name_on_two_subjects_is_two_consumers(harness: Harness) -> None:
    first, second = harness.subject(), harness.subject()
    got1: list[Delivery[Reading]] = []
    got2: list[Delivery[Reading]] = []
    await harness.subscribe(first, recorder(got1), durable="worker")
    await harness.subscribe(second, recorder(got2), durable="worker")

    await harness.bus.publish(first, Reading(sensor="one", value=1))
    await harness.bus.publish(second, Reading(sensor="two", value=2))
    await wait_until(lambda: len(got1) == 1 and len(got2) == 1)
    assert got1[0].payload.sensor == "one"
    assert got2[0].payload.sensor == "two"


async def test_subscribers_sharing_a_durable_share_the_work(harness: Harness) -> None:
    subject = harness.subject()
    handled: dict[str, list[float]] = {"w1": [], "w2": []}

    def worker(name: str) -> Handler[Reading]:
        async def handle(delivery: Delivery[Reading]) -> None:
            await asyncio.sleep(0.01)  # stay busy a moment so the other worker gets a turn
            handled[name].append(delivery.payload.value)

        return handle

    await harness.subscribe(subject, worker("w1"), durable="shared")
    await harness.subscribe(subject, worker("w2"), durable="shared")

    total = 20
    for i in range(total):
        await harness.bus.publish(subject, Reading(sensor="s", value=i))
    await wait_until(lambda: len(handled["w1"]) + len(handled["w2"]) >= total)
    await asyncio.sleep(0.2)  # a duplicate, if any, would show up now

    counts = Counter(handled["w1"] + handled["w2"])
    assert set(counts) == set(range(total))
    assert all(n == 1 for n in counts.values()), counts
    assert handled["w1"], "both subscribers should have taken some of the work"
    assert handled["w2"], "both subscribers should have taken some of the work"


async def test_order_is_kept_for_one_consumer(harness: Harness) -> None:
    subject = harness.subject()
    got: list[Delivery[Reading]] = []
    await harness.subscribe(subject, recorder(got), durable="ordered")

    for i in range(30):
        await harness.bus.publish(subject, Reading(sensor="s", value=i))
    await wait_until(lambda: len(got) == 30)
    assert [d.payload.value for d in got] == list(range(30))


async def test_only_messages_after_the_durable_was_created(harness: Harness) -> None:
    subject = harness.subject()
    await harness.bus.publish(subject, Reading(sensor="early", value=0))
    got: list[Delivery[Reading]] = []
    await harness.subscribe(subject, recorder(got), durable="late")
    await harness.bus.publish(subject, Reading(sensor="late", value=1))
    await wait_until(lambda: len(got) >= 1)
    await asyncio.sleep(0.1)
    assert [d.payload.sensor for d in got] == ["late"]


# --- failures ----------------------------------------------------------------------------------


async def test_failing_handler_is_retried_with_attempt_counted(harness: Harness) -> None:
    subject = harness.subject()
    letters = await harness.collect_dead_letters()
    attempts: list[int] = []
    done: list[Delivery[Reading]] = []

    async def flaky(delivery: Delivery[Reading]) -> None:
        attempts.append(delivery.attempt)
        if delivery.attempt < 3:
            raise RuntimeError(f"transient failure {delivery.attempt}")
        done.append(delivery)

    await harness.subscribe(subject, flaky, durable="flaky", max_deliver=5)
    await harness.bus.publish(subject, Reading(sensor="s", value=1), message_id="retry-me")
    await wait_until(lambda: len(done) == 1)

    assert attempts == [1, 2, 3]
    assert done[0].message_id == "retry-me"
    assert done[0].payload == Reading(sensor="s", value=1)
    assert letters == []


async def test_handler_that_always_fails_is_dead_lettered(harness: Harness) -> None:
    subject = harness.subject()
    letters = await harness.collect_dead_letters()
    attempts: list[int] = []

    async def broken(delivery: Delivery[Reading]) -> None:
        attempts.append(delivery.attempt)
        raise RuntimeError("boom")

    await harness.subscribe(subject, broken, durable="broken", max_deliver=3)
    await harness.bus.publish(subject, Reading(sensor="s", value=7), message_id="doomed")
    await wait_until(lambda: len(letters) == 1)

    letter = letters[0]
    assert attempts == [1, 2, 3]
    assert letter.subject == subject.name
    assert letter.durable == "broken"
    assert letter.message_id == "doomed"
    assert letter.attempts == 3
    assert "RuntimeError" in letter.reason
    assert "boom" in letter.reason
    assert Reading.model_validate_json(letter.data) == Reading(sensor="s", value=7)

    # Settled: no further attempts after the dead letter.
    await asyncio.sleep(0.2)
    assert attempts == [1, 2, 3]
    assert len(letters) == 1


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"{this is not json", "json"),
        (b'{"sensor": "t-1"}', "value"),  # valid JSON, missing field
        (b'{"sensor": "t-1", "value": "warm"}', "value"),  # valid JSON, wrong type
    ],
    ids=["invalid-json", "missing-field", "wrong-type"],
)
async def test_malformed_payload_is_dead_lettered_at_once(harness: Harness, data: bytes, expected: str) -> None:
    subject = harness.subject()
    letters = await harness.collect_dead_letters()
    got: list[Delivery[Reading]] = []
    await harness.subscribe(subject, recorder(got), durable="parser", max_deliver=5)

    await harness.bus.publish_bytes(subject.name, data, message_id="bad-1")
    await harness.bus.publish(subject, Reading(sensor="after", value=1))
    await wait_until(lambda: len(letters) == 1 and len(got) == 1)

    letter = letters[0]
    assert letter.subject == subject.name
    assert letter.durable == "parser"
    assert letter.message_id == "bad-1"
    assert letter.attempts == 1
    assert letter.reason.startswith("malformed payload")
    assert expected in letter.reason.lower()
    assert letter.data == data.decode()
    # The bad message never reached the handler; the good one after it did.
    assert [d.payload.sensor for d in got] == ["after"]


async def test_undecodable_bytes_are_dead_lettered(harness: Harness) -> None:
    subject = harness.subject()
    letters = await harness.collect_dead_letters()
    got: list[Delivery[Reading]] = []
    await harness.subscribe(subject, recorder(got), durable="parser")

    await harness.bus.publish_bytes(subject.name, b"\xff\xfe\x00garbage")
    await harness.bus.publish(subject, Reading(sensor="after", value=1))
    await wait_until(lambda: len(letters) == 1 and len(got) == 1)
    assert letters[0].reason.startswith("malformed payload")


# --- stop / resume -----------------------------------------------------------------------------


async def test_message_taken_by_a_stopped_consumer_is_delivered_again(harness: Harness) -> None:
    subject = harness.subject()
    taken = asyncio.Event()

    async def stuck(delivery: Delivery[Reading]) -> None:
        taken.set()
        await asyncio.Event().wait()  # never finishes: the worker "crashes" holding it

    first = await harness.subscribe(subject, stuck, durable="resumable")
    await harness.bus.publish(subject, Reading(sensor="s", value=42), message_id="held")
    await asyncio.wait_for(taken.wait(), WAIT)
    await first.stop()

    got: list[Delivery[Reading]] = []
    await harness.subscribe(subject, recorder(got), durable="resumable")
    await wait_until(lambda: len(got) == 1)
    assert got[0].message_id == "held"
    assert got[0].payload == Reading(sensor="s", value=42)
    assert got[0].attempt >= 2


async def test_messages_published_while_stopped_wait_for_the_durable(harness: Harness) -> None:
    subject = harness.subject()
    got: list[Delivery[Reading]] = []
    first = await harness.subscribe(subject, recorder(got), durable="patient")
    await first.stop()
    await first.stop()  # idempotent

    for i in range(3):
        await harness.bus.publish(subject, Reading(sensor="s", value=i))
    await asyncio.sleep(0.05)
    assert got == []

    await harness.subscribe(subject, recorder(got), durable="patient")
    await wait_until(lambda: len(got) == 3)
    assert [d.payload.value for d in got] == [0, 1, 2]


# --- API misuse and health -----------------------------------------------------------------------


async def test_publish_with_the_wrong_model_raises_type_error(harness: Harness) -> None:
    subject = harness.subject()
    with pytest.raises(TypeError, match="carries Reading"):
        await harness.bus.publish(subject, Other(x=1))  # type: ignore[misc]


async def test_ping_after_start_and_after_close(harness: Harness) -> None:
    await harness.bus.ping()
    for sub in harness.subscriptions:
        await sub.stop()
    await harness.bus.close()
    with pytest.raises(BusError):
        await harness.bus.ping()
    with pytest.raises(BusError):
        await harness.bus.publish(harness.subject(), Reading(sensor="s", value=1))


# --- NATS only ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_nats_start_reports_an_unreachable_server() -> None:
    from iip.kernel.bus_nats import NatsBus

    url = f"nats://127.0.0.1:{_free_port()}"
    bus = NatsBus(url, connect_timeout=2.0)
    with pytest.raises(BusError, match=f"cannot reach NATS at {url}: "):
        await bus.start()
    with pytest.raises(BusError):
        await bus.ping()
    await bus.close()


async def test_nats_unreachable_url_does_not_leak_the_password() -> None:
    from iip.kernel.bus_nats import NatsBus

    bus = NatsBus(f"nats://user:s3cret@127.0.0.1:{_free_port()}", connect_timeout=2.0)
    with pytest.raises(BusError) as raised:
        await bus.start()
    assert "s3cret" not in str(raised.value)
    assert "user:***@127.0.0.1" in str(raised.value)


async def test_nats_consumer_names_are_safe_and_distinct() -> None:
    from iip.kernel.bus_nats import consumer_name

    a = consumer_name("telemetry.points", "worker")
    b = consumer_name("telemetry_points", "worker")
    c = consumer_name("telemetry.points", "worker 2/x.y")
    assert len({a, b, c}) == 3
    for name in (a, b, c):
        assert all(ch.isalnum() or ch in "_-" for ch in name), name
        assert len(name) <= 64


async def test_nats_message_never_settled_is_dead_lettered_on_the_last_delivery(nats_harness: Harness) -> None:
    """A worker that dies on a message every time must not leave it stalled in the consumer."""
    subject = nats_harness.subject()
    letters = await nats_harness.collect_dead_letters()
    attempts: list[int] = []
    taken = asyncio.Event()

    async def dies(delivery: Delivery[Reading]) -> None:
        attempts.append(delivery.attempt)
        taken.set()
        await asyncio.Event().wait()

    await nats_harness.bus.publish(subject, Reading(sensor="s", value=1))  # before the durable: not seen
    for _ in range(2):  # max_deliver=1: the server allows 3 deliveries, the third is the last
        taken.clear()
        sub = await nats_harness.subscribe(subject, dies, durable="fragile", max_deliver=1)
        if not attempts:
            await nats_harness.bus.publish(subject, Reading(sensor="s", value=2), message_id="poison")
        await asyncio.wait_for(taken.wait(), WAIT)
        await sub.stop()

    await nats_harness.subscribe(subject, dies, durable="fragile", max_deliver=1)
    await wait_until(lambda: len(letters) == 1)
    assert attempts == [1, 2]  # the handler was not called on the last delivery
    assert letters[0].message_id == "poison"
    assert letters[0].attempts == 3
    assert "without an outcome" in letters[0].reason
