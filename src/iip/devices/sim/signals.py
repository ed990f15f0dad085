"""Plausible process signals for the simulated plant: seeded, advanced in fixed steps, no I/O.

Every model starts from a seed and moves only when `step(dt_s)` is called, so the same seed and the
same sequence of steps and setpoint changes give the same values (tests rely on it). Readings are
returned by `readings()` under the metric names of the simulated plant's profiles (`catalog.py`).

- Pumps follow the affinity laws: flow ~ speed, head ~ speed², power ~ speed³. Cavitation (flow
  drops, suction pressure sags, vibration spikes) and bearing wear (vibration and bearing
  temperature ramp up over hours) start at random, rarely (never with `random_faults=False`).
- Power meters measure a load (the main incomer: every pump and the building; a feeder: one pump,
  or a line of its own): three phases of voltage and current, active and reactive power, power
  factor, frequency, and energy counters that only increase.
- The reactor's temperature is held at its setpoint by a PI controller driving a split-range jacket
  valve (below 50 % cooling water, above 50 % steam) against an exothermic reaction.
- The packaging line's machines run, fault, starve when the machine before them stops, and count
  good and rejected units; OEE is availability x performance x quality since the start.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

Reading = float | int | bool | str

DAY_S = 86_400.0
Bounds = tuple[float, float] | None  # a number within bounds, or (None) a bit


class SetpointError(ValueError):
    """A command the simulated device refuses: a value out of range, or a metric it does not take."""


class DeviceModel(Protocol):
    """What the protocol servers need of a simulated device."""

    def readings(self) -> dict[str, Reading]:
        """Current values by profile metric name."""

    def apply(self, changes: Mapping[str, Reading]) -> None:
        """Take setpoints by metric name, all or none: `SetpointError` changes nothing."""


def _rng(seed: int | str) -> random.Random:
    return random.Random(seed)  # noqa: S311 - simulation, not security


def _clamp(value: float, low: float, high: float) -> float:
    return low if value < low else high if value > high else value


def _lag(value: float, target: float, dt_s: float, tau_s: float) -> float:
    """First-order lag of `value` towards `target` over `dt_s` with time constant `tau_s`."""
    return target + (value - target) * math.exp(-dt_s / tau_s)


def _checked(name: str, value: Reading, bounds: Bounds) -> float | bool:
    if bounds is None:
        if isinstance(value, bool) or (isinstance(value, int | float) and value in {0, 1}):
            return bool(value)
        raise SetpointError(f"{name} takes true or false, got {value!r}")
    if isinstance(value, bool | str) or not math.isfinite(value):
        raise SetpointError(f"{name} takes a number, got {value!r}")
    low, high = bounds
    if not low <= value <= high:
        raise SetpointError(f"{name} must be within {low:g}..{high:g}, got {value:g}")
    return float(value)


def apply_setpoints(target: object, changes: Mapping[str, Reading], rules: Mapping[str, Bounds]) -> None:
    """Check every change against `rules` (metric -> bounds), then set the attributes of the same names."""
    checked: dict[str, float | bool] = {}
    for name, value in changes.items():
        if name not in rules:
            raise SetpointError(f"{name} cannot be written")
        checked[name] = _checked(name, value, rules[name])
    for name, value in checked.items():
        setattr(target, name, value)


# --------------------------------------------------------------------------- pumps


@dataclass(frozen=True, slots=True)
class PumpRating:
    flow_m3h: float = 120.0  # at 100 % speed
    head_bar: float = 6.0  # differential pressure at 100 % speed
    suction_bar: float = 1.2
    efficiency: float = 0.72  # pump and motor, at the duty point
    ramp_pct_s: float = 10.0  # drive acceleration
    cavitation_mtbf_s: float = 6 * 3600.0  # mean time between cavitation episodes above 60 % speed
    wear_onset_mtbf_s: float = 7 * DAY_S  # mean time until a bearing starts to wear
    wear_duration_s: float = 12 * 3600.0  # from the onset of wear to the alarm level


VIBRATION_ALARM_MM_S = 7.1  # ISO 10816-3 zone D for medium machines
BEARING_ALARM_C = 90.0


class PumpSignals:
    """A centrifugal pump on a variable-speed drive."""

    SPEED_RANGE = (0.0, 100.0)

    def __init__(self, seed: int | str, rating: PumpRating | None = None, *, random_faults: bool = True) -> None:
        self._rng = _rng(f"pump:{seed}")
        self.rating = rating or PumpRating()
        self.random_faults = random_faults
        rng = self._rng
        self.run = True
        self.speed_setpoint = round(rng.uniform(65.0, 90.0), 1)
        self.speed = self.speed_setpoint
        self.run_hours = round(rng.uniform(2_000.0, 30_000.0), 1)
        self.cavitation_s = 0.0  # remaining duration of a cavitation episode
        self.wear = 0.0  # 0 new .. 1 at the alarm level, growing once started
        self.wearing = False
        n = self.speed / 100
        self.bearing_temperature = 25.0 + 32.0 * n
        self.flow = self.suction_pressure = self.discharge_pressure = 0.0
        self.power_kw = self.motor_current = self.vibration = 0.0
        self._measure()

    def apply(self, changes: Mapping[str, Reading]) -> None:
        apply_setpoints(self, changes, {"speed_setpoint": self.SPEED_RANGE, "run": None})

    # faults

    def inject_cavitation(self, duration_s: float) -> None:
        self.cavitation_s = max(self.cavitation_s, duration_s)

    def inject_bearing_wear(self, wear: float = 0.0) -> None:
        self.wearing = True
        self.wear = max(self.wear, wear)

    @property
    def cavitating(self) -> bool:
        return self.cavitation_s > 0 and self.speed > 1.0

    @property
    def fault(self) -> bool:
        return self.cavitating or self.vibration > VIBRATION_ALARM_MM_S or self.bearing_temperature > BEARING_ALARM_C

    def step(self, dt_s: float) -> None:
        rating, rng = self.rating, self._rng
        target = self.speed_setpoint if self.run else 0.0
        move = rating.ramp_pct_s * dt_s
        self.speed = (
            target if abs(target - self.speed) <= move else self.speed + math.copysign(move, target - self.speed)
        )
        if self.cavitation_s > 0:
            self.cavitation_s = max(0.0, self.cavitation_s - dt_s)
        elif self.random_faults and self.speed > 60.0 and rng.random() < dt_s / rating.cavitation_mtbf_s:
            self.cavitation_s = rng.uniform(60.0, 300.0)
        if self.random_faults and not self.wearing and rng.random() < dt_s / rating.wear_onset_mtbf_s:
            self.wearing = True
        if self.wearing and self.speed > 1.0:
            self.wear = min(1.5, self.wear + dt_s / rating.wear_duration_s)
        if self.speed > 1.0:
            self.run_hours += dt_s / 3600
        n = self.speed / 100
        target_temperature = 25.0 + 32.0 * n + 30.0 * self.wear
        self.bearing_temperature = _lag(self.bearing_temperature, target_temperature, dt_s, 900.0)
        self._measure()

    def _measure(self) -> None:
        rating, rng = self.rating, self._rng
        n = self.speed / 100
        if n <= 0.01:
            self.flow = 0.0
            self.suction_pressure = rating.suction_bar + rng.gauss(0, 0.005)
            self.discharge_pressure = self.suction_pressure + rng.gauss(0, 0.005)
            self.power_kw = self.motor_current = 0.0
            self.vibration = abs(rng.gauss(0.05, 0.02))
            return
        cavitation = 1.0 if self.cavitating else 0.0
        self.flow = max(
            0.0, rating.flow_m3h * n * (1 - cavitation * rng.uniform(0.1, 0.25)) * (1 + rng.gauss(0, 0.005))
        )
        head = rating.head_bar * n * n * (1 - cavitation * rng.uniform(0.05, 0.2)) * (1 + rng.gauss(0, 0.003))
        self.suction_pressure = rating.suction_bar - 0.35 * cavitation + rng.gauss(0, 0.01)
        self.discharge_pressure = self.suction_pressure + head
        hydraulic_kw = self.flow * head / 36.0  # m3/h x bar -> kW
        self.power_kw = hydraulic_kw / rating.efficiency + 0.4  # plus the drive's own losses
        power_factor = 0.6 + 0.26 * min(1.0, n / 0.8)
        self.motor_current = self.power_kw * 1000 / (math.sqrt(3) * 400.0 * power_factor)
        vibration = 0.6 + 1.6 * n + 4.5 * self.wear + cavitation * rng.uniform(1.5, 3.5)
        self.vibration = max(0.0, vibration * (1 + rng.gauss(0, 0.03)))

    def readings(self) -> dict[str, Reading]:
        return {
            "speed_setpoint": self.speed_setpoint,
            "run": self.run,
            "running": self.speed > 1.0,
            "fault": self.fault,
            "speed": self.speed,
            "flow": self.flow,
            "suction_pressure": self.suction_pressure,
            "discharge_pressure": self.discharge_pressure,
            "motor_current": self.motor_current,
            "vibration": self.vibration,
            "bearing_temperature": self.bearing_temperature,
            "run_hours": self.run_hours,
        }


# --------------------------------------------------------------------------- power meters


class PowerMeterSignals:
    """A three-phase meter (400/230 V, 50 Hz) on a load; its energy counters only increase."""

    def __init__(self, seed: int | str, rated_kw: float) -> None:
        rng = self._rng = _rng(f"meter:{seed}")
        self.rated_kw = rated_kw
        self.energy = round(rng.uniform(5_000.0, 250_000.0), 3)  # kWh at the start
        self.reactive_energy = round(self.energy * rng.uniform(0.3, 0.5), 3)
        self._phase_offsets = tuple(rng.gauss(0, 0.8) for _ in range(3))  # volts
        spread = [rng.gauss(0, 0.015) for _ in range(3)]
        self._imbalance = tuple(x - sum(spread) / 3 for x in spread)  # shares of the load, summing to 1
        self.frequency = 50.0
        self.active_power = 0.0
        self.reactive_power = 0.0
        self.power_factor = 0.9
        self.voltages = (230.0, 230.0, 230.0)
        self.currents = (0.0, 0.0, 0.0)

    def step(self, dt_s: float, load_kw: float) -> None:
        rng = self._rng
        load_kw = max(0.0, load_kw)
        fraction = min(1.5, load_kw / self.rated_kw) if self.rated_kw else 0.0
        self.frequency = _clamp(self.frequency + rng.gauss(0, 0.004) - (self.frequency - 50.0) * 0.05, 49.9, 50.1)
        self.voltages = tuple(  # type: ignore[assignment]  # three phases
            231.0 + offset - 4.0 * fraction + rng.gauss(0, 0.25) for offset in self._phase_offsets
        )
        self.power_factor = _clamp(0.8 + 0.12 * min(fraction, 1.0) + rng.gauss(0, 0.004), 0.5, 0.99)
        self.active_power = load_kw
        self.reactive_power = load_kw * math.tan(math.acos(self.power_factor))
        per_phase_va = load_kw * 1000 / 3 / self.power_factor
        self.currents = tuple(  # type: ignore[assignment]
            per_phase_va / voltage * (1 + imbalance)
            for voltage, imbalance in zip(self.voltages, self._imbalance, strict=True)
        )
        self.energy += load_kw * dt_s / 3600
        self.reactive_energy += self.reactive_power * dt_s / 3600

    def apply(self, changes: Mapping[str, Reading]) -> None:
        apply_setpoints(self, changes, {})

    def readings(self) -> dict[str, Reading]:
        v1, v2, v3 = self.voltages
        i1, i2, i3 = self.currents
        return {
            "voltage_l1": v1,
            "voltage_l2": v2,
            "voltage_l3": v3,
            "current_l1": i1,
            "current_l2": i2,
            "current_l3": i3,
            "active_power": self.active_power,
            "reactive_power": self.reactive_power,
            "power_factor": self.power_factor,
            "frequency": self.frequency,
            "energy": self.energy,
            "reactive_energy": self.reactive_energy,
        }


class LoadProfile:
    """Background load of a building or line: a day shape, a slow random walk and noise."""

    def __init__(self, seed: int | str, base_kw: float) -> None:
        self._rng = _rng(f"load:{seed}")
        self.base_kw = base_kw
        self._walk = 0.0
        self._phase = self._rng.uniform(0, 2 * math.pi)

    def step(self, dt_s: float, elapsed_s: float) -> float:
        rng = self._rng
        self._walk = _clamp(self._walk + rng.gauss(0, 0.01) * math.sqrt(dt_s), -0.15, 0.15)
        day = 0.2 * math.sin(2 * math.pi * elapsed_s / DAY_S + self._phase)
        return max(0.0, self.base_kw * (1.0 + day + self._walk + rng.gauss(0, 0.01)))


# --------------------------------------------------------------------------- reactor


class ReactorSignals:
    """A jacketed stirred-tank reactor with an exothermic reaction and a PI temperature loop."""

    SETPOINT_RANGE = (20.0, 140.0)
    AGITATOR_RANGE = (0.0, 300.0)
    FEED_KG_H = 1500.0
    CAPACITY_KG = 8000.0
    KP = 12.0  # % valve per °C
    KI = 0.08  # % valve per °C·s

    def __init__(self, seed: int | str) -> None:
        rng = self._rng = _rng(f"reactor:{seed}")
        self.temperature_setpoint = 78.0
        self.temperature = self.temperature_setpoint + rng.gauss(0, 0.2)
        self.jacket_temperature = 74.6
        self.level = 60.0 + rng.gauss(0, 0.5)
        self.agitator_setpoint = 120.0
        self.agitator_speed = self.agitator_setpoint
        self.feed_flow = self.FEED_KG_H
        self._feed_factor = 1.0
        self._water = 0.0
        self._integral = (self._valve_for(self.jacket_temperature) - 50.0) * 2 / self.KI  # bumpless start
        self.jacket_valve = self._valve_for(self.jacket_temperature)
        self.pressure = self._pressure()

    @staticmethod
    def _valve_for(jacket_target: float) -> float:
        """Split range: 0 % full cooling water (20 °C), 100 % full steam (160 °C)."""
        return _clamp((jacket_target - 20.0) / 140.0 * 100.0, 0.0, 100.0)

    def apply(self, changes: Mapping[str, Reading]) -> None:
        rules = {"temperature_setpoint": self.SETPOINT_RANGE, "agitator_setpoint": self.AGITATOR_RANGE}
        apply_setpoints(self, changes, rules)

    @property
    def phase(self) -> str:
        error = self.temperature_setpoint - self.temperature
        return "HEATING" if error > 3.0 else "COOLING" if error < -3.0 else "REACTING"

    def step(self, dt_s: float) -> None:
        rng = self._rng
        for _ in range(max(1, math.ceil(dt_s / 2.0))):  # integrate in steps of at most 2 s
            self._integrate(dt_s / max(1, math.ceil(dt_s / 2.0)))
        self.agitator_speed = _lag(self.agitator_speed, self.agitator_setpoint, dt_s, 5.0) + rng.gauss(0, 0.3)
        self.agitator_speed = max(0.0, self.agitator_speed)
        self.pressure = self._pressure()

    def _integrate(self, dt: float) -> None:
        rng = self._rng
        error = self.temperature_setpoint - self.temperature
        # PI with anti-windup: the integral stops growing while the valve is at a limit.
        output = 50.0 + (self.KP * error + self.KI * self._integral) / 2
        saturated = (output >= 100.0 and error > 0) or (output <= 0.0 and error < 0)
        if not saturated:
            self._integral += error * dt
        self.jacket_valve = _clamp(output, 0.0, 100.0)
        # cooling water comes in at 16..24 °C, drifting: the loop has something to reject
        self._water = _clamp(self._water + rng.gauss(0, 0.03) * math.sqrt(dt), -4.0, 4.0)
        water = 20.0 + self._water
        jacket_target = water + (160.0 - water) * self.jacket_valve / 100
        self.jacket_temperature = _lag(self.jacket_temperature, jacket_target, dt, 40.0)
        self._feed_factor = _clamp(self._feed_factor + rng.gauss(0, 0.002) * math.sqrt(dt), 0.85, 1.15)
        self.feed_flow = max(0.0, self.FEED_KG_H * self._feed_factor * (1 + rng.gauss(0, 0.004)))
        reaction = 0.04 * (self.feed_flow / self.FEED_KG_H) * math.exp((self.temperature - 78.0) / 40.0)
        heat_exchange = (self.jacket_temperature - self.temperature) / 150.0 * (0.6 + 0.4 * self.agitator_speed / 120)
        losses = (self.temperature - 25.0) / 3000.0
        self.temperature += (heat_exchange + reaction - losses) * dt
        outflow = max(0.0, self.FEED_KG_H + 150.0 * (self.level - 60.0))  # the level controller
        self.level = _clamp(self.level + (self.feed_flow - outflow) / 3600 * dt / self.CAPACITY_KG * 100, 0.0, 100.0)

    def _pressure(self) -> float:
        vapour = 0.9 * math.exp((self.temperature - 100.0) / 25.0)
        return 1.0 + vapour + 0.002 * (self.level - 60.0) + self._rng.gauss(0, 0.003)

    def readings(self) -> dict[str, Reading]:
        return {
            "temperature": self.temperature + self._rng.gauss(0, 0.03),  # sensor noise
            "temperature_setpoint": self.temperature_setpoint,
            "jacket_temperature": self.jacket_temperature,
            "jacket_valve": self.jacket_valve,
            "pressure": self.pressure,
            "level": self.level,
            "feed_flow": self.feed_flow,
            "agitator_speed": self.agitator_speed,
            "agitator_setpoint": self.agitator_setpoint,
            "phase": self.phase,
        }


# --------------------------------------------------------------------------- packaging line


class MachineState:
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    FAULT = "FAULT"
    STARVED = "STARVED"


FAULT_CODES = (101, 102, 103, 104, 105)  # jam, low supply, guard open, sensor, drive trip


@dataclass(frozen=True, slots=True)
class MachineSpec:
    device_id: str  # the Sparkplug device id and the last part of the device key
    title: str
    nominal_speed: float  # units per minute
    unit: str
    reject_ratio: float
    mtbf_s: float
    mttr_s: float


class MachineSignals:
    """One machine of the line: state, speed, counters and OEE since the start."""

    def __init__(self, seed: int | str, spec: MachineSpec, *, random_faults: bool = True) -> None:
        self._rng = _rng(f"machine:{seed}:{spec.device_id}")
        self.spec = spec
        self.random_faults = random_faults
        self.run = True
        self.speed_setpoint = spec.nominal_speed
        self.speed = spec.nominal_speed
        self.state = MachineState.RUNNING
        self.fault_code = 0
        self._fault_s = 0.0
        self._made = 0.0  # units, fractional between steps
        self._rejected = 0.0
        self._planned_s = 0.0
        self._running_s = 0.0

    def apply(self, changes: Mapping[str, Reading]) -> None:
        apply_setpoints(self, changes, {"speed_setpoint": (0.0, 1.5 * self.spec.nominal_speed), "run": None})
        if not self.run:  # stopping resets a fault
            self._fault_s = 0.0
            self.fault_code = 0

    def inject_fault(self, duration_s: float, code: int = FAULT_CODES[0]) -> None:
        self._fault_s = duration_s
        self.fault_code = code

    def step(self, dt_s: float, upstream_running: bool) -> None:
        rng, spec = self._rng, self.spec
        if self._fault_s > 0:
            self._fault_s = max(0.0, self._fault_s - dt_s)
            if self._fault_s == 0:
                self.fault_code = 0
        elif self.random_faults and self.state == MachineState.RUNNING and rng.random() < dt_s / spec.mtbf_s:
            self.inject_fault(rng.expovariate(1 / spec.mttr_s) + 5.0, rng.choice(FAULT_CODES))
        if not self.run:
            self.state = MachineState.STOPPED
        elif self._fault_s > 0:
            self.state = MachineState.FAULT
        elif not upstream_running:
            self.state = MachineState.STARVED
        else:
            self.state = MachineState.RUNNING
        target = self.speed_setpoint if self.state == MachineState.RUNNING else 0.0
        self.speed = max(0.0, _lag(self.speed, target, dt_s, 3.0) + (rng.gauss(0, 0.004) * target))
        if self.run:
            self._planned_s += dt_s
        if self.state == MachineState.RUNNING:
            self._running_s += dt_s
            made = self.speed * dt_s / 60
            self._made += made
            self._rejected += made * spec.reject_ratio * rng.uniform(0.0, 2.0)

    @property
    def total_count(self) -> int:
        return int(self._made)

    @property
    def reject_count(self) -> int:
        return int(self._rejected)

    @property
    def good_count(self) -> int:
        return self.total_count - self.reject_count

    def oee(self) -> tuple[float, float, float, float]:
        """Availability, performance, quality and OEE in percent (100 before anything is planned)."""
        availability = self._running_s / self._planned_s if self._planned_s else 1.0
        expected = self._running_s / 60 * self.spec.nominal_speed
        performance = min(1.0, self._made / expected) if expected else 1.0
        quality = 1.0 - self._rejected / self._made if self._made else 1.0
        quality = _clamp(quality, 0.0, 1.0)
        return availability * 100, performance * 100, quality * 100, availability * performance * quality * 100

    def readings(self) -> dict[str, Reading]:
        availability, performance, quality, oee = self.oee()
        return {
            "state": self.state,
            "run": self.run,
            "speed": self.speed,
            "speed_setpoint": self.speed_setpoint,
            "good_count": self.good_count,
            "reject_count": self.reject_count,
            "fault_code": self.fault_code,
            "availability": availability,
            "performance": performance,
            "quality": quality,
            "oee": oee,
        }


LINE_MACHINES: tuple[MachineSpec, ...] = (
    MachineSpec("filler", "Filler", 300.0, "bottles/min", 0.008, 5 * 3600.0, 90.0),
    MachineSpec("capper", "Capper", 300.0, "bottles/min", 0.003, 8 * 3600.0, 60.0),
    MachineSpec("labeller", "Labeller", 300.0, "bottles/min", 0.005, 6 * 3600.0, 75.0),
    MachineSpec("case-packer", "Case packer", 25.0, "cases/min", 0.002, 10 * 3600.0, 120.0),
    MachineSpec("palletiser", "Palletiser", 0.5, "pallets/min", 0.001, 16 * 3600.0, 180.0),
)


class LineSignals:
    """Machines in series: each one starves while the one before it is not running."""

    def __init__(
        self, seed: int | str, machines: Sequence[MachineSpec] = LINE_MACHINES, *, random_faults: bool = True
    ) -> None:
        self.machines = [MachineSignals(seed, spec, random_faults=random_faults) for spec in machines]
        self.uptime_s = 0.0

    def machine(self, device_id: str) -> MachineSignals:
        return next(m for m in self.machines if m.spec.device_id == device_id)

    def step(self, dt_s: float) -> None:
        self.uptime_s += dt_s
        upstream_running = True
        for machine in self.machines:
            machine.step(dt_s, upstream_running)
            upstream_running = machine.state == MachineState.RUNNING

    def apply(self, changes: Mapping[str, Reading]) -> None:
        apply_setpoints(self, changes, {})

    @property
    def state(self) -> str:
        states = {m.state for m in self.machines}
        if MachineState.FAULT in states:
            return MachineState.FAULT
        if states == {MachineState.RUNNING}:
            return MachineState.RUNNING
        return MachineState.STOPPED if self.machines and not self.machines[0].run else MachineState.STARVED

    def readings(self) -> dict[str, Reading]:
        first = self.machines[0] if self.machines else None
        output = min((m.speed / m.spec.nominal_speed for m in self.machines), default=0.0)
        return {
            "line_state": self.state,
            "line_speed": output * (first.spec.nominal_speed if first else 0.0),
            "uptime": int(self.uptime_s),
        }


# --------------------------------------------------------------------------- environment sensors


class EnvironmentSignals:
    """A room sensor: temperature with a day cycle, humidity that falls as it warms, CO2, battery."""

    def __init__(self, seed: int | str) -> None:
        rng = self._rng = _rng(f"env:{seed}")
        self._mean = rng.uniform(19.0, 25.0)
        self._phase = rng.uniform(0, 2 * math.pi)
        self._walk = 0.0
        self.battery = rng.uniform(55.0, 100.0)
        self.temperature = self._mean
        self.humidity = 45.0
        self.co2 = 450.0
        self._elapsed = 0.0
        self.step(0.0)

    def step(self, dt_s: float) -> None:
        rng = self._rng
        self._elapsed += dt_s
        day = math.sin(2 * math.pi * self._elapsed / DAY_S + self._phase)
        self._walk = _clamp(self._walk + rng.gauss(0, 0.02) * math.sqrt(max(dt_s, 0.0)), -1.0, 1.0)
        self.temperature = self._mean + 2.5 * day + self._walk + rng.gauss(0, 0.05)
        self.humidity = _clamp(50.0 - 2.0 * (self.temperature - self._mean) + rng.gauss(0, 0.3), 5.0, 95.0)
        occupancy = max(0.0, day)
        self.co2 = max(400.0, 430.0 + 450.0 * occupancy + rng.gauss(0, 8.0))
        self.battery = max(0.0, self.battery - dt_s * 0.5 / DAY_S)

    def apply(self, changes: Mapping[str, Reading]) -> None:
        apply_setpoints(self, changes, {})

    def readings(self) -> dict[str, Reading]:
        # keys as the sensor sends them; the profile maps them to metric names
        return {"temp": self.temperature, "hum": self.humidity, "co2": self.co2, "bat": self.battery}


def load_device_values(index: int, elapsed_s: float, rng: random.Random) -> dict[str, float]:
    """Values of a lightweight load-test device: no state per device, a phase from its index."""
    phase = (index * 0.6180339887) % 1.0 * 2 * math.pi
    wave = math.sin(2 * math.pi * elapsed_s / 3600 + phase)
    temperature = 21.0 + 3.0 * wave + rng.gauss(0, 0.1)
    humidity = 50.0 - 4.0 * wave + rng.gauss(0, 0.3)
    return {"t": round(temperature, 2), "h": round(humidity, 1)}


# --------------------------------------------------------------------------- the plant


class PlantSignals:
    """Every model of the plant, stepped together; the main meter sums the pumps and a building load.

    Meter 1 is the main incomer; meter k (k >= 2) feeds pump k-1 when there is one, else a line
    with a load of its own.
    """

    def __init__(
        self,
        seed: int,
        *,
        pumps: int,
        meters: int,
        reactor: bool,
        line: bool,
        sensors: int,
        random_faults: bool = True,
    ) -> None:
        self.elapsed_s = 0.0
        self.pumps = [PumpSignals(f"{seed}:{i}", random_faults=random_faults) for i in range(pumps)]
        rating = PumpRating()
        pump_kw = rating.flow_m3h * rating.head_bar / 36 / rating.efficiency
        self.meters: list[PowerMeterSignals] = []
        self._loads: list[LoadProfile | None] = []  # None: the meter feeds the pump before it
        for i in range(meters):
            if i == 0:  # the main incomer: every pump and the building
                rated, load = 80.0 + pump_kw * pumps, LoadProfile(f"{seed}:{i}", 40.0)
            elif i <= pumps:
                rated, load = pump_kw, None
            else:  # a feeder to a line of its own
                rated, load = 60.0, LoadProfile(f"{seed}:{i}", 25.0)
            self.meters.append(PowerMeterSignals(f"{seed}:{i}", rated))
            self._loads.append(load)
        self.reactor = ReactorSignals(seed) if reactor else None
        self.line = LineSignals(seed, random_faults=random_faults) if line else None
        self.sensors = [EnvironmentSignals(f"{seed}:{i}") for i in range(sensors)]
        self._step_meters(0.0)

    def step(self, dt_s: float) -> None:
        self.elapsed_s += dt_s
        for pump in self.pumps:
            pump.step(dt_s)
        if self.reactor is not None:
            self.reactor.step(dt_s)
        if self.line is not None:
            self.line.step(dt_s)
        for sensor in self.sensors:
            sensor.step(dt_s)
        self._step_meters(dt_s)

    def _step_meters(self, dt_s: float) -> None:
        for i, (meter, load) in enumerate(zip(self.meters, self._loads, strict=True)):
            if load is None:
                meter.step(dt_s, self.pumps[i - 1].power_kw)
                continue
            background = load.step(dt_s, self.elapsed_s)
            if i == 0:
                background += sum(p.power_kw for p in self.pumps)
            meter.step(dt_s, background)
