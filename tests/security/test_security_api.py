"""The security API on SQLite and PostgreSQL: assets, captures, baselines, alerts, matches, incidents,
awareness; tenant isolation and problems."""

from __future__ import annotations

import datetime as dt

from fastapi.testclient import TestClient

from iip.kernel.auth import Role
from iip.kernel.db import Database
from iip.kernel.runtime import Runtime
from iip.security.records import Sighting
from iip.security.service import SecurityService
from tests.api.support import assert_problem
from tests.conftest import TenantFixture
from tests.security.conftest import CSAF, require_dataset
from tests.security.support import (
    ATTACK,
    TRAINING,
    capture_bytes,
    collect_alarm_events,
    engineer,
    seed_matches,
    wait_until,
)

API = "/api/security"


def upload(client: TestClient, tenant: TenantFixture, path: str, name: str, **form: str) -> dict:  # type: ignore[type-arg]
    response = client.post(
        f"{API}/{path}",
        files={"file": (name, capture_bytes(name), "application/vnd.tcpdump.pcap")},
        data=form,
        headers=tenant.headers(Role.ENGINEER),
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def test_declare_list_update_and_isolate_assets(
    client: TestClient, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    created = client.post(
        f"{API}/assets",
        json={"address": "10.0.0.12", "site": "plant-1", "name": "PLC-3", "vendor": "Siemens", "criticality": "high"},
        headers=tenant_a.headers(Role.ENGINEER),
    )
    assert created.status_code == 201, created.text
    asset = created.json()
    assert (asset["source"], asset["criticality"], asset["site"]) == ("declared", "high", "plant-1")
    patched = client.patch(
        f"{API}/assets/{asset['id']}", json={"firmware": "V2.9", "owner": "line 3"}, headers=tenant_a.headers()
    )
    assert (patched.json()["firmware"], patched.json()["name"]) == ("V2.9", "PLC-3")
    listed = client.get(f"{API}/assets", params={"q": "plc"}, headers=tenant_a.headers(Role.VIEWER)).json()
    assert [a["address"] for a in listed] == ["10.0.0.12"]
    assert client.get(f"{API}/assets", headers=tenant_b.headers()).json() == []
    assert_problem(client.get(f"{API}/assets/{asset['id']}", headers=tenant_b.headers()), 404, "asset_not_found")
    assert_problem(client.post(f"{API}/assets", json={"address": "x"}, headers=tenant_a.headers(Role.VIEWER)), 403)
    assert_problem(client.post(f"{API}/assets", json={"address": "10.0.0.300"}, headers=tenant_a.headers()), 422)


def test_csv_import_is_all_or_nothing_and_names_the_row(client: TestClient, tenant_a: TenantFixture) -> None:
    good = b"address,name,vendor,criticality\n10.1.0.1,RTU-1,Schneider,critical\n10.1.0.2,RTU-2,Schneider,\n"
    bad = b"address,name,criticality\n10.1.0.3,RTU-3,low\n10.1.0.4,RTU-4,extreme\n"
    response = client.post(
        f"{API}/assets/import", files={"file": ("a.csv", bad, "text/csv")}, headers=tenant_a.headers()
    )
    problem = assert_problem(response, 422)
    assert "row 3" in problem["detail"]
    assert client.get(f"{API}/assets", headers=tenant_a.headers()).json() == []  # nothing of the good row either
    imported = client.post(
        f"{API}/assets/import",
        files={"file": ("a.csv", good, "text/csv")},
        data={"site": "s1"},
        headers=tenant_a.headers(),
    ).json()
    assert imported["imported"] == 2
    by_address = {a["address"]: a for a in imported["assets"]}
    assert by_address["10.1.0.1"]["criticality"] == "critical"
    assert by_address["10.1.0.2"]["criticality"] == "medium"  # an empty cell keeps the default
    assert {a["source"] for a in imported["assets"]} == {"imported"}


def test_learn_then_check_stores_alerts_and_publishes_alarm_events(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture
) -> None:
    heard, _subscription = collect_alarm_events(client, runtime, tenant_a)
    baseline = upload(client, tenant_a, "baselines", TRAINING, site="rtu-plant")
    assert (baseline["version"], baseline["active"], baseline["site"]) == (1, True, "rtu-plant")
    assert baseline["summary"]["ics_pairs"] >= 1
    assets = client.get(f"{API}/assets", params={"site": "rtu-plant"}, headers=tenant_a.headers()).json()
    assert {a["source"] for a in assets} == {"observed"}
    assert any("modbus" in a["protocols"] and a["unit_ids"] for a in assets)
    checked = upload(client, tenant_a, "captures", ATTACK, site="rtu-plant", check="true")
    capture = checked["capture"]
    assert capture["checked"]
    assert capture["packets"] > 1000
    assert capture["messages"]["modbus"] > 0
    alerts = checked["alerts"]
    assert capture["alerts"] == len(alerts) > 0
    writes = [a for a in alerts if a["kind"] == "unauthorized_write"]
    assert writes
    assert all(a["severity"] == "critical" and a["techniques"] for a in writes)
    assert all(a["evidence"]["frames"] for a in writes)
    wait_until(lambda: len(heard) == len(alerts))
    assert {e.details["alert_id"] for e in heard} == {a["id"] for a in alerts}
    assert {e.source for e in heard} == {"security"}
    # Checking the same capture again grows the open alerts instead of raising new ones.
    again = upload(client, tenant_a, "captures", ATTACK, site="rtu-plant", check="true")
    assert {a["id"] for a in again["alerts"]} <= {a["id"] for a in alerts}
    grown = client.get(f"{API}/alerts/{writes[0]['id']}", headers=tenant_a.headers()).json()
    assert grown["count"] == 2 * writes[0]["count"]


def test_check_needs_a_baseline_and_bad_files_are_summaries(client: TestClient, tenant_a: TenantFixture) -> None:
    response = client.post(
        f"{API}/captures",
        files={"file": ("x.pcap", capture_bytes(ATTACK), "application/octet-stream")},
        data={"site": "nowhere", "check": "true"},
        headers=tenant_a.headers(),
    )
    assert_problem(response, 404, "baseline_missing")
    junk = client.post(
        f"{API}/captures", files={"file": ("junk.pcap", b"not a capture at all", "application/octet-stream")},
        headers=tenant_a.headers(),
    )  # fmt: skip
    assert junk.status_code == 201
    assert junk.json()["capture"]["error"] == "not a pcap or pcapng file"
    truncated = client.post(
        f"{API}/captures", files={"file": ("cut.pcap", capture_bytes(TRAINING)[:5000], "application/octet-stream")},
        headers=tenant_a.headers(),
    )  # fmt: skip
    body = truncated.json()["capture"]
    assert body["packets"] > 0
    assert "truncated" in body["error"]


def test_alerts_acknowledge_close_and_open_an_incident(
    client: TestClient, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    upload(client, tenant_a, "baselines", TRAINING)
    alerts = upload(client, tenant_a, "captures", ATTACK, check="true")["alerts"]
    first = alerts[0]
    assert_problem(client.post(f"{API}/alerts/{first['id']}/acknowledge", headers=tenant_a.headers(Role.VIEWER)), 403)
    assert_problem(client.post(f"{API}/alerts/{first['id']}/acknowledge", headers=tenant_b.headers()), 404)
    acked = client.post(f"{API}/alerts/{first['id']}/acknowledge", json={"note": "looking"}, headers=tenant_a.headers())
    assert (acked.json()["status"], acked.json()["note"]) == ("acknowledged", "looking")
    assert acked.json()["acknowledged_by"].endswith("admin")
    closed = client.post(f"{API}/alerts/{first['id']}/close", headers=tenant_a.headers()).json()
    assert closed["status"] == "closed"
    assert closed["closed_at"]
    assert_problem(
        client.post(f"{API}/alerts/{first['id']}/acknowledge", headers=tenant_a.headers()), 422, "alert_closed"
    )
    open_ids = [
        a["id"] for a in client.get(f"{API}/alerts", params={"status": "open"}, headers=tenant_a.headers()).json()
    ]
    assert first["id"] not in open_ids
    assert len(open_ids) == len(alerts) - 1
    writes = [a for a in alerts if a["kind"] == "unauthorized_write"][:2]
    incident = client.post(
        f"{API}/incidents",
        json={"title": "Fake command", "alert_ids": [a["id"] for a in writes]},
        headers=tenant_a.headers(),
    )
    assert incident.status_code == 201, incident.text
    body = incident.json()
    assert (body["state"], body["severity"]) == ("open", "critical")
    assert body["asset_ids"]  # the RTUs the writes went to are in the inventory
    entry = client.post(
        f"{API}/incidents/{body['id']}/entries",
        json={"kind": "action", "text": "isolated RTU"},
        headers=tenant_a.headers(),
    ).json()
    assert [e["kind"] for e in entry["timeline"]] == ["state", "action"]
    resolved = client.post(
        f"{API}/incidents/{body['id']}/state", json={"state": "resolved", "note": "patched"}, headers=tenant_a.headers()
    ).json()
    assert resolved["state"] == "resolved"
    assert resolved["timeline"][-1]["text"] == "open -> resolved: patched"
    assert_problem(client.get(f"{API}/incidents/{body['id']}", headers=tenant_b.headers()), 404)
    assert_problem(
        client.post(f"{API}/incidents", json={"title": "empty"}, headers=tenant_a.headers()), 422, "incident_empty"
    )


def test_matches_resolve_and_awareness(
    client: TestClient, migrated_db: Database, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    match_id, _ = seed_matches(
        migrated_db,
        tenant_a,
        ("ICSA-25-001-01", "CVE-2025-0001", 9.8, "10.2.0.1"),
        ("ICSA-25-002-01", "CVE-2025-0002", 5.3, "10.2.0.2"),
    )
    matches = client.get(f"{API}/matches", headers=tenant_a.headers()).json()
    assert [(m["tracking_id"], m["band"]) for m in matches] == [
        ("ICSA-25-001-01", "critical"),
        ("ICSA-25-002-01", "medium"),
    ]
    assert client.get(f"{API}/matches", headers=tenant_b.headers()).json() == []
    awareness = client.get(f"{API}/awareness", headers=tenant_a.headers()).json()
    assert awareness["vulnerable_assets"] == {"low": 0, "medium": 1, "high": 0, "critical": 1}
    assert awareness["breakdown"]["vulnerabilities"] == 7.0
    assert awareness["risk"] == 7
    resolved = client.post(
        f"{API}/matches/{match_id}/resolve", json={"resolution": "patched"}, headers=tenant_a.headers()
    )
    assert resolved.json()["resolution"] == "patched"
    assert resolved.json()["resolved_by"]
    after = client.get(f"{API}/awareness", headers=tenant_a.headers()).json()
    assert after["vulnerable_assets"]["critical"] == 0
    assert after["risk"] == 1
    assert client.get(f"{API}/awareness", headers=tenant_b.headers()).json()["risk"] == 0
    platform = client.get(f"{API}/awareness/tenants", headers=tenant_a.headers(Role.PLATFORM_OPERATOR)).json()
    assert [t["tenant_name"] for t in platform][:1] == ["tenant-a"]
    assert_problem(client.get(f"{API}/awareness/tenants", headers=tenant_a.headers()), 403)


def test_baseline_versions_and_rollback(client: TestClient, tenant_a: TenantFixture) -> None:
    first = upload(client, tenant_a, "baselines", TRAINING, site="s")
    second = upload(client, tenant_a, "baselines", ATTACK, site="s")
    assert second["version"] == 2
    listed = client.get(f"{API}/baselines", params={"site": "s"}, headers=tenant_a.headers()).json()
    assert [(b["version"], b["active"]) for b in listed] == [(2, True), (1, False)]
    client.post(f"{API}/baselines/{first['id']}/activate", headers=tenant_a.headers())
    listed = client.get(f"{API}/baselines", params={"site": "s"}, headers=tenant_a.headers()).json()
    assert [(b["version"], b["active"]) for b in listed] == [(2, False), (1, True)]
    detail = client.get(f"{API}/baselines/{first['id']}", headers=tenant_a.headers()).json()
    assert detail["content"]["pairs"]


def test_import_csaf_and_match_the_inventory(
    client: TestClient, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    document = require_dataset(CSAF / "2024" / "icsa-24-011-06.json").read_bytes()
    files = [("files", ("icsa-24-011-06.json", document, "application/json"))]
    assert_problem(client.post(f"{API}/advisories", files=files, headers=tenant_a.headers()), 403, "platform_only")
    imported = client.post(f"{API}/advisories", files=files, headers=tenant_a.headers(Role.PLATFORM_OPERATOR))
    assert imported.status_code == 201, imported.text
    (advisory,) = imported.json()
    assert advisory["tracking_id"] == "ICSA-24-011-06"
    assert advisory["cves"]
    assert advisory["max_cvss"] == max(v["cvss"] for v in advisory["vulnerabilities"] if v["cvss"] is not None)
    again = client.post(f"{API}/advisories", files=files, headers=tenant_a.headers(Role.PLATFORM_OPERATOR))
    assert [a["id"] for a in again.json()] == [advisory["id"]]  # refreshed, not doubled
    broken = [("files", ("broken.json", b'{"document": {}}', "application/json"))]
    operator = tenant_a.headers(Role.PLATFORM_OPERATOR)
    assert_problem(client.post(f"{API}/advisories", files=broken, headers=operator), 422, "invalid_advisory")
    for address, firmware in (("10.8.0.1", "V14.3.0.1"), ("10.8.0.2", "V14.3.0.6"), ("10.8.0.3", "")):
        body = {"address": address, "vendor": "Siemens", "model": "JT2Go", "firmware": firmware}
        assert client.post(f"{API}/assets", json=body, headers=tenant_a.headers()).status_code == 201
    matches = client.post(f"{API}/matches/run", headers=tenant_a.headers()).json()
    by_address = {m["asset_address"]: m for m in matches}
    assert by_address["10.8.0.1"]["status"] == "affected"
    assert by_address["10.8.0.3"]["status"] == "possibly_affected"  # the version is not known
    assert "10.8.0.2" not in by_address  # the fixed version
    assert by_address["10.8.0.1"]["tracking_id"] == "ICSA-24-011-06"
    assert by_address["10.8.0.1"]["cves"]
    assert client.post(f"{API}/matches/run", headers=tenant_b.headers()).json() == []


def test_addresses_seen_at_the_decoy_are_flagged_by_the_monitor(
    client: TestClient, runtime: Runtime, tenant_a: TenantFixture
) -> None:
    upload(client, tenant_a, "baselines", TRAINING, site="rtu-plant")
    first = upload(client, tenant_a, "captures", ATTACK, site="rtu-plant", check="true")["alerts"]
    assert not [a for a in first if a["kind"] == "known_attacker"]
    writer = next(a for a in first if a["kind"] == "unauthorized_write")["source"]
    with runtime.db.session() as session:
        SecurityService(session, engineer(tenant_a)).record_sightings(
            tenant_a.id, [Sighting(writer, first_seen_at(first), "modbus", "write", notable=True)]
        )
    again = upload(client, tenant_a, "captures", ATTACK, site="rtu-plant", check="true")["alerts"]
    known = [a for a in again if a["kind"] == "known_attacker"]
    assert known
    assert {a["source"] for a in known} == {writer}
    assert all(a["severity"] == "critical" and "T0846" in a["techniques"] for a in known)


def first_seen_at(alerts: list[dict]) -> dt.datetime:  # type: ignore[type-arg]
    return min(dt.datetime.fromisoformat(a["first_time"]) for a in alerts)
