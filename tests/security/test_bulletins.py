"""Early-warning bulletins end to end: an operator publishes, the affected tenants receive them in
their inbox, by a signed webhook (a real local HTTP receiver) and by e-mail (a real local SMTP
server); receipt, acknowledgement, remediation and deadlines are tracked per tenant."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from iip.alarms.public import verify_webhook
from iip.kernel.auth import Role
from iip.kernel.db import Database
from iip.kernel.settings import AlarmsSettings, Settings
from tests.alarms.notify.conftest import (  # real peers, shared with the alarm notification tests
    HookReceiver,
    SmtpServer,
    hook_receiver,  # noqa: F401 - fixture
    notification_settings,
    smtp_server,  # noqa: F401 - fixture
)
from tests.api.support import assert_problem
from tests.conftest import TenantFixture
from tests.security.support import seed_matches, wait_until

API = "/api/security"
SECRET = "bulletin-secret-of-b"


@pytest.fixture
def settings(tmp_path: Path, db_url: str, smtp_server: SmtpServer) -> Settings:  # noqa: F811 - fixture use
    """The test's settings with alarm notifications' SMTP server pointing at the local one."""
    notify = notification_settings(smtp_server, smtp_from="warning@iip.example.com")
    return Settings(
        data_dir=tmp_path / "var",
        database_url=db_url,
        log_format="text",
        log_level="WARNING",
        alarms=AlarmsSettings(notifications=notify),
    )


def publish(client: TestClient, tenant: TenantFixture, **body: Any) -> Any:
    values = {"kind": "advisory", "title": "Acme PLC-9 固件漏洞", "severity": "critical", "body_zh": "请升级固件。"}
    return client.post(f"{API}/bulletins", json={**values, **body}, headers=tenant.headers(Role.PLATFORM_OPERATOR))


def set_contact(client: TestClient, tenant: TenantFixture, url: str) -> None:
    contact = {"webhook_url": url, "webhook_secret": SECRET, "emails": ["ot-security@b.example.com"]}
    response = client.put(f"{API}/contact", json=contact, headers=tenant.headers())
    assert response.status_code == 200, response.text
    assert response.json()["has_secret"]
    assert "secret" not in json.dumps(response.json()).replace("has_secret", "")


def test_a_matched_bulletin_reaches_the_affected_tenant_by_every_channel(
    client: TestClient,
    migrated_db: Database,
    tenant_a: TenantFixture,
    tenant_b: TenantFixture,
    smtp_server: SmtpServer,  # noqa: F811 - fixture use
    hook_receiver: HookReceiver,  # noqa: F811 - fixture use
) -> None:
    seed_matches(migrated_db, tenant_b, ("ICSA-25-100-01", "CVE-2025-1000", 9.1, "10.9.0.1"))
    set_contact(client, tenant_b, hook_receiver.url)
    deadline = dt.datetime.now(dt.UTC) + dt.timedelta(days=14)
    response = publish(client, tenant_a, advisory="ICSA-25-100-01", deadline=deadline.isoformat(), body_en="Upgrade.")
    assert response.status_code == 201, response.text
    bulletin = response.json()
    assert bulletin["targeting"] == "matched"
    assert bulletin["cves"] == ["CVE-2025-1000"]
    assert [(r["tenant_id"], r["matched_assets"]) for r in bulletin["recipients"]] == [(tenant_b.id, 1)]
    # The webhook and the e-mail go out after the commit.
    wait_until(lambda: len(hook_receiver.received) == 1 and len(smtp_server.messages) == 1)
    hook = hook_receiver.received[0]
    assert verify_webhook(
        SECRET, hook.body, hook.headers.get("x-iip-timestamp"), hook.headers.get("x-iip-signature"),
        now=dt.datetime.now(dt.UTC).timestamp(),
    )  # fmt: skip
    assert not verify_webhook("another secret", hook.body, hook.headers.get("x-iip-timestamp"),
                              hook.headers.get("x-iip-signature"), now=dt.datetime.now(dt.UTC).timestamp())  # fmt: skip
    payload = json.loads(hook.body)
    assert (payload["kind"], payload["bulletin_id"], payload["advisory"]) == (
        "bulletin",
        bulletin["id"],
        "ICSA-25-100-01",
    )
    mail = smtp_server.messages[0]
    assert mail.recipients == ["ot-security@b.example.com"]
    assert "Acme PLC-9 固件漏洞" in str(mail.message["Subject"])
    text = mail.message.get_content()
    assert "请升级固件。" in text
    assert "Upgrade." in text
    assert "CVE-2025-1000" in text
    detail = client.get(f"{API}/bulletins/{bulletin['id']}", headers=tenant_a.headers(Role.PLATFORM_OPERATOR))
    wait_until(lambda: all(d["status"] == "sent" for r in client.get(
        f"{API}/bulletins/{bulletin['id']}", headers=tenant_a.headers(Role.PLATFORM_OPERATOR)).json()["recipients"]
        for d in r["deliveries"]))  # fmt: skip
    detail = client.get(f"{API}/bulletins/{bulletin['id']}", headers=tenant_a.headers(Role.PLATFORM_OPERATOR)).json()
    channels = {d["channel"]: d["status"] for d in detail["recipients"][0]["deliveries"]}
    assert channels == {"console": "sent", "webhook": "sent", "email": "sent"}
    # Tenant A was not affected and does not see it; tenant B's inbox has it.
    assert client.get(f"{API}/inbox", headers=tenant_a.headers()).json() == []
    assert_problem(client.get(f"{API}/inbox/{bulletin['id']}", headers=tenant_a.headers()), 404)
    assert_problem(client.get(f"{API}/bulletins/{bulletin['id']}", headers=tenant_b.headers()), 404)
    (item,) = client.get(f"{API}/inbox", headers=tenant_b.headers(Role.VIEWER)).json()
    assert item["receipt"]["opened_at"] is None
    opened = client.get(f"{API}/inbox/{bulletin['id']}", headers=tenant_b.headers(Role.VIEWER)).json()
    assert opened["receipt"]["opened_at"]
    assert opened["receipt"]["opened_by"].endswith("viewer")


def test_acknowledgement_remediation_and_overdue(
    client: TestClient, migrated_db: Database, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    bulletin = publish(client, tenant_a, kind="warning", tenant_ids=[tenant_b.id], deadline=past.isoformat()).json()
    assert bulletin["targeting"] == "chosen"
    (receipt,) = bulletin["recipients"]
    assert receipt["overdue"]
    assert receipt["remediation"] == "not_started"
    assert [d["channel"] for d in receipt["deliveries"]] == ["console"]  # no webhook or e-mail set up
    assert client.get(f"{API}/awareness", headers=tenant_b.headers()).json()["bulletins_overdue"] == 1
    assert_problem(client.post(f"{API}/inbox/{bulletin['id']}/acknowledge", headers=tenant_b.headers(Role.VIEWER)), 403)
    acked = client.post(f"{API}/inbox/{bulletin['id']}/acknowledge", headers=tenant_b.headers(Role.OPERATOR))
    assert acked.status_code == 403  # acknowledging is a write: engineers and admins
    acked = client.post(f"{API}/inbox/{bulletin['id']}/acknowledge", headers=tenant_b.headers(Role.ENGINEER)).json()
    assert acked["receipt"]["acknowledged_at"]
    assert acked["receipt"]["opened_at"]
    doing = client.post(
        f"{API}/inbox/{bulletin['id']}/remediation", json={"status": "in_progress", "note": "ordered firmware"},
        headers=tenant_b.headers(),
    ).json()  # fmt: skip
    assert (doing["receipt"]["remediation"], doing["receipt"]["overdue"]) == ("in_progress", True)
    done = client.post(
        f"{API}/inbox/{bulletin['id']}/remediation", json={"status": "done"}, headers=tenant_b.headers()
    ).json()
    assert (done["receipt"]["remediation"], done["receipt"]["overdue"]) == ("done", False)
    assert done["receipt"]["remediation_by"].endswith("admin")
    awareness = client.get(f"{API}/awareness", headers=tenant_b.headers()).json()
    assert (awareness["bulletins_overdue"], awareness["bulletins_open"]) == (0, 0)
    listed = client.get(f"{API}/bulletins", headers=tenant_a.headers(Role.PLATFORM_OPERATOR)).json()
    assert [r["remediation"] for b in listed for r in b["recipients"]] == ["done"]
    incident = client.post(f"{API}/incidents", json={"bulletin_id": bulletin["id"]}, headers=tenant_b.headers()).json()
    assert (incident["bulletin_id"], incident["severity"]) == (bulletin["id"], "critical")


def test_failed_webhook_is_recorded_and_sent_again(
    client: TestClient,
    migrated_db: Database,
    tenant_a: TenantFixture,
    tenant_b: TenantFixture,
    hook_receiver: HookReceiver,  # noqa: F811 - fixture use
    smtp_server: SmtpServer,  # noqa: F811 - fixture use
) -> None:
    set_contact(client, tenant_b, hook_receiver.url)
    hook_receiver.statuses = [403]  # a refusal: not retried by itself
    bulletin = publish(client, tenant_a, tenant_ids=[tenant_b.id]).json()
    operator = tenant_a.headers(Role.PLATFORM_OPERATOR)

    def webhook_status() -> dict[str, Any]:
        detail = client.get(f"{API}/bulletins/{bulletin['id']}", headers=operator).json()
        return next(d for d in detail["recipients"][0]["deliveries"] if d["channel"] == "webhook")  # type: ignore[no-any-return]

    wait_until(lambda: webhook_status()["status"] == "failed")
    assert "403" in webhook_status()["error"]
    again = client.post(f"{API}/bulletins/{bulletin['id']}/redeliver", headers=operator)
    assert again.status_code == 200
    wait_until(lambda: webhook_status()["status"] == "sent")
    assert webhook_status()["attempts"] == 2
    assert len(hook_receiver.received) == 2
    assert {h.headers["x-iip-delivery"] for h in hook_receiver.received} == {webhook_status()["id"]}


def test_who_may_publish_and_to_whom(client: TestClient, tenant_a: TenantFixture, tenant_b: TenantFixture) -> None:
    body = {"kind": "warning", "title": "t", "severity": "low", "body_en": "b", "tenant_ids": [tenant_b.id]}
    assert_problem(client.post(f"{API}/bulletins", json=body, headers=tenant_a.headers()), 403, "platform_only")
    assert_problem(publish(client, tenant_a, advisory="ICSA-00-000-00"), 404, "advisory_not_found")
    assert_problem(publish(client, tenant_a, cves=["CVE-2020-0001"]), 422, "bulletin_no_recipients")
    assert_problem(publish(client, tenant_a, body_zh="", tenant_ids=[tenant_b.id]), 422, "bulletin_body_missing")
    assert_problem(publish(client, tenant_a, tenant_ids=["0" * 32]), 404)
    bad_contact = client.put(
        f"{API}/contact", json={"webhook_url": "ftp://x", "webhook_secret": "s"}, headers=tenant_b.headers()
    )
    assert_problem(bad_contact, 422, "contact_invalid")
    no_secret = client.put(
        f"{API}/contact", json={"webhook_url": "https://hooks.example.com/x"}, headers=tenant_b.headers()
    )
    assert_problem(no_secret, 422, "contact_secret_missing")
