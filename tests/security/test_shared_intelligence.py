"""Threat intelligence shared across the platform: every tenant's monitor consults every decoy's
indicators; a tenant sees a shared indicator (address, times, counts, notable actions) but never
whose decoy saw it; the platform operator sees each with its sources. Service, API, console, CLI."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from fastapi.testclient import TestClient

from iip.kernel.auth import AccessService, Role
from iip.kernel.db import Database
from iip.kernel.runtime import Runtime
from iip.kernel.settings import SecuritySettings, Settings
from iip.security import ingest
from iip.security.monitor import LiveMonitor
from iip.security.records import Sighting
from iip.security.service import SecurityService
from tests.cli.conftest import InProcessIip
from tests.conftest import TenantFixture
from tests.console.support import assert_html, sign_in_as, tenant_with_users
from tests.security.support import engineer, operator
from tests.security.test_security_cli import CliDatabase, cli_database, iip, tenant  # noqa: F401 - fixtures
from tests.security.test_security_pages import rows_of

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
B_ONLY, A_ONLY, BOTH = "198.51.100.7", "203.0.113.9", "192.0.2.50"


def seed(db: Database, tenant_a: TenantFixture, tenant_b: TenantFixture) -> None:
    """B's decoy saw a writer and a scanner; A's decoy saw a reader and the same scanner."""
    with db.session() as session:
        SecurityService(session, engineer(tenant_b)).record_sightings(
            tenant_b.id,
            [
                Sighting(B_ONLY, NOW - dt.timedelta(hours=3), "modbus", "connected"),
                Sighting(B_ONLY, NOW - dt.timedelta(hours=2), "modbus", "write", notable=True),
                Sighting(BOTH, NOW - dt.timedelta(days=2), "s7comm", "identification", notable=True),
            ],
        )
        SecurityService(session, engineer(tenant_a)).record_sightings(
            tenant_a.id,
            [
                Sighting(A_ONLY, NOW - dt.timedelta(hours=1), "modbus", "read_holding_registers"),
                Sighting(BOTH, NOW - dt.timedelta(hours=5), "modbus", "stop_cpu", notable=True),
            ],
        )


def sharing(on: bool) -> Settings:
    return Settings(security=SecuritySettings(share_intelligence=on))


def test_a_tenant_sees_every_decoys_indicators_without_their_sources(
    migrated_db: Database, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    seed(migrated_db, tenant_a, tenant_b)
    with migrated_db.session() as session:
        entries = SecurityService(session, engineer(tenant_a), settings=sharing(True)).shared_indicators()
    assert [e.address for e in entries] == [A_ONLY, B_ONLY, BOTH]  # most recently seen first
    by_address = {e.address: e for e in entries}
    writer = by_address[B_ONLY]
    assert (writer.sightings, writer.protocols, writer.notable) == (2, ["modbus"], ["write"])
    assert writer.counts == {"connected": 1, "write": 1}
    assert writer.first_seen == NOW - dt.timedelta(hours=3)
    merged = by_address[BOTH]  # both decoys saw it: one entry, summed
    assert merged.sightings == 2
    assert merged.protocols == ["modbus", "s7comm"]
    assert set(merged.notable) == {"identification", "stop_cpu"}
    assert (merged.first_seen, merged.last_seen) == (NOW - dt.timedelta(days=2), NOW - dt.timedelta(hours=5))
    assert all(e.sources == [] for e in entries)  # never whose decoy saw it

    with migrated_db.session() as session:
        own = SecurityService(session, engineer(tenant_a), settings=sharing(True)).list_indicators()
    assert {i.address for i in own} == {A_ONLY, BOTH}  # the tenant's own indicators stay its own


def test_the_operator_sees_the_sources(migrated_db: Database, tenant_a: TenantFixture, tenant_b: TenantFixture) -> None:
    seed(migrated_db, tenant_a, tenant_b)
    with migrated_db.session() as session:
        entries = SecurityService(session, operator(tenant_a), settings=sharing(False)).shared_indicators()
    sources = {e.address: sorted((s.tenant_name, s.sightings) for s in e.sources) for e in entries}
    assert sources == {
        A_ONLY: [(tenant_a.name, 1)],
        B_ONLY: [(tenant_b.name, 2)],
        BOTH: [(tenant_a.name, 1), (tenant_b.name, 1)],
    }


def test_the_monitor_consults_the_platforms_indicators_unless_sharing_is_off(
    migrated_db: Database, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    seed(migrated_db, tenant_a, tenant_b)
    with migrated_db.session() as session:
        reader = engineer(tenant_a)
        shared = ingest.known_attackers(SecurityService(session, reader, settings=sharing(True)), tenant_a.id)
        alone = ingest.known_attackers(SecurityService(session, reader, settings=sharing(False)), tenant_a.id)
        tenant_view = SecurityService(session, engineer(tenant_a), settings=sharing(False)).shared_indicators()
    assert shared == {A_ONLY: "modbus", B_ONLY: "write", BOTH: "identification, stop_cpu"}
    assert alone == {A_ONLY: "modbus", BOTH: "stop_cpu"}
    assert {e.address for e in tenant_view} == {A_ONLY, BOTH}


@pytest.mark.parametrize("on", [True, False])
def test_the_live_monitor_follows_the_platform_setting(
    migrated_db: Database, tenant_a: TenantFixture, tenant_b: TenantFixture, on: bool
) -> None:
    """The live monitor's known attackers come from the settings the platform gave it."""
    seed(migrated_db, tenant_a, tenant_b)
    monitor = LiveMonitor(migrated_db, tenant_a.id, settings=sharing(on))
    attackers = monitor._load().attackers
    assert (B_ONLY in attackers) is on
    assert A_ONLY in attackers


def test_the_api_hides_the_sources_from_tenants(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    seed(runtime.db, tenant_a, tenant_b)
    response = client.get("/api/security/intel", headers=tenant_a.headers(Role.VIEWER))
    assert response.status_code == 200, response.text
    body = response.json()
    assert [e["address"] for e in body] == [A_ONLY, B_ONLY, BOTH]
    assert all(e["sources"] is None for e in body)
    assert tenant_b.id not in response.text
    assert tenant_b.name not in response.text
    recent = client.get("/api/security/intel?days=1", headers=tenant_a.headers(Role.VIEWER)).json()
    assert [(e["address"], e["sightings"]) for e in recent] == [(A_ONLY, 1), (B_ONLY, 2), (BOTH, 1)]  # B's 2 days ago
    one = client.get(f"/api/security/intel?address={B_ONLY}", headers=tenant_a.headers(Role.VIEWER)).json()
    assert [(e["address"], e["notable"]) for e in one] == [(B_ONLY, ["write"])]
    # B's own indicator list (which names the tenant) stays B's.
    own = client.get("/api/security/indicators", headers=tenant_a.headers(Role.VIEWER)).json()
    assert {i["address"] for i in own} == {A_ONLY, BOTH}
    assert {i["tenant_id"] for i in own} == {tenant_a.id}

    platform = client.get("/api/security/intel", headers=tenant_a.headers(Role.PLATFORM_OPERATOR)).json()
    sources = {e["address"]: {s["tenant_id"] for s in e["sources"]} for e in platform}
    assert sources[B_ONLY] == {tenant_b.id}
    assert sources[BOTH] == {tenant_a.id, tenant_b.id}
    bad = client.get("/api/security/intel?address=" + "1" * 65, headers=tenant_a.headers(Role.VIEWER))
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")


def test_the_console_intel_page(client: TestClient, runtime: Runtime, tenant_b: TenantFixture) -> None:
    viewer = tenant_with_users(runtime, [Role.VIEWER])
    seed(runtime.db, viewer, tenant_b)
    sign_in_as(client, viewer, Role.VIEWER, "en")
    page = assert_html(client.get("/security/intel"), 200)
    assert rows_of(page, "intel-table", "data-address") == [A_ONLY, B_ONLY, BOTH]
    assert "Threat intelligence" in page
    assert tenant_b.name not in page
    assert "Seen by" not in page
    sign_in_as(client, viewer, Role.VIEWER, "zh_CN")
    chinese = assert_html(client.get("/security/intel"), 200)
    assert "威胁情报" in chinese
    operator_tenant = tenant_with_users(runtime, [Role.PLATFORM_OPERATOR])
    sign_in_as(client, operator_tenant, Role.PLATFORM_OPERATOR, "en")
    platform = assert_html(client.get("/security/intel"), 200)
    assert "Seen by" in platform
    assert tenant_b.name in platform


def test_the_cli_lists_the_intelligence(iip: InProcessIip, tenant: str, cli_database: CliDatabase) -> None:  # noqa: F811
    other = "t-other-" + tenant[2:]
    assert iip("tenant", "create", other).exit_code == 0
    with cli_database.db.session() as session:
        ids = {name: AccessService(session).tenant_by_name(name).id for name in (tenant, other)}
    seed(cli_database.db, *(TenantFixture(ids[n], n, "", "", {}) for n in (tenant, other)))
    mine = iip("security", "intel", "--tenant", tenant, "--json")
    assert mine.exit_code == 0, mine.output
    listed = json.loads(mine.stdout)
    assert [e["address"] for e in listed] == [A_ONLY, B_ONLY, BOTH]
    assert all("sources" not in e for e in listed)
    assert other not in mine.stdout
    everything = iip("security", "intel", "--json")
    assert everything.exit_code == 0, everything.output
    sources = {e["address"]: [s["tenant"] for s in e["sources"]] for e in json.loads(everything.stdout)}
    assert sources[B_ONLY] == [other]
    table = iip("security", "intel", "--tenant", tenant)
    assert B_ONLY in table.stdout
    missing = iip("security", "intel", "--tenant", "no-such-tenant")
    assert missing.exit_code == 1
