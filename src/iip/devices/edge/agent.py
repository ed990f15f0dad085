"""The edge agent: device runners fill the outbox, one forwarder drains it oldest first.

Appending and forwarding are independent: a slow or absent platform never slows polling, and the
outbox is the only hand-over between them. The link state (up or down) is logged when it changes,
not on every retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from iip.devices.edge.config import EdgeConfig, EdgeDevice, Transport
from iip.devices.edge.forwarder import Backoff, Forwarder, HttpForwarder, MqttForwarder, SendOutcome
from iip.devices.edge.outbox import Outbox, OutboxBatch, Reading

log = logging.getLogger("iip.edge")

Sink = Callable[[str, Sequence[Reading]], Awaitable[None]]  # device key, readings
EXPIRE_EVERY_S = 60.0
LOGGED_REASONS = 5


class EdgeSourceError(Exception):
    """A configured device cannot be polled (no driver for its protocol, bad connection settings)."""


class ReadingSource(Protocol):
    """Something that produces a device's readings (a driver runner) until cancelled."""

    async def run(self, sink: Sink) -> None: ...


class EdgeAgent:
    def __init__(
        self,
        config: EdgeConfig,
        *,
        sources: Sequence[ReadingSource] | None = None,
        forwarder: Forwarder | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self.config = config
        # Drivers first: a bad device fails the start before the outbox is taken.
        self._sources = list(sources) if sources is not None else build_sources(config)
        self.outbox = outbox or Outbox(
            config.outbox.path, max_points=config.outbox.max_points, max_age_s=config.outbox.max_age_s
        )
        self.forwarder = forwarder or build_forwarder(config)
        self._wake = asyncio.Event()
        self._appending: set[asyncio.Future[int]] = set()
        self.link_up: bool | None = None  # None until the first send
        self.last_error = ""

    async def submit(self, device: str, readings: Sequence[Reading]) -> None:
        """The sink runners hand readings to: returns once they are committed to the outbox."""
        if not readings:
            return
        future = asyncio.ensure_future(asyncio.to_thread(self.outbox.append, device, readings))
        self._appending.add(future)
        future.add_done_callback(self._appending.discard)
        # Shielded: a runner cancelled mid-append must not leave a commit running after close().
        await asyncio.shield(future)
        self._wake.set()

    def _link(self, up: bool, reason: str = "") -> None:
        if up and self.link_up is not True:
            log.info("platform link up; %d points pending", self.outbox.pending)
        elif not up and self.link_up is not False:
            log.warning("platform link down, queueing points: %s", reason)
        self.link_up = up
        self.last_error = reason

    async def _pause(self, stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    async def _next_batch(self, stop: asyncio.Event, size: int) -> OutboxBatch | None:
        """The oldest points, waiting (at most `linger_ms`) for a batch to fill when the queue is short."""
        batch = await asyncio.to_thread(self.outbox.read_batch, size)
        if batch is None:
            self._wake.clear()
            batch = await asyncio.to_thread(self.outbox.read_batch, size)  # appended before the clear
            if batch is None:
                waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
                await asyncio.wait(waits, timeout=EXPIRE_EVERY_S, return_when=asyncio.FIRST_COMPLETED)
                for waiter in waits:
                    waiter.cancel()
                return None
        if len(batch) < size and self.config.linger_ms and not stop.is_set():
            await self._pause(stop, self.config.linger_ms / 1000)
            batch = await asyncio.to_thread(self.outbox.read_batch, size)
        return batch

    def _report(self, outcome: SendOutcome) -> None:
        if outcome.rejected:
            reasons = sorted(set(outcome.rejected.values()))[:LOGGED_REASONS]
            log.warning("platform rejected %d points: %s", len(outcome.rejected), "; ".join(reasons))
        for part in outcome.dead_letters:
            log.error(
                "platform refused a batch of %d points, kept as a dead letter: %s", len(part.point_ids), part.reason
            )

    async def forward(self, stop: asyncio.Event) -> None:
        """Drain the outbox until `stop` is set; a send in progress is finished first."""
        backoff = Backoff(self.config.retry_initial_s, self.config.retry_max_s)
        size = self.config.batch_size
        next_expiry = 0.0
        while not stop.is_set():
            if time.monotonic() >= next_expiry:
                dropped = await asyncio.to_thread(self.outbox.expire)
                if dropped:
                    log.warning("dropped %d points older than %d s", dropped, self.config.outbox.max_age_s)
                next_expiry = time.monotonic() + EXPIRE_EVERY_S
            batch = await self._next_batch(stop, size)
            if batch is None:
                continue
            outcome = await self.forwarder.send(batch)
            if outcome.delivered:
                await asyncio.to_thread(
                    self.outbox.settle, batch, rejected=outcome.rejected.keys(), dead_letters=outcome.dead_letters
                )
                self._report(outcome)
                self._link(True)
                backoff.reset()
                size = min(self.config.batch_size, size * 2)
            elif outcome.shrink and size > 1:
                size = max(1, len(batch) // 2)
                log.info("batch too large for the platform, sending %d points at a time", size)
            else:
                self._link(False, outcome.reason)
                await self._pause(stop, backoff.next_delay())

    async def run(self, stop: asyncio.Event) -> None:
        """Run the sources and the forwarder until `stop` is set, then close the outbox cleanly."""
        sources = self._sources
        log.info(
            "edge agent started: %d devices, %s transport, %d points pending in %s",
            len(sources),
            self.config.transport.value,
            self.outbox.pending,
            self.config.outbox.path,
        )
        tasks: dict[asyncio.Future[Any], ReadingSource] = {
            asyncio.ensure_future(source.run(self.submit)): source for source in sources
        }
        forwarding: asyncio.Future[Any] = asyncio.ensure_future(self.forward(stop))
        stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        waiting = {forwarding, stopping, *tasks}
        try:
            while True:
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for task in done & tasks.keys():
                    # A failing device must not stop the others (its runner retries connections itself).
                    if not task.cancelled() and task.exception() is not None:
                        log.error("device source %r failed", tasks[task], exc_info=task.exception())
                if forwarding in done:
                    forwarding.result()  # raises what stopped forwarding
                    break
                if stopping in done:
                    break
        finally:
            stop.set()
            stopping.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(forwarding, return_exceptions=True)
            await asyncio.gather(*self._appending, return_exceptions=True)
            await self.forwarder.close()
            await asyncio.to_thread(self.outbox.close)
            log.info("edge agent stopped; %d points pending", self.outbox.pending)


def build_forwarder(config: EdgeConfig) -> Forwarder:
    if config.transport is Transport.MQTT:
        assert config.mqtt is not None  # noqa: S101 - the config validator guarantees it
        return MqttForwarder(config.mqtt, timeout_s=config.request_timeout_s)
    gateway = config.token.get_secret_value() if config.token else ""
    return HttpForwarder(
        config.platform_url, config.device_tokens(), default_token=gateway, timeout_s=config.request_timeout_s
    )


class DriverSource:
    """A configured device polled (or subscribed) by the driver of its profile's protocol."""

    def __init__(self, device: EdgeDevice) -> None:
        from iip.devices.drivers.base import create_driver
        from iip.kernel.errors import DomainError

        self.key = device.key
        try:
            self.driver = create_driver(device.profile.protocol.value, device.profile, device.connection)
        except DomainError as err:
            raise EdgeSourceError(f"device {device.key}: {err.message}") from None

    def __repr__(self) -> str:
        return f"DriverSource({self.key!r}, {self.driver.protocol.value})"

    async def run(self, sink: Sink) -> None:
        from iip.devices.drivers.base import Reading as DriverReading
        from iip.devices.drivers.runner import DeviceRunner

        async def deliver(readings: list[DriverReading]) -> None:
            await sink(self.key, readings)

        runner = DeviceRunner(self.driver, deliver, name=self.key)
        try:
            await runner.run()
        finally:
            await self.driver.close()


def build_sources(config: EdgeConfig) -> list[ReadingSource]:
    """One driver runner per configured device; raises EdgeSourceError naming the first bad one."""
    return [DriverSource(device) for device in config.devices]
