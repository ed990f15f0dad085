"""`DeviceRunner` over the simulated driver, on virtual time: schedule, backoff, status, commands."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from iip.devices.drivers.base import Backoff, DeviceUnavailable, Reading
from iip.devices.drivers.runner import DeviceRunner
from iip.devices.drivers.simulated import SimulatedConnection, SimulatedDriver
from iip.devices.profiles import DeviceProfile
from iip.kernel.errors import Invalid


class VirtualTime:
    """A clock and a sleep that only advance when the runner sleeps; every delay is recorded."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0
        self.sleeps: list[float] = []
        self.on_sleep: list[Any] = []  # callables run after each sleep

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay
        for hook in list(self.on_sleep):
            hook()
        await asyncio.sleep(0)


class Collector:
    def __init__(self, stop_after: int) -> None:
        self.batches: list[list[Reading]] = []
        self.statuses: list[tuple[bool, str]] = []
        self.done = asyncio.Event()
        self.stop_after = stop_after

    async def sink(self, readings: list[Reading]) -> None:
        self.batches.append(readings)
        if len(self.batches) >= self.stop_after:
            self.done.set()

    async def status(self, online: bool, reason: str) -> None:
        self.statuses.append((online, reason))


def profile(poll_interval_s: float = 2.0) -> DeviceProfile:
    return DeviceProfile.model_validate(
        {
            "name": "press",
            "protocol": "simulated",
            "poll_interval_s": poll_interval_s,
            "metrics": [{"name": "force", "unit": "kN"}, {"name": "stroke_sp", "unit": "mm", "writable": True}],
        }
    )


def runner(time: VirtualTime, collector: Collector, driver: SimulatedDriver, **extra: Any) -> DeviceRunner:
    return DeviceRunner(
        driver,
        collector.sink,
        status=collector.status,
        backoff=extra.pop("backoff", Backoff(initial_s=0.1, max_s=1.0, jitter=0)),
        sleep=time.sleep,
        clock=time.clock,
        **extra,
    )


async def test_polls_on_a_fixed_schedule_and_delivers_every_reading() -> None:
    time = VirtualTime()
    collector = Collector(stop_after=4)
    driver = SimulatedDriver(profile(), clock=time.clock)
    async with runner(time, collector, driver) as r:
        await collector.done.wait()
    assert len(collector.batches) >= 4
    assert [[x.metric for x in batch] for batch in collector.batches[:4]] == [["force", "stroke_sp"]] * 4
    stamps = [batch[0].ts_ms for batch in collector.batches[:4]]
    assert [b - a for a, b in itertools.pairwise(stamps)] == [2000, 2000, 2000]
    assert time.sleeps[:3] == [2.0, 2.0, 2.0]
    assert collector.statuses == [(True, "")]
    assert r.online is True
    assert r.polls >= 4
    assert not driver.connected  # stop() closed it


async def test_backs_off_while_unavailable_then_recovers_and_reports_status_once_per_change() -> None:
    time = VirtualTime()
    collector = Collector(stop_after=2)
    driver = SimulatedDriver(profile(), clock=time.clock)
    driver.set_outage("link down")

    def end_outage_after_five_attempts() -> None:
        if len(time.sleeps) == 5:
            driver.set_outage(None)

    time.on_sleep.append(end_outage_after_five_attempts)
    async with runner(time, collector, driver) as r:
        await collector.done.wait()
        assert r.last_error.endswith("link down")
    assert time.sleeps[:5] == [0.1, 0.2, 0.4, 0.8, 1.0]  # doubling, capped at max_s
    assert time.sleeps[5] == 2.0  # back on the poll schedule
    assert collector.statuses == [
        (False, "simulated device 'press' is unreachable: link down"),
        (True, ""),
    ]


async def test_backoff_starts_again_from_the_beginning_after_a_success() -> None:
    time = VirtualTime()
    collector = Collector(stop_after=3)
    driver = SimulatedDriver(profile(), clock=time.clock)

    def outages() -> None:
        # Down for two attempts, up for one poll, down again for two attempts.
        n = len(time.sleeps)
        if n in {1, 2} or n in {4, 5}:
            driver.set_outage("flapping")
        else:
            driver.set_outage(None)

    time.on_sleep.append(outages)
    async with runner(time, collector, driver):
        await collector.done.wait()
    assert time.sleeps[:7] == [2.0, 0.1, 0.2, 2.0, 0.1, 0.2, 2.0]
    assert [online for online, _ in collector.statuses] == [True, False, True, False, True]


async def test_falling_behind_skips_missed_polls_instead_of_bursting() -> None:
    time = VirtualTime()
    collector = Collector(stop_after=3)

    async def slow_sink(readings: list[Reading]) -> None:
        time.now += 5.0  # longer than the 2 s poll interval
        await collector.sink(readings)

    r = DeviceRunner(SimulatedDriver(profile(), clock=time.clock), slow_sink, sleep=time.sleep, clock=time.clock)
    async with r:
        await collector.done.wait()
    assert time.sleeps[:2] == [0.0, 0.0]


class CrashOnceDriver(SimulatedDriver):
    """A driver with a bug on its first read (not a domain error)."""

    crashed = False

    async def read(self) -> list[Reading]:
        if not self.crashed:
            self.crashed = True
            raise RuntimeError("index out of range")
        return await super().read()


async def test_survives_driver_bugs_and_failing_sinks(caplog: pytest.LogCaptureFixture) -> None:
    time = VirtualTime()
    collector = Collector(stop_after=2)
    failed_once = False

    async def flaky_sink(readings: list[Reading]) -> None:
        nonlocal failed_once
        if not failed_once:
            failed_once = True
            raise ConnectionError("bus down")
        await collector.sink(readings)

    driver = CrashOnceDriver(profile(), clock=time.clock)
    r = DeviceRunner(driver, flaky_sink, status=collector.status, sleep=time.sleep, clock=time.clock)
    async with r:
        await collector.done.wait()
    assert len(collector.batches) >= 2  # the batch the sink refused is lost, polling went on
    assert collector.statuses[0] == (False, "driver error: RuntimeError('index out of range')")
    assert collector.statuses[1] == (True, "")
    assert "driver of device press failed" in caplog.text
    assert "reading sink failed for device press" in caplog.text


async def test_write_goes_to_the_driver_and_stop_ends_everything() -> None:
    time = VirtualTime()
    collector = Collector(stop_after=1)
    driver = SimulatedDriver(profile(), SimulatedConnection(seed=1), clock=time.clock)
    r = runner(time, collector, driver)
    await r.start()
    await collector.done.wait()
    await r.write("stroke_sp", 42.0, timeout=1)
    assert {x.metric: x.value for x in await driver.read()}["stroke_sp"] == 42.0
    await r.stop()
    assert not driver.connected
    with pytest.raises(DeviceUnavailable, match="is stopped") as stopped:
        await r.write("stroke_sp", 1.0, timeout=1)
    assert stopped.value.instance_code == "runner_stopped"
    with pytest.raises(Invalid, match="was stopped"):
        await r.start()
    await r.stop()  # idempotent


async def test_runs_on_real_time_too() -> None:
    collector = Collector(stop_after=3)
    r = DeviceRunner(SimulatedDriver(profile(poll_interval_s=0.01)), collector.sink)
    await r.start()
    await asyncio.wait_for(collector.done.wait(), 10)
    await r.stop()
    assert len(collector.batches) >= 3


def test_poll_interval_must_be_positive() -> None:
    async def sink(readings: list[Reading]) -> None:
        del readings

    with pytest.raises(Invalid, match="poll_interval_s must be positive"):
        DeviceRunner(SimulatedDriver(profile()), sink, poll_interval_s=0)


def test_backoff_jitter_only_shortens_delays() -> None:
    backoff = Backoff(initial_s=1.0, max_s=8.0, jitter=0.5)
    delays = [backoff.next() for _ in range(6)]
    nominal = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert all(n * 0.5 <= d <= n for d, n in zip(delays, nominal, strict=True))
    backoff.reset()
    assert backoff.next() <= 1.0
    with pytest.raises(ValueError, match="initial_s <= max_s"):
        Backoff(initial_s=2.0, max_s=1.0)
