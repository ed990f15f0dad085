"""The console in a real headless Chromium (Debian's `chromium`), driven by Playwright's sync API."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from playwright.sync_api import ConsoleMessage, Page, sync_playwright

from iip.api.app import create_app
from iip.kernel.runtime import Runtime
from tests.conftest import make_tenant
from tests.identifiers.conftest import home_prefix
from tests.services import in_ci

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def chromium() -> str:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (Debian package `chromium`)"
        if in_ci():
            pytest.fail(message + " (CI=true: real services are required)")
        pytest.skip(message)
    return str(CHROMIUM)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run the app with uvicorn in a background thread; yield its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        log_level="warning",
        loop="asyncio",
        http="h11",
        ws="none",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def heading(page: Page) -> str:
    return page.locator("main h1").first.inner_text().strip()


# The backends are covered by the HTTP tests; the browser checks what people see.
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_console_in_a_real_browser(runtime: Runtime, chromium: str, tmp_path: Path) -> None:
    tenant = make_tenant(runtime.db, "hangzhou-plant")
    home_prefix(runtime, tenant, "88.118.8", "prefix-secret-123")
    app = create_app(runtime=runtime, configure_logs=False)
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":  # CSP violations and script errors land here
            problems.append(message.text)

    with serve(app) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
            page = context.new_page()
            page.on("console", on_console)
            page.on("pageerror", lambda error: problems.append(str(error)))

            # Not signed in: the dashboard sends us to the login page.
            page.goto(base + "/")
            page.wait_for_url(base + "/login")
            assert heading(page) == "登录"
            page.screenshot(path=tmp_path / "login-zh.png")

            page.fill("input[name=username]", f"{tenant.name}-admin")
            page.fill("input[name=password]", tenant.admin_password)
            page.click("form.form button[type=submit]")
            page.wait_for_url(base + "/")
            assert heading(page) == "总览"
            assert "hangzhou-plant" in page.locator(".topbar").inner_text()
            assert "管理员" in page.locator(".user-chip").inner_text()
            page.wait_for_selector("#audit-activity[data-drawn=true] .main-svg")  # plotly drew the chart
            assert page.locator(".stat-value").first.inner_text() == runtime_version()
            page.screenshot(path=tmp_path / "dashboard-zh.png", full_page=True)

            # Navigation is built from the modules' pages.
            page.locator("nav.nav").get_by_role("link", name="用户", exact=True).click()
            page.wait_for_url(base + "/access/users")
            assert heading(page) == "用户"
            assert page.locator(f"#users-table tr[data-username='{tenant.name}-admin']").count() == 1
            page.screenshot(path=tmp_path / "users-zh.png", full_page=True)

            # Switch to English: the same page, in English.
            page.click("form.lang-switch button[value=en]")
            page.wait_for_url(base + "/access/users")
            assert heading(page) == "Users"
            assert page.locator("html").get_attribute("lang") == "en"
            page.screenshot(path=tmp_path / "users-en.png", full_page=True)
            page.locator("nav.nav").get_by_role("link", name="Dashboard", exact=True).click()
            page.wait_for_url(base + "/")
            assert heading(page) == "Dashboard"
            page.wait_for_selector("#audit-activity[data-drawn=true] .main-svg")
            page.screenshot(path=tmp_path / "dashboard-en.png", full_page=True)

            # And back to Chinese.
            page.click("form.lang-switch button[value=zh_CN]")
            page.wait_for_url(base + "/")
            assert heading(page) == "总览"

            # Register an identifier from the navigation; its record shows the QR label.
            page.locator("nav.nav").get_by_role("link", name="注册标识", exact=True).click()
            page.wait_for_url(base + "/identifiers/register")
            page.fill("input[name=suffix]", "JXDY2106023")
            page.fill("input[name=url]", "https://example.com/products/6204")
            page.click("#register-form button[type=submit]")
            page.wait_for_url(base + "/identifiers/records/88.118.8/JXDY2106023")
            assert page.locator("#record-handle").inner_text() == "88.118.8/JXDY2106023"
            assert page.locator("#label svg").is_visible()
            page.screenshot(path=tmp_path / "identifier-zh.png", full_page=True)

            page.click("form[action='/logout'] button")
            page.wait_for_url(base + "/login")
            assert heading(page) == "登录"
            page.goto(base + "/access/users")
            page.wait_for_url(base + "/login?next=/access/users")
            context.close()
        finally:
            browser.close()
    assert not problems, problems


def runtime_version() -> str:
    from iip import __version__

    return __version__
