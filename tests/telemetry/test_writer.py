"""The bus writer end to end on the memory bus: batches reach the store and the twins, statuses the connection."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from iip.kernel.bus import DEAD_LETTERS, DeadLetter, Delivery, MemoryBus
from iip.kernel.runtime import Runtime
from iip.telemetry.public import (
    DEVICE_STATUS,
    TELEMETRY_POINTS,
    DeviceStatus,
    PointBatch,
    PointBatchBuilder,
    Quality,
    latest_points,
    store_points,
)
from iip.telemetry.twin import TWINS_SERVICE, Twin, TwinRegistry, now_ms
from iip.telemetry.writer import TelemetryWriter, latest_of, writer_lifespan
from tests.conftest import TenantFixture

T = TypeVar("T")
BASE_MS = now_ms() - 3_600_000  # an hour ago: well inside retention, never in the future


async def eventually(check: Callable[[], T | None], what: str) -> T:
    """Wait (not time) for the writer: returns the first truthy result of `check`."""
    for _ in range(1000):  # ten seconds at most
        result = check()
        if result:
            return result
        await asyncio.sleep(0.01)
    raise AssertionError(f"gave up waiting for {what}")


def batch(tenant_id: str, *points: tuple[str, str, int, float], **attributes: Mapping[str, Any]) -> PointBatch:
    builder = PointBatchBuilder(tenant_id, source="test")
    for device, metric, offset_ms, value in points:
        builder.add(device, metric, BASE_MS + offset_ms, value)
    for device, values in attributes.items():
        for name, reported in values.items():
            builder.attribute(device, name, reported)
    return builder.build()


def twins_of(runtime: Runtime) -> TwinRegistry:
    registry = runtime.services[TWINS_SERVICE]
    assert isinstance(registry, TwinRegistry)
    return registry


def reported_twin(twins: TwinRegistry, tenant_id: str, device: str) -> Callable[[], Twin | None]:
    """The device's twin once a report was applied (a twin first loaded meanwhile shows stored points only)."""

    def check() -> Twin | None:
        twin = twins.cached(tenant_id, device)
        return twin if twin is not None and twin.online else None

    return check


def metric_value(twin: Twin | None, metric: str) -> float | None:
    if twin is None or metric not in twin.metrics:
        return None
    return twin.metrics[metric][1]


async def test_a_batch_is_stored_and_updates_the_twin(runtime: Runtime, tenant_a: TenantFixture) -> None:
    await runtime.bus.start()
    async with writer_lifespan(runtime):
        twins = twins_of(runtime)
        await runtime.bus.publish(
            TELEMETRY_POINTS,
            batch(
                tenant_a.id,
                ("pump-1", "flow", 0, 1.5),
                ("pump-1", "flow", 1000, 2.5),
                ("pump-1", "pressure", 500, 7.0),
                ("pump-2", "flow", 0, 9.0),
                **{"pump-1": {"firmware": "1.2.3", "mode": {"auto": True}}},
            ),
        )
        twin = await eventually(reported_twin(twins, tenant_a.id, "pump-1"), "pump-1's twin")
        assert twin.metrics["flow"] == (BASE_MS + 1000, 2.5, Quality.GOOD)
        assert twin.metrics["pressure"] == (BASE_MS + 500, 7.0, Quality.GOOD)
        assert twin.reported == {"firmware": "1.2.3", "mode": {"auto": True}}
        assert twin.online
        assert twin.last_seen_ms is not None
        assert twin.since_ms is not None
        assert metric_value(twins.cached(tenant_a.id, "pump-2"), "flow") == 9.0

        stored = await asyncio.to_thread(latest_points, runtime, tenant_a.id, "pump-1")
        assert stored["flow"][:2] == (BASE_MS + 1000, 2.5)
        assert stored["pressure"][:2] == (BASE_MS + 500, 7.0)

        # Another process loads the same twin lazily from the store and the persisted rows.
        fresh = TwinRegistry(runtime.db, runtime.bus, latest_of(runtime))
        loaded = await fresh.get(tenant_a.id, "pump-1")
        assert loaded is not None
        assert loaded.document() == twin.document()
        assert await fresh.get(tenant_a.id, "never-reported") is None
    assert TWINS_SERVICE not in runtime.services
    await runtime.bus.close()


async def test_out_of_order_points_do_not_move_the_latest_value_back(runtime: Runtime, tenant_a: TenantFixture) -> None:
    await runtime.bus.start()
    async with writer_lifespan(runtime):
        twins = twins_of(runtime)
        await runtime.bus.publish(TELEMETRY_POINTS, batch(tenant_a.id, ("m", "speed", 5000, 50.0)))
        await runtime.bus.publish(
            TELEMETRY_POINTS, batch(tenant_a.id, ("m", "speed", 1000, 10.0), ("m", "torque", 1000, 3.0))
        )
        # The second batch is applied once torque shows; speed must still be the newer value.
        twin = await eventually(reported_twin(twins, tenant_a.id, "m"), "the twin")
        await eventually(lambda: "torque" in twin.metrics, "the second batch")
        assert twin.metrics["speed"] == (BASE_MS + 5000, 50.0, Quality.GOOD)
        # The late point is still stored: the store keeps history, only the twin keeps the latest.
        stored = await asyncio.to_thread(latest_points, runtime, tenant_a.id, "m")
        assert stored["speed"][:2] == (BASE_MS + 5000, 50.0)
    await runtime.bus.close()


async def test_a_status_event_flips_the_connection(runtime: Runtime, tenant_a: TenantFixture) -> None:
    await runtime.bus.start()
    async with writer_lifespan(runtime):
        twins = twins_of(runtime)
        await runtime.bus.publish(TELEMETRY_POINTS, batch(tenant_a.id, ("plc", "temp", 0, 20.0)))
        twin = await eventually(reported_twin(twins, tenant_a.id, "plc"), "the twin")
        assert twin.online
        went_offline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
        offline = DeviceStatus(tenant_id=tenant_a.id, device="plc", online=False, at=went_offline, reason="timeout")
        await runtime.bus.publish(DEVICE_STATUS, offline)
        await eventually(lambda: not twin.online, "the device to go offline")
        assert twin.reason == "timeout"
        assert twin.since_ms == int(went_offline.timestamp() * 1000)

        # A status older than the current state is stale and changes nothing: had it been applied,
        # the next (offline) status would be a change of state and move `since`.
        stale = DeviceStatus(
            tenant_id=tenant_a.id, device="plc", online=True, at=went_offline - dt.timedelta(minutes=5)
        )
        await runtime.bus.publish(DEVICE_STATUS, stale)
        again = DeviceStatus(
            tenant_id=tenant_a.id, device="plc", online=False, at=went_offline + dt.timedelta(seconds=1), reason="lwt"
        )
        await runtime.bus.publish(DEVICE_STATUS, again)
        await eventually(lambda: twin.reason == "lwt", "the second status")
        assert (twin.online, twin.since_ms) == (False, int(went_offline.timestamp() * 1000))

        # Then a report brings it back online.
        await runtime.bus.publish(TELEMETRY_POINTS, batch(tenant_a.id, ("plc", "temp", 1000, 21.0)))
        await eventually(lambda: metric_value(twin, "temp") == 21.0, "the next report")
        assert twin.online
        assert twin.reason == ""

        # The state is persisted: another process sees the device online, with the report's time.
        fresh = TwinRegistry(runtime.db, runtime.bus, latest_of(runtime))
        loaded = await fresh.get(tenant_a.id, "plc")
        assert loaded is not None
        assert (loaded.online, loaded.since_ms) == (True, twin.since_ms)

        # A status for a device that never reported creates its twin with the connection only.
        await runtime.bus.publish(
            DEVICE_STATUS, DeviceStatus(tenant_id=tenant_a.id, device="gateway", online=True, at=went_offline)
        )
        gateway = await eventually(reported_twin(twins, tenant_a.id, "gateway"), "the gateway's twin")
        assert gateway.online
        assert gateway.metrics == {}
    await runtime.bus.close()


async def test_a_batch_that_fails_to_store_leaves_the_twin_untouched_and_is_redelivered(
    runtime: Runtime, tenant_a: TenantFixture
) -> None:
    bus = MemoryBus()
    await bus.start()
    twins = TwinRegistry(runtime.db, bus, latest_of(runtime))
    seen_at_store: list[tuple[float | None, dict[str, object]]] = []

    def flaky_store(points: PointBatch) -> int:
        # What the twin showed when the store was called, then a real failure on the first attempt.
        twin = twins.cached(tenant_a.id, "valve")
        seen_at_store.append((metric_value(twin, "position"), dict(twin.reported) if twin else {}))
        if len(seen_at_store) == 1:
            raise ConnectionError("database went away")
        return store_points(runtime, points)

    writer = TelemetryWriter(bus, twins, flaky_store, durable="flaky-writer", retry_delay=0.05)
    await writer.start()
    try:
        await bus.publish(TELEMETRY_POINTS, batch(tenant_a.id, ("valve", "position", 0, 10.0)))
        twin = await eventually(reported_twin(twins, tenant_a.id, "valve"), "the first batch")
        await bus.publish(
            TELEMETRY_POINTS, batch(tenant_a.id, ("valve", "position", 1000, 80.0), valve={"state": "opening"})
        )
        seen_at_store.clear()
        await eventually(lambda: metric_value(twin, "position") == 80.0, "the redelivered batch")
        # Attempt 1 failed; attempt 2 found the twin exactly as the first batch left it.
        assert seen_at_store == [(10.0, {}), (10.0, {})]
        assert twin.reported == {"state": "opening"}
        assert not bus.dead_letters
    finally:
        await writer.stop()
        await bus.close()


async def test_a_batch_that_never_stores_is_dead_lettered_and_never_applied(
    runtime: Runtime, tenant_a: TenantFixture
) -> None:
    bus = MemoryBus()
    await bus.start()
    twins = TwinRegistry(runtime.db, bus, latest_of(runtime))

    def broken_store(points: PointBatch) -> int:
        raise ConnectionError("database went away")

    writer = TelemetryWriter(bus, twins, broken_store, durable="broken-writer", max_deliver=3, retry_delay=0.01)
    await writer.start()
    try:
        await bus.publish(TELEMETRY_POINTS, batch(tenant_a.id, ("valve", "position", 0, 10.0), valve={"a": 1}))
        letter = await eventually(lambda: bus.dead_letters[0] if bus.dead_letters else None, "the dead letter")
        assert letter.attempts == 3
        assert "database went away" in letter.reason
        assert twins.cached(tenant_a.id, "valve") is None
        assert await twins.get(tenant_a.id, "valve") is None  # nothing was persisted either
    finally:
        await writer.stop()
        await bus.close()


async def test_a_batch_the_store_refuses_is_dead_lettered_at_once(runtime: Runtime, tenant_a: TenantFixture) -> None:
    await runtime.bus.start()
    letters: list[DeadLetter] = []

    async def collect(delivery: Delivery[DeadLetter]) -> None:
        letters.append(delivery.payload)

    subscription = await runtime.bus.subscribe(DEAD_LETTERS, collect, durable="test-letters")
    async with writer_lifespan(runtime):
        refused = PointBatchBuilder(tenant_a.id, source="test")
        refused.add("pump", "flow", BASE_MS, 1.0)
        refused.add("pump", "flow", -5, 2.0)  # before 1970: the store refuses the whole batch
        refused.attribute("pump", "firmware", "9.9")
        await runtime.bus.publish(TELEMETRY_POINTS, refused.build())
        letter = await eventually(lambda: letters[0] if letters else None, "the dead letter")
        assert letter.subject == TELEMETRY_POINTS.name
        assert letter.attempts == 1
        assert letter.reason.startswith("refused by the store")
        assert TELEMETRY_POINTS.decode(letter.raw()).attributes == {"pump": {"firmware": "9.9"}}
        twins = twins_of(runtime)
        assert twins.cached(tenant_a.id, "pump") is None
        assert await twins.get(tenant_a.id, "pump") is None
        assert await asyncio.to_thread(latest_points, runtime, tenant_a.id, "pump") == {}
    await subscription.stop()
    await runtime.bus.close()


async def test_reported_attributes_and_connection_survive_a_restart(runtime: Runtime, tenant_a: TenantFixture) -> None:
    await runtime.bus.start()
    async with writer_lifespan(runtime):
        twins = twins_of(runtime)
        await runtime.bus.publish(
            TELEMETRY_POINTS, batch(tenant_a.id, ("meter", "kwh", 0, 1.0), meter={"serial": "X1", "phase": 3})
        )
        await runtime.bus.publish(TELEMETRY_POINTS, batch(tenant_a.id, meter={"phase": 1}))
        twin = await eventually(reported_twin(twins, tenant_a.id, "meter"), "the twin")
        await eventually(lambda: twin.reported.get("phase") == 1, "the attribute-only batch")
        document = twin.document()
    await runtime.bus.close()

    # A new process: a new bus and registry, the same database.
    runtime.bus = MemoryBus()
    await runtime.bus.start()
    async with writer_lifespan(runtime):
        loaded = await twins_of(runtime).get(tenant_a.id, "meter")
        assert loaded is not None
        assert loaded.reported == {"serial": "X1", "phase": 1}
        assert loaded.document()["metrics"] == document["metrics"]
        assert loaded.online
    await runtime.bus.close()
