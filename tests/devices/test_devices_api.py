"""The registry over HTTP on SQLite and PostgreSQL: CRUD, problems, permissions, tenants, documents, dead letters."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from iip.api.app import create_app
from iip.devices.registry_directory import close_registry_services, registry_services
from iip.kernel.auth import Role
from iip.kernel.db import Database
from iip.kernel.runtime import Runtime
from iip.kernel.settings import Settings
from iip.migrations.runner import upgrade
from tests.api.support import assert_problem
from tests.conftest import BACKENDS, TenantFixture, database_url, make_tenant
from tests.devices.test_registry import METER, PUMP, sample_document


@dataclass(frozen=True)
class Api:
    client: TestClient
    runtime: Runtime


@pytest.fixture(scope="module", params=BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One app over one migrated database per backend for the module; tests use tenants of their own."""
    folder = tmp_path_factory.mktemp("devices-api")
    with database_url(str(request.param), folder) as url:
        settings = Settings(data_dir=folder / "var", database_url=url, log_format="text", log_level="WARNING")
        db = Database(settings.effective_database_url)
        upgrade(db)
        runtime = Runtime.build(settings)
        runtime.db.dispose()
        runtime.db = db
        with TestClient(create_app(runtime=runtime, configure_logs=False)) as client:
            yield Api(client, runtime)
        close_registry_services(runtime)
        db.dispose()


@pytest.fixture
def client(api: Api) -> TestClient:
    return api.client


@pytest.fixture
def tenant(api: Api) -> TenantFixture:
    return make_tenant(api.runtime.db, f"t-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def other(api: Api) -> TenantFixture:
    return make_tenant(api.runtime.db, f"t-{uuid.uuid4().hex[:12]}")


def problem(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """`assert_problem` for the test client's responses (starlette's client may be httpx2's)."""
    return assert_problem(response, status, code)


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def load(client: TestClient, tenant: TenantFixture, document: dict[str, Any]) -> dict[str, Any]:
    body = yaml.safe_dump(document).encode()
    headers = {**tenant.headers(), "Content-Type": "application/yaml"}
    result: dict[str, Any] = ok(client.post("/api/devices/import", content=body, headers=headers))
    return result


# --- CRUD


def test_profiles_devices_and_gateways_round_trip(client: TestClient, tenant: TenantFixture) -> None:
    h = tenant.headers()
    profile = ok(client.post("/api/device-profiles", json=PUMP, headers=h), 201)
    assert (profile["name"], profile["protocol"], profile["version"], profile["devices"]) == ("pump", "modbus", 1, 0)
    assert ok(client.get(f"/api/device-profiles/{profile['id']}", headers=h))["name"] == "pump"
    changed = copy.deepcopy(PUMP)
    changed["metrics"][0]["unit"] = "l/s"
    assert ok(client.put("/api/device-profiles/pump", json=changed, headers=h))["version"] == 2
    assert [p["name"] for p in ok(client.get("/api/device-profiles?protocol=modbus", headers=h))] == ["pump"]
    assert ok(client.get("/api/device-profiles?protocol=opcua", headers=h)) == []

    gateway = ok(client.post("/api/gateways", json={"key": "gw-1", "site": "plant-a"}, headers=h), 201)
    assert gateway["token"].startswith("iipg_")
    assert gateway["token_prefix"] in gateway["token"]
    assert ok(client.patch("/api/gateways/gw-1", json={"name": "Line 1"}, headers=h))["name"] == "Line 1"

    body = {"key": "pump-01", "profile": "pump", "site": "plant-a", "connection": {"host": "10.0.0.5"}}
    device = ok(client.post("/api/devices", json=body, headers=h), 201)
    assert device["token"].startswith("iipd_")
    assert (device["protocol"], device["connection"]["port"], device["gateway"]) == ("modbus", 502, None)
    shown = ok(client.get("/api/devices/pump-01", headers=h))
    assert "token" not in shown
    assert shown == ok(client.get(f"/api/devices/{device['id']}", headers=h))
    patched = ok(client.patch("/api/devices/pump-01", json={"gateway": "gw-1", "display_name": "Feed"}, headers=h))
    assert (patched["gateway"], patched["display_name"]) == ("gw-1", "Feed")
    assert [d["key"] for d in ok(client.get("/api/devices?gateway=gw-1&q=feed", headers=h))] == ["pump-01"]
    assert ok(client.get("/api/devices?site=plant-b", headers=h)) == []
    assert ok(client.get("/api/device-profiles/pump", headers=h))["devices"] == 1

    problem(client.delete("/api/device-profiles/pump", headers=h), 409, "profile_in_use")
    problem(client.delete("/api/gateways/gw-1", headers=h), 409, "gateway_in_use")
    assert client.delete("/api/devices/pump-01", headers=h).status_code == 204
    problem(client.get("/api/devices/pump-01", headers=h), 404, "device_not_found")
    assert client.delete("/api/gateways/gw-1", headers=h).status_code == 204
    assert client.delete("/api/device-profiles/pump", headers=h).status_code == 204
    assert ok(client.get("/api/device-profiles", headers=h)) == []


def test_bad_input_is_a_problem(client: TestClient, tenant: TenantFixture) -> None:
    h = tenant.headers()
    bad_profile = {**PUMP, "metrics": [{"name": "flow", "modbus": {"address": 70000}}]}
    refused = problem(client.post("/api/device-profiles", json=bad_profile, headers=h), 422, "invalid")
    assert "address" in refused["detail"]
    no_mapping = {**PUMP, "metrics": [{"name": "flow"}]}
    assert "modbus" in problem(client.post("/api/device-profiles", json=no_mapping, headers=h), 422)["detail"]
    ok(client.post("/api/device-profiles", json=PUMP, headers=h), 201)
    problem(client.post("/api/device-profiles", json=PUMP, headers=h), 409, "profile_exists")

    unknown = problem(
        client.post("/api/devices", json={"key": "d", "profile": "pumpx"}, headers=h), 422, "unknown_profile"
    )
    assert unknown["detail"] == "profile: unknown profile 'pumpx'"
    bad_connection = {"key": "d", "profile": "pump", "connection": {"host": "bad host!", "unit_id": 300}}
    refused = problem(client.post("/api/devices", json=bad_connection, headers=h), 422, "invalid_connection")
    assert {e.split(":")[0] for e in refused["errors"]} == {"connection.host", "connection.unit_id"}
    problem(client.post("/api/devices", json={"key": "a/b", "profile": "pump"}, headers=h), 422, "invalid")
    ok(client.post("/api/devices", json={"key": "d", "profile": "pump", "connection": {"host": "h"}}, headers=h), 201)
    problem(
        client.post("/api/devices", json={"key": "d", "profile": "pump", "connection": {"host": "h"}}, headers=h),
        409,
        "device_exists",
    )
    problem(client.patch("/api/devices/d", json={"gateway": "nope"}, headers=h), 422, "unknown_gateway")
    problem(client.get("/api/devices?protocol=carrier-pigeon", headers=h), 422, "invalid")
    problem(client.get("/api/dead-letters?since=2026-01-01T00:00:00", headers=h), 422, "invalid")


def test_permissions(client: TestClient, tenant: TenantFixture) -> None:
    profile = {**METER, "name": "meter"}
    problem(client.post("/api/device-profiles", json=profile, headers=tenant.headers(Role.VIEWER)), 403)
    problem(client.post("/api/device-profiles", json=profile, headers=tenant.headers(Role.OPERATOR)), 403)
    ok(client.post("/api/device-profiles", json=profile, headers=tenant.headers(Role.ENGINEER)), 201)
    body = {"key": "m-1", "profile": "meter"}
    ok(client.post("/api/devices", json=body, headers=tenant.headers(Role.ENGINEER)), 201)
    ok(client.post("/api/devices/m-1/token", headers=tenant.headers(Role.ENGINEER)))
    assert ok(client.get("/api/devices", headers=tenant.headers(Role.VIEWER)))[0]["key"] == "m-1"
    problem(client.post("/api/devices/m-1/token", headers=tenant.headers(Role.VIEWER)), 403)
    problem(client.delete("/api/dead-letters", headers=tenant.headers(Role.ENGINEER)), 403)
    assert ok(client.delete("/api/dead-letters", headers=tenant.headers(Role.ADMIN)))["deleted"] == 0
    problem(client.get("/api/devices"), 401)


def test_another_tenants_objects_are_404(client: TestClient, tenant: TenantFixture, other: TenantFixture) -> None:
    load(client, other, sample_document())
    device = ok(client.get("/api/devices/pump-01", headers=other.headers()))
    for path in (
        f"/api/devices/{device['id']}",
        "/api/devices/pump-01",
        "/api/device-profiles/pump",
        "/api/gateways/gw-1",
    ):
        problem(client.get(path, headers=tenant.headers()), 404)
    problem(client.patch(f"/api/devices/{device['id']}", json={"site": "x"}, headers=tenant.headers()), 404)
    problem(client.post(f"/api/devices/{device['id']}/token", headers=tenant.headers()), 404)
    assert ok(client.get("/api/devices", headers=tenant.headers())) == []
    assert ok(client.get("/api/devices/export", headers=tenant.headers()))["devices"] == []
    platform = ok(client.get(f"/api/devices/{device['id']}", headers=tenant.headers(Role.PLATFORM_OPERATOR)))
    assert platform["tenant_id"] == other.id
    assert ok(client.get("/api/devices/pump-01", headers=other.headers()))["site"] == "plant-a"  # unchanged


def test_writes_are_audited_with_the_object(client: TestClient, tenant: TenantFixture) -> None:
    h = tenant.headers()
    ok(client.post("/api/device-profiles", json=METER, headers=h), 201)
    device = ok(client.post("/api/devices", json={"key": "m-1", "profile": "meter"}, headers=h), 201)
    ok(client.post("/api/devices/m-1/token", headers=h))
    entries = ok(client.get("/api/audit?limit=20", headers=h))["items"]
    seen = {(e["action"], e["object_type"], e["object_id"]) for e in entries}
    assert ("POST /api/devices", "device", device["id"]) in seen
    assert ("POST /api/devices/{device}/token", "device", device["id"]) in seen


# --- tokens


def test_token_rotate_and_revoke(client: TestClient, tenant: TenantFixture) -> None:
    h = tenant.headers()
    ok(client.post("/api/device-profiles", json=METER, headers=h), 201)
    created = ok(
        client.post("/api/devices", json={"key": "m-1", "profile": "meter", "issue_token": False}, headers=h), 201
    )
    assert created["token"] is None
    assert created["token_prefix"] is None
    issued = ok(client.post("/api/devices/m-1/token", headers=h))
    assert issued["token"].startswith(f"iipd_{issued['token_prefix']}_")
    again = ok(client.post("/api/devices/m-1/token", headers=h))
    assert again["token"] != issued["token"]
    assert ok(client.get("/api/devices/m-1", headers=h))["token_prefix"] == again["token_prefix"]
    assert ok(client.delete("/api/devices/m-1/token", headers=h))["token_prefix"] is None
    gateway = ok(client.post("/api/gateways", json={"key": "gw"}, headers=h), 201)
    rotated = ok(client.post("/api/gateways/gw/token", headers=h))
    assert rotated["token"] != gateway["token"]
    assert ok(client.delete("/api/gateways/gw/token", headers=h))["token_prefix"] is None


# --- the registry document


def test_import_is_atomic_and_idempotent(client: TestClient, tenant: TenantFixture) -> None:
    document = sample_document()
    first = load(client, tenant, document)
    assert first["devices"]["created"] == ["pump-01", "meter-01"]
    again = load(client, tenant, document)
    assert again["devices"] == {"created": [], "updated": [], "unchanged": ["pump-01", "meter-01"]}
    before = ok(client.get("/api/devices/export", headers=tenant.headers()))

    bad = copy.deepcopy(document)
    bad["devices"][0]["site"] = "moved"
    bad["devices"].append({"key": "pump-02", "profile": "pumpx"})
    bad["devices"].append({"key": "pump-03", "profile": "pump", "connection": {"port": 70000}})
    headers = {**tenant.headers(), "Content-Type": "application/json"}
    refused = problem(client.post("/api/devices/import", json=bad, headers=headers), 422, "invalid_document")
    assert "devices[2].profile: unknown profile 'pumpx'" in refused["errors"]
    assert "devices[3].connection.host: Field required" in refused["errors"]
    assert any(e.startswith("devices[3].connection.port:") for e in refused["errors"])
    assert refused["detail"].startswith("3 errors, the first: ")
    assert ok(client.get("/api/devices/export", headers=tenant.headers())) == before

    broken = problem(
        client.post("/api/devices/import", content=b"devices: [", headers=tenant.headers()), 422, "invalid_document"
    )
    assert broken["detail"].startswith("not valid YAML")


def test_export_then_import_round_trip(client: TestClient, tenant: TenantFixture, other: TenantFixture) -> None:
    document = sample_document()
    document["devices"][1].pop("sparkplug")  # unique platform-wide: the other tenant cannot take them
    load(client, tenant, document)
    exported_yaml = client.get("/api/devices/export?format=yaml", headers=tenant.headers())
    assert exported_yaml.headers["content-type"].startswith("application/yaml")
    headers = {**other.headers(), "Content-Type": "application/yaml"}
    report = ok(client.post("/api/devices/import", content=exported_yaml.content, headers=headers))
    assert sorted(report["devices"]["created"]) == ["meter-01", "pump-01"]
    mine = ok(client.get("/api/devices/export", headers=tenant.headers()))
    theirs = ok(client.get("/api/devices/export?format=json", headers=other.headers()))
    assert mine == theirs == yaml.safe_load(exported_yaml.text)


def test_import_body_size_is_limited(
    client: TestClient, tenant: TenantFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.modules["iip.devices.router"], "MAX_DOCUMENT_BYTES", 1024)
    body = yaml.safe_dump({"devices": [{"key": f"d-{n}", "profile": "p"} for n in range(100)]}).encode()
    problem(client.post("/api/devices/import", content=body, headers=tenant.headers()), 413, "payload_too_large")
    assert ok(client.get("/api/devices", headers=tenant.headers())) == []


# --- dead letters


def test_dead_letters_are_listed_and_purged(api: Api, tenant: TenantFixture, other: TenantFixture) -> None:
    client = api.client
    sink = registry_services(api.runtime).dead_letters
    sink.record(
        source="mqtt",
        reason="not JSON",
        raw="温度 text".encode(),
        topic="iip/x/d1/telemetry",
        tenant_id=tenant.id,
        device="d1",
    )
    sink.record(source="modbus", reason="timeout", raw=b"\xff\xfe\x00", tenant_id=tenant.id, device="d2")
    sink.record(source="http", reason="other tenant", raw=b"{}", tenant_id=other.id, device="d1")
    assert sink.flush()
    letters = ok(client.get("/api/dead-letters", headers=tenant.headers(Role.VIEWER)))
    assert [(x["device"], x["source"]) for x in letters] == [("d2", "modbus"), ("d1", "mqtt")]  # newest first
    binary, text = letters
    assert (text["raw"], text["raw_encoding"], text["topic"]) == ("温度 text", "utf-8", "iip/x/d1/telemetry")
    assert (base64.b64decode(binary["raw"]), binary["raw_encoding"], binary["raw_size"]) == (
        b"\xff\xfe\x00",
        "base64",
        3,
    )
    assert [x["reason"] for x in ok(client.get("/api/dead-letters?device=d1", headers=tenant.headers()))] == [
        "not JSON"
    ]
    assert [x["device"] for x in ok(client.get("/api/dead-letters?source=modbus", headers=tenant.headers()))] == ["d2"]
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)).isoformat()
    assert ok(client.get("/api/dead-letters", params={"since": later}, headers=tenant.headers())) == []
    assert (
        ok(client.get(f"/api/dead-letters?before_id={binary['id']}", headers=tenant.headers()))[0]["id"] == text["id"]
    )

    assert ok(client.delete("/api/dead-letters?source=mqtt", headers=tenant.headers()))["deleted"] == 1
    assert [x["device"] for x in ok(client.get("/api/dead-letters", headers=tenant.headers()))] == ["d2"]
    assert ok(client.delete("/api/dead-letters", headers=tenant.headers()))["deleted"] == 1
    assert len(ok(client.get("/api/dead-letters", headers=other.headers()))) == 1  # the other tenant's stay
