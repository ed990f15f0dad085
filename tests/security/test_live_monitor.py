"""Live monitoring on the loopback interface with a real pymodbus client and server: a baseline is
learned from the pair's reads, then the monitor stores the hosts it sees and, when the pair that
only ever read writes, an `unauthorized_write` alert, published as an alarm event, while it runs.

The pair uses addresses of its own in 127.0.0.0/8, so other traffic on `lo` never mixes with it.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from sqlalchemy import select

from iip.alarms.public import AlarmEvent
from iip.kernel.db import Database
from iip.security import ingest
from iip.security.baseline import BaselineLearner
from iip.security.live import LiveCapture
from iip.security.models import Alert, Asset
from iip.security.monitor import LiveMonitor
from iip.security.protocols.base import IcsMessage, PacketInfo
from iip.security.service import SecurityService
from tests.conftest import TenantFixture
from tests.security.conftest import LOOPBACK_CAPTURE, require_raw_sockets
from tests.security.support import engineer

pytestmark = LOOPBACK_CAPTURE

UNIT = 77
WRITTEN = 17  # the holding register the pair writes once monitored


@pytest.fixture(autouse=True)
def _raw_sockets_allowed() -> None:
    require_raw_sockets()


@dataclass
class Pair:
    server: str
    client: str
    port: int

    def client_for(self) -> AsyncModbusTcpClient:
        return AsyncModbusTcpClient(
            self.server, port=self.port, source_address=(self.client, 0), timeout=2, reconnect_delay=0
        )

    def ours(self, packet: PacketInfo) -> bool:
        return {packet.source.host, packet.destination.host} == {self.server, self.client}


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    """A pymodbus server on an address of its own, and the address its client speaks from."""
    net = f"127.{random.randint(64, 250)}.{random.randint(1, 250)}"  # noqa: S311 - not for secrets
    server_host = f"{net}.1"
    port = free_port(server_host)
    device = SimDevice(
        id=0,
        simdata=(
            [SimData(0, values=[False] * 8, datatype=DataType.BITS)],
            [SimData(0, values=[False] * 8, datatype=DataType.BITS)],
            [SimData(0, values=[100 + n for n in range(32)], datatype=DataType.REGISTERS)],
            [SimData(0, values=[0] * 8, datatype=DataType.REGISTERS)],
        ),
    )
    server = ModbusTcpServer(device, address=(server_host, port))
    await server.serve_forever(background=True)
    try:
        yield Pair(server_host, f"{net}.2", port)
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]


async def reads(pair: Pair, times: int) -> None:
    client = pair.client_for()
    try:
        assert await client.connect()
        for n in range(times):
            answer = await client.read_holding_registers(n % 4, count=4, device_id=UNIT)
            assert not answer.isError()
    finally:
        client.close()


async def write(pair: Pair) -> None:
    client = pair.client_for()
    try:
        assert await client.connect()
        assert not (await client.write_register(WRITTEN, 4321, device_id=UNIT)).isError()
    finally:
        client.close()


async def eventually(check: Callable[[], bool], within_s: float = 15.0) -> None:
    for _ in range(int(within_s * 20)):
        if await asyncio.to_thread(check):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


@dataclass
class Heard:
    events: list[AlarmEvent] = field(default_factory=list)

    async def __call__(self, events: Sequence[AlarmEvent]) -> None:
        self.events.extend(events)


async def learn_baseline(db: Database, tenant: TenantFixture, pair: Pair, site: str) -> None:
    """A baseline of the pair's reads, learned from the wire and stored as the site's active one."""
    learner = BaselineLearner()
    responses: list[IcsMessage] = []

    def observe(packet: PacketInfo, messages: list[IcsMessage]) -> None:
        if pair.ours(packet):
            learner.observe(packet, messages)
            responses.extend(m for m in messages if m.source.port == pair.port)

    capture = LiveCapture("lo", observe, poll_interval=0.05)
    capture.start()
    try:
        await reads(pair, 6)
        await eventually(lambda: len(responses) >= 6)
    finally:
        capture.stop()
    with db.session() as session:
        SecurityService(session, engineer(tenant)).record_baseline(tenant.id, site, ingest.learned(learner.baseline()))


def stored_alerts(db: Database, tenant: TenantFixture, pair: Pair) -> list[Alert]:
    with db.session() as session:
        query = select(Alert).where(Alert.tenant_id == tenant.id, Alert.source == pair.client)
        rows = list(session.scalars(query))
        session.expunge_all()
        return rows


def stored_server(db: Database, tenant: TenantFixture, pair: Pair, site: str) -> Asset | None:
    with db.session() as session:
        row = session.scalar(
            select(Asset).where(Asset.tenant_id == tenant.id, Asset.site == site, Asset.address == pair.server)
        )
        session.expunge_all()
        return row


async def test_a_write_from_a_pair_that_only_read_is_stored_while_the_monitor_runs(
    migrated_db: Database, tenant_a: TenantFixture, pair: Pair
) -> None:
    site = "line-3"
    await learn_baseline(migrated_db, tenant_a, pair, site)
    heard = Heard()
    monitor = LiveMonitor(migrated_db, tenant_a.id, site, publish=heard, flush_s=0.1)
    stop, running = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(monitor.run("lo", stop, poll_interval=0.05, started=lambda _: running.set()))
    try:
        await asyncio.wait_for(running.wait(), timeout=10)
        assert monitor.state.baseline_version == 1
        # Normal reads: the server becomes an inventory asset; nothing the baseline did not show.
        await reads(pair, 3)
        await eventually(lambda: (row := stored_server(migrated_db, tenant_a, pair, site)) is not None
                         and row.protocols == ["modbus"])  # fmt: skip
        server = stored_server(migrated_db, tenant_a, pair, site)
        assert server is not None
        assert (server.source, server.unit_ids) == ("observed", [UNIT])
        assert stored_alerts(migrated_db, tenant_a, pair) == []
        # The pair writes: an alert is stored and published while the monitor is still running.
        await write(pair)
        await eventually(
            lambda: any(a.kind == "unauthorized_write" for a in stored_alerts(migrated_db, tenant_a, pair))
        )
        assert not task.done()
    finally:
        stop.set()
        state = await asyncio.wait_for(task, timeout=10)
    assert state.error == ""
    alert = next(a for a in stored_alerts(migrated_db, tenant_a, pair) if a.kind == "unauthorized_write")
    assert (alert.source, alert.destination, alert.protocol, alert.status) == (
        pair.client,
        pair.server,
        "modbus",
        "open",
    )
    assert alert.count == 1
    assert alert.evidence["details"]["target"] == [f"{UNIT}/holding_registers/{WRITTEN}-{WRITTEN}"]
    assert alert.evidence["raw"]
    assert alert.evidence["frames"]
    published = [e for e in heard.events if e.details["alert_id"] == alert.id]
    assert [(e.kind, e.subject, e.tenant_id) for e in published] == [
        ("ics.unauthorized_write", pair.server, tenant_a.id)
    ]
    assert monitor.summary.messages["modbus"] >= 4  # requests and responses of the reads and the write


async def test_without_a_baseline_the_monitor_keeps_the_inventory_and_raises_nothing(
    migrated_db: Database, tenant_a: TenantFixture, pair: Pair
) -> None:
    monitor = LiveMonitor(migrated_db, tenant_a.id, "unlearned", flush_s=0.1)
    stop, running = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(monitor.run("lo", stop, poll_interval=0.05, started=lambda _: running.set()))
    try:
        await asyncio.wait_for(running.wait(), timeout=10)
        await write(pair)
        await eventually(lambda: stored_server(migrated_db, tenant_a, pair, "unlearned") is not None)
    finally:
        stop.set()
        state = await asyncio.wait_for(task, timeout=10)
    assert state.baseline_version is None
    assert stored_alerts(migrated_db, tenant_a, pair) == []


async def test_an_interface_that_cannot_be_opened_is_an_error(migrated_db: Database, tenant_a: TenantFixture) -> None:
    monitor = LiveMonitor(migrated_db, tenant_a.id, "")
    with pytest.raises(OSError):  # noqa: PT011 - the kernel's own error, whatever its errno
        await monitor.run("no-such-if0", asyncio.Event())
