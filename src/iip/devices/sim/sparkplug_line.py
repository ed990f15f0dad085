"""The packaging line as a Sparkplug B 3.0 edge node with one device per machine (aiomqtt).

What the platform's host application expects of an edge node, and what this one does:

- Each MQTT connection carries an NDEATH will holding that connection's `bdSeq` (0..255, one more
  per connection). After connecting it publishes NBIRTH (seq 0, `bdSeq`, `Node Control/Rebirth`
  and the node's metrics) and one DBIRTH per device; births name every metric with its alias and
  datatype and carry the current values.
- DDATA (and NDATA for the node's own metrics) report by exception: only the metrics whose value
  changed (numbers by more than a small deadband), by alias, without names or datatypes. Every
  message but NDEATH takes the next seq, wrapping at 256.
- NCMD `Node Control/Rebirth` makes it publish NBIRTH and DBIRTHs again (same `bdSeq`, seq from 0).
- DCMD writes to device metrics the profile marks writable; the device takes them and reports the
  commanded metrics in a DDATA sent at once, changed or not (the host takes that report as the
  acknowledgement). A command the device refuses is logged and changes nothing.
- With a primary host id it waits for that host's STATE `online` before its births, and when the
  host goes offline it publishes NDEATH and reconnects (Sparkplug 3.0 primary host behaviour).
- A clean stop publishes NDEATH before disconnecting, since a clean disconnect suppresses the will.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiomqtt

from iip.devices.codecs import sparkplug as spb
from iip.devices.ingest.mqtt import BrokerAddress
from iip.devices.profiles import DataType, DeviceProfile
from iip.devices.sim.mqtt_devices import stop_task
from iip.devices.sim.signals import DeviceModel, Reading, SetpointError

logger = logging.getLogger(__name__)

TYPE_OF: dict[DataType, spb.DataType] = {
    DataType.BOOL: spb.DataType.BOOLEAN,
    DataType.INT16: spb.DataType.INT16,
    DataType.UINT16: spb.DataType.UINT16,
    DataType.INT32: spb.DataType.INT32,
    DataType.UINT32: spb.DataType.UINT32,
    DataType.INT64: spb.DataType.INT64,
    DataType.UINT64: spb.DataType.UINT64,
    DataType.FLOAT32: spb.DataType.FLOAT,
    DataType.FLOAT64: spb.DataType.DOUBLE,
    DataType.STRING: spb.DataType.STRING,
}
DEADBAND = 0.002  # relative change of a number that is reported
DEATH_QOS = 1  # NDEATH (will and clean stop); births, data and commands use QoS 0
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 15.0
KEEPALIVE_S = 30


@dataclass(frozen=True, slots=True)
class SparkplugDevice:
    """A simulated device behind the edge node."""

    device_id: str
    key: str
    profile: DeviceProfile
    model: DeviceModel


@dataclass(frozen=True, slots=True)
class _Definition:
    name: str  # Sparkplug metric name
    metric: str  # profile metric name
    alias: int
    datatype: spb.DataType
    writable: bool


@dataclass(slots=True)
class _Catalog:
    """The metrics of the node or of one device, and the values last reported."""

    model: DeviceModel
    definitions: list[_Definition]
    reported: dict[str, Reading] = field(default_factory=dict)

    def find(self, metric: spb.Metric) -> _Definition | None:
        for definition in self.definitions:
            if metric.alias is not None and metric.alias == definition.alias:
                return definition
            if metric.name is not None and metric.name == definition.name:
                return definition
        return None


def _definitions(profile: DeviceProfile, first_alias: int) -> list[_Definition]:
    return [
        _Definition(
            m.sparkplug.metric if m.sparkplug else m.name, m.name, first_alias + i, TYPE_OF[m.data_type], m.writable
        )
        for i, m in enumerate(profile.metrics)
    ]


def _wire_value(value: Reading, datatype: spb.DataType) -> Reading:
    if datatype is spb.DataType.BOOLEAN:
        return bool(value)
    if datatype is spb.DataType.STRING:
        return str(value)
    if isinstance(value, str):
        raise TypeError(f"a {datatype.label} metric cannot take text {value!r}")
    if datatype in {spb.DataType.FLOAT, spb.DataType.DOUBLE}:
        return float(value)
    return round(value)  # integers


def _changed(old: Reading | None, new: Reading) -> bool:
    if old is None or type(old) is not type(new):
        return True
    if isinstance(new, float) and isinstance(old, float):
        return abs(new - old) > max(abs(old) * DEADBAND, 1e-9) or math.isnan(new) != math.isnan(old)
    return old != new


class _HostOffline(Exception):
    """The primary host went offline: leave the broker and come back."""


@dataclass(slots=True)
class EdgeNodeStats:
    connections: int = 0
    births: int = 0  # NBIRTHs published
    data_messages: int = 0  # NDATA and DDATA
    commands: int = 0  # NCMD and DCMD taken
    refused_commands: int = 0


class SparkplugEdgeNode:
    """An edge node publishing its devices' models; `publish_changes()` sends what changed."""

    def __init__(
        self,
        broker: BrokerAddress,
        group_id: str,
        edge_node_id: str,
        node_profile: DeviceProfile,
        node_model: DeviceModel,
        devices: Sequence[SparkplugDevice],
        *,
        primary_host_id: str = "",
        client_id: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.broker = broker
        self.group_id = group_id
        self.edge_node_id = edge_node_id
        self.primary_host_id = primary_host_id
        self.client_id = client_id or f"iip-sim-{group_id}-{edge_node_id}"
        self.devices = list(devices)
        self.stats = EdgeNodeStats()
        self.bd_seq = 0  # of the current (or next) connection
        self._clock = clock
        self._node = _Catalog(node_model, _definitions(node_profile, 2))  # alias 1: Node Control/Rebirth
        self._catalogs: dict[str, _Catalog] = {}
        alias = 2 + len(node_profile.metrics)
        for device in self.devices:
            self._catalogs[device.device_id] = _Catalog(device.model, _definitions(device.profile, alias))
            alias += len(device.profile.metrics)
        self._seq = 0
        self._born = False
        self._client: aiomqtt.Client | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._births_seen = asyncio.Event()
        self._host_online_at: int | None = None  # STATE timestamp of the primary host's current session

    # topics

    def topic(self, message_type: spb.MessageType, device_id: str | None = None) -> str:
        return str(spb.EdgeTopic(self.group_id, message_type, self.edge_node_id, device_id))

    @property
    def born(self) -> bool:
        return self._born

    # life cycle

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"sparkplug edge node {self.edge_node_id}")

    async def wait_born(self) -> None:
        await self._births_seen.wait()

    async def stop(self) -> None:
        self._stopping = True
        async with self._lock:
            client, born = self._client, self._born
            self._born = False
            if client is not None and born:
                with contextlib.suppress(aiomqtt.MqttError):
                    await client.publish(self.topic(spb.MessageType.NDEATH), self._death(), qos=DEATH_QOS, timeout=2)
        task, self._task = self._task, None
        if task is not None:
            await stop_task(task)

    def _death(self) -> bytes:
        bd_seq = spb.Metric(name=spb.BD_SEQ_METRIC, datatype=spb.DataType.UINT64, value=self.bd_seq)
        return spb.encode_payload(spb.Payload(metrics=(bd_seq,)))

    async def _run(self) -> None:
        delay, reported = RECONNECT_MIN_S, False
        while not self._stopping:
            will = aiomqtt.Will(self.topic(spb.MessageType.NDEATH), self._death(), qos=DEATH_QOS, retain=False)
            try:
                async with aiomqtt.Client(
                    self.broker.host,
                    self.broker.port,
                    username=self.broker.username,
                    password=self.broker.password,
                    identifier=self.client_id,
                    will=will,
                    clean_session=True,
                    keepalive=KEEPALIVE_S,
                    timeout=10,
                    tls_context=ssl.create_default_context() if self.broker.tls else None,
                ) as client:
                    self.stats.connections += 1
                    delay, reported = RECONNECT_MIN_S, False
                    await self._session(client)
            except aiomqtt.MqttError as err:
                # once per outage, not at every retry
                logger.log(
                    logging.DEBUG if reported else logging.WARNING,
                    "Sparkplug edge node %s: broker %s:%s: %s; retrying",
                    self.edge_node_id,
                    self.broker.host,
                    self.broker.port,
                    err,
                )
                reported = True
            except _HostOffline:
                logger.info(
                    "Sparkplug edge node %s: primary host %s is offline", self.edge_node_id, self.primary_host_id
                )
            finally:
                self._client = None
                self._born = False
            self.bd_seq = (self.bd_seq + 1) % spb.SEQ_MODULUS  # each connection has its own
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def _session(self, client: aiomqtt.Client) -> None:
        await client.subscribe(self.topic(spb.MessageType.NCMD), qos=1)
        await client.subscribe(f"{spb.NAMESPACE}/{self.group_id}/{spb.MessageType.DCMD}/{self.edge_node_id}/+", qos=1)
        if self.primary_host_id:
            await client.subscribe(str(spb.StateTopic(self.primary_host_id)), qos=1)
        self._client = client
        if not self.primary_host_id:
            await self.rebirth()
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            await self._on_message(str(message.topic), payload)

    # births and data

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % spb.SEQ_MODULUS
        return self._seq

    def _birth_metrics(self, catalog: _Catalog, now: int) -> list[spb.Metric]:
        readings = catalog.model.readings()
        metrics = []
        for definition in catalog.definitions:
            value = _wire_value(readings[definition.metric], definition.datatype)
            catalog.reported[definition.name] = value
            metrics.append(
                spb.Metric(
                    name=definition.name,
                    alias=definition.alias,
                    timestamp=now,
                    datatype=definition.datatype,
                    value=value,
                )
            )
        return metrics

    async def rebirth(self) -> None:
        """Publish NBIRTH (seq 0) and every DBIRTH with the current values."""
        async with self._lock:
            client = self._client
            if client is None:
                return
            now = self._now_ms()
            node_metrics = [
                spb.Metric(name=spb.BD_SEQ_METRIC, timestamp=now, datatype=spb.DataType.UINT64, value=self.bd_seq),
                spb.Metric(name=spb.REBIRTH_METRIC, alias=1, timestamp=now, datatype=spb.DataType.BOOLEAN, value=False),
                *self._birth_metrics(self._node, now),
            ]
            self._seq = 0
            payload = spb.Payload(timestamp=now, metrics=tuple(node_metrics), seq=0)
            await client.publish(self.topic(spb.MessageType.NBIRTH), spb.encode_payload(payload), qos=0)
            for device in self.devices:
                metrics = self._birth_metrics(self._catalogs[device.device_id], now)
                payload = spb.Payload(timestamp=now, metrics=tuple(metrics), seq=self._next_seq())
                topic = self.topic(spb.MessageType.DBIRTH, device.device_id)
                await client.publish(topic, spb.encode_payload(payload), qos=0)
            self._born = True
            self.stats.births += 1
            self._births_seen.set()

    def _changes(self, catalog: _Catalog, now: int) -> list[spb.Metric]:
        readings = catalog.model.readings()
        changed = []
        for definition in catalog.definitions:
            value = _wire_value(readings[definition.metric], definition.datatype)
            if _changed(catalog.reported.get(definition.name), value):
                catalog.reported[definition.name] = value
                changed.append(
                    spb.Metric(alias=definition.alias, timestamp=now, datatype=definition.datatype, value=value)
                )
        return changed

    async def publish_changes(self, device_ids: Sequence[str] | None = None) -> None:
        """NDATA and DDATA with what changed since it was last reported (all devices, or those named)."""
        async with self._lock:
            client = self._client
            if client is None or not self._born:
                return
            now = self._now_ms()
            messages: list[tuple[str, list[spb.Metric]]] = []
            if device_ids is None:
                messages.append((self.topic(spb.MessageType.NDATA), self._changes(self._node, now)))
            for device in self.devices:
                if device_ids is None or device.device_id in device_ids:
                    topic = self.topic(spb.MessageType.DDATA, device.device_id)
                    messages.append((topic, self._changes(self._catalogs[device.device_id], now)))
            try:
                for topic, metrics in messages:
                    if not metrics:
                        continue
                    payload = spb.Payload(timestamp=now, metrics=tuple(metrics), seq=self._next_seq())
                    await client.publish(topic, spb.encode_payload(payload, with_datatypes=False), qos=0)
                    self.stats.data_messages += 1
            except aiomqtt.MqttError as err:
                logger.debug("Sparkplug edge node %s: publish failed: %s", self.edge_node_id, err)
                self._born = False  # the connection loop reconnects and births again

    # commands

    async def _on_message(self, topic: str, data: bytes) -> None:
        try:
            parsed = spb.parse_topic(topic)
        except spb.SparkplugError as err:
            logger.info("Sparkplug edge node %s: %s", self.edge_node_id, err.message)
            return
        if isinstance(parsed, spb.StateTopic):
            await self._on_state(data)
            return
        try:
            payload = spb.decode_payload(data)
        except spb.SparkplugError as err:
            logger.info("Sparkplug edge node %s: %s on %s", self.edge_node_id, err.message, topic)
            return
        if parsed.message_type is spb.MessageType.NCMD:
            await self._on_node_command(payload)
        elif parsed.message_type is spb.MessageType.DCMD and parsed.device_id is not None:
            await self._on_device_command(parsed.device_id, payload)

    async def _on_state(self, data: bytes) -> None:
        try:
            state = spb.decode_state(data)
        except spb.SparkplugError as err:
            logger.info("Sparkplug edge node %s: %s", self.edge_node_id, err.message)
            return
        if state.online:
            self._host_online_at = state.timestamp
            if not self._born:
                await self.rebirth()
            return
        if self._host_online_at is not None and state.timestamp < self._host_online_at:
            return  # the death of an earlier session of the host, delivered late
        if self._born:
            async with self._lock:
                if self._client is not None:
                    await self._client.publish(self.topic(spb.MessageType.NDEATH), self._death(), qos=DEATH_QOS)
                self._born = False
            raise _HostOffline

    async def _on_node_command(self, payload: spb.Payload) -> None:
        for metric in payload.metrics:
            if metric.name == spb.REBIRTH_METRIC or metric.alias == 1:
                if metric.value is True or metric.value == 1:
                    self.stats.commands += 1
                    await self.rebirth()
                return
        logger.info("Sparkplug edge node %s: NCMD without a metric it takes", self.edge_node_id)

    async def _on_device_command(self, device_id: str, payload: spb.Payload) -> None:
        catalog = self._catalogs.get(device_id)
        if catalog is None:
            logger.info("Sparkplug edge node %s: DCMD for unknown device %s", self.edge_node_id, device_id)
            return
        changes: dict[str, Reading] = {}
        try:
            for metric in payload.metrics:
                definition = catalog.find(metric)
                if definition is None or not definition.writable:
                    raise SetpointError(f"metric {metric.name or metric.alias!r} cannot be written")
                typed = spb.with_datatype(metric, definition.datatype)
                if typed.value is None or not isinstance(typed.value, int | float | str):
                    raise SetpointError(f"metric {definition.name!r} needs a value")
                changes[definition.metric] = typed.value
            catalog.model.apply(changes)
        except (SetpointError, spb.SparkplugError) as err:
            self.stats.refused_commands += 1
            logger.info("Sparkplug device %s/%s refused a command: %s", self.edge_node_id, device_id, err)
            return
        self.stats.commands += 1
        # Reported even when unchanged: the report of the commanded value is the acknowledgement.
        for definition in catalog.definitions:
            if definition.metric in changes:
                catalog.reported.pop(definition.name, None)
        await self.publish_changes([device_id])
