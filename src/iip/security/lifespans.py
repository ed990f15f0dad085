"""What the security context runs while the platform runs (`SecuritySettings`, `IIP_SECURITY__*`).

Always: the retrier of bulletin deliveries (`delivery.delivery_lifespan`).

When switched on (both off by default):

- live monitoring of `monitor_interface` for `monitor_tenant` and `monitor_site` (`monitor.LiveMonitor`),
  its new alerts published on the bus as alarm events, its per-flow state bounded by the
  `monitor_flow_idle_s`, `monitor_max_flows` and `monitor_fragment_*` settings;
- the decoy PLC (`decoy_enabled`, with `decoy_tenant`, `decoy_seed` and its ports), its visitors
  recorded as the tenant's indicators (`decoy.run_recording_decoy`).

Each runs on its own: one that cannot start (no such tenant, an interface that cannot be
opened, a port in use) is logged and leaves the platform and the others running. The running
objects are in `runtime.services` under `security.<name>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from sqlalchemy.orm import Session

from iip.kernel.auth import AccessService
from iip.kernel.db import Database
from iip.kernel.errors import NotFound
from iip.kernel.runtime import Runtime
from iip.security.decoy import run_recording_decoy
from iip.security.delivery import delivery_lifespan
from iip.security.honeypot.server import HoneypotConfig, RunningHoneypot
from iip.security.monitor import LiveMonitor, monitor_limits
from iip.security.publishing import publish_alert_events

logger = logging.getLogger(__name__)

MONITOR_SERVICE = "security.monitor"  # the running `LiveMonitor`, once its interface is open
DECOY_SERVICE = "security.decoy"  # the running `RunningHoneypot`, once it listens


def tenant_id_of(session: Session, ref: str) -> str:
    """A tenant named by id or by name (settings may give either)."""
    access = AccessService(session)
    ref = ref.strip()
    try:
        return access.get_tenant(ref).id
    except NotFound:
        return access.tenant_by_name(ref).id


def _resolve(db: Database, ref: str) -> str:
    with db.session() as session:
        return tenant_id_of(session, ref)


async def monitoring(runtime: Runtime, stop: asyncio.Event) -> None:
    settings = runtime.settings.security
    tenant_id = await asyncio.to_thread(_resolve, runtime.db, settings.monitor_tenant)

    async def publish(events: Any) -> None:
        await publish_alert_events(runtime.bus, events)

    limits, detection = monitor_limits(settings)
    monitor = LiveMonitor(
        runtime.db, tenant_id, settings.monitor_site, publish=publish, flush_s=settings.monitor_flush_s,
        detection=detection, limits=limits, settings=runtime.settings,
    )  # fmt: skip

    def started(running: LiveMonitor) -> None:
        runtime.services[MONITOR_SERVICE] = running  # once the interface is open

    try:
        state = await monitor.run(settings.monitor_interface.strip(), stop, started=started)
    finally:
        runtime.services.pop(MONITOR_SERVICE, None)
    if state.error:
        logger.error("live monitoring of %s stopped: %s", settings.monitor_interface, state.error)


async def decoy(runtime: Runtime, stop: asyncio.Event) -> None:
    settings = runtime.settings.security
    tenant_id = await asyncio.to_thread(_resolve, runtime.db, settings.decoy_tenant)
    config = HoneypotConfig(
        seed=settings.decoy_seed,
        host=settings.decoy_host,
        modbus_port=settings.decoy_modbus_port or None,
        s7_port=settings.decoy_s7_port or None,
    )

    def started(running: RunningHoneypot) -> None:
        runtime.services[DECOY_SERVICE] = running
        logger.info("decoy listening: modbus %s, s7 %s", running.modbus_port or "-", running.s7_port or "-")

    try:
        await run_recording_decoy(runtime.db, tenant_id, config, stop, flush_s=settings.decoy_flush_s, started=started)
    finally:
        runtime.services.pop(DECOY_SERVICE, None)


async def _logged(name: str, work: Coroutine[Any, Any, None]) -> None:
    try:
        await work
    except Exception:  # a service that cannot run must not take the platform down with it
        logger.exception("security %s not running", name)


@asynccontextmanager
async def services_lifespan(runtime: Runtime) -> AsyncIterator[None]:
    """Live monitoring and the decoy, each when the settings switch it on."""
    settings = runtime.settings.security
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    if settings.monitor_interface.strip():
        tasks.append(asyncio.create_task(_logged("monitor", monitoring(runtime, stop)), name="security-monitor"))
    if settings.decoy_enabled:
        tasks.append(asyncio.create_task(_logged("decoy", decoy(runtime, stop)), name="security-decoy"))
    try:
        yield
    finally:
        stop.set()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


@asynccontextmanager
async def security_lifespan(runtime: Runtime) -> AsyncIterator[None]:
    """Everything the context runs beside its API: the delivery retrier, then the switched-on services."""
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(delivery_lifespan(runtime))
        await stack.enter_async_context(services_lifespan(runtime))
        yield
