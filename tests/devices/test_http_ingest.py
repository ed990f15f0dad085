"""`POST /api/telemetry` on SQLite and PostgreSQL: tokens, JSON lines, columnar JSON, refusals, dead letters."""

from __future__ import annotations

import datetime as dt
import functools
import json
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from iip.devices.registry_directory import registry_services
from iip.kernel.auth import Role
from iip.kernel.bus import Delivery
from iip.telemetry.public import TELEMETRY_POINTS, PointBatch, latest_points
from tests.conftest import TenantFixture, make_tenant
from tests.devices import test_devices_api as api_tests
from tests.devices.test_devices_api import Api, load, ok, problem
from tests.devices.test_registry import METER

# The API tests' app: one migrated database per backend for the module.
api = api_tests.api

NDJSON = "application/x-ndjson"
GW1, GW2 = "gw-1", "gw-2"


@dataclass(frozen=True)
class Plant:
    tenant: TenantFixture
    device_token: str  # of m-1
    gateway_token: str  # of gw-1


@pytest.fixture
def plant(api: Api) -> Plant:
    """m-1 and m-3 behind gateways gw-1 and gw-2, m-2 on its own, m-4 disabled; all of the `meter` profile."""
    tenant = make_tenant(api.runtime.db, f"t-{uuid.uuid4().hex[:12]}")
    document = {
        "profiles": [METER],
        "gateways": [{"key": GW1}, {"key": GW2}],
        "devices": [
            {"key": "m-1", "profile": "meter", "gateway": GW1},
            {"key": "m-2", "profile": "meter"},
            {"key": "m-3", "profile": "meter", "gateway": GW2},
            {"key": "m-4", "profile": "meter", "gateway": GW1, "enabled": False},
        ],
    }
    load(api.client, tenant, document)
    device_token = ok(api.client.post("/api/devices/m-1/token", headers=tenant.headers()))["token"]
    gateway_token = ok(api.client.post(f"/api/gateways/{GW1}/token", headers=tenant.headers()))["token"]
    return Plant(tenant, device_token, gateway_token)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def send(client: TestClient, token: str, body: Any, content_type: str = NDJSON) -> Any:
    if isinstance(body, list) and content_type == NDJSON:
        content = "\n".join(json.dumps(line) for line in body).encode()
    elif isinstance(body, bytes):
        content = body
    else:
        content = json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
    return client.post("/api/telemetry", content=content, headers=headers)


def dead_letters(api: Api, tenant: TenantFixture) -> list[dict[str, Any]]:
    assert registry_services(api.runtime).dead_letters.flush()
    letters: list[dict[str, Any]] = ok(api.client.get("/api/dead-letters", headers=tenant.headers()))
    return letters


@pytest.fixture
def published(api: Api) -> Iterator[list[PointBatch]]:
    """Batches published on `telemetry.points` from now on (a durable of this test, in the app's loop)."""
    received: list[PointBatch] = []
    arrived = threading.Condition()

    async def handler(delivery: Delivery[PointBatch]) -> None:
        with arrived:
            received.append(delivery.payload)
            arrived.notify_all()

    portal = api.client.portal
    assert portal is not None
    subscribe = functools.partial(api.runtime.bus.subscribe, TELEMETRY_POINTS, handler, durable=uuid.uuid4().hex)
    subscription = portal.call(subscribe)
    yield received
    portal.call(subscription.stop)


def wait_for(batches: list[PointBatch], tenant_id: str) -> PointBatch | None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [b for b in batches if b.tenant_id == tenant_id]
        if found:
            return found[0]
        time.sleep(0.02)
    return None


def test_a_device_sends_json_lines_with_its_token(api: Api, plant: Plant, published: list[PointBatch]) -> None:
    t1 = now_ms() - 2000
    t2 = dt.datetime.fromtimestamp((t1 + 1000) / 1000, dt.UTC).isoformat()
    lines = [
        {"ts": t1, "values": {"e": 12.5, "power": 3}},
        {"device": "m-1", "ts": t2, "values": {"power": True, "state": "running"}},
        {"ts": t1 - 1000, "values": {"energy": 11.0}},  # the metric's own name, as the edge agent sends it
    ]
    answer = ok(send(api.client, plant.device_token, lines))
    assert answer == {"accepted": 4, "rejected": 0, "errors": []}
    stored = latest_points(api.runtime, plant.tenant.id, "m-1")
    assert stored["energy"][:2] == (t1, 12.5)
    assert stored["power"][:2] == (t1 + 1000, 1.0)
    batch = wait_for(published, plant.tenant.id)
    assert batch is not None
    assert batch.source == "http"
    assert sorted((p.metric, p.ts_ms, p.value) for p in batch.points()) == [
        ("energy", t1 - 1000, 11.0),
        ("energy", t1, 12.5),
        ("power", t1, 3.0),
        ("power", t1 + 1000, 1.0),
    ]
    assert batch.attributes == {"m-1": {"state": "running"}}
    # Sent again (a retry): the store keeps one point per series and timestamp.
    ok(send(api.client, plant.device_token, lines))
    assert latest_points(api.runtime, plant.tenant.id, "m-1")["energy"][:2] == (t1, 12.5)


def test_columnar_json_with_an_api_key(api: Api, plant: Plant) -> None:
    t = now_ms() - 10_000
    body = [
        {"device": "m-2", "ts": [t, t + 1000, t + 2000], "values": {"e": [1.0, 2.0, None], "power": [4, 5, 6]}},
        {"device": "m-1", "ts": [t], "values": {"e": [1.0, 2.0]}},
    ]
    answer = ok(send(api.client, plant.tenant.keys[Role.ENGINEER], body, "application/json"))
    assert (answer["accepted"], answer["rejected"]) == (5, 1)
    assert answer["errors"] == [{"line": 2, "reason": "values.energy: must be a list of 1 values, one per ts"}]
    stored = latest_points(api.runtime, plant.tenant.id, "m-2")
    assert (stored["energy"][:2], stored["power"][:2]) == ((t + 1000, 2.0), (t + 2000, 6.0))
    assert "energy" not in latest_points(api.runtime, plant.tenant.id, "m-1")  # the refused object wrote nothing
    letters = dead_letters(api, plant.tenant)
    assert [(x["device"], x["source"], x["reason"]) for x in letters] == [
        ("m-1", "http", "values.energy: must be a list of 1 values, one per ts")
    ]
    assert json.loads(letters[0]["raw"])["device"] == "m-1"
    assert ok(api.client.get("/api/devices/m-1", headers=plant.tenant.headers()))["rejected_count"] == 1
    single = {"device": "m-2", "ts": [t + 5000], "values": {"power": [7]}}  # one object, not a list
    assert ok(send(api.client, plant.tenant.keys[Role.ADMIN], single, "application/json"))["accepted"] == 1


def test_a_gateway_sends_for_its_own_devices_only(api: Api, plant: Plant) -> None:
    t = now_ms() - 1000
    lines = [
        {"device": "m-1", "ts": t, "values": {"e": 1}},
        {"device": "m-3", "ts": t, "values": {"e": 1}},
        {"device": "m-2", "ts": t, "values": {"e": 1}},
        {"ts": t, "values": {"e": 1}},
        {"device": "m-4", "ts": t, "values": {"e": 1}},
    ]
    answer = ok(send(api.client, plant.gateway_token, lines))
    assert (answer["accepted"], answer["rejected"]) == (1, 4)
    assert answer["errors"] == [
        {"line": 2, "reason": "device 'm-3' is not reached through gateway 'gw-1'"},
        {"line": 3, "reason": "device 'm-2' is not reached through gateway 'gw-1'"},
        {"line": 4, "reason": "device: missing (required unless a device token is used)"},
        {"line": 5, "reason": "device 'm-4' is disabled"},
    ]
    assert "energy" in latest_points(api.runtime, plant.tenant.id, "m-1")
    assert "energy" not in latest_points(api.runtime, plant.tenant.id, "m-3")
    refused = problem(send(api.client, plant.gateway_token, lines[1:2]), 422, "nothing_usable")
    assert refused["errors"] == [{"line": 1, "reason": "device 'm-3' is not reached through gateway 'gw-1'"}]
    assert len(dead_letters(api, plant.tenant)) == 5


def test_tokens_that_do_not_open(api: Api, plant: Plant) -> None:
    client, tenant = api.client, plant.tenant
    line = [{"device": "m-1", "values": {"e": 1}}]
    ok(send(client, plant.device_token, line))
    ok(client.delete("/api/devices/m-1/token", headers=tenant.headers()))
    assert (
        problem(send(client, plant.device_token, line), 401, "bad_token")["detail"] == "unknown or revoked device token"
    )
    ok(client.post(f"/api/gateways/{GW1}/token", headers=tenant.headers()))  # rotated: the old one stops
    problem(send(client, plant.gateway_token, line), 401, "bad_token")
    problem(send(client, "iipd_0123456789ab_made-up", line), 401, "bad_token")
    problem(client.post("/api/telemetry", content=b"{}", headers={"Content-Type": NDJSON}), 401)
    problem(send(client, tenant.keys[Role.VIEWER], line), 403)
    other = make_tenant(api.runtime.db, f"t-{uuid.uuid4().hex[:12]}")
    refused = problem(send(client, other.keys[Role.ENGINEER], line), 422, "nothing_usable")
    assert refused["errors"] == [{"line": 1, "reason": "device 'm-1' is not registered"}]


def test_bad_bodies(api: Api, plant: Plant, monkeypatch: pytest.MonkeyPatch) -> None:
    client, token = api.client, plant.device_token
    problem(send(client, token, b"\xff\xfe{}", "application/json"), 400, "bad_request")
    problem(send(client, token, b'{"values": ', "application/json"), 400, "bad_request")
    problem(send(client, token, b"", NDJSON), 400, "bad_request")
    all_broken = problem(send(client, token, b"not json\n\xff\n", NDJSON), 400, "bad_request")
    assert [e["line"] for e in all_broken["errors"]] == [1, 2]
    problem(send(client, token, b"{}", "text/plain"), 415, "unsupported_media_type")
    future = now_ms() + 3_600_000
    late = problem(send(client, token, [{"ts": future, "values": {"e": 1}}]), 422, "nothing_usable")
    assert late["errors"][0]["reason"] == f"ts {future} is more than 300 s in the future"
    mixed = ok(
        send(
            client,
            token,
            [
                {"values": {"e": 1}},
                {"values": {"nope": 1}},
                {"values": {"e": "high"}},
                {"values": {"e": 1}, "ts": "2026-01-01T00:00:00"},
                {"values": {"e": 1}, "ts": True},
                {"values": {"e": 1}, "ts": 10**400},
                {"values": {"e": 1}, "ts": "0001-01-01T00:00:00Z"},
                {"values": {"e": 10**400}},
                {"values": {}},
                {"device": "m-2", "values": {"e": 1}},
                [1, 2],
            ],
        )
    )
    assert mixed["accepted"] == 1
    assert [e["reason"] for e in mixed["errors"]] == [
        "unknown metric 'nope' for device 'm-1'",
        "energy: expected a number, got str",
        "ts '2026-01-01T00:00:00' has no time zone (add Z or +08:00)",
        "ts must be milliseconds since 1970 or an ISO 8601 time",
        f"ts {str(10**400)[:40]} is out of range (milliseconds since 1970)",
        "ts '0001-01-01T00:00:00Z' is before 1970",
        f"energy: {str(10**400)[:40]} is out of range",
        "values: must be a non-empty object of metric values",
        "the token is for device 'm-1', not 'm-2'",
        "must be a JSON object",
    ]
    monkeypatch.setattr(sys.modules["iip.devices.ingest_router"], "MAX_INGEST_BYTES", 100)
    problem(send(client, token, [{"values": {"e": n}} for n in range(20)]), 413, "payload_too_large")
    letters = dead_letters(api, plant.tenant)
    reasons = [x["reason"] for x in letters]
    assert "the body is not UTF-8 JSON" in reasons
    assert "unknown metric 'nope' for device 'm-1'" in reasons
    assert all(x["device"] in {"m-1", None} for x in letters)
