"""The embedded broker with real paho clients: who may connect, the ThingsBoard topic rewrite, topic
rights, and MQTT ingest running on it through `ingest_lifespan`."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from iip.devices.codecs.mqtt_json import NO_DEVICE_ON_THINGSBOARD_TOPIC, THINGSBOARD_TOPIC
from iip.devices.ingest.broker import EmbeddedBroker
from iip.devices.ingest.mqtt import SERVICE_KEY, MqttIngest, ingest_lifespan
from iip.kernel.bus import MemoryBus
from iip.kernel.db import Database
from iip.kernel.errors import Unavailable
from iip.kernel.runtime import Runtime
from iip.kernel.settings import DevicesSettings, Settings
from tests.devices.test_mqtt_ingest import WAIT, Collector, Directory, Sink, free_port, publish_all, until
from tests.services import port_open

TENANT, TENANT_ID = "acme", "tenant-acme"
TOKENS = {"token-m1": "m1", "token-m2": "m2"}
PLATFORM_ID = "iip-platform-test"


def directory() -> Directory:
    return Directory(TENANT, TENANT_ID, ["m1", "m2"], TOKENS)


@pytest.fixture
async def broker() -> AsyncIterator[EmbeddedBroker]:
    async with EmbeddedBroker(free_port(), directory(), platform_client_id=PLATFORM_ID) as running:
        yield running


def credentials(broker: EmbeddedBroker) -> tuple[str, str]:
    url = urlsplit(broker.platform_url)
    return unquote(url.username or ""), unquote(url.password or "")


class Client:
    """A paho client in its own thread; records the CONNACK and every message."""

    def __init__(
        self,
        port: int,
        *,
        client_id: str = "",
        username: str | None = None,
        password: str | None = None,
        **options: Any,
    ) -> None:
        self.paho = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"c-{uuid.uuid4().hex[:8]}",
            reconnect_on_failure=False,
            **options,
        )
        if username is not None:
            self.paho.username_pw_set(username, password)
        self.connack: ReasonCode | None = None
        self.subacks: list[list[ReasonCode]] = []
        self.messages: list[tuple[str, bytes]] = []
        self._answered = threading.Event()
        self._lock = threading.Lock()
        self.paho.on_connect = self._on_connect
        self.paho.on_message = self._on_message
        self.paho.on_subscribe = self._on_subscribe
        self.paho.connect("127.0.0.1", port)
        self.paho.loop_start()
        assert self._answered.wait(WAIT), "no CONNACK"

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any) -> None:
        self.connack = reason
        self._answered.set()

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, codes: list[ReasonCode], properties: Any
    ) -> None:
        with self._lock:
            self.subacks.append(codes)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload)))

    @property
    def accepted(self) -> bool:
        return self.connack is not None and not self.connack.is_failure

    def subscribe(self, *topics: str) -> list[ReasonCode]:
        count = len(self.subacks)
        self.paho.subscribe([(topic, 1) for topic in topics])
        deadline = time.monotonic() + WAIT
        while len(self.subacks) == count:
            assert time.monotonic() < deadline, "no SUBACK"
            time.sleep(0.01)
        return self.subacks[-1]

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.paho.publish(topic, payload, qos=1)
        info.wait_for_publish(WAIT)

    def received(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()
        # Break the client <-> callback cycle, so the client is freed (and its sockets closed) at once.
        self.paho.on_connect = self.paho.on_message = self.paho.on_subscribe = None


async def connect(port: int, **options: Any) -> Client:
    return await asyncio.to_thread(Client, port, **options)


async def test_who_may_connect(broker: EmbeddedBroker) -> None:
    user, password = credentials(broker)
    port = broker.port
    cases: list[tuple[dict[str, Any], bool]] = [
        ({"username": user, "password": password}, True),
        ({"username": user, "password": password + "x"}, False),
        ({"username": user}, False),
        ({"username": "token-m1"}, True),
        ({"username": "token-nope"}, False),
        ({}, True),
        ({"client_id": PLATFORM_ID}, False),  # the platform's session is not for anyone else
        ({"client_id": PLATFORM_ID, "username": "token-m1"}, False),
        ({"client_id": PLATFORM_ID, "username": user, "password": password}, True),
    ]
    for options, accepted in cases:
        client = await connect(port, **options)
        assert client.accepted is accepted, options
        await asyncio.to_thread(client.close)


async def test_anonymous_clients_can_be_refused() -> None:
    async with EmbeddedBroker(free_port(), directory(), allow_anonymous=False) as broker:
        anonymous = await connect(broker.port)
        device = await connect(broker.port, username="token-m1")
        assert not anonymous.accepted
        assert device.accepted
        for client in (anonymous, device):
            await asyncio.to_thread(client.close)


async def test_thingsboard_messages_are_republished_under_the_device_topic(broker: EmbeddedBroker) -> None:
    user, password = credentials(broker)
    platform = await connect(broker.port, username=user, password=password)
    codes = await asyncio.to_thread(platform.subscribe, "iip/+/+/telemetry", THINGSBOARD_TOPIC)
    assert [code.value for code in codes] == [1, 1]
    device = await connect(broker.port, username="token-m2")
    anonymous = await connect(broker.port)
    await asyncio.to_thread(device.publish, THINGSBOARD_TOPIC, b'{"temp": 1}')
    await asyncio.to_thread(anonymous.publish, THINGSBOARD_TOPIC, b'{"temp": 2}')
    await until(lambda: len(platform.received()) == 2, "two messages")
    assert platform.received() == [
        (f"iip/{TENANT_ID}/m2/telemetry", b'{"temp": 1}'),  # the device's own topic, payload unchanged
        (THINGSBOARD_TOPIC, b'{"temp": 2}'),  # anonymous: nobody to attribute it to, passed as is
    ]
    for client in (platform, device, anonymous):
        await asyncio.to_thread(client.close)


async def test_a_device_publishes_and_subscribes_only_under_its_own_topics(broker: EmbeddedBroker) -> None:
    user, password = credentials(broker)
    platform = await connect(broker.port, username=user, password=password)
    await asyncio.to_thread(platform.subscribe, "#")
    device = await connect(broker.port, username="token-m1")
    for topic in (f"iip/{TENANT}/m2/telemetry", f"iip/{TENANT_ID}/m2/telemetry", "spBv1.0/g/NDATA/n", "other"):
        await asyncio.to_thread(device.publish, topic, b"refused")
    for topic in (f"iip/{TENANT}/m1/telemetry", f"iip/{TENANT_ID}/m1/telemetry", "v1/devices/me/attributes"):
        await asyncio.to_thread(device.publish, topic, b"allowed")
    # Messages of one connection arrive in order: once the allowed ones are in, the refused would be too.
    await until(lambda: len(platform.received()) >= 3, "the allowed messages")
    assert platform.received() == [
        (f"iip/{TENANT}/m1/telemetry", b"allowed"),
        (f"iip/{TENANT_ID}/m1/telemetry", b"allowed"),
        ("v1/devices/me/attributes", b"allowed"),
    ]
    codes = await asyncio.to_thread(device.subscribe, "iip/#", f"iip/{TENANT}/m1/commands", "v1/devices/me/rpc/+")
    assert [code.is_failure for code in codes] == [True, False, False]
    for client in (platform, device):
        await asyncio.to_thread(client.close)


async def test_nothing_is_lost_when_a_device_disconnects_right_after_publishing(broker: EmbeddedBroker) -> None:
    user, password = credentials(broker)
    platform = await connect(broker.port, username=user, password=password)
    await asyncio.to_thread(platform.subscribe, "iip/+/+/telemetry")
    for round_ in range(3):
        thingsboard = [(THINGSBOARD_TOPIC, b"tb-%d-%d" % (round_, i)) for i in range(40)]
        direct = [(f"iip/{TENANT}/m1/telemetry", b"direct-%d-%d" % (round_, i)) for i in range(40)]
        # publish_all disconnects as soon as the broker has acknowledged the last message
        await asyncio.gather(
            asyncio.to_thread(publish_all, broker.port, thingsboard, username="token-m2"),
            asyncio.to_thread(publish_all, broker.port, direct),
        )
    await until(lambda: len(platform.received()) >= 240, "every acknowledged message")
    received = platform.received()
    assert len(received) == 240
    assert sorted(payload for topic, payload in received if topic == f"iip/{TENANT_ID}/m2/telemetry") == sorted(
        b"tb-%d-%d" % (r, i) for r in range(3) for i in range(40)
    )
    assert sorted(payload for topic, payload in received if topic == f"iip/{TENANT}/m1/telemetry") == sorted(
        b"direct-%d-%d" % (r, i) for r in range(3) for i in range(40)
    )
    await asyncio.to_thread(platform.close)


async def test_a_port_in_use_is_a_clear_error(broker: EmbeddedBroker) -> None:
    with pytest.raises(Unavailable, match=f"cannot listen on 127.0.0.1:{broker.port}") as caught:
        async with EmbeddedBroker(broker.port):
            pass
    assert caught.value.instance_code == "mqtt_broker_unavailable"


async def test_the_platform_session_keeps_messages_while_ingest_is_away(broker: EmbeddedBroker) -> None:
    bus = MemoryBus()
    await bus.start()
    collector = Collector()
    await collector.attach(bus)
    settings = DevicesSettings(mqtt_url=broker.platform_url, mqtt_client_id=PLATFORM_ID, batch_max_ms=10)
    first = MqttIngest(settings, bus, directory(), Sink())
    await first.start()
    await first.wait_connected(WAIT)
    assert PLATFORM_ID in broker.connected_clients()
    await first.stop()
    # amqtt takes the disconnection in asynchronously; what it sends before is lost with the connection.
    await until(lambda: PLATFORM_ID not in broker.connected_clients(), "the broker to see the platform leave")
    now = int(time.time() * 1000)
    messages = [(f"iip/{TENANT}/m1/telemetry", orjson.dumps({"ts": now + i, "values": {"temp": i}})) for i in range(20)]
    await asyncio.to_thread(publish_all, broker.port, messages, username="token-m1")
    second = MqttIngest(settings, bus, directory(), Sink())
    await second.start()
    expected = {float(i) for i in range(20)}
    try:
        await until(lambda: {p.value for p in collector.points(TENANT_ID)} == expected, "the 20 queued messages")
    finally:
        await second.stop()
        await bus.close()
    # at least once: a message may come twice, as the same point, which the store takes once
    assert {(p.ts_ms, p.value) for p in collector.points(TENANT_ID)} == {(now + i, float(i)) for i in range(20)}


async def test_ingest_lifespan_runs_ingest_on_an_embedded_broker(tmp_path: Path) -> None:
    port = free_port()
    settings = Settings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'iip.db'}",
        devices=DevicesSettings(embedded_broker_port=port, mqtt_client_id=PLATFORM_ID, batch_max_ms=10),
    )
    bus = MemoryBus()
    await bus.start()
    runtime = Runtime(settings=settings, db=Database(settings.effective_database_url), bus=bus)
    collector = Collector()
    await collector.attach(bus)
    sink = Sink()
    try:
        async with ingest_lifespan(runtime, directory(), sink) as ingest:
            assert runtime.services[SERVICE_KEY] is ingest
            await ingest.wait_connected(WAIT)
            await asyncio.to_thread(
                publish_all, port, [(THINGSBOARD_TOPIC, b'{"temp": 21.5, "firmware": "1.2"}')], username="token-m1"
            )
            await asyncio.to_thread(publish_all, port, [(THINGSBOARD_TOPIC, b'{"temp": 0}')])
            await until(lambda: len(collector.points(TENANT_ID)) == 1, "the ThingsBoard device's point")
            await until(lambda: len(sink.letters) == 1, "the anonymous message's dead letter")
        assert SERVICE_KEY not in runtime.services
        assert not port_open("127.0.0.1", port)
    finally:
        await bus.close()
        runtime.db.engine.dispose()
    (batch,) = [b for b in collector.batches if b.tenant_id == TENANT_ID]
    assert [(p.device, p.metric, p.value) for p in batch.points()] == [("m1", "temperature", 21.5)]
    assert batch.attributes == {"m1": {"firmware": "1.2"}}
    (letter,) = sink.letters
    assert (letter.topic, letter.reason, letter.raw) == (
        THINGSBOARD_TOPIC,
        NO_DEVICE_ON_THINGSBOARD_TOPIC,
        b'{"temp": 0}',
    )
