"""The platform's own polling of the devices it connects to (Modbus TCP, OPC UA, simulated).

`PollingSupervisor` runs one `DeviceRunner` for every enabled registered device of those protocols
that is not behind a gateway (an edge agent polls those), with the driver `create_driver` builds
from the device's profile and stored connection. It follows the registry: every `reload_s` and on
`refresh()` it compares what the directory lists with what runs, starts runners for new devices,
stops those of devices removed, disabled or moved behind a gateway, and restarts a runner whose
profile or connection changed. A device whose connection the driver refuses is logged once and left
alone until its registry entry changes.

Readings of every device are collected into one `PointBatchBuilder` per (tenant, source) and
published on the bus as `TELEMETRY_POINTS` every `flush_ms`, or as soon as `max_batch_points` are
waiting. Numbers become points (booleans 1 or 0); text becomes a twin attribute. A reading without
a value (the device refused the read) becomes a point of quality BAD and value 0, as Sparkplug ingest
does, so the twin and the store show that the metric is failing; a text metric without a value is
skipped. A runner's online and offline reports are published at once as `DEVICE_STATUS`, and a
device that stops being polled while online is reported offline.

A batch the bus refuses is counted in `dropped_points` and not retried: the next poll reads the
devices again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from iip.devices.drivers.base import Backoff, Driver, Reading, create_driver
from iip.devices.drivers.runner import DeviceRunner
from iip.devices.profiles import DataType, DeviceProfile
from iip.devices.profiles import Protocol as DeviceProtocol
from iip.devices.registry_directory import ConnectedDevice
from iip.kernel.bus import Bus, BusError
from iip.kernel.errors import DomainError
from iip.telemetry.public import (
    DEVICE_STATUS,
    TELEMETRY_POINTS,
    DeviceStatus,
    PointBatch,
    PointBatchBuilder,
    Quality,
)

logger = logging.getLogger(__name__)

SERVICE_KEY = "devices.polling"  # key of the running supervisor in `Runtime.services`
POLLED = (DeviceProtocol.MODBUS, DeviceProtocol.OPCUA, DeviceProtocol.SIMULATED)
SOURCES: dict[DeviceProtocol, str] = {
    DeviceProtocol.MODBUS: "modbus",
    DeviceProtocol.OPCUA: "opcua",
    DeviceProtocol.SIMULATED: "sim",
}
STOPPED_REASON = "no longer polled by the platform (removed, disabled or moved behind a gateway)"

DeviceId = tuple[str, str]  # (tenant id, device key)
DriverFactory = Callable[[DeviceProtocol, DeviceProfile, Mapping[str, Any]], Driver]


class PolledDirectory(Protocol):
    """What the supervisor asks of the device directory (`DbDeviceDirectory` answers it)."""

    def connected(self, protocol: DeviceProtocol) -> tuple[ConnectedDevice, ...]: ...

    def invalidate(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PollSpec:
    """What a runner is built from; a change of any part restarts the device's runner."""

    protocol: DeviceProtocol
    profile: DeviceProfile
    connection: Mapping[str, Any]


@dataclass(slots=True)
class _Polled:
    spec: PollSpec
    runner: DeviceRunner


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def _pause(delay: float) -> None:
    """The runners' sleep, ending a runner whose cancellation a library swallowed.

    Python 3.11's `asyncio.wait_for` (inside pymodbus's connect) returns the inner result, here a
    refused connection, when the cancellation arrives as the connection fails: the runner takes it
    for an outage and would retry forever, with its `stop()` waiting.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
    await asyncio.sleep(delay)


def _default_driver(protocol: DeviceProtocol, profile: DeviceProfile, connection: Mapping[str, Any]) -> Driver:
    return create_driver(protocol, profile, connection)


class PollingSupervisor:
    """Runs and follows the platform's device runners; see the module docstring."""

    def __init__(
        self,
        bus: Bus,
        directory: PolledDirectory,
        *,
        reload_s: float = 5.0,
        flush_ms: int = 200,
        max_batch_points: int = 5_000,
        backoff: Callable[[], Backoff] = Backoff,
        driver_factory: DriverFactory = _default_driver,
    ) -> None:
        if reload_s <= 0 or flush_ms <= 0 or max_batch_points <= 0:
            raise ValueError("reload_s, flush_ms and max_batch_points must be positive")
        self._bus = bus
        self._directory = directory
        self.reload_s = reload_s
        self.flush_s = flush_ms / 1000
        self.max_batch_points = max_batch_points
        self._backoff = backoff
        self._driver_factory = driver_factory
        self._polled: dict[DeviceId, _Polled] = {}
        self.refused: dict[DeviceId, tuple[PollSpec, str]] = {}  # specs a driver refused, with why
        self._builders: dict[tuple[str, str], PointBatchBuilder] = {}  # (tenant id, source)
        self._buffered = 0
        self._full = asyncio.Event()
        self._reconcile_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self.published_points = 0
        self.published_batches = 0
        self.dropped_points = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the runners of the registry as it is now, then follow it; returns at once after the first look."""
        if self._tasks:
            return
        try:
            await self._reconcile()
        except Exception:  # the database may come back: the reload loop tries again
            logger.warning("cannot read the device registry for polling; retrying", exc_info=True)
        self._tasks = [
            asyncio.create_task(self._reload_loop(), name="devices-polling-reload"),
            asyncio.create_task(self._flush_loop(), name="devices-polling-flush"),
        ]

    async def stop(self) -> None:
        """Stop every runner (closing its driver) and publish what is buffered."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        async with self._reconcile_lock:
            polled, self._polled = self._polled, {}
            await asyncio.gather(*(item.runner.stop() for item in polled.values()))
        await self.flush()

    async def refresh(self) -> None:
        """Reload the registry now and start, stop or restart runners to match it."""
        self._directory.invalidate()
        await self._reconcile()

    # ------------------------------------------------------------------ what runs

    def runner(self, tenant_id: str, key: str) -> DeviceRunner | None:
        """The runner polling a device, if the platform polls it."""
        item = self._polled.get((tenant_id, key))
        return item.runner if item is not None else None

    @property
    def devices(self) -> dict[DeviceId, PollSpec]:
        return {key: item.spec for key, item in self._polled.items()}

    def _wanted(self) -> dict[DeviceId, PollSpec]:
        wanted: dict[DeviceId, PollSpec] = {}
        for protocol in POLLED:
            for item in self._directory.connected(protocol):
                device = item.device
                if device.gateway is not None or device.profile is None:
                    continue
                wanted[(device.tenant_id, device.key)] = PollSpec(protocol, device.profile, item.connection)
        return wanted

    async def _reconcile(self) -> None:
        async with self._reconcile_lock:
            # The directory may reload from the database.
            wanted = await asyncio.to_thread(self._wanted)
            stopping: list[tuple[DeviceId, _Polled, bool]] = []
            for key, item in list(self._polled.items()):
                spec = wanted.get(key)
                if spec != item.spec:
                    del self._polled[key]
                    stopping.append((key, item, spec is None))
            await asyncio.gather(*(self._retire(key, item, gone) for key, item, gone in stopping))
            for key in list(self.refused):
                if key not in wanted:
                    del self.refused[key]
            for key, spec in wanted.items():
                if key not in self._polled:
                    await self._launch(key, spec)

    async def _retire(self, key: DeviceId, item: _Polled, gone: bool) -> None:
        was_online = item.runner.online is True
        await item.runner.stop()
        if gone:
            logger.info("stopped polling device %s/%s", *key)
            if was_online:
                await self._publish_status(key, False, STOPPED_REASON)
        else:
            logger.info("device %s/%s changed in the registry: restarting its runner", *key)

    async def _launch(self, key: DeviceId, spec: PollSpec) -> None:
        refused = self.refused.get(key)
        if refused is not None and refused[0] == spec:
            return
        try:
            driver = self._driver_factory(spec.protocol, spec.profile, spec.connection)
        except DomainError as err:
            self.refused[key] = (spec, err.message)
            logger.warning("device %s/%s cannot be polled: %s", key[0], key[1], err.message)
            return
        self.refused.pop(key, None)
        tenant_id, device = key
        source = SOURCES[spec.protocol]
        text_metrics = frozenset(m.name for m in spec.profile.metrics if m.data_type is DataType.STRING)

        async def sink(readings: list[Reading]) -> None:
            self._add(tenant_id, device, source, text_metrics, readings)

        async def status(online: bool, reason: str) -> None:
            await self._publish_status(key, online, reason)

        runner = DeviceRunner(
            driver, sink, status=status, backoff=self._backoff(), name=f"{tenant_id}/{device}", sleep=_pause
        )
        self._polled[key] = _Polled(spec, runner)
        await runner.start()
        logger.info("polling device %s/%s (%s)", tenant_id, device, spec.protocol)

    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(self.reload_s)
            try:
                await self._reconcile()
            except Exception:  # the next round tries again
                logger.warning("device registry reload for polling failed", exc_info=True)

    # ------------------------------------------------------------------ readings and statuses

    def _add(
        self, tenant_id: str, device: str, source: str, text_metrics: frozenset[str], readings: list[Reading]
    ) -> None:
        builder = self._builders.get((tenant_id, source))
        if builder is None:
            builder = self._builders[(tenant_id, source)] = PointBatchBuilder(tenant_id, source)
        before = len(builder)
        for reading in readings:
            value = reading.value
            if isinstance(value, str):
                builder.attribute(device, reading.metric, value)
            elif value is None:
                if reading.metric not in text_metrics:
                    builder.add(device, reading.metric, reading.ts_ms, 0.0, Quality.BAD)
            elif math.isfinite(number := float(value)):
                builder.add(device, reading.metric, reading.ts_ms, number, reading.quality)
            else:
                builder.add(device, reading.metric, reading.ts_ms, 0.0, Quality.BAD)
        self._buffered += len(builder) - before
        if self._buffered >= self.max_batch_points:
            self._full.set()

    async def flush(self) -> None:
        """Publish what is buffered, one batch per (tenant, source)."""
        builders, self._builders = self._builders, {}
        self._buffered = 0
        self._full.clear()
        for builder in builders.values():
            batch = builder.build()
            if len(batch) or batch.attributes:
                await self._publish_points(batch)

    async def _publish_points(self, batch: PointBatch) -> None:
        try:
            await self._bus.publish(TELEMETRY_POINTS, batch)
        except BusError as err:
            self.dropped_points += len(batch)
            logger.warning("polled points of tenant %s dropped: %s", batch.tenant_id, err)
            return
        self.published_points += len(batch)
        self.published_batches += 1

    async def _flush_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self.flush_s)
            await self.flush()

    async def _publish_status(self, key: DeviceId, online: bool, reason: str) -> None:
        status = DeviceStatus(tenant_id=key[0], device=key[1], online=online, at=_now(), reason=reason[:500])
        try:
            await self._bus.publish(DEVICE_STATUS, status)
        except BusError as err:
            logger.warning("status of device %s/%s not published: %s", key[0], key[1], err)
