"""Alarm management metrics on hand-built histories with known answers, and properties on random ones."""

from __future__ import annotations

import datetime as dt
import json
import random
import tracemalloc
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iip.alarms.metrics import (
    FloodPeriod,
    HistoryRecord,
    MetricsReport,
    PositionRates,
    Verdict,
    compute,
    window_counts,
)
from iip.alarms.public import AlarmState, Priority
from iip.kernel.errors import Invalid

T0 = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def record(
    alarm: str,
    seconds: float,
    action: str = "activate",
    state: AlarmState = AlarmState.UNACK_ACTIVE,
    *,
    position: str = "unit-1",
    priority: Priority = Priority.LOW,
    device: str = "dev-1",
) -> HistoryRecord:
    return HistoryRecord(alarm, alarm, device, position, priority, action, state, at(seconds))


def position_of(report: MetricsReport, name: str) -> PositionRates:
    return next(rates for rates in report.positions if rates.position == name)


def verdict(report: MetricsReport, measure: str, position: str | None) -> Verdict:
    return next(c.verdict for c in report.targets if c.measure == measure and c.position == position)


# --------------------------------------------------------------------------- rates per position


def test_rates_per_position_over_windows_hours_and_days() -> None:
    records = [
        record("a", 0),
        record("a", 60, "clear", AlarmState.UNACK_RTN),
        record("b", 120),
        record("c", 500),
        record("a", 1500),  # the third window
        record("d", 30, "clear", AlarmState.NORMAL, position="unit-2"),  # a position without alarms
    ]
    report = compute(records, start=T0, end=T0 + HOUR)

    unit1 = position_of(report, "unit-1")
    assert unit1.annunciated == 4
    assert unit1.windows == 6
    assert unit1.per_window_average == pytest.approx(4 / 6)
    assert unit1.per_window_max == 3
    assert unit1.windows_over_threshold == 0
    assert unit1.per_hour_average == pytest.approx(4)
    assert unit1.per_day_average == pytest.approx(96)
    assert unit1.per_10_minutes_average == pytest.approx(4 / 6)
    unit2 = position_of(report, "unit-2")
    assert (unit2.annunciated, unit2.per_window_max, unit2.floods) == (0, 0, 0)
    assert report.annunciated == 4
    assert report.records == 6
    assert verdict(report, "alarms_per_hour", "unit-1") is Verdict.ACCEPTABLE
    assert verdict(report, "alarms_per_day", "unit-1") is Verdict.ACCEPTABLE
    assert verdict(report, "alarms_per_10_minutes", "unit-1") is Verdict.ACCEPTABLE


def test_rates_judged_against_isa_targets() -> None:
    # 8 an hour is above ~6 (acceptable) and within ~12 (manageable); 20 an hour is over.
    busy = [record(f"m{i}", 400 * i, position="busy") for i in range(8)]
    flooded = [record(f"f{i}", 170 * i, position="flooded") for i in range(20)]
    report = compute(busy + flooded, start=T0, end=T0 + HOUR)

    assert verdict(report, "alarms_per_hour", "busy") is Verdict.MANAGEABLE
    assert verdict(report, "alarms_per_hour", "flooded") is Verdict.OVER
    assert verdict(report, "alarms_per_day", "busy") is Verdict.MANAGEABLE  # 192 a day
    assert verdict(report, "alarms_per_day", "flooded") is Verdict.OVER  # 480 a day


def test_window_edges_are_half_open_and_the_last_window_may_be_short() -> None:
    records = [record("a", 0), record("b", 599.999), record("c", 600), record("d", 3600)]
    report = compute(records, start=T0, end=T0 + dt.timedelta(minutes=65))
    counts = window_counts(records, start=T0, end=T0 + dt.timedelta(minutes=65))

    assert counts == {"unit-1": [2, 1, 0, 0, 0, 0, 1]}
    rates = position_of(report, "unit-1")
    assert (rates.annunciated, rates.windows, rates.per_window_max) == (4, 7, 2)


def test_records_outside_the_range_do_not_count() -> None:
    records = [record("a", -1), record("a", 0), record("a", 3599), record("a", 3600), record("a", 7200)]
    report = compute(records, start=T0, end=T0 + HOUR)
    assert report.annunciated == 2
    assert report.records == 5


# --------------------------------------------------------------------------- floods


def test_flood_starts_with_the_first_alarm_and_ends_when_the_rate_falls_back() -> None:
    # 12 alarms 10 s apart: the windows starting at 0 s and 10 s hold 12 and 11 (> 10), the one at 20 s 10.
    burst = [record(f"a{i}", 10 * i, priority=Priority.HIGH) for i in range(12)]
    quiet = [record("late", 2400)]
    report = compute(burst + quiet, start=T0, end=T0 + HOUR)

    assert report.floods == (FloodPeriod("unit-1", at(0), at(610), count=12, peak=12),)
    rates = position_of(report, "unit-1")
    assert rates.floods == 1
    assert rates.windows_over_threshold == 1  # the first 10-minute window holds 12
    assert rates.percent_windows_over_threshold == pytest.approx(100 / 6)
    assert rates.percent_time_in_flood == pytest.approx(100 * 610 / 3600)
    assert verdict(report, "percent_time_in_flood", "unit-1") is Verdict.OVER


def test_overlapping_flood_windows_merge_into_one_flood() -> None:
    first = [record(f"a{i}", i) for i in range(11)]  # 0..10 s
    second = [record(f"b{i}", 300 + i) for i in range(11)]  # 300..310 s, within the first flood's window
    third = [record(f"c{i}", 2000 + i) for i in range(11)]  # a separate flood
    report = compute(first + second + third, start=T0, end=T0 + HOUR)

    assert [(f.start, f.end, f.count) for f in report.floods] == [
        # The window from 300 s holds 11, so the flood lasts until 900 s; the alarms at 0..10 s and
        # 300..310 s make windows of 22 (the peak) at the start.
        (at(0), at(900), 22),
        (at(2000), at(2600), 11),
    ]
    assert report.floods[0].peak == 22


def test_ten_alarms_in_a_window_are_no_flood_and_threshold_is_configurable() -> None:
    records = [record(f"a{i}", 30 * i) for i in range(10)]
    assert compute(records, start=T0, end=T0 + HOUR).floods == ()

    report = compute(records, start=T0, end=T0 + HOUR, flood_threshold=4, window=dt.timedelta(minutes=2))
    # Windows of 2 minutes hold 4 alarms (0, 30, 60, 90 s), never more than 4.
    assert report.floods == ()
    report = compute(records, start=T0, end=T0 + HOUR, flood_threshold=3, window=dt.timedelta(minutes=2))
    assert [(f.start, f.end, f.count, f.peak) for f in report.floods] == [(at(0), at(300), 10, 4)]


def test_floods_are_per_position_and_clipped_to_the_end() -> None:
    one = [record(f"a{i}", 3500 + i, position="one") for i in range(11)]
    two = [record(f"b{i}", 3500 + 2 * i, position="two") for i in range(6)]
    report = compute(one + two, start=T0, end=T0 + HOUR)
    assert report.floods == (FloodPeriod("one", at(3500), at(3600), 11, 11),)


# --------------------------------------------------------------------------- most frequent, chattering, stale


def test_most_frequent_alarms_with_their_share() -> None:
    records = [record("often", 100 * i) for i in range(6)]
    records += [record("sometimes", 50 + 300 * i, device="dev-2") for i in range(3)]
    records += [record("once", 700)]
    report = compute(records, start=T0, end=T0 + HOUR, top=2)

    assert [(a.rule_key, a.device, a.count, round(a.percent, 9)) for a in report.most_frequent] == [
        ("often", "dev-1", 6, 60),
        ("sometimes", "dev-2", 3, 30),
    ]
    assert report.top_percent == pytest.approx(90)
    assert verdict(report, "top_alarms_percent", None) is Verdict.OVER


def test_the_same_rule_on_two_devices_counts_as_two_alarms() -> None:
    records = [record("hi", 0, device="dev-1"), record("hi", 10, device="dev-2"), record("hi", 20, device="dev-1")]
    report = compute(records, start=T0, end=T0 + HOUR)
    assert [(a.device, a.count) for a in report.most_frequent] == [("dev-1", 2), ("dev-2", 1)]


def test_chattering_needs_three_activations_within_a_minute() -> None:
    records = []
    for alarm, times in {"chatters": (0, 20, 40, 45), "slow": (0, 30, 60), "twice": (0, 1)}.items():
        for seconds in times:
            records += [record(alarm, seconds), record(alarm, seconds + 1, "clear", AlarmState.UNACK_RTN)]
    report = compute(records, start=T0, end=T0 + HOUR)

    assert [(a.rule_key, a.activations, a.max_in_window, a.first_at) for a in report.chattering] == [
        ("chatters", 4, 4, at(40)),
    ]
    assert verdict(report, "chattering_alarms", None) is Verdict.OVER

    relaxed = compute(records, start=T0, end=T0 + HOUR, chatter_window=dt.timedelta(seconds=61))
    assert [a.rule_key for a in relaxed.chattering] == ["chatters", "slow"]
    pairs = compute(records, start=T0, end=T0 + HOUR, chatter_count=2)
    # Most activations in a window first, then most activations.
    assert [a.rule_key for a in pairs.chattering] == ["chatters", "slow", "twice"]


def test_stale_alarms_are_active_longer_than_the_limit_at_the_end() -> None:
    end = T0 + 30 * HOUR
    end_s = 30 * 3600
    records = [
        # Active 25 h, acknowledged: stale, even though it activated before the range.
        record("x", end_s - 25 * 3600),
        record("x", end_s - 24.5 * 3600, "acknowledge", AlarmState.ACK_ACTIVE),
        record("x", end_s + 60, "clear", AlarmState.NORMAL),  # after the end: ignored
        # Returned to normal: not stale.
        record("y", end_s - 29 * 3600),
        record("y", end_s - 28 * 3600, "clear", AlarmState.UNACK_RTN),
        # Active only 2 h.
        record("z", end_s - 2 * 3600),
        # Active again after a clear: counted from its last activation, 26 h, not acknowledged.
        record("w", 0, priority=Priority.CRITICAL),
        record("w", 100, "clear", AlarmState.UNACK_RTN),
        record("w", end_s - 26 * 3600, priority=Priority.CRITICAL),
        # Its activation is not in the history: active at least since its first record, 27 h.
        record("v", end_s - 27 * 3600, "acknowledge", AlarmState.ACK_ACTIVE),
    ]
    report = compute(records, start=end - HOUR, end=end)

    assert [(a.alarm_id, a.state, a.active_since, a.active_hours) for a in report.stale] == [
        ("v", AlarmState.ACK_ACTIVE, at(end_s - 27 * 3600), 27.0),
        ("w", AlarmState.UNACK_ACTIVE, at(end_s - 26 * 3600), 26.0),
        ("x", AlarmState.ACK_ACTIVE, at(end_s - 25 * 3600), 25.0),
    ]
    assert report.stale[1].priority is Priority.CRITICAL
    assert report.annunciated == 0  # every activation lies before the range
    assert verdict(report, "stale_alarms", None) is Verdict.ACCEPTABLE

    shorter = compute(records, start=end - HOUR, end=end, stale_after=dt.timedelta(hours=1))
    assert [a.alarm_id for a in shorter.stale] == ["v", "w", "x", "z"]


# --------------------------------------------------------------------------- priorities, report


def test_priority_distribution_against_the_recommendation() -> None:
    priorities = [Priority.LOW] * 14 + [Priority.MEDIUM] * 2 + [Priority.HIGH] * 2 + [Priority.CRITICAL] * 2
    records = [record(f"a{i}", 170 * i, priority=p) for i, p in enumerate(priorities)]
    report = compute(records, start=T0, end=T0 + HOUR)

    assert [(s.priority, s.count, round(s.percent, 9)) for s in report.priorities] == [
        (Priority.CRITICAL, 2, 10),
        (Priority.HIGH, 2, 10),
        (Priority.MEDIUM, 2, 10),
        (Priority.LOW, 14, 70),
    ]
    assert [(g.name, g.count, round(g.percent, 9), g.recommended_percent) for g in report.priority_groups] == [
        ("low", 14, 70, 80),
        ("medium_high", 4, 20, 15),
        ("critical", 2, 10, 5),
    ]
    assert verdict(report, "critical_percent", None) is Verdict.OVER
    assert verdict(report, "medium_high_percent", None) is Verdict.OVER


def test_an_empty_history_gives_an_empty_report() -> None:
    report = compute([], start=T0, end=T0 + HOUR)
    assert (report.annunciated, report.positions, report.floods, report.stale) == (0, (), (), ())
    assert all(share.percent == 0 for share in report.priorities)
    assert {c.verdict for c in report.targets} == {Verdict.ACCEPTABLE}


def test_report_is_json_ready() -> None:
    records = [record(f"a{i}", i) for i in range(12)] + [record("a0", 3, "acknowledge", AlarmState.ACK_ACTIVE)]
    data = compute(records, start=T0, end=T0 + 30 * HOUR).to_dict()
    text = json.dumps(data)
    assert json.loads(text) == data
    assert data["floods"][0]["start"] == "2026-01-05T00:00:00+00:00"
    assert data["floods"][0]["position"] == "unit-1"
    assert data["priorities"][3] == {"priority": "low", "count": 12, "percent": 100.0}
    assert data["stale"][0]["state"] == "ack_active"
    assert data["window_s"] == 600.0


def test_unsorted_input_gives_the_same_report() -> None:
    rng = random.Random(7)  # noqa: S311 - repeatable test data
    records = [
        record(f"r{rng.randrange(8)}", rng.uniform(0, 7200), position=rng.choice(["p1", "p2"])) for _ in range(400)
    ]
    records += [record(f"r{i}", 7000 + i, "acknowledge", AlarmState.ACK_ACTIVE) for i in range(8)]
    records += [record(f"old{i}", -3600 + 60 * i) for i in range(3)]  # before the range, stale at its end
    ordered = sorted(records, key=lambda r: r.at)
    shuffled = records[:]
    rng.shuffle(shuffled)
    kwargs = {"start": T0, "end": T0 + 2 * HOUR, "flood_threshold": 5, "stale_after": dt.timedelta(minutes=30)}

    first = compute(ordered, **kwargs)  # type: ignore[arg-type]
    assert first.floods
    assert first.chattering
    assert first.stale
    assert compute(shuffled, **kwargs) == first  # type: ignore[arg-type]
    assert compute(reversed(ordered), **kwargs) == first  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"start": dt.datetime(2026, 1, 5)}, "start has no time zone"),
        ({"end": T0}, "end must be after start"),
        ({"window": dt.timedelta(0)}, "window must be at least one microsecond"),
        ({"chatter_window": dt.timedelta(seconds=-1)}, "chatter_window must be at least one microsecond"),
        ({"chatter_count": 1}, "chatter_count must be at least 2"),
        ({"flood_threshold": -1}, "flood_threshold cannot be negative"),
        ({"top": -1}, "top cannot be negative"),
        ({"stale_after": dt.timedelta(hours=-1)}, "stale_after cannot be negative"),
    ],
)
def test_bad_arguments_are_refused(change: dict[str, object], message: str) -> None:
    kwargs: dict[str, object] = {"start": T0, "end": T0 + HOUR, **change}
    with pytest.raises(Invalid, match=message):
        compute([], **kwargs)  # type: ignore[arg-type]


def test_a_record_without_time_zone_is_refused() -> None:
    naive = HistoryRecord(
        "a-1", "a", "d", "p", Priority.LOW, "activate", AlarmState.UNACK_ACTIVE, dt.datetime(2026, 1, 5)
    )
    with pytest.raises(Invalid, match="history record of alarm 'a-1' has no time zone"):
        compute([naive], start=T0, end=T0 + HOUR)


def test_window_counts_refuses_too_many_windows() -> None:
    with pytest.raises(Invalid, match="use a longer window"):
        window_counts([], start=T0, end=T0 + 400 * 24 * HOUR, window=dt.timedelta(seconds=1))


def test_a_long_history_is_streamed_not_kept() -> None:
    def history(count: int) -> Iterator[HistoryRecord]:
        for i in range(count):
            action, state = ("activate", AlarmState.UNACK_ACTIVE) if i % 2 == 0 else ("clear", AlarmState.NORMAL)
            yield record(f"a{i % 50}", i * 0.5, action, state, position=f"p{i % 3}")

    tracemalloc.start()
    try:
        report = compute(history(100_000), start=T0, end=T0 + 24 * HOUR)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.records == 100_000
    assert report.annunciated == 50_000
    # Keeping the records would take over 10 MB; the activations take 400 kB.
    assert peak < 3_000_000


# --------------------------------------------------------------------------- properties


def reference_floods(times: list[int], window: int, threshold: int, end: int) -> list[tuple[int, int, int, int]]:
    """Floods straight from the definition, in whole seconds: merged windows [t, t + window) of > threshold."""
    times = sorted(times)
    floods: list[list[int]] = []
    for t in times:
        inside = sum(1 for u in times if t <= u < t + window)
        if inside <= threshold:
            continue
        if floods and t <= floods[-1][1]:
            floods[-1][1] = t + window
            floods[-1][3] = max(floods[-1][3], inside)
        else:
            floods.append([t, t + window, 0, inside])
    return [(s, min(e, end), sum(1 for u in times if s <= u < e), peak) for s, e, _, peak in floods]


histories = st.lists(
    st.tuples(st.integers(0, 7199), st.sampled_from(["p1", "p2"]), st.integers(0, 5), st.sampled_from(list(Priority))),
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(histories, st.integers(1, 6), st.sampled_from([60, 300, 600]))
def test_window_sums_rates_and_floods_agree(
    events: list[tuple[int, str, int, Priority]], threshold: int, window_s: int
) -> None:
    records = [record(f"r{alarm}", s, position=p, priority=prio) for s, p, alarm, prio in events]
    window = dt.timedelta(seconds=window_s)
    report = compute(records, start=T0, end=T0 + 2 * HOUR, flood_threshold=threshold, window=window)
    counts = window_counts(records, start=T0, end=T0 + 2 * HOUR, window=window)

    assert report.annunciated == len(events) == sum(sum(c) for c in counts.values())
    assert sum(share.count for share in report.priorities) == len(events)
    assert sum(alarm.count for alarm in report.most_frequent) <= len(events)
    for rates in report.positions:
        per_window = counts[rates.position]
        assert rates.annunciated == sum(per_window)
        assert rates.windows == len(per_window)
        assert rates.per_window_max == max(per_window)
        assert rates.windows_over_threshold == sum(1 for c in per_window if c > threshold)
        times = [s for s, p, _, _ in events if p == rates.position]
        expected = reference_floods(times, window_s, threshold, 7200)
        found = [
            (int((f.start - T0).total_seconds()), int((f.end - T0).total_seconds()), f.count, f.peak)
            for f in report.floods
            if f.position == rates.position
        ]
        assert found == expected
        assert rates.floods == len(expected)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 600), max_size=40), st.integers(2, 5), st.integers(1, 120), st.randoms())
def test_chattering_matches_its_definition_in_any_order(
    seconds: list[int], count: int, window_s: int, rng: random.Random
) -> None:
    records = [record("a", s) for s in seconds]
    rng.shuffle(records)
    report = compute(
        records, start=T0, end=T0 + HOUR, chatter_count=count, chatter_window=dt.timedelta(seconds=window_s)
    )

    times = sorted(seconds)
    most = max((sum(1 for u in times if t <= u < t + window_s) for t in times), default=0)
    if most >= count:
        (alarm,) = report.chattering
        assert (alarm.activations, alarm.max_in_window) == (len(times), most)
    else:
        assert report.chattering == ()
