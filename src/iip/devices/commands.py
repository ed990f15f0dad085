"""Commands: set a writable metric of a device, with acknowledgement and timeout, on the record.

A command is checked first (the device exists in the actor's tenant and is enabled, the profile
marks the metric `writable`, the value fits the metric's data type, the protocol takes commands);
what fails there is refused and nothing is written. A command that passes is recorded `pending`
(committed), marked `sent` when it leaves, and finished once, atomically, as `acknowledged`,
`failed` or `timed_out`, with a detail. A process that starts device connectivity marks the
commands an earlier run left `pending` or `sent` as `failed` (`RESTART_REASON`).

Delivery by protocol:

- Modbus, OPC UA, simulated: `DeviceRunner.write` of the runner the platform polls the device with
  (`iip.devices.polling`); the device's own answer is the acknowledgement (Modbus: the write
  response, and the read-back when `verify_writes`; OPC UA: a Good status). Devices behind an edge
  gateway are not commanded yet.
- Sparkplug B: a DCMD (an NCMD for a device registered as an edge node) with the metric by name and
  its datatype, published with QoS 0 through MQTT ingest's connection. Sparkplug has no command
  acknowledgement: the command is acknowledged when the device reports the metric with the new
  value (a later DDATA, as points on `TELEMETRY_POINTS`) within the timeout. A report of that value
  that was already on its way when the DCMD left also counts.

Desired twin attributes (`TWIN_DESIRED`) become commands by the principal who set them, with the
change's `request_id` as command id (a redelivered change is not sent twice), and are audited with
`iip.kernel.audit.append` when they finish or are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from iip.devices.codecs import sparkplug
from iip.devices.drivers.base import CommandRejected, DeviceUnavailable, Value
from iip.devices.drivers.runner import DeviceRunner
from iip.devices.ingest.sparkplug_host import COMMAND_QOS
from iip.devices.models import Command, Device
from iip.devices.profiles import DataType, DeviceProfile, MetricSpec
from iip.devices.profiles import Protocol as DeviceProtocol
from iip.devices.repository import RegistryRepository
from iip.devices.service import DeviceRegistry
from iip.kernel import audit
from iip.kernel.auth import ApiKey, Principal, Role, User, new_id, user_principal
from iip.kernel.bus import Bus, Delivery, Subscription
from iip.kernel.db import Database, utcnow
from iip.kernel.errors import Conflict, DomainError, Forbidden, NotFound, Unavailable
from iip.telemetry.public import TELEMETRY_POINTS, TWIN_DESIRED, DesiredChange, PointBatch, Quality

logger = logging.getLogger(__name__)

SERVICE_KEY = "devices.commands"  # key of the running service in `Runtime.services`
DESIRED_DURABLE = "devices-commands"
RESTART_REASON = "the platform restarted before the command finished"
MAX_TEXT = 1000  # longest text value a command carries
MAX_DETAIL = 2000
WRITE_GRACE_S = 1.0  # past the driver's own deadline, in case it does not keep it
FLOAT32_MAX = 3.4028234663852886e38
INTEGER_RANGES: dict[DataType, tuple[int, int]] = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT64: (0, 2**64 - 1),
}
# A profile's data type as a Sparkplug datatype, for devices whose birth has not been seen.
SPARKPLUG_TYPES: dict[DataType, sparkplug.DataType] = {
    DataType.BOOL: sparkplug.DataType.BOOLEAN,
    DataType.INT16: sparkplug.DataType.INT16,
    DataType.UINT16: sparkplug.DataType.UINT16,
    DataType.INT32: sparkplug.DataType.INT32,
    DataType.UINT32: sparkplug.DataType.UINT32,
    DataType.INT64: sparkplug.DataType.INT64,
    DataType.UINT64: sparkplug.DataType.UINT64,
    DataType.FLOAT32: sparkplug.DataType.FLOAT,
    DataType.FLOAT64: sparkplug.DataType.DOUBLE,
    DataType.STRING: sparkplug.DataType.STRING,
}
POLLED = frozenset({DeviceProtocol.MODBUS, DeviceProtocol.OPCUA, DeviceProtocol.SIMULATED})


class CommandStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    ACKNOWLEDGED = "acknowledged"
    FAILED = "failed"
    TIMED_OUT = "timed_out"


UNFINISHED = (CommandStatus.PENDING.value, CommandStatus.SENT.value)


class CommandTimedOut(Unavailable):
    """The device did not acknowledge a command within its timeout (answered as 504)."""

    code = "command_timeout"
    title = "Command timed out"


class CommandOut(BaseModel):
    id: str
    tenant_id: str
    device: str = Field(description="the device's key")
    metric: str
    value: Any
    protocol: str
    source: str = Field(description="`api`, or `twin` for a desired attribute")
    requested_by: str = Field(description="the principal, as the audit log names it")
    requested_at: dt.datetime
    timeout_s: float
    status: CommandStatus
    detail: str = Field(description="why a command failed or timed out")
    finished_at: dt.datetime | None


def command_view(row: Command) -> CommandOut:
    return CommandOut(
        id=row.id,
        tenant_id=row.tenant_id,
        device=row.device,
        metric=row.metric,
        value=row.value,
        protocol=row.protocol,
        source=row.source,
        requested_by=row.requested_by,
        requested_at=row.requested_at,
        timeout_s=row.timeout_ms / 1000,
        status=CommandStatus(row.status),
        detail=row.detail,
        finished_at=row.finished_at,
    )


# --- what delivery needs from the rest of the context


class RunnerLookup(Protocol):
    """The polling supervisor, as commands find a device's runner."""

    def runner(self, tenant_id: str, key: str) -> DeviceRunner | None: ...


class CommandPublisher(Protocol):
    """MQTT ingest's connection, as commands publish on it; raises `Unavailable` when not connected."""

    async def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None: ...


# --- values


def _refuse(metric: str, what: str, value: object, code: str = "invalid_value") -> CommandRejected:
    return CommandRejected(f"metric {metric!r} takes {what}, not {value!r}"[:MAX_DETAIL], code=code)


def checked_value(spec: MetricSpec, value: object) -> Value:
    """`value` as the metric's data type holds it; what it cannot hold is refused, never clipped."""
    name, data_type = spec.name, spec.data_type
    if data_type is DataType.BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float) and value in {0, 1}:
            return bool(value)
        raise _refuse(name, "true or false", value)
    if data_type is DataType.STRING:
        if not isinstance(value, str):
            raise _refuse(name, "text", value)
        if len(value) > MAX_TEXT or "\x00" in value:
            raise CommandRejected(f"metric {name!r}: text of at most {MAX_TEXT} characters, without NUL")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _refuse(name, "a number", value)
    if not math.isfinite(value):
        raise _refuse(name, "a finite number", value)
    if data_type in INTEGER_RANGES:
        if value != int(value):
            raise _refuse(name, "a whole number", value)
        low, high = INTEGER_RANGES[data_type]
        if not low <= int(value) <= high:
            raise CommandRejected(
                f"{value} is out of range for metric {name!r} ({data_type}: {low}..{high})", code="value_out_of_range"
            )
        return int(value)
    if data_type is DataType.FLOAT32 and abs(value) > FLOAT32_MAX:
        raise CommandRejected(f"{value} is out of range for metric {name!r} (float32)", code="value_out_of_range")
    return value


def _float32(value: float) -> float:
    result: float = struct.unpack("<f", struct.pack("<f", value))[0]
    return result


def sparkplug_value(metric: str, value: Value, datatype: sparkplug.DataType) -> Value:
    """A checked value as a Sparkplug metric of `datatype` carries it."""
    if datatype is sparkplug.DataType.BOOLEAN:
        if isinstance(value, bool) or value in {0, 1}:
            return bool(value)
        raise _refuse(metric, "true or false (Boolean)", value)
    if datatype in {sparkplug.DataType.STRING, sparkplug.DataType.TEXT}:
        if isinstance(value, str):
            return value
        raise _refuse(metric, f"text ({datatype.label})", value)
    if isinstance(value, str):
        raise _refuse(metric, f"a number ({datatype.label})", value)
    if datatype in {sparkplug.DataType.FLOAT, sparkplug.DataType.DOUBLE}:
        return float(value)
    if datatype.is_numeric:
        if value != int(value):
            raise _refuse(metric, f"a whole number ({datatype.label})", value)
        return int(value)
    raise CommandRejected(f"metric {metric!r}: {datatype.label} metrics cannot be commanded", code="unsupported_type")


def reported(expected: Value, datatype: sparkplug.DataType, value: float) -> bool:
    """Whether a point's value is the commanded one (as the device's datatype holds it)."""
    if isinstance(expected, bool):
        return value == (1.0 if expected else 0.0)
    if isinstance(expected, str):
        return False
    if datatype is sparkplug.DataType.FLOAT:
        return math.isclose(value, _float32(float(expected)), rel_tol=1e-7, abs_tol=1e-30)
    return value == float(expected)


# --- the plan of one command


@dataclass(frozen=True, slots=True)
class _Plan:
    tenant_id: str
    device: str
    protocol: DeviceProtocol
    spec: MetricSpec
    value: Value
    sparkplug_ids: tuple[str, str, str | None] | None = None


def _plan(row: Device, metric: str, value: object) -> _Plan:
    try:
        profile = DeviceProfile.model_validate(row.profile.definition)
    except ValidationError:
        raise Conflict(
            f"the profile of device {row.key!r} no longer validates; save it again", code="profile_invalid"
        ) from None
    spec = profile.metric(metric)
    if spec is None:
        raise CommandRejected(f"profile {profile.name!r} has no metric {metric[:128]!r}", code="unknown_metric")
    if not spec.writable:
        raise CommandRejected(f"metric {metric!r} is not writable", code="metric_not_writable")
    checked = checked_value(spec, value)
    if not row.enabled:
        raise Conflict(f"device {row.key!r} is disabled", code="device_disabled")
    protocol = profile.protocol
    if protocol in POLLED:
        if row.gateway_id is not None:
            raise CommandRejected(
                f"device {row.key!r} is reached through an edge gateway: commands to it are not supported yet",
                code="gateway_commands_unsupported",
            )
        return _Plan(row.tenant_id, row.key, protocol, spec, checked)
    if protocol is DeviceProtocol.SPARKPLUG:
        group, edge = row.sparkplug_group_id, row.sparkplug_edge_node_id
        if group is None or edge is None:
            raise CommandRejected(f"device {row.key!r} has no Sparkplug ids", code="no_sparkplug_ids")
        return _Plan(row.tenant_id, row.key, protocol, spec, checked, (group, edge, row.sparkplug_device_id))
    raise CommandRejected(f"{protocol} devices do not take commands", code="commands_unsupported")


def _pending(plan: _Plan, requested_by: str, source: str, timeout_s: float, command_id: str) -> Command:
    return Command(
        id=command_id,
        tenant_id=plan.tenant_id,
        device=plan.device,
        metric=plan.spec.name,
        value=plan.value,
        protocol=plan.protocol.value,
        source=source,
        requested_by=requested_by[:200],
        requested_at=utcnow(),
        timeout_ms=max(1, round(timeout_s * 1000)),
        status=CommandStatus.PENDING.value,
        detail="",
    )


# --- Sparkplug acknowledgements


@dataclass(eq=False, slots=True)
class _Awaited:
    tenant_id: str
    device: str
    metric: str
    value: Value
    datatype: sparkplug.DataType
    done: asyncio.Future[None]
    last: object = None  # the last other value reported meanwhile


@dataclass(slots=True)
class ReportWatcher:
    """Watches the points ingest publishes for the values Sparkplug commands wait for.

    It subscribes on first use with a durable of this process's own: every process watches every
    report, and a batch published before the subscription is never taken for an answer.
    """

    bus: Bus
    durable: str = field(default_factory=lambda: f"devices-command-reports-{uuid.uuid4().hex[:12]}")
    _awaited: dict[tuple[str, str, str], list[_Awaited]] = field(default_factory=dict)
    _subscription: Subscription | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def watch(self, plan: _Plan, datatype: sparkplug.DataType) -> _Awaited:
        async with self._lock:
            if self._subscription is None:
                self._subscription = await self.bus.subscribe(TELEMETRY_POINTS, self._on_points, durable=self.durable)
        awaited = _Awaited(
            plan.tenant_id,
            plan.device,
            plan.spec.name,
            plan.value,
            datatype,
            asyncio.get_running_loop().create_future(),
        )
        self._awaited.setdefault((plan.tenant_id, plan.device, plan.spec.name), []).append(awaited)
        return awaited

    def forget(self, awaited: _Awaited) -> None:
        key = (awaited.tenant_id, awaited.device, awaited.metric)
        waiting = self._awaited.get(key, [])
        if awaited in waiting:
            waiting.remove(awaited)
        if not waiting:
            self._awaited.pop(key, None)

    async def stop(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            await subscription.stop()

    async def _on_points(self, delivery: Delivery[PointBatch]) -> None:
        if not self._awaited:
            return
        batch = delivery.payload
        tenant = batch.tenant_id
        wanted = {
            index: waiting
            for index, (device, metric) in enumerate(batch.series)
            if (waiting := self._awaited.get((tenant, device, metric)))
        }
        if wanted:
            for index, value, quality in zip(batch.series_index, batch.value, batch.quality, strict=True):
                if index in wanted and quality == Quality.GOOD:
                    self._settle(wanted[index], value)
        for device, attributes in batch.attributes.items():
            for metric, value in attributes.items():
                if waiting := self._awaited.get((tenant, device, metric)):
                    self._settle(waiting, value)

    @staticmethod
    def _settle(waiting: list[_Awaited], value: object) -> None:
        for awaited in waiting:
            if awaited.done.done():
                continue
            if isinstance(value, str):
                matched = value == awaited.value
            else:
                matched = isinstance(value, int | float) and reported(awaited.value, awaited.datatype, float(value))
            if matched:
                awaited.done.set_result(None)
            else:
                awaited.last = value


# --- the service


def _resolve_principal(session: Session, tenant_id: str, principal_id: str) -> Principal | None:
    """The user or API key that set a desired attribute, as it is now; None if it is gone or elsewhere."""
    principal: Principal | None = None
    user = session.get(User, principal_id)
    if user is not None:
        principal = user_principal(user) if user.active else None
    elif (key := session.get(ApiKey, principal_id)) is not None and key.revoked_at is None:
        principal = Principal("apikey", key.id, key.name, key.tenant_id, Role(key.role))
    if principal is None or not (principal.tenant_id == tenant_id or principal.is_platform):
        return None
    return principal


class CommandService:
    """Sends commands and keeps their record; see the module docstring."""

    def __init__(
        self,
        db: Database,
        bus: Bus,
        *,
        default_timeout_s: float,
        runners: RunnerLookup | None = None,
        publisher: CommandPublisher | None = None,
        sparkplug_datatype: Callable[[str, str, str | None, str], sparkplug.DataType | None] | None = None,
    ) -> None:
        self.db = db
        self.bus = bus
        self.default_timeout_s = default_timeout_s
        self.runners = runners
        self.publisher = publisher
        # The datatype the device's birth gave a Sparkplug metric (group, edge node, device, metric name).
        self.sparkplug_datatype = sparkplug_datatype
        self.reports = ReportWatcher(bus)
        self._desired: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle

    def recover(self) -> int:
        """Mark the commands an earlier run left unfinished as failed; returns how many."""
        with self.db.session() as session:
            result = session.execute(
                update(Command)
                .where(Command.status.in_(UNFINISHED))
                .values(status=CommandStatus.FAILED.value, detail=RESTART_REASON, finished_at=utcnow())
            )
            count = int(getattr(result, "rowcount", 0) or 0)
        if count:
            logger.warning("%d commands left unfinished by an earlier run marked failed", count)
        return count

    async def listen_to_desired(self) -> None:
        """Turn desired twin attributes into commands from now on."""
        if self._desired is None:
            self._desired = await self.bus.subscribe(TWIN_DESIRED, self._on_desired, durable=DESIRED_DURABLE)

    async def stop(self) -> None:
        if self._desired is not None:
            await self._desired.stop()
            self._desired = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.reports.stop()

    # ------------------------------------------------------------------ commands

    async def send(
        self,
        actor: Principal,
        device: str,
        metric: str,
        value: object,
        *,
        timeout_s: float | None = None,
        on_created: Callable[[str], None] | None = None,
    ) -> CommandOut:
        """Check, record and send a command; returns it acknowledged.

        Raises what the check raises (nothing recorded), or, once recorded, `CommandTimedOut`,
        `CommandRejected`, `DeviceUnavailable`: the command is then finished as timed out or failed,
        and the error's details name it (`command_id`).
        """
        actor.require("devices.write")
        plan = await asyncio.to_thread(self._plan_for, actor, device, metric, value)
        timeout = timeout_s if timeout_s is not None else self.default_timeout_s
        command_id = await asyncio.to_thread(self._create, plan, actor.label, timeout)
        if on_created is not None:
            on_created(command_id)
        return await self._deliver(plan, command_id, timeout)

    def _plan_for(self, actor: Principal, device: str, metric: str, value: object) -> _Plan:
        with self.db.session() as session:
            return _plan(DeviceRegistry(session, actor).get_device(device), metric, value)

    def _create(self, plan: _Plan, requested_by: str, timeout_s: float) -> str:
        row = _pending(plan, requested_by, "api", timeout_s, new_id())
        with self.db.session() as session:
            session.add(row)
        return row.id

    def _mark_sent(self, command_id: str) -> None:
        with self.db.session() as session:
            session.execute(
                update(Command)
                .where(Command.id == command_id, Command.status == CommandStatus.PENDING.value)
                .values(status=CommandStatus.SENT.value)
            )

    def _finish(self, command_id: str, status: CommandStatus, detail: str) -> CommandOut:
        """Finish a command once: a command already finished (a restart got there first) stays as it is."""
        with self.db.session() as session:
            session.execute(
                update(Command)
                .where(Command.id == command_id, Command.status.in_(UNFINISHED))
                .values(status=status.value, detail=detail[:MAX_DETAIL], finished_at=utcnow())
            )
            row = session.get(Command, command_id)
            if row is None:  # its tenant was deleted meanwhile
                raise NotFound(f"command {command_id} not found", code="command_not_found")
            return command_view(row)

    async def _deliver(self, plan: _Plan, command_id: str, timeout_s: float) -> CommandOut:
        try:
            if plan.protocol is DeviceProtocol.SPARKPLUG:
                await self._send_sparkplug(plan, command_id, timeout_s)
            else:
                await self._send_polled(plan, command_id, timeout_s)
        except CommandTimedOut as err:
            await asyncio.to_thread(self._finish, command_id, CommandStatus.TIMED_OUT, err.message)
            err.details["command_id"] = command_id
            raise
        except DomainError as err:
            await asyncio.to_thread(self._finish, command_id, CommandStatus.FAILED, err.message)
            err.details["command_id"] = command_id
            raise
        except asyncio.CancelledError:
            finishing = asyncio.to_thread(self._finish, command_id, CommandStatus.FAILED, "cancelled")
            await asyncio.shield(finishing)
            raise
        except Exception as err:
            await asyncio.to_thread(self._finish, command_id, CommandStatus.FAILED, f"internal error: {err!r}")
            raise
        return await asyncio.to_thread(self._finish, command_id, CommandStatus.ACKNOWLEDGED, "")

    async def _send_polled(self, plan: _Plan, command_id: str, timeout_s: float) -> None:
        runner = self.runners.runner(plan.tenant_id, plan.device) if self.runners is not None else None
        if runner is None:
            raise DeviceUnavailable(
                f"device {plan.device!r} is not polled by this platform process", code="device_not_connected"
            )
        await asyncio.to_thread(self._mark_sent, command_id)
        try:
            async with asyncio.timeout(timeout_s + WRITE_GRACE_S):
                await runner.write(plan.spec.name, plan.value, timeout_s)
        except TimeoutError:
            message = f"device {plan.device!r} did not confirm {plan.spec.name!r} within {timeout_s:g} s"
            raise CommandTimedOut(message) from None
        except DeviceUnavailable as err:
            if err.instance_code == CommandTimedOut.code:
                raise CommandTimedOut(err.message) from err
            raise

    async def _send_sparkplug(self, plan: _Plan, command_id: str, timeout_s: float) -> None:
        if plan.sparkplug_ids is None:  # _plan gives every Sparkplug device its ids
            raise CommandRejected(f"device {plan.device!r} has no Sparkplug ids", code="no_sparkplug_ids")
        group, edge, device_id = plan.sparkplug_ids
        spec = plan.spec
        name = spec.sparkplug.metric if spec.sparkplug is not None else spec.name
        born = self.sparkplug_datatype(group, edge, device_id, name) if self.sparkplug_datatype else None
        datatype = born or SPARKPLUG_TYPES[spec.data_type]
        now = int(utcnow().timestamp() * 1000)
        message_type = sparkplug.MessageType.NCMD if device_id is None else sparkplug.MessageType.DCMD
        try:
            metric = sparkplug.Metric(
                name=name, timestamp=now, datatype=datatype, value=sparkplug_value(spec.name, plan.value, datatype)
            )
            payload = sparkplug.encode_payload(sparkplug.Payload(timestamp=now, metrics=(metric,)))
            topic = str(sparkplug.EdgeTopic(group, message_type, edge, device_id))
        except sparkplug.SparkplugError as err:
            raise CommandRejected(err.message, code=err.instance_code) from err
        if self.publisher is None:
            raise DeviceUnavailable("MQTT ingest does not run in this platform process", code="mqtt_unavailable")
        awaited = await self.reports.watch(plan, datatype)
        try:
            # The deadline covers sending too: a broker that takes the whole timeout to answer is no better.
            async with asyncio.timeout(timeout_s):
                try:
                    await self.publisher.publish(topic, payload, qos=COMMAND_QOS)
                except Unavailable as err:
                    raise DeviceUnavailable(f"the DCMD for {plan.device!r} was not sent: {err.message}") from err
                await asyncio.to_thread(self._mark_sent, command_id)
                await awaited.done
        except TimeoutError:
            last = f" (it reported {awaited.last!r})" if awaited.last is not None else ""
            raise CommandTimedOut(
                f"device {plan.device!r} did not report {spec.name!r} = {plan.value!r} within {timeout_s:g} s{last}"
            ) from None
        finally:
            self.reports.forget(awaited)

    # ------------------------------------------------------------------ desired twin attributes

    async def _on_desired(self, delivery: Delivery[DesiredChange]) -> None:
        accepted = await asyncio.to_thread(self._accept_desired, delivery.payload)
        if accepted is None:
            return
        # The bus message is acknowledged once the command is on record; delivery goes on meanwhile.
        task = asyncio.create_task(self._carry_out_desired(*accepted), name=f"command-{delivery.payload.request_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _accept_desired(self, change: DesiredChange) -> tuple[Principal, _Plan, str, float] | None:
        """Record the command a desired change asks for; None when it is refused (recorded, audited) or known."""
        command_id = change.request_id[:32]
        timeout = self.default_timeout_s
        with self.db.session() as session:
            if session.get(Command, command_id) is not None:
                return None  # a redelivery
            actor = _resolve_principal(session, change.tenant_id, change.requested_by)
            label = actor.label if actor is not None else f"unknown:{change.requested_by[:64]}"
            try:
                plan = self._plan_desired(session, actor, change)
            except DomainError as err:
                self._refused_desired(session, change, command_id, label, timeout, err)
                return None
            if actor is None:  # _plan_desired refuses it; this tells the type checker
                return None
            session.add(_pending(plan, label, "twin", timeout, command_id))
        return actor, plan, command_id, timeout

    @staticmethod
    def _plan_desired(session: Session, actor: Principal | None, change: DesiredChange) -> _Plan:
        if actor is None:
            raise Forbidden(f"principal {change.requested_by[:64]!r} is not active in the tenant")
        actor.require("devices.write")
        row = RegistryRepository(session).device(change.tenant_id, change.device)
        if row is None:
            raise NotFound(f"device '{change.device[:128]}' not found", code="device_not_found")
        return _plan(row, change.name, change.value)

    def _refused_desired(
        self, session: Session, change: DesiredChange, command_id: str, label: str, timeout: float, err: DomainError
    ) -> None:
        now = utcnow()
        session.add(
            Command(
                id=command_id,
                tenant_id=change.tenant_id,
                device=change.device[:128],
                metric=change.name[:128],
                value=change.value,
                protocol="",
                source="twin",
                requested_by=label[:200],
                requested_at=now,
                timeout_ms=max(1, round(timeout * 1000)),
                status=CommandStatus.FAILED.value,
                detail=err.message[:MAX_DETAIL],
                finished_at=now,
            )
        )
        outcome = "denied" if isinstance(err, Forbidden) else "failure"
        self._audit(session, label, change.tenant_id, command_id, change.device, change.name, outcome, err.message)

    async def _carry_out_desired(self, actor: Principal, plan: _Plan, command_id: str, timeout_s: float) -> None:
        try:
            command = await self._deliver(plan, command_id, timeout_s)
            outcome, detail = "success", command.status.value
        except DomainError as err:
            outcome, detail = "failure", err.message
        except Exception as err:  # a fault here must not go unnoticed, nor end the task silently
            logger.exception("desired change %s failed", command_id)
            outcome, detail = "failure", f"internal error: {err!r}"
        await asyncio.to_thread(self._audit_desired, actor, plan, command_id, outcome, detail)

    def _audit_desired(self, actor: Principal, plan: _Plan, command_id: str, outcome: str, detail: str) -> None:
        with self.db.session() as session:
            self._audit(session, actor, plan.tenant_id, command_id, plan.device, plan.spec.name, outcome, detail)

    @staticmethod
    def _audit(
        session: Session,
        principal: Principal | str,
        tenant_id: str,
        command_id: str,
        device: str,
        metric: str,
        outcome: str,
        detail: str,
    ) -> None:
        record = audit.AuditRecord(
            action="devices.command (desired twin attribute)",
            outcome=outcome,
            object_type="device_command",
            object_id=command_id,
            detail=f"device={device[:128]} metric={metric[:128]}: {detail}"[:MAX_DETAIL],
            source="twin",
        )
        audit.append(session, principal, record, tenant_id=tenant_id)


# --- reading the record


def _visible(actor: Principal, row: Command | None) -> bool:
    return row is not None and (actor.is_platform or row.tenant_id == actor.tenant_id)


def get_command(session: Session, actor: Principal, command_id: str) -> CommandOut:
    row = session.get(Command, command_id) if len(command_id) <= 32 else None
    if row is None or not _visible(actor, row):
        raise NotFound(f"command '{command_id[:64]}' not found", code="command_not_found")
    return command_view(row)


def command_history(
    session: Session,
    actor: Principal,
    device: str,
    *,
    status: CommandStatus | None = None,
    limit: int = 100,
) -> list[CommandOut]:
    """A device's commands, newest first. A removed device's history stays readable by its key."""
    try:
        row = DeviceRegistry(session, actor).get_device(device)
        tenant_id, key = row.tenant_id, row.key
    except NotFound:
        tenant_id, key = actor.tenant_id, device
        exists = session.scalar(
            select(Command.id).where(Command.tenant_id == tenant_id, Command.device == key).limit(1)
        )
        if exists is None:
            raise
    query = select(Command).where(Command.tenant_id == tenant_id, Command.device == key)
    if status is not None:
        query = query.where(Command.status == status.value)
    query = query.order_by(Command.requested_at.desc(), Command.id.desc()).limit(limit)
    return [command_view(row) for row in session.scalars(query)]
