"""A device page in a real headless Chromium: the last hour drawn by plotly, then live values from the twin."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, Page, sync_playwright

from iip.api.app import create_app
from iip.devices.service import DeviceRegistry
from iip.kernel.auth import Principal, Role
from iip.kernel.runtime import Runtime
from tests.conftest import make_tenant
from tests.console.test_browser import CHROMIUM_ARGS, chromium, serve
from tests.console.test_devices_pages import DOCUMENT, with_device_pages

__all__ = ["chromium"]  # a fixture, used by name

pytestmark = pytest.mark.browser

HISTORY = [(50, 31.5), (40, 33.0), (30, 32.25), (20, 35.5), (10, 34.0), (2, 36.75)]  # minutes ago, flow


def send(base: str, api_key: str, *lines: dict[str, Any]) -> None:
    """Telemetry as a device integration sends it: JSON lines to the HTTP ingest API."""
    body = "\n".join(json.dumps(line) for line in lines)
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/x-ndjson"}
    response = httpx.post(f"{base}/api/telemetry", content=body, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["rejected"] == 0


def flow_cell(page: Page) -> str:
    return page.locator("#metrics-table tr[data-metric=flow] [data-field=value]").inner_text().strip()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_device_page_draws_the_last_hour_and_follows_live_values(
    runtime: Runtime, chromium: str, tmp_path: Path
) -> None:
    runtime.modules = with_device_pages(runtime.modules)
    tenant = make_tenant(runtime.db, "ningbo-plant")
    with runtime.db.session() as session:
        admin = Principal("user", tenant.admin_user_id, f"{tenant.name}-admin", tenant.id, Role.ADMIN)
        DeviceRegistry(session, admin).import_document(DOCUMENT)
    app = create_app(runtime=runtime, configure_logs=False)
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":  # CSP violations and script errors land here
            problems.append(message.text)

    with serve(app) as base, sync_playwright() as playwright:
        now = time.time_ns() // 1_000_000
        key = tenant.keys[Role.ENGINEER]
        send(base, key, *({"device": "pump-01", "ts": now - m * 60_000, "values": {"flow": v}} for m, v in HISTORY))
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1440, "height": 1000}, locale="zh-CN")
            page = context.new_page()
            page.on("console", on_console)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(base + "/login?next=/devices/pump-01")
            page.fill("input[name=username]", f"{tenant.name}-admin")
            page.fill("input[name=password]", tenant.admin_password)
            page.click("form.form button[type=submit]")
            page.wait_for_url(base + "/devices/pump-01")
            assert page.locator("main h1").first.inner_text().strip() == "设备 pump-01"

            # The last hour, read from the telemetry API and drawn by plotly.
            chart = "#charts .device-chart[data-metric=flow]"
            page.wait_for_selector(f"{chart}[data-drawn=true] .main-svg")
            assert page.locator(chart).get_attribute("data-points") == str(len(HISTORY))
            # The twin's event stream is open; its snapshot shows the newest value.
            page.wait_for_selector("#live-status[data-live=live]")
            assert page.locator("#live-status").inner_text() == "实时"
            assert flow_cell(page) == "36.75"
            assert page.locator("#connection-state [data-state-badge]").get_attribute("data-state-badge") == "online"
            page.screenshot(path=tmp_path / "device-zh.png", full_page=True)

            # A new value arrives: the table and the chart follow without a reload.
            send(base, key, {"device": "pump-01", "ts": now + 1_000, "values": {"flow": 41.125}})
            cell = "#metrics-table tr[data-metric=flow] [data-field=value]"
            page.wait_for_function(f"document.querySelector('{cell}').textContent === '41.125'")
            page.wait_for_selector(f"{chart}[data-points='{len(HISTORY) + 1}']")
            assert "良好" in page.locator("#metrics-table tr[data-metric=flow]").inner_text()
            page.screenshot(path=tmp_path / "device-live-zh.png", full_page=True)

            # A text value is a reported attribute of the twin.
            send(base, key, {"device": "meter-01", "ts": now, "values": {"state": "RUN", "power": 12.0}})
            page.goto(base + "/devices/meter-01")
            page.wait_for_selector("#reported-attributes tr[data-attribute=state]")
            assert page.locator("#reported-attributes tr[data-attribute=state] td").inner_text() == "RUN"
            context.close()
        finally:
            browser.close()
    assert not problems, problems
