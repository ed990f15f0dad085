"""`DeviceRunner`: keeps one driver of one device going, in the platform or in an edge agent.

A polled driver is read every `poll_interval_s` (on a fixed schedule: a slow poll delays the next
one, it does not shift all later ones); a push driver is subscribed once and keeps its own
subscription alive. Readings go to an async sink. Failures never end the runner: it reports the
device offline (once per outage), waits with exponential backoff and tries again, and reports it
online at the first success. `write()` passes commands to the driver.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

from iip.devices.drivers.base import (
    Backoff,
    DeviceUnavailable,
    Driver,
    Reading,
    ReadingSink,
    StatusSink,
    Value,
)
from iip.kernel.errors import DomainError, Invalid

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class DeviceRunner:
    """Owns `driver` from `start()` to `stop()`; not restartable after `stop()`."""

    def __init__(
        self,
        driver: Driver,
        sink: ReadingSink,
        *,
        status: StatusSink | None = None,
        poll_interval_s: float | None = None,
        backoff: Backoff | None = None,
        name: str = "",
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.driver = driver
        self.name = name or driver.profile.name
        self.poll_interval_s = poll_interval_s if poll_interval_s is not None else driver.profile.poll_interval_s
        if self.poll_interval_s <= 0:
            raise Invalid("poll_interval_s must be positive", code="invalid_poll_interval")
        self.backoff = backoff or Backoff()
        self._sink = sink
        self._status = status
        self._sleep = sleep
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self.online: bool | None = None  # None until the first attempt
        self.last_error = ""
        self.polls = 0  # successful reads

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._stopped:
            raise Invalid(f"device runner {self.name!r} was stopped; create a new one", code="runner_stopped")
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"device-runner-{self.name}")

    async def stop(self) -> None:
        """Stops polling (or the subscription) and closes the driver."""
        self._stopped = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                if (current := asyncio.current_task()) is not None and current.cancelling():
                    raise
        await self.driver.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def run(self) -> None:
        """The loop; `start()` runs it as a task, an edge agent may await it directly (cancel to stop)."""
        if self.driver.push:
            await self._run_subscribed()
        else:
            await self._run_polling()

    # ------------------------------------------------------------------ loops

    async def _run_polling(self) -> None:
        deadline = self._clock()
        while True:
            try:
                readings = await self.driver.read()
            except asyncio.CancelledError:
                raise
            except DomainError as err:
                await self._failed(err.message)
                await self._sleep(self.backoff.next())
                deadline = self._clock()
                continue
            except Exception as err:
                # A driver bug must not end polling of the device; it is logged with its traceback.
                logger.exception("driver of device %s failed", self.name)
                await self._failed(f"driver error: {err!r}")
                await self._sleep(self.backoff.next())
                deadline = self._clock()
                continue
            self.backoff.reset()
            self.polls += 1
            await self._set_online(True, "")
            await self._deliver(readings)
            deadline += self.poll_interval_s
            now = self._clock()
            deadline = max(deadline, now)  # fell behind (slow device or sink): skip the missed polls
            await self._sleep(deadline - now)

    async def _run_subscribed(self) -> None:
        while True:
            try:
                await self.driver.connect()
                await self.driver.subscribe(self._deliver, self._set_online)
            except asyncio.CancelledError:
                raise
            except DomainError as err:
                await self._failed(err.message)
                await self._sleep(self.backoff.next())
                continue
            self.backoff.reset()
            await self._set_online(True, "")
            # The driver keeps the subscription alive from here on and reports outages itself.
            await asyncio.Event().wait()

    async def _failed(self, reason: str) -> None:
        self.last_error = reason
        await self._set_online(False, reason)

    async def _set_online(self, online: bool, reason: str) -> None:
        if not online:
            self.last_error = reason
        if self.online is online:
            return
        self.online = online
        if online:
            logger.info("device %s online", self.name)
        else:
            logger.warning("device %s offline: %s", self.name, reason)
        if self._status is None:
            return
        try:
            await self._status(online, reason)
        except Exception:
            logger.exception("status sink failed for device %s", self.name)

    async def _deliver(self, readings: list[Reading]) -> None:
        if not readings:
            return
        try:
            await self._sink(readings)
        except Exception:
            # The readings of this poll are lost; polling goes on.
            logger.exception("reading sink failed for device %s", self.name)

    # ------------------------------------------------------------------ commands

    async def write(self, metric: str, value: Value, timeout: float) -> None:  # noqa: ASYNC109 - the ack deadline is part of a command
        """Set `metric` on the device; raises CommandRejected or DeviceUnavailable (see `Driver.write`)."""
        if self._stopped:
            raise DeviceUnavailable(f"device runner {self.name!r} is stopped", code="runner_stopped")
        await self.driver.write(metric, value, timeout)
