"""What the security API, CLI and page tests share: captures of the data sets, principals, stored
advisories and matches, a way to hear the alarm events alerts publish, and bulletins published to a
webhook receiver with the state of their delivery."""

from __future__ import annotations

import datetime as dt
import functools
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi.testclient import TestClient

from iip.alarms.public import ALARM_EVENTS, AlarmEvent
from iip.kernel.auth import Principal, Role
from iip.kernel.bus import Delivery
from iip.kernel.db import Database
from iip.kernel.runtime import Runtime
from iip.kernel.settings import SecuritySettings, Settings
from iip.security.records import AdvisoryRecord, MatchRecord, MatchStatus
from iip.security.service import AssetFields, SecurityService
from tests.conftest import TenantFixture
from tests.security.conftest import MODBUS_ATTACKS, require_dataset

if TYPE_CHECKING:
    from tests.alarms.notify.conftest import HookReceiver

API = "/api/security"

# Normal traffic of a six-RTU Modbus plant, and the same plant while a fake command is sent.
TRAINING = "moving_two_files_modbus_6RTU.pcap"
ATTACK = "send_a_fake_command_modbus_6RTU_with_operate.pcap"


def capture_bytes(name: str) -> bytes:
    return require_dataset(MODBUS_ATTACKS / name).read_bytes()


def capture_path(name: str) -> Path:
    return require_dataset(MODBUS_ATTACKS / name)


def operator(tenant: TenantFixture) -> Principal:
    return Principal("user", "op", "platform-operator", tenant.id, Role.PLATFORM_OPERATOR)


def engineer(tenant: TenantFixture) -> Principal:
    return Principal("user", "eng", f"{tenant.name}-engineer", tenant.id, Role.ENGINEER)


def advisory(tracking_id: str, cve: str, cvss: float) -> AdvisoryRecord:
    return AdvisoryRecord(
        tracking_id=tracking_id,
        title=f"{tracking_id}: PLC firmware flaw",
        publisher="CISA",
        released=dt.datetime(2025, 3, 1, tzinfo=dt.UTC),
        cves=[cve],
        products=[{"vendor": "Acme", "product": "PLC-9", "versions": "<2.4"}],
        vulnerabilities=[{"cve": cve, "cvss": cvss, "vector": "CVSS:3.1/AV:N"}],
        remediations=[{"category": "vendor_fix", "details": "Upgrade to 2.4"}],
    )


def seed_matches(db: Database, tenant: TenantFixture, *found: tuple[str, str, float, str]) -> list[str]:
    """Advisories (stored as the platform's), assets of the tenant, and one match per
    (tracking id, CVE, CVSS, address) as matching would record them in one run; the match ids."""
    with db.session() as session:
        SecurityService(session, operator(tenant)).record_advisories([advisory(t, c, s) for t, c, s, _ in found])
        service = SecurityService(session, engineer(tenant))
        records = []
        for tracking_id, cve, cvss, address in found:
            asset = service.create_asset(address, AssetFields(vendor="Acme", model="PLC-9", firmware="2.1"))
            records.append(
                MatchRecord(
                    asset_id=asset.id,
                    tracking_id=tracking_id,
                    status=MatchStatus.AFFECTED,
                    cves=[cve],
                    max_cvss=cvss,
                    remediation="Upgrade to 2.4",
                    reason="firmware 2.1 < 2.4",
                )
            )
        return [m.id for m in service.record_matches(tenant.id, records)]


def collect_alarm_events(client: TestClient, runtime: Runtime, tenant: TenantFixture) -> tuple[list[AlarmEvent], Any]:
    heard: list[AlarmEvent] = []

    async def collect(delivery: Delivery[AlarmEvent]) -> None:
        if delivery.payload.tenant_id == tenant.id:
            heard.append(delivery.payload)

    assert client.portal is not None
    subscription = client.portal.call(
        functools.partial(runtime.bus.subscribe, ALARM_EVENTS, collect, durable=f"test-{uuid.uuid4().hex[:8]}")
    )
    return heard, subscription


def wait_until(check: Callable[[], bool], within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def retrying_settings(tmp_path: Path, db_url: str, retry: SecuritySettings) -> Settings:
    """The test's settings, with bulletin deliveries retried as `retry` says."""
    return Settings(
        data_dir=tmp_path / "var", database_url=db_url, log_format="text", log_level="WARNING", security=retry
    )


def webhook_of(client: TestClient, tenant: TenantFixture, bulletin_id: str) -> dict[str, Any]:
    """The bulletin's webhook delivery as `tenant` (its publisher) sees it."""
    detail = client.get(f"{API}/bulletins/{bulletin_id}", headers=tenant.headers(Role.PLATFORM_OPERATOR)).json()
    return next(d for d in detail["recipients"][0]["deliveries"] if d["channel"] == "webhook")  # type: ignore[no-any-return]


def wait_for_webhook(client: TestClient, tenant: TenantFixture, bulletin_id: str, status: str) -> dict[str, Any]:
    """The bulletin's webhook delivery as first seen with `status` (an assertion error if it never is)."""
    seen: list[dict[str, Any]] = []

    def reached() -> bool:
        seen.append(webhook_of(client, tenant, bulletin_id))
        return bool(seen[-1]["status"] == status)

    wait_until(reached)
    return seen[-1]


def hook_contact(client: TestClient, recipient: TenantFixture, receiver: HookReceiver, statuses: list[int]) -> None:
    """`recipient`'s webhook goes to `receiver`, which answers `statuses` in turn, then 200."""
    from tests.security.test_bulletins import set_contact  # imported here: test_bulletins imports this module

    set_contact(client, recipient, receiver.url)
    receiver.statuses = statuses


def publish_until(
    client: TestClient, publisher: TenantFixture, recipient: TenantFixture, status: str
) -> tuple[str, dict[str, Any]]:
    """A bulletin `publisher` sends `recipient`, once its webhook delivery has `status`: (bulletin id, delivery)."""
    from tests.security.test_bulletins import publish  # imported here: test_bulletins imports this module

    bulletin_id: str = publish(client, publisher, tenant_ids=[recipient.id]).json()["id"]
    return bulletin_id, wait_for_webhook(client, publisher, bulletin_id, status)
