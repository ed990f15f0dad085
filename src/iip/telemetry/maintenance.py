"""Continuous rollups and retention, run in the background while the platform runs.

Every `ROLL_UP_INTERVAL_S` the store closes the minutes that ended (rollups, points moved to the
series-first table); every `RETENTION_INTERVAL_S` it deletes what is past each tenant's retention
and creates the coming days' partitions (PostgreSQL). Each job runs in a worker thread; a failure is
logged and the loop goes on. Several processes may run it at once: the store serialises the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from iip.kernel.runtime import Runtime
from iip.telemetry.store import store_of

logger = logging.getLogger(__name__)

ROLL_UP_INTERVAL_S = 10.0
RETENTION_INTERVAL_S = 3600.0


class Maintenance:
    """The periodic jobs of one process's store."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        roll_up_interval: float = ROLL_UP_INTERVAL_S,
        retention_interval: float = RETENTION_INTERVAL_S,
    ) -> None:
        self.runtime = runtime
        self.roll_up_interval = roll_up_interval
        self.retention_interval = retention_interval
        self._stop = asyncio.Event()
        self._next_retention = 0.0  # retention (and partitions) on the first round

    def run_once(self) -> None:
        """One round, synchronously: close windows; apply retention when due."""
        store = store_of(self.runtime)
        store.roll_up()
        if time.monotonic() >= self._next_retention:
            self._next_retention = time.monotonic() + self.retention_interval
            store.ensure_partitions()
            report = store.apply_retention()
            deleted = sum(report.deleted.values())
            if deleted or report.dropped_days:
                logger.info(
                    "telemetry retention: %d points deleted, %d daily partitions dropped", deleted, report.dropped_days
                )

    async def run(self) -> None:
        while not self._stop.is_set():
            # The first round waits too: a process that starts and stops at once does no work.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.roll_up_interval)
            if self._stop.is_set():
                return
            await self._guarded(self.run_once)

    @staticmethod
    async def _guarded(job: Callable[[], None]) -> None:
        try:
            await asyncio.to_thread(job)
        except Exception:
            logger.exception("telemetry maintenance failed; trying again next round")

    def stop(self) -> None:
        self._stop.set()


@asynccontextmanager
async def maintenance_lifespan(runtime: Runtime) -> AsyncIterator[None]:
    maintenance = Maintenance(runtime)
    task = asyncio.create_task(maintenance.run(), name="telemetry-maintenance")
    try:
        yield
    finally:
        # A round in progress finishes (its thread cannot be interrupted) before the database closes.
        maintenance.stop()
        await task
