"""Tenants, users, API keys, roles and the audit trail over HTTP, plus the platform's HTTP conventions."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import shutil
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.exc import DataError

from iip.api.app import create_app
from iip.api.middleware import DOCS_CSP, SECURITY_HEADERS
from iip.kernel.auth import ApiKey, Role
from iip.kernel.db import utcnow
from iip.kernel.runtime import Runtime
from iip.kernel.settings import Settings
from tests.api.support import (
    GENERATED_REQUEST_ID,
    PROBLEM_JSON,
    api_routes,
    app_with_api_settings,
    assert_problem,
)
from tests.conftest import TenantFixture

TENANT_ROLES = tuple(role for role in Role if role is not Role.PLATFORM_OPERATOR)
# Tests about HTTP conventions that do not depend on the database engine.
SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"])


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def new_user(role: Role = Role.VIEWER, **extra: Any) -> dict[str, Any]:
    username = unique(role.value.replace("_", "-"))
    return {"username": username, "password": "correct-horse-battery", "role": role, **extra}


def create_user(client: TestClient, headers: dict[str, str], role: Role = Role.VIEWER) -> dict[str, Any]:
    response = client.post("/api/users", json=new_user(role), headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def create_key(client: TestClient, headers: dict[str, str], role: Role = Role.VIEWER, **extra: Any) -> dict[str, Any]:
    response = client.post("/api/api-keys", json={"name": unique("key"), "role": role, **extra}, headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


# --- users ------------------------------------------------------------------------------------


def test_admin_creates_users_with_every_tenant_role(client: TestClient, tenant_a: TenantFixture) -> None:
    created = {role: create_user(client, tenant_a.headers(), role) for role in TENANT_ROLES}
    for role, user in created.items():
        assert user["role"] == role.value
        assert user["tenant_id"] == tenant_a.id
        assert user["active"] is True
        assert "password" not in user
        assert "password_hash" not in user
    listed = client.get("/api/users", headers=tenant_a.headers()).json()
    assert {u["id"] for u in created.values()} <= {u["id"] for u in listed}
    fetched = client.get(f"/api/users/{created[Role.AUDITOR]['id']}", headers=tenant_a.headers())
    assert fetched.status_code == 200
    assert fetched.json() == created[Role.AUDITOR]


def test_only_platform_operators_create_platform_operators(client: TestClient, tenant_a: TenantFixture) -> None:
    refused = client.post("/api/users", json=new_user(Role.PLATFORM_OPERATOR), headers=tenant_a.headers())
    assert_problem(refused, 403, "forbidden")
    accepted = client.post(
        "/api/users", json=new_user(Role.PLATFORM_OPERATOR), headers=tenant_a.headers(Role.PLATFORM_OPERATOR)
    )
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["role"] == "platform_operator"


def test_admin_cannot_promote_to_or_change_a_platform_operator(client: TestClient, tenant_a: TenantFixture) -> None:
    viewer = create_user(client, tenant_a.headers())
    promote = client.patch(f"/api/users/{viewer['id']}", json={"role": "platform_operator"}, headers=tenant_a.headers())
    assert_problem(promote, 403, "forbidden")
    operator = create_user(client, tenant_a.headers(Role.PLATFORM_OPERATOR), Role.PLATFORM_OPERATOR)
    # A new password would let the tenant admin log in as a cross-tenant operator.
    for change in ({"password": "a-password-of-my-choosing"}, {"role": "viewer"}, {"active": False}):
        response = client.patch(f"/api/users/{operator['id']}", json=change, headers=tenant_a.headers())
        assert_problem(response, 403, "forbidden")
    after = client.get(f"/api/users/{operator['id']}", headers=tenant_a.headers()).json()
    assert after == operator
    by_operator = client.patch(
        f"/api/users/{operator['id']}", json={"display_name": "Ops"}, headers=tenant_a.headers(Role.PLATFORM_OPERATOR)
    )
    assert by_operator.status_code == 200, by_operator.text
    assert by_operator.json()["display_name"] == "Ops"


def test_duplicate_username_is_a_conflict(client: TestClient, tenant_a: TenantFixture, tenant_b: TenantFixture) -> None:
    body = new_user()
    assert client.post("/api/users", json=body, headers=tenant_a.headers()).status_code == 201
    again = client.post("/api/users", json=body, headers=tenant_a.headers())
    assert_problem(again, 409, "user_exists")
    # Usernames are global logins, so another tenant cannot take it either.
    elsewhere = client.post("/api/users", json=body, headers=tenant_b.headers())
    assert_problem(elsewhere, 409, "user_exists")


def test_short_password_and_bad_username_are_invalid(client: TestClient, tenant_a: TenantFixture) -> None:
    short = new_user(password="short-pw")
    problem = assert_problem(client.post("/api/users", json=short, headers=tenant_a.headers()), 422, "invalid")
    assert "password" in problem["detail"]
    bad_name = new_user(username="Not A Name!")
    assert_problem(client.post("/api/users", json=bad_name, headers=tenant_a.headers()), 422, "invalid")
    names = {u["username"] for u in client.get("/api/users", headers=tenant_a.headers()).json()}
    assert short["username"] not in names


def test_patch_user_and_unlock(client: TestClient, tenant_a: TenantFixture) -> None:
    user = create_user(client, tenant_a.headers())
    patched = client.patch(
        f"/api/users/{user['id']}", json={"role": "engineer", "display_name": "Li Wei"}, headers=tenant_a.headers()
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["role"], patched.json()["display_name"]) == ("engineer", "Li Wei")
    too_short = client.patch(f"/api/users/{user['id']}", json={"password": "short-pw"}, headers=tenant_a.headers())
    assert_problem(too_short, 422, "invalid")
    unlocked = client.post(f"/api/users/{user['id']}/unlock", headers=tenant_a.headers())
    assert unlocked.status_code == 200, unlocked.text
    assert unlocked.json()["locked_until"] is None


# --- API keys ---------------------------------------------------------------------------------


def test_api_key_secret_is_shown_once_and_authenticates(client: TestClient, tenant_a: TenantFixture) -> None:
    created = create_key(client, tenant_a.headers(), Role.OPERATOR)
    secret = created["key"]
    assert secret.startswith(f"iip_{created['prefix']}_")
    assert created["role"] == "operator"
    assert created["tenant_id"] == tenant_a.id

    listed = client.get("/api/api-keys", headers=tenant_a.headers())
    assert listed.status_code == 200
    assert created["id"] in {k["id"] for k in listed.json()}
    assert all("key" not in k for k in listed.json())
    assert secret not in listed.text
    single = client.get(f"/api/api-keys/{created['id']}", headers=tenant_a.headers())
    assert single.status_code == 200
    assert "key" not in single.json()
    assert secret not in single.text

    me = client.get("/api/me", headers=bearer(secret))
    assert me.status_code == 200, me.text
    assert me.json() == {
        "kind": "apikey",
        "id": created["id"],
        "name": created["name"],
        "tenant_id": tenant_a.id,
        "role": "operator",
    }
    # A near miss of the secret is not the secret.
    assert_problem(client.get("/api/me", headers=bearer(secret[:-1] + ("A" if secret[-1] != "A" else "B"))), 401)


@pytest.mark.parametrize(
    "authorization",
    ["Basic dXNlcjpwYXNz", "Bearer ", "Bearer not-a-key", "Bearer iip_000000000000_unknown", "iip_abc"],
)
def test_bad_credentials_are_unauthenticated(client: TestClient, authorization: str) -> None:
    response = client.get("/api/me", headers={"Authorization": authorization})
    assert_problem(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_revoked_key_is_refused(client: TestClient, tenant_a: TenantFixture) -> None:
    created = create_key(client, tenant_a.headers())
    assert client.get("/api/me", headers=bearer(created["key"])).status_code == 200
    revoked = client.delete(f"/api/api-keys/{created['id']}", headers=tenant_a.headers())
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None
    problem = assert_problem(client.get("/api/me", headers=bearer(created["key"])), 401, "unauthenticated")
    assert "revoked" in problem["detail"]
    listed = {k["id"]: k for k in client.get("/api/api-keys", headers=tenant_a.headers()).json()}
    assert listed[created["id"]]["revoked_at"] is not None


def test_key_expiry(client: TestClient, runtime: Runtime, tenant_a: TenantFixture) -> None:
    past = (utcnow() - dt.timedelta(minutes=5)).isoformat()
    refused = client.post("/api/api-keys", json={"name": "old", "expires_at": past}, headers=tenant_a.headers())
    assert_problem(refused, 422, "invalid")
    # A time without a zone cannot be compared with stored UTC times; it is refused, not a 500.
    naive = (utcnow() + dt.timedelta(days=1)).replace(tzinfo=None).isoformat()
    naive_refused = client.post("/api/api-keys", json={"name": "n", "expires_at": naive}, headers=tenant_a.headers())
    assert_problem(naive_refused, 422, "invalid")

    future = utcnow() + dt.timedelta(days=1)
    created = create_key(client, tenant_a.headers(), expires_at=future.isoformat())
    assert dt.datetime.fromisoformat(created["expires_at"]) == future
    assert client.get("/api/me", headers=bearer(created["key"])).status_code == 200
    with runtime.db.session() as session:
        key = session.get(ApiKey, created["id"])
        assert key is not None
        key.expires_at = utcnow() - dt.timedelta(seconds=1)
    problem = assert_problem(client.get("/api/me", headers=bearer(created["key"])), 401, "unauthenticated")
    assert "expired" in problem["detail"]


def test_key_is_bound_to_its_role(client: TestClient, tenant_a: TenantFixture) -> None:
    viewer = create_key(client, tenant_a.headers(), Role.VIEWER)
    assert client.get("/api/tenants", headers=bearer(viewer["key"])).status_code == 200
    refused = client.post("/api/users", json=new_user(), headers=bearer(viewer["key"]))
    problem = assert_problem(refused, 403, "forbidden")
    assert problem["permission"] == "access.admin"
    assert_problem(
        client.post("/api/api-keys", json={"name": "escalate", "role": "admin"}, headers=bearer(viewer["key"])),
        403,
        "forbidden",
    )
    refused = client.post("/api/api-keys", json={"name": "po", "role": "platform_operator"}, headers=tenant_a.headers())
    assert_problem(refused, 403, "forbidden")


def test_keys_of_a_deactivated_tenant_stop_working(
    client: TestClient, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    assert client.get("/api/me", headers=tenant_b.headers()).status_code == 200
    refused = client.patch(f"/api/tenants/{tenant_b.id}", json={"active": False}, headers=tenant_b.headers())
    assert_problem(refused, 403, "forbidden")
    deactivated = client.patch(
        f"/api/tenants/{tenant_b.id}", json={"active": False}, headers=tenant_a.headers(Role.PLATFORM_OPERATOR)
    )
    assert deactivated.status_code == 200, deactivated.text
    assert deactivated.json()["active"] is False
    assert_problem(client.get("/api/me", headers=tenant_b.headers()), 401, "unauthenticated")
    assert client.get("/api/me", headers=tenant_a.headers()).status_code == 200


# --- tenants ----------------------------------------------------------------------------------


def test_only_platform_operators_create_tenants(client: TestClient, tenant_a: TenantFixture) -> None:
    for role in TENANT_ROLES:
        response = client.post("/api/tenants", json={"name": unique("t")}, headers=tenant_a.headers(role))
        assert_problem(response, 403, "forbidden")
    name = unique("acme-chem")
    body = {"name": name, "display_name": "ACME Chemicals"}
    created = client.post("/api/tenants", json=body, headers=tenant_a.headers(Role.PLATFORM_OPERATOR))
    assert created.status_code == 201, created.text
    assert (created.json()["name"], created.json()["display_name"], created.json()["active"]) == (
        name,
        "ACME Chemicals",
        True,
    )
    again = client.post("/api/tenants", json={"name": name}, headers=tenant_a.headers(Role.PLATFORM_OPERATOR))
    assert_problem(again, 409, "tenant_exists")
    bad = client.post("/api/tenants", json={"name": "-bad name"}, headers=tenant_a.headers(Role.PLATFORM_OPERATOR))
    assert_problem(bad, 422, "invalid")


def test_admin_sees_only_own_tenant(client: TestClient, tenant_a: TenantFixture, tenant_b: TenantFixture) -> None:
    own = client.get("/api/tenants", headers=tenant_a.headers())
    assert own.status_code == 200
    assert [t["id"] for t in own.json()] == [tenant_a.id]
    everything = client.get("/api/tenants", headers=tenant_a.headers(Role.PLATFORM_OPERATOR))
    assert {tenant_a.id, tenant_b.id} <= {t["id"] for t in everything.json()}
    renamed = client.patch(f"/api/tenants/{tenant_a.id}", json={"display_name": "Plant A"}, headers=tenant_a.headers())
    assert renamed.status_code == 200, renamed.text
    assert client.get(f"/api/tenants/{tenant_a.id}", headers=tenant_a.headers()).json()["display_name"] == "Plant A"


# --- role matrix ------------------------------------------------------------------------------

EVERYONE = frozenset(Role)
ADMINS = frozenset({Role.ADMIN, Role.PLATFORM_OPERATOR})


@dataclasses.dataclass(frozen=True)
class Permission:
    method: str
    path: str
    allowed: frozenset[Role]
    body: Callable[[], dict[str, Any]] | None = None


ROLE_MATRIX = (
    Permission("GET", "/api/me", EVERYONE),
    Permission("GET", "/api/tenants", EVERYONE),
    Permission("POST", "/api/tenants", frozenset({Role.PLATFORM_OPERATOR}), lambda: {"name": unique("t")}),
    Permission("GET", "/api/users", ADMINS),
    Permission("POST", "/api/users", ADMINS, new_user),
    Permission("GET", "/api/api-keys", ADMINS),
    Permission("POST", "/api/api-keys", ADMINS, lambda: {"name": unique("k")}),
    Permission("GET", "/api/audit", frozenset({Role.ADMIN, Role.AUDITOR, Role.PLATFORM_OPERATOR})),
    Permission("GET", "/api/audit/verify", frozenset({Role.ADMIN, Role.AUDITOR, Role.PLATFORM_OPERATOR})),
)


def test_role_matrix(client: TestClient, tenant_a: TenantFixture, subtests: pytest.Subtests) -> None:
    for permission in ROLE_MATRIX:
        for role in Role:
            with subtests.test(f"{permission.method} {permission.path} as {role}"):
                body = permission.body() if permission.body else None
                response = client.request(permission.method, permission.path, json=body, headers=tenant_a.headers(role))
                if role in permission.allowed:
                    assert response.status_code in (200, 201), response.text
                else:
                    assert_problem(response, 403, "forbidden")


# --- audit ------------------------------------------------------------------------------------


def audit_entries(client: TestClient, headers: dict[str, str], **query: Any) -> list[dict[str, Any]]:
    response = client.get("/api/audit", params={"limit": 1000, **query}, headers=headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_writes_are_audited(client: TestClient, tenant_a: TenantFixture, tenant_b: TenantFixture) -> None:
    admin, platform = tenant_a.headers(), tenant_a.headers(Role.PLATFORM_OPERATOR)
    user = create_user(client, admin)
    assert client.patch(f"/api/users/{user['id']}", json={"display_name": "x"}, headers=admin).status_code == 200
    assert client.post(f"/api/users/{user['id']}/unlock", headers=admin).status_code == 200
    key = create_key(client, admin)
    assert client.delete(f"/api/api-keys/{key['id']}", headers=admin).status_code == 200
    assert client.patch(f"/api/tenants/{tenant_a.id}", json={"display_name": "A"}, headers=admin).status_code == 200
    tenant_created = client.post("/api/tenants", json={"name": unique("t")}, headers=platform)
    assert tenant_created.status_code == 201, tenant_created.text
    tenant = tenant_created.json()
    duplicate = client.post("/api/users", json={**new_user(), "username": user["username"]}, headers=admin)
    assert duplicate.status_code == 409
    denied = client.post("/api/users", json=new_user(), headers=tenant_a.headers(Role.VIEWER))
    assert denied.status_code == 403
    missing = client.patch("/api/users/no-such-user", json={"display_name": "x"}, headers=admin)
    assert missing.status_code == 404

    expected = [
        ("apikey:admin", "POST /api/users", "user", user["id"], "success"),
        ("apikey:admin", "PATCH /api/users/{user_id}", "user", user["id"], "success"),
        ("apikey:admin", "POST /api/users/{user_id}/unlock", "user", user["id"], "success"),
        ("apikey:admin", "POST /api/api-keys", "api_key", key["id"], "success"),
        ("apikey:admin", "DELETE /api/api-keys/{key_id}", "api_key", key["id"], "success"),
        ("apikey:admin", "PATCH /api/tenants/{tenant_id}", "tenant", tenant_a.id, "success"),
        ("apikey:platform_operator", "POST /api/tenants", "tenant", tenant["id"], "success"),
        ("apikey:admin", "POST /api/users", "", "", "failure"),
        ("apikey:viewer", "POST /api/users", "", "", "denied"),
        ("apikey:admin", "PATCH /api/users/{user_id}", "user", "no-such-user", "failure"),
    ]
    entries = audit_entries(client, tenant_a.headers(Role.AUDITOR))
    seen = [(e["principal"], e["action"], e["object_type"], e["object_id"], e["outcome"]) for e in reversed(entries)]
    assert seen == expected
    statuses = [e["detail"] for e in reversed(entries)]
    assert statuses == [f"status={s}" for s in (201, 200, 200, 201, 200, 200, 201, 409, 403, 404)]
    for entry in entries:
        assert entry["tenant_id"] == tenant_a.id
        assert entry["source"] == "testclient"
        assert re.fullmatch(r"[0-9a-f]{64}", entry["hash"])
        assert dt.datetime.fromisoformat(entry["at"]).tzinfo is not None
    assert len({e["seq"] for e in entries}) == len(entries)

    # Other tenants' auditors see none of it; filters narrow the page.
    assert audit_entries(client, tenant_b.headers(Role.AUDITOR)) == []
    denied_only = audit_entries(client, tenant_a.headers(Role.AUDITOR), outcome="denied")
    assert [e["principal"] for e in denied_only] == ["apikey:viewer"]
    by_action = audit_entries(client, tenant_a.headers(Role.AUDITOR), action="/api/api-keys")
    assert {e["action"] for e in by_action} == {"POST /api/api-keys", "DELETE /api/api-keys/{key_id}"}


def test_anonymous_writes_are_audited_for_platform_operators(client: TestClient, tenant_a: TenantFixture) -> None:
    assert client.post("/api/users", json=new_user()).status_code == 401
    anonymous = audit_entries(client, tenant_a.headers(Role.PLATFORM_OPERATOR), principal="anonymous")
    assert [(e["action"], e["outcome"], e["tenant_id"]) for e in anonymous] == [("POST /api/users", "denied", None)]
    assert audit_entries(client, tenant_a.headers(Role.AUDITOR), principal="anonymous") == []


def test_audit_source_honours_forwarded_for_only_from_trusted_proxies(
    runtime: Runtime, tenant_a: TenantFixture
) -> None:
    forwarded = {**tenant_a.headers(), "X-Forwarded-For": "203.0.113.7, 10.0.0.1"}
    with TestClient(create_app(runtime=runtime, configure_logs=False)) as direct:
        assert direct.post("/api/api-keys", json={"name": "direct"}, headers=forwarded).status_code == 201
    with TestClient(app_with_api_settings(runtime, trusted_proxies=["testclient"])) as proxied:
        assert proxied.post("/api/api-keys", json={"name": "proxied"}, headers=forwarded).status_code == 201
        sources = [e["source"] for e in reversed(audit_entries(proxied, tenant_a.headers(Role.AUDITOR)))]
    assert sources == ["testclient", "203.0.113.7"]


def test_audit_access_and_verification(client: TestClient, tenant_a: TenantFixture) -> None:
    create_user(client, tenant_a.headers())
    for role in (Role.VIEWER, Role.OPERATOR, Role.ENGINEER):
        assert_problem(client.get("/api/audit", headers=tenant_a.headers(role)), 403, "forbidden")
        assert_problem(client.get("/api/audit/verify", headers=tenant_a.headers(role)), 403, "forbidden")
    assert len(audit_entries(client, tenant_a.headers(Role.AUDITOR))) == 1
    verified = client.get("/api/audit/verify", headers=tenant_a.headers(Role.AUDITOR))
    assert verified.status_code == 200
    everything = audit_entries(client, tenant_a.headers(Role.PLATFORM_OPERATOR))
    # Only the user creation: reads, refused or not, are not audited.
    assert len(everything) == 1
    assert verified.json() == {"ok": True, "checked": 1, "problem": "", "seq": None}


def test_audit_pages_newest_first(client: TestClient, tenant_a: TenantFixture) -> None:
    for _ in range(3):
        create_key(client, tenant_a.headers())
    first = client.get("/api/audit", params={"limit": 2}, headers=tenant_a.headers(Role.AUDITOR)).json()
    assert len(first["items"]) == 2
    assert first["items"][0]["seq"] > first["items"][1]["seq"]
    older = {"limit": 2, "before_seq": first["next_before_seq"]}
    rest = client.get("/api/audit", params=older, headers=tenant_a.headers(Role.AUDITOR)).json()
    assert len(rest["items"]) == 1
    assert rest["next_before_seq"] is None
    assert rest["items"][0]["seq"] < first["items"][1]["seq"]
    # The largest accepted cursor works on both engines (PostgreSQL's column is 32-bit).
    top = client.get("/api/audit", params={"before_seq": 2**63 - 1}, headers=tenant_a.headers(Role.AUDITOR))
    assert top.status_code == 200, top.text
    assert len(top.json()["items"]) == 3


# --- problem+json -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ProblemCase:
    name: str
    method: str
    path: str
    role: Role | None
    status: int
    code: str
    body: Any = None


PROBLEM_CASES = (
    ProblemCase("no credentials", "GET", "/api/users", None, 401, "unauthenticated"),
    ProblemCase("role lacks permission", "GET", "/api/users", Role.VIEWER, 403, "forbidden"),
    ProblemCase("unknown object", "GET", "/api/users/no-such-user", Role.ADMIN, 404, "not_found"),
    ProblemCase("unknown key", "DELETE", "/api/api-keys/no-such-key", Role.ADMIN, 404, "not_found"),
    ProblemCase("unknown path", "GET", "/api/no-such-thing", Role.ADMIN, 404, "not_found"),
    ProblemCase("wrong method", "PUT", "/api/users", Role.ADMIN, 405, "method_not_allowed"),
    ProblemCase("missing body fields", "POST", "/api/users", Role.ADMIN, 422, "invalid", {}),
    ProblemCase("wrong body type", "POST", "/api/tenants", Role.PLATFORM_OPERATOR, 422, "invalid", {"name": 5}),
    ProblemCase("body not an object", "POST", "/api/api-keys", Role.ADMIN, 422, "invalid", ["name"]),
    ProblemCase("query out of range", "GET", "/api/audit?limit=0", Role.AUDITOR, 422, "invalid"),
    ProblemCase("query not a number", "GET", "/api/audit?before_seq=soon", Role.AUDITOR, 422, "invalid"),
    ProblemCase("cursor too large", "GET", "/api/audit?before_seq=9223372036854775808", Role.AUDITOR, 422, "invalid"),
    # PostgreSQL cannot hold NUL; SQLite could, so both refuse it up front.
    ProblemCase("NUL in the path", "GET", "/api/users/a%00b", Role.ADMIN, 400, "bad_request"),
    ProblemCase("NUL in the query", "GET", "/api/audit?action=a%00b", Role.AUDITOR, 400, "bad_request"),
    ProblemCase("NUL in a body field", "POST", "/api/api-keys", Role.ADMIN, 422, "invalid", {"name": "a\u0000b"}),
    ProblemCase("NUL in a name", "PATCH", "/api/tenants/{tenant}", Role.ADMIN, 422, "invalid", {"display_name": "\0"}),
)


def test_errors_are_problem_json(client: TestClient, tenant_a: TenantFixture, subtests: pytest.Subtests) -> None:
    for case in PROBLEM_CASES:
        with subtests.test(case.name):
            headers = tenant_a.headers(case.role) if case.role else {}
            path = case.path.format(tenant=tenant_a.id)
            response = client.request(case.method, path, json=case.body, headers=headers)
            body = assert_problem(response, case.status, case.code)
            if case.status == 405:
                assert "GET" in response.headers["allow"].split(", ")
            if case.status == 422 and case.method in {"POST", "PATCH"}:
                assert body["errors"], body
                assert all({"loc", "msg", "type"} <= set(e) for e in body["errors"])
                assert body["detail"].startswith("body")


def test_validation_errors_name_every_field(client: TestClient, tenant_a: TenantFixture) -> None:
    response = client.post("/api/users", json={"username": "x", "role": "overlord"}, headers=tenant_a.headers())
    body = assert_problem(response, 422, "invalid")
    locations = {tuple(e["loc"]) for e in body["errors"]}
    assert locations == {("body", "username"), ("body", "password"), ("body", "role")}


def test_malformed_json_is_a_problem(client: TestClient, tenant_a: TenantFixture) -> None:
    response = client.post(
        "/api/users", content=b'{"username": ', headers={**tenant_a.headers(), "Content-Type": "application/json"}
    )
    assert_problem(response, 422, "invalid")


@SQLITE_ONLY
def test_unexpected_errors_are_problems_with_request_id_and_audit(runtime: Runtime, tenant_a: TenantFixture) -> None:
    app = create_app(runtime=runtime, configure_logs=False)

    def explode() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/api/test-explosion", explode, methods=["POST"])
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/api/test-explosion", headers={"X-Request-ID": "trace-500"})
        body = assert_problem(response, 500, "internal_error")
        assert body["request_id"] == "trace-500"
        assert "boom" not in response.text
        for name in SECURITY_HEADERS:
            assert name in response.headers
        entries = audit_entries(client, tenant_a.headers(Role.PLATFORM_OPERATOR), action="test-explosion")
    assert [(e["outcome"], e["detail"]) for e in entries] == [("failure", "status=500")]


@SQLITE_ONLY
def test_values_the_database_refuses_are_invalid_input(runtime: Runtime) -> None:
    app = create_app(runtime=runtime, configure_logs=False)

    def refuse() -> None:
        raise DataError("INSERT ...", {}, ValueError("PostgreSQL text fields cannot contain NUL (0x00) bytes"))

    app.add_api_route("/api/test-refusal", refuse, methods=["POST"])
    with TestClient(app) as client:
        problem = assert_problem(client.post("/api/test-refusal"), 422, "invalid")
    assert "INSERT" not in problem["detail"]


# --- request ids, headers, CORS ---------------------------------------------------------------


@SQLITE_ONLY
@pytest.mark.parametrize("request_id", ["abc-123", "edge.gw_7", "A" * 64])
def test_sane_request_id_is_echoed(client: TestClient, request_id: str) -> None:
    ok = client.get("/healthz", headers={"X-Request-ID": request_id})
    assert ok.headers["x-request-id"] == request_id
    problem = client.get("/api/me", headers={"X-Request-ID": request_id})
    assert assert_problem(problem, 401)["request_id"] == request_id


@SQLITE_ONLY
@pytest.mark.parametrize("request_id", [None, "", "has space", "A" * 65, "<script>", "a/b", "id\u00e9"])
def test_other_request_ids_are_replaced(client: TestClient, request_id: str | None) -> None:
    headers = {} if request_id is None else {"X-Request-ID": request_id.encode()}
    first = client.get("/api/me", headers=headers)
    second = client.get("/api/me", headers=headers)
    for response in (first, second):
        assert GENERATED_REQUEST_ID.fullmatch(response.headers["x-request-id"])
        assert response.json()["request_id"] == response.headers["x-request-id"]
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


@SQLITE_ONLY
def test_security_headers(client: TestClient, tenant_a: TenantFixture) -> None:
    for response in (
        client.get("/healthz"),
        client.get("/api/me", headers=tenant_a.headers()),
        client.get("/api/me"),
        client.get("/api/no-such-thing"),
        client.get("/openapi.json"),
    ):
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (response.url, name)
        assert "strict-transport-security" not in response.headers  # dev mode serves plain HTTP
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-security-policy"] == DOCS_CSP


@SQLITE_ONLY
def test_production_mode_sends_hsts(runtime: Runtime) -> None:
    settings = Settings(
        data_dir=runtime.settings.data_dir,
        database_url=runtime.settings.database_url,
        mode="production",
        secret_key="s" * 48,
        log_level="WARNING",
    )
    app = create_app(runtime=dataclasses.replace(runtime, settings=settings), configure_logs=False)
    with TestClient(app) as client:
        assert client.get("/healthz").headers["strict-transport-security"].startswith("max-age=")


@SQLITE_ONLY
def test_cors_is_off_by_default(client: TestClient, tenant_a: TenantFixture) -> None:
    origin = {"Origin": "https://console.example.com"}
    simple = client.get("/api/me", headers={**origin, **tenant_a.headers()})
    assert simple.status_code == 200
    assert "access-control-allow-origin" not in simple.headers
    preflight = client.options("/api/users", headers={**origin, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers


@SQLITE_ONLY
def test_cors_allows_configured_origins(runtime: Runtime, tenant_a: TenantFixture) -> None:
    allowed = "https://console.example.com"
    with TestClient(app_with_api_settings(runtime, cors_origins=[allowed])) as client:
        simple = client.get("/api/me", headers={"Origin": allowed, **tenant_a.headers()})
        assert simple.status_code == 200
        assert simple.headers["access-control-allow-origin"] == allowed
        preflight = client.options(
            "/api/users",
            headers={
                "Origin": allowed,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "Authorization, Content-Type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == allowed
        assert "POST" in preflight.headers["access-control-allow-methods"]
        stranger = client.get("/api/me", headers={"Origin": "https://evil.example.net", **tenant_a.headers()})
        assert "access-control-allow-origin" not in stranger.headers


# --- metrics, health, readiness, OpenAPI ------------------------------------------------------


@SQLITE_ONLY
def test_metrics_in_prometheus_text_format(client: TestClient, tenant_a: TenantFixture) -> None:
    assert client.get("/api/me", headers=tenant_a.headers()).status_code == 200
    assert client.get("/api/users/someone-else", headers=tenant_a.headers()).status_code == 404
    assert client.get("/no/such/page/4711").status_code == 404
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    assert samples[("iip_http_requests_total", (("method", "GET"), ("route", "/api/me"), ("status", "200")))] == 1
    # Labels carry the route template, so ids and unknown paths cannot blow up the series count.
    assert (
        samples[("iip_http_requests_total", (("method", "GET"), ("route", "/api/users/{user_id}"), ("status", "404")))]
        == 1
    )
    assert samples[("iip_http_requests_total", (("method", "GET"), ("route", "unmatched"), ("status", "404")))] == 1
    assert not any("4711" in str(labels) for _, labels in samples)
    assert samples[("iip_module_healthy", (("module", "access"),))] == 1
    assert any(name == "iip_http_request_duration_seconds_bucket" for name, _ in samples)


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def unreachable_database_urls(tmp_path: Path, port: int) -> dict[str, str]:
    return {
        "sqlite": f"sqlite:///{tmp_path / 'removed' / 'iip.db'}",
        "postgresql": f"postgresql+psycopg://postgres@127.0.0.1:{port}/test?connect_timeout=2",
    }


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_readyz_reports_an_unreachable_database(tmp_path: Path, closed_port: int, engine: str) -> None:
    url = unreachable_database_urls(tmp_path, closed_port)[engine]
    runtime = Runtime.build(Settings(data_dir=tmp_path / "var", database_url=url, log_level="WARNING"))
    shutil.rmtree(tmp_path / "removed", ignore_errors=True)  # the engine made it; now it is gone
    with TestClient(create_app(runtime=runtime, configure_logs=False)) as client:
        assert client.get("/healthz").status_code == 200  # alive, just not ready
        ready = client.get("/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["bus"] == "ok"
    assert body["checks"]["database"].startswith("error: ")


def test_readyz_ok(client: TestClient) -> None:
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"database": "ok", "bus": "ok"}}


OPERATION_ID = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


def operation_ids(schema: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {
        (method, path): operation.get("operationId", "")
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


@SQLITE_ONLY
def test_openapi_operation_ids_are_unique_and_stable(client: TestClient, runtime: Runtime) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    ids = operation_ids(schema)
    app = client.app
    assert isinstance(app, FastAPI)
    # OpenAPI names path parameters without Starlette's convertors: {suffix:path} is {suffix}.
    documented = {
        (m.lower(), re.sub(r"\{(\w+):[^}]+\}", r"{\1}", r.path))
        for r in api_routes(app)
        for m in r.methods
        if r.route.include_in_schema
    }
    assert documented <= set(ids), "routes missing from the OpenAPI document"
    assert len(set(ids.values())) == len(ids), "duplicate operation ids"
    for (method, path), operation_id in ids.items():
        assert OPERATION_ID.fullmatch(operation_id), f"{method.upper()} {path}: {operation_id!r}"
        tag = schema["paths"][path][method]["tags"][0]
        assert operation_id.startswith(f"{tag}."), f"{method.upper()} {path}: {operation_id!r} not under tag {tag!r}"
    # The same code gives the same ids: clients generate code from them.
    # A second app needs a runtime of its own: background consumers belong to one app's event loop.
    other = Runtime.build(runtime.settings)
    try:
        with TestClient(create_app(runtime=other, configure_logs=False)) as again:
            assert operation_ids(again.get("/openapi.json").json()) == ids
    finally:
        other.db.dispose()
    assert {
        ("get", "/healthz"): "platform.healthz",
        ("get", "/readyz"): "platform.readyz",
        ("get", "/metrics"): "platform.prometheus_metrics",
        ("get", "/api/users"): "access.list_users",
        ("post", "/api/users"): "access.create_user",
        ("delete", "/api/api-keys/{key_id}"): "access.revoke_api_key",
        ("get", "/api/audit/verify"): "access.verify_audit",
    }.items() <= ids.items()


@SQLITE_ONLY
def test_openapi_documents_problems_as_problem_json(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert "Problem" in schema["components"]["schemas"]
    users = schema["paths"]["/api/users"]["post"]["responses"]
    for status in ("401", "403", "409", "422"):
        assert list(users[status]["content"]) == [PROBLEM_JSON], status
