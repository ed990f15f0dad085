"""The console's live alarm list with 10,000 active alarms (a flood): one page of rows, one page of groups
counted in the database, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from html import unescape

import pytest
from sqlalchemy import func, select

from iip.alarms import pages
from iip.alarms.models import Alarm
from iip.alarms.rules import ConditionChange
from iip.alarms.service import AlarmService
from iip.kernel.auth import Principal, Role
from tests.conftest import BACKENDS, TenantFixture
from tests.console.support import ConsoleApp, assert_html, console_app, sign_in_as, tenant_with_users

DEVICES = 1000
RULES = 10  # per device: 10,000 alarms


@pytest.fixture(scope="module", params=BACKENDS)
def flooded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ConsoleApp, TenantFixture]]:
    """A tenant with 10 profile rules over 1,000 devices, every one of its 10,000 alarms raised."""
    with console_app(str(request.param), tmp_path_factory.mktemp("alarm-flood")) as app:
        tenant = tenant_with_users(app.runtime, (Role.VIEWER,))
        actor = Principal("user", tenant.admin_user_id, f"{tenant.name}-admin", tenant.id, Role.ADMIN)
        rules = [
            {
                "key": f"limit-{k}",
                "kind": "threshold",
                "title": f"Limit {k}",
                "scope": {"profile": "pump"},
                "metric": "a",
                "high": 10.0 * (k + 1),
                "priority": "critical" if k == 9 else "high" if k >= 5 else "low",
            }
            for k in range(RULES)
        ]
        t0 = time.time_ns() // 1_000_000 - 3_600_000
        changes = [
            ConditionChange(tenant.id, f"limit-{k}", 1, f"p-{d:04d}", t0 + d * RULES + k, active=True, value=99.0)
            for d in range(DEVICES)
            for k in range(RULES)
        ]
        with app.runtime.db.session() as session:
            AlarmService(session, actor).import_rules(rules)
        with app.runtime.db.session() as session:
            assert len(AlarmService(session).apply(changes)) == DEVICES * RULES
        yield app, tenant


def group_rows(html: str) -> dict[str, list[int]]:
    """(alarms, active, unacknowledged) per group row."""
    return {
        name: [int(n) for n in re.findall(r'data-field="[a-z]+">(\d+)<', body)]
        for name, body in re.findall(r'<tr data-group="([^"]+)">(.*?)</tr>', html, re.DOTALL)
    }


def badge(html: str) -> int:
    match = re.search(r'id="alarm-count"[^>]*>(\d+)<', html)
    assert match, "no alarm count"
    return int(match.group(1))


def test_the_list_of_a_flood_is_one_page(flooded: tuple[ConsoleApp, TenantFixture]) -> None:
    app, tenant = flooded
    with app.runtime.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Alarm).where(Alarm.tenant_id == tenant.id)) == 10_000
    sign_in_as(app.client, tenant, Role.VIEWER, "en")
    html = assert_html(app.client.get("/alarms"), 200)
    assert len(re.findall(r'<tr data-alarm="[0-9a-f]{32}"', html)) == pages.ALARM_PAGE_SIZE
    assert badge(html) == 10_000
    assert f"Page 1 of {10_000 // pages.ALARM_PAGE_SIZE}" in html


def test_groups_of_a_flood_by_rule_priority_and_device(flooded: tuple[ConsoleApp, TenantFixture]) -> None:
    app, tenant = flooded
    sign_in_as(app.client, tenant, Role.VIEWER, "en")

    by_rule = assert_html(app.client.get("/alarms", params={"view": "groups"}), 200)
    assert group_rows(by_rule) == {f"limit-{k}": [1000, 1000, 1000] for k in range(RULES)}
    assert badge(by_rule) == 10_000
    # Each rule names its first devices, not its thousand.
    members = re.search(r'<tr data-group="limit-0">.*?<td class="mono muted">([^<]*)', by_rule, re.DOTALL)
    assert members is not None
    assert members.group(1).strip().startswith(", ".join(f"p-{d:04d}" for d in range(pages.GROUP_DEVICES)))

    by_priority = assert_html(app.client.get("/alarms", params={"view": "groups", "group": "priority"}), 200)
    assert group_rows(by_priority) == {"critical": [1000] * 3, "high": [4000] * 3, "low": [5000] * 3}

    by_device = assert_html(app.client.get("/alarms", params={"view": "groups", "group": "device"}), 200)
    rows = group_rows(by_device)
    assert len(rows) == pages.GROUP_PAGE_SIZE  # one page of the 1,000 devices, all of them counted
    assert list(rows)[:2] == ["p-0000", "p-0001"]  # equal counts: by device key
    assert all(counts == [RULES] * 3 for counts in rows.values())
    assert badge(by_device) == 10_000
    assert f"Page 1 of {DEVICES // pages.GROUP_PAGE_SIZE}" in by_device
    following = re.search(r'href="([^"]+)">Next<', by_device)
    assert following is not None
    second = group_rows(assert_html(app.client.get(unescape(following.group(1))), 200))
    assert next(iter(second)) == f"p-{pages.GROUP_PAGE_SIZE:04d}"
    assert set(second).isdisjoint(rows)


def test_the_groups_api_pages_rules_with_a_total(flooded: tuple[ConsoleApp, TenantFixture]) -> None:
    app, tenant = flooded
    client = app.client
    first = client.get("/api/alarms/groups", params={"limit": 4}, headers=tenant.headers(Role.VIEWER))
    assert first.status_code == 200, first.text
    assert first.headers["X-Total-Count"] == str(RULES)
    assert [g["alarms"] for g in first.json()] == [DEVICES] * 4
    rest = client.get("/api/alarms/groups", params={"offset": 4, "limit": 100}, headers=tenant.headers(Role.VIEWER))
    keys = [g["rule_key"] for g in first.json()] + [g["rule_key"] for g in rest.json()]
    assert sorted(keys) == sorted(f"limit-{k}" for k in range(RULES))
    too_many = client.get("/api/alarms/groups", params={"limit": 5000}, headers=tenant.headers(Role.VIEWER))
    assert too_many.status_code == 422
    assert too_many.headers["content-type"].startswith("application/problem+json")
