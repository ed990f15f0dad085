"""Rule evaluation on the stream: every kind of rule, delays, order of arrival, scope, reloads, replay."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iip.alarms.evaluation import Preview, RuleEngine, fill_message, preview
from iip.alarms.public import AlarmEvent
from iip.alarms.rules import ConditionChange, RuleSpec, VersionedRule, parse_rule
from iip.devices.public import DevicePlacement
from iip.kernel.errors import Invalid
from iip.telemetry.public import DeviceStatus, Point, PointBatch, PointBatchBuilder, Quality

TENANT = "t-1"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
PLACEMENTS = [
    DevicePlacement("pump-1", "pump", "north", True),
    DevicePlacement("pump-2", "pump", "north", True),
    DevicePlacement("pump-3", "pump", "south", False),
    DevicePlacement("tank-1", "tank", "north", True),
]


def rule(
    kind: str, key: str = "r", *, device: str | None = "pump-1", profile: str | None = None, **fields: Any
) -> RuleSpec:
    scope = {"profile": profile} if profile is not None else {"device": device}
    return parse_rule({"kind": kind, "key": key, "title": key, "scope": scope, **fields})


def engine_with(*specs: RuleSpec, version: int = 1, placements: list[DevicePlacement] = PLACEMENTS) -> RuleEngine:
    engine = RuleEngine()
    engine.load(TENANT, [VersionedRule(TENANT, spec, version) for spec in specs], placements)
    return engine


def batch(*points: tuple[str, str, int, float] | tuple[str, str, int, float, int], tenant: str = TENANT) -> PointBatch:
    builder = PointBatchBuilder(tenant)
    for point in points:
        builder.add(*point)
    return builder.build()


def feed(engine: RuleEngine, metric: str, *samples: tuple[int, float], device: str = "pump-1") -> list[ConditionChange]:
    """Each sample (ms after T0, value) in its own batch; all changes."""
    changes: list[ConditionChange] = []
    for offset, value in samples:
        changes += engine.on_points(batch((device, metric, T0 + offset, value)))
    return changes


def states(changes: Iterable[ConditionChange]) -> list[tuple[int, bool | None]]:
    """(ms after T0, active) of condition changes."""
    return [(c.at_ms - T0, c.active) for c in changes if c.active is not None]


def at(offset_ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp((T0 + offset_ms) / 1000, tz=dt.UTC)


# --- threshold ----------------------------------------------------------------------------------


def test_threshold_raises_above_high_and_clears_only_past_the_deadband() -> None:
    engine = engine_with(rule("threshold", metric="pressure", high=10, deadband=1))
    changes = feed(
        engine, "pressure", (0, 9), (1000, 10), (2000, 10.5), (3000, 12), (4000, 9.01), (5000, 9.0), (6000, 8)
    )
    # 10 is not above 10; 9.01 is inside the deadband; 9 is back at the limit minus the deadband
    assert states(changes) == [(2000, True), (5000, False)]
    raised, cleared = changes
    assert (raised.tenant_id, raised.rule_key, raised.rule_version, raised.device) == (TENANT, "r", 1, "pump-1")
    assert raised.value == 10.5
    assert raised.message == "pressure is above the high limit 10 (10.5)"
    assert cleared.message == "pressure is back within limits (9)"
    assert raised.suppressed is None


def test_threshold_low_limit_and_a_jump_from_high_to_low() -> None:
    engine = engine_with(rule("threshold", metric="level", high=90, low=10, deadband=5))
    changes = feed(engine, "level", (0, 50), (1000, 8), (2000, 14), (3000, 16), (4000, 95), (5000, 5), (6000, 50))
    assert states(changes) == [(1000, True), (3000, False), (4000, True), (6000, False)]
    assert changes[0].message == "level is below the low limit 10 (8)"
    # from high straight to low: still active, no change in between
    assert [c.value for c in changes] == [8, 16, 95, 50]


def test_message_template_fills_known_placeholders_and_leaves_the_rest() -> None:
    engine = engine_with(
        rule(
            "threshold",
            metric="temp",
            high=80,
            message="{device}: {metric}={value:.1f} > {limit} {unknown} {value:zz} {",
        )
    )
    (change,) = feed(engine, "temp", (0, 85.25))
    assert change.message == "pump-1: temp=85.2 > 80 {unknown} 85.25 {"


def test_fill_message_never_raises() -> None:
    assert fill_message("{value} {limit} {0} {} {{x}}", "d", "m", None, None) == "unknown  {0} {} {{x}}"
    assert fill_message("{value:>8.2f}|", "d", "m", 3.14159, 1.0) == "    3.14|"


def test_bad_quality_and_non_finite_values_are_not_judged() -> None:
    engine = engine_with(rule("threshold", metric="p", high=10))
    changes = engine.on_points(
        batch(
            ("pump-1", "p", T0, 50.0, Quality.BAD),
            ("pump-1", "p", T0 + 1, math.nan),
            ("pump-1", "p", T0 + 2, math.inf),
        )
    )
    assert changes == []
    assert states(engine.on_points(batch(("pump-1", "p", T0 + 3, 50.0, Quality.UNCERTAIN)))) == [(3, True)]


# --- delays -------------------------------------------------------------------------------------


def test_on_delay_by_points_raises_at_the_time_the_condition_had_held_long_enough() -> None:
    engine = engine_with(rule("threshold", metric="p", high=10, on_delay_s=2))
    assert feed(engine, "p", (0, 11), (1000, 12), (1999, 13)) == []
    assert states(feed(engine, "p", (2500, 12))) == [(2000, True)]


def test_on_delay_is_cancelled_by_a_return_to_normal() -> None:
    engine = engine_with(rule("threshold", metric="p", high=10, on_delay_s=2))
    assert feed(engine, "p", (0, 11), (1000, 9), (2500, 11), (4000, 11)) == []
    assert engine.tick(T0 + 4499) == []
    assert states(engine.tick(T0 + 4500)) == [(4500, True)]


def test_on_delay_by_tick() -> None:
    engine = engine_with(rule("threshold", metric="p", high=10, on_delay_s=2))
    assert feed(engine, "p", (0, 11)) == []
    assert engine.tick(T0 + 1999) == []
    assert states(engine.tick(T0 + 2000)) == [(2000, True)]
    assert engine.tick(T0 + 3000) == []


def test_off_delay_by_points_and_by_tick() -> None:
    engine = engine_with(rule("threshold", metric="p", high=10, off_delay_s=5))
    assert states(feed(engine, "p", (0, 11))) == [(0, True)]
    assert feed(engine, "p", (1000, 9), (2000, 11), (3000, 9)) == []  # back above: the off delay starts over
    assert states(feed(engine, "p", (8000, 9))) == [(8000, False)]
    assert states(feed(engine, "p", (9000, 11))) == [(9000, True)]
    assert feed(engine, "p", (10_000, 9)) == []
    assert engine.tick(T0 + 14_999) == []
    assert states(engine.tick(T0 + 15_000)) == [(15_000, False)]


# --- order of arrival ---------------------------------------------------------------------------


def test_older_and_repeated_points_do_not_flip_a_condition_back() -> None:
    engine = engine_with(rule("threshold", metric="p", high=10))
    assert states(feed(engine, "p", (100, 11))) == [(100, True)]
    assert feed(engine, "p", (50, 5), (100, 5)) == []  # late, then a redelivery of t=100 with another value
    assert states(feed(engine, "p", (101, 5))) == [(101, False)]
    # within one batch too
    changes = engine.on_points(batch(("pump-1", "p", T0 + 200, 12.0), ("pump-1", "p", T0 + 150, 1.0)))
    assert states(changes) == [(200, True)]


def test_changes_of_a_batch_come_in_time_order() -> None:
    engine = engine_with(rule("threshold", "a", metric="p", high=10), rule("threshold", "b", metric="q", high=10))
    changes = engine.on_points(batch(("pump-1", "p", T0 + 300, 11.0), ("pump-1", "q", T0 + 100, 11.0)))
    assert [(c.rule_key, c.at_ms - T0) for c in changes] == [("b", 100), ("a", 300)]


# --- deviation, rate of change, digital state, rolling average ------------------------------


def test_deviation_from_a_setpoint_with_deadband() -> None:
    engine = engine_with(rule("deviation", metric="temp", setpoint=100, limit=5, deadband=1))
    changes = feed(engine, "temp", (0, 104), (1000, 94), (2000, 95.5), (3000, 96))
    assert states(changes) == [(1000, True), (3000, False)]
    assert changes[0].message == "temp deviates from 100 by more than 5 (94)"


def test_deviation_from_another_device_follows_both_series() -> None:
    engine = engine_with(rule("deviation", metric="flow", reference="tank-1/flow", limit=2))
    assert engine.on_points(batch(("pump-1", "flow", T0, 10.0))) == []  # reference unknown: not active
    assert engine.on_points(batch(("tank-1", "flow", T0 + 10, 9.0))) == []
    changes = engine.on_points(batch(("tank-1", "flow", T0 + 20, 13.0)))
    assert states(changes) == [(20, True)]
    assert changes[0].device == "pump-1"
    assert changes[0].message == "flow deviates from tank-1/flow by more than 2 (10)"
    assert states(engine.on_points(batch(("pump-1", "flow", T0 + 30, 12.0)))) == [(30, False)]


def test_deviation_reference_on_the_same_device() -> None:
    engine = engine_with(rule("deviation", metric="speed", reference="speed_sp", limit=50))
    changes = engine.on_points(batch(("pump-1", "speed_sp", T0, 1500.0), ("pump-1", "speed", T0, 1400.0)))
    assert states(changes) == [(0, True)]


def test_rate_of_change_over_the_window_and_direction() -> None:
    rising = engine_with(rule("rate_of_change", metric="t", limit=1, direction="rising", window_s=10))
    # 15 units in 10 s: 1.5/s
    changes = feed(rising, "t", (0, 0), (5000, 5), (10_000, 15))
    assert states(changes) == [(10_000, True)]
    assert "changes at 1.5/s, faster than 1/s" in changes[0].message
    # 20 s later the window holds only flat points
    assert states(feed(rising, "t", (20_000, 15), (25_000, 15))) == [(20_000, False)]
    assert feed(rising, "t", (30_000, 0), (35_000, -30)) == []  # falling is not watched

    both = engine_with(rule("rate_of_change", metric="t", limit=1, window_s=10))
    assert states(feed(both, "t", (0, 100), (10_000, 80))) == [(10_000, True)]


def test_rate_of_change_deadband_holds_while_the_rate_stays_near_the_limit() -> None:
    engine = engine_with(rule("rate_of_change", metric="t", limit=1, deadband=0.5, window_s=1))
    changes = feed(engine, "t", (0, 0), (1000, 2), (2000, 2.6), (3000, 3.0))
    assert states(changes) == [(1000, True), (3000, False)]


def test_digital_state_alarm_states_and_normal_states() -> None:
    alarm_states = engine_with(rule("digital_state", metric="mode", alarm_states=[3, 4]))
    assert states(feed(alarm_states, "mode", (0, 1), (1000, 3), (2000, 4), (3000, 2))) == [(1000, True), (3000, False)]
    normal_states = engine_with(rule("digital_state", metric="mode", normal_states=[0, 1]))
    changes = feed(normal_states, "mode", (0, 1), (1000, 7), (2000, 0))
    assert states(changes) == [(1000, True), (2000, False)]
    assert changes[0].message == "mode is in alarm state 7"


def test_rolling_average_window_and_min_points() -> None:
    engine = engine_with(rule("rolling_average", metric="so2", window_s=10, high=100, min_points=3, deadband=5))
    # two points above: too few to judge
    assert feed(engine, "so2", (0, 150), (1000, 150)) == []
    changes = feed(engine, "so2", (2000, 30))  # (150 + 150 + 30) / 3 = 110
    assert states(changes) == [(2000, True)]
    assert changes[0].value == pytest.approx(110)
    assert feed(engine, "so2", (3000, 60)) == []  # 97.5: inside the deadband
    assert states(feed(engine, "so2", (4000, 40))) == [(4000, False)]  # 86
    # 10 s later the early points left the window: 3 points of 120
    assert states(feed(engine, "so2", (14_000, 120), (14_500, 120), (15_000, 120))) == [(15_000, True)]


def test_rolling_average_keeps_exact_over_many_points() -> None:
    engine = engine_with(rule("rolling_average", metric="x", window_s=1, high=1.0))
    changes: list[ConditionChange] = []
    for i in range(20_000):  # values that do not add up exactly in binary
        changes += feed(engine, "x", (i * 100, 0.1 + (i % 7) * 0.01))
    assert changes == []
    changes = feed(engine, "x", (2_000_000, 10.0))  # window: 9 points of the cycle and this one
    assert changes[0].value == pytest.approx((sum(0.1 + ((19_991 + k) % 7) * 0.01 for k in range(9)) + 10) / 10)


# --- expressions and suppression ---------------------------------------------------------------


def test_expression_rule_is_judged_once_per_timestamp() -> None:
    engine = engine_with(rule("expression", expression="pressure > 5 and temperature > 80"))
    changes = engine.on_points(batch(("pump-1", "pressure", T0, 6.0), ("pump-1", "temperature", T0, 85.0)))
    assert states(changes) == [(0, True)]
    # both fall at t=1000 in one batch, pressure first: no moment with new pressure and old temperature is judged
    changes = engine.on_points(
        batch(("pump-1", "pressure", T0 + 1000, 1.0), ("pump-1", "temperature", T0 + 1000, 90.0))
    )
    assert states(changes) == [(1000, False)]
    assert changes[0].message == "pressure > 5 and temperature > 80 no longer holds"


def test_expression_sees_each_timestamp_of_a_backfilled_batch() -> None:
    engine = engine_with(rule("expression", expression="a > b"))
    changes = engine.on_points(
        batch(
            ("pump-1", "a", T0, 1.0),
            ("pump-1", "b", T0, 2.0),
            ("pump-1", "a", T0 + 1000, 3.0),
            ("pump-1", "b", T0 + 1000, 2.0),
            ("pump-1", "a", T0 + 2000, 1.0),
            ("pump-1", "b", T0 + 2000, 2.0),
        )
    )
    assert states(changes) == [(1000, True), (2000, False)]


def test_expression_reads_other_devices_and_unknown_is_not_active() -> None:
    engine = engine_with(rule("expression", profile="pump", expression='level / "tank-1/level" > 2'))
    assert engine.on_points(batch(("pump-1", "level", T0, 10.0))) == []  # tank unknown
    changes = engine.on_points(batch(("tank-1", "level", T0 + 5, 4.0)))
    assert [(c.device, c.active) for c in changes] == [("pump-1", True)]
    assert states(engine.on_points(batch(("tank-1", "level", T0 + 10, 0.0)))) == [(10, False)]  # 10 / 0: unknown


def test_suppression_by_expression_comes_before_the_alarm_it_hides() -> None:
    engine = engine_with(rule("threshold", metric="flow", low=5, suppress_when="running == 0"))
    assert engine.on_points(batch(("pump-1", "running", T0, 1.0), ("pump-1", "flow", T0, 20.0))) == []
    # the pump stops: flow falls in the same instant, in whatever order the points come
    changes = engine.on_points(batch(("pump-1", "flow", T0 + 1000, 0.0), ("pump-1", "running", T0 + 1000, 0.0)))
    assert [(c.suppressed, c.active) for c in changes] == [(True, None), (None, True)]
    assert changes[0].message == "suppressed while running == 0"
    changes = engine.on_points(batch(("pump-1", "running", T0 + 2000, 1.0)))
    assert [(c.at_ms - T0, c.suppressed, c.active) for c in changes] == [(2000, False, None)]
    assert engine.on_points(batch(("pump-1", "running", T0 + 3000, 1.0))) == []


# --- no data, device status ---------------------------------------------------------------------


def test_no_data_for_a_metric_by_tick_and_back_with_a_point() -> None:
    engine = engine_with(rule("no_data", metric="p", timeout_s=60))
    assert feed(engine, "p", (0, 1.0)) == []
    assert feed(engine, "q", (30_000, 1.0)) == []  # another metric does not count
    assert engine.tick(T0 + 59_999) == []
    changes = engine.tick(T0 + 65_000)
    assert states(changes) == [(60_000, True)]
    assert changes[0].message == "no data from p of pump-1 for 60 s"
    assert engine.tick(T0 + 70_000) == []
    changes = feed_quality(engine, "p", 70_000, 1.0, Quality.BAD)
    assert states(changes) == [(70_000, False)]  # any point is a sign of life


def feed_quality(engine: RuleEngine, metric: str, offset: int, value: float, quality: int) -> list[ConditionChange]:
    return engine.on_points(batch(("pump-1", metric, T0 + offset, value, quality)))


def test_no_data_clock_starts_at_the_first_tick_when_nothing_came() -> None:
    engine = engine_with(rule("no_data", timeout_s=10))
    assert engine.tick(T0) == []
    assert engine.tick(T0 + 9_000) == []
    assert states(engine.tick(T0 + 10_000)) == [(10_000, True)]
    # any metric of the device counts without a metric named
    assert states(feed(engine, "whatever", (11_000, 1.0))) == [(11_000, False)]


def test_offline_status_raises_no_data_and_data_or_online_clears_it() -> None:
    engine = engine_with(rule("no_data", profile="pump", timeout_s=300))
    changes = engine.on_status(DeviceStatus(tenant_id=TENANT, device="pump-2", online=False, at=at(1000)))
    assert [(c.device, c.active, c.at_ms - T0) for c in changes] == [("pump-2", True, 1000)]
    assert changes[0].message == "pump-2 is offline"
    changes = engine.on_status(DeviceStatus(tenant_id=TENANT, device="pump-2", online=True, at=at(5000)))
    assert [(c.device, c.active) for c in changes] == [("pump-2", False)]
    engine.on_status(DeviceStatus(tenant_id=TENANT, device="pump-2", online=False, at=at(6000)))
    # an older status is ignored
    assert engine.on_status(DeviceStatus(tenant_id=TENANT, device="pump-2", online=True, at=at(5500))) == []
    # data newer than the offline report: the device is back
    assert states(feed(engine, "p", (7000, 1.0), device="pump-2")) == [(7000, False)]


def test_no_data_rule_without_offline_ignores_status() -> None:
    engine = engine_with(rule("no_data", timeout_s=300, offline=False))
    assert engine.on_status(DeviceStatus(tenant_id=TENANT, device="pump-1", online=False, at=at(0))) == []


# --- events -------------------------------------------------------------------------------------


def event(
    kind: str, *, subject: str = "pump-1", active: bool = True, severity: float = 5.0, offset: int = 0
) -> AlarmEvent:
    return AlarmEvent(
        tenant_id=TENANT, source="security", kind=kind, subject=subject, active=active, severity=severity, at=at(offset)
    )


def test_event_rule_exact_kind_and_clear_event() -> None:
    engine = engine_with(rule("event", source="security", event_kind="ics.new_talker"))
    assert engine.on_event(event("ics.port_scan")) == []
    assert engine.on_event(event("ics.new_talker", subject="pump-2")) == []  # out of scope
    changes = engine.on_event(event("ics.new_talker", offset=100))
    assert states(changes) == [(100, True)]
    assert changes[0].value == 5.0
    assert changes[0].message == "security ics.new_talker on pump-1"
    assert engine.on_event(event("ics.new_talker", active=False, offset=50)) == []  # older than the raise
    assert states(engine.on_event(event("ics.new_talker", active=False, offset=200))) == [(200, False)]


def test_event_rule_prefix_severity_and_hold() -> None:
    engine = engine_with(
        rule("event", profile="pump", source="security", event_kind="ics.*", min_severity=7, hold_s=60)
    )
    assert engine.on_event(event("ics.port_scan", severity=6.9)) == []
    assert engine.on_event(event("net.scan", severity=9)) == []
    changes = engine.on_event(event("ics.port_scan", severity=9, offset=1000, subject="pump-2"))
    assert [(c.device, c.active) for c in changes] == [("pump-2", True)]
    engine.on_event(event("ics.new_talker", severity=8, offset=30_000, subject="pump-2"))
    assert engine.tick(T0 + 61_000) == []  # the port scan is held out, the new talker still holds
    assert states(engine.tick(T0 + 90_000)) == [(90_000, False)]
    assert engine.tick(T0 + 200_000) == []


def test_event_message_comes_from_the_event() -> None:
    engine = engine_with(rule("event", source="analytics", event_kind="model.limit_exceeded"))
    changes = engine.on_event(
        AlarmEvent(
            tenant_id=TENANT,
            source="analytics",
            kind="model.limit_exceeded",
            subject="pump-1",
            severity=12.5,
            message="T2 above its 99% limit",
            at=at(0),
        )
    )
    assert changes[0].message == "T2 above its 99% limit"


# --- scope, loading, priming --------------------------------------------------------------------


def test_profile_scope_covers_enabled_devices_of_the_profile_only() -> None:
    engine = engine_with(rule("threshold", profile="pump", metric="p", high=10))
    changes = engine.on_points(
        batch(
            ("pump-1", "p", T0, 11.0), ("pump-2", "p", T0, 11.0), ("pump-3", "p", T0, 11.0), ("tank-1", "p", T0, 11.0)
        )
    )
    assert sorted(c.device for c in changes) == ["pump-1", "pump-2"]  # pump-3 is disabled, tank-1 another profile
    assert engine.instance_count() == 2


def test_device_scope_covers_that_device_even_before_it_is_registered() -> None:
    engine = engine_with(rule("threshold", device="new-1", metric="p", high=10))
    changes = engine.on_points(batch(("new-1", "p", T0, 11.0), ("pump-1", "p", T0, 11.0)))
    assert [c.device for c in changes] == ["new-1"]
    disabled = engine_with(rule("threshold", device="pump-3", metric="p", high=10))
    assert disabled.instance_count() == 0


def test_disabled_rules_and_other_tenants_are_not_evaluated() -> None:
    engine = engine_with(rule("threshold", metric="p", high=10, enabled=False))
    assert engine.rule_count() == 0
    assert engine.on_points(batch(("pump-1", "p", T0, 11.0))) == []
    engine = engine_with(rule("threshold", metric="p", high=10))
    assert engine.rule_count() == 1
    assert engine.on_points(batch(("pump-1", "p", T0, 11.0), tenant="t-2")) == []


def test_load_keeps_the_state_of_unchanged_rules_and_drops_removed_ones() -> None:
    keep = rule("rolling_average", "keep", metric="x", window_s=60, high=10, min_points=2)
    drop = rule("threshold", "drop", metric="x", high=5)
    engine = RuleEngine()
    engine.load(TENANT, [VersionedRule(TENANT, keep, 1), VersionedRule(TENANT, drop, 1)], PLACEMENTS)
    changes = feed(engine, "x", (0, 15))
    assert [c.rule_key for c in changes] == ["drop"]
    engine.load(TENANT, [VersionedRule(TENANT, keep, 1)], PLACEMENTS)
    assert engine.rule_count() == 1
    # the window kept its first point: (15 + 15) / 2 = 15 with two points, and the dropped rule is silent
    changes = feed(engine, "x", (1000, 15))
    assert [(c.rule_key, c.active) for c in changes] == [("keep", True)]


def test_load_of_a_new_version_starts_afresh_but_keeps_an_active_alarm() -> None:
    engine = engine_with(rule("threshold", metric="p", high=10), version=1)
    assert states(feed(engine, "p", (0, 11))) == [(0, True)]
    engine.load(TENANT, [VersionedRule(TENANT, rule("threshold", metric="p", high=20), 2)], PLACEMENTS)
    assert feed(engine, "p", (1000, 25)) == []  # still active: not raised again
    changes = feed(engine, "p", (2000, 15))
    assert [(c.rule_version, c.active) for c in changes] == [(2, False)]


def test_load_ends_a_suppression_the_new_version_no_longer_has() -> None:
    engine = engine_with(rule("threshold", metric="p", high=10, suppress_when="running == 0"))
    assert [c.suppressed for c in feed(engine, "running", (0, 0))] == [True]
    engine.load(TENANT, [VersionedRule(TENANT, rule("threshold", metric="p", high=10), 2)], PLACEMENTS)
    changes = engine.tick(T0 + 1000)
    assert [(c.rule_version, c.suppressed, c.at_ms - T0) for c in changes] == [(2, False, 0)]


def test_load_refuses_what_it_cannot_evaluate_and_changes_nothing() -> None:
    engine = engine_with(rule("threshold", metric="p", high=10))
    bad = rule("expression", "bad", expression="p > ")
    with pytest.raises(Invalid, match=r"rule 'bad', expression: syntax error at the end"):
        engine.load(TENANT, [VersionedRule(TENANT, bad, 1)], PLACEMENTS)
    with pytest.raises(Invalid, match=r"rule 'r', suppress_when: unknown function 'nope'"):
        engine.load(
            TENANT, [VersionedRule(TENANT, rule("threshold", metric="p", high=1, suppress_when="nope(1)"), 2)], []
        )
    with pytest.raises(Invalid, match="belongs to another tenant"):
        engine.load(TENANT, [VersionedRule("t-2", rule("threshold", metric="p", high=1), 1)], [])
    with pytest.raises(Invalid, match="given twice"):
        engine.load(TENANT, [VersionedRule(TENANT, rule("threshold", metric="p", high=1), 1)] * 2, [])
    assert engine.rule_count() == 1
    assert states(feed(engine, "p", (0, 11))) == [(0, True)]


def test_prime_does_not_raise_again_and_clears_when_found_clear() -> None:
    engine = engine_with(
        rule("threshold", "hi", metric="p", high=10, deadband=2),
        rule("expression", "ex", expression="q > 1"),
        rule("event", "ev", source="security", hold_s=30),
        rule("no_data", "nd", timeout_s=600),
    )
    engine.prime(TENANT, [("hi", "pump-1"), ("ex", "pump-1"), ("ev", "pump-1"), ("nd", "pump-1"), ("gone", "pump-1")])
    # data came: no longer without data; above, then inside the deadband: still active
    assert [(c.rule_key, c.active) for c in feed(engine, "p", (0, 12), (1000, 9))] == [("nd", False)]
    assert engine.on_points(batch(("pump-1", "q", T0 + 1000, 5.0))) == []
    changes = engine.on_points(batch(("pump-1", "p", T0 + 2000, 7.0), ("pump-1", "q", T0 + 2000, 0.0)))
    assert sorted((c.rule_key, c.active) for c in changes) == [("ex", False), ("hi", False)]
    # the primed event clears after its hold, counted from the first tick
    assert engine.tick(T0 + 10_000) == []
    assert [(c.rule_key, c.active, c.at_ms - T0) for c in engine.tick(T0 + 40_000)] == [("ev", False, 40_000)]


def test_prime_with_unknown_tenant_is_harmless() -> None:
    RuleEngine().prime("nobody", [("r", "d")])


# --- preview ------------------------------------------------------------------------------------


def test_preview_counts_activations_and_time_active() -> None:
    spec = rule("threshold", profile="pump", metric="p", high=10, on_delay_s=1)
    points = [Point("pump-9", "p", T0 + i * 1000, v) for i, v in enumerate([5, 11, 12, 13, 5, 11, 5, 12, 12, 12])]
    result = preview(spec, "pump-9", reversed(points))
    assert isinstance(result, Preview)
    # 11 at 1 s held to 2 s (active at 2 s), clear at 4 s; 11 at 5 s gone at 6 s: too short; 12 from 7 s
    assert states(result.changes) == [(2000, True), (4000, False), (8000, True)]
    assert result.activations == 2
    assert result.active_ms == 2000 + 1000  # the last activation runs to the last point (9 s)
    assert preview(spec, "pump-9", points, until_ms=T0 + 20_000).active_ms == 2000 + 12_000


def test_preview_reads_other_series_and_times_out() -> None:
    spec = rule("expression", expression='level > "tank-1/level"')
    requested: list[tuple[str, str]] = []

    def other(device: str, metric: str) -> list[Point]:
        requested.append((device, metric))
        return [Point(device, metric, T0, 5.0)]

    result = preview(spec, "pump-1", [Point("pump-1", "level", T0 + 1000, 7.0)], other)
    assert requested == [("tank-1", "level")]
    assert result.activations == 1
    no_data = preview(rule("no_data", timeout_s=10), "pump-1", [Point("pump-1", "x", T0, 1.0)], until_ms=T0 + 60_000)
    assert (no_data.activations, no_data.active_ms) == (1, 50_000)
    assert preview(spec, "pump-1", []) == Preview(0, 0, [])


# --- properties ---------------------------------------------------------------------------------

SAMPLES = st.lists(
    st.tuples(st.integers(-3000, 5000), st.floats(-50, 150, allow_nan=False), st.booleans()), min_size=1, max_size=60
)


@settings(max_examples=300, deadline=None)
@given(
    samples=SAMPLES,
    high=st.floats(40, 100),
    band=st.floats(0, 30),
    low=st.none() | st.floats(-40, 30),
    on_delay=st.sampled_from((0.0, 0.5, 2.0)),
    off_delay=st.sampled_from((0.0, 1.0, 3.0)),
    primed=st.booleans(),
)
def test_threshold_changes_always_alternate(
    samples: list[tuple[int, float, bool]],
    high: float,
    band: float,
    low: float | None,
    on_delay: float,
    off_delay: float,
    primed: bool,
) -> None:
    """Whatever the values, their order and the ticks, a change never repeats the previous `active`."""
    spec = rule("threshold", metric="p", high=high, low=low, deadband=band, on_delay_s=on_delay, off_delay_s=off_delay)
    engine = engine_with(spec)
    if primed:
        engine.prime(TENANT, [("r", "pump-1")])
    changes: list[ConditionChange] = []
    clock = T0
    for step, value, tick in samples:
        clock += step  # steps back in time too: late points
        if tick:
            changes += engine.tick(clock)
        changes += engine.on_points(batch(("pump-1", "p", clock, value)))
    changes += engine.tick(clock + 10_000)
    actives = [c.active for c in changes]
    expected_first = not primed
    for previous, current in zip([not expected_first, *actives], actives, strict=False):
        assert current is not previous
    times = [c.at_ms for c in changes]
    assert times == sorted(times)
