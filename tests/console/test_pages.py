"""The dashboard, the access pages, navigation by role, tenant scoping, error pages and static assets."""

from __future__ import annotations

import datetime as dt
import json
import re
from html import unescape

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from sqlalchemy import select

from iip.api.app import create_app
from iip.kernel.auth import AccessService, ApiKey, Role, User
from iip.kernel.db import utcnow
from iip.kernel.module import HealthReport, Module, Page
from iip.kernel.runtime import Runtime
from tests.conftest import TenantFixture
from tests.console.support import SCRIPT_SRC_RE, assert_html, csrf_from, heading, sign_in

PASSWORD = "a-long-enough-password"


def admin(client: TestClient, tenant: TenantFixture) -> str:
    return sign_in(client, f"{tenant.name}-admin", tenant.admin_password)


def add_user(runtime: Runtime, tenant: TenantFixture, username: str, role: Role) -> str:
    with runtime.db.session() as session:
        return AccessService(session).create_user(tenant.id, username, PASSWORD, role).id


def nav_links(html: str) -> list[str]:
    nav = html.split('<nav class="nav"', 1)[1].split("</nav>", 1)[0]
    return re.findall(r'href="([^"]+)"', nav)


# --- dashboard --------------------------------------------------------------------------------


def test_dashboard_shows_health_version_counts_and_chart(client: TestClient, tenant_a: TenantFixture) -> None:
    admin(client, tenant_a)
    page = assert_html(client.get("/"), 200)
    assert heading(page) == "总览"
    health = page.split("模块健康状态", 1)[1]
    assert "访问控制" in health
    assert "正常" in health
    assert "database reachable" in health
    assert '<div class="stat-value" data-stat="users">1</div>' in page
    assert '<div class="stat-value" data-stat="api-keys">6</div>' in page  # one key per role
    series = re.search(r'id="audit-activity" class="chart" data-series="([^"]+)"', page)
    assert series
    data = json.loads(unescape(series.group(1)))
    assert len(data["hours"]) == len(data["counts"]) == 24
    assert sum(data["counts"]) >= 1  # at least this sign-in


def test_dashboard_reports_a_failing_module(runtime: Runtime, tenant_a: TenantFixture) -> None:
    def broken(_runtime: Runtime) -> HealthReport:
        raise ConnectionError("broker unreachable")

    runtime.modules = (*runtime.modules, Module(name="plant", title="Plant", health=broken))
    with TestClient(create_app(runtime=runtime, configure_logs=False)) as client:
        admin(client, tenant_a)
        page = assert_html(client.get("/"), 200)
    assert "ConnectionError: broker unreachable" in page
    assert '<span class="badge badge-danger">异常</span>' in page


def test_chart_needs_audit_permission(client: TestClient, runtime: Runtime, tenant_a: TenantFixture) -> None:
    add_user(runtime, tenant_a, "vera", Role.VIEWER)
    sign_in(client, "vera", PASSWORD)
    page = assert_html(client.get("/"), 200)
    assert "audit-activity" not in page
    assert "plotly" not in page


# --- navigation -------------------------------------------------------------------------------


def test_navigation_follows_the_role(client: TestClient, runtime: Runtime, tenant_a: TenantFixture) -> None:
    add_user(runtime, tenant_a, "vera", Role.VIEWER)
    add_user(runtime, tenant_a, "audrey", Role.AUDITOR)
    admin(client, tenant_a)
    identifiers = ["/identifiers/search", "/identifiers/register", "/identifiers/filings"]
    devices = ["/devices", "/devices/profiles", "/devices/dead-letters"]
    alarms = ["/alarms", "/alarms/history", "/alarms/rules", "/alarms/report"]
    access = ["/access/users", "/access/api-keys", "/access/audit"]
    analytics = ["/analytics/models", "/analytics/spc"]
    traceability = [
        "/traceability/capture",
        "/traceability/events",
        "/traceability/trace",
        "/traceability/recall",
        "/traceability/codes",
        "/traceability/code-alerts",
    ]
    security = [
        "/security",
        "/security/assets",
        "/security/alerts",
        "/security/captures",
        "/security/baselines",
        "/security/honeypot",
        "/security/intel",
        "/security/advisories",
        "/security/inbox",
        "/security/incidents",
    ]
    everything = [*devices, *alarms, *analytics, *identifiers, *security, *traceability]
    assert nav_links(client.get("/").text) == ["/", *access, *everything]
    client.cookies.clear()
    sign_in(client, "audrey", PASSWORD)
    readable = [*devices, *alarms, *analytics, "/identifiers/search", "/identifiers/filings", *security, *traceability]
    assert nav_links(client.get("/").text) == ["/", "/access/audit", *readable]
    client.cookies.clear()
    sign_in(client, "vera", PASSWORD)
    page = client.get("/").text
    assert nav_links(page) == ["/", *readable]
    assert "访问控制" not in page.split("</nav>", 1)[0]  # no empty module heading
    assert_html(client.get("/access/users"), 403)
    assert_html(client.get("/access/audit"), 403)


def test_navigation_includes_every_module_and_marks_the_current_page(runtime: Runtime, tenant_a: TenantFixture) -> None:
    plant_pages = APIRouter()

    @plant_pages.get("/plant/lines")
    def lines() -> dict[str, str]:
        return {}

    runtime.modules = (
        *runtime.modules,
        Module(
            name="plant",
            title="Plant",
            pages_router=plant_pages,
            pages=(Page("/plant/lines", "Lines", "plant.read", icon="activity"),),
        ),
    )
    with TestClient(create_app(runtime=runtime, configure_logs=False)) as client:
        admin(client, tenant_a)
        page = client.get("/access/api-keys").text
    assert nav_links(page)[-1] == "/plant/lines"
    assert '<div class="nav-heading">Plant</div>' in page  # untranslated ids show as they are
    assert 'class="nav-item active" href="/access/api-keys" aria-current="page"' in page


# --- users ------------------------------------------------------------------------------------


def test_create_user_with_inline_errors(client: TestClient, runtime: Runtime, tenant_a: TenantFixture) -> None:
    token = admin(client, tenant_a)
    short = {"csrf_token": token, "username": "Carol", "display_name": "Carol", "password": "short", "role": "engineer"}
    page = assert_html(client.post("/access/users", data=short), 422)
    assert "密码至少需要 10 个字符。" in page
    assert 'value="Carol"' in page  # the form keeps what was typed, except the password
    assert 'aria-invalid="true" aria-describedby="password-error"' in page
    bad = {**short, "username": "x", "password": PASSWORD, "role": "platform_operator"}
    page = assert_html(client.post("/access/users", data=bad), 422)
    assert "请使用 2 到 100 个字符" in page
    assert "请选择列表中的角色。" in page
    created = client.post("/access/users", data={**short, "password": PASSWORD}, follow_redirects=False)
    assert created.status_code == 303
    page = assert_html(client.get(created.headers["location"]), 200)
    assert "用户已创建。" in page
    assert 'data-username="carol"' in page
    assert "用户已创建。" not in client.get("/access/users").text  # a notice shows once
    again = assert_html(client.post("/access/users", data={**short, "password": PASSWORD}), 422)
    assert "该用户名已被使用。" in again
    with runtime.db.session() as session:
        user = session.scalar(select(User).where(User.username == "carol"))
        assert user is not None
        assert (user.role, user.tenant_id) == ("engineer", tenant_a.id)


def test_change_role_deactivate_and_unlock(client: TestClient, runtime: Runtime, tenant_a: TenantFixture) -> None:
    token = admin(client, tenant_a)
    user_id = add_user(runtime, tenant_a, "dave", Role.VIEWER)
    with runtime.db.session() as session:
        dave = session.get(User, user_id)
        assert dave is not None
        dave.locked_until = utcnow() + dt.timedelta(minutes=10)
    assert "已锁定" in client.get("/access/users").text
    for action, data in [("role", {"role": "operator"}), ("unlock", {}), ("deactivate", {})]:
        response = client.post(
            f"/access/users/{user_id}/{action}", data={"csrf_token": token, **data}, follow_redirects=False
        )
        assert response.status_code == 303, response.text
    with runtime.db.session() as session:
        user = session.get(User, user_id)
        assert user is not None
        assert (user.role, user.locked_until, user.active) == ("operator", None, False)
    assert (
        client.post(f"/access/users/{user_id}/activate", data={"csrf_token": token}, follow_redirects=False).status_code
        == 303
    )


def test_admin_cannot_lock_themselves_out(client: TestClient, tenant_a: TenantFixture) -> None:
    token = admin(client, tenant_a)
    own = f"/access/users/{tenant_a.admin_user_id}"
    page = assert_html(client.post(f"{own}/deactivate", data={"csrf_token": token}), 422)
    assert "不能停用自己的账户。" in page
    page = assert_html(client.post(f"{own}/role", data={"csrf_token": token, "role": "viewer"}), 422)
    assert "不能修改自己的角色。" in page


# --- API keys ---------------------------------------------------------------------------------


def test_api_key_is_shown_once_and_works(client: TestClient, tenant_a: TenantFixture) -> None:
    token = admin(client, tenant_a)
    data = {"csrf_token": token, "name": "historian", "role": "operator"}
    page = assert_html(client.post("/access/api-keys", data=data), 200)
    secret = re.search(r'id="new-key-secret" type="text" value="(iip_[^"]+)"', page)
    assert secret
    assert page.count(secret.group(1)) == 1
    me = client.get("/api/me", headers={"Authorization": f"Bearer {secret.group(1)}"})
    assert me.json()["role"] == "operator"
    assert secret.group(1) not in client.get("/access/api-keys").text


def test_api_key_form_errors(client: TestClient, tenant_a: TenantFixture) -> None:
    token = admin(client, tenant_a)
    data = {"csrf_token": token, "name": " ", "role": "viewer", "expires": "2001-01-01"}
    page = assert_html(client.post("/access/api-keys", data=data), 422)
    assert "请输入名称。" in page
    assert "过期日期必须晚于今天。" in page
    data = {"csrf_token": token, "name": "k", "expires": "tomorrow"}
    page = assert_html(client.post("/access/api-keys", data=data), 422)
    assert "请按 YYYY-MM-DD 格式输入日期。" in page


def test_revoke_api_key(client: TestClient, runtime: Runtime, tenant_a: TenantFixture) -> None:
    token = admin(client, tenant_a)
    with runtime.db.session() as session:
        key = session.scalar(select(ApiKey).where(ApiKey.tenant_id == tenant_a.id, ApiKey.name == "viewer"))
        assert key is not None
        key_id = key.id
    response = client.post(f"/access/api-keys/{key_id}/revoke", data={"csrf_token": token}, follow_redirects=False)
    assert response.status_code == 303
    assert "API 密钥已吊销。" in client.get("/access/api-keys").text
    assert client.get("/api/me", headers=tenant_a.headers(Role.VIEWER)).status_code == 401


# --- tenant scoping ---------------------------------------------------------------------------


def test_admin_sees_and_changes_only_their_tenant(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    token = admin(client, tenant_a)
    users = client.get("/access/users").text
    assert f'data-username="{tenant_a.name}-admin"' in users
    assert tenant_b.name not in users
    with runtime.db.session() as session:
        b_keys = list(session.scalars(select(ApiKey).where(ApiKey.tenant_id == tenant_b.id)))
        b_prefixes = [k.prefix for k in b_keys]
    keys_page = client.get("/access/api-keys").text
    assert not any(prefix in keys_page for prefix in b_prefixes)
    b_key = b_keys[0].id
    for path, data in [
        (f"/access/api-keys/{b_key}/revoke", {}),
        (f"/access/users/{tenant_b.admin_user_id}/role", {"role": "viewer"}),
        (f"/access/users/{tenant_b.admin_user_id}/deactivate", {}),
        (f"/access/users/{tenant_b.admin_user_id}/unlock", {}),
    ]:
        page = assert_html(client.post(path, data={"csrf_token": token, **data}), 404)
        assert "页面不存在" in page
        assert '<nav class="nav"' in page  # the error page is in the layout
    with runtime.db.session() as session:
        assert all(k.revoked_at is None for k in session.scalars(select(ApiKey).where(ApiKey.tenant_id == tenant_b.id)))
        b_admin = session.get(User, tenant_b.admin_user_id)
        assert b_admin is not None
        assert (b_admin.role, b_admin.active) == ("admin", True)
    audit_page = client.get("/access/audit").text
    assert f"user:{tenant_b.name}-admin" not in audit_page


# --- audit log --------------------------------------------------------------------------------


def test_audit_page_filters_and_verifies(client: TestClient, tenant_a: TenantFixture) -> None:
    token = admin(client, tenant_a)
    client.post("/access/users", data={"csrf_token": token, "username": "erin", "password": PASSWORD, "role": "viewer"})
    page = assert_html(client.get("/access/audit"), 200)
    assert "console.login" in page
    assert "POST /access/users" in page
    filtered = client.get("/access/audit", params={"action": "console.login"}).text
    assert "POST /access/users" not in filtered.split('id="audit-table"', 1)[1]
    verified = assert_html(client.post("/access/audit/verify", data={"csrf_token": token}), 200)
    assert re.search(r"哈希链完好：已校验 \d+ 条记录。", verified)
    assert_html(client.get("/access/audit", params={"before": "abc", "outcome": "nonsense"}), 200)


def test_audit_page_is_paged(client: TestClient, runtime: Runtime, tenant_a: TenantFixture) -> None:
    from iip.kernel import audit

    with runtime.db.session() as session:
        for n in range(60):
            audit.append(session, "system:test", audit.AuditRecord(action=f"test.event.{n}"), tenant_id=tenant_a.id)
    admin(client, tenant_a)
    first = client.get("/access/audit").text
    older = re.search(r'href="(/access/audit\?[^"]*before=\d+)"', first)
    assert older
    second = client.get(unescape(older.group(1))).text
    assert "test.event.0<" in second
    assert "test.event.0<" not in first


# --- errors and assets ------------------------------------------------------------------------


def test_console_errors_are_pages_and_api_errors_stay_json(client: TestClient, tenant_a: TenantFixture) -> None:
    anonymous = assert_html(client.get("/no-such-page", headers={"accept": "text/html"}), 404)
    assert "页面不存在" in anonymous
    assert "/login" in anonymous
    admin(client, tenant_a)
    page = assert_html(client.get("/no-such-page", headers={"accept": "text/html"}), 404)
    assert '<nav class="nav"' in page
    api = client.get("/api/no-such-thing", headers={"accept": "text/html"})
    assert api.status_code == 404
    assert api.headers["content-type"].startswith("application/problem+json")
    assert (
        client.get("/no-such-page", headers={"accept": "application/json"})
        .headers["content-type"]
        .startswith("application/problem+json")
    )
    assert_html(client.get("/logout", headers={"accept": "text/html,application/xhtml+xml"}), 405)


def test_unexpected_errors_on_console_pages_are_pages(runtime: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    failing_pages = APIRouter()

    @failing_pages.get("/plant/broken")
    def broken_page() -> None:
        raise RuntimeError("kaput")

    runtime.modules = (*runtime.modules, Module(name="plant", title="Plant", pages_router=failing_pages))
    with TestClient(create_app(runtime=runtime, configure_logs=False), raise_server_exceptions=False) as client:
        page = assert_html(client.get("/plant/broken"), 500)
    assert heading(page) == "出错了"
    assert "kaput" not in page
    assert any(record.exc_info and "kaput" in str(record.exc_info[1]) for record in caplog.records)


def test_plotly_is_served_locally(client: TestClient) -> None:
    response = client.get("/static/vendor/plotly.min.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert "plotly.js" in response.text[:500]
    for asset in ("console.css", "console.js", "dashboard.js", "favicon.svg"):
        assert client.get(f"/static/{asset}").status_code == 200


def signed_in_pages(client: TestClient, tenant: TenantFixture) -> list[str]:
    pages = [client.get("/login").text]
    token = admin(client, tenant)
    pages += [client.get(p).text for p in ("/", "/access/users", "/access/api-keys", "/access/audit")]
    pages.append(client.post("/access/audit/verify", data={"csrf_token": token}).text)
    pages.append(client.get("/missing", headers={"accept": "text/html"}).text)
    return pages


def test_pages_load_scripts_only_from_the_console(client: TestClient, tenant_a: TenantFixture) -> None:
    pages = signed_in_pages(client, tenant_a)
    sources = [src for page in pages for src in SCRIPT_SRC_RE.findall(page)]
    assert any(src.startswith("/static/vendor/plotly.min.js") for src in sources)
    assert all(src.startswith("/static/") for src in sources), sources
    for page in pages:
        assert not re.search(r"<script\b[^>]*\bsrc=[\"']?(https?:)?//", page, re.IGNORECASE)
        assert not re.search(r"<script\b(?![^>]*\bsrc=)[^>]*>", page, re.IGNORECASE), "inline script"


@pytest.mark.parametrize("path", ["/", "/access/users", "/access/api-keys", "/access/audit"])
def test_pages_are_not_cached(client: TestClient, tenant_a: TenantFixture, path: str) -> None:
    admin(client, tenant_a)
    response = client.get(path)
    assert response.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert csrf_from(response.text)
