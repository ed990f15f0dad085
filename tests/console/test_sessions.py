"""Console sign-in, sessions, lockout, CSRF and the redirect to the login page."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select

from iip.api.app import create_app
from iip.api.deps import SESSION_COOKIE
from iip.kernel.auth import ConsoleSession, Tenant, User
from iip.kernel.runtime import Runtime
from iip.kernel.settings import Mode
from tests.conftest import TenantFixture
from tests.console.support import assert_html, audit_entries, csrf_from, login, sign_in


def admin_name(tenant: TenantFixture) -> str:
    return f"{tenant.name}-admin"


def test_login_page_is_a_form_with_a_csrf_cookie(client: TestClient) -> None:
    page = assert_html(client.get("/login"), 200)
    assert 'action="/login"' in page
    assert 'lang="zh-CN"' in page  # the default language
    cookie = client.cookies.get("iip_login_csrf")
    assert cookie
    assert csrf_from(page) == cookie


def test_login_opens_a_session_and_is_audited(client: TestClient, runtime: Runtime, tenant_a: TenantFixture) -> None:
    response = login(client, admin_name(tenant_a), tenant_a.admin_password)
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    set_cookie = next(v for v in response.headers.get_list("set-cookie") if v.startswith(f"{SESSION_COOKIE}="))
    attributes = {part.strip().lower() for part in set_cookie.split(";")}
    assert {"httponly", "path=/", "samesite=lax"} <= attributes
    assert "secure" not in attributes  # dev mode serves plain HTTP
    home = assert_html(client.get("/"), 200)
    assert admin_name(tenant_a) in home
    assert tenant_a.name in home
    [entry] = audit_entries(runtime, "console.login")
    assert (entry.outcome, entry.principal, entry.tenant_id) == ("success", f"user:{admin_name(tenant_a)}", tenant_a.id)


def test_session_cookie_is_secure_in_production(runtime: Runtime, tenant_a: TenantFixture) -> None:
    runtime.settings = runtime.settings.model_copy(update={"mode": Mode.PRODUCTION, "secret_key": SecretStr("k" * 48)})
    # Secure cookies travel over HTTPS only, so the client speaks HTTPS.
    with TestClient(create_app(runtime=runtime, configure_logs=False), base_url="https://testserver") as client:
        response = login(client, admin_name(tenant_a), tenant_a.admin_password)
    assert response.status_code == 303
    set_cookie = next(v for v in response.headers.get_list("set-cookie") if v.startswith(f"{SESSION_COOKIE}="))
    assert "secure" in {part.strip().lower() for part in set_cookie.split(";")}


def test_wrong_password_is_refused_and_audited(client: TestClient, runtime: Runtime, tenant_a: TenantFixture) -> None:
    page = assert_html(login(client, admin_name(tenant_a), "not-the-password"), 401)
    assert "用户名或密码错误" in page
    assert SESSION_COOKIE not in client.cookies
    assert_html(login(client, "nobody-here", "whatever-password"), 401)
    entries = audit_entries(runtime, "console.login")
    assert [(e.outcome, e.principal) for e in entries] == [
        ("failure", f"user:{admin_name(tenant_a)}"),
        ("failure", "anonymous"),
    ]
    assert entries[0].tenant_id == tenant_a.id  # the tenant's auditors see attacks on their accounts
    # The route audits itself: the middleware adds no "POST /login" entry.
    assert audit_entries(runtime, "POST /login") == []


def test_empty_form_is_answered_inline(client: TestClient) -> None:
    page = assert_html(login(client, "", ""), 422)
    assert "请输入用户名和密码" in page


def test_lockout_after_five_failures(client: TestClient, runtime: Runtime, tenant_a: TenantFixture) -> None:
    threshold = runtime.settings.auth.lockout_threshold
    assert threshold == 5
    for attempt in range(1, threshold + 1):
        page = assert_html(login(client, admin_name(tenant_a), f"wrong-{attempt}"), 401)
        assert ("已锁定" in page) is (attempt == threshold)
    # The sixth attempt, with the right password, is refused too.
    page = assert_html(login(client, admin_name(tenant_a), tenant_a.admin_password), 401)
    assert "已锁定" in page
    assert SESSION_COOKIE not in client.cookies
    [lockout] = audit_entries(runtime, "console.lockout")
    assert (lockout.principal, lockout.outcome, lockout.tenant_id) == (
        f"user:{admin_name(tenant_a)}",
        "failure",
        tenant_a.id,
    )
    logins = audit_entries(runtime, "console.login")
    assert [e.outcome for e in logins] == ["failure"] * (threshold + 1)
    assert logins[-1].detail == "account locked"
    assert lockout.seq < logins[-1].seq


def test_unlocked_user_can_sign_in_again(client: TestClient, runtime: Runtime, tenant_a: TenantFixture) -> None:
    for attempt in range(runtime.settings.auth.lockout_threshold):
        login(client, admin_name(tenant_a), f"wrong-{attempt}")
    with runtime.db.session() as session:
        user = session.scalar(select(User).where(User.username == admin_name(tenant_a)))
        assert user is not None
        user.locked_until = None
    assert login(client, admin_name(tenant_a), tenant_a.admin_password).status_code == 303


def test_logout_closes_the_session(client: TestClient, runtime: Runtime, tenant_a: TenantFixture) -> None:
    token = sign_in(client, admin_name(tenant_a), tenant_a.admin_password)
    response = client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login"
    assert SESSION_COOKIE not in client.cookies
    with runtime.db.session() as session:
        assert session.scalars(select(ConsoleSession)).all() == []
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    assert [e.outcome for e in audit_entries(runtime, "console.logout")] == ["success"]


@pytest.fixture
def admin_client(client: TestClient, tenant_a: TenantFixture) -> tuple[TestClient, str]:
    return client, sign_in(client, admin_name(tenant_a), tenant_a.admin_password)


@pytest.mark.parametrize("token", [None, "", "wrong-token", "令牌"])
def test_posts_without_the_session_csrf_token_are_refused(
    admin_client: tuple[TestClient, str], runtime: Runtime, token: str | None
) -> None:
    client, _good = admin_client
    data = {"username": "mallory", "password": "long-enough-password", "role": "admin"}
    if token is not None:
        data["csrf_token"] = token
    page = assert_html(client.post("/access/users", data=data), 403)
    assert "表单已过期" in page
    with runtime.db.session() as session:
        assert session.scalar(select(User).where(User.username == "mallory")) is None
    # Signing out needs the token too.
    assert_html(client.post("/logout", data={"csrf_token": token or ""}), 403)
    assert_html(client.get("/"), 200)


def test_login_form_needs_its_double_submit_token(client: TestClient, tenant_a: TenantFixture) -> None:
    client.get("/login")
    data = {"username": admin_name(tenant_a), "password": tenant_a.admin_password, "next": "/"}
    assert_html(client.post("/login", data=data), 403)
    assert_html(client.post("/login", data={**data, "csrf_token": "x" * 43}), 403)
    assert SESSION_COOKIE not in client.cookies


def test_pages_redirect_to_login_and_back(client: TestClient, tenant_a: TenantFixture) -> None:
    response = client.get("/access/users?x=1", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/access/users%3Fx%3D1"
    form = assert_html(client.get(response.headers["location"]), 200)
    assert 'name="next" value="/access/users?x=1"' in form
    signed_in = login(client, admin_name(tenant_a), tenant_a.admin_password, next_path="/access/users?x=1")
    assert signed_in.headers["location"] == "/access/users?x=1"


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)", ""]
)
def test_next_must_be_a_local_path(client: TestClient, tenant_a: TenantFixture, target: str) -> None:
    response = login(client, admin_name(tenant_a), tenant_a.admin_password, next_path=target)
    assert response.headers["location"] == "/"


def test_expired_session_goes_back_to_login(client: TestClient, runtime: Runtime, tenant_a: TenantFixture) -> None:
    sign_in(client, admin_name(tenant_a), tenant_a.admin_password)
    with runtime.db.session() as session:
        for record in session.scalars(select(ConsoleSession)):
            session.delete(record)
    response = client.get("/access/api-keys", follow_redirects=False)
    assert response.headers["location"] == "/login?next=/access/api-keys"


def test_deactivated_tenant_ends_sessions_and_refuses_login(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture
) -> None:
    sign_in(client, admin_name(tenant_a), tenant_a.admin_password)
    with runtime.db.session() as session:
        tenant = session.get(Tenant, tenant_a.id)
        assert tenant is not None
        tenant.active = False
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    client.cookies.clear()
    assert_html(login(client, admin_name(tenant_a), tenant_a.admin_password), 401)
    assert audit_entries(runtime, "console.login")[-1].detail == "inactive tenant"
