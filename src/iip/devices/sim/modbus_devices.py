"""Simulated Modbus TCP devices: one pymodbus server per kind of device, each device a unit id.

A device's registers are laid out by its profile's mappings and encoded with the platform's own
codec (`codecs.modbus`), so word order, scaling and coils are exactly what a driver reading the
profile expects. Registers are encoded from the device's model when a request reads them, so a
read always sees the latest step of the signals and nothing is encoded when nobody reads.

Writes go to the metrics the profile marks writable (holding registers, coils) and are handed to
the model, which may refuse them: a value out of range is answered with exception 3 (illegal data
value) and nothing changes; a write to any other register, exception 2 (illegal data address). A
unit id without a device is answered with exception 11 (gateway target failed to respond), as a
Modbus gateway does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from iip.devices.codecs.modbus import BIT_TABLES, ModbusValueError, decode, encode
from iip.devices.profiles import DeviceProfile, ModbusMapping, ModbusTable
from iip.devices.sim.signals import DeviceModel, Reading, SetpointError
from iip.kernel.errors import Invalid, Unavailable

logger = logging.getLogger(__name__)

TABLE_OF_FUNCTION: dict[int, ModbusTable] = {
    1: ModbusTable.COIL,
    5: ModbusTable.COIL,
    15: ModbusTable.COIL,
    2: ModbusTable.DISCRETE,
    3: ModbusTable.HOLDING,
    6: ModbusTable.HOLDING,
    16: ModbusTable.HOLDING,
    22: ModbusTable.HOLDING,
    23: ModbusTable.HOLDING,
    4: ModbusTable.INPUT,
}
# SimDevice takes its four tables in this order
TABLE_ORDER = (ModbusTable.COIL, ModbusTable.DISCRETE, ModbusTable.HOLDING, ModbusTable.INPUT)


@dataclass(frozen=True, slots=True)
class ModbusUnit:
    """A simulated device behind a Modbus server."""

    unit_id: int
    key: str
    profile: DeviceProfile
    model: DeviceModel


@dataclass(frozen=True, slots=True)
class _Point:
    metric: str
    mapping: ModbusMapping
    writable: bool

    @property
    def span(self) -> int:
        return max(self.mapping.register_count, 1)


class _UnitMemory:
    """The registers of one unit, refreshed from its model on reads and fed back to it on writes."""

    def __init__(self, unit: ModbusUnit) -> None:
        if not 1 <= unit.unit_id <= 247:
            raise Invalid(f"Modbus unit id {unit.unit_id} of {unit.key}: use 1..247")
        self.unit = unit
        self.points: dict[ModbusTable, list[_Point]] = {table: [] for table in ModbusTable}
        for metric in unit.profile.metrics:
            if metric.modbus is not None:
                self.points[metric.modbus.table].append(_Point(metric.name, metric.modbus, metric.writable))

    def end(self, table: ModbusTable) -> int:
        """First address after the table's last mapped one."""
        return max((p.mapping.address + p.span for p in self.points[table]), default=1)

    @property
    def extent(self) -> int:
        return max(self.end(table) for table in ModbusTable)

    def sim_device(self) -> SimDevice:
        blocks: list[list[SimData]] = []
        for table in TABLE_ORDER:
            end = self.end(table)
            if table in BIT_TABLES:
                blocks.append([SimData(0, values=[False] * end, datatype=SimType.BITS)])
            else:
                blocks.append([SimData(0, values=[0] * end, datatype=SimType.REGISTERS)])
        coils, discrete, holding, inputs = blocks
        return SimDevice(id=self.unit.unit_id, simdata=(coils, discrete, holding, inputs), action=self.on_request)

    async def on_request(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this before it answers; `registers` is the table's memory (changed in place)."""
        del count  # for bit tables it counts registers, not bits
        table = TABLE_OF_FUNCTION.get(function_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if values is None:
            self._refresh(table, start_address, registers)
            return None
        return self._write(table, start_address, address, registers, list(values))

    def _refresh(self, table: ModbusTable, start: int, registers: list[int]) -> None:
        readings = self.unit.model.readings()
        for point in self.points[table]:
            value = readings.get(point.metric)
            if value is None:
                continue
            try:
                raw = encode(point.mapping, value)
            except ModbusValueError as err:  # the model left the register's range: keep the last value
                logger.debug("%s %s: %s", self.unit.key, point.metric, err.message)
                continue
            if table in BIT_TABLES:
                _set_bit(registers, start, point.mapping.address, bool(raw[0]))
            else:
                offset = point.mapping.address - start
                registers[offset : offset + len(raw)] = raw

    def _write(
        self, table: ModbusTable, start: int, address: int, registers: list[int], values: list[int] | list[bool]
    ) -> ExcCodes | None:
        written = range(address, address + len(values))
        touched = [
            p
            for p in self.points[table]
            if p.mapping.address < written.stop and written.start < p.mapping.address + p.span
        ]
        covered = {a for p in touched for a in range(p.mapping.address, p.mapping.address + p.span)}
        if any(not p.writable for p in touched) or not set(written) <= covered:
            return ExcCodes.ILLEGAL_ADDRESS
        changes: dict[str, Reading] = {}
        for point in touched:
            first = point.mapping.address
            if table in BIT_TABLES:
                raw: list[int] | list[bool] = [bool(values[first - address])]
            else:
                image = [int(r) for r in registers[first - start : first - start + point.span]]
                for a in range(first, first + point.span):
                    if a in written:
                        image[a - first] = int(values[a - address])
                raw = image
            try:
                changes[point.metric] = decode(point.mapping, raw)
            except ModbusValueError:
                return ExcCodes.ILLEGAL_VALUE
        try:
            self.unit.model.apply(changes)
        except SetpointError as err:
            logger.info("%s refused a write: %s", self.unit.key, err)
            return ExcCodes.ILLEGAL_VALUE
        return None


def _set_bit(registers: list[int], start_register: int, bit_address: int, on: bool) -> None:
    index = bit_address // 16 - start_register
    mask = 1 << (bit_address % 16)
    registers[index] = registers[index] | mask if on else registers[index] & ~mask


async def _no_such_unit(*_: Any) -> ExcCodes:
    return ExcCodes.GATEWAY_NO_RESPONSE


class SimulatedModbusServer:
    """A Modbus TCP server holding several simulated units (as a gateway to a serial line would)."""

    def __init__(self, name: str, host: str, port: int, units: Sequence[ModbusUnit]) -> None:
        self.name = name
        self.host = host
        self.port = port  # the bound port once started
        self.units = list(units)
        self._memories = [_UnitMemory(unit) for unit in self.units]
        self._server: ModbusTcpServer | None = None

    @property
    def endpoint(self) -> str:
        return f"modbus://{self.host}:{self.port}"

    async def start(self) -> None:
        devices = [memory.sim_device() for memory in self._memories]
        # Unit 0 stands for every id not configured and answers as a gateway with nothing behind it,
        # over the addresses the configured units use.
        span = max((m.extent for m in self._memories), default=1)
        nobody = SimData(0, values=[0] * span, datatype=SimType.REGISTERS)
        devices.append(SimDevice(id=0, simdata=[nobody], action=_no_such_unit))
        server = ModbusTcpServer(devices, address=(self.host, self.port))
        try:
            await server.serve_forever(background=True)
        except (RuntimeError, OSError) as err:
            raise Unavailable(
                f"the Modbus {self.name} cannot listen on {self.host}:{self.port}: the port is in use or not allowed",
                code="sim_port_unavailable",
            ) from err
        self._server = server
        sockets = getattr(server.transport, "sockets", None) or ()
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]
