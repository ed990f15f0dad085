"""Store queries on SQLite and PostgreSQL: every aggregate against values computed here, latest values, paging.

The same points are queried with windows open, partly closed and closed (rollups in use), for bucket
widths that rollups can answer (1 min, 5 min, 1 h, 1 d) and one they cannot (45 s), over ranges
that do not start or end on a bucket boundary.
"""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from iip.kernel.db import Database
from iip.kernel.settings import TelemetrySettings
from iip.telemetry.store import DAY, HOUR, MINUTE, Aggregate, TimeSeriesStore
from iip.telemetry.store.aggregates import Segment, Source, plan_segments
from iip.telemetry.store.timeseries import LATENESS_MS
from tests.telemetry.test_store import T0, Clock, batch, series_id

Points = list[tuple[int, float]]


def expected(points: Points, start: int, end: int, width: int) -> dict[int, dict[Aggregate, float]]:
    """Each aggregate per bucket, computed the plain way."""
    buckets: dict[int, Points] = defaultdict(list)
    for ts, value in sorted(points):
        if start <= ts < end:
            buckets[ts - ts % width].append((ts, value))
    result = {}
    for bucket, members in buckets.items():
        values = [v for _, v in members]
        result[bucket] = {
            Aggregate.COUNT: float(len(values)),
            Aggregate.SUM: sum(values),
            Aggregate.AVG: sum(values) / len(values),
            Aggregate.MIN: min(values),
            Aggregate.MAX: max(values),
            Aggregate.FIRST: members[0][1],
            Aggregate.LAST: members[-1][1],
        }
    return result


def answered(store: TimeSeriesStore, sid: int, start: int, end: int, width: int) -> dict[int, dict[Aggregate, float]]:
    return {
        b.start: {aggregate: b.aggregates.value(aggregate) for aggregate in Aggregate}
        for b in store.buckets(sid, start, end, width)
    }


def assert_same(got: dict[int, dict[Aggregate, float]], want: dict[int, dict[Aggregate, float]]) -> None:
    assert sorted(got) == sorted(want)
    for bucket, values in want.items():
        for aggregate, value in values.items():
            assert got[bucket][aggregate] == pytest.approx(value, rel=1e-9, abs=1e-9), (bucket - T0, aggregate)


@pytest.fixture
def points() -> Points:
    # Three hours and a bit of irregular points: gaps, bursts, repeated values, negatives.
    rng = random.Random(20260101)  # noqa: S311 - reproducible test data
    ts = T0 - 7 * MINUTE
    found: Points = []
    while ts < T0 + 3 * HOUR + 13 * MINUTE:
        ts += rng.choice((1_000, 7_000, 29_000, 61_000, 300_000))
        found.append((ts, round(rng.uniform(-50, 150), 3)))
    return found


@pytest.fixture
def store(migrated_db: Database) -> TimeSeriesStore:
    return TimeSeriesStore(migrated_db, TelemetrySettings(), clock=Clock(T0))


WIDTHS = (45_000, MINUTE, 5 * MINUTE, HOUR, DAY)
RANGES = (
    (T0 - 10 * MINUTE, T0 + 4 * HOUR),
    (T0 + 17 * MINUTE + 12_345, T0 + 2 * HOUR + 59 * MINUTE + 1),
    (T0 + HOUR, T0 + 2 * HOUR),
)


@pytest.mark.parametrize("closed_until", [None, T0 + 95 * MINUTE, T0 + 5 * HOUR])
def test_every_aggregate_matches_the_points(store: TimeSeriesStore, points: Points, closed_until: int | None) -> None:
    store.write(batch("t1", [("d", "m", ts, value) for ts, value in points[: len(points) // 2]]))
    if closed_until is not None:
        store.roll_up(now=closed_until + LATENESS_MS)
        assert store.state()[0] == closed_until
    # The second half arrives afterwards: partly late, partly still open.
    store.write(batch("t1", [("d", "m", ts, value) for ts, value in points[len(points) // 2 :]]))
    sid = series_id(store, "t1", "d", "m")
    for start, end in RANGES:
        for width in WIDTHS:
            assert_same(answered(store, sid, start, end, width), expected(points, start, end, width))


def test_late_points_show_in_rollup_answers(store: TimeSeriesStore, points: Points) -> None:
    store.write(batch("t1", [("d", "m", ts, value) for ts, value in points]))
    store.roll_up(now=T0 + 5 * HOUR + LATENESS_MS)
    sid = series_id(store, "t1", "d", "m")
    late = [(T0 + 30 * MINUTE + 500, 1_000.0), (T0 + HOUR + 1, -1_000.0), (T0 + 2 * HOUR + 3 * MINUTE, 0.5)]
    store.write(batch("t1", [("d", "m", ts, value) for ts, value in late]))
    everything = points + late
    for width in (MINUTE, HOUR, DAY):
        assert_same(answered(store, sid, T0, T0 + 4 * HOUR, width), expected(everything, T0, T0 + 4 * HOUR, width))


def test_empty_ranges_and_buckets(store: TimeSeriesStore) -> None:
    store.write(batch("t1", [("d", "m", T0 + 10 * MINUTE, 1.0), ("d", "m", T0 + 50 * MINUTE, 2.0)]))
    sid = series_id(store, "t1", "d", "m")
    assert [b.start for b in store.buckets(sid, T0, T0 + HOUR, 5 * MINUTE)] == [T0 + 10 * MINUTE, T0 + 50 * MINUTE]
    assert store.buckets(sid, T0 + 11 * MINUTE, T0 + 12 * MINUTE, MINUTE) == []
    assert store.buckets(sid, T0 + HOUR, T0, MINUTE) == []
    assert store.points(sid, T0 + HOUR, T0 + 2 * HOUR, 10) == []


def test_latest_across_many_series(store: TimeSeriesStore) -> None:
    # 300 series: some only closed, some only recent, some with points on both sides.
    expected_latest = {}
    for n in range(300):
        kind = n % 3
        stamps = {0: [T0 + n, T0 + 60_000 + n], 1: [T0 + 10 * MINUTE + n], 2: [T0 + n, T0 + 10 * MINUTE + 7 * n]}[kind]
        store.write(batch("t1", [(f"dev-{n // 10}", f"m-{n % 10}", ts, float(n * 1000 + ts % 1000)) for ts in stamps]))
        expected_latest[(f"dev-{n // 10}", f"m-{n % 10}")] = (max(stamps), float(n * 1000 + max(stamps) % 1000))
    store.roll_up(now=T0 + 5 * MINUTE + LATENESS_MS)
    refs = store.series("t1")
    latest = store.latest([ref.id for ref in refs])
    assert {(ref.device, ref.metric): (latest[ref.id].ts, latest[ref.id].value) for ref in refs} == expected_latest
    # Unknown ids are simply absent.
    assert store.latest([999_999]) == {}
    assert store.latest([]) == {}

    # A series whose first points arrive late, and a late point older than a series' newest.
    store.write(batch("t1", [("late", "m", T0 + 2 * MINUTE, 1.0), ("late", "m", T0 + MINUTE, 2.0)]))
    store.write(batch("t1", [("dev-0", "m-0", T0 + 30_000, -1.0)]))
    rows = store.latest_of("t1", ["late", "dev-0"])
    answer = {(device, metric): (ts, value) for _, device, metric, ts, value, _ in rows}
    assert len(answer) == 11  # dev-0's ten metrics and the late one
    assert answer[("late", "m")] == (T0 + 2 * MINUTE, 1.0)
    assert answer[("dev-0", "m-0")] == expected_latest[("dev-0", "m-0")]
    assert len(store.latest_of("t1")) == 301
    assert store.latest_of("t2") == []


def test_points_page_through_a_range(store: TimeSeriesStore) -> None:
    store.write(batch("t1", [("d", "m", T0 + i * 1000, float(i)) for i in range(250)]))
    store.roll_up(now=T0 + 2 * MINUTE + LATENESS_MS)
    sid = series_id(store, "t1", "d", "m")
    pages = list(store.iter_points(sid, T0 + 5_000, T0 + 245_000, page=40))
    assert [len(page) for page in pages] == [40, 40, 40, 40, 40, 40]
    assert [p.value for page in pages for p in page] == [float(i) for i in range(5, 245)]


def test_series_of_many_devices(store: TimeSeriesStore) -> None:
    store.write(batch("t1", [("a", "x", T0, 1.0), ("b", "x", T0, 1.0), ("b", "y", T0, 1.0), ("c", "x", T0, 1.0)]))
    store.write(batch("t2", [("a", "z", T0, 1.0)]))
    assert [(r.device, r.metric) for r in store.series_of_devices("t1", ["b", "a", "missing"])] == [
        ("a", "x"),
        ("b", "x"),
        ("b", "y"),
    ]


# --- planning, without a database --------------------------------------------------------------


def test_segments_use_rollups_only_where_complete_and_whole() -> None:
    start, end = T0 + 90_500, T0 + 3 * HOUR + 10 * MINUTE + 7
    closed = T0 + 2 * HOUR + 30 * MINUTE
    assert plan_segments(start, end, HOUR, closed, T0) == [
        Segment(Source.RAW, start, T0 + 2 * MINUTE),
        Segment(Source.MINUTE, T0 + 2 * MINUTE, T0 + HOUR),
        Segment(Source.HOUR, T0 + HOUR, T0 + 2 * HOUR),
        Segment(Source.MINUTE, T0 + 2 * HOUR, closed),
        Segment(Source.RAW, closed, end),
    ]
    assert plan_segments(start, end, 5 * MINUTE, closed, T0) == [
        Segment(Source.RAW, start, T0 + 2 * MINUTE),
        Segment(Source.MINUTE, T0 + 2 * MINUTE, closed),
        Segment(Source.RAW, closed, end),
    ]
    # Rollups kept only from later on, not at all, or a width they cannot answer.
    assert plan_segments(start, end, HOUR, closed, T0 + 100 * MINUTE) == [
        Segment(Source.RAW, start, T0 + 100 * MINUTE),
        Segment(Source.MINUTE, T0 + 100 * MINUTE, closed),
        Segment(Source.RAW, closed, end),
    ]
    assert plan_segments(start, end, HOUR, closed, None) == [Segment(Source.RAW, start, end)]
    assert plan_segments(start, end, 90_000, closed, T0) == [Segment(Source.RAW, start, end)]
    assert plan_segments(start, end, HOUR, None, None) == [Segment(Source.RAW, start, end)]
    assert plan_segments(end, start, HOUR, closed, T0) == []
