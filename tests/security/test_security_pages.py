"""The security console pages on SQLite: overview, assets (CSV import), baselines and captures
(upload), alerts (acknowledge and close in place, open an incident), incidents, advisories with
matches, bulletins (the operator publishing, a tenant's inbox), the honeypot; in English and Chinese."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from fastapi.testclient import TestClient

from iip.kernel.auth import Role
from iip.kernel.runtime import Runtime
from iip.security.records import Sighting
from iip.security.service import SecurityService
from tests.conftest import TenantFixture
from tests.console.support import assert_html, heading_text, section, sign_in_as, tenant_with_users, text_of
from tests.security.support import ATTACK, TRAINING, capture_bytes, engineer, seed_matches

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


def people(client: TestClient, runtime: Runtime, language: str = "en") -> tuple[TenantFixture, str]:
    """A new tenant with an engineer and a viewer; the engineer signed in. Its CSRF token."""
    tenant = tenant_with_users(runtime, [Role.ENGINEER, Role.VIEWER])
    return tenant, sign_in_as(client, tenant, Role.ENGINEER, language)


def rows_of(html: str, table_id: str, attribute: str) -> list[str]:
    """The `attribute` of each row of a table, in order (its cells may hold forms)."""
    start = html.index(f'id="{table_id}"')
    return re.findall(rf'<tr {attribute}="([^"]+)"', html[start : html.index("</table>", start)])


def post_file(client: TestClient, path: str, token: str, name: str, **form: str) -> str:
    response = client.post(
        path,
        files={"file": (name, capture_bytes(name), "application/octet-stream")},
        data={"csrf_token": token, **form},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text[:500]
    return str(response.headers["location"])


def test_overview_in_both_languages_and_for_the_operator(client: TestClient, runtime: Runtime) -> None:
    tenant, _token = people(client, runtime, "en")
    with runtime.db.session() as session:
        now = dt.datetime.now(dt.UTC)
        SecurityService(session, engineer(tenant)).record_sightings(
            tenant.id, [Sighting("203.0.113.9", now, "modbus", "write_single_register", notable=True)]
        )
    page = assert_html(client.get("/security"), 200)
    assert heading_text(page) == "Security overview"
    assert re.search(r'id="honeypot-24h">1<', page)
    assert re.search(r'id="risk-score">3<', page)  # one address in the last day: 3 points
    assert 'data-part="honeypot"' in page
    sign_in_as(client, tenant, Role.ENGINEER, "zh_CN")
    chinese = assert_html(client.get("/security"), 200)
    assert heading_text(chinese) == "安全态势"
    assert "风险评分" in chinese
    assert 'id="tenants-table"' not in chinese  # a tenant does not see the others
    honeypot = assert_html(client.get("/security/honeypot"), 200)
    assert rows_of(honeypot, "indicators-table", "data-address") == ["203.0.113.9"]
    operator = tenant_with_users(runtime, [Role.PLATFORM_OPERATOR])
    sign_in_as(client, operator, Role.PLATFORM_OPERATOR, "en")
    platform = assert_html(client.get("/security"), 200)
    assert tenant.name in rows_of(platform, "tenants-table", "data-tenant")


def test_assets_import_and_what_a_viewer_may_do(client: TestClient, runtime: Runtime) -> None:
    tenant, token = people(client, runtime)
    csv = b"address,name,vendor,criticality\n10.5.0.1,PLC-1,Siemens,high\n10.5.0.2,HMI-1,,low\n"
    response = client.post(
        "/security/assets/import",
        files={"file": ("assets.csv", csv, "text/csv")},
        data={"csrf_token": token, "site": "line-1"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    page = assert_html(client.get("/security/assets"), 200)
    assert rows_of(page, "assets-table", "data-address") == ["10.5.0.1", "10.5.0.2"]
    assert "Assets imported." in page
    bad = client.post(
        "/security/assets/import",
        files={"file": ("bad.csv", b"address\nnot-an-address\n", "text/csv")},
        data={"csrf_token": token},
    )
    refused = assert_html(bad, 422)
    assert "row 2" in text_of(refused)
    filtered = assert_html(client.get("/security/assets", params={"q": "hmi"}), 200)
    assert rows_of(filtered, "assets-table", "data-address") == ["10.5.0.2"]
    viewer_token = sign_in_as(client, tenant, Role.VIEWER, "en")
    as_viewer = assert_html(client.get("/security/assets"), 200)
    assert 'id="import-form"' not in as_viewer
    denied = client.post(
        "/security/assets/import", files={"file": ("a.csv", csv, "text/csv")}, data={"csrf_token": viewer_token}
    )
    assert denied.status_code == 403


def test_learn_check_and_handle_alerts_in_place(client: TestClient, runtime: Runtime) -> None:
    _tenant, token = people(client, runtime)
    assert post_file(client, "/security/baselines", token, TRAINING, site="rtu") == "/security/baselines"
    baselines = assert_html(client.get("/security/baselines"), 200)
    assert 'data-active="yes"' in baselines
    post_file(client, "/security/captures", token, ATTACK, site="rtu", check="1")
    captures = assert_html(client.get("/security/captures"), 200)
    assert ATTACK in text_of(section(captures, "captures-table"))
    alerts = assert_html(client.get("/security/alerts"), 200)
    ids = rows_of(alerts, "alerts-table", "data-alert")
    assert ids
    assert "unauthorized_write" in alerts
    first, second = ids[0], ids[1]
    done = client.post(f"/security/alerts/{first}/acknowledge", data={"csrf_token": token}, follow_redirects=False)
    assert done.status_code == 303
    client.post(f"/security/alerts/{second}/close", data={"csrf_token": token})
    after = assert_html(client.get("/security/alerts"), 200)
    assert f'data-alert="{first}" data-status="acknowledged"' in after
    assert f'data-alert="{second}" data-status="closed"' in after
    only_open = assert_html(client.get("/security/alerts", params={"status": "open"}), 200)
    assert first not in rows_of(only_open, "alerts-table", "data-alert")
    opened = client.post(f"/security/alerts/{first}/incident", data={"csrf_token": token}, follow_redirects=False)
    assert opened.status_code == 303
    incident_url = opened.headers["location"]
    client.post(incident_url + "/entries", data={"csrf_token": token, "kind": "action", "text": "RTU isolated"})
    client.post(incident_url + "/state", data={"csrf_token": token, "state": "contained", "note": ""})
    incident = assert_html(client.get(incident_url), 200)
    timeline = text_of(section(incident, "timeline"))
    assert "RTU isolated" in timeline
    assert "open -> contained" in timeline
    listed = assert_html(client.get("/security/incidents"), 200)
    assert 'data-state="contained"' in listed
    # Another tenant's incident is not found; a capture check without a baseline is refused with the reason.
    _other, other_token = people(client, runtime)
    assert_html(client.get(incident_url), 404)
    refused = client.post(
        "/security/captures",
        files={"file": ("x.pcap", capture_bytes(ATTACK), "application/octet-stream")},
        data={"csrf_token": other_token, "check": "1", "site": "rtu"},
    )
    assert "no active baseline" in text_of(assert_html(refused, 404))


def test_matches_and_bulletins_from_publishing_to_remediation(client: TestClient, runtime: Runtime) -> None:
    tenant, token = people(client, runtime)
    (match_id,) = seed_matches(runtime.db, tenant, ("ICSA-25-300-01", "CVE-2025-3000", 8.1, "10.7.0.1"))
    advisories = assert_html(client.get("/security/advisories"), 200)
    assert rows_of(advisories, "matches-table", "data-match") == [match_id]
    assert rows_of(advisories, "advisories-table", "data-advisory") == ["ICSA-25-300-01"]
    resolve = f"/security/advisories/matches/{match_id}/resolve"
    client.post(resolve, data={"csrf_token": token, "resolution": "accepted"})
    assert 'data-resolution="accepted"' in assert_html(client.get("/security/advisories"), 200)
    client.post(resolve, data={"csrf_token": token, "resolution": ""})
    assert 'data-resolution="none"' in assert_html(client.get("/security/advisories"), 200)

    operator = tenant_with_users(runtime, [Role.PLATFORM_OPERATOR])
    operator_token = sign_in_as(client, operator, Role.PLATFORM_OPERATOR, "en")
    publish = client.post(
        "/security/bulletins",
        data={
            "csrf_token": operator_token,
            "title": "Acme PLC-9 firmware",
            "kind": "advisory",
            "severity": "high",
            "advisory": "ICSA-25-300-01",
            "body_en": "Upgrade to 2.4.",
            "body_zh": "请升级到 2.4。",
            "deadline": "2030-01-01T00:00",
        },
        follow_redirects=False,
    )
    assert publish.status_code == 303, publish.text[:500]
    published = assert_html(client.get("/security/inbox"), 200)
    (bulletin_id,) = rows_of(published, "published-table", "data-bulletin")
    recipients = assert_html(client.get(f"/security/bulletins/{bulletin_id}"), 200)
    assert rows_of(recipients, "recipients-table", "data-tenant") == [tenant.id]

    token = sign_in_as(client, tenant, Role.ENGINEER, "zh_CN")
    inbox = assert_html(client.get("/security/inbox"), 200)
    assert f'data-bulletin="{bulletin_id}" data-unread="yes"' in inbox
    assert 'id="publish-form"' not in inbox
    read = assert_html(client.get(f"/security/inbox/{bulletin_id}"), 200)
    assert "请升级到 2.4。" in read
    acknowledged = client.post(f"/security/inbox/{bulletin_id}/acknowledge", data={"csrf_token": token})
    assert "通报已确认。" in assert_html(acknowledged, 200)
    token = sign_in_as(client, tenant, Role.ENGINEER, "en")
    done = {"csrf_token": token, "status": "done", "note": "2.4"}
    client.post(f"/security/inbox/{bulletin_id}/remediation", data=done)
    answered = assert_html(client.get(f"/security/inbox/{bulletin_id}"), 200)
    assert "Upgrade to 2.4." in answered
    assert 'data-value="done"' in section(answered, "remediation")
    assert re.search(r"\d{4}-\d\d-\d\d", text_of(section(answered, "acknowledged")))
    assert f'data-bulletin="{bulletin_id}" data-unread' not in assert_html(client.get("/security/inbox"), 200)


def test_publish_to_chosen_tenants_and_set_where_bulletins_go(client: TestClient, runtime: Runtime) -> None:
    tenant, token = people(client, runtime)
    bystander = tenant_with_users(runtime, [Role.ENGINEER])
    # The tenant says where its bulletins go; the secret is taken but never shown again.
    page = assert_html(client.get("/security/contact"), 200)
    assert 'id="contact-form"' in page
    contact = {"csrf_token": token, "webhook_url": "https://hooks.example.com/iip", "webhook_secret": "s3cret",
               "emails": "ot@example.com, soc@example.com"}  # fmt: skip
    saved = client.post("/security/contact", data=contact)
    assert "Bulletin delivery saved." in assert_html(saved, 200)
    assert "s3cret" not in saved.text
    stored = client.get("/api/security/contact", headers=tenant.headers()).json()
    assert (stored["webhook_url"], stored["has_secret"]) == ("https://hooks.example.com/iip", True)
    assert stored["emails"] == ["ot@example.com", "soc@example.com"]
    kept = client.post("/security/contact", data={**contact, "webhook_secret": "", "emails": "ot@example.com"})
    assert_html(kept, 200)
    assert client.get("/api/security/contact", headers=tenant.headers()).json()["has_secret"]
    refused = client.post("/security/contact", data={**contact, "webhook_url": "ftp://x"})
    assert "Not done" in assert_html(refused, 422)
    sign_in_as(client, tenant, Role.VIEWER, "en")
    read_only = assert_html(client.get("/security/contact"), 200)
    assert 'id="contact-form"' not in read_only
    assert 'data-secret="set"' in read_only

    # The operator chooses the tenants: no advisory, no match, the one ticked and no other.
    operator = tenant_with_users(runtime, [Role.PLATFORM_OPERATOR])
    operator_token = sign_in_as(client, operator, Role.PLATFORM_OPERATOR, "en")
    form = assert_html(client.get("/security/inbox"), 200)
    assert f'name="tenant_ids" value="{tenant.id}"' in section(form, "recipients")
    assert f'name="tenant_ids" value="{bystander.id}"' in section(form, "recipients")
    publish = client.post(
        "/security/bulletins",
        data={"csrf_token": operator_token, "title": "Segment the cell network", "kind": "warning",
              "severity": "medium", "body_en": "Now.", "targeting": "chosen", "tenant_ids": [tenant.id]},
        follow_redirects=False,
    )  # fmt: skip
    assert publish.status_code == 303, publish.text[:500]
    (bulletin_id,) = rows_of(assert_html(client.get("/security/inbox"), 200), "published-table", "data-bulletin")
    recipients = assert_html(client.get(f"/security/bulletins/{bulletin_id}"), 200)
    assert rows_of(recipients, "recipients-table", "data-tenant") == [tenant.id]
    # "Affected tenants" with nothing matched is refused with the reason.
    matched = client.post(
        "/security/bulletins",
        data={"csrf_token": operator_token, "title": "t", "severity": "low", "body_en": "b", "targeting": "matched",
              "tenant_ids": [tenant.id], "cves": "CVE-2031-0001"},
    )  # fmt: skip
    assert "no tenant is affected" in assert_html(matched, 422)
