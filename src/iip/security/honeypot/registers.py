"""The decoy's process image: registers, coils and S7 memory that move like a small plant.

Process values drift slowly around an operating point (a sine with a period of minutes plus
measurement noise), counters only ever go up at a steady rate, setpoints stay where they were
put. Everything is a pure function of the deployment seed and the time, so two decoys never show
the same numbers, one decoy shows the same numbers for the same instant after a restart, and
values read a minute apart differ the way a live process does. Writes are accepted and kept:
whatever a visitor writes, it reads back.

Modbus layout (0-based addresses): holding registers 0-7 setpoints, 8-15 four 32-bit counters
(high word first), 16-23 the process values, 24 a status word; input registers 0-7 the process
values; coils 0-7 drives running; discrete inputs 0-7 high-level switches. S7 layout: DB1 process
values then setpoints as REAL, DB2 counters as DINT, DB3 a recipe; M: drive bits in MB0, process
values as INT from MW10; I: switches in IB0; Q: drive outputs in QB0.
"""

from __future__ import annotations

import hashlib
import math
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass

from iip.security.honeypot.identity import seeded_random

CHANNELS = 8
COUNTERS = 4
HOLDING_SIZE = 128
INPUT_SIZE = 64
BITS_SIZE = 128
COUNTER_EPOCH = 1_577_836_800.0  # 2020-01-01T00:00:00Z: counters count from here

AREA_INPUTS, AREA_OUTPUTS, AREA_FLAGS, AREA_DB = 0x81, 0x82, 0x83, 0x84
S7_AREA_SIZES = {AREA_INPUTS: 64, AREA_OUTPUTS: 64, AREA_FLAGS: 256}
DB_SIZES = {1: 64, 2: 32, 3: 128}


@dataclass(frozen=True, slots=True)
class Channel:
    """One measured process value, in engineering units; registers hold it times `scale`."""

    name: str
    base: float
    amplitude: float
    period: float  # seconds
    phase: float
    noise: float
    scale: float


_KINDS = (
    ("temperature", 40.0, 95.0, 10.0),
    ("pressure", 2.0, 9.0, 100.0),
    ("flow", 10.0, 120.0, 10.0),
    ("level", 20.0, 80.0, 10.0),
    ("speed", 900.0, 1500.0, 1.0),
    ("current", 5.0, 40.0, 10.0),
)


class ProcessImage:
    """The decoy's live data for one deployment; `clock` gives the time in seconds (epoch)."""

    def __init__(self, seed: str, clock: Callable[[], float]) -> None:
        self.seed = seed
        self.clock = clock
        rng = seeded_random(seed, "process")
        self.channels = tuple(self._channel(rng, index) for index in range(CHANNELS))
        self.setpoints = tuple(round(rng.uniform(c.base, c.base + c.amplitude) * c.scale) for c in self.channels)
        self.counter_starts = tuple(rng.randrange(10_000, 5_000_000) for _ in range(COUNTERS))
        self.counter_rates = tuple(rng.uniform(0.05, 3.0) for _ in range(COUNTERS))  # units per second
        self.drive_periods = tuple(rng.uniform(600.0, 3600.0) for _ in range(CHANNELS))
        self.recipe = bytes(rng.randrange(256) for _ in range(DB_SIZES[3]))
        self.holding_writes: dict[int, int] = {}
        self.coil_writes: dict[int, bool] = {}
        self.s7_writes: dict[tuple[int, int], dict[int, int]] = {}

    @staticmethod
    def _channel(rng: random.Random, index: int) -> Channel:
        name, low, high, scale = _KINDS[index % len(_KINDS)]
        base = rng.uniform(low, (low + high) / 2)
        return Channel(
            name=f"{name}_{index + 1}",
            base=base,
            amplitude=rng.uniform(0.05, 0.25) * (high - low),
            period=rng.uniform(300.0, 3600.0),
            phase=rng.uniform(0.0, 2 * math.pi),
            noise=rng.uniform(0.002, 0.01) * (high - low),
            scale=scale,
        )

    # -- values at an instant ------------------------------------------------------------------

    def _noise(self, key: str, second: int) -> float:
        """Uniform in [-1, 1), fixed for (seed, key, second): the same reading after a restart."""
        digest = hashlib.blake2b(f"{self.seed}\x00{key}\x00{second}".encode(), digest_size=4).digest()
        return int.from_bytes(digest, "big") / 2**31 - 1.0

    def value(self, channel: int, at: float | None = None) -> float:
        """Process value `channel` in engineering units at time `at` (now by default)."""
        t = self.clock() if at is None else at
        c = self.channels[channel]
        wave = c.amplitude * 0.5 * (1 + math.sin(2 * math.pi * t / c.period + c.phase))
        return c.base + wave + c.noise * self._noise(c.name, math.floor(t))

    def counter(self, index: int, at: float | None = None) -> int:
        t = self.clock() if at is None else at
        return (self.counter_starts[index] + math.floor(self.counter_rates[index] * (t - COUNTER_EPOCH))) & 0xFFFFFFFF

    def drive_running(self, index: int, at: float | None = None) -> bool:
        t = self.clock() if at is None else at
        return math.sin(2 * math.pi * t / self.drive_periods[index] + self.channels[index].phase) > -0.3

    def _scaled(self, channel: int, t: float) -> int:
        return max(0, min(0xFFFF, round(self.value(channel, t) * self.channels[channel].scale)))

    # -- Modbus tables ----------------------------------------------------------------------------

    def holding_registers(self, address: int, count: int) -> list[int] | None:
        """`count` holding registers from `address`; None when the range leaves the table."""
        if address < 0 or count < 1 or address + count > HOLDING_SIZE:
            return None
        t = self.clock()
        return [self.holding_writes.get(a, self._holding(a, t)) for a in range(address, address + count)]

    def _holding(self, address: int, t: float) -> int:
        if address < CHANNELS:
            return self.setpoints[address]
        if address < CHANNELS + 2 * COUNTERS:
            counter = self.counter((address - CHANNELS) // 2, t)
            return counter >> 16 if (address - CHANNELS) % 2 == 0 else counter & 0xFFFF
        if address < 2 * CHANNELS + 2 * COUNTERS:
            return self._scaled(address - CHANNELS - 2 * COUNTERS, t)
        if address == 2 * CHANNELS + 2 * COUNTERS:
            return sum(1 << i for i in range(CHANNELS) if self.drive_running(i, t))
        return 0

    def input_registers(self, address: int, count: int) -> list[int] | None:
        if address < 0 or count < 1 or address + count > INPUT_SIZE:
            return None
        t = self.clock()
        return [self._scaled(a, t) if a < CHANNELS else 0 for a in range(address, address + count)]

    def coils(self, address: int, count: int) -> list[bool] | None:
        if address < 0 or count < 1 or address + count > BITS_SIZE:
            return None
        t = self.clock()
        return [
            self.coil_writes.get(a, a < CHANNELS and self.drive_running(a, t)) for a in range(address, address + count)
        ]

    def discrete_inputs(self, address: int, count: int) -> list[bool] | None:
        if address < 0 or count < 1 or address + count > BITS_SIZE:
            return None
        t = self.clock()
        return [a < CHANNELS and self._high(a, t) for a in range(address, address + count)]

    def _high(self, channel: int, t: float) -> bool:
        c = self.channels[channel]
        return self.value(channel, t) > c.base + 0.8 * c.amplitude

    def write_registers(self, address: int, values: list[int]) -> bool:
        if address < 0 or address + len(values) > HOLDING_SIZE:
            return False
        self.holding_writes.update({address + i: v & 0xFFFF for i, v in enumerate(values)})
        return True

    def write_coils(self, address: int, values: list[bool]) -> bool:
        if address < 0 or address + len(values) > BITS_SIZE:
            return False
        self.coil_writes.update({address + i: bool(v) for i, v in enumerate(values)})
        return True

    # -- S7 memory ----------------------------------------------------------------------------

    def s7_size(self, area: int, db: int) -> int | None:
        """Bytes in an S7 area (DB `db` for the DB area); None when it does not exist."""
        return DB_SIZES.get(db) if area == AREA_DB else S7_AREA_SIZES.get(area)

    def s7_read(self, area: int, db: int, start: int, size: int) -> bytes | None:
        """`size` bytes from byte `start`; None when the area or range does not exist."""
        total = self.s7_size(area, db)
        if total is None or start < 0 or size < 0 or start + size > total:
            return None
        image = bytearray(self._s7_image(area, db, self.clock()))
        for offset, byte in self.s7_writes.get((area, db if area == AREA_DB else 0), {}).items():
            image[offset] = byte
        return bytes(image[start : start + size])

    def s7_write(self, area: int, db: int, start: int, data: bytes) -> bool:
        total = self.s7_size(area, db)
        if total is None or start < 0 or start + len(data) > total:
            return False
        written = self.s7_writes.setdefault((area, db if area == AREA_DB else 0), {})
        written.update({start + i: b for i, b in enumerate(data)})
        return True

    def s7_write_bit(self, area: int, db: int, byte: int, bit: int, value: bool) -> bool:
        current = self.s7_read(area, db, byte, 1)
        if current is None:
            return False
        mask = 1 << bit
        return self.s7_write(area, db, byte, bytes([current[0] | mask if value else current[0] & ~mask & 0xFF]))

    def _s7_image(self, area: int, db: int, t: float) -> bytes:
        drives = sum(1 << i for i in range(CHANNELS) if self.drive_running(i, t))
        size = self.s7_size(area, db) or 0
        if area == AREA_DB and db == 1:
            values = [self.value(i, t) for i in range(CHANNELS)]
            setpoints = [s / c.scale for s, c in zip(self.setpoints, self.channels, strict=True)]
            return struct.pack(f">{2 * CHANNELS}f", *values, *setpoints)
        if area == AREA_DB and db == 2:
            return struct.pack(f">{COUNTERS}I", *(self.counter(i, t) for i in range(COUNTERS))).ljust(size, b"\x00")
        if area == AREA_DB and db == 3:
            return self.recipe
        if area == AREA_FLAGS:
            words = struct.pack(f">{CHANNELS}H", *(self._scaled(i, t) for i in range(CHANNELS)))
            return (bytes([drives]) + bytes(9) + words).ljust(size, b"\x00")
        if area == AREA_INPUTS:
            switches = sum(1 << i for i in range(CHANNELS) if self._high(i, t))
            return bytes([switches]).ljust(size, b"\x00")
        return bytes([drives]).ljust(size, b"\x00")
