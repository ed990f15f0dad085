"""The rules on the live stream: point batches on the bus become stored alarms and published changes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from iip.alarms.lifespan import ENGINE_SERVICE, AlarmEngineRunner, alarms_lifespan
from iip.alarms.models import Alarm, AlarmHistory
from iip.alarms.public import ALARM_CHANGES, AlarmChange, AlarmState
from iip.alarms.rules import parse_rule
from iip.alarms.service import AlarmService
from iip.devices.service import DeviceRegistry
from iip.kernel.auth import Principal, Role
from iip.kernel.bus import Delivery
from iip.kernel.runtime import Runtime
from iip.telemetry.public import TELEMETRY_POINTS, PointBatchBuilder
from tests.conftest import TenantFixture

pytestmark = pytest.mark.asyncio


def admin(tenant: TenantFixture) -> Principal:
    return Principal("u", "admin", "admin", tenant.id, Role.ADMIN)


def setup(runtime: Runtime, tenant: TenantFixture) -> None:
    document = {
        "profiles": [{"name": "boiler", "protocol": "mqtt", "metrics": [{"name": "pressure"}]}],
        "devices": [{"key": "b-1", "profile": "boiler", "site": "north"}, {"key": "b-2", "profile": "boiler"}],
    }
    rule = {
        "key": "pressure.high",
        "kind": "threshold",
        "title": "Pressure high",
        "scope": {"profile": "boiler"},
        "metric": "pressure",
        "high": 1.6,
        "deadband": 0.1,
        "priority": "high",
    }
    with runtime.db.session() as session:
        DeviceRegistry(session, admin(tenant)).import_document(document, tenant_id=tenant.id)
        AlarmService(session, admin(tenant)).import_rules([parse_rule(rule)], tenant_id=tenant.id)


async def publish(runtime: Runtime, tenant: TenantFixture, device: str, ts: int, value: float) -> None:
    builder = PointBatchBuilder(tenant.id, "test")
    builder.add(device, "pressure", ts, value)
    await runtime.bus.publish(TELEMETRY_POINTS, builder.build())


def alarms(runtime: Runtime, tenant: TenantFixture) -> dict[str, str]:
    with runtime.db.session() as session:
        return {row.device: row.state for row in session.query(Alarm).filter(Alarm.tenant_id == tenant.id)}


async def eventually(check: Callable[[], bool], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(check):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


async def test_points_raise_and_clear_alarms_and_changes_are_published(
    runtime: Runtime, tenant_a: TenantFixture
) -> None:
    setup(runtime, tenant_a)
    seen: list[AlarmChange] = []

    async def on_change(delivery: Delivery[AlarmChange]) -> None:
        seen.append(delivery.payload)

    await runtime.bus.start()
    await runtime.bus.subscribe(ALARM_CHANGES, on_change, durable="test-feed")
    now = time.time_ns() // 1_000_000
    async with alarms_lifespan(runtime):
        runner: AlarmEngineRunner = runtime.services[ENGINE_SERVICE]
        await publish(runtime, tenant_a, "b-1", now, 1.2)
        await publish(runtime, tenant_a, "b-1", now + 1000, 1.9)
        await publish(runtime, tenant_a, "b-2", now + 1000, 1.0)
        await eventually(lambda: alarms(runtime, tenant_a) == {"b-1": AlarmState.UNACK_ACTIVE.value})
        # Inside the deadband: still active; below it: returned to normal, unacknowledged.
        await publish(runtime, tenant_a, "b-1", now + 2000, 1.55)
        await publish(runtime, tenant_a, "b-1", now + 3000, 1.45)
        await eventually(lambda: alarms(runtime, tenant_a) == {"b-1": AlarmState.UNACK_RTN.value})
        await eventually(lambda: len(seen) >= 2)
        assert runner.applied == 2
    assert [(c.device, c.action, c.state, c.site) for c in seen] == [
        ("b-1", "activate", AlarmState.UNACK_ACTIVE, "north"),
        ("b-1", "clear", AlarmState.UNACK_RTN, "north"),
    ]


async def test_a_restart_keeps_an_active_alarm_without_raising_it_twice(
    runtime: Runtime, tenant_a: TenantFixture
) -> None:
    setup(runtime, tenant_a)
    await runtime.bus.start()
    now = time.time_ns() // 1_000_000
    async with alarms_lifespan(runtime):
        await publish(runtime, tenant_a, "b-1", now, 2.0)
        await eventually(lambda: alarms(runtime, tenant_a) == {"b-1": AlarmState.UNACK_ACTIVE.value})
    async with alarms_lifespan(runtime):  # a new engine, primed from the stored alarms
        runner: AlarmEngineRunner = runtime.services[ENGINE_SERVICE]
        await publish(runtime, tenant_a, "b-1", now + 1000, 2.1)  # still high: no second activation
        await publish(runtime, tenant_a, "b-1", now + 2000, 1.0)  # the clear a fresh engine would miss
        await eventually(lambda: alarms(runtime, tenant_a) == {"b-1": AlarmState.UNACK_RTN.value})
        assert runner.applied == 1
    with runtime.db.session() as session:
        actions = [h.action for h in session.query(AlarmHistory).order_by(AlarmHistory.sequence)]
    assert actions == ["activate", "clear"]


async def test_rule_changes_are_picked_up_while_running(runtime: Runtime, tenant_a: TenantFixture) -> None:
    setup(runtime, tenant_a)
    await runtime.bus.start()
    now = time.time_ns() // 1_000_000
    async with alarms_lifespan(runtime):
        runner: AlarmEngineRunner = runtime.services[ENGINE_SERVICE]
        with runtime.db.session() as session:
            service = AlarmService(session, admin(tenant_a))
            rule = service.get_rule("pressure.high")
            spec = parse_rule({**rule.spec, "high": 5.0})
            service.update_rule("pressure.high", spec)
        await runner.tick()
        await publish(runtime, tenant_a, "b-1", now, 2.0)  # above the old limit, below the new one
        await publish(runtime, tenant_a, "b-2", now, 6.0)
        await eventually(lambda: alarms(runtime, tenant_a) == {"b-2": AlarmState.UNACK_ACTIVE.value})
