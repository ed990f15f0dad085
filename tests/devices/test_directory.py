"""The directory ingest uses (snapshot, invalidation, refresh) and the dead-letter sink, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from iip.devices.models import DeadLetter, Device
from iip.devices.profiles import Protocol
from iip.devices.registry_directory import (
    DEAD_LETTER_SERVICE,
    DIRECTORY_SERVICE,
    DbDeadLetterSink,
    DbDeviceDirectory,
    registry_lifespan,
)
from iip.devices.schemas import DeviceSpec, DeviceUpdate
from iip.devices.service import DeviceRegistry
from iip.kernel.auth import AccessService, Tenant
from iip.kernel.bus import MemoryBus
from iip.kernel.db import Database
from iip.kernel.runtime import Runtime
from iip.kernel.settings import Settings
from tests.devices import test_registry as registry_tests
from tests.devices.test_registry import TenantRef, actor_of, import_into, sample_document

# The registry tests' fixtures: one migrated database per backend for the module, a tenant per test.
shared_db = registry_tests.shared_db
tenant_a = registry_tests.tenant_a


def wait_until(condition: object, timeout: float = 10.0) -> bool:
    """Poll `condition()` until it holds; the result says whether it did (no timing is asserted)."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


@pytest.fixture
def directory(shared_db: Database) -> DbDeviceDirectory:
    return DbDeviceDirectory(shared_db)


def registered(db: Database, tenant: TenantRef) -> tuple[str, str, str]:
    """The sample document in `tenant`; the pump's token, the gateway's token, the meter's Sparkplug group."""
    document = sample_document()
    import_into(db, tenant, document)
    with db.session() as session:
        registry = DeviceRegistry(session, actor_of(tenant))
        _, device_token = registry.rotate_device_token("pump-01")
        _, gateway_token = registry.rotate_gateway_token("gw-1")
    return device_token, gateway_token, document["devices"][1]["sparkplug"]["group_id"]


def test_lookups_answer_from_the_snapshot(
    shared_db: Database, directory: DbDeviceDirectory, tenant_a: TenantRef
) -> None:
    device_token, gateway_token, group = registered(shared_db, tenant_a)
    pump = directory.by_name(tenant_a.name, "pump-01")
    assert pump is not None
    assert directory.by_name(tenant_a.id, "pump-01") == pump
    assert (pump.tenant_id, pump.key, pump.gateway) == (tenant_a.id, "pump-01", "gw-1")
    assert pump.profile is not None
    assert pump.profile.name == "pump"
    assert pump.mqtt_keys == {"flow": "flow", "temp": "temp"}
    meter = directory.by_name(tenant_a.name, "meter-01")
    assert meter is not None
    assert meter.mqtt_keys == {"e": "energy", "power": "power", "state": "state"}
    assert directory.by_token(device_token) == pump
    assert directory.by_token(device_token + "x") is None
    assert directory.by_token(gateway_token) is None  # a gateway's token is not a device's
    gateway = directory.gateway_by_token(gateway_token)
    assert gateway is not None
    assert (gateway.tenant_id, gateway.key) == (tenant_a.id, "gw-1")
    assert directory.by_sparkplug(group, "e", None) == meter
    assert directory.by_sparkplug(group, "e", "meter-01") is None
    assert directory.by_name("no-such-tenant", "pump-01") is None
    assert directory.tenant_id(tenant_a.name) == tenant_a.id
    polled = [c for c in directory.connected(Protocol.MODBUS) if c.device.tenant_id == tenant_a.id]
    assert [(c.device.key, c.connection["host"]) for c in polled] == [("pump-01", "10.0.4.21")]


def test_invalidation_after_commit_reloads_and_misses_do_not(
    shared_db: Database, directory: DbDeviceDirectory, tenant_a: TenantRef
) -> None:
    registered(shared_db, tenant_a)
    assert directory.by_name(tenant_a.name, "new-01") is None
    loads = directory.loads
    for _ in range(20):  # unknown names and tokens are answered from the snapshot
        assert directory.by_token("iipd_0123456789ab_unknown") is None
        assert directory.by_name(tenant_a.name, "nothing") is None
    assert directory.loads == loads
    with shared_db.session() as session:
        registry = DeviceRegistry(session, actor_of(tenant_a), on_change=directory.invalidate)
        _, token = registry.create_device(DeviceSpec(key="new-01", profile="meter"))
        # Not committed yet: a lookup now must not keep the old state for good.
        assert directory.by_name(tenant_a.name, "new-01") is None
    assert token is not None
    found = directory.by_name(tenant_a.name, "new-01")
    assert found is not None
    assert directory.by_token(token) == found
    with shared_db.session() as session:
        DeviceRegistry(session, actor_of(tenant_a), on_change=directory.invalidate).update_device(
            "new-01", DeviceUpdate(enabled=False)
        )
    assert directory.by_name(tenant_a.name, "new-01") is None
    assert directory.by_token(token) is None
    assert directory.is_disabled(tenant_a.name, "new-01")
    assert not directory.is_disabled(tenant_a.name, "pump-01")


def test_a_rolled_back_change_is_not_announced(
    shared_db: Database, directory: DbDeviceDirectory, tenant_a: TenantRef
) -> None:
    registered(shared_db, tenant_a)
    directory.by_name(tenant_a.name, "pump-01")
    loads = directory.loads

    def abandoned_delete() -> None:
        with shared_db.session() as session:
            DeviceRegistry(session, actor_of(tenant_a), on_change=directory.invalidate).delete_device("pump-01")
            raise RuntimeError("abandoned")

    with pytest.raises(RuntimeError):
        abandoned_delete()
    assert directory.by_name(tenant_a.name, "pump-01") is not None
    assert directory.loads == loads


def test_changes_by_other_processes_are_found_by_the_refresh(
    shared_db: Database, directory: DbDeviceDirectory, tenant_a: TenantRef
) -> None:
    device_token, _, _ = registered(shared_db, tenant_a)
    assert directory.by_token(device_token) is not None
    assert not directory.refresh_if_changed()
    with shared_db.session() as session:  # as another process would: no invalidation here
        DeviceRegistry(session, actor_of(tenant_a)).revoke_device_token("pump-01")
    assert directory.by_token(device_token) is not None  # still the snapshot
    assert directory.refresh_if_changed()
    assert directory.by_token(device_token) is None
    with shared_db.session() as session:
        DeviceRegistry(session, actor_of(tenant_a)).delete_device("meter-01")
    assert directory.refresh_if_changed()
    assert directory.by_name(tenant_a.name, "meter-01") is None
    with shared_db.session() as session:
        row = session.get(Tenant, tenant_a.id)
        assert row is not None
        row.active = False
    assert directory.refresh_if_changed()
    assert directory.by_name(tenant_a.name, "pump-01") is None
    assert directory.tenant_id(tenant_a.name) is None


def test_the_periodic_check_picks_up_changes(
    shared_db: Database, directory: DbDeviceDirectory, tenant_a: TenantRef
) -> None:
    registered(shared_db, tenant_a)
    directory.refresh_s = 0.05
    directory.by_name(tenant_a.name, "pump-01")
    directory.start()
    try:
        with shared_db.session() as session:
            DeviceRegistry(session, actor_of(tenant_a)).create_device(DeviceSpec(key="late-01", profile="meter"))
        assert wait_until(lambda: directory.by_name(tenant_a.name, "late-01") is not None)
    finally:
        directory.close()


def test_lookups_from_many_threads_while_the_registry_changes(
    shared_db: Database, directory: DbDeviceDirectory, tenant_a: TenantRef
) -> None:
    registered(shared_db, tenant_a)
    failures: list[BaseException] = []
    stop = threading.Event()

    def look() -> None:
        try:
            while not stop.is_set():
                assert directory.by_name(tenant_a.name, "pump-01") is not None
                directory.by_token("iipd_0123456789ab_x")
        except BaseException as err:  # noqa: BLE001 - reported below
            failures.append(err)

    threads = [threading.Thread(target=look) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for n in range(10):
            with shared_db.session() as session:
                DeviceRegistry(session, actor_of(tenant_a), on_change=directory.invalidate).create_device(
                    DeviceSpec(key=f"d-{n}", profile="meter")
                )
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not failures
    assert all(directory.by_name(tenant_a.name, f"d-{n}") is not None for n in range(10))


def test_a_directory_without_its_tables_answers_none(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        directory = DbDeviceDirectory(db, retry_s=60)
        assert directory.by_name("t", "d") is None
        assert directory.by_token("iipd_x_y") is None
        assert directory.loads == 0
        with pytest.raises(Exception, match="no such table"):
            directory.reload()
    finally:
        db.dispose()


# --- dead letters


def letters_of(db: Database, tenant: TenantRef) -> list[DeadLetter]:
    with db.session() as session:
        query = select(DeadLetter).where(DeadLetter.tenant_id == tenant.id).order_by(DeadLetter.id)
        return list(session.scalars(query))


def test_dead_letters_are_written_in_batches_and_counted_per_device(shared_db: Database, tenant_a: TenantRef) -> None:
    registered(shared_db, tenant_a)
    sink = DbDeadLetterSink(shared_db, batch_size=7)
    try:
        for n in range(20):
            sink.record(
                source="mqtt",
                reason=f"bad payload {n}\x00",
                raw=b"\xff\x00raw",
                topic="iip/t/pump-01/telemetry",
                tenant_id=tenant_a.id,
                device="pump-01",
            )
        sink.record(source="http", reason="unknown device", raw=b"{}", tenant_id=tenant_a.id, device="ghost")
        assert sink.flush()
    finally:
        sink.close()
    assert (sink.recorded, sink.written, sink.dropped, sink.failed) == (21, 21, 0, 0)
    letters = letters_of(shared_db, tenant_a)
    assert len(letters) == 21
    first = letters[0]
    assert (first.source, first.topic, first.device, bytes(first.raw)) == (
        "mqtt",
        "iip/t/pump-01/telemetry",
        "pump-01",
        b"\xff\x00raw",
    )
    assert first.reason.startswith("bad payload 0")
    assert "\x00" not in first.reason  # PostgreSQL text cannot hold it
    with shared_db.session() as session:
        pump = session.scalar(select(Device).where(Device.tenant_id == tenant_a.id, Device.key == "pump-01"))
        assert pump is not None
        assert pump.rejected_count == 20


def test_a_full_buffer_drops_and_counts(shared_db: Database, tenant_a: TenantRef) -> None:
    sink = DbDeadLetterSink(shared_db, max_buffered_bytes=100)
    try:
        sink.record(source="http", reason="too big to keep", raw=b"x" * 101, tenant_id=tenant_a.id)
        sink.record(source="http", reason="kept", raw=b"x" * 10, tenant_id=tenant_a.id)
        assert sink.flush()
    finally:
        sink.close()
    sink.record(source="http", reason="after close", raw=b"", tenant_id=tenant_a.id)
    assert (sink.written, sink.dropped) == (1, 2)
    assert [letter.reason for letter in letters_of(shared_db, tenant_a)] == ["kept"]


def test_a_sink_whose_database_refuses_never_raises(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'empty.db'}")  # no tables
    sink = DbDeadLetterSink(db, batch_size=3)
    try:
        for n in range(5):
            sink.record(source="modbus", reason=f"r{n}", raw=b"x")
        assert sink.flush()
    finally:
        sink.close()
        db.dispose()
    assert (sink.written, sink.failed) == (0, 5)


async def test_the_lifespan_keeps_one_directory_and_sink_per_process(shared_db: Database, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=str(shared_db.url), log_level="WARNING")
    runtime = Runtime(settings=settings, db=shared_db, bus=MemoryBus())
    async with registry_lifespan(runtime):
        directory = runtime.services[DIRECTORY_SERVICE]
        sink = runtime.services[DEAD_LETTER_SERVICE]
        assert isinstance(directory, DbDeviceDirectory)
        assert isinstance(sink, DbDeadLetterSink)
        with shared_db.session() as session:
            tenant = AccessService(session).create_tenant("lifespan-tenant")
            tenant_id = tenant.id
        sink.record(source="http", reason="kept at the end", raw=b"", tenant_id=tenant_id)
    assert DIRECTORY_SERVICE not in runtime.services
    with shared_db.session() as session:  # written when the lifespan closed the sink
        reasons = session.scalars(select(DeadLetter.reason).where(DeadLetter.tenant_id == tenant_id)).all()
    assert reasons == ["kept at the end"]
