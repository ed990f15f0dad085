"""Helpers the console tests share: reading forms out of pages, signing in, reading the audit log."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from httpx2 import Response
from sqlalchemy import select

from iip.api.app import create_app
from iip.kernel.audit import AuditEntry
from iip.kernel.auth import AccessService, Role
from iip.kernel.db import Database
from iip.kernel.module import Module
from iip.kernel.runtime import Runtime
from iip.kernel.settings import Settings
from iip.migrations.runner import upgrade
from tests.conftest import TenantFixture, database_url, make_tenant

PASSWORD = "a-long-enough-password"

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
H1_RE = re.compile(r"<h1[^>]*>(.*?)</h1>", re.DOTALL)
SCRIPT_SRC_RE = re.compile(r"<script\b[^>]*\bsrc=\"([^\"]+)\"", re.IGNORECASE)


def csrf_from(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "the page has no CSRF field"
    return match.group(1)


def heading(html: str) -> str:
    match = H1_RE.search(html)
    assert match, "the page has no heading"
    return match.group(1).strip()


def login(client: TestClient, username: str, password: str, next_path: str = "/") -> Response:
    """Fill in the login form as a browser would (its CSRF cookie and hidden token included)."""
    form = client.get("/login")
    assert form.status_code == 200, form.text
    return client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": csrf_from(form.text), "next": next_path},
        follow_redirects=False,
    )


def sign_in(client: TestClient, username: str, password: str) -> str:
    """Sign in and return the session's CSRF token, read from the dashboard."""
    response = login(client, username, password)
    assert response.status_code == 303, response.text
    home = client.get("/")
    assert home.status_code == 200, home.text
    return csrf_from(home.text)


def audit_entries(runtime: Runtime, action: str) -> list[AuditEntry]:
    with runtime.db.session() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)))


def assert_html(response: Response, status: int) -> str:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("text/html"), response.headers["content-type"]
    assert "Traceback" not in response.text
    return response.text


@dataclass(frozen=True)
class ConsoleApp:
    client: TestClient
    runtime: Runtime


@contextmanager
def console_app(
    backend: str, folder: Path, *, modules: tuple[Module, ...] | None = None, **settings: Any
) -> Iterator[ConsoleApp]:
    """One app over one freshly migrated database of that backend, signed in as nobody."""
    with database_url(backend, folder) as url:
        config = Settings(data_dir=folder / "var", database_url=url, log_format="text", log_level="WARNING", **settings)
        db = Database(config.effective_database_url)
        upgrade(db)
        runtime = Runtime.build(config, modules=modules)
        runtime.db.dispose()
        runtime.db = db
        try:
            with TestClient(create_app(runtime=runtime, configure_logs=False)) as client:
                yield ConsoleApp(client, runtime)
        finally:
            db.dispose()


def tenant_with_users(runtime: Runtime, roles: Iterable[Role]) -> TenantFixture:
    """A new tenant with its admin and one user `<tenant>-<role>` per role, all with PASSWORD."""
    tenant = make_tenant(runtime.db, f"t-{uuid.uuid4().hex[:10]}")
    with runtime.db.session() as session:
        service = AccessService(session)
        for role in roles:
            service.create_user(tenant.id, f"{tenant.name}-{role.value}", PASSWORD, role)
    return tenant


def sign_in_as(client: TestClient, tenant: TenantFixture, role: Role = Role.ADMIN, language: str = "zh_CN") -> str:
    """A fresh session of the tenant's user with that role, in that language; its CSRF token."""
    client.cookies.clear()
    if role is Role.ADMIN:
        token = sign_in(client, f"{tenant.name}-admin", tenant.admin_password)
    else:
        token = sign_in(client, f"{tenant.name}-{role.value}", PASSWORD)
    response = client.post("/lang", data={"language": language, "next": "/", "csrf_token": token})
    assert response.status_code == 200, response.text
    return token


def text_of(html: str) -> str:
    """The visible text of some HTML, with runs of white space made one space."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def heading_text(html: str) -> str:
    match = re.search(r"<h1[^>]*>(.*?)</h1>", html, re.DOTALL)
    assert match, "the page has no heading"
    return text_of(match.group(1))


def section(html: str, element_id: str) -> str:
    """The HTML of the element with that id, up to the end of its table or section."""
    start = html.find(f'id="{element_id}"')
    assert start >= 0, f"no #{element_id}"
    ends = [i for tag in ("</table>", "</section>", "</form>") if (i := html.find(tag, start)) >= 0]
    return html[start : min(ends)]
