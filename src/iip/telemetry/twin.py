"""The device twin: per device the latest value of every metric, connection state, reported and desired attributes.

Twins live in memory (the writer updates them on every batch, the API reads them) and are loaded
lazily per device from the store's latest points plus the persisted connection and attribute rows.
Every change is persisted before it is applied in memory, so a failure leaves the twin as it was and
the bus redelivers. Changes are numbered per device; watched twins keep the last few as server-sent
events so a client that reconnects with `Last-Event-ID` misses nothing.

Memory per twin matters (10,000 connected devices at a few KB each): slots, metric names interned,
one tuple per metric, and the event ring and listener set only on twins someone watches.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
import operator
import re
import sys
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from iip.kernel.auth import AccessService, Principal
from iip.kernel.bus import Bus, BusError
from iip.kernel.db import Database
from iip.kernel.errors import Conflict, Forbidden, Invalid, NotFound, Unavailable
from iip.telemetry.models import TwinAttribute, TwinConnection
from iip.telemetry.public import TWIN_DESIRED, DesiredChange, DeviceStatus, PointBatch

logger = logging.getLogger(__name__)

TWINS_SERVICE = "telemetry.twins"  # the registry's key in `Runtime.services`
REPORTED = "reported"
DESIRED = "desired"
# Names of desired attributes are metric or attribute names as profiles spell them.
ATTRIBUTE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,127}$")
MAX_ATTRIBUTE_BYTES = 16 * 1024
DEVICE_KEY_MAX = 200
# last_seen moves on every batch; writing it each time would cost a row write per device per batch.
LAST_SEEN_PERSIST_MS = 60_000
UPSERT_CHUNK = 500

# (tenant id, device key) -> metric -> (ts_ms, value, quality): the store's newest point per metric.
# (tenant, devices) -> device -> metric -> (ts_ms, value, quality): one read for a batch's new twins.
LatestLoader = Callable[[str, Sequence[str]], Mapping[str, Mapping[str, tuple[int, float, int]]]]
MetricState = tuple[int, float, int]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_ms(at: dt.datetime) -> int:
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return int(at.timestamp() * 1000)


def from_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def finite(value: float) -> float | None:
    # JSON has no NaN or infinity; such a value shows as null.
    return value if math.isfinite(value) else None


def metric_document(state: MetricState) -> dict[str, Any]:
    ts, value, quality = state
    return {"value": finite(value), "ts": iso(ts), "quality": quality}


def encode(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class TwinListener:
    """One server-sent-events client of a twin: woken on each change, reads the ring itself."""

    __slots__ = ("wake",)

    def __init__(self) -> None:
        self.wake = asyncio.Event()


class Twin:
    """The in-memory mirror of one device."""

    __slots__ = (
        "desired",
        "device",
        "last_seen_ms",
        "listeners",
        "metrics",
        "online",
        "persisted_seen_ms",
        "reason",
        "reported",
        "ring",
        "seq",
        "since_ms",
        "tenant_id",
    )

    def __init__(self, tenant_id: str, device: str) -> None:
        self.tenant_id = tenant_id
        self.device = device
        self.online = False
        self.last_seen_ms: int | None = None
        self.since_ms: int | None = None
        self.reason = ""
        self.metrics: dict[str, MetricState] = {}
        self.reported: dict[str, Any] = {}
        self.desired: dict[str, Any] = {}
        self.seq = 0  # number of the last change
        self.persisted_seen_ms: int | None = None
        self.ring: deque[tuple[int, str]] | None = None  # (seq, merge patch as JSON) once watched
        self.listeners: set[TwinListener] | None = None

    @property
    def watched(self) -> bool:
        return self.ring is not None

    def connection_document(self) -> dict[str, Any]:
        return {
            "online": self.online,
            "last_seen": iso(self.last_seen_ms),
            "since": iso(self.since_ms),
            "reason": self.reason,
        }

    def document(self) -> dict[str, Any]:
        """The whole twin, as `GET /api/devices/{device}/twin` answers it."""
        return {
            "device": self.device,
            "connection": self.connection_document(),
            "metrics": {name: metric_document(self.metrics[name]) for name in sorted(self.metrics)},
            "attributes": {"reported": dict(self.reported), "desired": dict(self.desired)},
        }

    def summary(self) -> dict[str, Any]:
        return {"device": self.device, **self.connection_document()}


def subtree(document: Any, path: str) -> Any:
    """The part of a twin document at a slash path such as `metrics/flow/value` (JSON Pointer escapes)."""
    node = document
    if not path.strip("/"):
        return node
    for raw in path.strip("/").split("/"):
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            raise NotFound(f"the twin has nothing at '{path}'", code="twin_path_not_found", path=path)
    return node


def check_desired(name: str, value: Any) -> None:
    if not ATTRIBUTE_NAME.match(name):
        raise Invalid(
            "an attribute name starts with a letter and has up to 128 letters, digits, '_', '.' or '-'",
            code="twin_attribute_name",
        )
    if value is None:
        raise Invalid("a desired value cannot be null; DELETE the attribute instead", code="twin_desired_null")
    if len(encode(value).encode()) > MAX_ATTRIBUTE_BYTES:
        raise Invalid(f"a desired value takes at most {MAX_ATTRIBUTE_BYTES} bytes as JSON", code="twin_value_too_large")


# --- persistence (runs in a worker thread) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadedRows:
    connection: TwinConnection | None
    reported: dict[str, Any]
    desired: dict[str, Any]


def load_rows(session: Session, tenant_id: str, devices: Iterable[str]) -> dict[str, LoadedRows]:
    keys = list(devices)
    connections = {
        row.device: row
        for row in session.scalars(
            select(TwinConnection).where(TwinConnection.tenant_id == tenant_id, TwinConnection.device.in_(keys))
        )
    }
    attributes: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for row in session.scalars(
        select(TwinAttribute).where(TwinAttribute.tenant_id == tenant_id, TwinAttribute.device.in_(keys))
    ):
        reported, desired = attributes.setdefault(row.device, ({}, {}))
        (desired if row.side == DESIRED else reported)[row.name] = row.value
    found = {}
    for device in keys:
        reported, desired = attributes.get(device, ({}, {}))
        connection = connections.get(device)
        if connection is not None or reported or desired:
            found[device] = LoadedRows(connection, reported, desired)
    return found


def upsert(session: Session, model: type[TwinConnection | TwinAttribute], rows: list[dict[str, Any]]) -> None:
    """Insert or update rows by primary key, on SQLite and PostgreSQL alike."""
    if not rows:
        return
    keys = [column.name for column in model.__mapper__.primary_key]
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    for start in range(0, len(rows), UPSERT_CHUNK):
        statement = insert(model).values(rows[start : start + UPSERT_CHUNK])
        updates = {name: statement.excluded[name] for name in rows[0] if name not in keys}
        session.execute(statement.on_conflict_do_update(index_elements=keys, set_=updates))


def connection_row(tenant_id: str, twin_state: tuple[str, bool, int | None, int | None, str]) -> dict[str, Any]:
    device, online, last_seen, since, reason = twin_state
    return {
        "tenant_id": tenant_id,
        "device": device,
        "online": online,
        "last_seen": None if last_seen is None else from_ms(last_seen),
        "since": None if since is None else from_ms(since),
        "reason": reason,
    }


def attribute_row(tenant_id: str, device: str, side: str, name: str, value: Any, by: str, at: int) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "device": device,
        "side": side,
        "name": name,
        "value": value,
        "updated_by": by[:200],
        "updated_at": from_ms(at),
    }


def acting_tenant(session: Session, principal: Principal, tenant: str | None, device: str | None) -> str:
    """The tenant a twin call acts in: yours; one a platform operator names (id or name); else the device's."""
    access = AccessService(session)
    if tenant:
        if not principal.is_platform:
            own = access.get_tenant(principal.tenant_id)
            if tenant in (own.id, own.name):
                return own.id
            raise Forbidden("only platform operators can choose the tenant", code="tenant_not_yours")
        try:
            return access.get_tenant(tenant).id
        except NotFound:
            return access.tenant_by_name(tenant).id
    if principal.is_platform and device is not None:
        # Device keys are unique within a tenant only: a platform operator reaches the one that has it.
        holders = set(session.scalars(select(TwinConnection.tenant_id).where(TwinConnection.device == device)))
        holders |= set(session.scalars(select(TwinAttribute.tenant_id).where(TwinAttribute.device == device)))
        if len(holders) > 1:
            raise Conflict(
                f"device '{device}' has a twin in {len(holders)} tenants; name one with `tenant`",
                code="ambiguous_device",
            )
        if holders:
            return holders.pop()
    return principal.tenant_id


# --- the newest point of each series of a batch ----------------------------------------------

_NOTHING: Mapping[str, Any] = MappingProxyType({})


def newest_positions(batch: PointBatch) -> dict[int, int]:
    """Series index -> position of the series' newest point in the batch (at equal times, the later point).

    Batches are nearly always in time order per series, so the last point of each series is its
    newest: that is found and checked at C speed, and only a batch with a series out of order is
    walked point by point. The usual case keeps nothing per point (the collector's work grows with that).
    """
    series_index, ts_ms = batch.series_index, batch.ts_ms
    if not len(ts_ms) == len(batch.value) == len(batch.quality) == len(series_index):
        raise ValueError("series_index, ts_ms, value and quality must have the same length")
    last = dict(zip(series_index, range(len(series_index)), strict=True))
    last_ts = dict(zip(last, map(ts_ms.__getitem__, last.values()), strict=True))
    if all(map(operator.le, ts_ms, map(last_ts.__getitem__, series_index))):
        return last
    newest: dict[int, int] = {}
    for position, (index, ts) in enumerate(zip(series_index, ts_ms, strict=True)):
        known = newest.get(index)
        if known is None or ts >= ts_ms[known]:
            newest[index] = position
    return newest


def _pairs_merged(series: list[tuple[str, str]], series_index: list[int], ts_ms: list[int]) -> dict[int, int]:
    """`newest_positions` for a batch naming one (device, metric) pair under several series indexes."""
    first: dict[tuple[str, str], int] = {}
    newest: dict[int, int] = {}
    for position, (index, ts) in enumerate(zip(series_index, ts_ms, strict=True)):
        pair = first.setdefault(series[index], index)
        known = newest.get(pair)
        if known is None or ts >= ts_ms[known]:
            newest[pair] = position
    return newest


# --- the registry ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _DevicePlan:
    """What one device's twin becomes after a batch, computed before anything is written."""

    device: str
    twin: Twin | None  # None: a new twin
    metrics: Mapping[str, MetricState]  # only the metrics that move forward
    reported: dict[str, Any]  # only the attributes that change
    since_ms: int | None
    reason: str
    persist_connection: bool


class TwinRegistry:
    """All twins of this process, shared by the bus writer and the API (`runtime.services["telemetry.twins"]`)."""

    def __init__(
        self,
        db: Database,
        bus: Bus,
        load_latest: LatestLoader,
        *,
        ring_size: int = 64,
        keepalive_s: float = 15.0,
    ) -> None:
        self._db = db
        self._bus = bus
        self._load_latest = load_latest
        self.ring_size = ring_size
        self.keepalive_s = keepalive_s
        # Event ids carry the process they come from: after a restart a stale Last-Event-ID gets a snapshot.
        self.epoch = f"{time.time_ns():x}"
        self._twins: dict[tuple[str, str], Twin] = {}
        self._loading: dict[tuple[str, str], asyncio.Future[Twin | None]] = {}
        # Changes to twins are computed, persisted and applied one at a time, so the rows and the
        # memory never disagree about which came last.
        self._lock = asyncio.Lock()
        self.closed = False

    def __len__(self) -> int:
        return len(self._twins)

    def cached(self, tenant_id: str, device: str) -> Twin | None:
        return self._twins.get((tenant_id, device))

    # loading

    async def get(self, tenant_id: str, device: str) -> Twin | None:
        """The device's twin, loaded on first use; None when nothing is known about the device."""
        twins = await self.get_many(tenant_id, [device])
        return twins.get(device)

    async def require(self, tenant_id: str, device: str) -> Twin:
        twin = await self.get(tenant_id, device) if len(device) <= DEVICE_KEY_MAX else None
        if twin is None:
            raise NotFound(f"device '{device}' has no twin", code="twin_not_found", device=device)
        return twin

    async def get_many(self, tenant_id: str, devices: Iterable[str]) -> dict[str, Twin]:
        found: dict[str, Twin] = {}
        waiting: dict[str, asyncio.Future[Twin | None]] = {}
        to_load: list[str] = []
        for device in devices:
            key = (tenant_id, device)
            twin = self._twins.get(key)
            if twin is not None:
                found[device] = twin
            elif key in self._loading:
                waiting[device] = self._loading[key]
            else:
                to_load.append(device)
        if to_load:
            waiting.update(await self._load_into_cache(tenant_id, to_load))
        for device, future in waiting.items():
            twin = await asyncio.shield(future)
            if twin is not None:
                found[device] = self._twins.get((tenant_id, device), twin)
        return found

    async def _load_into_cache(self, tenant_id: str, devices: list[str]) -> dict[str, asyncio.Future[Twin | None]]:
        # One load per device at a time: whoever asks while it runs waits for the same result.
        loop = asyncio.get_running_loop()
        futures: dict[str, asyncio.Future[Twin | None]] = {device: loop.create_future() for device in devices}
        for device, future in futures.items():
            self._loading[(tenant_id, device)] = future
        try:
            loaded = await asyncio.to_thread(self._load, tenant_id, devices)
        except BaseException as err:
            for device, future in futures.items():
                del self._loading[(tenant_id, device)]
                if isinstance(err, Exception):
                    future.set_exception(err)
                    future.exception()  # marks it retrieved: whoever waits gets it, nobody logs it twice
                else:
                    future.cancel()
            raise
        for device, future in futures.items():
            twin = loaded.get(device)
            if twin is not None and not self.closed:
                self._twins[(tenant_id, device)] = twin
            del self._loading[(tenant_id, device)]
            future.set_result(twin)
        return futures

    def _load(self, tenant_id: str, devices: list[str]) -> dict[str, Twin]:
        with self._db.session() as session:
            rows = load_rows(session, tenant_id, devices)
        newest = self._load_latest(tenant_id, devices)
        twins: dict[str, Twin] = {}
        for device in devices:
            latest = newest.get(device, {})
            stored = rows.get(device)
            if stored is None and not latest:
                continue
            twin = Twin(tenant_id, sys.intern(device))
            twin.metrics = {sys.intern(name): (int(ts), float(v), int(q)) for name, (ts, v, q) in latest.items()}
            if stored is not None:
                twin.reported = stored.reported
                twin.desired = stored.desired
                connection = stored.connection
                if connection is not None:
                    twin.online = connection.online
                    twin.last_seen_ms = None if connection.last_seen is None else to_ms(connection.last_seen)
                    twin.since_ms = None if connection.since is None else to_ms(connection.since)
                    twin.reason = connection.reason
                    twin.persisted_seen_ms = twin.last_seen_ms
            twins[device] = twin
        return twins

    # changes from the bus

    async def apply_batch(self, batch: PointBatch, *, received_ms: int | None = None) -> None:
        """Bring the twins of a stored batch up to date: persist what must be, then change memory.

        Most devices of a batch are online, unwatched, with a recently persisted connection row and
        no attributes: for them nothing is written and only their metrics and `last_seen` move, in
        one pass over the batch's series (after the rows of the others are persisted, so a failure
        still leaves every twin as it was).
        """
        series, reported = batch.series, batch.attributes
        positions = newest_positions(batch)
        if len(set(series)) < len(series):
            positions = _pairs_merged(series, batch.series_index, batch.ts_ms)
        if len(positions) == len(series):
            devices = set(map(operator.itemgetter(0), series))
        else:  # a series without points does not make its device seen
            devices = {series[index][0] for index in positions}
        if reported:
            devices |= reported.keys()
        if not devices:
            return
        at = now_ms() if received_ms is None else received_ms
        tenant_id = batch.tenant_id
        async with self._lock:
            cached = self._twins
            quick: dict[str, Twin] = {}
            others: list[str] = []
            for device in devices:
                twin = cached.get((tenant_id, device))
                if (
                    twin is not None
                    and twin.online
                    and twin.ring is None
                    and (persisted := twin.persisted_seen_ms) is not None
                    and at - persisted < LAST_SEEN_PERSIST_MS
                    and device not in reported
                ):
                    quick[device] = twin
                else:
                    others.append(device)
            plans = await self._plans(batch, positions, sorted(others), at) if others else []
            connections = [
                connection_row(tenant_id, (p.device, True, at, p.since_ms, p.reason))
                for p in plans
                if p.persist_connection
            ]
            attributes = [
                attribute_row(tenant_id, p.device, REPORTED, name, value, batch.source or "device", at)
                for p in plans
                for name, value in p.reported.items()
            ]
            if connections or attributes:
                await asyncio.to_thread(self._persist, connections, attributes)
            for plan in plans:
                self._apply_plan(tenant_id, plan, at)
            if quick:
                self._advance(quick, batch, positions, at)

    async def _plans(
        self, batch: PointBatch, positions: dict[int, int], devices: list[str], at: int
    ) -> list[_DevicePlan]:
        """Plans of the devices the quick path does not take (loading their twins), in key order."""
        tenant_id = batch.tenant_id
        twins = await self.get_many(tenant_id, devices)
        wanted = set(devices)
        series, ts_ms, value, quality = batch.series, batch.ts_ms, batch.value, batch.quality
        newest: dict[str, dict[str, MetricState]] = {}
        for index, position in positions.items():
            device, metric = series[index]
            if device in wanted:
                newest.setdefault(device, {})[metric] = (ts_ms[position], value[position], quality[position])
        reported = batch.attributes
        return [
            self._plan(twins.get(device), device, newest.get(device, _NOTHING), reported.get(device, _NOTHING), at)
            for device in devices
        ]

    @staticmethod
    def _advance(twins: dict[str, Twin], batch: PointBatch, positions: dict[int, int], at: int) -> None:
        """Online, unwatched twins whose connection rows need no write: metrics that move forward, `last_seen`."""
        series, ts_ms, value, quality = batch.series, batch.ts_ms, batch.value, batch.quality
        for index, position in positions.items():
            device, metric = series[index]
            twin = twins.get(device)
            if twin is None:
                continue
            ts = ts_ms[position]
            metrics = twin.metrics
            current = metrics.get(metric)
            if current is None:
                metrics[sys.intern(metric)] = (ts, value[position], quality[position])
            elif ts > current[0]:
                metrics[metric] = (ts, value[position], quality[position])
        for twin in twins.values():
            if twin.last_seen_ms is None or at > twin.last_seen_ms:
                twin.last_seen_ms = at
            # A change nobody watched when the batch was planned: numbered only (a watcher who came
            # meanwhile finds no patch for it in the ring and is sent a snapshot).
            twin.seq += 1

    def _plan(
        self, twin: Twin | None, device: str, metrics: Mapping[str, MetricState], reported: Mapping[str, Any], at: int
    ) -> _DevicePlan:
        if twin is not None:
            metrics = {
                name: state
                for name, state in metrics.items()
                if (current := twin.metrics.get(name)) is None or state[0] > current[0]
            }
        changed: dict[str, Any] = {}
        for name, value in reported.items():
            if twin is not None and name in twin.reported and twin.reported[name] == value:
                continue
            try:
                size = len(encode(value).encode())
            except (TypeError, ValueError):
                size = MAX_ATTRIBUTE_BYTES + 1
            if size > MAX_ATTRIBUTE_BYTES:
                logger.warning("reported attribute %s of %s skipped: not JSON or over %d bytes", name, device, size)
                continue
            changed[name] = value
        if twin is not None and twin.online:
            since, reason = twin.since_ms, twin.reason
            persisted = twin.persisted_seen_ms
            persist = persisted is None or at - persisted >= LAST_SEEN_PERSIST_MS
        else:  # a device that reports is online from now on
            since, reason, persist = at, "", True
        return _DevicePlan(device, twin, metrics, changed, since, reason, persist)

    def _apply_plan(self, tenant_id: str, plan: _DevicePlan, at: int) -> None:
        twin = plan.twin
        if twin is None:
            twin = self._twins[(tenant_id, plan.device)] = Twin(tenant_id, sys.intern(plan.device))
        twin.online = True
        twin.since_ms = plan.since_ms
        twin.reason = plan.reason
        if twin.last_seen_ms is None or at > twin.last_seen_ms:
            twin.last_seen_ms = at
        if plan.persist_connection:
            twin.persisted_seen_ms = at
        for name, state in plan.metrics.items():
            if name in twin.metrics:
                twin.metrics[name] = state
            else:
                twin.metrics[sys.intern(name)] = state
        twin.reported.update(plan.reported)
        if not twin.watched:
            self._emit(twin, None)
            return
        patch: dict[str, Any] = {"connection": twin.connection_document()}
        if plan.metrics:
            patch["metrics"] = {name: metric_document(state) for name, state in plan.metrics.items()}
        if plan.reported:
            patch["attributes"] = {REPORTED: dict(plan.reported)}
        self._emit(twin, patch)

    async def apply_status(self, status: DeviceStatus) -> None:
        """A device came online or went offline; a status older than the current state is ignored."""
        at = to_ms(status.at)
        async with self._lock:
            twin = await self.get(status.tenant_id, status.device)
            if twin is not None and twin.since_ms is not None and at < twin.since_ms:
                return
            since: int | None = at
            last_seen = None if twin is None else twin.last_seen_ms
            flips = twin is None or twin.online != status.online
            if twin is not None and not flips:
                since = twin.since_ms
            if status.online and (last_seen is None or at > last_seen):
                last_seen = at
            reason = status.reason[:200]
            if not flips and twin is not None and (twin.reason, twin.last_seen_ms) == (reason, last_seen):
                return
            row = connection_row(status.tenant_id, (status.device, status.online, last_seen, since, reason))
            await asyncio.to_thread(self._persist, [row], [])
            if twin is None:
                key = (status.tenant_id, status.device)
                twin = self._twins[key] = Twin(status.tenant_id, sys.intern(status.device))
            twin.online = status.online
            twin.since_ms = since
            twin.last_seen_ms = last_seen
            twin.persisted_seen_ms = last_seen
            twin.reason = reason
            self._emit(twin, {"connection": twin.connection_document()} if twin.watched else None)

    def _persist(self, connections: list[dict[str, Any]], attributes: list[dict[str, Any]]) -> None:
        with self._db.session() as session:
            upsert(session, TwinConnection, connections)
            upsert(session, TwinAttribute, attributes)

    # desired attributes

    async def set_desired(self, tenant_id: str, device: str, name: str, value: Any, requested_by: str) -> DesiredChange:
        """Store a desired value and ask the devices context to carry it out (`TWIN_DESIRED`)."""
        async with self._lock:
            twin = await self.require(tenant_id, device)  # first: a missing device is missing, whatever the value
            check_desired(name, value)
            request_id = uuid.uuid4().hex
            change = DesiredChange(
                tenant_id=tenant_id,
                device=device,
                name=name,
                value=value,
                requested_by=requested_by,
                request_id=request_id,
            )
            at = now_ms()
            had, previous = name in twin.desired, twin.desired.get(name)
            await asyncio.to_thread(self._write_desired, tenant_id, device, name, value, requested_by, at)
            try:
                await self._bus.publish(TWIN_DESIRED, change, message_id=request_id)
            except (BusError, OSError) as err:
                # Not sent means not desired: put the row back as it was.
                await asyncio.to_thread(
                    self._write_desired, tenant_id, device, name, previous if had else None, requested_by, at
                )
                raise Unavailable(f"the command bus is unavailable: {err}", code="bus_unavailable") from err
            twin.desired[sys.intern(name)] = value
            self._emit(twin, {"attributes": {DESIRED: {name: value}}} if twin.watched else None)
            return change

    async def delete_desired(self, tenant_id: str, device: str, name: str) -> None:
        async with self._lock:
            twin = await self.require(tenant_id, device)
            if name not in twin.desired:
                raise NotFound(
                    f"device '{device}' has no desired attribute '{name}'",
                    code="twin_path_not_found",
                    path=f"attributes/desired/{name}",
                )
            await asyncio.to_thread(self._write_desired, tenant_id, device, name, None, "", now_ms())
            del twin.desired[name]
            # A JSON merge patch removes a member with null.
            self._emit(twin, {"attributes": {DESIRED: {name: None}}} if twin.watched else None)

    def _write_desired(self, tenant_id: str, device: str, name: str, value: Any, by: str, at: int) -> None:
        """Store a desired value; None removes it (a desired value is never null)."""
        with self._db.session() as session:
            if value is None:
                session.execute(
                    delete(TwinAttribute).where(
                        TwinAttribute.tenant_id == tenant_id,
                        TwinAttribute.device == device,
                        TwinAttribute.side == DESIRED,
                        TwinAttribute.name == name,
                    )
                )
            else:
                upsert(session, TwinAttribute, [attribute_row(tenant_id, device, DESIRED, name, value, by, at)])

    # listing

    async def summaries(
        self, tenant_id: str, *, online: bool | None = None, after: str = "", limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Connection summaries of a tenant's twins by device key, fresher from memory where loaded."""
        rows = await asyncio.to_thread(self._list_connections, tenant_id, online, after, limit)
        result = []
        for row in rows:
            twin = self._twins.get((tenant_id, row.device))
            if twin is not None:
                if online is not None and twin.online != online:
                    continue
                result.append(twin.summary())
            else:
                result.append(
                    {
                        "device": row.device,
                        "online": row.online,
                        "last_seen": iso(None if row.last_seen is None else to_ms(row.last_seen)),
                        "since": iso(None if row.since is None else to_ms(row.since)),
                        "reason": row.reason,
                    }
                )
        return result

    def _list_connections(self, tenant_id: str, online: bool | None, after: str, limit: int) -> list[TwinConnection]:
        query = select(TwinConnection).where(TwinConnection.tenant_id == tenant_id)
        if online is not None:
            query = query.where(TwinConnection.online.is_(online))
        if after:
            query = query.where(TwinConnection.device > after)
        with self._db.session() as session:
            return list(session.scalars(query.order_by(TwinConnection.device).limit(limit)))

    # change events

    def _emit(self, twin: Twin, patch: dict[str, Any] | None) -> None:
        twin.seq += 1
        if twin.ring is None or patch is None:
            return
        twin.ring.append((twin.seq, encode(patch)))
        for listener in twin.listeners or ():
            listener.wake.set()

    def event_id(self, seq: int) -> str:
        return f"{self.epoch}.{seq}"

    def resume_from(self, twin: Twin, last_event_id: str | None) -> int | None:
        """The change number a client that saw `last_event_id` continues after; None: send a snapshot."""
        if not last_event_id:
            return None
        epoch, _, number = last_event_id.strip().partition(".")
        if epoch != self.epoch or not number.isdigit():
            return None
        seen = int(number)
        if seen > twin.seq:
            return None
        if seen == twin.seq:
            return seen
        ring = twin.ring
        if not ring or ring[0][0] > seen + 1:
            return None  # what came after has left the ring
        return seen

    def listen(self, twin: Twin) -> TwinListener:
        if twin.ring is None:
            twin.ring = deque(maxlen=self.ring_size)
        if twin.listeners is None:
            twin.listeners = set()
        listener = TwinListener()
        twin.listeners.add(listener)
        return listener

    def unlisten(self, twin: Twin, listener: TwinListener) -> None:
        if twin.listeners is not None:
            twin.listeners.discard(listener)

    async def events(
        self,
        twin: Twin,
        last_event_id: str | None = None,
        is_disconnected: Callable[[], Awaitable[bool]] | None = None,
    ) -> AsyncGenerator[str, None]:
        """Server-sent events of a twin: a `twin` snapshot (unless resuming), then a `patch` per change.

        A patch is a JSON merge patch (RFC 7396) of the twin document. A client too far behind for
        the ring gets a fresh snapshot. Comments keep idle connections open; the stream ends when the
        client goes or the registry closes.
        """
        listener = self.listen(twin)
        try:
            yield f"retry: 3000\n: twin {twin.device}\n\n"
            sent = self.resume_from(twin, last_event_id)
            if sent is None:
                sent = twin.seq  # taken before the yield: changes while the client reads are sent after
                yield self._snapshot(twin)
            while not self.closed:
                if twin.seq > sent:
                    ring = twin.ring or deque()
                    pending = [(seq, data) for seq, data in ring if seq > sent]
                    if not pending or pending[0][0] != sent + 1:
                        sent = twin.seq
                        yield self._snapshot(twin)
                    else:
                        text = "".join(
                            f"id: {self.event_id(seq)}\nevent: patch\ndata: {data}\n\n" for seq, data in pending
                        )
                        sent = pending[-1][0]
                        yield text
                    continue
                listener.wake.clear()
                try:
                    await asyncio.wait_for(listener.wake.wait(), self.keepalive_s)
                except TimeoutError:
                    if is_disconnected is not None and await is_disconnected():
                        return
                    yield ": keep-alive\n\n"
        finally:
            self.unlisten(twin, listener)

    def _snapshot(self, twin: Twin) -> str:
        return f"id: {self.event_id(twin.seq)}\nevent: twin\ndata: {encode(twin.document())}\n\n"

    def close(self) -> None:
        """End every event stream (the app is shutting down)."""
        self.closed = True
        for twin in self._twins.values():
            for listener in twin.listeners or ():
                listener.wake.set()
