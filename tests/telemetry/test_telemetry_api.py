"""The telemetry query API on SQLite and PostgreSQL: answers, tenant scoping, exports, bad parameters."""

from __future__ import annotations

import csv
import io
import time
import uuid
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from fastapi.testclient import TestClient

from iip.kernel.auth import Role
from iip.kernel.runtime import Runtime
from iip.telemetry.public import PointBatchBuilder, store_points
from iip.telemetry.store import HOUR, MINUTE
from tests.api.support import assert_problem
from tests.conftest import TenantFixture

if TYPE_CHECKING:
    from tests.api.test_tenant_isolation import Created, World

API = "/api/telemetry"
# An hour-aligned base a few hours back, so the default range (the last day) holds every point.
BASE = (time.time_ns() // 1_000_000 // HOUR - 3) * HOUR


def write(runtime: Runtime, tenant: str, device: str, points: dict[str, list[tuple[int, float]]]) -> None:
    builder = PointBatchBuilder(tenant, source="test")
    for metric, values in points.items():
        for ts, value in values:
            builder.add(device, metric, ts, value)
    store_points(runtime, builder.build())


@pytest.fixture
def press(runtime: Runtime, tenant_a: TenantFixture) -> dict[str, list[tuple[int, float]]]:
    """Two hours of a press of tenant A: temperature every 30 s, speed every minute."""
    points = {
        "temperature": [(BASE + i * 30_000, 20.0 + (i % 10)) for i in range(240)],
        "speed": [(BASE + i * MINUTE, float(i)) for i in range(120)],
    }
    write(runtime, tenant_a.id, "press-7", points)
    return points


def get(client: TestClient, tenant: TenantFixture, path: str, role: Role = Role.VIEWER, **params: Any) -> Any:
    response = client.get(API + path, params=params, headers=tenant.headers(role))
    assert response.status_code == 200, response.text
    return response.json()


# --- answers ------------------------------------------------------------------------------------


def test_series_points_buckets_and_latest_of_a_device(
    client: TestClient, tenant_a: TenantFixture, press: dict[str, list[tuple[int, float]]]
) -> None:
    assert get(client, tenant_a, "/devices/press-7/series") == [
        {"device": "press-7", "metric": "speed"},
        {"device": "press-7", "metric": "temperature"},
    ]

    answer = get(client, tenant_a, "/devices/press-7/points", metric="temperature", start=BASE, end=BASE + 5 * MINUTE)
    assert answer["truncated"] is False
    assert [(p["ts_ms"], p["value"]) for p in answer["series"][0]["points"]] == press["temperature"][:10]

    iso_start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(BASE / 1000))
    limited = get(client, tenant_a, "/devices/press-7/points", start=iso_start, limit=130)
    assert [len(s["points"]) for s in limited["series"]] == [120, 10]
    assert limited["truncated"] is True

    answer = get(
        client,
        tenant_a,
        "/devices/press-7/buckets",
        metric="temperature",
        bucket="1h",
        fn="avg,min,max,count,first,last",
    )
    first_hour = [v for ts, v in press["temperature"] if ts < BASE + HOUR]
    assert answer["bucket_ms"] == HOUR
    assert answer["series"][0]["buckets"][0] == {
        "start_ms": BASE,
        "count": 120,
        "avg": pytest.approx(sum(first_hour) / 120),
        "min": 20.0,
        "max": 29.0,
        "sum": None,
        "first": 20.0,
        "last": 29.0,
    }
    per_five = get(client, tenant_a, "/devices/press-7/buckets", metric="speed", bucket="300", fn=["sum", "count"])
    assert [b["sum"] for b in per_five["series"][0]["buckets"]] == [
        float(sum(range(i, i + 5))) for i in range(0, 120, 5)
    ]

    latest = get(client, tenant_a, "/devices/press-7/latest")
    assert {(r["metric"], r["ts_ms"], r["value"], r["quality"]) for r in latest} == {
        ("speed", *press["speed"][-1], 0),
        ("temperature", *press["temperature"][-1], 0),
    }


def test_latest_of_many_devices(runtime: Runtime, client: TestClient, tenant_a: TenantFixture) -> None:
    for n in range(5):
        write(runtime, tenant_a.id, f"pump-{n}", {"flow": [(BASE + n, float(n))], "power": [(BASE + 7, -float(n))]})
    answer = get(client, tenant_a, "/latest", device=["pump-1", "pump-3", "pump-9"])
    assert [(r["device"], r["metric"], r["value"]) for r in answer] == [
        ("pump-1", "flow", 1.0),
        ("pump-1", "power", -1.0),
        ("pump-3", "flow", 3.0),
        ("pump-3", "power", -3.0),
    ]
    assert len(get(client, tenant_a, "/latest")) == 10


def test_csv_and_parquet_exports_round_trip(
    client: TestClient, tenant_a: TenantFixture, press: dict[str, list[tuple[int, float]]]
) -> None:
    response = client.get(f"{API}/devices/press-7/export", params={"format": "csv"}, headers=tenant_a.headers())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert 'filename="press-7.csv"' in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 360
    assert [(int(r["ts_ms"]), float(r["value"])) for r in rows if r["metric"] == "temperature"] == press["temperature"]
    assert rows[0]["time"].endswith("Z")
    assert {r["device"] for r in rows} == {"press-7"}

    response = client.get(
        f"{API}/devices/press-7/export",
        params={"format": "parquet", "metric": "speed", "start": BASE + MINUTE},
        headers=tenant_a.headers(),
    )
    assert response.status_code == 200, response.text
    assert 'filename="press-7-speed.parquet"' in response.headers["content-disposition"]
    table = pq.read_table(io.BytesIO(response.content))
    assert table.column_names == ["device", "metric", "time", "value", "quality"]
    times = [int(t.timestamp() * 1000) for t in table.column("time").to_pylist()]
    assert list(zip(times, table.column("value").to_pylist(), strict=True)) == press["speed"][1:]
    assert set(table.column("quality").to_pylist()) == {0}


def test_retention_is_per_tenant_and_needs_write_permission(
    client: TestClient, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    assert get(client, tenant_a, "/retention") == {
        "tenant_id": tenant_a.id,
        "days": 400,
        "default_days": 400,
        "own": False,
    }
    refused = client.put(f"{API}/retention", json={"days": 30}, headers=tenant_a.headers(Role.VIEWER))
    assert_problem(refused, 403, "forbidden")
    changed = client.put(f"{API}/retention", json={"days": 30}, headers=tenant_a.headers(Role.ENGINEER))
    assert changed.status_code == 200, changed.text
    assert changed.json()["days"] == 30
    assert get(client, tenant_a, "/retention")["days"] == 30
    assert get(client, tenant_b, "/retention")["days"] == 400
    # A platform operator sets another tenant's, by name.
    operator = client.put(
        f"{API}/retention",
        params={"tenant": tenant_b.name},
        json={"days": 9},
        headers=tenant_a.headers(Role.PLATFORM_OPERATOR),
    )
    assert operator.json() == {"tenant_id": tenant_b.id, "days": 9, "default_days": 400, "own": True}
    back = client.delete(f"{API}/retention", headers=tenant_a.headers(Role.ADMIN))
    assert back.json()["own"] is False
    assert get(client, tenant_a, "/retention")["days"] == 400
    audit = client.get("/api/audit", headers=tenant_a.headers(Role.AUDITOR)).json()
    assert any(e["object_type"] == "telemetry_retention" for e in audit["items"])


# --- tenants ------------------------------------------------------------------------------------


def test_another_tenants_device_is_missing(
    runtime: Runtime, client: TestClient, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    write(runtime, tenant_b.id, "b-only", {"secret-metric": [(BASE, 1.0)]})
    for path in ("/series", "/points", "/buckets", "/latest", "/export"):
        theirs = client.get(f"{API}/devices/b-only{path}", headers=tenant_a.headers(Role.ADMIN))
        nowhere = client.get(f"{API}/devices/no-such{path}", headers=tenant_a.headers(Role.ADMIN))
        assert_problem(theirs, 404, "not_found")
        assert_problem(nowhere, 404, "not_found")
        assert "secret-metric" not in theirs.text
    assert get(client, tenant_a, "/latest", device="b-only") == []
    # Naming the other tenant is refused for anyone but a platform operator.
    refused = client.get(f"{API}/devices/b-only/series", params={"tenant": tenant_b.id}, headers=tenant_a.headers())
    assert_problem(refused, 403, "tenant_not_yours")
    operator = get(client, tenant_a, "/devices/b-only/series", role=Role.PLATFORM_OPERATOR)
    assert operator == [{"device": "b-only", "metric": "secret-metric"}]


def test_a_device_key_in_two_tenants_needs_a_tenant_for_the_operator(
    runtime: Runtime, client: TestClient, tenant_a: TenantFixture, tenant_b: TenantFixture
) -> None:
    write(runtime, tenant_a.id, "shared-key", {"a-metric": [(BASE, 1.0)]})
    write(runtime, tenant_b.id, "shared-key", {"b-metric": [(BASE, 2.0)]})
    headers = tenant_a.headers(Role.PLATFORM_OPERATOR)
    assert_problem(client.get(f"{API}/devices/shared-key/series", headers=headers), 409, "ambiguous_device")
    for tenant in (tenant_b.id, tenant_b.name):
        answer = client.get(f"{API}/devices/shared-key/series", params={"tenant": tenant}, headers=headers)
        assert answer.json() == [{"device": "shared-key", "metric": "b-metric"}]
    assert_problem(
        client.get(f"{API}/devices/shared-key/series", params={"tenant": "no-such-tenant"}, headers=headers),
        404,
        "not_found",
    )
    assert get(client, tenant_a, "/devices/shared-key/series") == [{"device": "shared-key", "metric": "a-metric"}]


# --- bad parameters -----------------------------------------------------------------------------


BAD_PARAMETERS: list[tuple[str, dict[str, Any], int, str]] = [
    ("/devices/press-7/points", {"start": "yesterday"}, 422, "start: expected ISO 8601"),
    ("/devices/press-7/points", {"start": BASE + HOUR, "end": BASE}, 422, "end must be after start"),
    ("/devices/press-7/points", {"end": "99999999999999999"}, 422, "between 1970 and 9999"),
    ("/devices/press-7/points", {"limit": 0}, 422, "limit"),
    ("/devices/press-7/points", {"metric": "humidity"}, 404, "no metric 'humidity'"),
    ("/devices/press-7/buckets", {"bucket": "3 weeks"}, 422, "bucket: expected"),
    ("/devices/press-7/buckets", {"bucket": "0s"}, 422, "from 1 second"),
    ("/devices/press-7/buckets", {"fn": "avg,median"}, 422, "fn: unknown median"),
    ("/devices/press-7/buckets", {"bucket": "1s", "start": 0}, 422, "more than 100000 buckets"),
    ("/devices/press-7/export", {"format": "xlsx"}, 422, "format"),
    ("/devices/nobody/latest", {}, 404, "has no telemetry"),
]


def test_bad_parameters_are_problems(
    client: TestClient, tenant_a: TenantFixture, press: dict[str, list[tuple[int, float]]]
) -> None:
    for path, params, status, detail in BAD_PARAMETERS:
        response = client.get(API + path, params=params, headers=tenant_a.headers())
        body = assert_problem(response, status)
        assert detail in body["detail"], (path, params, body)


def test_reading_needs_an_identity(client: TestClient) -> None:
    assert_problem(client.get(f"{API}/latest"), 401, "unauthenticated")


# --- entries for tests/api/test_tenant_isolation.py's OBJECT_KINDS ------------------------------


def tenant_b_device(world: World) -> Created:
    """A device of tenant B with one point now; its metric's name is the marker."""
    from tests.api.test_tenant_isolation import Created, marker

    mark = marker()
    device = f"b-dev-{uuid.uuid4().hex[:8]}"
    write(world.runtime, world.tenant_b.id, device, {mark: [(time.time_ns() // 1_000_000 - MINUTE, 1.0)]})
    return Created({"device": device}, mark)


DEVICE_READ = f"{API}/devices/{{device}}/series"
# Keyword arguments of that module's ObjectKind, merged there as the identifiers' entries are.
TELEMETRY_KINDS: dict[str, dict[str, Any]] = {
    f"{API}/devices/{{device}}/{what}": {"create": tenant_b_device, "read": DEVICE_READ}
    for what in ("series", "points", "buckets", "latest", "export")
}
