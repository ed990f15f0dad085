"""The devices console pages on SQLite and PostgreSQL: the device list, a device, profiles and their
import, the command form, dead letters; both languages, permissions and tenants."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from iip.console.i18n import extract_msgids, load_catalogues, module_locale_dir
from iip.devices import pages
from iip.devices.commands import SERVICE_KEY, CommandService
from iip.devices.drivers.base import Reading, create_driver
from iip.devices.drivers.runner import DeviceRunner
from iip.devices.models import Command, Device
from iip.devices.profiles import DeviceProfile
from iip.devices.registry_directory import close_registry_services, registry_services
from iip.kernel.auth import Role
from iip.kernel.module import Module, discover_modules
from iip.kernel.runtime import Runtime
from tests.conftest import BACKENDS, TenantFixture
from tests.console.support import (
    ConsoleApp,
    assert_html,
    audit_entries,
    console_app,
    heading_text,
    section,
    sign_in_as,
    tenant_with_users,
    text_of,
)

PLACEHOLDER_RE = re.compile(r"%\((\w+)\)s")
SCRIPT_TAG_RE = re.compile(r"<script\b([^>]*)>", re.IGNORECASE)
DEVICES_PACKAGE = Path(pages.__file__).parent

PUMP = {
    "name": "pump",
    "description": "Centrifugal feed pump",
    "protocol": "modbus",
    "metrics": [
        {"name": "flow", "unit": "m3/h", "modbus": {"address": 0, "data_type": "float32"}},
        {"name": "speed", "unit": "rpm", "writable": True, "modbus": {"address": 2, "data_type": "uint16"}},
    ],
}
METER = {
    "name": "meter",
    "protocol": "http",
    "metrics": [{"name": "power", "unit": "kW"}, {"name": "state", "data_type": "string"}],
}
DOCUMENT: dict[str, Any] = {
    "profiles": [PUMP, METER],
    "devices": [
        {
            "key": "pump-01",
            "display_name": "Feed pump",
            "site": "plant-a",
            "profile": "pump",
            "connection": {"host": "10.0.4.21", "unit_id": 3},
        },
        {"key": "meter-01", "display_name": "Main meter", "site": "plant-b", "profile": "meter"},
    ],
}
HEADINGS = {
    "zh_CN": {
        "/devices": "设备",
        "/devices/pump-01": "设备 pump-01",
        "/devices/profiles": "设备模型",
        "/devices/profiles/pump": "设备模型 pump",
        "/devices/dead-letters": "拒收消息",
    },
    "en": {
        "/devices": "Devices",
        "/devices/pump-01": "Device pump-01",
        "/devices/profiles": "Device profiles",
        "/devices/profiles/pump": "Device profile pump",
        "/devices/dead-letters": "Dead letters",
    },
}


def with_device_pages(modules: Sequence[Module]) -> tuple[Module, ...]:
    """The registered modules, the devices module with its console pages (as its `__init__` declares them)."""
    return tuple(
        dataclasses.replace(m, pages_router=pages.pages_router, pages=pages.PAGES, template_dir=pages.TEMPLATE_DIR)
        if m.name == "devices"
        else m
        for m in modules
    )


@pytest.fixture(scope="module", params=BACKENDS)
def console(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleApp]:
    """One app over one migrated database per backend for the module; tests use tenants of their own."""
    folder = tmp_path_factory.mktemp("devices-pages")
    modules = with_device_pages(discover_modules())
    with console_app(str(request.param), folder, modules=modules, devices={"command_timeout_s": 1.0}) as app:
        yield app
        close_registry_services(app.runtime)


@pytest.fixture
def client(console: ConsoleApp) -> TestClient:
    return console.client


@pytest.fixture
def tenant(console: ConsoleApp) -> TenantFixture:
    return new_tenant(console.runtime)


def new_tenant(runtime: Runtime) -> TenantFixture:
    return tenant_with_users(runtime, (Role.VIEWER, Role.ENGINEER))


def import_document(client: TestClient, token: str, document: str, **fields: Any) -> str:
    response = client.post("/devices/profiles/import", data={"csrf_token": token, "document": document, **fields})
    return assert_html(response, 200)


def load_registry(client: TestClient, tenant: TenantFixture, document: dict[str, Any] | None = None) -> None:
    token = sign_in_as(client, tenant)
    import_document(client, token, yaml.safe_dump(document or DOCUMENT))


def ingest(client: TestClient, tenant: TenantFixture, *lines: dict[str, Any]) -> dict[str, Any]:
    """Send telemetry as a device integration does: JSON lines to the HTTP ingest API."""
    body = "\n".join(json.dumps(line) for line in lines)
    headers = {**tenant.headers(Role.ENGINEER), "Content-Type": "application/x-ndjson"}
    response = client.post("/api/telemetry", content=body, headers=headers)
    assert response.status_code in (200, 422), response.text
    answer: dict[str, Any] = response.json()
    return answer


def commands_of(runtime: Runtime, tenant: TenantFixture) -> list[tuple[str, Any, str]]:
    """(metric, value, status) of the tenant's recorded commands, oldest first."""
    with runtime.db.session() as session:
        rows = session.query(Command).filter_by(tenant_id=tenant.id).order_by(Command.requested_at).all()
        return [(row.metric, row.value, row.status) for row in rows]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def row_of(html: str, attribute: str, value: str) -> str:
    match = re.search(rf'<tr [^>]*{attribute}="{re.escape(value)}".*?</tr>', html, re.DOTALL)
    assert match, f"no row {attribute}={value}"
    return match.group(0)


# --- every page, both languages, reader and writer --------------------------------------------


@pytest.mark.parametrize("language", ["zh_CN", "en"])
def test_pages_render_for_admin_and_viewer_in_both_languages(
    client: TestClient, tenant: TenantFixture, language: str
) -> None:
    load_registry(client, tenant)
    for role in (Role.ADMIN, Role.VIEWER):
        sign_in_as(client, tenant, role, language)
        for path, title in HEADINGS[language].items():
            page = assert_html(client.get(path), 200)
            assert heading_text(page) == title, (role, path)
            assert f'<html lang="{"zh-CN" if language == "zh_CN" else "en"}">' in page
            # Navigation carries the context's three pages, in the page's language.
            assert 'href="/devices/dead-letters"' in page
        device = client.get("/devices/pump-01").text
        assert ('id="command-form"' in device) is (role is Role.ADMIN)
        assert ('id="import-form"' in client.get("/devices/profiles").text) is (role is Role.ADMIN)
        listed = client.get("/devices").text
        assert "pump-01" in row_of(listed, "data-device", "pump-01")
        assert "plant-b" in row_of(listed, "data-device", "meter-01")
        never = "从未上线" if language == "zh_CN" else "Never seen"
        assert never in row_of(listed, "data-device", "pump-01")


def test_the_device_page_names_its_registration_metrics_and_live_sources(
    client: TestClient, tenant: TenantFixture
) -> None:
    load_registry(client, tenant)
    sign_in_as(client, tenant, Role.VIEWER, "en")
    page = assert_html(client.get("/devices/pump-01"), 200)
    meta = text_of(section(page, "device-meta"))
    assert "Feed pump" in meta
    assert "plant-a" in meta
    assert "host=10.0.4.21" in meta
    assert "unit_id=3" in meta
    assert re.findall(r'<tr data-metric="([^"]+)"', page) == ["flow", "speed"]
    assert "Writable" in row_of(page, "data-metric", "speed")
    # One chart per numeric metric; the script finds its data sources on the page.
    assert re.findall(r'class="chart device-chart" data-metric="([^"]+)"', page) == ["flow", "speed"]
    assert 'data-events-url="/api/devices/pump-01/twin/events"' in page
    assert 'data-points-url="/api/telemetry/devices/pump-01/points"' in page
    labels = json.loads(unescape(re.search(r'data-labels="([^"]+)"', page).group(1)))  # type: ignore[union-attr]
    assert labels["online"] == "Online"
    assert labels["quality"]["2"] == "Bad"
    # The CSP allows no inline script: every script is a file, ours from the context's static folder.
    scripts = SCRIPT_TAG_RE.findall(page)
    assert scripts
    assert all("src=" in attributes for attributes in scripts)
    assert 'src="/static/devices/devices.js?v=' in page
    script = client.get("/static/devices/devices.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "EventSource" in script.text


def test_latest_values_and_online_state_on_the_list_and_the_device(client: TestClient, tenant: TenantFixture) -> None:
    load_registry(client, tenant)
    sent = now_ms()
    answer = ingest(client, tenant, {"device": "pump-01", "ts": sent, "values": {"flow": 12.3456789, "speed": 1450}})
    assert answer["accepted"] == 2
    sign_in_as(client, tenant, Role.VIEWER, "en")

    device = client.get("/devices/pump-01").text
    flow = row_of(device, "data-metric", "flow")
    assert '<td class="mono" data-field="value">12.3457</td>' in flow
    assert "Good" in flow
    assert time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(sent / 1000)) in flow
    assert "1450" in row_of(device, "data-metric", "speed")
    assert 'data-state-badge="online"' in section(device, "connection")

    listed = client.get("/devices").text
    assert 'data-state="online"' in row_of(listed, "data-device", "pump-01")
    assert 'data-state="never"' in row_of(listed, "data-device", "meter-01")
    online = client.get("/devices", params={"state": "online"}).text
    assert re.findall(r'<tr data-device="([^"]+)"', online) == ["pump-01"]
    never = client.get("/devices", params={"state": "never"}).text
    assert re.findall(r'<tr data-device="([^"]+)"', never) == ["meter-01"]
    assert re.findall(r'<tr data-device="([^"]+)"', client.get("/devices?state=offline").text) == []
    assert re.findall(r'<tr data-device="([^"]+)"', client.get("/devices?site=plant-b").text) == ["meter-01"]
    assert re.findall(r'<tr data-device="([^"]+)"', client.get("/devices?profile=pump").text) == ["pump-01"]
    assert re.findall(r'<tr data-device="([^"]+)"', client.get("/devices?q=Main").text) == ["meter-01"]
    # Odd filter values are ignored or match nothing; they never fail the page.
    assert_html(client.get("/devices", params={"state": "sideways", "site": "a\tb", "page": "-3"}), 200)

    # A point older than the silence limit makes the device offline.
    old = sent - 3_600_000
    ingest(client, tenant, {"device": "meter-01", "ts": old, "values": {"power": 5.5}})
    offline = client.get("/devices", params={"state": "offline"}).text
    assert re.findall(r'<tr data-device="([^"]+)"', offline) == ["meter-01"]


# --- permissions ------------------------------------------------------------------------------


def test_a_viewer_gets_no_forms_and_403_on_posting_them(console: ConsoleApp, tenant: TenantFixture) -> None:
    client = console.client
    load_registry(client, tenant)
    token = sign_in_as(client, tenant, Role.VIEWER, "en")
    page = client.get("/devices/pump-01").text
    assert 'id="command-form"' not in page
    assert "/devices/pump-01/commands" not in page
    refused = client.post("/devices/pump-01/commands", data={"csrf_token": token, "metric": "speed", "value": "10"})
    assert heading_text(assert_html(refused, 403)) == "Access denied"
    refused = client.post("/devices/profiles/import", data={"csrf_token": token, "document": yaml.safe_dump(METER)})
    assert_html(refused, 403)
    assert commands_of(console.runtime, tenant) == []


def test_forms_need_the_session_csrf_token(client: TestClient, tenant: TenantFixture) -> None:
    load_registry(client, tenant)
    sign_in_as(client, tenant, Role.ADMIN, "en")
    page = assert_html(client.post("/devices/profiles/import", data={"document": yaml.safe_dump(DOCUMENT)}), 403)
    assert "The form has expired" in page
    assert_html(client.post("/devices/pump-01/commands", data={"csrf_token": "x" * 40, "metric": "speed"}), 403)


def test_signed_out_visitors_are_sent_to_the_login_page(client: TestClient) -> None:
    client.cookies.clear()
    response = client.get("/devices/dead-letters", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/devices/dead-letters"


# --- profiles and the import ------------------------------------------------------------------


def test_import_by_paste_and_by_upload(console: ConsoleApp, tenant: TenantFixture) -> None:
    client = console.client
    token = sign_in_as(client, tenant, Role.ENGINEER, "en")
    report = section(import_document(client, token, yaml.safe_dump(DOCUMENT)), "import-report")
    assert "The document was imported." in report
    assert '<span class="badge badge-success">2</span> <span class="mono muted">pump, meter</span>' in report
    assert "pump-01, meter-01" in report

    listed = client.get("/devices/profiles").text
    pump = row_of(listed, "data-profile", "pump")
    assert '<a href="/devices/profiles/pump">pump</a>' in pump
    assert [text_of(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", pump, re.DOTALL)][1:5] == ["modbus", "1", "2", "1"]
    view = client.get("/devices/profiles/pump").text
    shown = yaml.safe_load(unescape(re.search(r'id="profile-yaml"[^>]*>(.*?)</textarea>', view, re.DOTALL).group(1)))  # type: ignore[union-attr]
    assert DeviceProfile.model_validate(shown) == DeviceProfile.model_validate(PUMP)  # defaults left out
    assert "data_type: uint16" not in view

    # A JSON file: a new device, a changed one; the pasted text is ignored when a file is chosen.
    document = {
        "devices": [
            {"key": "pump-02", "profile": "pump", "site": "plant-a", "connection": {"host": "10.0.4.22"}},
            {"key": "meter-01", "display_name": "Main meter", "site": "plant-c", "profile": "meter"},
        ]
    }
    response = client.post(
        "/devices/profiles/import",
        data={"csrf_token": token, "document": "not: [valid", "format": "json"},
        files={"upload": ("registry.json", json.dumps(document).encode(), "application/json")},
    )
    report = section(assert_html(response, 200), "import-report")
    devices = row_of(report, "data-section", "devices")
    assert "pump-02" in re.search(r'data-count="created".*?</td>', devices, re.DOTALL).group(0)  # type: ignore[union-attr]
    assert "meter-01" in re.search(r'data-count="updated".*?</td>', devices, re.DOTALL).group(0)  # type: ignore[union-attr]
    assert re.findall(r'<tr data-device="([^"]+)"', client.get("/devices?site=plant-c").text) == ["meter-01"]

    # The same document again changes nothing.
    again = section(import_document(client, token, yaml.safe_dump(DOCUMENT)), "import-report")
    assert re.search(r'data-section="profiles".*?data-count="unchanged"><span class="badge">2<', again, re.DOTALL)
    assert audit_entries(console.runtime, "POST /devices/profiles/import")


def test_import_errors_are_listed_and_nothing_is_written(client: TestClient, tenant: TenantFixture) -> None:
    token = sign_in_as(client, tenant, Role.ENGINEER, "en")
    document = {
        "profiles": [PUMP],
        "devices": [
            {"key": "pump-01", "profile": "nope"},
            {"key": "pump-02", "profile": "pump", "connection": {"host": "bad host!"}},
        ],
    }
    pasted = yaml.safe_dump(document)
    response = client.post("/devices/profiles/import", data={"csrf_token": token, "document": pasted})
    page = assert_html(response, 422)
    errors = text_of(section(page, "import-errors"))
    assert "Nothing was imported: the document has errors." in errors
    assert "devices[0].profile: unknown profile 'nope'" in errors
    assert "devices[1].connection.host" in errors
    assert "import-report" not in page
    # The pasted text is kept for correcting, escaped.
    assert unescape(re.search(r'name="document"[^>]*>(.*?)</textarea>', page, re.DOTALL).group(1)) == pasted  # type: ignore[union-attr]
    assert 'id="profile-count">0<' in page  # the valid profile was not written either

    broken = client.post("/devices/profiles/import", data={"csrf_token": token, "document": "profiles: [\n  - {"})
    assert "not valid YAML" in text_of(section(assert_html(broken, 422), "import-errors"))
    not_json = client.post("/devices/profiles/import", data={"csrf_token": token, "document": "{", "format": "json"})
    assert "not valid JSON" in text_of(section(assert_html(not_json, 422), "import-errors"))
    empty = assert_html(client.post("/devices/profiles/import", data={"csrf_token": token, "document": "  "}), 422)
    assert 'id="document-error">Paste a document or choose a file.<' in empty
    assert 'id="profile-count">0<' in client.get("/devices/profiles").text


def test_chinese_import_errors(client: TestClient, tenant: TenantFixture) -> None:
    token = sign_in_as(client, tenant, Role.ADMIN, "zh_CN")
    page = assert_html(client.post("/devices/profiles/import", data={"csrf_token": token, "document": "- 1"}), 422)
    errors = text_of(section(page, "import-errors"))
    assert "文档有错误，未导入任何内容。" in errors
    assert "the document must be a mapping" in errors  # the registry's own words, as the API gives them


# --- commands -------------------------------------------------------------------------------

# A PLC as a real Modbus TCP server: it keeps writes to register 0, refuses those to 1 and leaves
# those to 2 unanswered.
PLC = {
    "name": "plc",
    "protocol": "modbus",
    "poll_interval_s": 0.2,
    "metrics": [
        {
            "name": "setpoint",
            "unit": "degC",
            "data_type": "uint16",
            "writable": True,
            "modbus": {"address": 0, "data_type": "uint16"},
        },
        {"name": "limit", "data_type": "int16", "writable": True, "modbus": {"address": 1, "data_type": "int16"}},
        {"name": "valve", "data_type": "uint16", "writable": True, "modbus": {"address": 2, "data_type": "uint16"}},
        {"name": "level", "unit": "%", "modbus": {"address": 3, "data_type": "uint16"}},
    ],
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Plc:
    """The PLC's server and the runner polling it; also how the command service finds that runner."""

    port: int
    release: asyncio.Event
    server: ModbusTcpServer
    device_runner: DeviceRunner
    tenant_id: str

    def runner(self, tenant_id: str, key: str) -> DeviceRunner | None:
        return self.device_runner if (tenant_id, key) == (self.tenant_id, "plc-1") else None


@pytest.fixture
def plc(console: ConsoleApp, tenant: TenantFixture) -> Iterator[Plc]:
    """Tenant's device `plc-1`, polled from the app's event loop, with a command service sending to it."""
    runtime, portal = console.runtime, console.client.portal
    assert portal is not None
    port = free_port()
    load_registry(
        console.client,
        tenant,
        {
            "profiles": [PLC],
            "devices": [
                {"key": "plc-1", "profile": "plc", "connection": {"host": "127.0.0.1", "port": port, "timeout_s": 1}}
            ],
        },
    )

    async def start() -> Plc:
        release = asyncio.Event()

        async def action(
            function_code: int, start: int, address: int, count: int, registers: list[int], values: Any
        ) -> ExcCodes | None:
            del function_code, start, count, registers
            if values is not None and address == 1:
                return ExcCodes.ILLEGAL_VALUE
            if values is not None and address == 2:
                await release.wait()
            return None

        device = SimDevice(
            id=0,
            simdata=(
                [SimData(0, values=[False] * 16, datatype=SimType.BITS)],
                [SimData(0, values=[False] * 16, datatype=SimType.BITS)],
                [SimData(0, values=[0, 0, 0, 55], datatype=SimType.REGISTERS)],
                [SimData(0, values=[0], datatype=SimType.REGISTERS)],
            ),
            action=action,
        )
        server = ModbusTcpServer(device, address=("127.0.0.1", port))
        await server.serve_forever(background=True)

        async def discard(_readings: list[Reading]) -> None:
            return None

        driver = create_driver(
            "modbus", DeviceProfile.model_validate(PLC), {"host": "127.0.0.1", "port": port, "timeout_s": 1}
        )
        runner = DeviceRunner(driver, discard, name="plc-1")
        await runner.start()
        return Plc(port, release, server, runner, tenant.id)

    plant = portal.call(start)
    before = runtime.services.get(SERVICE_KEY)
    runtime.services[SERVICE_KEY] = CommandService(
        runtime.db, runtime.bus, default_timeout_s=runtime.settings.devices.command_timeout_s, runners=plant
    )
    try:
        yield plant
    finally:
        if before is None:
            runtime.services.pop(SERVICE_KEY, None)
        else:
            runtime.services[SERVICE_KEY] = before

        async def stop() -> None:
            plant.release.set()
            await plant.device_runner.stop()
            await plant.server.shutdown()  # type: ignore[no-untyped-call]

        portal.call(stop)


def held_registers(console: ConsoleApp, port: int) -> list[int]:
    async def read() -> list[int]:
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, reconnect_delay=0)
        try:
            assert await client.connect()
            response = await client.read_holding_registers(0, count=4, device_id=1)
            assert not response.isError()
            return list(response.registers)
        finally:
            client.close()

    assert console.client.portal is not None
    return console.client.portal.call(read)


def test_a_command_is_acknowledged_refused_or_timed_out(console: ConsoleApp, tenant: TenantFixture, plc: Plc) -> None:
    client, runtime = console.client, console.runtime
    token = sign_in_as(client, tenant, Role.ENGINEER, "en")
    page = assert_html(client.get("/devices/plc-1"), 200)
    form = section(page, "command-form")
    assert re.findall(r'<option value="([^"]+)"', form) == ["setpoint", "limit", "valve"]  # the writable ones

    def send(metric: str, value: str) -> Any:
        data = {"csrf_token": token, "metric": metric, "value": value}
        return client.post("/devices/plc-1/commands", data=data, follow_redirects=False)

    acknowledged = send("setpoint", " 42 ")
    assert acknowledged.status_code == 303
    assert acknowledged.headers["location"] == "/devices/plc-1"
    assert held_registers(console, plc.port)[0] == 42
    shown = assert_html(client.get("/devices/plc-1"), 200)
    assert "The device confirmed the command." in shown
    latest = re.search(r"<tr data-command=.*?</tr>", shown, re.DOTALL).group(0)  # type: ignore[union-attr]
    assert 'data-status="acknowledged"' in latest
    assert "Acknowledged" in latest
    assert f"user:{tenant.name}-engineer" in latest

    refused = assert_html(send("limit", "5"), 422)
    outcome = section(refused, "command-outcome")
    assert 'data-outcome="refused"' in outcome
    assert "The command was refused:" in text_of(outcome)
    assert "illegal value" in text_of(outcome)

    timed_out = assert_html(send("valve", "7"), 504)
    outcome = section(timed_out, "command-outcome")
    assert 'data-outcome="timed_out"' in outcome
    assert "The device did not confirm the command in time:" in text_of(outcome)
    assert [status for _m, _v, status in commands_of(runtime, tenant)] == ["acknowledged", "failed", "timed_out"]
    assert 'data-status="timed_out"' in timed_out
    assert audit_entries(runtime, "POST /devices/{device}/commands")

    # Input the device never sees: the form says what is wrong, and nothing is recorded or sent.
    for metric, value, problem in (
        ("setpoint", "warm", "Enter a number."),
        ("setpoint", "70000", "Not accepted: 70000 is out of range"),
        ("setpoint", "2.5", "Not accepted: metric 'setpoint' takes a whole number"),
        ("level", "1", "Choose one of the writable metrics."),
        ("nope", "1", "Choose one of the writable metrics."),
    ):
        page = assert_html(send(metric, value), 422)
        assert problem in text_of(section(page, "command-form")), (metric, value)
        assert f'value="{value}"' in section(page, "command-form")
    assert len(commands_of(runtime, tenant)) == 3
    assert held_registers(console, plc.port)[:2] == [42, 0]


# --- dead letters -----------------------------------------------------------------------------


def test_the_dead_letter_list_shows_a_rejected_message_safely(console: ConsoleApp, tenant: TenantFixture) -> None:
    client = console.client
    load_registry(client, tenant)
    payload = {"device": "pump-01", "values": {"flow": "<script>alert(1)</script>"}}
    answer = ingest(client, tenant, payload, {"device": "pump-01", "values": {"flow": 1.0}})
    assert answer["rejected"] == 1
    assert registry_services(console.runtime).dead_letters.flush()
    sign_in_as(client, tenant, Role.VIEWER, "en")

    page = assert_html(client.get("/devices/dead-letters"), 200)
    rows = re.findall(r"<tr data-letter=.*?</tr>", page, re.DOTALL)
    assert len(rows) == 1
    row = rows[0]
    assert "flow: expected a number, got str" in text_of(row)
    assert '<a href="/devices/pump-01">pump-01</a>' in row
    assert "<script>alert(1)</script>" not in page
    raw = re.search(r'class="mono dead-letter-raw"[^>]*>(.*?)</pre>', row, re.DOTALL).group(1)  # type: ignore[union-attr]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in raw
    assert json.loads(unescape(raw)) == payload

    assert len(re.findall(r"<tr data-letter=", client.get("/devices/dead-letters?source=http").text)) == 1
    assert "No rejected messages match." in client.get("/devices/dead-letters?source=mqtt").text
    assert "No rejected messages match." in client.get("/devices/dead-letters?device=meter-01").text
    assert len(re.findall(r"<tr data-letter=", client.get("/devices/dead-letters?device=pump-01").text)) == 1
    # The device list counts it and links to it.
    listed = row_of(client.get("/devices").text, "data-device", "pump-01")
    assert '<a href="/devices/dead-letters?device=pump-01" class="badge badge-danger">1</a>' in listed


def test_dead_letters_page_through_older_ones(console: ConsoleApp, tenant: TenantFixture) -> None:
    client = console.client
    load_registry(client, tenant)
    lines = [{"device": "pump-01", "values": {"flow": f"bad-{n}"}} for n in range(pages.DEAD_LETTER_PAGE_SIZE + 3)]
    body = "\n".join(json.dumps(line) for line in lines)
    headers = {**tenant.headers(Role.ENGINEER), "Content-Type": "application/x-ndjson"}
    assert client.post("/api/telemetry", content=body, headers=headers).status_code == 422
    assert registry_services(console.runtime).dead_letters.flush()
    sign_in_as(client, tenant, Role.VIEWER, "en")
    first = client.get("/devices/dead-letters").text
    assert len(re.findall(r"<tr data-letter=", first)) == pages.DEAD_LETTER_PAGE_SIZE
    older = unescape(re.search(r'href="([^"]+)">Older<', first).group(1))  # type: ignore[union-attr]
    second = client.get(older).text
    assert len(re.findall(r"<tr data-letter=", second)) == 3
    assert "bad-0" in second
    assert ">Older<" not in second


# --- tenants ----------------------------------------------------------------------------------


def test_another_tenants_devices_are_404_pages(console: ConsoleApp, tenant: TenantFixture) -> None:
    client = console.client
    other = new_tenant(console.runtime)
    load_registry(client, other)
    ingest(client, other, {"device": "pump-01", "values": {"flow": "oops"}})
    assert registry_services(console.runtime).dead_letters.flush()
    with console.runtime.db.session() as session:
        device_id = session.query(Device).filter_by(tenant_id=other.id, key="pump-01").one().id

    token = sign_in_as(client, tenant, Role.ADMIN, "en")
    for path in ("/devices/pump-01", f"/devices/{device_id}", "/devices/profiles/pump"):
        page = assert_html(client.get(path), 404)
        assert heading_text(page) == "Page not found"
        assert "Feed pump" not in page
    posted = client.post(f"/devices/{device_id}/commands", data={"csrf_token": token, "metric": "speed", "value": "1"})
    assert_html(posted, 404)
    assert "No devices yet." in client.get("/devices").text
    assert 'id="profile-count">0<' in client.get("/devices/profiles").text
    assert "No rejected messages." in client.get("/devices/dead-letters").text
    # The owner sees them.
    sign_in_as(client, other, Role.VIEWER, "en")
    assert_html(client.get("/devices/pump-01"), 200)
    assert len(re.findall(r"<tr data-letter=", client.get("/devices/dead-letters").text)) == 1


# --- catalogues -------------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["zh_CN", "en"])
def test_every_message_id_of_the_pages_is_translated(language: str) -> None:
    locale_dir = module_locale_dir(pages.TEMPLATE_DIR)
    assert locale_dir is not None
    catalogues = load_catalogues([locale_dir])
    msgids = extract_msgids([DEVICES_PACKAGE]) | {p.title for p in pages.PAGES}
    assert "Send a command" in msgids
    missing = sorted(m for m in msgids if not catalogues.has(language, m))
    assert not missing, f"untranslated in {language}: {missing}"
    own = load_catalogues([locale_dir]).entries[language]
    wrong = {m: t for m, t in own.items() if sorted(PLACEHOLDER_RE.findall(m)) != sorted(PLACEHOLDER_RE.findall(t))}
    assert not wrong
