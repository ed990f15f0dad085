"""The simulated driver: seeded, plausible signals, setpoints that steer them, outages on demand."""

from __future__ import annotations

import math
from typing import Any

import pytest

from iip.devices.drivers.base import CommandRejected, DeviceUnavailable, Driver, create_driver
from iip.devices.drivers.simulated import BANDS, SimulatedConnection, SimulatedDriver
from iip.devices.profiles import DeviceProfile
from iip.kernel.errors import Invalid
from iip.telemetry.public import Quality

METRICS: list[dict[str, Any]] = [
    {"name": "temperature", "unit": "°C"},
    {"name": "temperature_sp", "unit": "°C", "writable": True},
    {"name": "speed", "unit": "rpm", "data_type": "int32"},
    {"name": "running", "data_type": "bool", "writable": True},
    {"name": "state", "data_type": "string", "writable": True},
    {"name": "load", "unit": "%"},
]
START = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def profile() -> DeviceProfile:
    return DeviceProfile.model_validate({"name": "oven", "protocol": "simulated", "metrics": METRICS})


def driver(clock: Clock, seed: int = 7, **extra: Any) -> SimulatedDriver:
    return SimulatedDriver(profile(), SimulatedConnection(seed=seed, **extra), clock=clock)


async def number(d: Driver, metric: str) -> float:
    value = {r.metric: r.value for r in await d.read()}[metric]
    assert isinstance(value, float)
    return value


def is_connected(d: Driver) -> bool:
    return d.connected


async def series(d: Driver, clock: Clock, metric: str, steps: int, step_s: float) -> list[Any]:
    values = []
    for _ in range(steps):
        values.append({r.metric: r.value for r in await d.read()}[metric])
        clock.now += step_s
    return values


async def test_signals_are_plausible_typed_and_time_stamped() -> None:
    clock = Clock()
    sim = driver(clock)
    await sim.connect()
    readings = await sim.read()
    assert [r.metric for r in readings] == [m["name"] for m in METRICS]
    assert {r.quality for r in readings} == {Quality.GOOD}
    assert {r.ts_ms for r in readings} == {int(START * 1000)}
    values = {r.metric: r.value for r in readings}
    assert isinstance(values["speed"], int)
    assert isinstance(values["running"], bool)
    assert values["state"] in {"RUN", "IDLE"}
    low, high = BANDS["°C"]
    temperatures = await series(sim, clock, "temperature", 200, 7.0)
    span = high - low
    assert all(low - 0.2 * span <= t <= high + 0.2 * span for t in temperatures)
    assert max(temperatures) - min(temperatures) > 0.05 * span  # it moves
    speeds = await series(sim, clock, "speed", 50, 11.0)
    assert all(BANDS["rpm"][0] * 0.7 <= s <= BANDS["rpm"][1] * 1.3 for s in speeds)


async def test_same_seed_same_signals_other_seed_other_signals() -> None:
    first, second, other = Clock(), Clock(), Clock()
    a, b, c = driver(first, seed=1), driver(second, seed=1), driver(other, seed=2)
    assert await series(a, first, "load", 20, 5) == await series(b, second, "load", 20, 5)
    assert await series(a, first, "load", 20, 5) != await series(c, other, "load", 20, 5)


async def test_a_setpoint_reads_back_and_the_process_value_follows_it() -> None:
    clock = Clock()
    sim = driver(clock, noise=0.0, lag_s=10.0)
    before = await number(sim, "temperature")
    target = 150.0
    assert abs(before - target) > 30
    await sim.write("temperature_sp", target, timeout=1)
    assert await number(sim, "temperature_sp") == target
    clock.now += 5.0
    halfway = await number(sim, "temperature")
    clock.now += 200.0  # twenty time constants
    settled = await number(sim, "temperature")
    assert abs(settled - target) < 0.02 * (BANDS["°C"][1] - BANDS["°C"][0]) + 1e-9
    assert abs(halfway - target) < abs(before - target)  # on its way
    assert abs(settled - target) < abs(halfway - target)
    load = await series(sim, clock, "load", 3, 1)
    assert all(abs(v - target) > 1 for v in load)  # other units are not steered


async def test_writes_are_checked_against_the_metric() -> None:
    sim = driver(Clock())
    await sim.write("running", 0, timeout=1)
    await sim.write("state", "MAINTENANCE", timeout=1)
    values = {r.metric: r.value for r in await sim.read()}
    assert values["running"] is False
    assert values["state"] == "MAINTENANCE"
    with pytest.raises(CommandRejected, match="not writable"):
        await sim.write("temperature", 1.0, timeout=1)
    with pytest.raises(CommandRejected, match="takes true/false"):
        await sim.write("running", 2, timeout=1)
    with pytest.raises(CommandRejected, match="takes a number"):
        await sim.write("temperature_sp", "hot", timeout=1)
    with pytest.raises(CommandRejected, match="takes a number"):
        await sim.write("temperature_sp", math.nan, timeout=1)
    with pytest.raises(CommandRejected, match="takes text"):
        await sim.write("state", 3, timeout=1)
    with pytest.raises(CommandRejected, match="has no metric"):
        await sim.write("missing", 1, timeout=1)


async def test_an_outage_makes_the_device_unavailable_until_it_ends() -> None:
    sim = driver(Clock())
    await sim.connect()
    sim.set_outage("cable cut")
    assert not is_connected(sim)
    with pytest.raises(DeviceUnavailable, match="unreachable: cable cut"):
        await sim.read()
    with pytest.raises(DeviceUnavailable):
        await sim.write("running", True, timeout=1)
    sim.set_outage(None)
    assert len(await sim.read()) == len(METRICS)
    assert is_connected(sim)
    await sim.close()
    assert not is_connected(sim)


async def test_factory_and_connection_validation() -> None:
    sim = create_driver("simulated", profile(), {"seed": 3})
    assert isinstance(sim, SimulatedDriver)
    assert len(await sim.read()) == len(METRICS)
    with pytest.raises(Invalid, match="invalid simulated connection: noise"):
        create_driver("simulated", profile(), {"noise": 5})
    with pytest.raises(Invalid, match="protocol 'mqtt' has no driver") as no_driver:
        create_driver("mqtt", profile(), {})
    assert no_driver.value.instance_code == "no_driver"
    with pytest.raises(Invalid, match="'carrier-pigeon' has no driver"):
        create_driver("carrier-pigeon", profile(), {})


async def test_polled_drivers_refuse_subscriptions() -> None:
    async def sink(readings: object) -> None:
        del readings

    with pytest.raises(Invalid, match="polled, not subscribed"):
        await driver(Clock()).subscribe(sink)
