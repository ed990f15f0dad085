"""The alarms console pages on SQLite and PostgreSQL: the live list (filters, sorts, groups, paging,
actions in place), one alarm, the journal, rules with their editor and preview, the report; both
languages, permissions, CSRF and tenants."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import uuid
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import select

from iip.alarms import pages
from iip.alarms.models import Alarm, AlarmHistory, Rule
from iip.alarms.public import ALARM_CHANGES, AlarmChange
from iip.alarms.rules import ConditionChange
from iip.alarms.service import AlarmService
from iip.console.i18n import extract_msgids, load_catalogues, module_locale_dir
from iip.kernel.auth import Principal, Role
from iip.kernel.bus import Delivery
from iip.kernel.runtime import Runtime
from tests.conftest import BACKENDS, TenantFixture
from tests.console.support import (
    ConsoleApp,
    assert_html,
    audit_entries,
    console_app,
    heading_text,
    section,
    tenant_with_users,
    text_of,
)
from tests.console.support import sign_in_as as sign_in_as_in

PLACEHOLDER_RE = re.compile(r"%\((\w+)\)s")
SCRIPT_TAG_RE = re.compile(r"<script\b([^>]*)>", re.IGNORECASE)
ALARMS_PACKAGE = Path(pages.__file__).parent
ROLES = (Role.VIEWER, Role.OPERATOR, Role.ENGINEER)

RULES: list[dict[str, Any]] = [
    {
        "key": "pressure.high",
        "kind": "threshold",
        "title": "Boiler pressure high",
        "scope": {"profile": "boiler"},
        "metric": "pressure",
        "high": 1.6,
        "priority": "high",
        "rationalisation": {
            "cause": "Feed water control failed",
            "consequence": "The safety valve lifts",
            "corrective_action": "Reduce the firing rate",
            "response_time_s": 300,
        },
    },
    {
        "key": "level.low",
        "kind": "threshold",
        "title": "Tank level low",
        "scope": {"profile": "tank"},
        "metric": "level",
        "low": 10,
        "priority": "low",
        "latched": True,
    },
    {
        "key": "gas.high",
        "kind": "threshold",
        "title": "Combustible gas",
        "scope": {"device": "gd-1"},
        "metric": "lel",
        "high": 20,
        "priority": "critical",
    },
]
SITES = {"b-1": "north", "b-2": "south", "b-3": "north", "t-1": "north", "gd-1": "south"}


@pytest.fixture(scope="module", params=BACKENDS)
def console(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleApp]:
    """One app over one migrated database per backend for the module; tests use tenants of their own."""
    with console_app(str(request.param), tmp_path_factory.mktemp("alarms-pages")) as app:
        yield app


@pytest.fixture
def client(console: ConsoleApp) -> TestClient:
    return console.client


@pytest.fixture
def tenant(console: ConsoleApp) -> TenantFixture:
    return new_tenant(console.runtime)


def new_tenant(runtime: Runtime) -> TenantFixture:
    return tenant_with_users(runtime, ROLES)


def sign_in_as(client: TestClient, tenant: TenantFixture, role: Role = Role.ADMIN, language: str = "en") -> str:
    return sign_in_as_in(client, tenant, role, language)


def admin(tenant: TenantFixture) -> Principal:
    return Principal("user", tenant.admin_user_id, f"{tenant.name}-admin", tenant.id, Role.ADMIN)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def apply(runtime: Runtime, tenant: TenantFixture, *changes: tuple[str, str, int, bool]) -> list[str]:
    """Condition changes (rule, device, ms, active) as evaluation reports them; the ids of the alarms."""
    items = [
        ConditionChange(tenant.id, rule, 1, device, at, active=active, value=2.5 if active else 1.0)
        for rule, device, at, active in changes
    ]
    with runtime.db.session() as session:
        applied = AlarmService(session).apply(items, sites=lambda _tenant, device: SITES.get(device, ""))
        return [change.alarm_id for change in applied]


def plant(runtime: Runtime, tenant: TenantFixture) -> dict[str, str]:
    """The tenant's rules and five alarms: gd-1 critical and b-1 high, active and unacknowledged; b-2
    high, acknowledged; t-1 low, latched rule, cleared unacknowledged; b-3 back to normal."""
    with runtime.db.session() as session:
        AlarmService(session, admin(tenant)).import_rules(RULES)
    t0 = now_ms() - 600_000
    apply(
        runtime,
        tenant,
        ("pressure.high", "b-3", t0, True),
        ("level.low", "t-1", t0 + 1000, True),
        ("pressure.high", "b-2", t0 + 2000, True),
        ("pressure.high", "b-1", t0 + 3000, True),
        ("gas.high", "gd-1", t0 + 4000, True),
        ("level.low", "t-1", t0 + 5000, False),
        ("pressure.high", "b-3", t0 + 6000, False),
    )
    with runtime.db.session() as session:
        ids = {row.device: row.id for row in session.scalars(select(Alarm).where(Alarm.tenant_id == tenant.id))}
        service = AlarmService(session, admin(tenant))
        service.acknowledge(ids["b-2"])
        service.acknowledge(ids["b-3"])
    return ids


def listed(html: str) -> list[str]:
    """The devices of the alarm rows, in order."""
    rows = re.findall(r'<tr data-alarm="[0-9a-f]+".*?</tr>', html, re.DOTALL)
    return [re.findall(r'<td class="mono">([^<]+)', row)[0] for row in rows]


def row_of(html: str, alarm_id: str) -> str:
    match = re.search(rf'<tr data-alarm="{alarm_id}".*?</tr>', html, re.DOTALL)
    assert match, f"no row for {alarm_id}"
    return match.group(0)


def alarm_of(runtime: Runtime, alarm_id: str) -> Alarm:
    with runtime.db.session() as session:
        row = session.get(Alarm, alarm_id)
        assert row is not None
        session.expunge(row)
        return row


def history_of(runtime: Runtime, alarm_id: str) -> list[tuple[str, str, str]]:
    """(action, actor, comment) of an alarm's history, in order."""
    with runtime.db.session() as session:
        query = select(AlarmHistory).where(AlarmHistory.alarm_id == alarm_id).order_by(AlarmHistory.sequence)
        return [(h.action, h.actor, h.comment) for h in session.scalars(query)]


# --- every page, both languages ---------------------------------------------------------------

HEADINGS = {
    "zh_CN": {
        "/alarms": "当前报警",
        "/alarms?view=groups": "当前报警",
        "/alarms/history": "报警历史",
        "/alarms/rules": "报警规则",
        "/alarms/rules/pressure.high": "报警规则 pressure.high",
        "/alarms/report": "报警报表",
    },
    "en": {
        "/alarms": "Current alarms",
        "/alarms?view=groups": "Current alarms",
        "/alarms/history": "Alarm history",
        "/alarms/rules": "Alarm rules",
        "/alarms/rules/pressure.high": "Alarm rule pressure.high",
        "/alarms/report": "Alarm report",
    },
}


@pytest.mark.parametrize("language", ["zh_CN", "en"])
def test_pages_render_for_every_role_in_both_languages(
    console: ConsoleApp, tenant: TenantFixture, language: str
) -> None:
    client = console.client
    ids = plant(console.runtime, tenant)
    for role in (Role.ADMIN, Role.VIEWER):
        sign_in_as(client, tenant, role, language)
        for path, title in HEADINGS[language].items():
            page = assert_html(client.get(path), 200)
            assert heading_text(page) == title, (role, path)
            assert f'<html lang="{"zh-CN" if language == "zh_CN" else "en"}">' in page
            for nav in ("/alarms", "/alarms/history", "/alarms/rules", "/alarms/report"):
                assert re.search(rf'<a class="nav-item[^"]*" href="{nav}"', page), nav
        detail = assert_html(client.get(f"/alarms/{ids['b-1']}"), 200)
        assert heading_text(detail) == ("报警 pressure.high" if language == "zh_CN" else "Alarm pressure.high")
        assert ('id="acknowledge-form"' in detail) is (role is Role.ADMIN)
        assert ('id="rule-form"' in client.get("/alarms/rules/pressure.high").text) is (role is Role.ADMIN)
        new = client.get("/alarms/rules/new")
        assert_html(new, 200 if role is Role.ADMIN else 403)
    sign_in_as(client, tenant, Role.VIEWER, language)
    listing = client.get("/alarms").text
    words = (
        ("活动，未确认", "已恢复，未确认", "紧急") if language == "zh_CN" else ("Active, unacknowledged", "Critical")
    )
    assert all(word in text_of(section(listing, "alarms-table")) for word in words)


def test_the_list_is_live_and_scripted_from_files(client: TestClient, tenant: TenantFixture) -> None:
    sign_in_as(client, tenant, Role.VIEWER)
    page = assert_html(client.get("/alarms"), 200)
    assert 'data-feed-url="/api/alarms/feed"' in page
    labels = json.loads(unescape(re.search(r'data-labels="([^"]+)"', page).group(1)))  # type: ignore[union-attr]
    assert labels["live"] == "Live"
    # The CSP allows no inline script: every script is a file, ours from the context's static folder.
    scripts = SCRIPT_TAG_RE.findall(page)
    assert scripts
    assert all("src=" in attributes for attributes in scripts)
    assert 'src="/static/alarms/alarms.js?v=' in page
    script = client.get("/static/alarms/alarms.js")
    assert script.status_code == 200
    assert "EventSource" in script.text
    assert client.get("/static/alarms/alarms.css").status_code == 200
    assert "No current alarms." in page


# --- the list: filters, sorts, groups, pages --------------------------------------------------


def test_current_alarms_filtered_and_sorted(console: ConsoleApp, tenant: TenantFixture) -> None:
    client = console.client
    ids = plant(console.runtime, tenant)
    sign_in_as(client, tenant, Role.VIEWER)
    page = client.get("/alarms").text
    # Not normal ones, most urgent first, then the newest change.
    assert listed(page) == ["gd-1", "b-2", "b-1", "t-1"]
    assert 'id="alarm-count" data-live-region>4<' in page
    assert 'data-state="unack_rtn"' in row_of(page, ids["t-1"])
    assert "north" in row_of(page, ids["t-1"])

    def devices(**query: str) -> list[str]:
        return listed(assert_html(client.get("/alarms", params=query), 200))

    assert devices(sort="state") == ["gd-1", "b-1", "t-1", "b-2"]  # unacknowledged first
    assert devices(sort="device") == ["b-1", "b-2", "gd-1", "t-1"]
    assert devices(sort="oldest") == ["b-1", "gd-1", "t-1", "b-2"]
    assert devices(state="all") == ["gd-1", "b-3", "b-2", "b-1", "t-1"]
    assert devices(state="normal") == ["b-3"]
    assert devices(state="ack_active") == ["b-2"]
    assert devices(priority="high") == ["b-2", "b-1"]
    assert devices(position="north") == ["b-1", "t-1"]
    assert devices(site="south", sort="device") == ["b-2", "gd-1"]
    assert devices(q="gd") == ["gd-1"]
    assert devices(rule="pressure.high", state="all", sort="state") == ["b-1", "b-2", "b-3"]
    assert devices(device="b-1") == ["b-1"]
    assert "No alarms match." in client.get("/alarms", params={"q": "nothing-like-it"}).text
    # Odd values are ignored; they never fail the page.
    assert devices(state="sideways", priority="urgent", sort="drop table", page="-3") == ["gd-1", "b-2", "b-1", "t-1"]
    assert_html(client.get("/alarms", params={"q": "a\tb", "position": "x" * 5000}), 200)


def test_groups_by_rule_device_and_priority(console: ConsoleApp, tenant: TenantFixture) -> None:
    client = console.client
    plant(console.runtime, tenant)
    sign_in_as(client, tenant, Role.VIEWER)

    def groups(group: str, **query: str) -> dict[str, list[str]]:
        page = assert_html(client.get("/alarms", params={"view": "groups", "group": group, **query}), 200)
        found = {}
        for name, body in re.findall(r'<tr data-group="([^"]+)">(.*?)</tr>', page, re.DOTALL):
            found[name] = re.findall(r'data-field="[a-z]+">(\d+)<', body)
        return found

    # alarms, active, unacknowledged
    assert groups("rule") == {
        "pressure.high": ["2", "2", "1"],
        "gas.high": ["1", "1", "1"],
        "level.low": ["1", "0", "1"],
    }
    assert groups("priority") == {"critical": ["1", "1", "1"], "high": ["2", "2", "1"], "low": ["1", "0", "1"]}
    assert groups("device", state="all") == {
        d: ["1", "1" if d in {"b-1", "b-2", "gd-1"} else "0", "1" if d in {"b-1", "gd-1", "t-1"} else "0"]
        for d in ("b-1", "b-2", "b-3", "gd-1", "t-1")
    }
    assert list(groups("rule", position="south")) == ["gas.high", "pressure.high"]
    page = client.get("/alarms", params={"view": "groups"}).text
    link = re.search(r'<tr data-group="pressure.high">.*?href="([^"]+)"', page, re.DOTALL).group(1)  # type: ignore[union-attr]
    assert listed(client.get(unescape(link)).text) == ["b-2", "b-1"]


def test_the_list_pages_through_a_flood(console: ConsoleApp, tenant: TenantFixture) -> None:
    client = console.client
    with console.runtime.db.session() as session:
        AlarmService(session, admin(tenant)).import_rules(RULES)
    t0 = now_ms() - 60_000
    apply(console.runtime, tenant, *(("pressure.high", f"d-{n:02d}", t0 + n, True) for n in range(55)))
    sign_in_as(client, tenant, Role.VIEWER)
    for sort in ("priority", "state"):
        first = client.get("/alarms", params={"sort": sort}).text
        assert len(listed(first)) == pages.ALARM_PAGE_SIZE
        assert "Page 1 of 2" in first
        following = unescape(re.search(r'href="([^"]+)">Next<', first).group(1))  # type: ignore[union-attr]
        second = client.get(following).text
        assert len(listed(second)) == 5
        assert set(listed(first)).isdisjoint(listed(second))
    assert listed(client.get("/alarms", params={"page": "2"}).text)[-1] == "d-00"  # newest change first


# --- actions in place -------------------------------------------------------------------------


def test_acknowledge_in_place_is_recorded_with_the_user(console: ConsoleApp, tenant: TenantFixture) -> None:
    client, runtime = console.client, console.runtime
    ids = plant(runtime, tenant)
    token = sign_in_as(client, tenant, Role.OPERATOR)
    back = "/alarms?priority=high"
    page = client.get(back).text
    form = re.search(rf'action="/alarms/{ids["b-1"]}/acknowledge"(.*?)</form>', page, re.DOTALL)
    assert form, "the row has no acknowledge form"
    assert 'name="next" value="/alarms?priority=high"' in unescape(form.group(1))
    assert f'action="/alarms/{ids["b-2"]}/acknowledge"' not in page  # acknowledged already

    done = client.post(
        f"/alarms/{ids['b-1']}/acknowledge", data={"csrf_token": token, "next": back}, follow_redirects=False
    )
    assert done.status_code == 303
    assert done.headers["location"] == back
    shown = assert_html(client.get(back), 200)
    assert "The alarm was acknowledged." in shown
    assert 'data-state="ack_active"' in row_of(shown, ids["b-1"])
    operator = f"user:{tenant.name}-operator"
    assert history_of(runtime, ids["b-1"])[-1] == ("acknowledge", operator, "")
    assert alarm_of(runtime, ids["b-1"]).acknowledged_by == operator
    [entry] = [e for e in audit_entries(runtime, "POST /alarms/{alarm_id}/acknowledge") if e.object_id == ids["b-1"]]
    assert (entry.principal, entry.outcome, entry.object_type) == (operator, "success", "alarm")

    # Twice: refused with the reason, on the alarm's page.
    again = assert_html(client.post(f"/alarms/{ids['b-1']}/acknowledge", data={"csrf_token": token}), 409)
    assert "Not done: the alarm is active and acknowledged: there is nothing to acknowledge" in text_of(again)
    # The page script asks for JSON: the alarm after the action, or the reason in the user's language.
    token = sign_in_as(client, tenant, Role.OPERATOR, "zh_CN")
    as_json = {"Accept": "application/json"}
    answer = client.post(
        f"/alarms/{ids['gd-1']}/acknowledge", data={"csrf_token": token, "comment": "on it"}, headers=as_json
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["alarm"]["state"] == "ack_active"
    assert answer.json()["alarm"]["acknowledged_by"] == operator
    assert history_of(runtime, ids["gd-1"])[-1] == ("acknowledge", operator, "on it")
    refused = client.post(f"/alarms/{ids['gd-1']}/acknowledge", data={"csrf_token": token}, headers=as_json)
    assert refused.status_code == 409
    assert refused.json()["error"].startswith("未执行：the alarm is active and acknowledged")


def test_actions_are_published_once_committed(console: ConsoleApp, tenant: TenantFixture) -> None:
    client, runtime = console.client, console.runtime
    ids = plant(runtime, tenant)
    heard: list[AlarmChange] = []

    async def hear(delivery: Delivery[AlarmChange]) -> None:
        if delivery.payload.tenant_id == tenant.id:
            heard.append(delivery.payload)

    async def subscribe() -> Any:
        return await runtime.bus.subscribe(ALARM_CHANGES, hear, durable=f"pages-test-{uuid.uuid4().hex[:8]}")

    assert client.portal is not None
    subscription = client.portal.call(subscribe)
    try:
        token = sign_in_as(client, tenant, Role.OPERATOR)
        data = {"csrf_token": token, "minutes": "30", "reason": "valve maintenance"}
        assert client.post(f"/alarms/{ids['t-1']}/shelve", data=data, follow_redirects=False).status_code == 303
        deadline = time.monotonic() + 10
        while not heard and time.monotonic() < deadline:
            time.sleep(0.02)
        [change] = heard
        assert (change.alarm_id, change.action, change.shelved) == (ids["t-1"], "shelve", True)
        assert change.actor == f"user:{tenant.name}-operator"
    finally:
        client.portal.call(subscription.stop)


def test_shelve_unshelve_comment_reset_and_service(console: ConsoleApp, tenant: TenantFixture) -> None:
    client, runtime = console.client, console.runtime
    ids = plant(runtime, tenant)
    token = sign_in_as(client, tenant, Role.OPERATOR)
    t1 = ids["t-1"]

    def post(action: str, **fields: str) -> Any:
        return client.post(f"/alarms/{t1}/{action}", data={"csrf_token": token, **fields}, follow_redirects=False)

    # What the form needs, said beside the field; nothing is recorded.
    before = history_of(runtime, t1)
    missing = assert_html(post("shelve", minutes="60", reason="  "), 422)
    assert "Give the reason for shelving the alarm." in text_of(section(missing, "shelve-form"))
    assert "Choose how long to shelve the alarm." in text_of(
        assert_html(post("shelve", minutes="soon", reason="x"), 422)
    )
    too_long = assert_html(post("shelve", minutes=str(60 * 48), reason="the weekend"), 422)
    assert "Not done: an alarm may be shelved for at most 24 hours" in text_of(too_long)
    assert 'value="the weekend"' in too_long  # kept for correcting
    assert "Write a comment." in text_of(assert_html(post("comments", text=" "), 422))
    assert history_of(runtime, t1) == before

    started = dt.datetime.now(dt.UTC)
    assert post("shelve", minutes="60", reason="level transmitter replaced").status_code == 303
    shelved = alarm_of(runtime, t1)
    assert shelved.shelved
    assert shelved.shelved_until is not None
    until = (
        shelved.shelved_until.replace(tzinfo=dt.UTC) if shelved.shelved_until.tzinfo is None else shelved.shelved_until
    )
    assert dt.timedelta(minutes=59) < until - started < dt.timedelta(minutes=61)
    page = client.get(f"/alarms/{t1}").text
    assert 'data-flag="shelved"' in section(page, "alarm-state")
    assert 'id="unshelve-form"' in page
    assert post("unshelve").status_code == 303
    assert post("comments", text="Checked on site: level fine").status_code == 303
    assert post("acknowledge").status_code == 303
    assert alarm_of(runtime, t1).state == "latched"  # a latched rule: waiting for its reset
    assert 'id="reset-form"' in client.get(f"/alarms/{t1}").text
    assert post("reset", comment="refilled").status_code == 303
    assert alarm_of(runtime, t1).state == "normal"
    operator = f"user:{tenant.name}-operator"
    assert history_of(runtime, t1)[len(before) :] == [
        ("shelve", operator, "level transmitter replaced"),
        ("unshelve", operator, ""),
        ("comment", operator, "Checked on site: level fine"),
        ("acknowledge", operator, ""),
        ("reset", operator, "refilled"),
    ]
    # Taking an alarm out of service is an engineer's.
    assert_html(post("out-of-service"), 403)
    token = sign_in_as(client, tenant, Role.ENGINEER)
    assert post("out-of-service", comment="sensor removed").status_code == 303
    assert alarm_of(runtime, t1).out_of_service
    assert "Return to service" in client.get(f"/alarms/{t1}").text
    assert post("return-to-service").status_code == 303
    assert not alarm_of(runtime, t1).out_of_service


def test_acknowledge_selected(console: ConsoleApp, tenant: TenantFixture) -> None:
    client, runtime = console.client, console.runtime
    ids = plant(runtime, tenant)
    other = new_tenant(runtime)
    foreign = plant(runtime, other)
    token = sign_in_as(client, tenant, Role.OPERATOR)
    page = client.get("/alarms").text
    assert re.findall(r'name="ids" value="([0-9a-f]+)" form="bulk-ack"', page) == [
        ids[d] for d in ("gd-1", "b-2", "b-1", "t-1")
    ]

    def post(chosen: list[str], **more: str) -> Any:
        data = {"csrf_token": token, "ids": chosen, "next": "/alarms?sort=state", **more}
        return client.post("/alarms/acknowledge", data=data, follow_redirects=False)

    nothing = assert_html(post([]), 422)
    assert "Select at least one alarm." in text_of(nothing)
    assert 'value="state" selected' in section(nothing, "alarm-filters")  # the list it came from
    assert 'name="next" value="/alarms?sort=state"' in section(nothing, "bulk-ack")
    # All or nothing: one alarm that is not the tenant's (or not at all) refuses the whole request.
    for stranger in (foreign["b-1"], uuid.uuid4().hex):
        refused = assert_html(post([ids["gd-1"], stranger]), 404)
        assert "Some of the selected alarms no longer exist. Nothing was acknowledged." in text_of(refused)
    assert alarm_of(runtime, ids["gd-1"]).state == "unack_active"
    assert alarm_of(runtime, foreign["b-1"]).state == "unack_active"

    done = post([ids["gd-1"], ids["b-1"], ids["b-2"]], comment="shift handover")
    assert done.status_code == 303
    assert done.headers["location"] == "/alarms?sort=state"
    assert "The selected alarms were acknowledged." in client.get("/alarms").text
    assert [alarm_of(runtime, ids[d]).state for d in ("gd-1", "b-1", "b-2")] == ["ack_active"] * 3
    assert history_of(runtime, ids["b-1"])[-1] == ("acknowledge", f"user:{tenant.name}-operator", "shift handover")
    assert [h[0] for h in history_of(runtime, ids["b-2"])].count("acknowledge") == 1  # skipped: acknowledged before
    answer = client.post(
        "/alarms/acknowledge", data={"csrf_token": token, "ids": [ids["t-1"]]}, headers={"Accept": "application/json"}
    )
    assert answer.json() == {"acknowledged": [ids["t-1"]], "skipped": []}


# --- one alarm --------------------------------------------------------------------------------


def test_the_alarm_page_shows_state_rationalisation_and_history(console: ConsoleApp, tenant: TenantFixture) -> None:
    client, runtime = console.client, console.runtime
    ids = plant(runtime, tenant)
    sign_in_as(client, tenant, Role.VIEWER)
    page = assert_html(client.get(f"/alarms/{ids['b-2']}"), 200)
    state = text_of(section(page, "alarm-state"))
    assert "Active, acknowledged" in state
    assert f"user:{tenant.name}-admin" in state
    assert "south" in state
    assert "north" not in state
    reasons = section(page, "rationalisation")
    assert "Feed water control failed" in reasons
    assert "The safety valve lifts" in reasons
    assert "Reduce the firing rate" in reasons
    assert "300 s" in text_of(reasons)
    assert 'href="/alarms/rules/pressure.high"' in page
    history = section(page, "alarm-history")
    assert re.findall(r'data-action="([a-z_]+)"', history) == ["activate", "acknowledge"]
    assert "Process" in text_of(re.search(r'<tr data-sequence="1".*?</tr>', history, re.DOTALL).group(0))  # type: ignore[union-attr]
    assert f"user:{tenant.name}-admin" in re.search(r'<tr data-sequence="2".*?</tr>', history, re.DOTALL).group(0)  # type: ignore[union-attr]
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", history)
    # A viewer reads; the forms are an operator's.
    assert 'id="comment-form"' not in page
    assert_html(client.post(f"/alarms/{ids['b-2']}/comments", data={"text": "x"}), 403)


def test_another_tenants_alarms_and_rules_are_404_pages(console: ConsoleApp, tenant: TenantFixture) -> None:
    client, runtime = console.client, console.runtime
    other = new_tenant(runtime)
    foreign = plant(runtime, other)
    with runtime.db.session() as session:
        rule_id = session.scalar(select(Rule.id).where(Rule.tenant_id == other.id, Rule.key == "pressure.high"))
    token = sign_in_as(client, tenant, Role.ADMIN)
    for path in (f"/alarms/{foreign['b-1']}", f"/alarms/rules/{rule_id}", "/alarms/rules/pressure.high"):
        page = assert_html(client.get(path), 404)
        assert heading_text(page) == "Page not found"
        assert "Boiler pressure high" not in page
    for action, fields in (
        ("acknowledge", {}),
        ("shelve", {"minutes": "30", "reason": "x"}),
        ("comments", {"text": "x"}),
    ):
        assert_html(client.post(f"/alarms/{foreign['b-1']}/{action}", data={"csrf_token": token, **fields}), 404)
    assert_html(client.post(f"/alarms/rules/{rule_id}/enabled", data={"csrf_token": token, "enabled": "false"}), 404)
    assert history_of(runtime, foreign["b-1"]) == [("activate", "", "")]
    assert "No current alarms." in client.get("/alarms").text
    assert "No rules yet." in client.get("/alarms/rules").text
    assert "No alarm has changed yet." in client.get("/alarms/history").text
    # The owner sees them.
    sign_in_as(client, other, Role.VIEWER)
    assert_html(client.get(f"/alarms/{foreign['b-1']}"), 200)


def test_forms_need_the_session_csrf_token_and_a_session(console: ConsoleApp, tenant: TenantFixture) -> None:
    client = console.client
    ids = plant(console.runtime, tenant)
    sign_in_as(client, tenant, Role.ADMIN)
    refused = assert_html(client.post(f"/alarms/{ids['b-1']}/acknowledge", data={}), 403)
    assert "The form has expired" in refused
    assert_html(client.post("/alarms/acknowledge", data={"csrf_token": "x" * 40, "ids": [ids["b-1"]]}), 403)
    assert alarm_of(console.runtime, ids["b-1"]).state == "unack_active"
    client.cookies.clear()
    response = client.get("/alarms/report", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/alarms/report"


# --- the journal ------------------------------------------------------------------------------


def test_the_history_filtered_by_time_device_and_rule(console: ConsoleApp, tenant: TenantFixture) -> None:
    client, runtime = console.client, console.runtime
    ids = plant(runtime, tenant)
    sign_in_as(client, tenant, Role.VIEWER)

    def entries(**query: str) -> list[tuple[str, str]]:
        page = assert_html(client.get("/alarms/history", params=query), 200)
        return re.findall(r'<tr data-alarm="([0-9a-f]+)" data-sequence="\d+" data-action="([a-z_]+)"', page)

    everything = entries()
    assert len(everything) == 9  # 5 activations, 2 clears, 2 acknowledgements
    assert everything[0][1] == "acknowledge"  # newest first
    assert entries(device="b-3") == [(ids["b-3"], "acknowledge"), (ids["b-3"], "clear"), (ids["b-3"], "activate")]
    assert entries(rule="level.low") == [(ids["t-1"], "clear"), (ids["t-1"], "activate")]
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    assert entries(start=future) == []
    assert "No transitions match." in client.get("/alarms/history", params={"start": future}).text
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    assert len(entries(start=past, end=future)) == 9
    page = client.get("/alarms/history", params={"device": "b-2"}).text
    assert f"user:{tenant.name}-admin" in page
    assert f'href="/alarms/{ids["b-2"]}"' in page

    wrong = assert_html(client.get("/alarms/history", params={"start": "yesterday"}), 422)
    assert 'id="start-error">Enter a date and time, e.g. 2026-01-05 08:00.<' in wrong
    backwards = assert_html(client.get("/alarms/history", params={"start": future, "end": past}), 422)
    assert 'id="end-error">The end must be after the start.<' in backwards


# --- rules ------------------------------------------------------------------------------------


def test_rules_list_and_enable_disable(console: ConsoleApp, tenant: TenantFixture) -> None:
    client, runtime = console.client, console.runtime
    ids = plant(runtime, tenant)
    token = sign_in_as(client, tenant, Role.ENGINEER)
    page = assert_html(client.get("/alarms/rules"), 200)
    assert re.findall(r'<tr data-rule="([^"]+)" data-enabled="true"', page) == [
        "gas.high",
        "level.low",
        "pressure.high",
    ]
    assert "profile boiler" in text_of(re.search(r'<tr data-rule="pressure.high".*?</tr>', page, re.DOTALL).group(0))  # type: ignore[union-attr]
    assert re.findall(r'<tr data-rule="([^"]+)"', client.get("/alarms/rules?q=gas").text) == ["gas.high"]
    assert re.findall(r'<tr data-rule="([^"]+)"', client.get("/alarms/rules?kind=expression").text) == []

    data = {"csrf_token": token, "enabled": "false", "next": "/alarms/rules?q=pressure"}
    done = client.post("/alarms/rules/pressure.high/enabled", data=data, follow_redirects=False)
    assert done.status_code == 303
    assert done.headers["location"] == "/alarms/rules?q=pressure"
    assert "The rule was disabled." in client.get("/alarms/rules").text
    with runtime.db.session() as session:
        rule = session.scalar(select(Rule).where(Rule.tenant_id == tenant.id, Rule.key == "pressure.high"))
        assert rule is not None
        assert (rule.enabled, rule.version, rule.updated_by) == (False, 2, f"user:{tenant.name}-engineer")
    # Nothing evaluates its alarms any more: their conditions clear; they still need acknowledging.
    assert alarm_of(runtime, ids["b-1"]).state == "unack_rtn"
    assert audit_entries(runtime, "alarms.rule.disable")
    assert re.findall(r'<tr data-rule="([^"]+)"', client.get("/alarms/rules?enabled=false").text) == ["pressure.high"]
    client.post("/alarms/rules/pressure.high/enabled", data={"csrf_token": token, "enabled": "true"})
    rule_page = client.get("/alarms/rules/pressure.high").text
    assert re.findall(r'<tr data-version="(\d+)"', rule_page) == ["3", "2", "1"]
    assert "Disabled" in text_of(re.search(r'<tr data-version="2".*?</tr>', rule_page, re.DOTALL).group(0))  # type: ignore[union-attr]
    assert_html(client.post("/alarms/rules/pressure.high/enabled", data={"csrf_token": token, "enabled": "maybe"}), 422)

    viewer = sign_in_as(client, tenant, Role.VIEWER)
    page = client.get("/alarms/rules").text
    assert "/enabled" not in page
    assert 'href="/alarms/rules/new"' not in page
    assert_html(client.post("/alarms/rules/gas.high/enabled", data={"csrf_token": viewer, "enabled": "false"}), 403)


NEW_RULE = """\
key: flow.deviation
kind: deviation
title: Feed flow off its setpoint
scope: {device: pump-01}
metric: flow
setpoint: 30
limit: 5
priority: medium
rationalisation: {cause: Pump cavitating, corrective_action: Check the suction strainer}
"""


def test_the_rule_editor_shows_errors_readably(console: ConsoleApp, tenant: TenantFixture) -> None:
    client = console.client
    token = sign_in_as(client, tenant, Role.ENGINEER)
    new = assert_html(client.get("/alarms/rules/new"), 200)
    example = unescape(re.search(r'name="document"[^>]*>(.*?)</textarea>', new, re.DOTALL).group(1))  # type: ignore[union-attr]
    assert yaml.safe_load(example)["key"] == "boiler.pressure.high"  # a working example to start from

    def save(document: str, **more: str) -> tuple[int, str]:
        data = {"csrf_token": token, "action": "save", "document": document, **more}
        response = client.post("/alarms/rules/new", data=data, follow_redirects=False)
        if response.status_code == 303:
            return 303, response.headers["location"]
        return response.status_code, text_of(section(response.text, "rule-errors"))

    for document, fmt, status, problem in (
        ("key: [", "", 422, "not valid YAML"),
        ("{", "json", 422, "not valid JSON"),
        (NEW_RULE.replace("limit: 5", "limit: -5"), "", 422, "limit: Input should be greater than 0"),
        (NEW_RULE.replace("scope: {device: pump-01}\n", ""), "", 422, "scope: Field required"),
        (NEW_RULE.replace("kind: deviation", "kind: gauge"), "", 422, "Input tag 'gauge'"),
        ("key: x\nkind: expression\ntitle: t\nscope: {device: d}\nexpression: 'flow >'\n", "", 422, "expression:"),
        (f"- {json.dumps(yaml.safe_load(NEW_RULE))}\n- {{key: b}}\n", "", 422, "the document is one rule"),
        ("   ", "", 422, "Paste the rule's document."),
    ):
        code, shown = save(document, format=fmt)
        assert (code, problem in shown) == (status, True), (document, shown)
    kept = client.post("/alarms/rules/new", data={"csrf_token": token, "document": "key: [<b>"}).text
    assert "&lt;b&gt;" in re.search(r'name="document"[^>]*>(.*?)</textarea>', kept, re.DOTALL).group(1)  # type: ignore[union-attr]

    assert save(NEW_RULE) == (303, "/alarms/rules/flow.deviation")
    assert "The rule was created." in client.get("/alarms/rules/flow.deviation").text
    code, shown = save(NEW_RULE)
    assert (code, "alarm rule 'flow.deviation' already exists" in shown) == (409, True)
    # A rule in JSON, as the API takes it, works the same.
    as_json = json.dumps({**yaml.safe_load(NEW_RULE), "key": "flow.deviation.json"})
    assert save(as_json) == (303, "/alarms/rules/flow.deviation.json")


def test_editing_a_rule_stores_versions(console: ConsoleApp, tenant: TenantFixture) -> None:
    client, runtime = console.client, console.runtime
    token = sign_in_as(client, tenant, Role.ENGINEER)
    client.post("/alarms/rules/new", data={"csrf_token": token, "action": "save", "document": NEW_RULE})

    def save(document: str) -> Any:
        data = {"csrf_token": token, "action": "save", "document": document}
        return client.post("/alarms/rules/flow.deviation", data=data, follow_redirects=False)

    assert save(NEW_RULE.replace("limit: 5", "limit: 4")).status_code == 303
    page = client.get("/alarms/rules/flow.deviation").text
    assert "The rule was saved as a new version." in page
    assert 'id="rule-version">2<' in page
    assert save(NEW_RULE.replace("limit: 5", "limit: 4")).status_code == 303
    assert "Nothing changed." in client.get("/alarms/rules/flow.deviation").text
    renamed = assert_html(save(NEW_RULE.replace("key: flow.deviation", "key: flow.other")), 422)
    assert "a key cannot change" in text_of(section(renamed, "rule-errors"))
    versions = section(client.get("/alarms/rules/flow.deviation").text, "versions-table")
    assert re.findall(r'<tr data-version="(\d+)"', versions) == ["2", "1"]
    assert f"user:{tenant.name}-engineer" in versions
    assert "limit: 4" in unescape(versions)
    with runtime.db.session() as session:
        rule = session.scalar(select(Rule).where(Rule.tenant_id == tenant.id, Rule.key == "flow.deviation"))
        assert rule is not None
        assert (rule.version, rule.spec["limit"]) == (2, 4)
    assert audit_entries(runtime, "POST /alarms/rules/{rule}")


def test_the_preview_replays_the_last_day_of_stored_data(console: ConsoleApp, tenant: TenantFixture) -> None:
    client, runtime = console.client, console.runtime
    document = {
        "profiles": [{"name": "pump", "protocol": "http", "metrics": [{"name": "flow"}]}],
        "devices": [{"key": "pump-01", "profile": "pump"}, {"key": "pump-02", "profile": "pump"}],
    }
    imported = client.post("/api/devices/import", json=document, headers=tenant.headers(Role.ENGINEER))
    assert imported.status_code == 200, imported.text
    t0 = now_ms() - 3_600_000
    flows = {"pump-01": [30, 37, 31, 24, 29, 36.5, 30], "pump-02": [30, 31, 29, 30]}
    lines = [
        {"device": device, "ts": t0 + n * 60_000, "values": {"flow": value}}
        for device, values in flows.items()
        for n, value in enumerate(values)
    ]
    headers = {**tenant.headers(Role.ENGINEER), "Content-Type": "application/x-ndjson"}
    response = client.post("/api/telemetry", content="\n".join(json.dumps(line) for line in lines), headers=headers)
    assert response.status_code == 200, response.text
    token = sign_in_as(client, tenant, Role.ENGINEER)

    def preview(document: str) -> str:
        data = {"csrf_token": token, "action": "preview", "document": document}
        return assert_html(client.post("/alarms/rules/new", data=data), 200)

    page = preview(NEW_RULE)
    shown = section(page, "preview")
    assert "Activations in the last 24 hours: 3." in text_of(shown)  # 37, 24 and 36.5 are off by more than 5
    row = re.search(r'<tr data-device="pump-01">.*?</tr>', shown, re.DOTALL).group(0)  # type: ignore[union-attr]
    assert re.findall(r'<td class="mono"[^>]*>([^<]+)</td>', row)[:3] == ["pump-01", "7", "3"]
    assert "flow.deviation" in unescape(page)  # the document stays in the editor
    with runtime.db.session() as session:
        assert session.scalar(select(Rule).where(Rule.tenant_id == tenant.id)) is None  # nothing saved
    # Profile-wide: every device of the profile.
    everyone = section(preview(NEW_RULE.replace("{device: pump-01}", "{profile: pump}")), "preview")
    assert re.findall(r'<tr data-device="([^"]+)"', everyone) == ["pump-01", "pump-02"]
    assert "Activations in the last 24 hours: 3." in text_of(everyone)
    nobody = preview(NEW_RULE.replace("{device: pump-01}", "{profile: compressor}"))
    assert "No device is in the rule's scope." in text_of(section(nobody, "preview"))
    events = "key: ics.talker\nkind: event\ntitle: New talker\nscope: {profile: pump}\nsource: security\n"
    assert "cannot be previewed" in text_of(section(preview(events), "preview"))
    # A stored rule is previewed from its page, with the document as edited.
    client.post("/alarms/rules/new", data={"csrf_token": token, "action": "save", "document": NEW_RULE})
    data = {"csrf_token": token, "action": "preview", "document": NEW_RULE.replace("limit: 5", "limit: 6.5")}
    stored = assert_html(client.post("/alarms/rules/flow.deviation", data=data), 200)
    assert "Activations in the last 24 hours: 1." in text_of(
        section(stored, "preview")
    )  # only 37 is off by more than 6.5


# --- the report -------------------------------------------------------------------------------


def test_the_report_measures_a_chosen_window(console: ConsoleApp, tenant: TenantFixture) -> None:
    client, runtime = console.client, console.runtime
    plant(runtime, tenant)
    # A flood at a position of its own: 12 alarms in 10 s, 30 s into one of the report's 10-minute
    # windows (aligned on its start, a day before the next minute), whichever minute the page is shown in.
    next_minute = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    t0 = int((next_minute - dt.timedelta(hours=1)).timestamp() * 1000) + 30_000
    apply(runtime, tenant, *(("pressure.high", f"s-{n:02d}", t0 + n * 800, True) for n in range(12)))
    sign_in_as(client, tenant, Role.VIEWER)
    page = assert_html(client.get("/alarms/report"), 200)
    assert 'id="stat-annunciated">17<' in page
    positions = section(page, "positions-table")
    assert sorted(re.findall(r'<tr data-position="([^"]*)"', positions)) == ["", "north", "south"]
    chart = json.loads(unescape(re.search(r'data-chart="([^"]+)"', page).group(1)))  # type: ignore[union-attr]
    assert chart["window_ms"] == 600_000
    counts = {s["position"]: s["counts"] for s in chart["series"]}
    assert (sum(counts[""]), sum(counts["north"]), sum(counts["south"])) == (12, 3, 2)
    assert max(counts[""]) == 12
    floods = re.findall(r"<tr><td>(.*?)</tr>", section(page, "floods-table"), re.DOTALL)
    assert len(floods) == 1
    assert re.findall(r'<td class="mono">(\d+)</td>', floods[0]) == ["12", "12"]  # alarms, most in 10 minutes
    top = re.search(r'<tr data-measure="top_alarms_percent" data-position="" data-verdict="(\w+)"', page)
    assert top, "no verdict on the most frequent alarms"
    assert top.group(1) == "over"  # 17 alarms of 17 rule-and-device pairs: the top 10 are most of them
    assert "Over target" in page

    # A window before anything happened: nothing to measure.
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    empty = client.get(
        "/alarms/report",
        params={
            "start": old.strftime("%Y-%m-%dT%H:%M"),
            "end": (old + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"),
        },
    ).text
    assert 'id="stat-annunciated">0<' in empty
    assert "No alarms in this period." in empty
    week = client.get("/alarms/report", params={"period": "7d"}).text
    assert 'value="7d" selected' in week
    assert 'id="stat-annunciated">17<' in week

    wrong = assert_html(client.get("/alarms/report", params={"start": "last tuesday"}), 422)
    assert "Enter a date and time" in text_of(wrong)
    long = {"start": "2025-01-01T00:00", "end": "2025-06-01T00:00"}
    assert "A report covers at most 92 days." in text_of(assert_html(client.get("/alarms/report", params=long), 422))


# --- catalogues -------------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["zh_CN", "en"])
def test_every_message_id_of_the_pages_is_translated(language: str) -> None:
    locale_dir = module_locale_dir(pages.TEMPLATE_DIR)
    assert locale_dir is not None
    catalogues = load_catalogues([locale_dir])
    msgids = extract_msgids([ALARMS_PACKAGE]) | {p.title for p in pages.PAGES}
    assert "Acknowledge selected" in msgids
    missing = sorted(m for m in msgids if not catalogues.has(language, m))
    assert not missing, f"untranslated in {language}: {missing}"
    own = load_catalogues([locale_dir]).entries[language]
    wrong = {m: t for m, t in own.items() if sorted(PLACEHOLDER_RE.findall(m)) != sorted(PLACEHOLDER_RE.findall(t))}
    assert not wrong
