"""The identifiers console pages: search, a record with its label, registration and prefix filings (备案)."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from iip.identifiers.models import Handle, Prefix
from iip.kernel.auth import AccessService, Role
from iip.kernel.runtime import Runtime
from tests.conftest import TenantFixture, make_tenant
from tests.console.support import assert_html, audit_entries, csrf_from, heading, sign_in
from tests.identifiers.conftest import home_prefix
from tests.identifiers.test_codes import decode_qr

PREFIX = "88.118.8"
OTHER_PREFIX = "88.200.1"
PARENT = "88.300"
CREDIT_CODE = "91350100M000100Y43"
PASSWORD = "a-long-enough-password"


def admin(client: TestClient, tenant: TenantFixture) -> str:
    client.cookies.clear()
    return sign_in(client, f"{tenant.name}-admin", tenant.admin_password)


def add_user(runtime: Runtime, tenant: TenantFixture, username: str, role: Role) -> None:
    with runtime.db.session() as session:
        AccessService(session).create_user(tenant.id, username, PASSWORD, role)


def as_user(client: TestClient, username: str) -> str:
    client.cookies.clear()
    return sign_in(client, username, PASSWORD)


def registration(token: str, **fields: str) -> dict[str, str]:
    return {"csrf_token": token, "prefix": PREFIX, "suffix": "", "url": "https://example.com/p", **fields}


def register(client: TestClient, token: str, **fields: str) -> str:
    """Register through the form; the handle, read from where the browser is sent."""
    response = client.post("/identifiers/register", data=registration(token, **fields), follow_redirects=False)
    assert response.status_code == 303, re.findall(
        r'class="(?:field-error|alert alert-error)"[^>]*>([^<]*)', response.text
    )
    location = response.headers["location"]
    assert location.startswith("/identifiers/records/")
    return location.removeprefix("/identifiers/records/")


def text_of(html: str) -> str:
    return unescape(re.sub(r"<[^>]+>", " ", html))


# --- search -----------------------------------------------------------------------------------


def test_search_finds_the_tenants_identifiers_only(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    home_prefix(runtime, tenant_a, PREFIX, "prefix-secret-a")
    home_prefix(runtime, tenant_b, OTHER_PREFIX, "prefix-secret-b")
    token = admin(client, tenant_b)
    b_handle = "88.200.1/JXDY-B-1"
    client.post(
        "/identifiers/register",
        data={"csrf_token": token, "prefix": OTHER_PREFIX, "suffix": "JXDY-B-1", "url": "https://b.example/x"},
    )
    token = admin(client, tenant_a)
    attributes = '{"part_number": "P-0001", "material": "GCr15", "name": "精密轴承"}'
    a_handle = register(client, token, suffix="JXDY-A-1", template="part", attributes=attributes)
    register(client, token, suffix="OTHER-2", url="https://example.com/q")

    page = assert_html(client.get("/identifiers/search", params={"q": "JXDY"}), 200)
    assert heading(page) == "标识查询"
    assert f'data-handle="{a_handle}"' in page
    assert b_handle not in page
    assert 'id="result-count">1<' in page
    # Chinese words match as substrings; the attribute and template filters narrow the result.
    assert a_handle in client.get("/identifiers/search", params={"q": "轴承"}).text
    by_attribute = client.get("/identifiers/search", params={"attr_name": "material", "attr_value": "GCr15"}).text
    assert a_handle in by_attribute
    assert "OTHER-2" not in by_attribute
    by_template = client.get("/identifiers/search", params={"template": "part", "prefix": PREFIX}).text
    assert a_handle in by_template
    assert "OTHER-2" not in by_template
    everything = client.get("/identifiers/search").text
    assert "OTHER-2" in everything
    assert b_handle not in everything
    bad = assert_html(client.get("/identifiers/search", params={"attr_name": "1bad"}), 200)
    assert 'aria-describedby="attr_name-error"' in bad
    # B's record is missing for A, as one that does not exist.
    assert_html(client.get(f"/identifiers/records/{b_handle}"), 404)


def test_search_pages(client: TestClient, runtime: Runtime, tenant_a: TenantFixture) -> None:
    home_prefix(runtime, tenant_a, PREFIX, "prefix-secret-a")
    token = admin(client, tenant_a)
    for number in range(27):
        register(client, token, suffix=f"LOT-{number:03d}")
    first = client.get("/identifiers/search").text
    assert "第 1 页，共 2 页" in first
    assert first.count("data-handle=") == 25
    second = client.get("/identifiers/search", params={"page": "2"}).text
    assert second.count("data-handle=") == 2
    assert "LOT-026" in second


# --- register and view ------------------------------------------------------------------------


def test_register_then_view_values_history_signature_and_label(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture
) -> None:
    home_prefix(runtime, tenant_a, PREFIX, "prefix-secret-a")
    token = admin(client, tenant_a)
    form = assert_html(client.get("/identifiers/register"), 200)
    assert heading(form) == "注册标识"
    assert f'<option value="{PREFIX}"' in form
    handle = register(
        client,
        token,
        suffix="JXDY2106023",
        url="https://example.com/products/6204",
        template="product",
        attributes='{"name": "精密轴承", "model": "6204-2RS", "manufacturer": "Acme"}',
        values="EMAIL=qa@example.com\nSERIAL=SN-1",
    )
    assert handle == f"{PREFIX}/JXDY2106023"
    page = assert_html(client.get(f"/identifiers/records/{handle}"), 200)
    assert "标识已注册。" in page
    assert '<span class="mono" id="record-handle">88.118.8/JXDY2106023</span>' in page
    values = page.split('id="values-table"', 1)[1].split("</table>", 1)[0]
    assert "https://example.com/products/6204" in values
    assert "qa@example.com" in values
    assert '<tr data-index="3">' in values
    assert "200:0.NA/88.118.8 (011111110011)" in values  # the admin value
    history = page.split('id="history-table"', 1)[1].split("</table>", 1)[0]
    assert '<tr data-version="1">' in history
    assert "注册" in history
    assert "user:tenant-a-admin" in history
    assert 'data-state="valid"' in page
    assert "精密轴承" in page.split('id="attributes-table"', 1)[1]
    assert '<span class="badge" id="record-template">产品</span>' in page
    # The label: an inline SVG, and download links to the label API.
    label = page.split('id="label"', 1)[1]
    assert "<svg" in label
    assert "88.118.8/JXDY2106023</text>" in label
    png_url = unescape(re.search(r'id="label-png" href="([^"]+)"', page).group(1))  # type: ignore[union-attr]
    png = client.get(png_url)
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    assert decode_qr(png.content) == handle
    svg_url = unescape(re.search(r'id="label-svg" href="([^"]+)"', page).group(1))  # type: ignore[union-attr]
    svg = client.get(svg_url)
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.content.startswith(b"<svg")
    # Audited by the service and by the request.
    assert [e.object_id for e in audit_entries(runtime, "identifiers.handle.create")] == [handle]
    assert [e.object_id for e in audit_entries(runtime, "POST /identifiers/register")] == [handle]
    with runtime.db.session() as session:
        row = session.scalar(select(Handle).where(Handle.key == handle.lower()))
        assert row is not None
        assert (row.template, row.attributes["model"], row.tenant_id) == ("product", "6204-2RS", tenant_a.id)


def test_record_history_shows_every_version(client: TestClient, runtime: Runtime, tenant_a: TenantFixture) -> None:
    home_prefix(runtime, tenant_a, PREFIX, "prefix-secret-a")
    token = admin(client, tenant_a)
    handle = register(client, token, suffix="V-1")
    body = {"values": [{"index": 1, "type": "URL", "data": {"format": "string", "value": "https://example.com/v2"}}]}
    changed = client.put(f"/api/handles/{handle}", params={"index": "1"}, json=body, headers=tenant_a.headers())
    assert changed.status_code == 200, changed.text
    page = assert_html(client.get(f"/identifiers/records/{handle.lower()}"), 200)
    history = page.split('id="history-table"', 1)[1]
    assert history.index('data-version="2"') < history.index('data-version="1"')  # newest first
    assert "修改" in history
    assert "apikey:admin" in history
    assert "https://example.com/v2" in page


def test_minted_suffix(client: TestClient, runtime: Runtime, tenant_a: TenantFixture) -> None:
    home_prefix(runtime, tenant_a, PREFIX, "prefix-secret-a")
    token = admin(client, tenant_a)
    handle = register(client, token, suffix="LOT-", mint="on")
    assert re.fullmatch(r"88\.118\.8/LOT-[0-9A-F]{32}", handle)
    assert_html(client.get(f"/identifiers/records/{handle}"), 200)


def test_register_errors_keep_what_was_typed(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    home_prefix(runtime, tenant_a, PREFIX, "prefix-secret-a")
    home_prefix(runtime, tenant_b, OTHER_PREFIX, "prefix-secret-b")
    token = admin(client, tenant_a)
    typed = registration(
        token,
        suffix="BAD-1",
        url="https://example.com/typed",
        template="part",
        attributes='{"material": "GCr15"}',
        values="EMAIL=qa@example.com",
    )
    page = assert_html(client.post("/identifiers/register", data=typed), 422)
    assert "属性不符合模板" in page
    assert "part_number" in page.split('id="attributes-error"', 1)[1].split("</p>", 1)[0]
    assert 'value="BAD-1"' in page
    assert 'value="https://example.com/typed"' in page
    assert '<option value="part" selected>' in page
    assert "{&#34;material&#34;: &#34;GCr15&#34;}</textarea>" in page
    assert "EMAIL=qa@example.com</textarea>" in page
    page = assert_html(client.post("/identifiers/register", data={**typed, "attributes": "{not json"}), 422)
    assert "不是有效的 JSON" in page
    page = assert_html(client.post("/identifiers/register", data={**typed, "values": "no equals sign"}), 422)
    assert "第 1 行" in page
    page = assert_html(client.post("/identifiers/register", data={**typed, "url": "", "suffix": ""}), 422)
    assert "请输入标识解析到的 URL。" in page
    assert "请输入后缀，或由平台自动生成。" in page
    # Another tenant's prefix is not offered and not accepted.
    assert OTHER_PREFIX not in client.get("/identifiers/register").text
    page = assert_html(client.post("/identifiers/register", data={**typed, "prefix": OTHER_PREFIX}), 422)
    assert "请选择本租户的前缀。" in page
    # A suffix already taken.
    good = {**typed, "attributes": '{"part_number": "P-1"}'}
    assert client.post("/identifiers/register", data=good, follow_redirects=False).status_code == 303
    page = assert_html(client.post("/identifiers/register", data=good), 422)
    assert "该标识已被注册。" in page
    with runtime.db.session() as session:
        assert session.scalar(select(Handle.handle).where(Handle.prefix == OTHER_PREFIX)) is None
        assert len(list(session.scalars(select(Handle).where(Handle.prefix == PREFIX)))) == 1


def test_register_needs_csrf_and_the_write_permission(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture
) -> None:
    home_prefix(runtime, tenant_a, PREFIX, "prefix-secret-a")
    admin(client, tenant_a)
    data = registration("", suffix="NO-CSRF")
    del data["csrf_token"]
    assert_html(client.post("/identifiers/register", data=data), 403)
    assert_html(client.post("/identifiers/register", data={**data, "csrf_token": "wrong"}), 403)
    add_user(runtime, tenant_a, "vera", Role.VIEWER)
    token = as_user(client, "vera")
    home = client.get("/identifiers/search").text
    assert 'href="/identifiers/register"' not in home
    assert_html(client.get("/identifiers/register"), 403)
    assert_html(client.post("/identifiers/register", data={**data, "csrf_token": token}), 403)
    with runtime.db.session() as session:
        assert session.scalar(select(Handle.id).where(Handle.prefix == PREFIX)) is None


# --- filings ----------------------------------------------------------------------------------


def filing_form(token: str, prefix: str = f"{PARENT}.1001", **fields: str) -> dict[str, str]:
    return {
        "csrf_token": token,
        "prefix": prefix,
        "parent": PARENT,
        "name": "福建某某机械有限公司",
        "credit_code": CREDIT_CODE,
        "address": "福州市鼓楼区某路1号",
        "contact_name": "张三",
        "contact_phone": "0591-12345678",
        "contact_email": "",
        "industry": "C34 通用设备制造业",
        "secret": "applicant-secret-1",
        "secret_confirm": "applicant-secret-1",
        **fields,
    }


@pytest.fixture
def node(runtime: Runtime) -> tuple[TenantFixture, str]:
    """The node's tenant with its prefix, and a platform operator who decides filings."""
    tenant = make_tenant(runtime.db, "node")
    home_prefix(runtime, tenant, PARENT, "node-prefix-secret")
    add_user(runtime, tenant, "olga", Role.PLATFORM_OPERATOR)
    return tenant, "olga"


def filing_id(runtime: Runtime, prefix: str) -> str:
    with runtime.db.session() as session:
        record = session.scalar(select(Prefix).where(Prefix.prefix == prefix))
        assert record is not None
        return record.id


def row_of(page: str, prefix: str) -> str:
    tables = page.split('id="filings-table"', 1)[1]
    return tables.split(f'data-prefix="{prefix}"', 1)[1].split("</tr>", 1)[0]


def test_apply_approve_and_register_under_the_new_prefix(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture, node: tuple[TenantFixture, str]
) -> None:
    prefix = f"{PARENT}.1001"
    token = admin(client, tenant_a)
    page = assert_html(client.get("/identifiers/filings"), 200)
    assert heading(page) == "前缀备案"
    response = client.post("/identifiers/filings", data=filing_form(token), follow_redirects=False)
    assert response.status_code == 303, response.text[:2000]
    page = assert_html(client.get("/identifiers/filings"), 200)
    assert "申请已提交，等待平台运营方审核。" in page
    assert "待审核" in row_of(page, prefix)
    assert 'id="pending-filings"' not in page  # tenants do not decide
    assert prefix not in client.get("/identifiers/register").text  # not open before approval

    # A tenant admin cannot approve, even their own application.
    record_id = filing_id(runtime, prefix)
    assert_html(client.post(f"/identifiers/filings/{record_id}/approve", data={"csrf_token": token}), 403)
    assert_html(client.post(f"/identifiers/filings/{record_id}/reject", data={"csrf_token": token, "reason": "x"}), 403)
    assert "待审核" in row_of(client.get("/identifiers/filings").text, prefix)

    operator_token = as_user(client, node[1])
    page = assert_html(client.get("/identifiers/filings"), 200)
    pending = page.split('id="pending-filings"', 1)[1].split("</section>", 1)[0]
    assert f'data-prefix="{prefix}"' in pending
    assert "福建某某机械有限公司" in pending
    assert "tenant-a" in pending
    approved = client.post(
        f"/identifiers/filings/{record_id}/approve", data={"csrf_token": operator_token}, follow_redirects=False
    )
    assert approved.status_code == 303
    page = client.get("/identifiers/filings").text
    assert "备案已通过，该前缀现可注册标识。" in page
    assert f'data-prefix="{prefix}"' not in page.split('id="pending-filings"', 1)[1].split("</section>", 1)[0]
    assert_html(client.post(f"/identifiers/filings/{record_id}/approve", data={"csrf_token": operator_token}), 409)

    token = admin(client, tenant_a)
    row = row_of(client.get("/identifiers/filings").text, prefix)
    assert "已通过" in row
    assert "user:olga" in row
    assert f'<option value="{prefix}"' in client.get("/identifiers/register").text
    handle = register(client, token, prefix=prefix, suffix="FIRST")
    assert handle == f"{prefix}/FIRST"
    actions = [e.action for e in audit_entries(runtime, "identifiers.filing.approve")]
    assert actions == ["identifiers.filing.approve"]
    assert audit_entries(runtime, "POST /identifiers/filings/{filing_id}/approve")[-1].outcome == "failure"  # the 409
    assert len(audit_entries(runtime, "identifiers.filing.apply")) == 1


def test_rejection_needs_a_reason_and_the_applicant_reads_it(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture, node: tuple[TenantFixture, str]
) -> None:
    prefix = f"{PARENT}.1002"
    token = admin(client, tenant_a)
    client.post("/identifiers/filings", data=filing_form(token, prefix))
    record_id = filing_id(runtime, prefix)
    operator_token = as_user(client, node[1])
    page = assert_html(
        client.post(f"/identifiers/filings/{record_id}/reject", data={"csrf_token": operator_token, "reason": " "}),
        422,
    )
    assert f"请填写驳回 {prefix} 的理由。" in page
    rejected = client.post(
        f"/identifiers/filings/{record_id}/reject",
        data={"csrf_token": operator_token, "reason": "营业执照与企业名称不符"},
        follow_redirects=False,
    )
    assert rejected.status_code == 303
    admin(client, tenant_a)
    row = row_of(client.get("/identifiers/filings").text, prefix)
    assert "已驳回" in row
    assert "营业执照与企业名称不符" in row
    assert len(audit_entries(runtime, "identifiers.filing.reject")) == 1


def test_application_errors_keep_what_was_typed(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture, node: tuple[TenantFixture, str]
) -> None:
    token = admin(client, tenant_a)
    bad_code = filing_form(token, credit_code="91350100M000100Y44")
    page = assert_html(client.post("/identifiers/filings", data=bad_code), 422)
    credit_error = page.split('id="credit_code-error"', 1)[1].split("</p>", 1)[0]
    assert "申请未被受理" in credit_error
    assert "check character" in credit_error
    assert 'value="91350100M000100Y44"' in page
    assert 'value="福建某某机械有限公司"' in page
    assert "applicant-secret-1" not in page  # secrets are never echoed
    page = assert_html(client.post("/identifiers/filings", data=filing_form(token, "88.999.1", parent="88.999")), 422)
    assert 'id="parent-error"' in page
    page = assert_html(client.post("/identifiers/filings", data=filing_form(token, name="", secret_confirm="x")), 422)
    assert 'id="name-error"' in page
    assert "两次输入不一致。" in page
    with runtime.db.session() as session:
        assert session.scalar(select(Prefix.id).where(Prefix.parent == PARENT)) is None
    add_user(runtime, tenant_a, "vera", Role.VIEWER)
    token = as_user(client, "vera")
    assert 'id="filing-form"' not in assert_html(client.get("/identifiers/filings"), 200)
    assert_html(client.post("/identifiers/filings", data=filing_form(token)), 403)


def test_filings_of_other_tenants_stay_hidden(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture, tenant_b: TenantFixture, node: Any
) -> None:
    token = admin(client, tenant_b)
    client.post("/identifiers/filings", data=filing_form(token, f"{PARENT}.2001", name="乙公司"))
    record_id = filing_id(runtime, f"{PARENT}.2001")
    token = admin(client, tenant_a)
    assert "乙公司" not in client.get("/identifiers/filings").text
    assert_html(client.post(f"/identifiers/filings/{record_id}/approve", data={"csrf_token": token}), 404)


# --- languages and navigation -----------------------------------------------------------------


def test_pages_in_both_languages(client: TestClient, runtime: Runtime, tenant_a: TenantFixture) -> None:
    home_prefix(runtime, tenant_a, PREFIX, "prefix-secret-a")
    token = admin(client, tenant_a)
    handle = register(client, token, suffix="LANG-1")
    nav = client.get("/").text.split('<nav class="nav"', 1)[1].split("</nav>", 1)[0]
    assert "标识解析" in nav
    for title in ("标识查询", "注册标识", "前缀备案"):
        assert f"<span>{title}</span>" in nav
    chinese = {
        "/identifiers/search": "标识查询",
        "/identifiers/register": "注册标识",
        "/identifiers/filings": "前缀备案",
    }
    for path, title in chinese.items():
        assert heading(assert_html(client.get(path), 200)) == title
    record = text_of(client.get(f"/identifiers/records/{handle}").text)
    assert all(word in record for word in ("标签", "历史", "签名", "下载 PNG"))

    client.post("/lang", data={"language": "en", "next": "/", "csrf_token": token})
    english = {
        "/identifiers/search": "Identifier search",
        "/identifiers/register": "Register identifier",
        "/identifiers/filings": "Prefix filings",
    }
    for path, title in english.items():
        page = assert_html(client.get(path), 200)
        assert heading(page) == title
        assert '<html lang="en">' in page
    record = text_of(client.get(f"/identifiers/records/{handle}").text)
    assert all(word in record for word in ("Label", "History", "Signature", "Download PNG"))
    assert "标签" not in record
    assert csrf_from(client.get("/identifiers/register").text) == token


def test_prefix_secret_is_never_shown(client: TestClient, runtime: Runtime, tenant_a: TenantFixture) -> None:
    home_prefix(runtime, tenant_a, PREFIX, "prefix-secret-a")
    admin(client, tenant_a)
    page = assert_html(client.get(f"/identifiers/records/0.NA/{PREFIX}"), 200)
    values = page.split('id="values-table"', 1)[1].split("</table>", 1)[0]
    assert "HS_SECKEY" in values
    assert "$argon2" not in page
