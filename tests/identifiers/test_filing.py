"""Prefix filing (备案) over the API and the CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from iip.identifiers.filing import parse_credit_code
from iip.identifiers.models import Prefix
from iip.identifiers.service import HandleService
from iip.kernel.audit import AuditEntry
from iip.kernel.auth import AccessService, Role
from iip.kernel.errors import Invalid
from iip.kernel.runtime import Runtime
from tests.cli.conftest import InProcessIip
from tests.conftest import TenantFixture
from tests.identifiers.conftest import basic, url_value

PARENT = "88.200"
PREFIX = "88.200.1001"
SECRET = "applicant-secret-1"
CREDIT_CODE = "91350100M000100Y43"  # the usual example; its check character holds


def application(prefix: str = PREFIX, **company: Any) -> dict[str, Any]:
    return {
        "prefix": prefix,
        "parent": PARENT,
        "secret": SECRET,
        "company": {
            "name": "福建某某机械有限公司",
            "credit_code": CREDIT_CODE,
            "address": "福州市鼓楼区某路1号",
            "contact_name": "张三",
            "contact_phone": "0591-12345678",
            "industry": "C34 通用设备制造业",
            **company,
        },
    }


@pytest.fixture
def parent(runtime: Runtime, tenant_b: TenantFixture) -> str:
    """The secondary node's own prefix, homed here (in another tenant than the applicant's)."""
    with runtime.db.session() as session:
        HandleService(session).create_prefix(tenant_b.id, PARENT, "node-prefix-secret", actor="test")
    return PARENT


def apply(client: TestClient, tenant: TenantFixture, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = client.post("/api/filings", json=body or application(), headers=tenant.headers())
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def audit_actions(runtime: Runtime, object_id: str) -> list[str]:
    with runtime.db.session() as session:
        query = select(AuditEntry.action).where(AuditEntry.object_id == object_id).order_by(AuditEntry.seq)
        return [a for a in session.scalars(query) if a.startswith("identifiers.filing.")]


def put_handle(client: TestClient, headers: dict[str, str], suffix: str = "P-1") -> Any:
    return client.put(
        f"/api/handles/{PREFIX}/{suffix}", json={"values": [url_value("https://e.example/p")]}, headers=headers
    )


def test_apply_is_pending_and_writes_are_refused(
    client: TestClient, runtime: Runtime, parent: str, tenant_a: TenantFixture
) -> None:
    filing = apply(client, tenant_a)
    assert (filing["status"], filing["prefix"], filing["parent"], filing["tenant_id"]) == (
        "pending",
        PREFIX,
        PARENT,
        tenant_a.id,
    )
    assert filing["company"]["credit_code"] == CREDIT_CODE
    assert SECRET not in str(filing)
    assert "secret" not in str(filing).lower().replace("secret_", "")
    refused = put_handle(client, tenant_a.headers())
    assert (refused.status_code, refused.json()["responseCode"]) == (404, 301)
    assert "pending" in refused.json()["message"]
    listed = client.get(f"/api/handles?prefix={PREFIX}", headers=tenant_a.headers())
    assert listed.json()["responseCode"] == 301
    # No admin identity exists yet, so the applicant's secret opens nothing.
    assert put_handle(client, basic(f"300:0.NA/{PREFIX}", SECRET)).status_code == 401
    assert audit_actions(runtime, filing["id"]) == ["identifiers.filing.apply"]


def test_platform_operator_approves_and_writes_open(
    client: TestClient, runtime: Runtime, parent: str, tenant_a: TenantFixture
) -> None:
    filing = apply(client, tenant_a)
    approved = client.post(f"/api/filings/{filing['id']}/approve", headers=tenant_a.headers(Role.PLATFORM_OPERATOR))
    assert approved.status_code == 200, approved.text
    assert (approved.json()["status"], approved.json()["decided_by"]) == ("approved", "apikey:platform_operator")
    assert put_handle(client, tenant_a.headers(), "BY-KEY").status_code == 200
    # The admin identity holds the secret chosen when applying.
    as_identity = put_handle(client, basic(f"300:0.NA/{PREFIX}", SECRET), "BY-IDENTITY")
    assert as_identity.status_code == 200, as_identity.text
    assert client.get(f"/api/handles/{PREFIX}/BY-IDENTITY").json()["responseCode"] == 1
    with runtime.db.session() as session:
        row = session.scalar(select(Prefix).where(Prefix.prefix == PREFIX))
        assert row is not None
        assert (row.status, row.secret_hash) == ("approved", "")
    assert audit_actions(runtime, filing["id"]) == ["identifiers.filing.apply", "identifiers.filing.approve"]
    again = client.post(f"/api/filings/{filing['id']}/approve", headers=tenant_a.headers(Role.PLATFORM_OPERATOR))
    assert (again.status_code, again.json()["code"]) == (409, "filing_decided")


def test_tenant_admin_cannot_decide(client: TestClient, parent: str, tenant_a: TenantFixture) -> None:
    filing = apply(client, tenant_a)
    for path, body in (("approve", None), ("reject", {"reason": "no"})):
        response = client.post(f"/api/filings/{filing['id']}/{path}", json=body, headers=tenant_a.headers())
        assert response.status_code == 403, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
    assert client.get(f"/api/filings/{filing['id']}", headers=tenant_a.headers()).json()["status"] == "pending"


def test_rejection_and_its_reason_reach_the_applicant(
    client: TestClient, runtime: Runtime, parent: str, tenant_a: TenantFixture
) -> None:
    filing = apply(client, tenant_a)
    reason = "营业执照与信用代码不符"
    platform = tenant_a.headers(Role.PLATFORM_OPERATOR)
    empty = client.post(f"/api/filings/{filing['id']}/reject", json={"reason": "  "}, headers=platform)
    assert empty.status_code == 422
    rejected = client.post(f"/api/filings/{filing['id']}/reject", json={"reason": reason}, headers=platform)
    assert rejected.status_code == 200, rejected.text
    seen = client.get(f"/api/filings/{filing['id']}", headers=tenant_a.headers(Role.VIEWER)).json()
    assert (seen["status"], seen["reason"]) == ("rejected", reason)
    assert [f["reason"] for f in client.get("/api/filings?status=rejected", headers=tenant_a.headers()).json()] == [
        reason
    ]
    assert put_handle(client, tenant_a.headers()).status_code == 404
    assert audit_actions(runtime, filing["id"]) == ["identifiers.filing.apply", "identifiers.filing.reject"]
    # The applicant may apply again; the filing is pending once more.
    again = apply(client, tenant_a)
    assert (again["id"], again["status"], again["reason"]) == (filing["id"], "pending", "")


def test_another_tenants_filing_is_not_found(
    client: TestClient, parent: str, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    filing = apply(client, tenant_a)
    for method, path in (("GET", ""), ("POST", "/approve")):
        response = client.request(method, f"/api/filings/{filing['id']}{path}", headers=tenant_b.headers())
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "not_found"
    assert client.get("/api/filings", headers=tenant_b.headers()).json() == []
    every = client.get("/api/filings", headers=tenant_b.headers(Role.PLATFORM_OPERATOR)).json()
    assert [f["id"] for f in every] == [filing["id"]]


@pytest.mark.parametrize(
    "credit_code",
    ["91350100M000100Y44", "91350100M000100Y4", "91350100M00010OY43", "9135010AM000100Y43", "913501OOM000100Y43"],
)
def test_bad_credit_code_is_422(client: TestClient, parent: str, tenant_a: TenantFixture, credit_code: str) -> None:
    response = client.post("/api/filings", json=application(credit_code=credit_code), headers=tenant_a.headers())
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert client.get("/api/filings", headers=tenant_a.headers()).json() == []


def test_credit_code_check_character() -> None:
    assert parse_credit_code(" 91350100m000100y43 ") == CREDIT_CODE
    for real in ("91110000600037341L", "9144030071526726XG"):
        assert parse_credit_code(real) == real
    with pytest.raises(Invalid, match="check character"):
        parse_credit_code("91110000600037341K")


def test_applications_that_cannot_be_filed(
    client: TestClient, runtime: Runtime, parent: str, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    headers = tenant_a.headers()
    not_under = client.post("/api/filings", json=application("88.300.1"), headers=headers)
    assert not_under.status_code == 422
    body = application("88.999.1")
    body["parent"] = "88.999"
    no_parent = client.post("/api/filings", json=body, headers=headers)
    assert (no_parent.status_code, no_parent.json()["code"]) == (422, "parent_not_homed")
    viewer = client.post("/api/filings", json=application(), headers=tenant_a.headers(Role.VIEWER))
    assert viewer.status_code == 403
    apply(client, tenant_a)
    taken = client.post("/api/filings", json=application(), headers=tenant_b.headers())
    assert (taken.status_code, taken.json()["code"]) == (409, "prefix_exists")


def test_cli_lists_approves_and_rejects(iip_in_process: InProcessIip, cli_db: Any) -> None:
    iip = iip_in_process
    assert iip("db", "upgrade").exit_code == 0
    assert iip("tenant", "create", "node").exit_code == 0
    assert iip("tenant", "create", "acme").exit_code == 0
    assert iip("id", "prefix", "create", PARENT, "--tenant", "node", stdin="node-secret-1\n").exit_code == 0
    from iip.identifiers.filing import CompanyDetails, FilingService
    from iip.kernel.auth import Principal

    company = CompanyDetails("某某公司", CREDIT_CODE, "地址", "张三", "123456", "C34")
    with cli_db.session() as session:
        acme = AccessService(session).tenant_by_name("acme")
        applicant = Principal("user", "u1", "acme-admin", acme.id, Role.ADMIN)
        service = FilingService(session)
        service.apply(applicant, f"{PARENT}.1", PARENT, company, SECRET)
        service.apply(applicant, f"{PARENT}.2", PARENT, company, SECRET)
    listed = iip("id", "filing", "list", "--status", "pending")
    assert listed.exit_code == 0, listed.output
    assert f"{PARENT}.1" in listed.stdout
    assert f"{PARENT}.2" in listed.stdout
    approved = iip("id", "filing", "approve", f"{PARENT}.1")
    assert approved.exit_code == 0, approved.output
    rejected = iip("id", "filing", "reject", f"{PARENT}.2", "--reason", "资料不全")
    assert rejected.exit_code == 0, rejected.output
    twice = iip("id", "filing", "approve", f"{PARENT}.2")
    assert twice.exit_code == 1
    assert "already rejected" in twice.stderr
    assert f"{PARENT}.2" not in iip("id", "filing", "list", "--status", "approved").stdout
    registered = iip("id", "register", f"{PARENT}.1/X1", "--url", "https://a.example", "--tenant", "acme")
    assert registered.exit_code == 0, registered.output
    refused = iip("id", "register", f"{PARENT}.2/X1", "--url", "https://a.example", "--tenant", "acme")
    assert refused.exit_code == 1
    assert "rejected" in refused.stderr
