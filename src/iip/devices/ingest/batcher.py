"""Turns ingest outcomes into point batches, device status events and dead letters.

`add()` is synchronous and cheap: it runs once per received message, inside the protocol client's
read callback. Points go into one `PointBatchBuilder` per (tenant, source); a builder is sealed when
it holds `max_points` points or its oldest point has waited `max_ms`, and sealed batches are
published on the bus (`TELEMETRY_POINTS`) in order by one task. A failed publish is retried, never
dropped, so a bus outage holds points in memory rather than losing them.

Liveness: a device that sends data while not known to be online gets an online `DEVICE_STATUS`; one
silent for `offline_after_s` gets an offline one. Devices whose state a protocol reports explicitly
(Sparkplug births and deaths) are exempt from the silence rule, since they may report by exception.

Rejected messages are counted per device and filed with the `DeadLetterSink` from a worker thread
(the sink writes to a database), so a slow sink never stalls the event loop; if the thread falls
`dead_letter_backlog` letters behind, further letters are counted and logged, not queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from iip.devices.directory import DeadLetterSink, IngestOutcome, KnownDevice
from iip.kernel.bus import Bus
from iip.kernel.settings import DevicesSettings
from iip.telemetry.public import DEVICE_STATUS, TELEMETRY_POINTS, DeviceStatus, PointBatch, PointBatchBuilder

logger = logging.getLogger(__name__)

DeviceId = tuple[str, str]  # (tenant id, device key)

RETRY_MIN_S = 0.05
RETRY_MAX_S = 5.0
STOP_ATTEMPTS = 3  # publishes tried per batch while stopping, before the batch is given up (and logged)


@dataclass(slots=True)
class IngestStats:
    messages: int = 0
    points: int = 0
    batches: int = 0
    rejected: int = 0
    dead_letters_dropped: int = 0
    publish_failures: int = 0


class IngestBatcher:
    def __init__(
        self,
        bus: Bus,
        dead_letters: DeadLetterSink,
        *,
        max_points: int,
        max_ms: int,
        offline_after_s: float,
        blocking_sink: bool = True,
        dead_letter_backlog: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bus = bus
        self._sink = dead_letters
        self._max_points = max_points
        self._max_s = max_ms / 1000
        self._offline_after_s = offline_after_s
        self._clock = clock
        self._pending: dict[tuple[str, str], PointBatchBuilder] = {}  # (tenant id, source) -> builder
        self._first_at = 0.0  # when the oldest pending point arrived
        self._ready: deque[PointBatch | DeviceStatus] = deque()
        self._wake = asyncio.Event()
        self._last_seen: dict[DeviceId, float] = {}  # devices online by their data
        self._reported: set[DeviceId] = set()  # devices online by an explicit status
        self.rejected: Counter[DeviceId] = Counter()  # unknown devices count under ("", topic)
        self.stats = IngestStats()
        self._tasks: list[asyncio.Task[None]] = []
        self._blocking_sink = blocking_sink
        self._letters: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=dead_letter_backlog)
        self._letter_thread: threading.Thread | None = None

    @classmethod
    def from_settings(
        cls, settings: DevicesSettings, bus: Bus, dead_letters: DeadLetterSink, **options: Any
    ) -> IngestBatcher:
        return cls(
            bus,
            dead_letters,
            max_points=settings.batch_max_points,
            max_ms=settings.batch_max_ms,
            offline_after_s=settings.offline_after_s,
            **options,
        )

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._tasks:
            return
        if self._blocking_sink:
            self._letter_thread = threading.Thread(target=self._write_letters, name="iip-dead-letters", daemon=True)
            self._letter_thread.start()
        self._tasks = [
            asyncio.create_task(self._publish_loop(), name="iip-ingest-batches"),
            asyncio.create_task(self._offline_loop(), name="iip-ingest-offline"),
        ]

    async def stop(self) -> None:
        """Publish what is pending (a few attempts each), then file the dead letters still queued."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._seal_all()
        await self._publish_ready(attempts=STOP_ATTEMPTS)
        if self._letter_thread is not None:
            self._letters.put(None)
            await asyncio.to_thread(self._letter_thread.join)
            self._letter_thread = None

    async def flush(self) -> None:
        """Seal and publish everything pending now."""
        self._seal_all()
        await self._publish_ready()

    # --- the per-message path ------------------------------------------------------------------

    def add(self, outcome: IngestOutcome, *, source: str, topic: str = "", raw: bytes = b"") -> None:
        """Take one message's outcome; never raises for a well-formed outcome, never waits."""
        stats = self.stats
        stats.messages += 1
        now = self._clock()
        for device, online, reason in outcome.statuses:
            self._status(device, online, reason, explicit=True)
        points = outcome.points
        if points:
            builder = self._builder(points[0][0].tenant_id, source, now)
            last: KnownDevice | None = None
            for device, metric, ts_ms, value, quality in points:
                if device is not last:
                    if device.tenant_id != builder.tenant_id or len(builder) >= self._max_points:
                        if len(builder) >= self._max_points:
                            self._seal(builder)
                        builder = self._builder(device.tenant_id, source, now)
                    self._seen(device, now)
                    last = device
                builder.add(device.key, metric, ts_ms, value, quality)
            stats.points += len(points)
            if len(builder) >= self._max_points:
                self._seal(builder)
        if outcome.attributes:
            for device, name, value in outcome.attributes:
                self._builder(device.tenant_id, source, now).attribute(device.key, name, value)
                self._seen(device, now)
        if outcome.rejected:
            for reason, known in outcome.rejected:
                self._reject(reason, known, source, topic, raw)

    def _builder(self, tenant_id: str, source: str, now: float) -> PointBatchBuilder:
        key = (tenant_id, source)
        builder = self._pending.get(key)
        if builder is None:
            if not self._pending:
                self._first_at = now
                self._wake.set()
            builder = self._pending[key] = PointBatchBuilder(tenant_id, source)
        return builder

    def _seal(self, builder: PointBatchBuilder) -> None:
        del self._pending[(builder.tenant_id, builder.source)]
        self._ready.append(builder.build())
        self._wake.set()

    def _seal_all(self) -> None:
        for builder in list(self._pending.values()):
            self._seal(builder)

    def _seen(self, device: KnownDevice, now: float) -> None:
        key = (device.tenant_id, device.key)
        if key in self._reported:
            return
        if key not in self._last_seen:
            self._queue_status(key, online=True, reason="data received")
        self._last_seen[key] = now

    def _status(self, device: KnownDevice, online: bool, reason: str, *, explicit: bool) -> None:
        key = (device.tenant_id, device.key)
        self._last_seen.pop(key, None)
        if online and explicit:
            self._reported.add(key)
        else:
            self._reported.discard(key)
        self._queue_status(key, online=online, reason=reason)

    def _queue_status(self, key: DeviceId, *, online: bool, reason: str) -> None:
        status = DeviceStatus(tenant_id=key[0], device=key[1], online=online, at=dt.datetime.now(dt.UTC), reason=reason)
        self._ready.append(status)
        self._wake.set()

    def _reject(self, reason: str, device: KnownDevice | None, source: str, topic: str, raw: bytes) -> None:
        self.stats.rejected += 1
        key = (device.tenant_id, device.key) if device is not None else ("", topic)
        self.rejected[key] += 1
        letter = {
            "source": source,
            "reason": reason,
            "raw": raw,
            "topic": topic,
            "tenant_id": device.tenant_id if device is not None else None,
            "device": device.key if device is not None else None,
        }
        if not self._blocking_sink:
            self._record(letter)
            return
        try:
            self._letters.put_nowait(letter)
        except queue.Full:
            self.stats.dead_letters_dropped += 1
            if self.stats.dead_letters_dropped % 1000 == 1:
                logger.warning(
                    "dead-letter backlog full: %d rejected messages counted but not filed",
                    self.stats.dead_letters_dropped,
                )

    def _record(self, letter: dict[str, Any]) -> None:
        try:
            self._sink.record(**letter)
        except Exception:
            logger.exception("dead-letter sink failed for %s", letter["topic"])

    def _write_letters(self) -> None:
        while (letter := self._letters.get()) is not None:
            self._record(letter)

    # --- publishing ----------------------------------------------------------------------------

    async def _publish_loop(self) -> None:
        while True:
            if self._ready:
                await self._publish_ready()
                continue
            if self._pending:
                delay = self._first_at + self._max_s - self._clock()
                if delay <= 0:
                    self._seal_all()
                    continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                continue
            self._wake.clear()
            await self._wake.wait()

    async def _publish_ready(self, attempts: int | None = None) -> None:
        """Publish sealed batches and statuses in order; retry a failure (forever, unless `attempts`)."""
        retry = RETRY_MIN_S
        tried = 0
        while self._ready:
            item = self._ready[0]
            try:
                if isinstance(item, PointBatch):
                    await self._bus.publish(TELEMETRY_POINTS, item)
                else:
                    await self._bus.publish(DEVICE_STATUS, item)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - any bus failure: keep the batch and retry
                self.stats.publish_failures += 1
                tried += 1
                if attempts is not None and tried >= attempts:
                    lost = sum(len(i) for i in self._ready if isinstance(i, PointBatch))
                    logger.error("bus unavailable while stopping: %d points not published (%s)", lost, err)
                    self._ready.clear()
                    return
                logger.warning("publishing to the bus failed, retrying in %.2f s: %s", retry, err)
                await asyncio.sleep(retry)
                retry = min(retry * 2, RETRY_MAX_S)
                continue
            self._ready.popleft()
            tried = 0
            retry = RETRY_MIN_S
            if isinstance(item, PointBatch):
                self.stats.batches += 1

    async def _offline_loop(self) -> None:
        period = max(0.05, min(self._offline_after_s / 4, 10.0))
        while True:
            await asyncio.sleep(period)
            self.mark_silent_offline()

    def mark_silent_offline(self) -> None:
        """Report devices silent for `offline_after_s` as offline (also run periodically)."""
        limit = self._clock() - self._offline_after_s
        silent = [key for key, seen in self._last_seen.items() if seen <= limit]
        for key in silent:
            del self._last_seen[key]
            self._queue_status(key, online=False, reason=f"no data for {self._offline_after_s:g} s")

    @property
    def letters_waiting(self) -> int:
        """Dead letters queued for the sink's thread."""
        return self._letters.qsize()

    @property
    def online(self) -> set[DeviceId]:
        """Devices currently believed online."""
        return set(self._last_seen) | self._reported
