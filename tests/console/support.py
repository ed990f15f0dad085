"""Helpers the console tests share: reading forms out of pages, signing in, reading the audit log."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from httpx2 import Response
from sqlalchemy import select

from iip.kernel.audit import AuditEntry
from iip.kernel.runtime import Runtime

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
