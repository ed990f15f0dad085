"""The tenant's decoy PLC with a real Modbus client (pymodbus) as the visitor: what it did becomes
the tenant's honeypot indicators, and the overview counts it."""

from __future__ import annotations

import asyncio

from pymodbus.client import AsyncModbusTcpClient

from iip.kernel.db import Database
from iip.security.decoy import run_recording_decoy
from iip.security.honeypot.server import HoneypotConfig, RunningHoneypot
from iip.security.service import SecurityService
from tests.conftest import TenantFixture
from tests.security.support import engineer


async def visit(port: int) -> None:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0)
    await client.connect()
    try:
        assert not (await client.read_holding_registers(0, count=10)).isError()
        assert not (await client.write_register(3, 4321)).isError()
    finally:
        client.close()


def test_visits_become_indicators(migrated_db: Database, tenant_a: TenantFixture) -> None:
    config = HoneypotConfig(seed="plant-a", host="127.0.0.1", modbus_port=0, s7_port=None, idle_timeout=5)

    async def scenario() -> int:
        stop, listening = asyncio.Event(), asyncio.Event()
        ports: list[int] = []

        def started(decoy: RunningHoneypot) -> None:
            assert decoy.modbus_port is not None
            ports.append(decoy.modbus_port)
            listening.set()

        task = asyncio.create_task(
            run_recording_decoy(migrated_db, tenant_a.id, config, stop, flush_s=0.2, started=started)
        )
        await asyncio.wait_for(listening.wait(), timeout=10)
        await visit(ports[0])
        await asyncio.sleep(0.1)  # the decoy reports the closed connection
        stop.set()
        return (await task).recorded

    recorded = asyncio.run(scenario())
    assert recorded >= 3  # connected, two requests (and closed)
    with migrated_db.session() as session:
        service = SecurityService(session, engineer(tenant_a))
        (indicator,) = service.list_indicators()
        awareness = service.awareness()
    assert indicator.address == "127.0.0.1"
    assert indicator.protocols == ["modbus"]
    assert indicator.notable == ["write"]
    assert indicator.counts["connected"] == 1
    assert indicator.counts["write"] == 1
    assert indicator.counts["read_holding_registers"] == 1
    assert awareness.honeypot_24h == 1
