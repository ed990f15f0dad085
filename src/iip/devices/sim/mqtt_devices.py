"""Simulated MQTT JSON devices: room sensors, and any number of lightweight devices for load tests.

Every device publishes `{"ts": ms, "values": {...}}` to `iip/{tenant}/{device}/telemetry` with QoS 1.
Room sensors share one connection and publish at each step of the plant. Load devices publish at
`rate` messages per second each, spread evenly over time, either over one connection per device
(what the platform's per-connected-device memory is measured with) or over a few shared ones.

Publishing is all these devices do, so the connections are a minimal MQTT 3.1.1 client of our own
(CONNECT, PUBLISH QoS 1 and its PUBACK, PINGREQ, DISCONNECT) on asyncio transports: a connection
costs a few kilobytes here, where a general-purpose client with its own tasks and timers costs
tens, and ten thousand of them connect without a thread each. Sessions are clean. Publishing starts
once every connection has been tried; from then on a message published while its connection is
down or has `max_inflight` messages unacknowledged is counted as dropped, as is one not yet
acknowledged when its connection is lost: load is shed, never queued.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import ssl
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson

from iip.devices.ingest.mqtt import BrokerAddress
from iip.devices.sim.signals import DeviceModel, load_device_values

logger = logging.getLogger(__name__)

KEEPALIVE_S = 60
CONNECT_TIMEOUT_S = 10.0
CONNECT_CONCURRENCY = 200  # connections being opened at once
RECONNECT_MIN_S = 1.0
RECONNECT_MAX_S = 30.0
SLOT_S = 0.1  # load devices are published in slots of about this length

_CONNACK, _PUBACK, _PINGRESP = 2, 4, 13
PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"
CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client id rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


async def stop_task(task: asyncio.Task[None]) -> None:
    """Cancel a task and wait for its end, cancelling again while it runs on.

    `asyncio.wait_for` before Python 3.12 swallows a cancellation that arrives as what it waits
    for completes (aiomqtt's publish uses it), so one `cancel()` does not always end a task.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
    if not task.cancelled() and (error := task.exception()) is not None:
        logger.error("%s ended with %r", task.get_name(), error)


def telemetry_topic(tenant: str, device: str) -> bytes:
    return f"iip/{tenant}/{device}/telemetry".encode()


def _remaining_length(length: int) -> bytes:
    out = bytearray()
    while True:
        length, digit = divmod(length, 128)
        out.append(digit | (0x80 if length else 0))
        if not length:
            return bytes(out)


def _field(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def connect_packet(client_id: str, keepalive_s: int, username: str | None, password: str | None) -> bytes:
    """MQTT 3.1.1 CONNECT with a clean session."""
    flags = 0x02
    payload = _field(client_id.encode())
    if username is not None:
        flags |= 0x80
        payload += _field(username.encode())
        if password is not None:
            flags |= 0x40
            payload += _field(password.encode())
    variable = _field(b"MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive_s)
    body = variable + payload
    return b"\x10" + _remaining_length(len(body)) + body


def publish_packet(topic: bytes, packet_id: int, payload: bytes) -> bytes:
    """PUBLISH with QoS 1, not retained."""
    body_length = 2 + len(topic) + 2 + len(payload)
    return b"\x32" + _remaining_length(body_length) + _field(topic) + struct.pack("!H", packet_id) + payload


@dataclass(slots=True)
class MqttStats:
    connections: int = 0  # configured
    connected: int = 0  # up now
    published: int = 0  # handed to the socket
    acknowledged: int = 0  # PUBACK received
    dropped: int = 0  # not sent (connection down or too many unacknowledged) or lost with a connection
    connects: int = 0  # successful CONNECTs, reconnects included


class MqttLink(asyncio.Protocol):
    """One publishing MQTT connection; `publish` never waits, it sends or counts a drop."""

    __slots__ = (
        "_buffer",
        "_connack",
        "_inflight",
        "_next_id",
        "_paused",
        "_stats",
        "_transport",
        "client_id",
        "last_sent",
        "max_inflight",
        "next_attempt",
        "retry_s",
    )

    def __init__(self, client_id: str, stats: MqttStats, max_inflight: int) -> None:
        self.client_id = client_id
        self.max_inflight = max_inflight
        self.last_sent = 0.0
        self.next_attempt = 0.0  # monotonic time of the next connection attempt
        self.retry_s = RECONNECT_MIN_S
        self._stats = stats
        self._transport: asyncio.Transport | None = None
        self._connack: asyncio.Future[int] | None = None
        self._buffer = bytearray()
        self._inflight: set[int] = set()
        self._next_id = 0
        self._paused = False

    @property
    def connected(self) -> bool:
        return self._transport is not None and self._connack is not None and self._connack.done()

    @property
    def closed(self) -> bool:
        """Neither connected nor connecting."""
        return self._transport is None

    async def connect(self, broker: BrokerAddress, keepalive_s: int = KEEPALIVE_S) -> None:
        """Open the connection and wait for CONNACK; `ConnectionError` or `TimeoutError` if it fails."""
        loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        context = ssl.create_default_context() if broker.tls else None
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await loop.create_connection(lambda: self, broker.host, broker.port, ssl=context)
            if self._transport is None:
                raise ConnectionError("connection closed before CONNECT")
            self._transport.write(connect_packet(self.client_id, keepalive_s, broker.username, broker.password))
            self.last_sent = time.monotonic()
            code = await self._connack
        if code:
            self.close()
            raise ConnectionError(f"broker refused the connection: {CONNACK_REASONS.get(code, code)}")
        self._stats.connected += 1
        self._stats.connects += 1
        self.retry_s = RECONNECT_MIN_S

    def publish(self, topic: bytes, payload: bytes) -> bool:
        transport = self._transport
        if transport is None or not self.connected or self._paused or len(self._inflight) >= self.max_inflight:
            self._stats.dropped += 1
            return False
        self._next_id = self._next_id % 65535 + 1
        self._inflight.add(self._next_id)
        transport.write(publish_packet(topic, self._next_id, payload))
        self.last_sent = time.monotonic()
        self._stats.published += 1
        return True

    def ping(self) -> None:
        if self._transport is not None and self.connected:
            self._transport.write(PINGREQ)
            self.last_sent = time.monotonic()

    def close(self) -> None:
        transport = self._transport
        if transport is not None:
            if self.connected:
                transport.write(DISCONNECT)
            transport.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - a stream connection
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.connected:
            self._stats.connected -= 1
        self._stats.dropped += len(self._inflight)
        self._inflight.clear()
        self._buffer.clear()
        self._transport = None
        self._paused = False
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(ConnectionError(str(exc) if exc else "connection closed"))
        self._connack = None

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= 2:
            length, multiplier, position = 0, 1, 1
            while True:
                if position >= len(buffer):
                    return  # the length is not complete yet
                digit = buffer[position]
                length += (digit & 0x7F) * multiplier
                multiplier *= 128
                position += 1
                if not digit & 0x80:
                    break
            end = position + length
            if len(buffer) < end:
                return
            self._packet(buffer[0] >> 4, bytes(buffer[position:end]))
            del buffer[:end]

    def _packet(self, kind: int, body: bytes) -> None:
        if kind == _PUBACK and len(body) >= 2:
            packet_id = struct.unpack("!H", body[:2])[0]
            if packet_id in self._inflight:
                self._inflight.remove(packet_id)
                self._stats.acknowledged += 1
        elif kind == _CONNACK and len(body) >= 2 and self._connack is not None and not self._connack.done():
            self._connack.set_result(body[1])


class MqttLinkPool:
    """Publishing connections to one broker, kept up: pinged when idle, reopened with backoff when lost."""

    def __init__(self, broker: BrokerAddress, client_ids: Sequence[str], *, max_inflight: int = 100) -> None:
        self.broker = broker
        self.stats = MqttStats(connections=len(client_ids))
        self.links = [MqttLink(client_id, self.stats, max_inflight) for client_id in client_ids]
        self._task: asyncio.Task[None] | None = None
        self._jitter = random.Random()  # noqa: S311 - spreads reconnects, nothing secret
        self._reported = False
        self.first_round = asyncio.Event()  # every connection tried once

    async def start(self) -> None:
        """Connect in the background (the broker may come later); `stats.connected` tells how far it got."""
        self._task = asyncio.create_task(self._keep_up(), name=f"mqtt links to {self.broker.host}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await stop_task(task)
        for link in self.links:
            link.close()
        await asyncio.sleep(0)  # let the transports close

    async def _keep_up(self) -> None:
        while True:
            now = time.monotonic()
            due = [link for link in self.links if link.closed and link.next_attempt <= now]
            for start in range(0, len(due), CONNECT_CONCURRENCY):
                await asyncio.gather(*(self._connect(link) for link in due[start : start + CONNECT_CONCURRENCY]))
            self.first_round.set()
            idle_before = time.monotonic() - KEEPALIVE_S / 2
            for link in self.links:
                if link.last_sent < idle_before:
                    link.ping()
            await asyncio.sleep(0.2 if due else 1.0)

    async def _connect(self, link: MqttLink) -> None:
        try:
            await link.connect(self.broker)
            if self._reported:
                logger.info("MQTT broker %s:%s reachable again", self.broker.host, self.broker.port)
                self._reported = False
        except (OSError, TimeoutError) as err:  # ConnectionError is an OSError
            link.close()
            link.next_attempt = time.monotonic() + link.retry_s * self._jitter.uniform(0.5, 1.0)
            link.retry_s = min(link.retry_s * 2, RECONNECT_MAX_S)
            if not self._reported:
                logger.warning("MQTT broker %s:%s: %s; retrying", self.broker.host, self.broker.port, err or "timeout")
                self._reported = True


class RoomSensors:
    """Room sensors sharing one connection; `publish()` sends each one's current readings."""

    def __init__(
        self,
        broker: BrokerAddress,
        tenant: str,
        sensors: Sequence[tuple[str, DeviceModel]],
        *,
        client_id: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tenant = tenant
        self.sensors = [(key, telemetry_topic(tenant, key), model) for key, model in sensors]
        self.pool = MqttLinkPool(broker, [client_id], max_inflight=max(100, 4 * len(self.sensors)))
        self._clock = clock

    @property
    def stats(self) -> MqttStats:
        return self.pool.stats

    async def start(self) -> None:
        await self.pool.start()

    async def stop(self) -> None:
        await self.pool.stop()

    def publish(self) -> None:
        if not self.pool.first_round.is_set():
            return  # still connecting for the first time
        link = self.pool.links[0]
        ts = int(self._clock() * 1000)
        for _, topic, model in self.sensors:
            values = {k: round(v, 2) if isinstance(v, float) else v for k, v in model.readings().items()}
            link.publish(topic, orjson.dumps({"ts": ts, "values": values}))


class LoadFleet:
    """`count` lightweight devices, each publishing `rate` messages per second, spread evenly over time.

    With `connections` 0 each device has its own connection (client id `{client_prefix}-{key}`);
    otherwise device i publishes over connection i mod `connections`.
    """

    def __init__(
        self,
        broker: BrokerAddress,
        tenant: str,
        keys: Callable[[int], str],
        count: int,
        *,
        rate: float,
        connections: int,
        client_prefix: str,
        seed: int = 1,
        clock: Callable[[], float] = time.time,
        time_scale: float = 1.0,
    ) -> None:
        if count < 0 or rate <= 0 or connections < 0:
            raise ValueError("count and connections cannot be negative, rate must be positive")
        self.tenant = tenant
        self.count = count
        self.rate = rate
        self._key = keys
        self._shared = connections > 0
        client_ids = (
            [f"{client_prefix}-{i + 1}" for i in range(min(connections, max(count, 1)))]
            if self._shared
            else [f"{client_prefix}-{keys(i)}" for i in range(count)]
        )
        per_link_rate = count * rate / max(len(client_ids), 1)
        self.pool = MqttLinkPool(broker, client_ids, max_inflight=max(100, math.ceil(4 * per_link_rate)))
        self._rng = random.Random(seed)  # noqa: S311 - simulation
        self._clock = clock
        self._time_scale = time_scale
        self._started = clock()
        self._task: asyncio.Task[None] | None = None
        interval = 1.0 / rate
        self.buckets = max(1, math.ceil(interval / SLOT_S))
        self.slot_s = interval / self.buckets

    @property
    def stats(self) -> MqttStats:
        return self.pool.stats

    async def start(self) -> None:
        await self.pool.start()
        self._started = self._clock()
        self._task = asyncio.create_task(self._publish_forever(), name="mqtt load devices")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await stop_task(task)
        await self.pool.stop()

    def publish_bucket(self, bucket: int) -> None:
        """Publish once for every device of one bucket (device i is in bucket i mod `buckets`)."""
        now = self._clock()
        ts = int(now * 1000)
        elapsed = (now - self._started) * self._time_scale
        links = self.pool.links
        shared = len(links)
        for index in range(bucket, self.count, self.buckets):
            link = links[index % shared] if self._shared else links[index]
            values = load_device_values(index, elapsed, self._rng)
            link.publish(telemetry_topic(self.tenant, self._key(index)), orjson.dumps({"ts": ts, "values": values}))

    async def _publish_forever(self) -> None:
        await self.pool.first_round.wait()  # not counting as dropped what the ramp-up could not send
        loop = asyncio.get_running_loop()
        next_slot = loop.time()
        bucket = 0
        while True:
            self.publish_bucket(bucket)
            bucket = (bucket + 1) % self.buckets
            next_slot += self.slot_s
            delay = next_slot - loop.time()
            if delay < -1.0:  # far behind (a busy machine): skip ahead rather than burst
                next_slot = loop.time()
                delay = 0.0
            await asyncio.sleep(max(delay, 0.0))
