"""Commands end to end on SQLite and PostgreSQL: the API, a real pymodbus server and asyncua server the
platform polls, Sparkplug DCMDs over the real Mosquitto to a small edge node, desired twin
attributes, the audit log, and what a restart leaves.

The app runs in the test's event loop (httpx over ASGI), beside the protocol servers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
import pytest_asyncio
from asyncua import ua
from asyncua.server.server import Server
from fastapi import FastAPI
from paho.mqtt.enums import CallbackAPIVersion
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from sqlalchemy import select

from iip.api.app import create_app
from iip.devices.codecs.sparkplug import DataType, Metric, Payload, decode_payload, encode_payload
from iip.devices.command_router import router as command_router
from iip.devices.commands import RESTART_REASON, SERVICE_KEY, CommandService
from iip.devices.ingest.mqtt import SERVICE_KEY as INGEST_SERVICE
from iip.devices.ingest.mqtt import MqttIngest
from iip.devices.lifespan import devices_lifespan
from iip.devices.models import Command
from iip.devices.polling import SERVICE_KEY as POLLING_SERVICE
from iip.devices.polling import PollingSupervisor
from iip.kernel.audit import AuditEntry
from iip.kernel.auth import ApiKey, Role, new_id
from iip.kernel.db import Database, utcnow
from iip.kernel.runtime import Runtime
from iip.kernel.settings import Settings
from iip.migrations.runner import upgrade
from iip.telemetry.public import TWIN_DESIRED, DesiredChange
from tests.api.support import api_routes, assert_problem
from tests.conftest import BACKENDS, TenantFixture, database_url, make_tenant
from tests.devices.test_polling import HOLDING, WAIT, Collector, Written, modbus_server, plc_profile, until
from tests.services import MQTT_HOST, MQTT_PORT, require_service

POST_COMMAND = "POST /api/devices/{device}/commands"
# One event loop for the module: the running platform and the OPC UA server are shared by its tests.
pytestmark = pytest.mark.asyncio(loop_scope="module")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


# --- the platform, with device connectivity on


def connected_app(runtime: Runtime, *, mqtt: bool = False, polling: bool = True) -> FastAPI:
    """The app, with the devices context's lifespan running what the test asks for."""
    lifespan = functools.partial(devices_lifespan, mqtt=mqtt, polling=polling)
    runtime.modules = tuple(
        dataclasses.replace(m, lifespan=lifespan) if m.name == "devices" else m for m in runtime.modules
    )
    app = create_app(runtime=runtime, configure_logs=False)
    if not any(info.path == "/api/commands/{command_id}" for info in api_routes(app)):
        app.include_router(command_router)
    return app


@dataclass
class Platform:
    client: httpx.AsyncClient
    runtime: Runtime
    tenant: TenantFixture

    def headers(self, role: Role = Role.ENGINEER) -> dict[str, str]:
        return self.tenant.headers(role)

    async def ok(self, method: str, path: str, status: int = 200, role: Role = Role.ENGINEER, **kwargs: Any) -> Any:
        response = await self.client.request(method, path, headers=self.headers(role), **kwargs)
        assert response.status_code == status, response.text
        return response.json() if response.content else None

    @property
    def supervisor(self) -> PollingSupervisor:
        supervisor = self.runtime.services[POLLING_SERVICE]
        assert isinstance(supervisor, PollingSupervisor)
        return supervisor

    async def command(self, command_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.ok("GET", f"/api/commands/{command_id}", role=Role.VIEWER)
        return result

    def audit(self, object_id: str) -> list[AuditEntry]:
        with self.runtime.db.session() as session:
            query = select(AuditEntry).where(AuditEntry.object_id == object_id).order_by(AuditEntry.seq)
            return list(session.scalars(query))


@asynccontextmanager
async def running(runtime: Runtime, *, mqtt: bool = False, polling: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """The app started (its lifespan entered) with a client for it."""
    app = connected_app(runtime, mqtt=mqtt, polling=polling)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://iip.test") as client:
            yield client


@dataclass(frozen=True)
class Shared:
    client: httpx.AsyncClient
    runtime: Runtime


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=BACKENDS)
async def shared(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Shared]:
    """One running platform per backend for the module (polling on); tests use tenants of their own."""
    folder = tmp_path_factory.mktemp("commands")
    with database_url(str(request.param), folder) as url:
        settings = Settings(data_dir=folder / "var", database_url=url, log_format="text", log_level="WARNING")
        db = Database(settings.effective_database_url)
        upgrade(db)
        runtime = Runtime.build(settings)
        runtime.db.dispose()
        runtime.db = db
        try:
            async with running(runtime) as client:
                yield Shared(client, runtime)
        finally:
            db.dispose()


@pytest_asyncio.fixture(loop_scope="module")
async def platform(shared: Shared) -> Platform:
    tenant = await asyncio.to_thread(make_tenant, shared.runtime.db, unique("t-"))
    return Platform(shared.client, shared.runtime, tenant)


@asynccontextmanager
async def another_process(
    platform: Platform, *, mqtt: bool = False, polling: bool = True, **devices: Any
) -> AsyncIterator[Platform]:
    """A second platform process on the same database, with other devices settings."""
    settings = platform.runtime.settings
    settings = settings.model_copy(update={"devices": settings.devices.model_copy(update=devices)})
    runtime = Runtime.build(settings)
    try:
        async with running(runtime, mqtt=mqtt, polling=polling) as client:
            yield Platform(client, runtime, platform.tenant)
    finally:
        runtime.db.dispose()


async def register_plc(platform: Platform, port: int, key: str = "plc-1") -> None:
    response = await platform.client.get("/api/device-profiles/plc", headers=platform.headers())
    if response.status_code == 404:
        await platform.ok("POST", "/api/device-profiles", 201, json=plc_profile())
    connection = {"host": "127.0.0.1", "port": port, "timeout_s": 2}
    await platform.ok("POST", "/api/devices", 201, json={"key": key, "profile": "plc", "connection": connection})
    await platform.supervisor.refresh()
    runner = platform.supervisor.runner(platform.tenant.id, key)
    assert runner is not None
    await until(lambda: runner.online is True, f"{key} polled")


async def holding(port: int, address: int, count: int = 1) -> list[int]:
    """What the server holds, read by a client of the test's own."""
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, reconnect_delay=0)
    try:
        assert await client.connect()
        response = await client.read_holding_registers(address, count=count, device_id=1)
        assert not response.isError()
        return list(response.registers)
    finally:
        client.close()


# --- Modbus


async def test_modbus_command_is_written_acknowledged_recorded_and_audited(platform: Platform) -> None:
    port = free_port()
    async with modbus_server(port):
        await register_plc(platform, port)
        sent = await platform.ok("POST", "/api/devices/plc-1/commands", json={"metric": "setpoint", "value": 42.5})
        assert (sent["status"], sent["device"], sent["metric"], sent["value"]) == (
            "acknowledged",
            "plc-1",
            "setpoint",
            42.5,
        )
        assert (sent["protocol"], sent["source"], sent["requested_by"]) == ("modbus", "api", "apikey:engineer")
        assert sent["timeout_s"] == platform.runtime.settings.devices.command_timeout_s
        assert sent["finished_at"] is not None
        assert await holding(port, 0) == [425]  # scale 0.1 inverted, in the device's register

        by_admin = await platform.ok(
            "POST",
            "/api/devices/plc-1/commands",
            role=Role.ADMIN,
            json={"metric": "pump", "value": False, "timeout_s": 5},
        )
        assert (by_admin["status"], by_admin["timeout_s"], by_admin["requested_by"]) == (
            "acknowledged",
            5.0,
            "apikey:admin",
        )

    assert await platform.command(sent["id"]) == sent
    history = await platform.ok("GET", "/api/devices/plc-1/commands", role=Role.VIEWER)
    assert [c["id"] for c in history] == [by_admin["id"], sent["id"]]  # newest first
    assert await platform.ok("GET", "/api/devices/plc-1/commands?status=failed", role=Role.VIEWER) == []
    (entry,) = platform.audit(sent["id"])
    assert (entry.action, entry.object_type, entry.outcome) == (POST_COMMAND, "device_command", "success")
    assert (entry.principal, entry.tenant_id) == ("apikey:engineer", platform.tenant.id)


async def test_refused_commands_write_nothing_and_record_nothing(platform: Platform) -> None:
    port = free_port()
    async with modbus_server(port):
        await register_plc(platform, port)
        cases = [
            ({"metric": "temperature", "value": 1}, 422, "metric_not_writable"),
            ({"metric": "nope", "value": 1}, 422, "unknown_metric"),
            ({"metric": "setpoint", "value": "hot"}, 422, "invalid_value"),
            ({"metric": "limit", "value": 1.5}, 422, "invalid_value"),
            ({"metric": "limit", "value": 40_000}, 422, "value_out_of_range"),  # int16
            ({"metric": "setpoint", "value": None}, 422, "invalid"),
            ({"metric": "setpoint", "value": 1, "timeout_s": 0}, 422, "invalid"),
            ({"metric": "setpoint", "value": 1, "extra": 1}, 422, "invalid"),
        ]
        for body, status, code in cases:
            response = await platform.client.post("/api/devices/plc-1/commands", json=body, headers=platform.headers())
            assert_problem(response, status, code)
        response = await platform.client.post(
            "/api/devices/nope/commands", json={"metric": "setpoint", "value": 1}, headers=platform.headers()
        )
        assert_problem(response, 404, "device_not_found")
        assert await holding(port, 0, 3) == HOLDING[:3]
        # The device refuses what its register cannot hold (uint16 after scaling): recorded as failed.
        response = await platform.client.post(
            "/api/devices/plc-1/commands", json={"metric": "setpoint", "value": 7000}, headers=platform.headers()
        )
        refused = assert_problem(response, 422, "modbus_value_out_of_range")
    failed = await platform.command(refused["command_id"])
    assert (failed["status"], failed["value"]) == ("failed", 7000)
    assert "out of range for uint16" in failed["detail"]
    assert [c["id"] for c in await platform.ok("GET", "/api/devices/plc-1/commands", role=Role.VIEWER)] == [
        failed["id"]
    ]
    (entry,) = platform.audit(failed["id"])
    assert entry.outcome == "failure"


async def test_a_device_that_does_not_answer_writes_times_out_with_504(platform: Platform) -> None:
    port = free_port()
    release = asyncio.Event()

    async def hang_on_writes(
        function_code: int, start: int, address: int, count: int, registers: list[int], values: Written
    ) -> ExcCodes | None:
        del function_code, start, address, count, registers
        if values is not None:
            await release.wait()
        return None

    async with modbus_server(port, hang_on_writes):
        try:
            await register_plc(platform, port)
            body = {"metric": "setpoint", "value": 30, "timeout_s": 0.3}
            response = await platform.client.post("/api/devices/plc-1/commands", json=body, headers=platform.headers())
            problem = assert_problem(response, 504, "command_timeout")
            assert "did not confirm 'setpoint' within 0.3 s" in problem["detail"]
        finally:
            release.set()
    command = await platform.command(problem["command_id"])
    assert (command["status"], command["timeout_s"]) == ("timed_out", 0.3)
    assert "did not confirm" in command["detail"]
    (entry,) = platform.audit(command["id"])
    assert (entry.action, entry.outcome, entry.detail) == (POST_COMMAND, "failure", "status=504")


async def test_operators_and_viewers_may_not_send_commands(platform: Platform) -> None:
    port = free_port()
    async with modbus_server(port):
        await register_plc(platform, port)
        for role in (Role.OPERATOR, Role.VIEWER, Role.AUDITOR):
            response = await platform.client.post(
                "/api/devices/plc-1/commands", json={"metric": "setpoint", "value": 1}, headers=platform.headers(role)
            )
            assert_problem(response, 403, "forbidden")
        response = await platform.client.post("/api/devices/plc-1/commands", json={"metric": "setpoint", "value": 1})
        assert_problem(response, 401, "unauthenticated")
        assert await holding(port, 0) == HOLDING[:1]
    assert await platform.ok("GET", "/api/devices/plc-1/commands", role=Role.VIEWER) == []
    with platform.runtime.db.session() as session:
        mine = (AuditEntry.tenant_id == platform.tenant.id) | (AuditEntry.principal == "anonymous")
        denied = session.scalars(select(AuditEntry).where(AuditEntry.action == POST_COMMAND, mine)).all()
    assert sorted((e.principal, e.outcome) for e in denied) == [
        ("anonymous", "denied"),
        ("apikey:auditor", "denied"),
        ("apikey:operator", "denied"),
        ("apikey:viewer", "denied"),
    ]


async def test_other_tenants_cannot_see_or_command_a_device(platform: Platform) -> None:
    tenant_b = await asyncio.to_thread(make_tenant, platform.runtime.db, unique("t-"))
    port = free_port()
    async with modbus_server(port):
        await register_plc(platform, port)
        sent = await platform.ok("POST", "/api/devices/plc-1/commands", json={"metric": "setpoint", "value": 1})
        other = tenant_b.headers(Role.ADMIN)
        for response in (
            await platform.client.post(
                "/api/devices/plc-1/commands", json={"metric": "setpoint", "value": 2}, headers=other
            ),
            await platform.client.get(f"/api/commands/{sent['id']}", headers=other),
            await platform.client.get("/api/devices/plc-1/commands", headers=other),
        ):
            assert response.status_code == 404, response.text
        assert await holding(port, 0) == [10]


# --- OPC UA


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def opcua_server() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    server = Server()
    await server.init()
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/iip/"
    server.set_endpoint(endpoint)
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    namespace = await server.register_namespace("urn:iip:test:commands")
    objects = await server.nodes.objects.add_object(ua.NodeId(ua.String("Oven"), ua.Int16(namespace)), "Oven")
    nodes = {}
    for name, value, variant, writable in [
        ("Oven.Setpoint", 180.0, ua.VariantType.Double, True),
        ("Oven.Locked", 5.0, ua.VariantType.Double, False),
        ("Oven.Temperature", 175.0, ua.VariantType.Double, False),
    ]:
        node = await objects.add_variable(
            ua.NodeId(ua.String(name), ua.Int16(namespace)), name, ua.Variant(value, variant)
        )
        if writable:
            await node.set_writable()
        nodes[name] = (node, f"ns={namespace};s={name}")
    await server.start()
    try:
        yield endpoint, nodes
    finally:
        await server.stop()


async def test_opcua_write_through_the_polled_server(
    platform: Platform, opcua_server: tuple[str, dict[str, Any]]
) -> None:
    endpoint, nodes = opcua_server
    metrics = [
        {"name": "setpoint", "writable": True, "opcua": {"node_id": nodes["Oven.Setpoint"][1]}},
        {"name": "locked", "writable": True, "opcua": {"node_id": nodes["Oven.Locked"][1]}},
        {"name": "temperature", "opcua": {"node_id": nodes["Oven.Temperature"][1]}},
    ]
    await platform.ok(
        "POST", "/api/device-profiles", 201, json={"name": "oven", "protocol": "opcua", "metrics": metrics}
    )
    device = {"key": "oven-1", "profile": "oven", "connection": {"endpoint": endpoint, "timeout_s": 2}}
    await platform.ok("POST", "/api/devices", 201, json=device)
    await platform.supervisor.refresh()
    runner = platform.supervisor.runner(platform.tenant.id, "oven-1")
    assert runner is not None
    await until(lambda: runner.online is True, "the OPC UA subscription")

    sent = await platform.ok("POST", "/api/devices/oven-1/commands", json={"metric": "setpoint", "value": 210.5})
    assert (sent["status"], sent["protocol"]) == ("acknowledged", "opcua")
    assert await nodes["Oven.Setpoint"][0].read_value() == 210.5

    response = await platform.client.post(
        "/api/devices/oven-1/commands", json={"metric": "locked", "value": 1.0}, headers=platform.headers()
    )
    refused = assert_problem(response, 422, "opcua_status")  # the server refuses: not writable there
    assert (await platform.command(refused["command_id"]))["status"] == "failed"
    assert await nodes["Oven.Locked"][0].read_value() == 5.0


# --- Sparkplug B over the real Mosquitto


class EdgeNode:
    """A small Sparkplug B edge node with one device: it applies DCMDs and reports the new value in DDATA."""

    def __init__(self, group: str, node: str, device: str, metric: str, datatype: DataType, value: float) -> None:
        self.group, self.node, self.device = group, node, device
        self.metric, self.datatype, self.value = metric, datatype, value
        self.apply = True
        self.commands: list[tuple[str, Payload]] = []
        self._seq = 0
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("edge-"))
        self.client.on_message = self._on_message

    def topic(self, message_type: str, device: bool = True) -> str:
        base = f"spBv1.0/{self.group}/{message_type}/{self.node}"
        return f"{base}/{self.device}" if device else base

    def _publish(self, message_type: str, metrics: tuple[Metric, ...], device: bool = True) -> None:
        with self._lock:
            seq, self._seq = self._seq, (self._seq + 1) % 256
        now = int(time.time() * 1000)
        payload = encode_payload(Payload(timestamp=now, seq=seq, metrics=metrics))
        self.client.publish(self.topic(message_type, device), payload, qos=1).wait_for_publish(WAIT)

    def _value(self) -> Metric:
        return Metric(name=self.metric, timestamp=int(time.time() * 1000), datatype=self.datatype, value=self.value)

    def start(self) -> None:
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect(MQTT_HOST, MQTT_PORT)
        self.client.loop_start()
        self.client.subscribe(self.topic("DCMD"), qos=0)
        assert subscribed.wait(WAIT)
        self._publish("NBIRTH", (Metric(name="bdSeq", datatype=DataType.INT64, value=0),), device=False)
        self._publish("DBIRTH", (self._value(),))

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        payload = decode_payload(bytes(message.payload))
        self.commands.append((message.topic, payload))
        if not self.apply:
            return
        for metric in payload.metrics:
            if metric.name == self.metric and isinstance(metric.value, int | float):
                self.value = float(metric.value)
                threading.Thread(target=self._publish, args=("DDATA", (self._value(),))).start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def clean_broker(client_id: str, host_id: str) -> None:
    """Remove what a test leaves on the shared broker: the platform's session and its retained STATE."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    with suppress(OSError):
        client.connect(MQTT_HOST, MQTT_PORT)
        client.loop_start()
        client.publish(f"spBv1.0/STATE/{host_id}", b"", qos=1, retain=True).wait_for_publish(WAIT)
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def broker() -> Iterator[dict[str, Any]]:
    """Devices settings of a platform on the shared Mosquitto, with ids of its own (cleaned up after)."""
    require_service("Mosquitto", MQTT_HOST, MQTT_PORT)
    client_id, host_id = unique("iip-test-"), unique("host")
    yield {
        "mqtt_url": f"mqtt://{MQTT_HOST}:{MQTT_PORT}",
        "mqtt_client_id": client_id,
        "sparkplug_host_id": host_id,
        "batch_max_ms": 10,
    }
    clean_broker(client_id, host_id)


async def test_sparkplug_dcmd_is_acknowledged_by_the_devices_report(platform: Platform, broker: dict[str, Any]) -> None:
    group, node = unique("g"), unique("n")
    edge = EdgeNode(group, node, "line-1", "Line/Speed", DataType.FLOAT, 10.0)
    async with another_process(platform, mqtt=True, polling=False, **broker) as process:
        ingest = process.runtime.services[INGEST_SERVICE]
        assert isinstance(ingest, MqttIngest)
        await ingest.wait_connected(WAIT)
        collector = Collector()
        await collector.attach(process.runtime.bus)
        profile = {
            "name": "line",
            "protocol": "sparkplug",
            "metrics": [
                {"name": "speed", "data_type": "float32", "writable": True, "sparkplug": {"metric": "Line/Speed"}},
            ],
        }
        await process.ok("POST", "/api/device-profiles", 201, json=profile)
        sparkplug = {"group_id": group, "edge_node_id": node, "device_id": "line-1"}
        await process.ok("POST", "/api/devices", 201, json={"key": "line-1", "profile": "line", "sparkplug": sparkplug})
        await asyncio.to_thread(edge.start)
        try:
            await until(lambda: bool(collector.points(process.tenant.id, "line-1")), "the birth's point")

            sent = await process.ok("POST", "/api/devices/line-1/commands", json={"metric": "speed", "value": 42.5})
            assert (sent["status"], sent["protocol"]) == ("acknowledged", "sparkplug")
            ((topic, payload),) = edge.commands
            assert topic == f"spBv1.0/{group}/DCMD/{node}/line-1"
            (metric,) = payload.metrics
            assert (metric.name, metric.datatype, metric.value) == ("Line/Speed", DataType.FLOAT, 42.5)
            assert edge.value == 42.5

            # Sparkplug has no command acknowledgement: a device that does not report the value times out.
            edge.apply = False
            body = {"metric": "speed", "value": 7, "timeout_s": 0.5}
            response = await process.client.post("/api/devices/line-1/commands", json=body, headers=process.headers())
            problem = assert_problem(response, 504, "command_timeout")
            assert len(edge.commands) == 2
            command = await process.command(problem["command_id"])
            assert command["status"] == "timed_out"
            assert "did not report 'speed' = 7" in command["detail"]
        finally:
            await asyncio.to_thread(edge.stop)


# --- desired twin attributes


async def test_a_desired_twin_attribute_becomes_an_audited_command(platform: Platform) -> None:
    port = free_port()
    async with modbus_server(port):
        await register_plc(platform, port)

        async def twin_exists() -> bool:
            response = await platform.client.get("/api/devices/plc-1/twin", headers=platform.headers())
            return response.status_code == 200

        deadline = time.monotonic() + WAIT
        while not await twin_exists():
            assert time.monotonic() < deadline, "the twin never appeared"
            await asyncio.sleep(0.05)
        accepted = await platform.ok("PUT", "/api/devices/plc-1/twin/attributes/desired/setpoint", 202, json=30)
        command_id = accepted["request_id"]

        async def finished() -> dict[str, Any]:
            deadline = time.monotonic() + WAIT
            while True:
                response = await platform.client.get(f"/api/commands/{command_id}", headers=platform.headers())
                if response.status_code == 200 and response.json()["status"] not in ("pending", "sent"):
                    result: dict[str, Any] = response.json()
                    return result
                assert time.monotonic() < deadline, "the command never finished"
                await asyncio.sleep(0.05)

        command = await finished()
        assert (command["status"], command["source"], command["value"]) == ("acknowledged", "twin", 30)
        assert command["requested_by"] == "apikey:engineer"
        assert await holding(port, 0) == [300]
    await until(lambda: bool(platform.audit(command_id)), "the audit entry")
    (entry,) = platform.audit(command_id)
    assert (entry.principal, entry.tenant_id, entry.outcome) == ("apikey:engineer", platform.tenant.id, "success")
    assert (entry.object_type, entry.source) == ("device_command", "twin")
    assert "device=plc-1 metric=setpoint" in entry.detail


async def test_a_desired_change_by_a_principal_without_write_permission_is_refused(platform: Platform) -> None:
    with platform.runtime.db.session() as session:
        operator = session.scalar(
            select(ApiKey.id).where(ApiKey.tenant_id == platform.tenant.id, ApiKey.name == Role.OPERATOR.value)
        )
    assert operator is not None
    change = DesiredChange(
        tenant_id=platform.tenant.id,
        device="plc-1",
        name="setpoint",
        value=5,
        requested_by=operator,
        request_id=new_id(),
    )
    await platform.runtime.bus.publish(TWIN_DESIRED, change)
    await platform.runtime.bus.publish(TWIN_DESIRED, change)  # redelivered: one command, one entry
    await until(lambda: bool(platform.audit(change.request_id)), "the audit entry")
    command = await platform.command(change.request_id)
    assert (command["status"], command["source"], command["requested_by"]) == ("failed", "twin", "apikey:operator")
    assert "lacks permission 'devices.write'" in command["detail"]
    (entry,) = platform.audit(change.request_id)
    assert (entry.principal, entry.outcome) == ("apikey:operator", "denied")


# --- what a restart leaves, and a process without connectivity


def dangling(runtime: Runtime, tenant: TenantFixture) -> dict[str, str]:
    """Commands as a crashed process leaves them, by id: status."""
    rows = {new_id(): status for status in ("pending", "sent", "acknowledged")}
    with runtime.db.session() as session:
        for command_id, status in rows.items():
            session.add(
                Command(
                    id=command_id,
                    tenant_id=tenant.id,
                    device="plc-1",
                    metric="setpoint",
                    value=1,
                    protocol="modbus",
                    source="api",
                    requested_by="apikey:engineer",
                    requested_at=utcnow() - dt.timedelta(seconds=5),
                    timeout_ms=10_000,
                    status=status,
                    detail="",
                    finished_at=utcnow() if status == "acknowledged" else None,
                )
            )
    return rows


async def test_only_a_process_with_connectivity_fails_what_a_restart_left(platform: Platform) -> None:
    rows = dangling(platform.runtime, platform.tenant)
    async with another_process(platform, polling=False) as process:
        services = process.runtime.services
        assert POLLING_SERVICE not in services
        assert INGEST_SERVICE not in services
        assert isinstance(services[SERVICE_KEY], CommandService)
        # Without connectivity another process may be carrying these out: they are left alone.
        assert [(await process.command(c))["status"] for c in rows] == list(rows.values())
        await process.ok("POST", "/api/device-profiles", 201, json=plc_profile())
        device = {"key": "plc-1", "profile": "plc", "connection": {"host": "127.0.0.1"}}
        await process.ok("POST", "/api/devices", 201, json=device)
        response = await process.client.post(
            "/api/devices/plc-1/commands", json={"metric": "setpoint", "value": 1}, headers=process.headers()
        )
        problem = assert_problem(response, 503, "device_not_connected")
        assert (await process.command(problem["command_id"]))["status"] == "failed"
    assert SERVICE_KEY not in services

    async with another_process(platform, polling=True) as process:  # a restart
        after = {command_id: await process.command(command_id) for command_id in rows}
    for command_id, before in rows.items():
        command = after[command_id]
        if before == "acknowledged":
            assert (command["status"], command["detail"]) == ("acknowledged", "")
        else:
            assert (command["status"], command["detail"]) == ("failed", RESTART_REASON)
            assert command["finished_at"] is not None
