"""MQTT ingest against real brokers (the shared Mosquitto, and private ones we stop and restart),
with paho-mqtt publishing as devices do, and the batcher on its own.

The shared broker carries other tests' traffic too, so every test uses a tenant, devices and client
ids of its own and looks only at those; sessions are removed afterwards.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from iip.devices.codecs.mqtt_json import NO_DEVICE_ON_THINGSBOARD_TOPIC, PARTIAL, THINGSBOARD_TOPIC
from iip.devices.directory import IngestOutcome, KnownDevice
from iip.devices.ingest.batcher import IngestBatcher
from iip.devices.ingest.mqtt import BrokerAddress, MqttIngest
from iip.devices.profiles import DeviceProfile
from iip.kernel.bus import Bus, BusError, Delivery, MemoryBus
from iip.kernel.settings import DevicesSettings, SettingsError
from iip.telemetry.public import DEVICE_STATUS, TELEMETRY_POINTS, DeviceStatus, Point, PointBatch, Quality
from tests.services import MQTT_HOST, MQTT_PORT, in_ci, port_open, require_service

WAIT = 15.0  # upper bound for anything awaited; normally reached in milliseconds
PROFILE = DeviceProfile.model_validate(
    {
        "name": "meter",
        "protocol": "mqtt",
        "metrics": [{"name": "temperature", "mqtt": {"key": "temp"}}, {"name": "pressure"}, {"name": "running"}],
    }
)


# --- test doubles that are real implementations of the two protocols ------------------------------


class Directory:
    def __init__(self, tenant_name: str, tenant_id: str, keys: Iterable[str], tokens: dict[str, str] | None = None):
        self.tenant_name = tenant_name
        self.tenant_id = tenant_id
        self.devices = {key: KnownDevice.of(tenant_id, key, PROFILE) for key in keys}
        self.tokens = {token: self.devices[key] for token, key in (tokens or {}).items()}

    def by_name(self, tenant: str, device: str) -> KnownDevice | None:
        return self.devices.get(device) if tenant in (self.tenant_name, self.tenant_id) else None

    def by_token(self, token: str) -> KnownDevice | None:
        return self.tokens.get(token)

    def by_sparkplug(self, group_id: str, edge_node_id: str, device_id: str | None) -> KnownDevice | None:
        return None


@dataclass
class Letter:
    source: str
    reason: str
    raw: bytes
    topic: str
    tenant_id: str | None
    device: str | None
    thread: int


class Sink:
    def __init__(self, gate: threading.Event | None = None) -> None:
        self.letters: list[Letter] = []
        self._lock = threading.Lock()
        self._gate = gate

    def record(
        self,
        *,
        source: str,
        reason: str,
        raw: bytes,
        topic: str = "",
        tenant_id: str | None = None,
        device: str | None = None,
    ) -> None:
        if self._gate is not None:
            self._gate.wait(WAIT)
        with self._lock:
            self.letters.append(Letter(source, reason, raw, topic, tenant_id, device, threading.get_ident()))

    def about(self, marker: str) -> list[Letter]:
        with self._lock:
            return [letter for letter in self.letters if marker in letter.topic or marker.encode() in letter.raw]


@dataclass
class Collector:
    """What the bus carries: point batches and device statuses."""

    batches: list[PointBatch] = field(default_factory=list)
    statuses: list[DeviceStatus] = field(default_factory=list)

    async def attach(self, bus: Bus) -> None:
        await bus.subscribe(TELEMETRY_POINTS, self._on_points, durable=f"test-{uuid.uuid4().hex[:8]}")
        await bus.subscribe(DEVICE_STATUS, self._on_status, durable=f"test-{uuid.uuid4().hex[:8]}")

    async def _on_points(self, delivery: Delivery[PointBatch]) -> None:
        self.batches.append(delivery.payload)

    async def _on_status(self, delivery: Delivery[DeviceStatus]) -> None:
        self.statuses.append(delivery.payload)

    def points(self, tenant_id: str) -> list[Point]:
        return [p for b in self.batches if b.tenant_id == tenant_id for p in b.points()]


async def until(condition: Callable[[], bool], what: str, within: float = WAIT) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.01)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def paho_client(client_id: str = "", **options: Any) -> paho.Client:
    return paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or unique("test-"), **options)


def publish_all(port: int, messages: Iterable[tuple[str, bytes]], *, qos: int = 1, username: str | None = None) -> None:
    """Publish as a device does, and return once the broker has every QoS 1 message."""
    client = paho_client()
    client.max_inflight_messages_set(100)
    if username is not None:
        client.username_pw_set(username)
    client.connect(MQTT_HOST, port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=qos) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(WAIT)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def forget_session(port: int, client_id: str) -> None:
    """Remove a persistent session from the broker (a clean connect, then a disconnect)."""
    client = paho_client(client_id, clean_session=True)
    with suppress(OSError):
        client.connect(MQTT_HOST, port)
        client.loop_start()
        time.sleep(0.05)
        client.disconnect()
        client.loop_stop()


def settings_for(port: int, client_id: str, **overrides: Any) -> DevicesSettings:
    values: dict[str, Any] = {
        "mqtt_url": f"mqtt://{MQTT_HOST}:{port}",
        "mqtt_client_id": client_id,
        "batch_max_ms": 20,
        **overrides,
    }
    return DevicesSettings(**values)


def telemetry(tenant: str, device: str, ts: int, temp: float, **extra: Any) -> tuple[str, bytes]:
    values = {"temp": temp, "pressure": temp / 10, "running": True, **extra}
    return f"iip/{tenant}/{device}/telemetry", orjson.dumps({"ts": ts, "values": values})


def expected_points(device: str, ts: int, temp: float) -> dict[tuple[str, str, int], float]:
    return {(device, "temperature", ts): temp, (device, "pressure", ts): temp / 10, (device, "running", ts): 1.0}


@dataclass
class Plant:
    """A tenant of its own with three devices, a bus with a collector, and a dead-letter sink."""

    tenant: str
    tenant_id: str
    directory: Directory
    bus: MemoryBus
    collector: Collector
    sink: Sink


@pytest.fixture
async def plant() -> AsyncIterator[Plant]:
    tenant, tenant_id = unique("acme"), unique("id-")
    bus = MemoryBus()
    await bus.start()
    collector = Collector()
    await collector.attach(bus)
    yield Plant(tenant, tenant_id, Directory(tenant, tenant_id, ["m1", "m2", "m3"]), bus, collector, Sink())
    await bus.close()


@asynccontextmanager
async def running(ingest: MqttIngest, port: int) -> AsyncIterator[MqttIngest]:
    await ingest.start()
    try:
        await ingest.wait_connected(WAIT)
        yield ingest
    finally:
        await ingest.stop()
        await asyncio.to_thread(forget_session, port, ingest.client_id)


@pytest.fixture
def shared_broker() -> int:
    require_service("Mosquitto", MQTT_HOST, MQTT_PORT)
    return MQTT_PORT


# --- against the shared Mosquitto ---------------------------------------------------------------


async def test_json_messages_arrive_on_the_bus_in_batches(shared_broker: int, plant: Plant) -> None:
    settings = settings_for(shared_broker, unique("ingest-"), batch_max_points=45, batch_max_ms=60_000)
    ingest = MqttIngest(settings, plant.bus, plant.directory, plant.sink)
    base = int(time.time() * 1000) - 60_000
    messages = [telemetry(plant.tenant, f"m{i % 3 + 1}", base + i, 20.0 + i) for i in range(30)]
    expected: dict[tuple[str, str, int], float] = {}
    for i in range(30):
        expected |= expected_points(f"m{i % 3 + 1}", base + i, 20.0 + i)

    async with running(ingest, shared_broker):
        await asyncio.to_thread(publish_all, shared_broker, messages)
        await until(lambda: len(plant.collector.points(plant.tenant_id)) >= 90, "90 points on the bus")

    ours = [b for b in plant.collector.batches if b.tenant_id == plant.tenant_id]
    assert [len(b) for b in ours] == [45, 45]  # sealed by size, not one batch per message
    assert all(b.source == "mqtt" for b in ours)
    got = {(p.device, p.metric, p.ts_ms): p.value for p in plant.collector.points(plant.tenant_id)}
    assert got == expected
    assert all(p.quality == Quality.GOOD for p in plant.collector.points(plant.tenant_id))
    online = {s.device for s in plant.collector.statuses if s.tenant_id == plant.tenant_id and s.online}
    assert online == {"m1", "m2", "m3"}


async def test_bad_messages_are_dead_lettered_and_ingest_goes_on(shared_broker: int, plant: Plant) -> None:
    ingest = MqttIngest(settings_for(shared_broker, unique("ingest-")), plant.bus, plant.directory, plant.sink)
    now = int(time.time() * 1000)
    tenant = plant.tenant
    marker = unique("marker-")
    bad = [
        (f"iip/{tenant}/m1/telemetry", b'{"temp": 1,'),
        (f"iip/{tenant}/m9/telemetry", b'{"temp": 1}'),
        (f"iip/{tenant}/m2/telemetry", orjson.dumps({"ts": now + 3_600_000, "values": {"temp": 1}})),
        (f"iip/{tenant}/m3/telemetry", orjson.dumps({"ts": now, "values": {"temp": 5.0, "humidity": 1}})),
        (THINGSBOARD_TOPIC, orjson.dumps({"temp": 1, "note": marker})),
    ]
    good = telemetry(tenant, "m1", now, 42.0)

    async with running(ingest, shared_broker):
        await asyncio.to_thread(publish_all, shared_broker, [*bad, good])
        await until(lambda: len(plant.collector.points(plant.tenant_id)) >= 4, "the good message's points")
        await until(lambda: len(plant.sink.about(tenant)) >= 4, "dead letters of the tenant's topics")
        await until(lambda: len(plant.sink.about(marker)) >= 1, "the ThingsBoard dead letter")

    points = {(p.device, p.metric): p.value for p in plant.collector.points(plant.tenant_id)}
    assert points == {
        ("m3", "temperature"): 5.0,
        ("m1", "temperature"): 42.0,
        ("m1", "pressure"): 4.2,
        ("m1", "running"): 1.0,
    }
    letters = {letter.topic: letter for letter in plant.sink.about(tenant)}
    for topic, raw in bad[:4]:
        assert letters[topic].raw == raw
        assert letters[topic].source == "mqtt"
    assert letters[f"iip/{tenant}/m1/telemetry"].reason.startswith("bad JSON")
    assert letters[f"iip/{tenant}/m1/telemetry"].device == "m1"
    assert letters[f"iip/{tenant}/m9/telemetry"].reason == f"unknown device {tenant}/m9"
    assert letters[f"iip/{tenant}/m9/telemetry"].device is None
    assert "too far in the future" in letters[f"iip/{tenant}/m2/telemetry"].reason
    assert letters[f"iip/{tenant}/m3/telemetry"].reason == PARTIAL + "unknown metric 'humidity'"
    (thingsboard,) = plant.sink.about(marker)
    assert thingsboard.reason == NO_DEVICE_ON_THINGSBOARD_TOPIC
    assert thingsboard.raw == bad[4][1]
    rejected = ingest.batcher.rejected
    assert rejected[(plant.tenant_id, "m1")] == 1
    assert rejected[(plant.tenant_id, "m2")] == 1
    assert rejected[(plant.tenant_id, "m3")] == 1
    assert rejected[("", f"iip/{tenant}/m9/telemetry")] == 1
    assert {letter.thread for letter in plant.sink.about(tenant)} != {threading.get_ident()}


class FakeHost:
    """A Sparkplug host application of one group: records messages, answers NDATA with a point and a command."""

    def __init__(self, group: str, device: KnownDevice) -> None:
        self.group = group
        self.device = device
        self.host_id = unique("host")
        self.received: list[tuple[str, bytes]] = []
        self.births = 0

    def state_topic(self) -> str:
        return f"spBv1.0/STATE/{self.host_id}"

    def online_payload(self) -> bytes:
        self.births += 1
        return b'{"online": true, "timestamp": 1}'

    def offline_payload(self) -> bytes:
        return b'{"online": false, "timestamp": 1}'

    def on_message(self, topic: str, payload: bytes) -> IngestOutcome:
        outcome = IngestOutcome()
        if topic.startswith(f"spBv1.0/{self.group}/NDATA/"):
            self.received.append((topic, payload))
            outcome.points.append((self.device, "pressure", 1_767_225_600_000, float(payload[0]), int(Quality.GOOD)))
            outcome.publish.append((f"spBv1.0/{self.group}/NCMD/node1", b"rebirth", 0, False))
        if topic.startswith(f"spBv1.0/{self.group}/NDEATH/"):
            outcome.statuses.append((self.device, False, "node died"))
        return outcome


class Watcher:
    """A paho client recording what arrives on some topics."""

    def __init__(self, port: int, *topics: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.client = paho_client()
        self.client.on_message = self._on_message
        self.client.connect(MQTT_HOST, port)
        self.client.loop_start()
        result, _mid = self.client.subscribe([(topic, 1) for topic in topics])
        assert result == paho.MQTT_ERR_SUCCESS

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.client.on_message = None  # break the cycle, so the client's sockets are closed at once


async def test_sparkplug_goes_to_the_host_with_state_birth_and_death(shared_broker: int, plant: Plant) -> None:
    group = unique("g")
    host = FakeHost(group, plant.directory.devices["m1"])
    settings = settings_for(shared_broker, unique("ingest-"))
    ingest = MqttIngest(settings, plant.bus, plant.directory, plant.sink, host)
    assert "spBv1.0/#" in ingest.topics
    watcher = await asyncio.to_thread(Watcher, shared_broker, host.state_topic(), f"spBv1.0/{group}/NCMD/#")
    try:
        async with running(ingest, shared_broker):
            await until(lambda: host.online_payload() in watcher.on(host.state_topic()), "STATE birth")
            await asyncio.to_thread(
                publish_all,
                shared_broker,
                [(f"spBv1.0/{group}/NDATA/node1", b"\x07"), (f"spBv1.0/{group}/NDEATH/node1", b"")],
            )
            await until(lambda: len(plant.collector.points(plant.tenant_id)) >= 1, "the host's point")
            await until(lambda: watcher.on(f"spBv1.0/{group}/NCMD/node1") == [b"rebirth"], "the host's command")
            await until(lambda: any(not s.online for s in plant.collector.statuses), "the host's offline status")
        await until(lambda: watcher.on(host.state_topic())[-1:] == [host.offline_payload()], "STATE death on stop")
    finally:
        await asyncio.to_thread(watcher.close)
        # Clear the retained STATE so the broker does not keep it.
        await asyncio.to_thread(publish_all, shared_broker, [(host.state_topic(), b"")], qos=1)

    assert host.received == [(f"spBv1.0/{group}/NDATA/node1", b"\x07")]
    (batch,) = [b for b in plant.collector.batches if b.tenant_id == plant.tenant_id]
    assert batch.source == "sparkplug"
    assert list(batch.points()) == [Point("m1", "pressure", 1_767_225_600_000, 7.0, Quality.GOOD)]
    statuses = [(s.device, s.online, s.reason) for s in plant.collector.statuses if s.tenant_id == plant.tenant_id]
    assert ("m1", False, "node died") in statuses


async def test_without_a_host_sparkplug_is_not_subscribed(plant: Plant) -> None:
    ingest = MqttIngest(settings_for(1883, "x"), plant.bus, plant.directory, plant.sink)
    assert ingest.topics == ("iip/+/+/telemetry", "v1/devices/me/telemetry")


# --- a private Mosquitto, stopped and restarted ---------------------------------------------------


class PrivateMosquitto:
    """A mosquitto process of our own, with persistence in a temporary directory."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            if in_ci():
                pytest.fail("the mosquitto binary is required (CI=true)")
            pytest.skip("the mosquitto binary is not installed")
        self.binary = binary
        self.port = free_port()
        self.directory = directory
        self.config = directory / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {directory}/",
            f"log_dest file {directory}/mosquitto.log",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to the mosquitto user, who cannot write here
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([self.binary, "-c", str(self.config)])
        deadline = time.monotonic() + WAIT
        while not port_open(MQTT_HOST, self.port, timeout=0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.directory / "mosquitto.log").read_text(errors="replace")
                raise AssertionError(f"mosquitto did not start: {log[-2000:]}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the way a service manager does (SIGTERM), so it writes its persistence file."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(WAIT)
        self.process = None


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterable[PrivateMosquitto]:
    broker = PrivateMosquitto(tmp_path)
    broker.start()
    yield broker
    broker.stop()


async def test_reconnects_after_broker_restarts_and_loses_no_point(
    private_broker: PrivateMosquitto, plant: Plant
) -> None:
    port = private_broker.port
    settings = settings_for(port, unique("ingest-"))

    def make_ingest() -> MqttIngest:
        return MqttIngest(settings, plant.bus, plant.directory, plant.sink, reconnect_min_s=0.05, reconnect_max_s=0.5)

    base = int(time.time() * 1000) - 600_000
    expected: dict[tuple[str, str, int], float] = {}

    def batch(start: int, stop: int) -> list[tuple[str, bytes]]:
        messages = []
        for i in range(start, stop):
            device = f"m{i % 3 + 1}"
            messages.append(telemetry(plant.tenant, device, base + i, float(i)))
            expected.update(expected_points(device, base + i, float(i)))
        return messages

    def arrived() -> bool:
        return {(p.device, p.metric, p.ts_ms) for p in plant.collector.points(plant.tenant_id)} >= set(expected)

    ingest = make_ingest()
    await ingest.start()
    await ingest.wait_connected(WAIT)
    await asyncio.to_thread(publish_all, port, batch(0, 50))
    await until(arrived, "points sent before the restart")

    # The broker goes away under a running ingest, comes back, and the ingest finds it again.
    await asyncio.to_thread(private_broker.stop)
    await until(lambda: not ingest.connected, "the ingest to notice")
    await asyncio.to_thread(private_broker.start)
    await ingest.wait_connected(WAIT)
    assert ingest.connections == 2
    await asyncio.to_thread(publish_all, port, batch(50, 100))
    await until(arrived, "points sent after the restart")
    await ingest.stop()

    # Published while the ingest is away: the broker queues them for its persistent session,
    # keeps them across its own restart, and hands them over when the ingest is back.
    await asyncio.to_thread(publish_all, port, batch(100, 250))
    await asyncio.to_thread(private_broker.stop)
    await asyncio.to_thread(private_broker.start)
    again = make_ingest()
    await again.start()
    try:
        await until(arrived, "points queued while the ingest was away")
    finally:
        await again.stop()

    # At-least-once delivery, idempotent store: duplicates are the same point; none is missing.
    stored: dict[tuple[str, str, int], float] = {}
    for p in plant.collector.points(plant.tenant_id):
        key = (p.device, p.metric, p.ts_ms)
        assert stored.setdefault(key, p.value) == p.value
    assert stored == expected
    assert len(expected) == 750
    assert plant.sink.letters == []


# --- the batcher on its own -----------------------------------------------------------------------


class FlakyBus(MemoryBus):
    """A memory bus whose first publishes fail, as a bus does during an outage."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def publish_bytes(self, subject_name: str, data: bytes, *, message_id: str | None = None) -> None:
        if self.failures:
            self.failures -= 1
            raise BusError("bus unavailable")
        await super().publish_bytes(subject_name, data, message_id=message_id)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def outcome_of(device: KnownDevice, *values: float, ts: int = 1_767_225_600_000) -> IngestOutcome:
    return IngestOutcome(points=[(device, "temperature", ts + i, v, int(Quality.GOOD)) for i, v in enumerate(values)])


@asynccontextmanager
async def batcher_on(bus: Bus, sink: Sink | None = None, **options: Any) -> AsyncIterator[IngestBatcher]:
    values: dict[str, Any] = {"max_points": 1000, "max_ms": 60_000, "offline_after_s": 300, **options}
    batcher = IngestBatcher(bus, sink or Sink(), **values)
    await batcher.start()
    try:
        yield batcher
    finally:
        await batcher.stop()


@pytest.fixture
async def memory_bus() -> AsyncIterator[tuple[MemoryBus, Collector]]:
    bus = MemoryBus()
    await bus.start()
    collector = Collector()
    await collector.attach(bus)
    yield bus, collector
    await bus.close()


A = KnownDevice.of("tenant-a", "a1", PROFILE)
A2 = KnownDevice.of("tenant-a", "a2", PROFILE)
B = KnownDevice.of("tenant-b", "b1", PROFILE)


async def test_batches_are_sealed_at_max_points_per_tenant_in_order(memory_bus: tuple[MemoryBus, Collector]) -> None:
    bus, collector = memory_bus
    async with batcher_on(bus, max_points=4) as batcher:
        batcher.add(outcome_of(A, 1, 2, 3), source="mqtt")
        batcher.add(outcome_of(B, 10), source="mqtt")
        batcher.add(outcome_of(A2, 4, 5), source="mqtt")  # tenant-a now holds 5 >= 4: sealed
        await until(lambda: len(collector.batches) == 1, "the full batch")
        assert collector.batches[0].tenant_id == "tenant-a"
        assert [(p.device, p.value) for p in collector.batches[0].points()] == [
            ("a1", 1),
            ("a1", 2),
            ("a1", 3),
            ("a2", 4),
            ("a2", 5),
        ]
        batcher.add(outcome_of(A, 6), source="mqtt")
    # stop() publishes what is pending
    assert sorted((b.tenant_id, [p.value for p in b.points()]) for b in collector.batches[1:]) == [
        ("tenant-a", [6.0]),
        ("tenant-b", [10.0]),
    ]


async def test_a_batch_waits_at_most_max_ms(memory_bus: tuple[MemoryBus, Collector]) -> None:
    bus, collector = memory_bus
    async with batcher_on(bus, max_ms=10) as batcher:
        batcher.add(outcome_of(A, 1), source="mqtt")
        await until(lambda: len(collector.batches) == 1, "the batch after max_ms")
        batcher.add(outcome_of(A, 2), source="modbus")
        await until(lambda: len(collector.batches) == 2, "the next batch after max_ms")
    assert [(b.source, [p.value for p in b.points()]) for b in collector.batches] == [
        ("mqtt", [1.0]),
        ("modbus", [2.0]),
    ]


async def test_attributes_travel_in_the_batch(memory_bus: tuple[MemoryBus, Collector]) -> None:
    bus, collector = memory_bus
    async with batcher_on(bus) as batcher:
        batcher.add(IngestOutcome(attributes=[(A, "firmware", "2.4.1")]), source="mqtt")
    (batch,) = collector.batches
    assert len(batch) == 0
    assert batch.attributes == {"a1": {"firmware": "2.4.1"}}


async def test_failed_publishes_are_retried_in_order(memory_bus: tuple[MemoryBus, Collector]) -> None:
    _, collector = memory_bus
    bus = FlakyBus(failures=3)
    await bus.start()
    await collector.attach(bus)
    async with batcher_on(bus, max_points=2) as batcher:
        for value in range(6):
            batcher.add(outcome_of(A, value), source="mqtt")
        await until(lambda: len(collector.batches) == 3, "three batches after the outage")
        assert batcher.stats.publish_failures == 3
    assert [p.value for b in collector.batches for p in b.points()] == [0, 1, 2, 3, 4, 5]
    await bus.close()


async def test_online_on_first_data_offline_after_silence(memory_bus: tuple[MemoryBus, Collector]) -> None:
    bus, collector = memory_bus
    clock = Clock()
    async with batcher_on(bus, offline_after_s=60, clock=clock) as batcher:
        batcher.add(outcome_of(A, 1), source="mqtt")
        batcher.add(outcome_of(A, 2), source="mqtt")
        clock.now += 30
        batcher.add(outcome_of(B, 1), source="mqtt")
        clock.now += 40  # A silent for 70 s, B for 40 s
        batcher.mark_silent_offline()
        assert batcher.online == {("tenant-b", "b1")}
        clock.now += 30
        batcher.mark_silent_offline()
        batcher.add(outcome_of(A, 3), source="mqtt")
        await until(lambda: len(collector.statuses) == 5, "five status events")
    assert [(s.device, s.online) for s in collector.statuses] == [
        ("a1", True),
        ("b1", True),
        ("a1", False),
        ("b1", False),
        ("a1", True),
    ]
    assert collector.statuses[2].reason == "no data for 60 s"


async def test_explicitly_reported_devices_are_not_timed_out(memory_bus: tuple[MemoryBus, Collector]) -> None:
    bus, collector = memory_bus
    clock = Clock()
    async with batcher_on(bus, offline_after_s=60, clock=clock) as batcher:
        batcher.add(IngestOutcome(statuses=[(A, True, "born")]), source="sparkplug")
        batcher.add(outcome_of(A, 1), source="sparkplug")
        clock.now += 3600
        batcher.mark_silent_offline()
        assert batcher.online == {("tenant-a", "a1")}
        batcher.add(IngestOutcome(statuses=[(A, False, "died")]), source="sparkplug")
        assert batcher.online == set()
        await until(lambda: len(collector.statuses) == 2, "birth and death")
    assert [(s.online, s.reason) for s in collector.statuses] == [(True, "born"), (False, "died")]


async def test_dead_letters_are_filed_off_the_loop_and_counted(memory_bus: tuple[MemoryBus, Collector]) -> None:
    bus, _ = memory_bus
    gate = threading.Event()
    sink = Sink(gate)
    async with batcher_on(bus, sink, dead_letter_backlog=2) as batcher:
        for i in range(3):  # the worker holds the first at the gate; two wait in the backlog
            batcher.add(IngestOutcome(rejected=[(f"bad {i}", A)]), source="mqtt", topic="t/a1", raw=b"%d" % i)

            def backlog(expected: int = min(i, 2)) -> bool:
                return batcher.letters_waiting == expected

            await until(backlog, "the worker to take the first letter")
        batcher.add(IngestOutcome(rejected=[("lost", None)]), source="mqtt", topic="t/x", raw=b"x")
        assert batcher.stats.dead_letters_dropped == 1
        assert sink.letters == []  # add() did not wait for the blocked sink
        gate.set()
    assert [(letter.reason, letter.raw, letter.tenant_id, letter.device) for letter in sink.letters] == [
        ("bad 0", b"0", "tenant-a", "a1"),
        ("bad 1", b"1", "tenant-a", "a1"),
        ("bad 2", b"2", "tenant-a", "a1"),
    ]
    assert {letter.thread for letter in sink.letters} != {threading.get_ident()}
    assert batcher.rejected == {("tenant-a", "a1"): 3, ("", "t/x"): 1}
    assert batcher.stats.rejected == 4


def test_broker_urls() -> None:
    assert BrokerAddress.parse("mqtt://u%40x:p%3Aw@broker.local:1884") == BrokerAddress(
        "broker.local", 1884, "u@x", "p:w", tls=False
    )
    assert BrokerAddress.parse("mqtts://broker.local") == BrokerAddress("broker.local", 8883, tls=True)
    for url in ("", "http://broker:1883", "mqtt://:1883", "mqtt://broker:99999", "broker:1883"):
        with pytest.raises(SettingsError, match="IIP_DEVICES__MQTT_URL"):
            BrokerAddress.parse(url)
