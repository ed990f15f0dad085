"""The console pages of codes, on SQLite and PostgreSQL: the public verification page in both
languages, a reload that counts no second scan, the place a consumer gives, and the operators'
batches and alerts."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from iip.kernel.auth import AccessService, Role
from iip.kernel.runtime import Runtime
from iip.traceability.authenticity.codes import parse_uri
from iip.traceability.authenticity.models import CodeScan
from iip.traceability.authenticity.pages import SCAN_COOKIE
from tests.conftest import TenantFixture
from tests.console.support import PASSWORD, assert_html, csrf_from, heading_text, section, sign_in, text_of

API = "/api/traceability"
GTIN = "09506000134352"
SCRIPT_TAG_RE = re.compile(r"<script\b([^>]*)>", re.IGNORECASE)


def issue(client: TestClient, tenant: TenantFixture, **body: Any) -> list[str]:
    """Codes issued under this platform's /v (the test client's base URL), their URIs."""
    response = client.post(
        f"{API}/code-batches", json={"gtin": GTIN, "count": 2, **body}, headers=tenant.headers(Role.ENGINEER)
    )
    assert response.status_code == 201, response.text
    export = client.get(f"{API}/code-batches/{response.json()['id']}/codes.csv", headers=tenant.headers())
    return [line.split(",")[0] for line in export.text.splitlines()[1:]]


def path_of(uri: str) -> str:
    return uri.removeprefix("http://testserver")


def scans(runtime: Runtime, tenant: TenantFixture) -> int:
    with runtime.db.session() as session:
        query = select(func.count()).select_from(CodeScan).where(CodeScan.tenant_id == tenant.id)
        return session.scalar(query) or 0


def fact(html: str, element_id: str) -> str:
    """The text of one `<dd>` of the code facts."""
    match = re.search(rf'<dd id="{element_id}">(.*?)</dd>', html, re.DOTALL)
    assert match, f"no #{element_id}"
    return text_of(match.group(1))


def no_inline_script(html: str) -> None:
    tags = SCRIPT_TAG_RE.findall(html)
    assert tags, "the page loads no script at all"
    assert all("src=" in attributes for attributes in tags), "an inline script would be blocked by the CSP"


def test_the_public_page_answers_in_chinese_and_english(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture
) -> None:
    first, second = issue(client, tenant_a, lot="L7", expiry="2027-01-31")
    assert first.startswith(f"http://testserver/v/01/{GTIN}/10/L7/21/")  # the platform's own page by default
    client.cookies.clear()
    page = assert_html(client.get(path_of(first)), 200)
    assert '<html lang="zh-CN">' in page
    assert heading_text(page) == "正品"
    assert "此码由品牌方生成，签名完好。" in text_of(page)
    facts = text_of(section(page, "verdict"))  # the answer comes first
    assert "正品" in facts
    assert parse_uri(first).serial in page
    assert "2027-01-31" in page
    assert 'name="viewport"' in page  # phones
    no_inline_script(page)
    assert client.cookies.get(SCAN_COOKIE)

    client.cookies.clear()
    client.cookies.set("iip_lang", "en")
    english = assert_html(client.get(path_of(second)), 200)
    assert '<html lang="en">' in english
    assert heading_text(english) == "Genuine product"
    assert "Where did you buy this product?" in english
    unknown = assert_html(client.get(path_of(second).replace("/21/", "/21/X")), 200)
    assert heading_text(unknown) == "Unknown code"
    assert scans(runtime, tenant_a) == 3


def test_a_reload_counts_no_second_scan_but_another_phone_does(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture
) -> None:
    uri, _ = issue(client, tenant_a)
    client.cookies.clear()
    assert heading_text(client.get(path_of(uri)).text) == "正品"
    again = client.get(path_of(uri))  # a reload, or the language switch bringing the visitor back
    assert heading_text(again.text) == "正品"
    assert fact(again.text, "scan-count") == "1"
    assert scans(runtime, tenant_a) == 1
    client.cookies.clear()  # someone else's phone
    copied = client.get(path_of(uri))
    assert heading_text(copied.text) == "此码已被扫描过"
    assert scans(runtime, tenant_a) == 2


def test_the_language_switch_keeps_the_answer(client: TestClient, runtime: Runtime, tenant_a: TenantFixture) -> None:
    uri, _ = issue(client, tenant_a)
    client.cookies.clear()
    page = client.get(path_of(uri))
    switched = client.post(
        "/lang",
        data={"language": "en", "next": path_of(uri), "csrf_token": csrf_from(page.text)},
        follow_redirects=True,
    )
    assert heading_text(switched.text) == "Genuine product"
    assert scans(runtime, tenant_a) == 1


def test_the_visitor_tells_where_the_product_was_bought(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture
) -> None:
    uri, _ = issue(client, tenant_a, markets=[{"code": "CN"}])
    client.cookies.clear()
    page = assert_html(client.get(path_of(uri)), 200)
    form = section(page, "locate-form")
    assert 'value="US"' in form
    sent = client.post(
        "/verify/location",
        data={"csrf_token": csrf_from(page), "place": "US", "lat": "", "lon": "", "next": path_of(uri)},
        follow_redirects=False,
    )
    assert sent.status_code == 303
    assert sent.headers["location"] == path_of(uri)
    shown = client.get(path_of(uri))
    assert "谢谢，地点已记录。" in shown.text
    assert 'id="locate-form"' not in shown.text  # asked once
    assert "美国" in fact(shown.text, "first-scan")
    alerts = client.get(f"{API}/alerts", headers=tenant_a.headers()).json()["items"]
    assert [a["kind"] for a in alerts] == ["outside_market"]
    # Once is enough: the same scan cannot be moved again.
    again = client.post(
        "/verify/location",
        data={"csrf_token": csrf_from(page), "place": "FR", "next": path_of(uri)},
        follow_redirects=False,
    )
    assert again.status_code == 303
    assert "无法记录地点" in client.get(path_of(uri)).text
    assert len(client.get(f"{API}/alerts", headers=tenant_a.headers()).json()["items"]) == 1
    # Without the form's token the place is refused.
    assert client.post("/verify/location", data={"place": "FR"}, follow_redirects=False).status_code == 403


def test_the_code_form(client: TestClient, tenant_a: TenantFixture) -> None:
    uri, _ = issue(client, tenant_a)
    client.cookies.clear()
    form = assert_html(client.get("/verify"), 200)
    assert heading_text(form) == "查验产品码"
    assert 'id="verify-form"' in form
    answer = assert_html(client.get("/verify", params={"uri": uri}), 200)
    assert heading_text(answer) == "正品"


def test_operators_issue_recall_and_see_alerts(client: TestClient, runtime: Runtime, tenant_a: TenantFixture) -> None:
    token = sign_in(client, f"{tenant_a.name}-admin", tenant_a.admin_password)
    listing = assert_html(client.get("/traceability/codes"), 200)
    assert heading_text(listing) == "防伪产品码"
    assert 'id="issue-form"' in listing
    refused = client.post(
        "/traceability/codes", data={"csrf_token": token, "gtin": "123", "count": "0"}, follow_redirects=False
    )
    assert refused.status_code == 422
    assert "请输入 1 到 100000 之间的数字。" in refused.text
    issued = client.post(
        "/traceability/codes",
        data={
            "csrf_token": token,
            "gtin": GTIN,
            "count": "3",
            "lot": "L8",
            "expiry": "2027-02-28",
            "markets": "CN-GD 23.13 113.26\nHK",
            "single_use": "on",
            "note": "line 2",
        },
        follow_redirects=False,
    )
    assert issued.status_code == 303, issued.text
    batch_path = issued.headers["location"]
    batch_page = assert_html(client.get(batch_path), 200)
    assert "产品码已生成。" in batch_page
    assert 'class="segno"' in batch_page  # the first code as a QR code
    assert f"{API}/code-batches/{batch_path.rsplit('/', 1)[1]}/codes.csv" in batch_page
    export = client.get(f"{API}/code-batches/{batch_path.rsplit('/', 1)[1]}/codes.csv")  # the console session
    assert export.status_code == 200
    uri = export.text.splitlines()[1].split(",")[0]
    # A recall from the batch page.
    recalled = client.post(
        f"{batch_path}/marks", data={"csrf_token": token, "kind": "recall", "reason": "label misprint"}
    )
    assert "该批次已召回。" in recalled.text
    assert "已召回" in text_of(section(recalled.text, "batch-state"))
    operator = dict(client.cookies.items())
    for _visitor in range(2):  # two phones: the second scan of a single-use code raises an alert
        client.cookies.clear()
        answer = client.get(path_of(uri))
        assert heading_text(answer.text) == "召回产品"  # recalled outranks already scanned
        assert "label misprint" in answer.text
    client.cookies.clear()
    for name, value in operator.items():
        client.cookies.set(name, value)
    alerts = assert_html(client.get("/traceability/code-alerts"), 200)
    assert "一次性码被再次扫描" in text_of(section(alerts, "alerts-table"))
    filtered = client.get("/traceability/code-alerts", params={"kind": "impossible_travel"})
    assert "暂无告警。" in filtered.text


def test_viewers_read_but_do_not_issue(client: TestClient, runtime: Runtime, tenant_a: TenantFixture) -> None:
    with runtime.db.session() as session:
        AccessService(session).create_user(tenant_a.id, f"{tenant_a.name}-viewer", PASSWORD, Role.VIEWER)
    token = sign_in(client, f"{tenant_a.name}-viewer", PASSWORD)
    listing = assert_html(client.get("/traceability/codes"), 200)
    assert 'id="issue-form"' not in listing
    assert client.post("/traceability/codes", data={"csrf_token": token, "gtin": GTIN, "count": "1"}).status_code == 403
