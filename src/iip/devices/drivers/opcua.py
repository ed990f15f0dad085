"""OPC UA subscriptions, reads and writes with asyncua.

`subscribe()` creates one subscription with a data-change monitored item per mapped node; each
notification becomes a `Reading` with the value's source timestamp (server timestamp, then our
clock, when the server sends none) and a quality from its status code's severity. A supervisor
task watches the connection (subscription status changes, and a server-state probe every
`watchdog_s`); on loss it reports the device offline, reconnects with backoff, re-creates the
subscription (the server sends current values again) and reports it online. asyncua's own
auto-reconnect stays off so that the backoff and the status reports are ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import time
from collections.abc import Callable
from typing import Any, Literal

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.ua.uaerrors import UaError, UaStatusCodeError
from pydantic import BaseModel, ConfigDict, Field, model_validator

from iip.devices.drivers.base import (
    Backoff,
    CommandRejected,
    DeviceUnavailable,
    Driver,
    Reading,
    ReadingSink,
    StatusSink,
    Value,
)
from iip.devices.profiles import DeviceProfile, Protocol
from iip.kernel.errors import Invalid
from iip.telemetry.public import Quality

logger = logging.getLogger(__name__)

# What a lost or failing connection raises inside asyncua.
TRANSPORT_ERRORS = (OSError, ConnectionError, TimeoutError, UaError)
# Status codes that mean "no connection" rather than "the server refuses this".
CONNECTION_STATUSES = frozenset(
    {
        "BadTimeout",
        "BadCommunicationError",
        "BadConnectionClosed",
        "BadServerNotConnected",
        "BadServerHalted",
        "BadShutdown",
        "BadSessionClosed",
        "BadSessionIdInvalid",
        "BadSecureChannelClosed",
        "BadSecureChannelIdInvalid",
        "BadTooManySessions",
    }
)
INTEGER_VARIANTS: dict[ua.VariantType, tuple[int, int]] = {
    ua.VariantType.SByte: (-(2**7), 2**7 - 1),
    ua.VariantType.Byte: (0, 2**8 - 1),
    ua.VariantType.Int16: (-(2**15), 2**15 - 1),
    ua.VariantType.UInt16: (0, 2**16 - 1),
    ua.VariantType.Int32: (-(2**31), 2**31 - 1),
    ua.VariantType.UInt32: (0, 2**32 - 1),
    ua.VariantType.Int64: (-(2**63), 2**63 - 1),
    ua.VariantType.UInt64: (0, 2**64 - 1),
}
FLOAT_VARIANTS = frozenset({ua.VariantType.Float, ua.VariantType.Double})
FLOAT32_MAX = 3.4028234663852886e38


class OpcUaConnection(BaseModel):
    """How to reach one OPC UA server (stored as JSON on the device)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: str = Field(pattern=r"^opc\.tcp://[^\s/]+", max_length=500, description="opc.tcp://host:port/path")
    security: Literal["none"] = Field(default="none", description="message security; only `none` for now")
    username: str | None = Field(default=None, min_length=1, max_length=200)
    password: str | None = Field(default=None, max_length=200, repr=False)
    timeout_s: float = Field(default=4.0, gt=0, le=60, description="wait for each request")
    publish_interval_ms: float = Field(default=250, ge=10, le=60_000, description="subscription publishing interval")
    watchdog_s: float = Field(default=1.0, gt=0, le=300, description="connection probe period")
    reconnect_min_s: float = Field(default=0.5, gt=0, le=300)
    reconnect_max_s: float = Field(default=30.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _check(self) -> OpcUaConnection:
        if self.password is not None and self.username is None:
            raise ValueError("a password needs a username")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        return self


def quality_of(status: ua.StatusCode | None) -> Quality:
    if status is None or status.is_good():
        return Quality.GOOD
    return Quality.UNCERTAIN if status.is_uncertain() else Quality.BAD


def _epoch_ms(stamp: dt.datetime | None) -> int | None:
    if stamp is None:
        return None
    if stamp.tzinfo is None:  # OPC UA timestamps are UTC
        stamp = stamp.replace(tzinfo=dt.UTC)
    return int(stamp.timestamp() * 1000)


def _plain(value: Any) -> Value | None:
    """A Python value the platform keeps (numbers, booleans, text) from a variant's value."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, ua.LocalizedText):
        return value.Text
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


def _status_name(status: ua.StatusCode) -> str:
    return str(status.name)


def variant_value(metric: str, value: Value, variant: ua.VariantType) -> Value:
    """`value` as the node's variant type holds it; what it cannot hold is rejected, never clipped."""
    if variant is ua.VariantType.String:
        if not isinstance(value, str):
            raise CommandRejected(f"metric {metric!r} takes text, got {value!r}", code="invalid_value")
        return value
    if variant is ua.VariantType.Boolean:
        if isinstance(value, bool) or (isinstance(value, int | float) and value in {0, 1}):
            return bool(value)
        raise CommandRejected(f"metric {metric!r} takes true/false, got {value!r}", code="invalid_value")
    if isinstance(value, str) or not math.isfinite(value):
        raise CommandRejected(f"metric {metric!r} takes a number, got {value!r}", code="invalid_value")
    if variant in INTEGER_VARIANTS:
        low, high = INTEGER_VARIANTS[variant]
        if value != int(value):
            raise CommandRejected(f"metric {metric!r} takes a whole number, got {value!r}", code="invalid_value")
        if not low <= int(value) <= high:
            raise CommandRejected(
                f"{value} is out of range for {variant.name} ({low}..{high})", code="value_out_of_range"
            )
        return int(value)
    if variant in FLOAT_VARIANTS:
        if variant is ua.VariantType.Float and abs(value) > FLOAT32_MAX:
            raise CommandRejected(f"{value} is out of range for Float", code="value_out_of_range")
        return float(value)
    raise CommandRejected(f"metric {metric!r}: nodes of type {variant.name} cannot be written", code="unsupported_type")


class _Notifications:
    """asyncua subscription handler of one connection (`generation`): queues readings, reports loss."""

    def __init__(self, driver: OpcUaDriver, generation: int) -> None:
        self.driver = driver
        self.generation = generation

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        if self.generation == self.driver.generation:
            self.driver.queue_value(node.nodeid, data.monitored_item.Value)

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        if self.generation == self.driver.generation and not status.Status.is_good():
            self.driver.connection_lost(f"subscription status {_status_name(status.Status)}")


class OpcUaDriver(Driver):
    protocol = Protocol.OPCUA
    connection_model = OpcUaConnection
    push = True

    def __init__(
        self, profile: DeviceProfile, connection: OpcUaConnection, *, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(profile, connection)
        self.settings = connection
        self._clock = clock
        self.nodes: dict[str, ua.NodeId] = {}
        for metric in profile.metrics:
            if metric.opcua is None:
                continue
            try:
                self.nodes[metric.name] = ua.NodeId.from_string(metric.opcua.node_id)
            except (ValueError, UaError) as err:
                raise Invalid(
                    f"metric {metric.name!r}: {metric.opcua.node_id!r} is not an OPC UA node id", code="bad_node_id"
                ) from err
        if not self.nodes:
            raise Invalid(f"profile {profile.name!r} maps no metric to OPC UA nodes", code="no_opcua_mapping")
        self._metrics_of: dict[ua.NodeId, list[str]] = {}
        for name, node_id in self.nodes.items():
            self._metrics_of.setdefault(node_id, []).append(name)
        self.backoff = Backoff(connection.reconnect_min_s, connection.reconnect_max_s)
        self.generation = 0  # bumped per connection, so late notifications of an old one are ignored
        self._client: Client | None = None
        self._connect_lock = asyncio.Lock()
        self._variant_types: dict[str, ua.VariantType] = {}
        self._callback: ReadingSink | None = None
        self._status: StatusSink | None = None
        self._queue: asyncio.Queue[Reading] = asyncio.Queue()
        self._lost = asyncio.Event()
        self._lost_reason = ""
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def connected(self) -> bool:
        return self._client is not None and not self._lost.is_set()

    # ------------------------------------------------------------------ connection

    async def connect(self) -> None:
        async with self._connect_lock:
            if self._client is not None and not self._lost.is_set():
                return
            await self._discard_client()
            client = Client(
                self.settings.endpoint, timeout=self.settings.timeout_s, watchdog_intervall=self.settings.watchdog_s
            )
            client.name = client.description = f"iip {self.profile.name}"
            if self.settings.username:
                client.set_user(self.settings.username)
            if self.settings.password:
                client.set_password(self.settings.password)
            try:
                await asyncio.wait_for(client.connect(), self.settings.timeout_s * 2)
            except TRANSPORT_ERRORS as err:
                with contextlib.suppress(Exception):
                    client.disconnect_socket()
                raise DeviceUnavailable(f"cannot connect to OPC UA server {self.settings.endpoint}: {err!r}") from err
            self.generation += 1
            self._client = client
            self._variant_types.clear()
            self._lost.clear()
            self._lost_reason = ""

    async def _discard_client(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            await asyncio.wait_for(client.disconnect(), self.settings.timeout_s)
        except TRANSPORT_ERRORS:
            logger.debug("disconnect from %s failed", self.settings.endpoint, exc_info=True)

    def connection_lost(self, reason: str) -> None:
        """The connection is gone: the supervisor reconnects, or the next call does."""
        if not self._lost.is_set():
            logger.info("OPC UA connection to %s lost: %s", self.settings.endpoint, reason)
            self._lost_reason = reason
            self._lost.set()

    async def _live_client(self) -> Client:
        if self._client is None or self._lost.is_set():
            if self._tasks:  # the supervisor owns reconnecting while subscribed
                raise DeviceUnavailable(
                    f"OPC UA server {self.settings.endpoint} is reconnecting: {self._lost_reason or 'not connected'}"
                )
            await self.connect()
        if self._client is None:  # closed while connecting
            raise DeviceUnavailable(f"OPC UA server {self.settings.endpoint} is not connected")
        return self._client

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                if (current := asyncio.current_task()) is not None and current.cancelling():
                    raise  # close() itself is being cancelled
        self.generation += 1
        await self._discard_client()
        self._callback = self._status = None

    # ------------------------------------------------------------------ reads

    def _reading(self, metric: str, value: ua.DataValue) -> Reading:
        status = value.StatusCode
        quality = quality_of(status)
        ts_ms = _epoch_ms(value.SourceTimestamp) or _epoch_ms(value.ServerTimestamp) or int(self._clock() * 1000)
        plain = _plain(value.Value.Value if value.Value is not None else None)
        detail = "" if status is None or quality is Quality.GOOD else _status_name(status)
        if plain is None and quality is not Quality.BAD:
            quality, detail = Quality.BAD, detail or "no value"
        return Reading(metric, ts_ms, plain, quality, detail)

    def queue_value(self, node_id: ua.NodeId, value: ua.DataValue) -> None:
        for metric in self._metrics_of.get(node_id, ()):
            self._queue.put_nowait(self._reading(metric, value))

    async def read(self) -> list[Reading]:
        client = await self._live_client()
        metrics = list(self.nodes)
        try:
            values = await client.read_attributes([client.get_node(self.nodes[m]) for m in metrics])
        except UaStatusCodeError as err:
            if _status_name(ua.StatusCode(err.code)) in CONNECTION_STATUSES:
                self.connection_lost(str(err))
                raise DeviceUnavailable(f"OPC UA server {self.settings.endpoint}: {err}") from err
            ts_ms = int(self._clock() * 1000)
            return [Reading(m, ts_ms, None, Quality.BAD, _status_name(ua.StatusCode(err.code))) for m in metrics]
        except TRANSPORT_ERRORS as err:
            self.connection_lost(repr(err))
            raise DeviceUnavailable(f"OPC UA server {self.settings.endpoint} did not answer a read: {err!r}") from err
        return [self._reading(metric, value) for metric, value in zip(metrics, values, strict=True)]

    # ------------------------------------------------------------------ subscription

    async def subscribe(self, callback: ReadingSink, status: StatusSink | None = None) -> None:
        if self._tasks:
            raise Invalid("this driver is already subscribed", code="already_subscribed")
        await self._live_client()
        self._callback, self._status = callback, status
        try:
            await self._create_subscription()
        except DeviceUnavailable:
            self._callback = self._status = None
            await self._discard_client()
            raise
        self._tasks = [
            asyncio.create_task(self._pump(), name=f"opcua-pump-{self.profile.name}"),
            asyncio.create_task(self._supervise(), name=f"opcua-supervisor-{self.profile.name}"),
        ]

    async def _create_subscription(self) -> None:
        client = self._client
        if client is None or self._lost.is_set():
            raise DeviceUnavailable(f"OPC UA server {self.settings.endpoint} is not connected")
        node_ids = list(self._metrics_of)
        try:
            async with asyncio.timeout(self.settings.timeout_s * 2):
                subscription = await client.create_subscription(
                    self.settings.publish_interval_ms, _Notifications(self, self.generation)
                )
                results = await subscription.subscribe_data_change([client.get_node(n) for n in node_ids])
        except TRANSPORT_ERRORS as err:
            self.connection_lost(repr(err))
            raise DeviceUnavailable(f"cannot subscribe to OPC UA server {self.settings.endpoint}: {err!r}") from err
        ts_ms = int(self._clock() * 1000)
        for node_id, result in zip(node_ids, results if isinstance(results, list) else [results], strict=True):
            if isinstance(result, ua.StatusCode):  # the server refused this node's monitored item
                for metric in self._metrics_of[node_id]:
                    self._queue.put_nowait(Reading(metric, ts_ms, None, Quality.BAD, _status_name(result)))

    async def _pump(self) -> None:
        """Hands queued readings to the callback in batches (what arrived while it was busy)."""
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            if self._callback is None:
                continue
            try:
                await self._callback(batch)
            except Exception:
                logger.exception("reading callback failed for OPC UA device %s", self.profile.name)

    async def _report(self, online: bool, reason: str) -> None:
        if self._status is None:
            return
        try:
            await self._status(online, reason)
        except Exception:
            logger.exception("status callback failed for OPC UA device %s", self.profile.name)

    async def _watch(self) -> str:
        """Returns why the connection was lost, once it is."""
        while True:
            try:
                await asyncio.wait_for(self._lost.wait(), self.settings.watchdog_s)
            except TimeoutError:
                pass
            else:
                return self._lost_reason
            client = self._client
            if client is None:
                return "not connected"
            try:
                await asyncio.wait_for(client.nodes.server_state.read_value(), self.settings.timeout_s)
            except TRANSPORT_ERRORS as err:
                self.connection_lost(f"server does not answer: {err!r}")

    async def _supervise(self) -> None:
        while True:
            reason = await self._watch()
            await self._report(False, reason)
            self.backoff.reset()
            while True:
                try:
                    await self.connect()
                    await self._create_subscription()
                    break
                except DeviceUnavailable as err:
                    logger.info("OPC UA device %s still unavailable: %s", self.profile.name, err.message)
                    await asyncio.sleep(self.backoff.next())
            logger.info("OPC UA device %s reconnected and re-subscribed", self.profile.name)
            await self._report(True, "")

    # ------------------------------------------------------------------ writes

    async def write(self, metric: str, value: Value, timeout: float) -> None:  # noqa: ASYNC109 - the ack deadline is part of a command
        self.writable_metric(metric)
        node_id = self.nodes.get(metric)
        if node_id is None:
            raise CommandRejected(f"metric {metric!r} has no OPC UA node", code="no_opcua_mapping")
        try:
            async with asyncio.timeout(timeout):
                client = await self._live_client()
                node = client.get_node(node_id)
                variant = self._variant_types.get(metric)
                if variant is None:
                    variant = self._variant_types[metric] = await node.read_data_type_as_variant_type()
                converted = variant_value(metric, value, variant)
                # Raises for any status but Good: the server's answer is the acknowledgement.
                await node.write_value(ua.DataValue(ua.Variant(converted, variant)))
        except TimeoutError as err:
            raise DeviceUnavailable(
                f"OPC UA server {self.settings.endpoint} did not confirm {metric!r} within {timeout:g} s",
                code="command_timeout",
            ) from err
        except UaStatusCodeError as err:
            name = _status_name(ua.StatusCode(err.code))
            if name in CONNECTION_STATUSES:
                self.connection_lost(name)
                raise DeviceUnavailable(f"OPC UA server {self.settings.endpoint}: {name}") from err
            raise CommandRejected(
                f"the server refused {metric!r}: {name}", code="opcua_status", opcua_status=name
            ) from err
        except TRANSPORT_ERRORS as err:
            self.connection_lost(repr(err))
            raise DeviceUnavailable(
                f"OPC UA server {self.settings.endpoint} failed writing {metric!r}: {err!r}"
            ) from err
