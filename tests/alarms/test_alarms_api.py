"""The alarms API on SQLite and PostgreSQL: rules, alarms, operator actions, problems, permissions,
tenants, metrics, publication of changes and a restart."""

from __future__ import annotations

import datetime as dt
import functools
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import select

from iip.alarms.public import ALARM_CHANGES, AlarmChange
from iip.alarms.rules import ConditionChange
from iip.alarms.service import AlarmService, time_ms
from iip.api.app import create_app
from iip.kernel.auth import ApiKey, Role
from iip.kernel.bus import Delivery
from iip.kernel.db import Database
from iip.kernel.runtime import Runtime
from iip.kernel.settings import Settings
from iip.migrations.runner import upgrade
from tests.api.support import assert_problem
from tests.conftest import BACKENDS, TenantFixture, database_url, make_tenant

T0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=2)
RULES = "/api/alarm-rules"
ALARMS = "/api/alarms"


@dataclass(frozen=True)
class Api:
    client: TestClient
    runtime: Runtime
    settings: Settings


@pytest.fixture(scope="module", params=BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One app over one migrated database per backend for the module; tests use tenants of their own."""
    folder = tmp_path_factory.mktemp("alarms-api")
    with database_url(str(request.param), folder) as url:
        settings = Settings(data_dir=folder / "var", database_url=url, log_format="text", log_level="WARNING")
        db = Database(settings.effective_database_url)
        upgrade(db)
        runtime = Runtime.build(settings)
        runtime.db.dispose()
        runtime.db = db
        with TestClient(create_app(runtime=runtime, configure_logs=False)) as client:
            yield Api(client, runtime, settings)
        db.dispose()


@pytest.fixture
def client(api: Api) -> TestClient:
    return api.client


@pytest.fixture
def tenant(api: Api) -> TenantFixture:
    return make_tenant(api.runtime.db, f"t-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def other(api: Api) -> TenantFixture:
    return make_tenant(api.runtime.db, f"o-{uuid.uuid4().hex[:12]}")


def problem(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    return assert_problem(response, status, code)


def rule_body(key: str = "boiler.pressure.high", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "key": key,
        "kind": "threshold",
        "title": "Boiler pressure high",
        "scope": {"profile": "boiler"},
        "metric": "pressure",
        "high": 1.6,
        "priority": "high",
    }
    body.update(overrides)
    return body


def raise_alarm(
    api: Api,
    tenant: TenantFixture,
    device: str = "boiler-1",
    *,
    rule: str = "boiler.pressure.high",
    minute: float = 0,
    active: bool = True,
) -> str:
    """What evaluation would report: the rule's condition on the device, at T0 + minute."""
    change = ConditionChange(
        tenant.id, rule, 1, device, time_ms(T0) + int(minute * 60_000), active=active, message=f"{device} high"
    )
    with api.runtime.db.session() as session:
        AlarmService(session).apply([change])
    answer = api.client.get(ALARMS, params={"device": device, "rule": rule}, headers=tenant.headers())
    assert answer.status_code == 200, answer.text
    found = answer.json()["items"]
    return str(found[0]["id"])


@pytest.fixture
def alarm(api: Api, client: TestClient, tenant: TenantFixture) -> str:
    assert client.post(RULES, json=rule_body(), headers=tenant.headers()).status_code == 201
    return raise_alarm(api, tenant)


# --- rules


def test_rule_crud_and_versions(client: TestClient, tenant: TenantFixture) -> None:
    headers = tenant.headers(Role.ENGINEER)
    created = client.post(RULES, json=rule_body(), headers=headers)
    assert created.status_code == 201, created.text
    rule = created.json()
    assert (rule["version"], rule["priority"], rule["enabled"], rule["spec"]["high"]) == (1, "high", True, 1.6)
    assert client.get(f"{RULES}/{rule['id']}", headers=headers).json() == rule
    assert client.get(f"{RULES}/{rule['key']}", headers=headers).json() == rule
    problem(client.post(RULES, json=rule_body(), headers=headers), 409, "rule_exists")

    same = client.put(f"{RULES}/{rule['key']}", json=rule_body(), headers=headers)
    assert same.json()["version"] == 1
    changed = client.put(f"{RULES}/{rule['key']}", json=rule_body(high=1.8), headers=headers)
    assert (changed.json()["version"], changed.json()["spec"]["high"]) == (2, 1.8)
    problem(
        client.put(f"{RULES}/{rule['key']}", json=rule_body(key="renamed"), headers=headers), 422, "rule_key_changed"
    )
    disabled = client.put(f"{RULES}/{rule['id']}/enabled", json={"enabled": False}, headers=headers)
    assert (disabled.json()["version"], disabled.json()["enabled"]) == (3, False)
    assert [r["key"] for r in client.get(RULES, params={"enabled": "false"}, headers=headers).json()] == [rule["key"]]
    assert client.get(RULES, params={"enabled": "true"}, headers=headers).json() == []

    versions = client.get(f"{RULES}/{rule['key']}/versions", headers=headers).json()
    assert [(v["version"], v["change"]) for v in versions] == [(1, "create"), (2, "update"), (3, "disable")]
    assert [v["spec"]["high"] for v in versions] == [1.6, 1.8, 1.8]
    assert [v["spec"].get("enabled", True) for v in versions] == [True, True, False]

    assert client.delete(f"{RULES}/{rule['key']}", headers=headers).status_code == 204
    problem(client.get(f"{RULES}/{rule['key']}", headers=headers), 404, "rule_not_found")
    again = client.post(RULES, json=rule_body(), headers=headers)
    assert again.json()["version"] == 4


def test_rule_bodies_are_checked(client: TestClient, tenant: TenantFixture) -> None:
    headers = tenant.headers()
    body = problem(client.post(RULES, json=rule_body(high=None), headers=headers), 422, "invalid")
    assert "high, low or both" in body["detail"]
    problem(client.post(RULES, json={**rule_body(), "kind": "nonsense"}, headers=headers), 422, "invalid")
    expression = {"key": "e", "kind": "expression", "title": "t", "scope": {"device": "d"}, "expression": "a >"}
    problem(client.post(RULES, json=expression, headers=headers), 422, "expression_invalid")


def test_import_and_export(client: TestClient, tenant: TenantFixture, other: TenantFixture) -> None:
    headers = tenant.headers(Role.ENGINEER)
    document = [rule_body("a.one"), rule_body("a.two", latched=True, priority="critical")]
    text = yaml.safe_dump({"rules": document})
    first = client.post(f"{RULES}/import", content=text, headers={**headers, "Content-Type": "application/yaml"})
    assert first.json() == {"created": ["a.one", "a.two"], "updated": [], "unchanged": []}
    again = client.post(f"{RULES}/import", json=document, headers=headers)
    assert again.json() == {"created": [], "updated": [], "unchanged": ["a.one", "a.two"]}

    broken = [rule_body("b.one"), rule_body("b.two", low=3, high=2)]
    body = problem(client.post(f"{RULES}/import", json=broken, headers=headers), 422, "invalid_rules")
    assert body["errors"] == ["[1]: low must be below high"]
    assert "b.one" not in {r["key"] for r in client.get(RULES, headers=headers).json()}
    problem(client.post(f"{RULES}/import", content=b"- key: [", headers=headers), 422, "invalid_document")
    problem(client.post(f"{RULES}/import", json={"key": "x"}, headers=headers), 422, "invalid_document")

    exported = client.get(f"{RULES}/export", headers=headers)
    assert [r["key"] for r in exported.json()] == ["a.one", "a.two"]
    as_yaml = client.get(f"{RULES}/export", params={"format": "yaml"}, headers=headers)
    assert as_yaml.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(as_yaml.text) == exported.json()
    moved = client.post(
        f"{RULES}/import", content=as_yaml.text, headers={**other.headers(), "Content-Type": "application/yaml"}
    )
    assert moved.json()["created"] == ["a.one", "a.two"]


# --- alarms and operator actions


def test_list_get_and_history(api: Api, client: TestClient, tenant: TenantFixture, alarm: str) -> None:
    raise_alarm(api, tenant, "boiler-2")
    raise_alarm(api, tenant, "boiler-2", minute=5, active=False)
    headers = tenant.headers(Role.VIEWER)
    page = client.get(ALARMS, headers=headers).json()
    assert page["total"] == 2
    assert [a["device"] for a in page["items"]] == ["boiler-2", "boiler-1"]
    standing = client.get(ALARMS, params=[("state", "unack_active"), ("state", "ack_active")], headers=headers).json()
    assert [a["id"] for a in standing["items"]] == [alarm]
    paged = client.get(ALARMS, params={"sort": "device", "offset": 1, "limit": 1}, headers=headers).json()
    assert (paged["total"], [a["device"] for a in paged["items"]]) == (2, ["boiler-2"])
    assert client.get(ALARMS, params={"q": "boiler-2 hi"}, headers=headers).json()["total"] == 1
    problem(client.get(ALARMS, params={"state": "bogus"}, headers=headers), 422, "invalid")
    problem(client.get(ALARMS, params={"limit": 0}, headers=headers), 422, "invalid")

    detail = client.get(f"{ALARMS}/{alarm}", headers=headers).json()
    assert (detail["state"], detail["active"], detail["announced"], detail["comments"]) == (
        "unack_active",
        True,
        True,
        [],
    )
    assert detail["first_activated_at"] == T0.isoformat().replace("+00:00", "Z")
    groups = client.get(f"{ALARMS}/groups", headers=headers).json()
    assert [(g["rule_key"], g["alarms"], g["active"], g["unacknowledged"]) for g in groups] == [
        ("boiler.pressure.high", 2, 1, 2)
    ]
    history = client.get(f"{ALARMS}/history", headers=headers).json()
    assert [(h["device"], h["action"]) for h in history["items"]] == [
        ("boiler-2", "clear"),
        ("boiler-2", "activate"),
        ("boiler-1", "activate"),
    ]
    ranged = client.get(
        f"{ALARMS}/history",
        params={"start": (T0 + dt.timedelta(minutes=1)).isoformat(), "end": (T0 + dt.timedelta(hours=1)).isoformat()},
        headers=headers,
    ).json()
    assert [h["action"] for h in ranged["items"]] == ["clear"]
    problem(client.get(f"{ALARMS}/history", params={"start": "2026-01-01T00:00:00"}, headers=headers), 422)
    problem(client.get(f"{ALARMS}/{uuid.uuid4().hex}", headers=headers), 404, "alarm_not_found")
    problem(client.get(f"{ALARMS}/{uuid.uuid4().hex}/history", headers=headers), 404, "alarm_not_found")


def test_operator_actions_and_their_problems(api: Api, client: TestClient, tenant: TenantFixture, alarm: str) -> None:
    operator = tenant.headers(Role.OPERATOR)
    acked = client.post(f"{ALARMS}/{alarm}/acknowledge", json={"comment": "seen"}, headers=operator)
    assert acked.status_code == 200, acked.text
    assert (acked.json()["state"], acked.json()["acknowledged_by"]) == ("ack_active", "apikey:operator")
    problem(client.post(f"{ALARMS}/{alarm}/acknowledge", headers=operator), 409, "already_acknowledged")
    problem(client.post(f"{ALARMS}/{alarm}/reset", headers=operator), 409, "not_latched")

    shelved = client.post(f"{ALARMS}/{alarm}/shelve", json={"minutes": 30, "reason": "recalibration"}, headers=operator)
    assert (shelved.json()["shelved"], shelved.json()["announced"]) == (True, False)
    problem(
        client.post(f"{ALARMS}/{alarm}/shelve", json={"minutes": 10, "reason": "x"}, headers=operator),
        409,
        "already_shelved",
    )
    assert client.post(f"{ALARMS}/{alarm}/unshelve", headers=operator).json()["shelved"] is False
    too_long = {"minutes": 25 * 60, "reason": "weekend"}
    problem(client.post(f"{ALARMS}/{alarm}/shelve", json=too_long, headers=operator), 422, "shelve_too_long")
    problem(client.post(f"{ALARMS}/{alarm}/shelve", json={"minutes": 10}, headers=operator), 422, "invalid")

    commented = client.post(f"{ALARMS}/{alarm}/comments", json={"text": "valve V-12"}, headers=operator)
    assert [c["text"] for c in commented.json()["comments"]] == ["seen", "recalibration", "valve V-12"]
    problem(client.post(f"{ALARMS}/{alarm}/comments", json={"text": ""}, headers=operator), 422, "invalid")

    problem(client.post(f"{ALARMS}/{alarm}/out-of-service", headers=operator), 403, "forbidden")
    engineer = tenant.headers(Role.ENGINEER)
    away = client.post(f"{ALARMS}/{alarm}/out-of-service", json={"comment": "maintenance"}, headers=engineer)
    assert away.json()["out_of_service"] is True
    problem(
        client.post(f"{ALARMS}/{alarm}/shelve", json={"minutes": 5, "reason": "x"}, headers=operator),
        409,
        "out_of_service",
    )
    assert client.post(f"{ALARMS}/{alarm}/return-to-service", headers=engineer).json()["out_of_service"] is False

    history = client.get(f"{ALARMS}/{alarm}/history", headers=operator).json()
    assert [(h["sequence"], h["action"]) for h in history["items"]] == [
        (1, "activate"),
        (2, "acknowledge"),
        (3, "shelve"),
        (4, "unshelve"),
        (5, "comment"),
        (6, "out_of_service"),
        (7, "return_to_service"),
    ]
    # Who acted, by label and by id: the id tells apart keys that share a name.
    keys = key_ids(api.runtime, tenant)
    by, ids = [h["actor"] for h in history["items"]], [h["actor_id"] for h in history["items"]]
    assert by == ["", *["apikey:operator"] * 4, "apikey:engineer", "apikey:engineer"]
    assert ids == ["", *[keys["operator"]] * 4, keys["engineer"], keys["engineer"]]
    comments = client.get(f"{ALARMS}/{alarm}", headers=operator).json()["comments"]
    assert {(c["author"], c["author_id"]) for c in comments} == {
        ("apikey:operator", keys["operator"]),
        ("apikey:engineer", keys["engineer"]),
    }
    problem(client.post(f"{ALARMS}/{uuid.uuid4().hex}/acknowledge", headers=operator), 404, "alarm_not_found")


def key_ids(runtime: Runtime, tenant: TenantFixture) -> dict[str, str]:
    with runtime.db.session() as session:
        rows = session.execute(select(ApiKey.name, ApiKey.id).where(ApiKey.tenant_id == tenant.id)).all()
    return {str(name): str(key_id) for name, key_id in rows}


def test_latched_alarm_reset_over_http(api: Api, client: TestClient, tenant: TenantFixture) -> None:
    client.post(RULES, json=rule_body("trip", latched=True), headers=tenant.headers())
    alarm = raise_alarm(api, tenant, rule="trip")
    operator = tenant.headers(Role.OPERATOR)
    client.post(f"{ALARMS}/{alarm}/acknowledge", headers=operator)
    raise_alarm(api, tenant, rule="trip", minute=1, active=False)
    assert client.get(f"{ALARMS}/{alarm}", headers=operator).json()["state"] == "latched"
    assert (
        client.post(f"{ALARMS}/{alarm}/reset", json={"comment": "trip cause found"}, headers=operator).json()["state"]
        == "normal"
    )


def test_bulk_acknowledge(api: Api, client: TestClient, tenant: TenantFixture, alarm: str) -> None:
    second = raise_alarm(api, tenant, "boiler-2")
    operator = tenant.headers(Role.OPERATOR)
    client.post(f"{ALARMS}/{second}/acknowledge", headers=operator)
    problem(
        client.post(f"{ALARMS}/acknowledge", json={"ids": [alarm, "0" * 32]}, headers=operator), 404, "alarm_not_found"
    )
    assert client.get(f"{ALARMS}/{alarm}", headers=operator).json()["state"] == "unack_active"
    answer = client.post(
        f"{ALARMS}/acknowledge", json={"ids": [alarm, second], "comment": "shift start"}, headers=operator
    )
    assert answer.json() == {"acknowledged": [alarm], "skipped": [second]}
    problem(client.post(f"{ALARMS}/acknowledge", json={"ids": []}, headers=operator), 422, "invalid")


# --- who may do what


def test_permissions(client: TestClient, tenant: TenantFixture, alarm: str) -> None:
    viewer, operator = tenant.headers(Role.VIEWER), tenant.headers(Role.OPERATOR)
    problem(client.post(f"{ALARMS}/{alarm}/acknowledge", headers=viewer), 403, "forbidden")
    problem(client.post(f"{ALARMS}/acknowledge", json={"ids": [alarm]}, headers=viewer), 403, "forbidden")
    problem(client.post(f"{ALARMS}/{alarm}/shelve", json={"minutes": 5, "reason": "x"}, headers=viewer), 403)
    problem(client.post(f"{ALARMS}/{alarm}/comments", json={"text": "x"}, headers=viewer), 403)
    problem(client.post(RULES, json=rule_body("op.rule"), headers=operator), 403, "forbidden")
    problem(client.put(f"{RULES}/boiler.pressure.high", json=rule_body(high=9), headers=operator), 403)
    problem(client.delete(f"{RULES}/boiler.pressure.high", headers=operator), 403)
    problem(client.post(f"{RULES}/import", json=[rule_body("op.rule")], headers=operator), 403)
    problem(client.get(ALARMS), 401, "unauthenticated")
    assert client.get(ALARMS, headers=viewer).status_code == 200
    assert client.get(RULES, headers=viewer).status_code == 200
    assert client.get(f"{ALARMS}/{alarm}", headers=viewer).json()["state"] == "unack_active"


def test_tenants_are_isolated(
    api: Api, client: TestClient, tenant: TenantFixture, other: TenantFixture, alarm: str
) -> None:
    rule_id = client.get(f"{RULES}/boiler.pressure.high", headers=tenant.headers()).json()["id"]
    admin = other.headers()
    problem(client.get(f"{ALARMS}/{alarm}", headers=admin), 404, "alarm_not_found")
    problem(client.post(f"{ALARMS}/{alarm}/acknowledge", headers=admin), 404, "alarm_not_found")
    problem(client.get(f"{RULES}/{rule_id}", headers=admin), 404, "rule_not_found")
    problem(client.get(f"{RULES}/boiler.pressure.high", headers=admin), 404, "rule_not_found")
    assert client.get(ALARMS, headers=admin).json() == {"items": [], "total": 0, "offset": 0, "limit": 100}
    assert client.get(f"{ALARMS}/history", headers=admin).json()["total"] == 0
    assert client.get(RULES, headers=admin).json() == []
    assert client.get(f"{RULES}/export", headers=admin).json() == []
    # The same key in the other tenant is another rule.
    assert client.post(RULES, json=rule_body(), headers=admin).json()["id"] != rule_id
    assert client.get(f"{ALARMS}/{alarm}", headers=tenant.headers()).json()["state"] == "unack_active"


# --- metrics


def test_metrics_endpoint(api: Api, client: TestClient, tenant: TenantFixture, alarm: str) -> None:
    for quarter in range(4):  # raised four times within a minute: chattering
        raise_alarm(api, tenant, "boiler-2", minute=1 + quarter / 4, active=True)
        raise_alarm(api, tenant, "boiler-2", minute=1.1 + quarter / 4, active=False)
    params = {"start": T0.isoformat(), "end": (T0 + dt.timedelta(hours=1)).isoformat()}
    report = client.get(f"{ALARMS}/metrics", params=params, headers=tenant.headers(Role.VIEWER))
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["annunciated"] == 5
    assert [(a["device"], a["count"]) for a in body["most_frequent"]] == [("boiler-2", 4), ("boiler-1", 1)]
    assert [a["device"] for a in body["chattering"]] == ["boiler-2"]
    assert {t["measure"] for t in body["targets"]} >= {"alarms_per_hour", "chattering_alarms"}
    problem(
        client.get(
            f"{ALARMS}/metrics", params={"start": params["end"], "end": params["start"]}, headers=tenant.headers()
        ),
        422,
    )
    problem(client.get(f"{ALARMS}/metrics", headers=tenant.headers()), 422, "invalid")
    empty = client.get(f"{ALARMS}/metrics", params=params, headers=make_other_headers(api))
    assert empty.json()["annunciated"] == 0


def make_other_headers(api: Api) -> dict[str, str]:
    return make_tenant(api.runtime.db, f"m-{uuid.uuid4().hex[:12]}").headers(Role.VIEWER)


# --- publication and restart


def test_changes_are_published_after_commit(api: Api, client: TestClient, tenant: TenantFixture, alarm: str) -> None:
    heard: list[AlarmChange] = []
    arrived = threading.Event()

    async def collect(delivery: Delivery[AlarmChange]) -> None:
        if delivery.payload.tenant_id == tenant.id:
            heard.append(delivery.payload)
            arrived.set()

    assert client.portal is not None
    subscription = client.portal.call(
        functools.partial(api.runtime.bus.subscribe, ALARM_CHANGES, collect, durable=f"test-{tenant.name}")
    )
    try:
        problem(client.post(f"{ALARMS}/{alarm}/reset", headers=tenant.headers(Role.OPERATOR)), 409)  # refused: nothing
        client.post(f"{ALARMS}/{alarm}/acknowledge", json={"comment": "ok"}, headers=tenant.headers(Role.OPERATOR))
        assert arrived.wait(10), "no alarm change was published"
    finally:
        client.portal.call(subscription.stop)
    [change] = heard
    assert (change.alarm_id, change.action, change.state, change.sequence, change.actor) == (
        alarm,
        "acknowledge",
        "ack_active",
        2,
        "apikey:operator",
    )


def test_a_new_process_keeps_alarm_states(api: Api, client: TestClient, tenant: TenantFixture, alarm: str) -> None:
    shelved = raise_alarm(api, tenant, "boiler-2")
    operator = tenant.headers(Role.OPERATOR)
    client.post(f"{ALARMS}/{alarm}/acknowledge", json={"comment": "seen"}, headers=operator)
    client.post(f"{ALARMS}/{shelved}/shelve", json={"minutes": 600, "reason": "known"}, headers=operator)
    before = client.get(ALARMS, headers=operator).json()
    runtime = Runtime.build(api.settings)  # another process: its own engine, bus and connections
    try:
        with TestClient(create_app(runtime=runtime, configure_logs=False)) as restarted:
            after = restarted.get(ALARMS, headers=operator).json()
            assert after == before
            states = {a["id"]: (a["state"], a["shelved"], a["acknowledged_by"]) for a in after["items"]}
            assert states == {alarm: ("ack_active", False, "apikey:operator"), shelved: ("unack_active", True, "")}
            detail = restarted.get(f"{ALARMS}/{alarm}", headers=operator).json()
            assert [c["text"] for c in detail["comments"]] == ["seen"]
    finally:
        runtime.db.dispose()
