"""A driver with no I/O: plausible, seeded signals for every metric of any profile.

Each numeric metric is a level within a band typical of its unit, plus a slow sine, a slow drift
and noise. A write to a writable metric sets it (it reads back exactly, as a setpoint register
does), and the non-writable metrics with the same unit settle towards it with a first-order lag,
as a controlled process follows its setpoint. `set_outage()` makes the device unreachable, so
owners can be exercised against failures without a network.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from iip.devices.drivers.base import CommandRejected, DeviceUnavailable, Driver, Reading, Value
from iip.devices.profiles import DataType, DeviceProfile, MetricSpec, Protocol
from iip.telemetry.public import Quality

# Typical operating band by unit; anything else gets 0..100.
BANDS: dict[str, tuple[float, float]] = {
    "°C": (20.0, 90.0),
    "degC": (20.0, 90.0),
    "K": (290.0, 360.0),
    "bar": (1.0, 10.0),
    "kPa": (100.0, 1000.0),
    "MPa": (0.1, 1.0),
    "rpm": (900.0, 3000.0),
    "Hz": (45.0, 55.0),
    "V": (210.0, 240.0),
    "A": (5.0, 50.0),
    "kW": (10.0, 200.0),
    "kWh": (1000.0, 5000.0),
    "%": (20.0, 80.0),
    "m3/h": (5.0, 60.0),
    "mm/s": (0.5, 8.0),
}
DEFAULT_BAND = (0.0, 100.0)
TEXT_STATES = ("RUN", "IDLE")
TEXT_OR_BIT = frozenset({DataType.BOOL, DataType.STRING})
INTEGER_TYPES = frozenset(
    {DataType.INT16, DataType.UINT16, DataType.INT32, DataType.UINT32, DataType.INT64, DataType.UINT64}
)


class SimulatedConnection(BaseModel):
    """Parameters of a simulated device (stored as JSON on the device like a real connection)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(default=0, description="same seed, same signals")
    period_s: float = Field(default=300.0, gt=0, le=86_400, description="period of the slow oscillation")
    noise: float = Field(default=0.01, ge=0, le=1, description="noise, as a fraction of the band")
    drift_per_hour: float = Field(default=0.02, ge=-1, le=1, description="drift, as a fraction of the band per hour")
    lag_s: float = Field(default=30.0, gt=0, le=86_400, description="time constant of following a setpoint")


@dataclass(slots=True)
class _Signal:
    low: float
    high: float
    level: float  # where the signal centres before any setpoint
    phase: float


@dataclass(slots=True)
class _Setpoint:
    value: float
    at: float  # clock time of the write
    start: float  # centre of the followers when it was written


class SimulatedDriver(Driver):
    protocol = Protocol.SIMULATED
    connection_model = SimulatedConnection

    def __init__(
        self,
        profile: DeviceProfile,
        connection: SimulatedConnection | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        connection = connection or SimulatedConnection()
        super().__init__(profile, connection)
        self.settings = connection
        self._clock = clock
        self._rng = random.Random(connection.seed)  # noqa: S311 - simulation, not security
        self._start = clock()
        self._signals = {m.name: self._signal(m) for m in profile.metrics}
        self._written: dict[str, Value] = {}
        self._following: dict[str, _Setpoint] = {}  # metric -> the setpoint it settles towards
        self._connected = False
        self._outage = ""

    def _signal(self, metric: MetricSpec) -> _Signal:
        low, high = BANDS.get(metric.unit, DEFAULT_BAND)
        rng = random.Random(f"{self.settings.seed}:{metric.name}")  # noqa: S311 - stable per metric
        return _Signal(low, high, low + (high - low) * rng.uniform(0.35, 0.65), rng.uniform(0, 2 * math.pi))

    @property
    def connected(self) -> bool:
        return self._connected

    def set_outage(self, reason: str | None) -> None:
        """Make the device unreachable (`reason`) or reachable again (None); drops the connection."""
        self._outage = reason or ""
        if reason:
            self._connected = False

    def _check_reachable(self) -> None:
        if self._outage:
            raise DeviceUnavailable(f"simulated device {self.profile.name!r} is unreachable: {self._outage}")

    async def connect(self) -> None:
        self._check_reachable()
        self._connected = True

    async def close(self) -> None:
        self._connected = False

    async def read(self) -> list[Reading]:
        if not self._connected:
            await self.connect()
        now = self._clock()
        ts_ms = int(now * 1000)
        return [Reading(m.name, ts_ms, self._value(m, now), Quality.GOOD) for m in self.profile.metrics]

    def _centre(self, metric: MetricSpec, signal: _Signal, now: float) -> float:
        setpoint = self._following.get(metric.name)
        if setpoint is None:
            drift = (signal.high - signal.low) * self.settings.drift_per_hour * (now - self._start) / 3600
            return signal.level + drift
        follow = math.exp(-max(now - setpoint.at, 0.0) / self.settings.lag_s)
        return setpoint.value + (setpoint.start - setpoint.value) * follow

    def _value(self, metric: MetricSpec, now: float) -> Value:
        if metric.name in self._written:
            return self._written[metric.name]
        signal = self._signals[metric.name]
        span = signal.high - signal.low
        wave = math.sin(2 * math.pi * (now - self._start) / self.settings.period_s + signal.phase)
        if metric.data_type is DataType.BOOL:
            return wave > 0
        if metric.data_type is DataType.STRING:
            return TEXT_STATES[0] if wave > -0.5 else TEXT_STATES[1]
        # The oscillation shrinks while following a setpoint: a controlled value stays near it.
        amplitude = 0.01 * span if metric.name in self._following else 0.1 * span
        value = self._centre(metric, signal, now) + amplitude * wave + self._rng.gauss(0, self.settings.noise * span)
        if metric.data_type in INTEGER_TYPES:
            return round(value)
        return value

    async def write(self, metric: str, value: Value, timeout: float) -> None:  # noqa: ASYNC109 - the ack deadline is part of a command
        spec = self.writable_metric(metric)
        if not self._connected:
            await self.connect()
        accepted = _coerce(spec, value)
        now = self._clock()
        if not isinstance(accepted, bool | str) and spec.unit:
            for follower in self.profile.metrics:
                if follower.unit == spec.unit and not follower.writable and follower.data_type not in TEXT_OR_BIT:
                    start = self._centre(follower, self._signals[follower.name], now)
                    self._following[follower.name] = _Setpoint(float(accepted), now, start)
        self._written[metric] = accepted


def _coerce(spec: MetricSpec, value: Value) -> Value:
    """The value as the metric's type holds it; what it cannot hold is rejected."""
    kind = spec.data_type
    if kind is DataType.STRING:
        if not isinstance(value, str):
            raise CommandRejected(f"metric {spec.name!r} takes text, got {value!r}", code="invalid_value")
        return value
    if kind is DataType.BOOL:
        if isinstance(value, bool) or (isinstance(value, int | float) and value in {0, 1}):
            return bool(value)
        raise CommandRejected(f"metric {spec.name!r} takes true/false, got {value!r}", code="invalid_value")
    if isinstance(value, str) or not math.isfinite(value):
        raise CommandRejected(f"metric {spec.name!r} takes a number, got {value!r}", code="invalid_value")
    if kind in INTEGER_TYPES:
        if value != int(value):
            raise CommandRejected(f"metric {spec.name!r} takes a whole number, got {value!r}", code="invalid_value")
        return int(value)
    return float(value)
