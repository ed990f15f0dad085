"""What the devices context runs while the platform runs.

Always: the DB-backed device directory (with its periodic check for changes made by other
processes) and dead-letter sink, and the command service (`POST /api/devices/{device}/commands`).

Device connectivity, when switched on (`DevicesSettings.mqtt_enabled`, `polling_enabled`; `iip run`
turns both on, an app built otherwise, as in tests, leaves them off):

- MQTT: the Sparkplug B host application and MQTT ingest (on the embedded broker when no
  `mqtt_url` is configured), and Sparkplug commands over the same broker;
- polling: the supervisor running a `DeviceRunner` per polled device, which Modbus and OPC UA
  commands are written through.

A process with connectivity also carries out desired twin attributes (`TWIN_DESIRED`) and, at
start, marks commands an earlier run left unfinished as failed.

Shared objects are kept in `runtime.services` under `devices.<name>` for the routers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiomqtt

from iip.devices.commands import SERVICE_KEY as COMMANDS_SERVICE
from iip.devices.commands import CommandService
from iip.devices.ingest.mqtt import BROKER_SERVICE, BrokerAddress, free_port, ingest_lifespan
from iip.devices.ingest.sparkplug_host import SparkplugHost
from iip.devices.polling import SERVICE_KEY as POLLING_SERVICE
from iip.devices.polling import PollingSupervisor
from iip.devices.registry_directory import registry_lifespan, registry_services
from iip.devices.service import DeviceRegistry
from iip.kernel.auth import AccessService, Principal, Role
from iip.kernel.errors import Unavailable
from iip.kernel.runtime import Runtime
from iip.kernel.settings import DevicesSettings

logger = logging.getLogger(__name__)

SPARKPLUG_HOST_SERVICE = "devices.sparkplug_host"
PUBLISH_TIMEOUT_S = 5.0


def _switch(settings: DevicesSettings, name: str) -> bool:
    # `mqtt_enabled` / `polling_enabled`: off unless the settings turn them on.
    return bool(getattr(settings, name))


class MqttCommandPublisher:
    """Publishes commands to the broker MQTT ingest uses, on a short connection of its own per command.

    Commands are rare next to telemetry; a connection per command needs no reconnect logic and
    never delays ingest's own session.
    """

    def __init__(self, address: BrokerAddress, client_id: str) -> None:
        self.address = address
        self.client_id = client_id

    async def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        address = self.address
        client = aiomqtt.Client(
            address.host,
            address.port,
            username=address.username,
            password=address.password,
            identifier=f"{self.client_id}-command-{uuid.uuid4().hex[:8]}",
            clean_session=True,
            timeout=PUBLISH_TIMEOUT_S,
            tls_context=ssl.create_default_context() if address.tls else None,
        )
        try:
            async with client:
                await client.publish(topic, payload, qos=qos, retain=retain, timeout=PUBLISH_TIMEOUT_S)
        except aiomqtt.MqttError as err:
            raise Unavailable(
                f"cannot publish to the MQTT broker {address.host}:{address.port}: {err}", code="mqtt_unavailable"
            ) from err


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@asynccontextmanager
async def devices_lifespan(
    runtime: Runtime, *, mqtt: bool | None = None, polling: bool | None = None
) -> AsyncIterator[None]:
    """Run the context's background work; `mqtt` and `polling` override the settings' switches."""
    settings = runtime.settings.devices
    run_mqtt = _switch(settings, "mqtt_enabled") if mqtt is None else mqtt
    run_polling = _switch(settings, "polling_enabled") if polling is None else polling
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(registry_lifespan(runtime))
        registry = registry_services(runtime)
        publisher: MqttCommandPublisher | None = None
        if run_mqtt:
            host = SparkplugHost(
                settings.sparkplug_host_id, registry.directory, _wall_ms, settings.max_future_skew_s * 1000
            )
            runtime.services[SPARKPLUG_HOST_SERVICE] = host
            stack.callback(runtime.services.pop, SPARKPLUG_HOST_SERVICE, None)
            ingest = await stack.enter_async_context(
                ingest_lifespan(runtime, registry.directory, registry.dead_letters, host, blocking_sink=False)
            )
            publisher = MqttCommandPublisher(ingest.address, settings.mqtt_client_id)
        supervisor: PollingSupervisor | None = None
        if run_polling:
            supervisor = PollingSupervisor(runtime.bus, registry.directory, max_batch_points=settings.batch_max_points)
            await supervisor.start()
            stack.push_async_callback(supervisor.stop)
            runtime.services[POLLING_SERVICE] = supervisor
            stack.callback(runtime.services.pop, POLLING_SERVICE, None)
        if settings.simulate_plant:
            await _run_demo_plant(runtime, stack, supervisor)
        commands = CommandService(
            runtime.db,
            runtime.bus,
            default_timeout_s=settings.command_timeout_s,
            runners=supervisor,
            publisher=publisher,
        )
        if run_mqtt or run_polling:
            await asyncio.to_thread(commands.recover)
            await commands.listen_to_desired()
        runtime.services[COMMANDS_SERVICE] = commands
        stack.callback(runtime.services.pop, COMMANDS_SERVICE, None)
        stack.push_async_callback(commands.stop)
        yield


async def _run_demo_plant(
    runtime: Runtime, stack: contextlib.AsyncExitStack, supervisor: PollingSupervisor | None
) -> None:
    """Register the simulated plant in the demo tenant, then start it, so its first births are known."""
    from iip.cli.demo import DEMO_TENANT
    from iip.devices.sim.catalog import PlantConfig, plant_document
    from iip.devices.sim.plant import SimulatedPlant

    for chatty in ("asyncua", "pymodbus"):  # both log every node and request at INFO
        logging.getLogger(chatty).setLevel(logging.WARNING)
    # Free ports chosen now, so the document registered names the ports the plant will use.
    ports: dict[str, Any] = {"pump_port": free_port(), "meter_port": free_port(), "opcua_port": free_port()}
    broker = runtime.services.get(BROKER_SERVICE)  # the embedded one, wherever it had to listen
    if broker is not None:
        ports["broker_url"] = f"mqtt://127.0.0.1:{broker.port}"
    config = PlantConfig.for_platform(runtime.settings.devices, DEMO_TENANT, **ports)
    await asyncio.to_thread(_register_plant, runtime, plant_document(config))
    registry_services(runtime).directory.invalidate()
    plant = await stack.enter_async_context(SimulatedPlant(config))
    if supervisor is not None:
        await supervisor.refresh()
    for part in plant.summary():
        logger.info("simulated plant: %s", part.describe())


def _register_plant(runtime: Runtime, document: dict[str, Any]) -> None:
    from iip.cli.demo import DEMO_TENANT

    with runtime.db.session() as session:
        tenant = AccessService(session).tenant_by_name(DEMO_TENANT)
        actor = Principal("system", "demo-plant", "demo-plant", tenant.id, Role.ADMIN)
        # Re-registering on each start only updates what changed (the ports chosen this time).
        DeviceRegistry(session, actor).import_document(document, tenant_id=tenant.id)
