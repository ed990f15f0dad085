"""Consumes `telemetry.points` and `devices.status` from the bus: writes the store and updates the twins.

A batch is stored first and applied to the twins only once stored; a batch that fails to store
raises, so the bus redelivers it (the store is idempotent on (series, ts)) and the twins never see
half of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager

from iip.kernel.bus import DEAD_LETTERS, Bus, Delivery, Subscription, dead_letter
from iip.kernel.errors import Invalid
from iip.kernel.runtime import Runtime
from iip.telemetry.public import DEVICE_STATUS, TELEMETRY_POINTS, DeviceStatus, PointBatch
from iip.telemetry.twin import TWINS_SERVICE, LatestLoader, TwinRegistry

logger = logging.getLogger(__name__)

WRITER_DURABLE = "telemetry-writer"
# A database that is away for a while (failover, restart) costs retries, not data: about half a minute.
MAX_DELIVER = 30
RETRY_DELAY_S = 1.0

StorePoints = Callable[[PointBatch], int]


class TelemetryWriter:
    """The durable bus consumer that feeds the store and the twins."""

    def __init__(
        self,
        bus: Bus,
        twins: TwinRegistry,
        store: StorePoints,
        *,
        durable: str = WRITER_DURABLE,
        max_deliver: int = MAX_DELIVER,
        retry_delay: float = RETRY_DELAY_S,
    ) -> None:
        self.bus = bus
        self.twins = twins
        self.store = store
        self.durable = durable
        self.max_deliver = max_deliver
        self.retry_delay = retry_delay
        self._subscriptions: list[Subscription] = []

    async def start(self) -> None:
        durable, max_deliver, retry_delay = self.durable, self.max_deliver, self.retry_delay
        self._subscriptions = [
            await self.bus.subscribe(
                TELEMETRY_POINTS, self.on_points, durable=durable, max_deliver=max_deliver, retry_delay=retry_delay
            ),
            await self.bus.subscribe(
                DEVICE_STATUS, self.on_status, durable=durable, max_deliver=max_deliver, retry_delay=retry_delay
            ),
        ]

    async def stop(self) -> None:
        for subscription in self._subscriptions:
            await subscription.stop()
        self._subscriptions = []

    async def on_points(self, delivery: Delivery[PointBatch]) -> None:
        batch = delivery.payload
        if len(batch):
            try:
                await asyncio.to_thread(self.store, batch)
            except Invalid as err:
                # Refused whole by the store: no retry can help, and the twins must not show it either.
                reason = f"refused by the store: {err.message}"
                logger.error("batch %s of tenant %s %s", delivery.message_id, batch.tenant_id, reason)
                data = TELEMETRY_POINTS.encode(batch)  # the frame keeps NaN and infinities, JSON would not
                letter = dead_letter(
                    delivery.subject, self.durable, delivery.message_id, reason, delivery.attempt, data
                )
                await self.bus.publish(DEAD_LETTERS, letter)
                return
        await self.twins.apply_batch(batch)

    async def on_status(self, delivery: Delivery[DeviceStatus]) -> None:
        await self.twins.apply_status(delivery.payload)


def store_of(runtime: Runtime) -> StorePoints:
    from iip.telemetry import public

    def store(batch: PointBatch) -> int:
        return public.store_points(runtime, batch)

    return store


def latest_of(runtime: Runtime) -> LatestLoader:
    from iip.telemetry import public

    def latest(tenant_id: str, devices: Sequence[str]) -> Mapping[str, Mapping[str, tuple[int, float, int]]]:
        return public.latest_points_of(runtime, tenant_id, devices)

    return latest


@asynccontextmanager
async def writer_lifespan(runtime: Runtime) -> AsyncIterator[None]:
    """Start the twin registry (`runtime.services["telemetry.twins"]`) and the bus writer."""
    twins = TwinRegistry(runtime.db, runtime.bus, latest_of(runtime))
    runtime.services[TWINS_SERVICE] = twins
    writer = TelemetryWriter(runtime.bus, twins, store_of(runtime))
    await writer.start()
    try:
        yield
    finally:
        twins.close()  # event streams end before the bus and the database go
        await writer.stop()
        runtime.services.pop(TWINS_SERVICE, None)
