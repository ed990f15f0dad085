"""The alarm list in a real headless Chromium: a new alarm appears live (telemetry over HTTP, the rule
engine, the bus, the feed), then it is acknowledged and shelved in place, without leaving the page."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, sync_playwright

from iip.alarms.models import Alarm
from iip.alarms.service import AlarmService
from iip.api.app import create_app
from iip.devices.service import DeviceRegistry
from iip.kernel.auth import Principal, Role
from iip.kernel.runtime import Runtime
from tests.conftest import make_tenant
from tests.console.test_browser import CHROMIUM_ARGS, chromium, serve

__all__ = ["chromium"]  # a fixture, used by name

pytestmark = pytest.mark.browser

DOCUMENT = {
    "profiles": [{"name": "boiler", "protocol": "http", "metrics": [{"name": "pressure", "unit": "MPa"}]}],
    "devices": [{"key": "boiler-01", "display_name": "Boiler 1", "site": "north", "profile": "boiler"}],
}
RULE = {
    "key": "boiler.pressure.high",
    "kind": "threshold",
    "title": "Boiler pressure high",
    "scope": {"profile": "boiler"},
    "metric": "pressure",
    "high": 1.6,
    "priority": "high",
    "message": "{device}: pressure {value} MPa",
}


def send(base: str, api_key: str, value: float) -> None:
    """A reading as a device integration sends it: a JSON line to the HTTP ingest API."""
    line = {"device": "boiler-01", "ts": time.time_ns() // 1_000_000, "values": {"pressure": value}}
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/x-ndjson"}
    response = httpx.post(f"{base}/api/telemetry", content=json.dumps(line), headers=headers, timeout=10)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_new_alarm_appears_live_and_is_acknowledged_in_place(runtime: Runtime, chromium: str, tmp_path: Path) -> None:
    tenant = make_tenant(runtime.db, "suzhou-plant")
    admin = Principal("user", tenant.admin_user_id, f"{tenant.name}-admin", tenant.id, Role.ADMIN)
    with runtime.db.session() as session:
        DeviceRegistry(session, admin).import_document(DOCUMENT)
        AlarmService(session, admin).import_rules([RULE])
    app = create_app(runtime=runtime, configure_logs=False)
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":  # CSP violations and script errors land here
            problems.append(message.text)

    with serve(app) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1440, "height": 1000}, locale="zh-CN")
            page = context.new_page()
            page.on("console", on_console)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(base + "/login?next=/alarms")
            page.fill("input[name=username]", f"{tenant.name}-admin")
            page.fill("input[name=password]", tenant.admin_password)
            page.click("form.form button[type=submit]")
            page.wait_for_url(base + "/alarms")
            assert page.locator("main h1").first.inner_text().strip() == "当前报警"
            page.wait_for_selector("#live-status[data-live=live]")
            assert page.locator("#live-status").inner_text() == "实时"
            assert "当前没有报警。" in page.locator("#alarms-table").inner_text()
            page.evaluate("window.sameDocument = true")  # gone if the page is loaded again

            # The boiler's pressure rises: the alarm shows up without a reload.
            send(base, tenant.keys[Role.ENGINEER], 1.85)
            row = page.locator("#alarms-table tr[data-alarm]")
            row.wait_for()
            assert row.count() == 1
            assert row.get_attribute("data-state") == "unack_active"
            shown = row.inner_text()
            assert "boiler.pressure.high" in shown
            assert "boiler-01: pressure 1.85 MPa" in shown
            assert "活动，未确认" in shown
            assert page.locator("#alarm-count").inner_text() == "1"
            page.screenshot(path=tmp_path / "alarm-live-zh.png", full_page=True)

            # Acknowledged from its row: the row changes, the page stays.
            row.locator("button[data-action=acknowledge]").click()
            page.wait_for_selector("#alarms-table tr[data-alarm][data-state=ack_active]")
            assert "活动，已确认" in page.locator("#alarms-table tr[data-alarm]").inner_text()
            assert page.locator("#alarms-table button[data-action=acknowledge]").count() == 0
            assert page.evaluate("window.sameDocument") is True

            # Shelved from its row, for an hour, with a reason.
            page.locator("#alarms-table tr[data-alarm] .row-shelve summary").click()
            page.select_option("#alarms-table tr[data-alarm] select[name=minutes]", "60")
            page.fill("#alarms-table tr[data-alarm] input[name=reason]", "安全阀检修")
            page.locator("#alarms-table tr[data-alarm] .shelve-form button[type=submit]").click()
            page.wait_for_selector("#alarms-table tr[data-alarm] [data-flag=shelved]")
            assert page.evaluate("window.sameDocument") is True
            assert page.locator("#live-alert").is_hidden()
            page.screenshot(path=tmp_path / "alarm-acknowledged-zh.png", full_page=True)
            context.close()
        finally:
            browser.close()
    with runtime.db.session() as session:
        alarm = session.query(Alarm).filter_by(tenant_id=tenant.id).one()
        assert (alarm.state, alarm.acknowledged_by, alarm.shelved) == ("ack_active", f"user:{tenant.name}-admin", True)
    assert not problems, problems
