"""Modbus TCP polling and setpoint writes with pymodbus.

A poll sends the read plan of `iip.devices.codecs.modbus` (few requests per table). A request the
device answers with an exception marks its metrics BAD, with the exception code in `detail`, and
the poll goes on; a request that bridges a gap and is refused with "illegal data address" is
re-planned as one request per metric, once, so the readable metrics come back GOOD from then on.
A request that gets no answer (timeout, connection lost) fails the whole poll with
`DeviceUnavailable` and drops the connection: waiting out the timeout for every other request of
an unreachable device helps nobody. The next read or write reconnects; pymodbus's own background
reconnect is off so that retries follow the owner's backoff.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence

from pydantic import BaseModel, ConfigDict, Field
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from iip.devices.codecs.modbus import (
    BIT_TABLES,
    WRITABLE_TABLES,
    ModbusValueError,
    ReadRequest,
    Value,
    decode,
    encode,
    plan_reads,
    slice_values,
    split_request,
)
from iip.devices.drivers.base import CommandRejected, DeviceRejected, DeviceUnavailable, Driver, Reading
from iip.devices.profiles import DeviceProfile, ModbusMapping, ModbusTable, Protocol
from iip.kernel.errors import Invalid
from iip.telemetry.public import Quality

Call = Callable[[AsyncModbusTcpClient], Awaitable[ModbusPDU]]
EXCEPTION_NAMES = {code.value: code.name.lower().replace("_", " ") for code in ExcCodes}


class ModbusConnection(BaseModel):
    """How to reach one Modbus TCP device (stored as JSON on the device)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(min_length=1, max_length=253)
    port: int = Field(default=502, ge=1, le=65535)
    unit_id: int = Field(default=1, ge=0, le=255, description="Modbus unit (slave) id; gateways route by it")
    timeout_s: float = Field(default=3.0, gt=0, le=60, description="wait for each response")
    retries: int = Field(default=0, ge=0, le=5, description="resends of an unanswered request")
    max_register_gap: int = Field(default=8, ge=0, le=124, description="unmapped registers one read may bridge")
    max_bit_gap: int = Field(default=64, ge=0, le=1999, description="unmapped coils/inputs one read may bridge")
    verify_writes: bool = Field(default=True, description="read a written value back and compare")


def exception_message(response: ModbusPDU, what: str) -> str:
    code = int(response.exception_code)
    name = EXCEPTION_NAMES.get(code, "unknown exception")
    return f"modbus exception {code} ({name}) on {what}"


class ModbusDriver(Driver):
    protocol = Protocol.MODBUS
    connection_model = ModbusConnection

    def __init__(
        self, profile: DeviceProfile, connection: ModbusConnection, *, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(profile, connection)
        self.settings = connection
        self._clock = clock
        self._points: list[tuple[str, ModbusMapping]] = [(m.name, m.modbus) for m in profile.metrics if m.modbus]
        if not self._points:
            raise Invalid(f"profile {profile.name!r} maps no metric to Modbus registers", code="no_modbus_mapping")
        self.plan: list[ReadRequest] = plan_reads(
            self._points, max_register_gap=connection.max_register_gap, max_bit_gap=connection.max_bit_gap
        )
        self._client: AsyncModbusTcpClient | None = None
        self._connect_lock = asyncio.Lock()

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def connect(self) -> None:
        await self._ensure_client()

    async def close(self) -> None:
        self._drop()

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def _ensure_client(self) -> AsyncModbusTcpClient:
        async with self._connect_lock:
            if self._client is not None and self._client.connected:
                return self._client
            self._drop()
            client = AsyncModbusTcpClient(
                self.settings.host,
                port=self.settings.port,
                timeout=self.settings.timeout_s,
                retries=self.settings.retries,
                reconnect_delay=0,  # we reconnect on the next call, at the owner's pace
                name=f"iip-{self.profile.name}",
            )
            try:
                ok = await client.connect()
            except (ModbusException, OSError) as err:
                client.close()
                raise DeviceUnavailable(f"cannot connect to modbus device {self.address}: {err}") from err
            if not ok:
                client.close()
                raise DeviceUnavailable(f"cannot connect to modbus device {self.address}")
            self._client = client
            return client

    async def _call(self, what: str, request: Call) -> ModbusPDU:
        """One request/response; no answer drops the connection."""
        client = await self._ensure_client()
        try:
            response = await request(client)
        except (ModbusException, OSError, TimeoutError) as err:
            self._drop()
            raise DeviceUnavailable(f"modbus device {self.address} did not answer {what}: {err}") from err
        if response.isError():
            raise DeviceRejected(
                exception_message(response, what), code="modbus_exception", modbus_exception=response.exception_code
            )
        return response

    async def _read_request(self, request: ReadRequest) -> Sequence[int] | Sequence[bool]:
        unit, address, count = self.settings.unit_id, request.address, request.count
        readers: dict[ModbusTable, Call] = {
            ModbusTable.HOLDING: lambda c: c.read_holding_registers(address, count=count, device_id=unit),
            ModbusTable.INPUT: lambda c: c.read_input_registers(address, count=count, device_id=unit),
            ModbusTable.COIL: lambda c: c.read_coils(address, count=count, device_id=unit),
            ModbusTable.DISCRETE: lambda c: c.read_discrete_inputs(address, count=count, device_id=unit),
        }
        response = await self._call(f"read {request.describe()}", readers[request.table])
        values = response.bits if request.table in BIT_TABLES else response.registers
        if len(values) < count:
            raise DeviceRejected(f"{request.describe()}: the device returned {len(values)} of {count} values")
        return values[:count]

    async def read(self) -> list[Reading]:
        ts_ms = int(self._clock() * 1000)
        readings: list[Reading] = []
        pending = list(self.plan)
        while pending:
            request = pending.pop(0)
            try:
                values = await self._read_request(request)
            except DeviceRejected as err:
                illegal_address = err.details.get("modbus_exception") == ExcCodes.ILLEGAL_ADDRESS
                if illegal_address and len(request.points) > 1:
                    singles = split_request(request)
                    index = self.plan.index(request)
                    self.plan[index : index + 1] = singles
                    pending[:0] = singles
                    continue
                readings += [Reading(p.metric, ts_ms, None, Quality.BAD, err.message) for p in request.points]
                continue
            for point, raw in slice_values(request, values):
                readings.append(self._decode(point.metric, point.mapping, raw, ts_ms))
        return readings

    @staticmethod
    def _decode(metric: str, mapping: ModbusMapping, raw: Sequence[int] | Sequence[bool], ts_ms: int) -> Reading:
        try:
            value = decode(mapping, raw)
        except ModbusValueError as err:
            return Reading(metric, ts_ms, None, Quality.BAD, err.message)
        if isinstance(value, float) and not math.isfinite(value):
            # Devices report a failed sensor as NaN; the value itself means nothing.
            return Reading(metric, ts_ms, None, Quality.BAD, f"the device reports {value}")
        return Reading(metric, ts_ms, value)

    async def write(self, metric: str, value: Value, timeout: float) -> None:  # noqa: ASYNC109 - the ack deadline is part of a command
        spec = self.writable_metric(metric)
        mapping = spec.modbus
        if mapping is None:
            raise CommandRejected(f"metric {metric!r} has no Modbus mapping", code="no_modbus_mapping")
        if mapping.table not in WRITABLE_TABLES:
            raise CommandRejected(f"metric {metric!r} is in the read-only {mapping.table} table", code="read_only")
        try:
            registers = encode(mapping, value)
        except ModbusValueError as err:
            raise CommandRejected(f"metric {metric!r}: {err.message}", code=err.instance_code) from err
        try:
            async with asyncio.timeout(timeout):
                await self._write_and_verify(metric, mapping, registers)
        except TimeoutError as err:
            self._drop()  # a late answer must not be taken for the next request's
            raise DeviceUnavailable(
                f"modbus device {self.address} did not confirm {metric!r} within {timeout:g} s", code="command_timeout"
            ) from err

    async def _write_and_verify(self, metric: str, mapping: ModbusMapping, registers: list[int]) -> None:
        unit, address = self.settings.unit_id, mapping.address
        what = f"write {mapping.table} {address}"
        try:
            if mapping.table is ModbusTable.COIL:
                await self._call(what, lambda c: c.write_coil(address, bool(registers[0]), device_id=unit))
            elif len(registers) == 1:
                await self._call(what, lambda c: c.write_register(address, registers[0], device_id=unit))
            else:
                await self._call(what, lambda c: c.write_registers(address, registers, device_id=unit))
        except DeviceRejected as err:
            raise CommandRejected(err.message, code="modbus_exception", **err.details) from err
        if not self.settings.verify_writes:
            return
        request = ReadRequest(mapping.table, address, len(registers), ())
        try:
            held = [int(v) for v in await self._read_request(request)]
        except DeviceRejected as err:
            raise CommandRejected(f"{metric!r} was written but cannot be read back: {err.message}") from err
        if held != registers:
            raise CommandRejected(
                f"the device holds {held} for {metric!r} after writing {registers}", code="write_not_kept"
            )
