"""Telemetry ingest: `TimeSeriesStore.write` of prebuilt batches vs the raw driver into the same table.

The batches are what ingest publishes: `--series` series (devices x 10 metrics) reporting once a
second, `--batch` points a batch in time order, so a batch holds one point of each of thousands of
series. The baseline writes the same rows into the same schema (`telemetry_point_recent`, where the
store appends) with the bare driver and the same transaction per batch: `sqlite3.executemany` on
SQLite, binary `COPY` on PostgreSQL. Ours starts from the `PointBatch` (series names, not ids) and
adds the idempotency check (`ON CONFLICT DO NOTHING`; on PostgreSQL through a staging table), the
series lookup and retention. A second row adds closing the windows afterwards (1-minute and 1-hour
rollups, moving points to the series-first table), the whole cost of a point.

`--layouts` also measures the raw insert rate of the two SQLite layouts considered (ADR 0006):
time-first and series-first keys, with batches of this shape, as the table grows.

    .venv/bin/python bench/telemetry_store.py [--points 2000000] [--series 10000] [--batch 5000]
        [--layouts] [--no-record]

Runs on SQLite, and on PostgreSQL when IIP_BENCH_POSTGRES_URL is set.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text

from bench.common import Result, benchmark_databases, report
from iip.kernel.db import Database
from iip.kernel.settings import TelemetrySettings
from iip.migrations.runner import upgrade
from iip.telemetry.public import PointBatch, PointBatchBuilder
from iip.telemetry.store import MINUTE, TimeSeriesStore

Row = tuple[int, int, float, int]  # ts, series_id, value, quality
METRICS = 10


def make_batches(points: int, series: int, size: int, start: int) -> list[PointBatch]:
    """Time-ordered batches: each second, one point of every series."""
    rng = random.Random(7)
    batches: list[PointBatch] = []
    builder = PointBatchBuilder("bench", source="bench")
    for n in range(points):
        second, index = divmod(n, series)
        builder.add(f"dev-{index // METRICS}", f"m{index % METRICS}", start + second * 1000, rng.uniform(0, 100))
        if len(builder) == size:
            batches.append(builder.build())
            builder = PointBatchBuilder("bench", source="bench")
    if len(builder):
        batches.append(builder.build())
    return batches


def rows_of(batches: list[PointBatch], ids: dict[tuple[str, str], int]) -> list[list[Row]]:
    """The same points as the baseline takes them: (ts, series id, value, quality) tuples."""
    prebuilt = []
    for batch in batches:
        sids = [ids[pair] for pair in batch.series]
        prebuilt.append(
            [
                (ts, sids[i], value, quality)
                for i, ts, value, quality in zip(
                    batch.series_index, batch.ts_ms, batch.value, batch.quality, strict=True
                )
            ]
        )
    return prebuilt


TABLES = ("telemetry_point_recent", "telemetry_point", "telemetry_rollup_1m", "telemetry_rollup_1h", "telemetry_series")


def fresh(url: str, name: str) -> Database:
    """An empty store: a new SQLite file named `name` beside `url`'s, or the PostgreSQL database emptied."""
    if url.startswith("sqlite"):
        url = str(Path(url.removeprefix("sqlite:///")).with_name(f"{name}.db"))
        url = f"sqlite:///{url}"
    db = Database(url)
    upgrade(db)
    if db.backend == "postgresql":
        with db.session() as session:
            session.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY"))
            session.execute(text("UPDATE telemetry_store_state SET closed_until_ms = NULL, rollups_from_ms = NULL"))
    return db


def register_series(db: Database, series: int, start: int) -> dict[tuple[str, str], int]:
    """One warm-up batch so both sides start with every series known (ours through the store)."""
    store = TimeSeriesStore(db, TelemetrySettings())
    store.write(make_batches(series, series, series, start - 3_600_000)[0])
    return {(ref.device, ref.metric): ref.id for ref in store.series("bench")}


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def baseline_sqlite(db: Database, prebuilt: list[list[Row]]) -> float:
    path = db.engine.url.database
    assert path is not None
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    sql = "INSERT INTO telemetry_point_recent (ts, series_id, value, quality) VALUES (?, ?, ?, ?)"

    def run() -> None:
        for rows in prebuilt:
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(sql, rows)
            connection.execute("COMMIT")

    elapsed = timed(run)
    connection.close()
    return elapsed


def baseline_postgres(db: Database, prebuilt: list[list[Row]]) -> float:
    raw = db.engine.raw_connection()
    connection: Any = raw.driver_connection

    def run() -> None:
        for rows in prebuilt:
            with connection.cursor() as cursor:
                copy_sql = "COPY telemetry_point_recent (ts, series_id, value, quality) FROM STDIN (FORMAT BINARY)"
                with cursor.copy(copy_sql) as copy:
                    copy.set_types(["int8", "int4", "float8", "int2"])
                    for row in rows:
                        copy.write_row(row)
            connection.commit()

    elapsed = timed(run)
    raw.close()
    return elapsed


def measure(label: str, url: str, points: int, series: int, size: int, runs: int) -> list[Result]:
    start = (time.time_ns() // 1_000_000 // MINUTE - 60) * MINUTE
    batches = make_batches(points, series, size, start)
    ours: list[float] = []
    whole: list[float] = []
    base: list[float] = []
    for run in range(runs):
        # Ours, then the baseline, each on an empty database with every series registered.
        db = fresh(url, f"ours-{run}")
        register_series(db, series, start)
        store = TimeSeriesStore(db, TelemetrySettings())
        write_time = timed(lambda store=store: [store.write(batch) for batch in batches])  # type: ignore[misc]
        roll_time = timed(lambda store=store: store.roll_up(now=start + 10 * 24 * 3_600_000))  # type: ignore[misc]
        ours.append(write_time)
        whole.append(write_time + roll_time)
        db.dispose()

        db = fresh(url, f"baseline-{run}")
        ids = register_series(db, series, start)
        prebuilt = rows_of(batches, ids)
        base.append((baseline_sqlite if db.backend == "sqlite" else baseline_postgres)(db, prebuilt))
        db.dispose()
    raw_name = "raw sqlite3.executemany" if label == "SQLite" else "raw binary COPY"
    shape = f"{series} series, {size}/batch"
    return [
        Result(
            f"telemetry_store ({label})",
            f"points/s written, {shape}",
            points / min(ours),
            raw_name,
            points / min(base),
            "/s",
        ),
        Result(
            f"telemetry_store ({label})",
            "points/s written and windows closed",
            points / min(whole),
            raw_name,
            points / min(base),
            "/s",
        ),
    ]


COLUMNS = "ts INTEGER NOT NULL, series_id INTEGER NOT NULL, value REAL NOT NULL, quality INTEGER NOT NULL"
LAYOUTS = {
    "time-first (ts, series_id)": [f"CREATE TABLE p ({COLUMNS}, PRIMARY KEY (ts, series_id)) WITHOUT ROWID"],
    "series-first (series_id, ts)": [f"CREATE TABLE p ({COLUMNS}, PRIMARY KEY (series_id, ts)) WITHOUT ROWID"],
    "rowid + unique (series_id, ts)": [
        f"CREATE TABLE p ({COLUMNS})",
        "CREATE UNIQUE INDEX p_key ON p (series_id, ts)",
    ],
}
LATEST_OF_ALL = (
    "WITH RECURSIVE ids(id) AS (SELECT 1 UNION ALL SELECT id + 1 FROM ids WHERE id < ?) "
    "SELECT ids.id, p.ts, p.value FROM ids JOIN p ON p.series_id = ids.id "
    "AND p.ts = (SELECT max(ts) FROM p WHERE series_id = ids.id)"
)


def measure_layouts(points: int, series: int, size: int) -> None:
    """Raw executemany rate into each candidate key as the table grows; then two reads by series."""
    print(f"\nSQLite layouts, {points:,} points, {series:,} series, {size:,} a batch (raw executemany):")
    start = 1_767_225_600_000
    prebuilt: list[list[Row]] = []
    rows: list[Row] = []
    rng = random.Random(7)
    for n in range(points):
        second, index = divmod(n, series)
        rows.append((start + second * 1000, index + 1, rng.uniform(0, 100), 0))
        if len(rows) == size:
            prebuilt.append(rows)
            rows = []
    for name, ddl in LAYOUTS.items():
        with tempfile.TemporaryDirectory() as tmp:
            connection = sqlite3.connect(os.path.join(tmp, "layout.db"), isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            for statement in ddl:
                connection.execute(statement)
            rates = []
            for batch in prebuilt:
                began = time.perf_counter()
                connection.execute("BEGIN IMMEDIATE")
                connection.executemany("INSERT INTO p (ts, series_id, value, quality) VALUES (?, ?, ?, ?)", batch)
                connection.execute("COMMIT")
                rates.append(len(batch) / (time.perf_counter() - began))
            tenth = max(1, len(rates) // 10)
            first, last = sum(rates[:tenth]) / tenth, sum(rates[-tenth:]) / tenth
            latest = timed(lambda c=connection: c.execute(LATEST_OF_ALL, (series,)).fetchall())  # type: ignore[misc]
            one = timed(
                lambda c=connection: c.execute(  # type: ignore[misc]
                    "SELECT ts, value FROM p WHERE series_id = ? ORDER BY ts", (series // 2,)
                ).fetchall()
            )
            print(
                f"  {name:32} first tenth {first:>10,.0f}/s  last tenth {last:>10,.0f}/s  "
                f"latest of all {latest * 1000:7.1f} ms  one series {one * 1000:6.2f} ms"
            )
            connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=2_000_000)
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--layouts", action="store_true", help="also compare the SQLite layouts")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    results: list[Result] = []
    for label, url in benchmark_databases():
        points = args.points if label == "SQLite" else min(args.points, 1_000_000)
        results += measure(label, url, points, args.series, args.batch, args.runs)
    report(results, record=not args.no_record)
    if args.layouts:
        measure_layouts(args.points, args.series, args.batch)


if __name__ == "__main__":
    main()
