"""The registry as ingest sees it: `DbDeviceDirectory` and `DbDeadLetterSink`.

The directory answers from an immutable in-memory snapshot (tenants, devices, token hashes,
Sparkplug ids), swapped whole when reloaded, so lookups from any thread or coroutine take no lock
and make no database round trip. It reloads on the next lookup after `invalidate()` (the registry
service calls it when its transaction commits) and, for changes made by other processes, when a
periodic check of the registry's row counts and newest change times sees a difference.

The dead-letter sink is called from ingest loops at message rates: `record()` only appends to a
bounded buffer; a thread writes the buffer in batches (and counts rejections per device). When the
buffer is full, letters are dropped and counted, never waited for.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from pydantic import ValidationError
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from iip.devices.directory import KnownDevice
from iip.devices.models import DeadLetter, Device, Gateway, Profile
from iip.devices.profiles import DeviceProfile, Protocol
from iip.devices.service import DEVICE_TOKEN_PREFIX, GATEWAY_TOKEN_PREFIX, token_digest
from iip.kernel.auth import Tenant
from iip.kernel.db import Database, utcnow
from iip.kernel.runtime import Runtime

logger = logging.getLogger(__name__)

DIRECTORY_SERVICE = "devices.directory"
DEAD_LETTER_SERVICE = "devices.dead_letters"

SparkplugKey = tuple[str, str, str | None]


@dataclass(frozen=True, slots=True)
class KnownGateway:
    """A registered gateway as ingest sees it: it may send the telemetry of its devices."""

    tenant_id: str
    key: str


@dataclass(frozen=True, slots=True)
class ConnectedDevice:
    """A device the platform connects to (Modbus, OPC UA, simulated), with its connection settings."""

    device: KnownDevice
    connection: dict[str, Any]


@dataclass(frozen=True)
class _Snapshot:
    tenants: dict[str, str]  # name or id -> id, active tenants only
    devices: dict[tuple[str, str], KnownDevice]  # (tenant id, key), enabled devices only
    tokens: dict[str, KnownDevice]  # SHA-256 of the device token
    gateway_tokens: dict[str, KnownGateway]
    sparkplug: dict[SparkplugKey, KnownDevice]
    connected: dict[Protocol, tuple[ConnectedDevice, ...]]
    disabled: frozenset[tuple[str, str]]
    signature: tuple[Any, ...]


EMPTY = _Snapshot({}, {}, {}, {}, {}, {}, frozenset(), ())


def registry_signature(session: Session) -> tuple[Any, ...]:
    """Changes whenever a device, profile, gateway or tenant is added, changed or removed."""
    parts: list[Any] = []
    for model in (Device, Profile, Gateway):
        parts += session.execute(select(func.count(), func.max(model.updated_at))).one()
    parts += session.execute(select(func.count(), func.count().filter(Tenant.active))).one()
    return tuple(parts)


def _profiles(session: Session) -> dict[str, DeviceProfile | None]:
    found: dict[str, DeviceProfile | None] = {}
    for profile_id, name, definition in session.execute(select(Profile.id, Profile.name, Profile.definition)):
        try:
            found[profile_id] = DeviceProfile.model_validate(definition)
        except ValidationError as err:  # stored under other rules: the device is known, its metrics are not
            logger.warning("profile %s (%s) no longer validates: %s", name, profile_id, err.errors()[0]["msg"])
            found[profile_id] = None
    return found


def load_snapshot(session: Session) -> _Snapshot:
    signature = registry_signature(session)
    tenants: dict[str, str] = {}
    for tenant_id, name in session.execute(select(Tenant.id, Tenant.name).where(Tenant.active)):
        tenants[tenant_id] = tenant_id
        tenants[name] = tenant_id
    profiles = _profiles(session)
    gateway_keys: dict[str, str] = {}
    gateway_tokens: dict[str, KnownGateway] = {}
    for gateway_id, tenant_id, key, token_hash in session.execute(
        select(Gateway.id, Gateway.tenant_id, Gateway.key, Gateway.token_hash)
    ):
        gateway_keys[gateway_id] = key
        if token_hash is not None and tenant_id in tenants:
            gateway_tokens[token_hash] = KnownGateway(tenant_id, key)
    # One KnownDevice per profile to copy from: devices of a profile share its (read-only) key maps.
    templates: dict[tuple[str, str], KnownDevice] = {}
    devices: dict[tuple[str, str], KnownDevice] = {}
    tokens: dict[str, KnownDevice] = {}
    sparkplug: dict[SparkplugKey, KnownDevice] = {}
    connected: dict[Protocol, list[ConnectedDevice]] = {}
    disabled: set[tuple[str, str]] = set()
    rows = session.execute(
        select(
            Device.tenant_id,
            Device.key,
            Device.profile_id,
            Device.gateway_id,
            Device.enabled,
            Device.token_hash,
            Device.sparkplug_group_id,
            Device.sparkplug_edge_node_id,
            Device.sparkplug_device_id,
            Device.connection,
        )
    )
    for tenant_id, key, profile_id, gateway_id, enabled, token_hash, group, edge, node_device, connection in rows:
        if tenant_id not in tenants:
            continue
        if not enabled:
            disabled.add((tenant_id, key))
            continue
        template = templates.get((tenant_id, profile_id))
        if template is None:
            template = templates[(tenant_id, profile_id)] = KnownDevice.of(tenant_id, "", profiles.get(profile_id))
        known = dataclasses.replace(template, key=key, gateway=gateway_keys.get(gateway_id) if gateway_id else None)
        devices[(tenant_id, key)] = known
        if token_hash is not None:
            tokens[token_hash] = known
        if group is not None and edge is not None:
            sparkplug[(group, edge, node_device)] = known
        profile = known.profile
        if profile is not None and profile.protocol in {Protocol.MODBUS, Protocol.OPCUA, Protocol.SIMULATED}:
            connected.setdefault(profile.protocol, []).append(ConnectedDevice(known, connection))
    return _Snapshot(
        tenants=tenants,
        devices=devices,
        tokens=tokens,
        gateway_tokens=gateway_tokens,
        sparkplug=sparkplug,
        connected={protocol: tuple(found) for protocol, found in connected.items()},
        disabled=frozenset(disabled),
        signature=signature,
    )


class DbDeviceDirectory:
    """`DeviceDirectory` over the registry tables, from an in-memory snapshot."""

    def __init__(self, db: Database, *, refresh_s: float = 5.0, retry_s: float = 1.0) -> None:
        self.db = db
        self.refresh_s = refresh_s
        self.retry_s = retry_s  # after a failed load, lookups use what they have for this long
        self.loads = 0
        self._snapshot: _Snapshot | None = None
        self._stale = True
        self._retry_at = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # the DeviceDirectory protocol

    def by_name(self, tenant: str, device: str) -> KnownDevice | None:
        snapshot = self._current()
        tenant_id = snapshot.tenants.get(tenant)
        return None if tenant_id is None else snapshot.devices.get((tenant_id, device))

    def by_token(self, token: str) -> KnownDevice | None:
        if not token.startswith(DEVICE_TOKEN_PREFIX):
            return None
        return self._current().tokens.get(token_digest(token))

    def by_sparkplug(self, group_id: str, edge_node_id: str, device_id: str | None) -> KnownDevice | None:
        return self._current().sparkplug.get((group_id, edge_node_id, device_id))

    # more of what ingest asks

    def gateway_by_token(self, token: str) -> KnownGateway | None:
        if not token.startswith(GATEWAY_TOKEN_PREFIX):
            return None
        return self._current().gateway_tokens.get(token_digest(token))

    def tenant_id(self, tenant: str) -> str | None:
        """The id of an active tenant named by its name or id."""
        return self._current().tenants.get(tenant)

    def is_disabled(self, tenant: str, device: str) -> bool:
        """Registered but disabled (lookups answer None for it): lets ingest give the better reason."""
        snapshot = self._current()
        tenant_id = snapshot.tenants.get(tenant)
        return tenant_id is not None and (tenant_id, device) in snapshot.disabled

    def connected(self, protocol: Protocol) -> tuple[ConnectedDevice, ...]:
        """Enabled devices of a protocol the platform connects to, with their connection settings."""
        return self._current().connected.get(protocol, ())

    # keeping the snapshot current

    def invalidate(self) -> None:
        """The registry changed: the next lookup reloads."""
        self._stale = True
        self._retry_at = 0.0

    def reload(self) -> None:
        """Load the registry now (raises what the database raises)."""
        with self._lock:
            self._reload_locked()

    def _reload_locked(self) -> None:
        self._stale = False  # before loading: an invalidate() during the load is not lost
        try:
            snapshot = self._load()
        except BaseException:
            self._stale = True
            raise
        self._snapshot = snapshot

    def refresh_if_changed(self) -> bool:
        """Reload when another process changed the registry; True when it did."""
        current = self._snapshot
        with self.db.session() as session:
            signature = registry_signature(session)
        if current is not None and signature == current.signature and not self._stale:
            return False
        self.reload()
        return True

    def _load(self) -> _Snapshot:
        with self.db.session() as session:
            snapshot = load_snapshot(session)
        self.loads += 1
        return snapshot

    def _current(self) -> _Snapshot:
        snapshot = self._snapshot
        if snapshot is not None and not self._stale:
            return snapshot
        if time.monotonic() < self._retry_at:
            return snapshot or EMPTY
        try:
            with self._lock:
                if self._stale or self._snapshot is None:  # not already reloaded by another thread
                    self._reload_locked()
        except Exception:  # lookups answer from what they have; the reason is logged
            logger.warning("cannot load the device registry; answering from the last snapshot", exc_info=True)
            self._retry_at = time.monotonic() + self.retry_s
        return self._snapshot or EMPTY

    # the periodic check

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="devices-directory", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=10)

    def _watch(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self.refresh_if_changed()
            except Exception:  # the next round tries again
                logger.warning("device registry refresh failed", exc_info=True)


# --- dead letters


MAX_RAW_BYTES = 64 * 1024  # kept of each message: enough to see what was wrong
MAX_REASON = 2000


@dataclass(frozen=True, slots=True)
class _Letter:
    tenant_id: str | None
    device: str | None
    source: str
    topic: str
    reason: str
    raw: bytes
    received_at: Any


def _text(value: str | None, limit: int) -> str | None:
    # PostgreSQL text cannot hold NUL.
    return None if value is None else value[:limit].replace("\x00", "\ufffd")


class DbDeadLetterSink:
    """`DeadLetterSink` writing to `devices_dead_letter` in batches from a thread of its own."""

    def __init__(
        self,
        db: Database,
        *,
        max_buffered: int = 10_000,
        max_buffered_bytes: int = 32 * 1024 * 1024,
        batch_size: int = 500,
    ) -> None:
        self.db = db
        self.max_buffered = max_buffered
        self.max_buffered_bytes = max_buffered_bytes
        self.batch_size = batch_size
        self.recorded = 0
        self.written = 0
        self.dropped = 0  # refused because the buffer was full
        self.failed = 0  # the database refused them
        self._buffer: deque[_Letter] = deque()
        self._buffered_bytes = 0
        self._in_flight = 0
        self._closing = False
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def record(
        self,
        *,
        source: str,
        reason: str,
        raw: bytes,
        topic: str = "",
        tenant_id: str | None = None,
        device: str | None = None,
    ) -> None:
        try:
            letter = _Letter(
                tenant_id=_text(tenant_id, 32),
                device=_text(device, 128),
                source=_text(source, 20) or "",
                topic=_text(topic, 500) or "",
                reason=_text(reason, MAX_REASON) or "",
                raw=bytes(raw[:MAX_RAW_BYTES]),
                received_at=utcnow(),
            )
            with self._changed:
                full = len(self._buffer) >= self.max_buffered
                if full or self._buffered_bytes + len(letter.raw) > self.max_buffered_bytes or self._closing:
                    self.dropped += 1
                    return
                self._buffer.append(letter)
                self._buffered_bytes += len(letter.raw)
                self.recorded += 1
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="devices-dead-letters", daemon=True)
                    self._thread.start()
                self._changed.notify_all()
        except Exception:  # a sink never fails its caller
            self.dropped += 1
            logger.exception("could not keep a dead letter from %s", source)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until what was recorded so far is written (or refused); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._buffer or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None:
                    return False
                self._changed.wait(left)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write what is buffered and stop the thread; later letters are dropped."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._buffer and not self._closing:
                    self._changed.wait()
                if not self._buffer:
                    self._thread = None
                    self._changed.notify_all()
                    return
                batch = [self._buffer.popleft() for _ in range(min(self.batch_size, len(self._buffer)))]
                self._buffered_bytes -= sum(len(letter.raw) for letter in batch)
                self._in_flight = len(batch)
            written = self._write(batch)
            with self._changed:
                self._in_flight = 0
                self.written += written
                self.failed += len(batch) - written
                self._changed.notify_all()

    def _write(self, batch: list[_Letter]) -> int:
        try:
            self._insert(batch)
        except Exception:  # one bad letter must not lose the batch: retried one by one
            if len(batch) == 1:
                logger.warning("dead letter refused by the database", exc_info=True)
                return 0
        else:
            return len(batch)
        written = 0
        for letter in batch:
            try:
                self._insert([letter])
                written += 1
            except Exception:  # counted in `failed`
                logger.debug("dead letter refused by the database", exc_info=True)
        if written < len(batch):
            logger.warning("%d dead letters refused by the database", len(batch) - written)
        return written

    def _insert(self, batch: Iterable[_Letter]) -> None:
        letters = list(batch)
        rows = [
            {
                "tenant_id": letter.tenant_id,
                "device": letter.device,
                "source": letter.source,
                "topic": letter.topic,
                "reason": letter.reason,
                "raw": letter.raw,
                "received_at": letter.received_at,
            }
            for letter in letters
        ]
        per_device = Counter(
            (letter.tenant_id, letter.device) for letter in letters if letter.tenant_id and letter.device
        )
        with self.db.session() as session:
            session.execute(insert(DeadLetter), rows)
            for (tenant_id, device), count in sorted(per_device.items()):
                session.execute(
                    update(Device)
                    .where(Device.tenant_id == tenant_id, Device.key == device)
                    .values(rejected_count=Device.rejected_count + count)
                )


# --- the process's directory and sink


@dataclass(frozen=True, slots=True)
class RegistryServices:
    directory: DbDeviceDirectory
    dead_letters: DbDeadLetterSink


_services_lock = threading.Lock()


def registry_services(runtime: Runtime) -> RegistryServices:
    """The process's directory and dead-letter sink, kept in `runtime.services` (made on first use)."""
    with _services_lock:
        directory = runtime.services.get(DIRECTORY_SERVICE)
        if not isinstance(directory, DbDeviceDirectory):
            directory = runtime.services[DIRECTORY_SERVICE] = DbDeviceDirectory(runtime.db)
        sink = runtime.services.get(DEAD_LETTER_SERVICE)
        if not isinstance(sink, DbDeadLetterSink):
            sink = runtime.services[DEAD_LETTER_SERVICE] = DbDeadLetterSink(runtime.db)
    return RegistryServices(directory, sink)


def close_registry_services(runtime: Runtime) -> None:
    """Stop the periodic check and write the buffered dead letters."""
    with _services_lock:
        directory = runtime.services.pop(DIRECTORY_SERVICE, None)
        sink = runtime.services.pop(DEAD_LETTER_SERVICE, None)
    if isinstance(directory, DbDeviceDirectory):
        directory.close()
    if isinstance(sink, DbDeadLetterSink):
        sink.close()


@asynccontextmanager
async def registry_lifespan(runtime: Runtime) -> AsyncIterator[None]:
    """Start the directory's periodic check for the life of the process; write dead letters at the end."""
    services = registry_services(runtime)
    services.directory.start()
    try:
        yield
    finally:
        await anyio.to_thread.run_sync(close_registry_services, runtime)
