"""Telemetry queries at 10,000 series x 1,000 points (a day, one point every 86.4 s a series).

- latest value of every series of the tenant (`TimeSeriesStore.latest_of`, what
  `GET /api/telemetry/latest` answers from), target <= 50 ms; baseline: the plain query a points
  table allows, the newest row per series by `GROUP BY series_id` over the points;
- one series' 1-hour buckets over the day (`TimeSeriesStore.buckets`, all seven aggregates), target
  <= 20 ms; baseline: the same aggregates by `GROUP BY` over the series' raw points (what the store
  does without rollups).

The points are written through the store and the day's windows closed (rollups, series-first
table) before measuring: the state a day of data is in while the platform runs. Medians and 95th
percentiles over repetitions; the ratio compares medians.

    .venv/bin/python bench/telemetry_queries.py [--series 10000] [--points 1000] [--no-record]

Runs on SQLite, and on PostgreSQL when IIP_BENCH_POSTGRES_URL is set.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, benchmark_databases, report
from iip.kernel.db import Database
from iip.kernel.settings import TelemetrySettings
from iip.migrations.runner import upgrade
from iip.telemetry.public import PointBatchBuilder
from iip.telemetry.store import DAY, HOUR, MINUTE, TimeSeriesStore

METRICS = 10
LATEST_TARGET_MS = 50.0
BUCKETS_TARGET_MS = 20.0

LATEST_BASELINE = (
    "SELECT p.series_id, p.ts, p.value, p.quality FROM telemetry_point AS p "
    "JOIN (SELECT series_id, max(ts) AS ts FROM telemetry_point GROUP BY series_id) AS m "
    "ON p.series_id = m.series_id AND p.ts = m.ts"
)
BUCKETS_BASELINE = (
    "SELECT (ts / ?) * ?, count(*), sum(value), min(value), max(value), min(ts), max(ts) "
    "FROM telemetry_point WHERE series_id = ? AND ts >= ? AND ts < ? GROUP BY 1"
)


def load(store: TimeSeriesStore, series: int, points: int, day: int) -> None:
    rng = random.Random(11)
    step = DAY // points
    builder = PointBatchBuilder("bench", source="bench")
    for k in range(points):
        for index in range(series):
            ts = day + k * step + index % 1000  # series a little apart, as devices are
            builder.add(f"dev-{index // METRICS}", f"m{index % METRICS}", ts, rng.uniform(0, 100))
            if len(builder) == 5000:
                store.write(builder.build())
                builder = PointBatchBuilder("bench", source="bench")
    if len(builder):
        store.write(builder.build())
    store.roll_up(now=day + DAY + MINUTE)


def sample(fn: Callable[[], Any], repeat: int) -> list[float]:
    fn()  # warm
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append((time.perf_counter() - began) * 1000)
    return times


def p95(times: list[float]) -> float:
    return statistics.quantiles(times, n=20)[-1]


def raw(db: Database, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    if db.backend == "postgresql":
        sql = sql.replace("?", "%s")
    connection: Any = db.engine.raw_connection()
    try:
        cursor = connection.driver_connection.cursor()
        cursor.execute(sql, params)
        rows = list(cursor.fetchall())
        connection.driver_connection.commit()
        return rows
    finally:
        connection.close()


def measure(label: str, url: str, series: int, points: int, repeat: int) -> list[Result]:
    db = Database(url)
    upgrade(db)
    store = TimeSeriesStore(db, TelemetrySettings())
    day = (time.time_ns() // 1_000_000 // DAY - 1) * DAY
    began = time.perf_counter()
    load(store, series, points, day)
    print(f"{label}: loaded {series * points:,} points and closed the day in {time.perf_counter() - began:.0f} s")
    refs = store.series("bench")
    ids = [ref.id for ref in refs]
    rng = random.Random(3)

    def latest() -> None:
        assert len(store.latest_of("bench")) == series

    def buckets() -> None:
        answer = store.buckets(rng.choice(ids), day, day + DAY, HOUR)
        assert len(answer) == 24

    def latest_baseline() -> None:
        assert len(raw(db, LATEST_BASELINE)) == series

    def buckets_baseline() -> None:
        assert len(raw(db, BUCKETS_BASELINE, (HOUR, HOUR, rng.choice(ids), day, day + DAY))) == 24

    results = []
    for name, ours_fn, base_fn, base_name, target, reps in (
        ("latest of every series, ms", latest, latest_baseline, "GROUP BY over the points", LATEST_TARGET_MS, repeat),
        (
            "1-hour buckets of a day, ms",
            buckets,
            buckets_baseline,
            "GROUP BY over raw points",
            BUCKETS_TARGET_MS,
            10 * repeat,
        ),
    ):
        ours = sample(ours_fn, reps)
        base = sample(base_fn, max(3, reps // 10) if base_fn is latest_baseline else reps)
        verdict = "meets" if statistics.median(ours) <= target else "MISSES"
        print(
            f"  {name}: median {statistics.median(ours):.2f} p95 {p95(ours):.2f} ({verdict} <= {target:.0f} ms); "
            f"baseline median {statistics.median(base):.2f} p95 {p95(base):.2f}"
        )
        results.append(
            Result(
                f"telemetry_queries ({label})",
                f"{name} ({series} x {points})",
                statistics.median(ours),
                base_name,
                statistics.median(base),
                "ms",
                higher_is_better=False,
            )
        )
    db.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    results: list[Result] = []
    for label, url in benchmark_databases():
        results += measure(label, url, args.series, args.points, args.repeat)
    report(results, record=not args.no_record)


if __name__ == "__main__":
    main()
