"""`AlarmService` on SQLite and PostgreSQL: the rule store, applying condition changes, operator
actions, listing, history, metrics, permissions and tenants."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import func, select

from iip.alarms.models import Alarm, AlarmComment, AlarmHistory, Rule, RuleVersion
from iip.alarms.public import AlarmChange, AlarmState, Priority
from iip.alarms.repository import AlarmFilter
from iip.alarms.rules import ConditionChange, parse_rule
from iip.alarms.schemas import AlarmSort
from iip.alarms.service import AlarmService, enabled_rules, time_ms
from iip.kernel import audit
from iip.kernel.audit import AuditEntry
from iip.kernel.auth import Principal, Role
from iip.kernel.db import Database
from iip.kernel.errors import Conflict, Forbidden, Invalid, NotFound
from iip.kernel.settings import AlarmsSettings
from tests.conftest import TenantFixture

T0 = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)
MS0 = time_ms(T0)
MINUTE_MS = 60_000


class Clock:
    """An injected clock the test moves by hand."""

    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> dt.datetime:
        self.now += dt.timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def principal(tenant: TenantFixture, role: Role, name: str = "") -> Principal:
    who = name or f"{role.value}-of-{tenant.name}"
    return Principal("user", who, who, tenant.id, role)


def threshold(key: str = "boiler.pressure.high", **overrides: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "key": key,
        "kind": "threshold",
        "title": "Boiler pressure high",
        "scope": {"profile": "boiler"},
        "metric": "pressure",
        "high": 1.6,
        "priority": "high",
        "message": "{device}: pressure {value} MPa",
    }
    rule.update(overrides)
    return rule


class World:
    """A tenant's view of the service: one transaction per call, like a request."""

    def __init__(self, db: Database, tenant: TenantFixture, clock: Clock) -> None:
        self.db = db
        self.tenant = tenant
        self.clock = clock
        self.sites = {"boiler-1": "plant-north", "boiler-2": "plant-south"}

    def run(self, role: Role, call: str, *args: Any, **kwargs: Any) -> Any:
        with self.db.session() as session:
            service = AlarmService(
                session, principal(self.tenant, role), settings=AlarmsSettings(max_shelve_hours=24), clock=self.clock
            )
            result = getattr(service, call)(*args, **kwargs)
            # A stream is read inside the transaction, as the metrics endpoint reads it.
            return list(result) if isinstance(result, Iterator) else result

    def admin(self, call: str, *args: Any, **kwargs: Any) -> Any:
        return self.run(Role.ADMIN, call, *args, **kwargs)

    def apply(self, changes: Sequence[ConditionChange]) -> list[AlarmChange]:
        with self.db.session() as session:
            service = AlarmService(session, clock=self.clock)
            applied = service.apply(changes, sites=lambda _tenant, device: self.sites.get(device, ""))
            assert applied == service.changes
            return applied

    def change(
        self,
        at_minute: float,
        *,
        device: str = "boiler-1",
        rule: str = "boiler.pressure.high",
        version: int = 1,
        **what: Any,
    ) -> ConditionChange:
        return ConditionChange(
            tenant_id=self.tenant.id,
            rule_key=rule,
            rule_version=version,
            device=device,
            at_ms=MS0 + int(at_minute * MINUTE_MS),
            **what,
        )

    def alarm(self, rule: str = "boiler.pressure.high", device: str = "boiler-1") -> Alarm:
        with self.db.session() as session:
            row = session.scalar(
                select(Alarm).where(Alarm.tenant_id == self.tenant.id, Alarm.rule_key == rule, Alarm.device == device)
            )
            assert row is not None
            return row

    def history(self, alarm_id: str) -> list[AlarmHistory]:
        with self.db.session() as session:
            query = select(AlarmHistory).where(AlarmHistory.alarm_id == alarm_id).order_by(AlarmHistory.sequence)
            return list(session.scalars(query))


@pytest.fixture
def world(migrated_db: Database, tenant_a: TenantFixture, clock: Clock) -> World:
    return World(migrated_db, tenant_a, clock)


@pytest.fixture
def with_rule(world: World) -> World:
    world.admin("create_rule", parse_rule(threshold()))
    return world


def audit_actions(db: Database, tenant_id: str) -> list[tuple[str, str]]:
    with db.session() as session:
        query = select(AuditEntry.action, AuditEntry.detail).where(AuditEntry.tenant_id == tenant_id)
        return [(action, detail) for action, detail in session.execute(query.order_by(AuditEntry.seq))]


# --- the rule store


def test_rules_are_versioned_and_every_change_audited(world: World, migrated_db: Database) -> None:
    created = world.admin("create_rule", parse_rule(threshold()))
    assert (created.version, created.enabled, created.kind, created.priority) == (1, True, "threshold", "high")
    same = world.admin("update_rule", created.key, parse_rule(threshold()))
    assert same.version == 1  # nothing changed, nothing stored
    raised = world.admin("update_rule", created.id, parse_rule(threshold(high=1.8)))
    assert raised.version == 2
    assert raised.spec["high"] == 1.8
    disabled = world.admin("set_enabled", created.key, False)
    assert (disabled.version, disabled.enabled) == (3, False)
    versions = world.admin("rule_versions", created.key)
    assert [(v.version, v.change) for v in versions] == [(1, "create"), (2, "update"), (3, "disable")]
    assert versions[0].spec["high"] == 1.6
    assert versions[0].created_by == f"user:admin-of-{world.tenant.name}"
    assert world.admin("rule_version", created.key, 2).spec["high"] == 1.8
    with pytest.raises(NotFound):
        world.admin("rule_version", created.key, 9)

    world.admin("delete_rule", created.key)
    with pytest.raises(NotFound):
        world.admin("get_rule", created.key)
    assert world.admin("list_rules") == []
    again = world.admin("create_rule", parse_rule(threshold()))
    assert (again.id, again.version) == (created.id, 4)  # the numbering continues
    assert audit_actions(migrated_db, world.tenant.id) == [
        ("alarms.rule.create", "boiler.pressure.high version 1"),
        ("alarms.rule.update", "boiler.pressure.high version 2"),
        ("alarms.rule.disable", "boiler.pressure.high version 3"),
        ("alarms.rule.delete", "boiler.pressure.high version 3 (deleted)"),
        ("alarms.rule.create", "boiler.pressure.high version 4"),
    ]
    with migrated_db.session() as session:
        assert audit.verify(session).ok


def test_rule_errors(world: World) -> None:
    world.admin("create_rule", parse_rule(threshold()))
    with pytest.raises(Conflict, match="already exists"):
        world.admin("create_rule", parse_rule(threshold()))
    with pytest.raises(Invalid, match="key cannot change"):
        world.admin("update_rule", "boiler.pressure.high", parse_rule(threshold(key="other")))
    bad = {"key": "x", "kind": "expression", "title": "t", "scope": {"device": "d"}, "expression": "pressure >"}
    with pytest.raises(Invalid) as refused:
        world.admin("create_rule", parse_rule(bad))
    assert refused.value.message.startswith("expression:")
    with pytest.raises(Invalid, match="finite"):
        world.admin("create_rule", parse_rule(threshold(key="inf", high=float("inf"))))
    with pytest.raises(NotFound):
        world.admin("update_rule", "missing", parse_rule(threshold(key="missing")))


def test_import_is_all_or_nothing_and_names_every_error(world: World) -> None:
    document = [
        threshold("a.one"),
        threshold("a.two", high=None),  # neither limit
        {"key": "a.three", "kind": "expression", "title": "t", "scope": {"profile": "p"}, "expression": "1 +"},
        threshold("a.one", title="again"),
        "not a rule",
    ]
    with pytest.raises(Invalid) as refused:
        world.admin("import_rules", document)
    errors = refused.value.details["errors"]
    assert errors[0].startswith("[1]")
    assert "high, low or both" in errors[0]
    assert any(e.startswith("[2].expression:") for e in errors)
    assert any(e.startswith("[3].key:") and "[0]" in e for e in errors)
    assert any(e.startswith("[4]") for e in errors)
    assert refused.value.message.endswith(f"(and {len(errors) - 1} more)")
    assert world.admin("list_rules") == []  # nothing of it stored

    good = [threshold("a.one"), threshold("a.two", low=0.2, high=None)]
    first = world.admin("import_rules", good)
    assert (first.created, first.updated, first.unchanged) == (["a.one", "a.two"], [], [])
    again = world.admin("import_rules", good)
    assert (again.created, again.updated, again.unchanged) == ([], [], ["a.one", "a.two"])
    changed = world.admin("import_rules", [threshold("a.one", high=2.0), threshold("a.two", low=0.2, high=None)])
    assert (changed.updated, changed.unchanged) == (["a.one"], ["a.two"])
    versions = world.admin("rule_versions", "a.one")
    assert [(v.version, v.change) for v in versions] == [(1, "import"), (2, "import")]


def test_export_round_trips_into_another_tenant(
    world: World, migrated_db: Database, tenant_b: TenantFixture, clock: Clock
) -> None:
    world.admin(
        "import_rules", [threshold("a.one", rationalisation={"cause": "fouling"}), threshold("a.two", latched=True)]
    )
    exported = world.admin("export_rules")
    assert [r["key"] for r in exported] == ["a.one", "a.two"]
    other = World(migrated_db, tenant_b, clock)
    assert other.admin("import_rules", exported).created == ["a.one", "a.two"]
    assert other.admin("export_rules") == exported
    assert [r.tenant_id for r in other.admin("versioned_rules")] == [tenant_b.id] * 2


def test_enabled_rules_for_evaluation(world: World, migrated_db: Database) -> None:
    world.admin("import_rules", [threshold("a.one"), threshold("a.two"), threshold("a.three")])
    world.admin("set_enabled", "a.two", False)
    world.admin("delete_rule", "a.three")
    with migrated_db.session() as session:
        rules = enabled_rules(session, world.tenant.id)
    assert [(r.spec.key, r.version) for r in rules] == [("a.one", 1)]


# --- applying condition changes


def test_apply_raises_and_clears_with_the_rules_metadata(with_rule: World) -> None:
    world = with_rule
    [raised] = world.apply([world.change(0, active=True, value=1.7, message="boiler-1: pressure 1.7 MPa")])
    assert (raised.action, raised.state, raised.sequence, raised.priority) == (
        "activate",
        AlarmState.UNACK_ACTIVE,
        1,
        Priority.HIGH,
    )
    assert (raised.site, raised.position, raised.value, raised.actor) == ("plant-north", "plant-north", 1.7, "")
    assert raised.at == T0
    assert raised.message == "boiler-1: pressure 1.7 MPa"
    alarm = world.alarm()
    assert (alarm.state, alarm.activation_count, alarm.first_activated_at, alarm.rule_version) == (
        "unack_active",
        1,
        T0,
        1,
    )
    [cleared] = world.apply([world.change(5, active=False, value=1.2)])
    assert (cleared.state, cleared.sequence, cleared.value) == (AlarmState.UNACK_RTN, 2, 1.2)
    assert cleared.message == "boiler-1: pressure 1.7 MPa"  # the message of the activation stays


def test_rule_position_wins_over_the_site_and_a_new_version_updates_the_alarm(with_rule: World) -> None:
    world = with_rule
    world.apply([world.change(0, active=True)])
    assert world.alarm().message == "Boiler pressure high"  # the rule's title when evaluation gave no text
    world.admin("update_rule", "boiler.pressure.high", parse_rule(threshold(priority="critical", position="console-2")))
    # A change evaluated with the old version (before the reload) keeps the old metadata.
    world.apply([world.change(1, active=False, version=1)])
    assert (world.alarm().priority, world.alarm().position) == ("high", "plant-north")
    [raised] = world.apply([world.change(2, active=True, version=2)])
    assert (raised.priority, raised.position, raised.site, raised.rule_version) == (
        Priority.CRITICAL,
        "console-2",
        "plant-north",
        2,
    )
    assert world.alarm().priority_rank == 0


def test_apply_is_idempotent_on_redelivery(with_rule: World) -> None:
    world = with_rule
    batch = [
        world.change(0, active=True),
        world.change(0, device="boiler-2", active=True),
        world.change(3, active=False),
    ]
    assert [c.sequence for c in world.apply(batch)] == [1, 1, 2]
    assert world.apply(batch) == []  # the same delivery again
    assert world.apply([world.change(2, active=True)]) == []  # older than what was applied
    alarm = world.alarm()
    assert [(h.sequence, h.action, h.state) for h in world.history(alarm.id)] == [
        (1, "activate", "unack_active"),
        (2, "clear", "unack_rtn"),
    ]
    assert alarm.activation_count == 1
    # A repeated condition (already active) records nothing, and later changes still apply.
    world.apply([world.change(5, device="boiler-2", active=True)])
    assert world.alarm(device="boiler-2").sequence == 1
    [again] = world.apply([world.change(6, active=True)])
    assert again.sequence == 3


def test_a_batch_is_one_transaction(with_rule: World, migrated_db: Database) -> None:
    world = with_rule

    def apply_then_fail() -> None:
        with migrated_db.session() as session:
            AlarmService(session).apply([world.change(0, active=True), world.change(0, device="boiler-2", active=True)])
            raise RuntimeError("the delivery failed after applying")

    with pytest.raises(RuntimeError):
        apply_then_fail()
    with migrated_db.session() as session:
        assert session.scalar(select(func.count()).select_from(Alarm)) == 0
        assert session.scalar(select(func.count()).select_from(AlarmHistory)) == 0


def test_unknown_rules_and_clears_of_nothing_are_skipped(with_rule: World) -> None:
    world = with_rule
    applied = world.apply(
        [
            world.change(0, rule="no.such.rule", active=True),
            world.change(0, device="boiler-2", active=False),  # never raised
            world.change(0, active=True),
            world.change(0, device="boiler-3", version=99, active=True),  # unknown version: the current one
        ]
    )
    assert [(c.device, c.rule_version) for c in applied] == [("boiler-1", 1), ("boiler-3", 1)]


def test_suppression_by_design_is_tracked_and_flagged(with_rule: World) -> None:
    world = with_rule
    [suppressed] = world.apply([world.change(0, suppressed=True)])
    assert (suppressed.action, suppressed.state, suppressed.suppressed) == ("suppress", AlarmState.NORMAL, True)
    [raised] = world.apply([world.change(0, active=True)])  # same time, the other track
    assert raised.suppressed
    assert raised.state is AlarmState.UNACK_ACTIVE
    [released] = world.apply([world.change(1, suppressed=False)])
    assert (released.action, released.suppressed, released.state) == ("unsuppress", False, AlarmState.UNACK_ACTIVE)


def test_latched_alarm_needs_a_reset(world: World) -> None:
    world.admin("create_rule", parse_rule(threshold(latched=True)))
    world.apply([world.change(0, active=True)])
    alarm_id = world.alarm().id
    world.run(Role.OPERATOR, "acknowledge", alarm_id)
    [cleared] = world.apply([world.change(1, active=False)])
    assert cleared.state is AlarmState.LATCHED
    with pytest.raises(Conflict, match="nothing to acknowledge"):
        world.run(Role.OPERATOR, "acknowledge", alarm_id)
    reset = world.run(Role.OPERATOR, "reset", alarm_id, "checked")
    assert reset.state == "normal"
    with pytest.raises(Conflict, match="nothing to reset"):
        world.run(Role.OPERATOR, "reset", alarm_id)


# --- operator actions


def test_operator_actions_are_recorded_with_actor_and_comment(with_rule: World, clock: Clock) -> None:
    world = with_rule
    world.apply([world.change(0, active=True)])
    alarm_id = world.alarm().id
    clock.advance(minutes=2)
    acked = world.run(Role.OPERATOR, "acknowledge", alarm_id, "seen, calling the field")
    assert (acked.state, acked.acknowledged_by, acked.acknowledged_at) == (
        "ack_active",
        f"user:operator-of-{world.tenant.name}",
        clock.now,
    )
    world.run(Role.OPERATOR, "comment", alarm_id, "valve V-12 stuck")
    history = world.history(alarm_id)
    assert [(h.sequence, h.action, h.actor != "", h.comment) for h in history] == [
        (1, "activate", False, ""),
        (2, "acknowledge", True, "seen, calling the field"),
        (3, "comment", True, "valve V-12 stuck"),
    ]
    detail = world.run(Role.VIEWER, "describe_alarm", world.alarm())
    assert [(c.sequence, c.text) for c in detail.comments] == [(2, "seen, calling the field"), (3, "valve V-12 stuck")]
    with world.db.session() as session:
        assert session.scalar(select(func.count()).select_from(AlarmComment)) == 2


def test_shelving_limit_and_expiry(with_rule: World, clock: Clock) -> None:
    world = with_rule
    world.apply([world.change(0, active=True)])
    alarm_id = world.alarm().id
    with pytest.raises(Invalid, match="at most 24 hours"):
        world.run(Role.OPERATOR, "shelve", alarm_id, dt.timedelta(hours=25), "noisy")
    with pytest.raises(Invalid, match="reason"):
        world.run(Role.OPERATOR, "shelve", alarm_id, dt.timedelta(hours=1), " ")
    shelved = world.run(Role.OPERATOR, "shelve", alarm_id, dt.timedelta(hours=1), "transmitter being recalibrated")
    assert (shelved.shelved, shelved.shelved_until) == (True, T0 + dt.timedelta(hours=1))
    [cleared] = world.apply([world.change(10, active=False)])
    assert cleared.shelved
    assert cleared.state is AlarmState.UNACK_RTN

    assert world.run(Role.ADMIN, "expire_shelves", T0 + dt.timedelta(minutes=59)) == []
    [expired] = world.run(Role.ADMIN, "expire_shelves", T0 + dt.timedelta(hours=1))
    assert (expired.action, expired.shelved, expired.actor) == ("unshelve", False, "")
    alarm = world.alarm()
    assert (alarm.shelved, alarm.shelved_until, alarm.state) == (False, None, "unack_rtn")
    assert world.history(alarm.id)[-1].comment.startswith("shelving expired at")
    assert world.run(Role.ADMIN, "expire_shelves", T0 + dt.timedelta(hours=2)) == []


def test_manual_unshelve_and_service_state(with_rule: World) -> None:
    world = with_rule
    world.apply([world.change(0, active=True)])
    alarm_id = world.alarm().id
    world.run(Role.OPERATOR, "shelve", alarm_id, dt.timedelta(minutes=30), "chattering")
    assert world.run(Role.OPERATOR, "unshelve", alarm_id).shelved is False
    with pytest.raises(Conflict, match="not shelved"):
        world.run(Role.OPERATOR, "unshelve", alarm_id)
    away = world.run(Role.ENGINEER, "remove_from_service", alarm_id, "transmitter replaced")
    assert away.out_of_service
    with pytest.raises(Conflict, match="out of service"):
        world.run(Role.OPERATOR, "shelve", alarm_id, dt.timedelta(minutes=5), "x")
    [flagged] = world.apply([world.change(1, active=False)])
    assert flagged.out_of_service
    assert world.run(Role.ENGINEER, "return_to_service", alarm_id).out_of_service is False


def test_bulk_acknowledge_is_all_or_nothing_on_unknown_ids(with_rule: World) -> None:
    world = with_rule
    world.apply([world.change(0, active=True), world.change(0, device="boiler-2", active=True)])
    one, two = world.alarm().id, world.alarm(device="boiler-2").id
    world.run(Role.OPERATOR, "acknowledge", two)
    with pytest.raises(NotFound):
        world.run(Role.OPERATOR, "acknowledge_many", [one, "f" * 32])
    assert world.alarm().state == "unack_active"  # nothing acknowledged
    acknowledged, skipped = world.run(Role.OPERATOR, "acknowledge_many", [one, two, one])
    assert (acknowledged, skipped) == ([one], [two])


@pytest.mark.parametrize(
    ("role", "call", "arguments"),
    [
        (Role.VIEWER, "acknowledge", ()),
        (Role.VIEWER, "shelve", (dt.timedelta(minutes=5), "x")),
        (Role.VIEWER, "comment", ("x",)),
        (Role.AUDITOR, "acknowledge", ()),
        (Role.OPERATOR, "remove_from_service", ()),
    ],
)
def test_roles_without_the_permission_are_refused(
    with_rule: World, role: Role, call: str, arguments: tuple[Any, ...]
) -> None:
    world = with_rule
    world.apply([world.change(0, active=True)])
    with pytest.raises(Forbidden):
        world.run(role, call, world.alarm().id, *arguments)
    assert world.alarm().sequence == 1


def test_operators_cannot_edit_rules(world: World) -> None:
    for call, arguments in (
        ("create_rule", (parse_rule(threshold()),)),
        ("import_rules", ([threshold()],)),
        ("delete_rule", ("boiler.pressure.high",)),
    ):
        with pytest.raises(Forbidden):
            world.run(Role.OPERATOR, call, *arguments)
    assert world.run(Role.VIEWER, "list_rules") == []


def test_disabling_a_rule_clears_its_active_alarms(with_rule: World) -> None:
    world = with_rule
    world.apply([world.change(0, active=True), world.change(0, device="boiler-2", active=True)])
    world.run(Role.OPERATOR, "acknowledge", world.alarm(device="boiler-2").id)
    world.admin("set_enabled", "boiler.pressure.high", False)
    assert (world.alarm().state, world.alarm(device="boiler-2").state) == ("unack_rtn", "normal")
    assert world.history(world.alarm().id)[-1].comment == "the rule was disabled"


# --- tenants


def test_tenants_never_see_each_other(
    with_rule: World, migrated_db: Database, tenant_b: TenantFixture, clock: Clock
) -> None:
    world = with_rule
    world.apply([world.change(0, active=True)])
    alarm_id = world.alarm().id
    other = World(migrated_db, tenant_b, clock)
    other.admin("create_rule", parse_rule(threshold()))  # the same key in another tenant
    with pytest.raises(NotFound):
        other.admin("get_alarm", alarm_id)
    with pytest.raises(NotFound):
        other.admin("acknowledge", alarm_id)
    with pytest.raises(NotFound):
        other.admin("acknowledge_many", [alarm_id])
    assert other.admin("list_alarms", AlarmFilter()) == ([], 0)
    assert other.admin("tenant_history") == ([], 0)
    assert list(other.admin("history_records", T0 - dt.timedelta(days=1), T0 + dt.timedelta(days=1))) == []
    rule_a = world.admin("get_rule", "boiler.pressure.high")
    with pytest.raises(NotFound):
        other.admin("get_rule", rule_a.id)
    assert other.admin("get_rule", "boiler.pressure.high").tenant_id == tenant_b.id
    # A change carries its tenant: B's rule raises B's alarm, A's stays as it was.
    other.apply([other.change(1, active=True)])
    assert world.alarm().sequence == 1
    assert other.alarm().tenant_id == tenant_b.id
    operator = Principal("user", "po", "po", world.tenant.id, Role.PLATFORM_OPERATOR)
    with migrated_db.session() as session:
        rows, total = AlarmService(session, operator).list_alarms(AlarmFilter())
        assert total == 2
        assert {r.tenant_id for r in rows} == {world.tenant.id, tenant_b.id}


# --- listing, history, metrics


def test_listing_filters_sorts_pages_and_groups(world: World) -> None:
    world.admin(
        "import_rules",
        [
            threshold("p.high"),
            threshold("p.low", priority="low", low=0.1, high=None),
            threshold("t.crit", priority="critical"),
        ],
    )
    world.sites["boiler-3"] = "plant-north"
    world.apply(
        [
            world.change(0, rule="p.high", device="boiler-1", active=True, message="pressure high on boiler-1"),
            world.change(1, rule="p.high", device="boiler-2", active=True),
            world.change(2, rule="p.low", device="boiler-1", active=True),
            world.change(3, rule="t.crit", device="boiler-3", active=True),
            world.change(4, rule="p.low", device="boiler-1", active=False),
        ]
    )

    def keys(where: AlarmFilter, sort: AlarmSort = AlarmSort.PRIORITY, **page: int) -> list[tuple[str, str]]:
        rows, _ = world.run(Role.VIEWER, "list_alarms", where, sort=sort, **page)
        return [(r.rule_key, r.device) for r in rows]

    assert keys(AlarmFilter()) == [
        ("t.crit", "boiler-3"),
        ("p.high", "boiler-2"),
        ("p.high", "boiler-1"),
        ("p.low", "boiler-1"),
    ]
    assert keys(AlarmFilter(states=(AlarmState.UNACK_RTN,))) == [("p.low", "boiler-1")]
    assert keys(AlarmFilter(priorities=(Priority.HIGH, Priority.CRITICAL)), AlarmSort.DEVICE) == [
        ("p.high", "boiler-1"),
        ("p.high", "boiler-2"),
        ("t.crit", "boiler-3"),
    ]
    assert keys(AlarmFilter(site="plant-north"), AlarmSort.OLDEST) == [  # by last change: p.low cleared last
        ("p.high", "boiler-1"),
        ("t.crit", "boiler-3"),
        ("p.low", "boiler-1"),
    ]
    assert keys(AlarmFilter(position="plant-south")) == [("p.high", "boiler-2")]
    assert keys(AlarmFilter(device="boiler-1", rule_key="p.high")) == [("p.high", "boiler-1")]
    assert keys(AlarmFilter(text="HIGH ON")) == [("p.high", "boiler-1")]
    assert keys(AlarmFilter(text="100%")) == []  # wildcards are taken literally
    rows, total = world.run(Role.VIEWER, "list_alarms", AlarmFilter(), sort=AlarmSort.RULE, offset=1, limit=2)
    assert total == 4
    assert [(r.rule_key, r.device) for r in rows] == [("p.high", "boiler-2"), ("p.low", "boiler-1")]

    groups = world.run(Role.VIEWER, "group_alarms", AlarmFilter())
    assert [(g.rule_key, g.alarms, g.active, g.unacknowledged, g.priority, g.devices) for g in groups] == [
        ("p.high", 2, 2, 2, Priority.HIGH, ["boiler-1", "boiler-2"]),
        ("p.low", 1, 0, 1, Priority.LOW, ["boiler-1"]),
        ("t.crit", 1, 1, 1, Priority.CRITICAL, ["boiler-3"]),
    ]


def test_tenant_history_range_and_paging(with_rule: World, clock: Clock) -> None:
    world = with_rule
    world.apply([world.change(0, active=True), world.change(10, active=False), world.change(20, active=True)])
    clock.now = T0 + dt.timedelta(minutes=30)
    world.run(Role.OPERATOR, "acknowledge", world.alarm().id)
    rows, total = world.run(Role.VIEWER, "tenant_history")
    assert total == 4
    assert [r.action for r in rows] == ["acknowledge", "activate", "clear", "activate"]
    rows, total = world.run(
        Role.VIEWER, "tenant_history", start=T0 + dt.timedelta(minutes=10), end=T0 + dt.timedelta(minutes=30)
    )
    assert total == 2
    assert [r.sequence for r in rows] == [3, 2]
    rows, total = world.run(Role.VIEWER, "tenant_history", offset=1, limit=2)
    assert total == 4
    assert [r.sequence for r in rows] == [3, 2]
    page, count = world.run(Role.VIEWER, "alarm_history", world.alarm().id, offset=2, limit=10)
    assert count == 4
    assert [r.sequence for r in page] == [3, 4]
    with pytest.raises(Invalid, match="after start"):
        world.run(Role.VIEWER, "tenant_history", start=T0, end=T0)


def test_history_records_and_metrics(with_rule: World) -> None:
    world = with_rule
    # Before the range: raised and left standing; in it: a chattering alarm on boiler-2.
    world.apply([world.change(-60 * 30, active=True)])
    for minute in range(0, 30, 10):
        world.apply(
            [
                world.change(minute, device="boiler-2", active=True),
                world.change(minute + 5, device="boiler-2", active=False),
            ]
        )
    start, end = T0, T0 + dt.timedelta(hours=1)
    records = list(world.run(Role.VIEWER, "history_records", start, end))
    standing = [r for r in records if r.device == "boiler-1"]
    assert [(r.action, r.state, r.at) for r in standing] == [
        ("activate", AlarmState.UNACK_ACTIVE, T0 - dt.timedelta(hours=30))
    ]
    assert sorted((r.at, r.action) for r in records if r.device == "boiler-2") == [
        (T0 + dt.timedelta(minutes=m), action)
        for m in range(0, 30, 5)
        for action in (("activate",) if m % 10 == 0 else ("clear",))
    ]
    report = world.run(Role.VIEWER, "metrics", start, end)
    assert report.annunciated == 3
    assert [(s.device, s.active_since) for s in report.stale] == [("boiler-1", T0 - dt.timedelta(hours=30))]
    assert [(f.device, f.count) for f in report.most_frequent] == [("boiler-2", 3)]
    with pytest.raises(Invalid, match="after start"):
        world.run(Role.VIEWER, "metrics", end, start)


def test_a_restart_keeps_every_state(with_rule: World, settings: Any, clock: Clock) -> None:
    """A new database connection (a new process) reads back states, acknowledgement and shelving."""
    world = with_rule
    world.apply([world.change(0, active=True), world.change(0, device="boiler-2", active=True)])
    world.run(Role.OPERATOR, "acknowledge", world.alarm().id, "on it")
    world.run(Role.OPERATOR, "shelve", world.alarm(device="boiler-2").id, dt.timedelta(hours=2), "known fault")
    before = {
        (a.device, a.state, a.shelved, a.shelved_until, a.acknowledged_by, a.sequence)
        for a in (world.alarm(), world.alarm(device="boiler-2"))
    }
    world.db.dispose()
    fresh = World(Database(settings.effective_database_url), world.tenant, clock)
    try:
        after = {
            (a.device, a.state, a.shelved, a.shelved_until, a.acknowledged_by, a.sequence)
            for a in (fresh.alarm(), fresh.alarm(device="boiler-2"))
        }
        assert after == before
        assert fresh.apply([fresh.change(0, active=True)]) == []  # redelivery after the restart: nothing new
        [cleared] = fresh.apply([fresh.change(1, active=False)])
        assert cleared.state is AlarmState.NORMAL
        assert cleared.sequence == 3
    finally:
        fresh.db.dispose()


def test_rule_versions_table_keeps_every_spec(with_rule: World) -> None:
    world = with_rule
    world.admin("update_rule", "boiler.pressure.high", parse_rule(threshold(high=1.9)))
    with world.db.session() as session:
        rule = session.scalar(select(Rule).where(Rule.tenant_id == world.tenant.id))
        assert rule is not None
        specs = session.scalars(
            select(RuleVersion.spec).where(RuleVersion.rule_id == rule.id).order_by(RuleVersion.version)
        )
        assert [spec["high"] for spec in specs] == [1.6, 1.9]
