"""The consumer's page in a real headless Chromium with a phone's viewport: the answer, the page's
script under the console's CSP, and the phone's position sent as the place of the scan."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, sync_playwright

from iip.api.app import create_app
from iip.kernel.runtime import Runtime
from tests.conftest import make_tenant
from tests.console.test_browser import CHROMIUM_ARGS, chromium, serve

__all__ = ["chromium"]  # a fixture, used by name

pytestmark = pytest.mark.browser

BEIJING = {"latitude": 39.9042, "longitude": 116.4074}
GUANGZHOU = {"latitude": 23.13, "longitude": 113.26}


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_phone_checks_a_code_and_sends_its_position(runtime: Runtime, chromium: str, tmp_path: Path) -> None:
    tenant = make_tenant(runtime.db, "brand-owner")
    app = create_app(runtime=runtime, configure_logs=False)
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":  # CSP violations and script errors land here
            problems.append(message.text)

    with serve(app) as base, sync_playwright() as playwright:
        market = {"code": "CN-GD", **GUANGZHOU}
        body = {"gtin": "09506000134352", "count": 1, "lot": "L1", "markets": [market]}
        batch = httpx.post(f"{base}/api/traceability/code-batches", json=body, headers=tenant.headers(), timeout=30)
        assert batch.status_code == 201, batch.text
        uri = batch.json()["example_uri"]
        assert uri.startswith(f"{base}/v/01/09506000134352/10/L1/21/")
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                viewport={"width": 390, "height": 844},
                is_mobile=True,
                has_touch=True,
                locale="zh-CN",
                geolocation=BEIJING,
                permissions=["geolocation"],
            )
            page = context.new_page()
            page.on("console", on_console)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(uri)
            assert page.locator("h1").first.inner_text().strip() == "正品"
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "wider than the phone"
            ask = page.locator('[data-geo="ask"]')
            assert ask.is_visible()  # verify.js ran: the console's CSP allowed it
            ask.click()
            page.wait_for_selector('[data-geo="status"]:not([hidden])')
            assert page.locator('input[name="lat"]').input_value() == "39.90420"
            page.click("#locate-form button[type=submit]")
            page.wait_for_selector(".alert-info")
            assert page.locator(".alert-info").inner_text().strip() == "谢谢，地点已记录。"
            assert page.locator("h1").first.inner_text().strip() == "正品"  # shown again, not counted again
            assert page.locator("#scan-count").inner_text().strip() == "1"
        finally:
            browser.close()
        alerts = httpx.get(f"{base}/api/traceability/alerts", headers=tenant.headers(), timeout=30).json()["items"]
    assert [a["kind"] for a in alerts] == ["far_from_market"]  # Beijing is ~1900 km from Guangzhou
    assert problems == []
