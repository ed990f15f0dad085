"""The decoy and live monitoring as platform services: switched on by settings, started and stopped
with the app, and feeding the same tables as their CLI commands (indicators; hosts)."""

from __future__ import annotations

import asyncio
import random
import socket
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from iip.kernel.runtime import Runtime
from iip.kernel.settings import SecuritySettings, Settings
from iip.security.lifespans import DECOY_SERVICE, MONITOR_SERVICE
from iip.security.service import SecurityService
from tests.conftest import TenantFixture
from tests.security.conftest import LOOPBACK_CAPTURE, require_raw_sockets
from tests.security.support import engineer, wait_until

API = "/api/security"
SITE = "plant-floor"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def decoy_port() -> int:
    return free_port()


@pytest.fixture
def settings(tmp_path: Path, db_url: str, decoy_port: int, request: pytest.FixtureRequest) -> Settings:
    """The decoy on a free port for tenant A and, when the test asks for it, live monitoring of `lo`."""
    monitored = "monitored" in request.fixturenames
    security = SecuritySettings(
        decoy_enabled=True, decoy_tenant="tenant-a", decoy_seed="plant-a", decoy_host="127.0.0.1",
        decoy_modbus_port=decoy_port, decoy_s7_port=0, decoy_flush_s=0.1,
        monitor_interface="lo" if monitored else "", monitor_tenant="tenant-a", monitor_site=SITE, monitor_flush_s=0.1,
    )  # fmt: skip
    return Settings(
        data_dir=tmp_path / "var", database_url=db_url, log_format="text", log_level="WARNING", security=security
    )


@pytest.fixture
def monitored() -> None:
    require_raw_sockets()


async def visit(port: int) -> None:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, reconnect_delay=0)
    try:
        assert await client.connect()
        assert not (await client.write_register(3, 99)).isError()
    finally:
        client.close()


async def modbus_reads(server_host: str, client_host: str) -> None:
    port = free_port(server_host)
    bits = [SimData(0, values=[False] * 8, datatype=DataType.BITS)]
    registers = [SimData(0, values=list(range(16)), datatype=DataType.REGISTERS)]
    device = SimDevice(id=0, simdata=(bits, bits, registers, registers))
    server = ModbusTcpServer(device, address=(server_host, port))
    await server.serve_forever(background=True)
    client = AsyncModbusTcpClient(server_host, port=port, source_address=(client_host, 0), timeout=2)
    try:
        assert await client.connect()
        assert not (await client.read_holding_registers(2, count=3, device_id=9)).isError()
    finally:
        client.close()
        await server.shutdown()  # type: ignore[no-untyped-call]


def test_the_decoy_runs_with_the_platform_and_records_its_visitors(
    tenant_a: TenantFixture, client: TestClient, runtime: Runtime, decoy_port: int
) -> None:
    wait_until(lambda: DECOY_SERVICE in runtime.services)
    assert runtime.services[DECOY_SERVICE].modbus_port == decoy_port
    asyncio.run(visit(decoy_port))

    def seen() -> list[dict[str, object]]:
        return client.get(f"{API}/indicators", headers=tenant_a.headers()).json()  # type: ignore[no-any-return]

    wait_until(lambda: bool(seen()) and seen()[0]["counts"].get("write") == 1)  # type: ignore[union-attr]
    (indicator,) = seen()
    assert (indicator["address"], indicator["protocols"], indicator["notable"]) == ("127.0.0.1", ["modbus"], ["write"])


@LOOPBACK_CAPTURE
def test_live_monitoring_runs_with_the_platform_and_keeps_the_inventory(
    tenant_a: TenantFixture, monitored: None, client: TestClient, runtime: Runtime
) -> None:
    wait_until(lambda: MONITOR_SERVICE in runtime.services)
    net = f"127.{random.randint(64, 250)}.{random.randint(1, 250)}"  # noqa: S311 - not for secrets
    asyncio.run(modbus_reads(f"{net}.1", f"{net}.2"))

    def server_row() -> list[dict[str, object]]:
        found = client.get(f"{API}/assets", params={"q": f"{net}.1", "site": SITE}, headers=tenant_a.headers())
        return found.json()  # type: ignore[no-any-return]

    wait_until(lambda: bool(server_row()) and server_row()[0]["unit_ids"] == [9])
    (server,) = server_row()
    assert (server["source"], server["protocols"]) == ("observed", ["modbus"])
    monitor = runtime.services[MONITOR_SERVICE]
    assert monitor.state.baseline_version is None  # nothing learned for the site: inventory only
    with runtime.db.session() as session:
        assert SecurityService(session, engineer(tenant_a)).list_alerts() == []


def test_services_need_their_tenant() -> None:
    with pytest.raises(ValidationError, match="monitor_tenant"):
        SecuritySettings(monitor_interface="eth1")
    with pytest.raises(ValidationError, match="decoy_seed"):
        SecuritySettings(decoy_enabled=True, decoy_tenant="a")
