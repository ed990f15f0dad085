"""The time-series store on SQLite and PostgreSQL: idempotent writes, closing windows, late points, retention."""

from __future__ import annotations

import asyncio
import math
import threading
import time

import pytest
from sqlalchemy import text

from iip.kernel.db import Database
from iip.kernel.errors import Invalid
from iip.kernel.runtime import Runtime
from iip.kernel.settings import TelemetrySettings
from iip.telemetry.maintenance import Maintenance
from iip.telemetry.models import Retention
from iip.telemetry.public import PointBatch, PointBatchBuilder, latest_points, store_points
from iip.telemetry.store import DAY, HOUR, MINUTE, StoredPoint, TimeSeriesStore
from iip.telemetry.store.timeseries import LATENESS_MS, STORE_SERVICE

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


class Clock:
    """The store's notion of now, moved by the test."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(T0 + DAY)


@pytest.fixture
def store(migrated_db: Database, clock: Clock) -> TimeSeriesStore:
    return TimeSeriesStore(migrated_db, TelemetrySettings(), clock=clock)


def batch(tenant: str, points: list[tuple[str, str, int, float]], quality: int = 0) -> PointBatch:
    builder = PointBatchBuilder(tenant, source="test")
    for device, metric, ts, value in points:
        builder.add(device, metric, ts, value, quality)
    return builder.build()


def series_id(store: TimeSeriesStore, tenant: str, device: str, metric: str) -> int:
    refs = store.series(tenant, device, metric)
    assert len(refs) == 1, refs
    return refs[0].id


def all_points(store: TimeSeriesStore, sid: int) -> list[StoredPoint]:
    return store.points(sid, 0, T0 + 1000 * DAY, 1_000_000)


def count_rows(db: Database, table: str) -> int:
    with db.session() as session:
        return int(session.scalar(text(f"SELECT count(*) FROM {table}")) or 0)  # noqa: S608 - test constant


def close_until(store: TimeSeriesStore, instant: int) -> None:
    """Close every minute before `instant` (which must be minute-aligned)."""
    store.roll_up(now=instant + LATENESS_MS)
    assert store.state()[0] == instant


# --- idempotent writes --------------------------------------------------------------------------


def test_a_batch_is_stored_once_and_a_rewrite_keeps_the_first_value(store: TimeSeriesStore) -> None:
    points = [("press-1", "temp", T0 + i * 1000, float(i)) for i in range(100)]
    assert store.write(batch("t1", points)) == 100
    assert store.write(batch("t1", points)) == 0
    rewritten = [(d, m, ts, v + 1000) for d, m, ts, v in points[:10]]
    assert store.write(batch("t1", [*rewritten, ("press-1", "temp", T0 + 100000, 7.0)])) == 1

    stored = all_points(store, series_id(store, "t1", "press-1", "temp"))
    assert [p.ts for p in stored] == [T0 + i * 1000 for i in range(101)]
    assert [p.value for p in stored[:100]] == [float(i) for i in range(100)]


def test_rewrites_of_closed_points_are_ignored_too(store: TimeSeriesStore) -> None:
    points = [("press-1", "temp", T0 + i * 1000, float(i)) for i in range(120)]
    store.write(batch("t1", points))
    close_until(store, T0 + 2 * MINUTE)

    assert store.write(batch("t1", [(d, m, ts, -1.0) for d, m, ts, _ in points])) == 0
    stored = all_points(store, series_id(store, "t1", "press-1", "temp"))
    assert [p.value for p in stored] == [float(i) for i in range(120)]
    assert count_rows(store.db, "telemetry_point") == 120
    assert count_rows(store.db, "telemetry_point_recent") == 0


def test_a_point_twice_in_one_batch_keeps_the_first(store: TimeSeriesStore) -> None:
    assert store.write(batch("t1", [("d", "m", T0, 1.0), ("d", "m", T0, 2.0), ("d", "m", T0 + 1, 3.0)])) == 2
    assert [p.value for p in all_points(store, series_id(store, "t1", "d", "m"))] == [1.0, 3.0]


def test_series_are_per_tenant_device_and_metric(store: TimeSeriesStore) -> None:
    store.write(batch("t1", [("d", "a", T0, 1.0), ("d", "b", T0, 2.0), ("e", "a", T0, 3.0)]))
    store.write(batch("t2", [("d", "a", T0, 4.0)]))
    assert [(r.device, r.metric) for r in store.series("t1")] == [("d", "a"), ("d", "b"), ("e", "a")]
    assert [(r.device, r.metric) for r in store.series("t1", "d")] == [("d", "a"), ("d", "b")]
    assert len({r.id for r in store.series("t1")} | {r.id for r in store.series("t2")}) == 4
    assert store.tenants_with_device("d") == ["t1", "t2"]
    assert all_points(store, series_id(store, "t2", "d", "a"))[0].value == 4.0


BAD_POINTS: list[tuple[list[tuple[str, str, int, float]], str]] = [
    ([("d", "m", T0, math.nan)], "not a finite number"),
    ([("d", "m", T0, 1.0), ("d", "m", T0 + 1, math.inf)], "not a finite number"),
    ([("d", "m", -5, 1.0)], "between 1970 and 9999"),
    ([("d", "m", 10**15, 1.0)], "between 1970 and 9999"),
    ([("d" * 201, "m", T0, 1.0)], "device keys"),
    ([("d", "", T0, 1.0)], "metric names"),
    ([("d\x00", "m", T0, 1.0)], "device keys"),
]


def test_a_bad_batch_is_refused_whole(store: TimeSeriesStore) -> None:
    good = [("good", "m", T0 + 5, 1.0)]
    for points, message in BAD_POINTS:
        with pytest.raises(Invalid, match=message):
            store.write(batch("t1", good + points))
        assert count_rows(store.db, "telemetry_point_recent") == 0
        assert count_rows(store.db, "telemetry_series") == 0


def test_quality_codes_are_kept_and_checked(store: TimeSeriesStore) -> None:
    store.write(batch("t1", [("d", "m", T0, 1.0)], quality=2))
    assert all_points(store, series_id(store, "t1", "d", "m"))[0].quality == 2
    with pytest.raises(Invalid, match="quality"):
        store.write(batch("t1", [("d", "m", T0 + 1, 1.0)], quality=300))


def test_concurrent_writers_share_new_series_and_lose_nothing(store: TimeSeriesStore) -> None:
    # Eight threads write overlapping batches naming the same new series at the same time.
    results: list[int] = []
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        try:
            steps = range(offset * 50, offset * 50 + 100)
            points = [(f"dev-{n % 5}", f"m-{n % 3}", T0 + n * 1000, float(n)) for n in steps]
            results.append(store.write(batch("t1", points)))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(store.series("t1")) == 15
    # Batches overlap by half: 8 * 50 + 50 distinct timestamps, each point of one series.
    assert sum(results) == 450
    assert sum(len(all_points(store, ref.id)) for ref in store.series("t1")) == 450


# --- closing windows and partitions --------------------------------------------------------------


def test_closing_windows_moves_points_and_keeps_them_readable(store: TimeSeriesStore) -> None:
    points = [("d", "m", T0 + i * 10_000, float(i)) for i in range(60)]  # ten minutes
    store.write(batch("t1", points))
    sid = series_id(store, "t1", "d", "m")

    report = store.roll_up(now=T0 + 4 * MINUTE + LATENESS_MS)
    assert report.closed_until == T0 + 4 * MINUTE
    assert report.moved == 24
    assert count_rows(store.db, "telemetry_point") == 24
    assert count_rows(store.db, "telemetry_point_recent") == 36
    # A range across the boundary reads both sides, in order, and stops at the limit.
    assert [p.value for p in store.points(sid, T0 + 3 * MINUTE, T0 + 5 * MINUTE, 100)] == [
        float(i) for i in range(18, 30)
    ]
    assert [p.value for p in store.points(sid, T0, T0 + DAY, 5, descending=True)] == [59.0, 58.0, 57.0, 56.0, 55.0]
    assert [p.value for p in store.points(sid, T0 + 3 * MINUTE, T0 + DAY, 3)] == [18.0, 19.0, 20.0]

    # Closing is idempotent and nothing moves twice.
    assert store.roll_up(now=T0 + 4 * MINUTE + LATENESS_MS).moved == 0


def test_a_batch_spanning_days_lands_in_each_days_partition(store: TimeSeriesStore, backend: str) -> None:
    points = [("d", "m", T0 + day * DAY + 5 * HOUR, float(day)) for day in range(3)]
    assert store.write(batch("t1", points)) == 3
    close_until(store, T0 + 3 * DAY)
    # A late batch spanning days it has never seen before goes straight to its partitions.
    late = [("d", "m", T0 - day * DAY + 7 * HOUR, -float(day)) for day in range(1, 4)]
    assert store.write(batch("t1", late)) == 3

    sid = series_id(store, "t1", "d", "m")
    assert [p.value for p in all_points(store, sid)] == [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0]
    assert count_rows(store.db, "telemetry_point") == 6
    if backend == "postgresql":
        with store.db.session() as session:
            partitions = session.scalars(
                text(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = 'telemetry_point'::regclass ORDER BY 1"
                )
            ).all()
            counts = {
                name: session.scalar(text(f"SELECT count(*) FROM telemetry_partitions.{name}"))  # noqa: S608
                for name in partitions
            }
        assert {name: n for name, n in counts.items() if n} == {
            "telemetry_point_d20251229": 1,
            "telemetry_point_d20251230": 1,
            "telemetry_point_d20251231": 1,
            "telemetry_point_d20260101": 1,
            "telemetry_point_d20260102": 1,
            "telemetry_point_d20260103": 1,
        }


def test_a_long_gap_is_skipped(store: TimeSeriesStore, clock: Clock) -> None:
    store.write(batch("t1", [("d", "m", T0, 1.0)]))
    close_until(store, T0 + MINUTE)
    store.write(batch("t1", [("d", "m", T0 + 300 * DAY, 2.0)]))
    clock.now = T0 + 300 * DAY
    close_until(store, T0 + 300 * DAY + 5 * MINUTE)
    assert [p.value for p in all_points(store, series_id(store, "t1", "d", "m"))] == [1.0, 2.0]


# --- rollups ------------------------------------------------------------------------------------


def rollup(db: Database, table: str, sid: int, bucket: int) -> tuple[int, float, float, float, float, float] | None:
    with db.session() as session:
        row = session.execute(
            text(
                f"SELECT count, total, minimum, maximum, first_value, last_value FROM {table} "  # noqa: S608
                "WHERE series_id = :sid AND bucket = :bucket"
            ),
            {"sid": sid, "bucket": bucket},
        ).one_or_none()
    return None if row is None else (int(row[0]), row[1], row[2], row[3], row[4], row[5])


def test_rollups_are_written_when_windows_close(store: TimeSeriesStore) -> None:
    points = [("d", "m", T0 + i * 30_000, float(i % 7)) for i in range(240)]  # two hours
    store.write(batch("t1", points))
    sid = series_id(store, "t1", "d", "m")
    close_until(store, T0 + 90 * MINUTE)

    minute = [float(i % 7) for i in range(2 * 61, 2 * 61 + 2)]  # minute 61
    assert rollup(store.db, "telemetry_rollup_1m", sid, T0 + 61 * MINUTE) == (
        2,
        sum(minute),
        min(minute),
        max(minute),
        minute[0],
        minute[-1],
    )
    hour = [float(i % 7) for i in range(120)]
    assert rollup(store.db, "telemetry_rollup_1h", sid, T0) == (120, sum(hour), 0.0, 6.0, hour[0], hour[-1])
    assert rollup(store.db, "telemetry_rollup_1h", sid, T0 + HOUR) is None  # not over yet
    assert rollup(store.db, "telemetry_rollup_1m", sid, T0 + 90 * MINUTE) is None


def test_a_late_point_corrects_its_minute_and_hour(store: TimeSeriesStore) -> None:
    store.write(batch("t1", [("d", "m", T0 + i * 60_000 + 5_000, 10.0) for i in range(120)]))
    sid = series_id(store, "t1", "d", "m")
    close_until(store, T0 + 90 * MINUTE)
    assert rollup(store.db, "telemetry_rollup_1h", sid, T0) == (60, 600.0, 10.0, 10.0, 10.0, 10.0)

    # Into a closed hour: before the minute's first point and after its last.
    assert store.write(batch("t1", [("d", "m", T0 + 7 * MINUTE + 1_000, 99.0)])) == 1
    assert store.write(batch("t1", [("d", "m", T0 + 59 * MINUTE + 59_000, -5.0)])) == 1
    # Into a closed minute of the hour still open.
    assert store.write(batch("t1", [("d", "m", T0 + 70 * MINUTE, 3.0)])) == 1

    assert rollup(store.db, "telemetry_rollup_1m", sid, T0 + 7 * MINUTE) == (2, 109.0, 10.0, 99.0, 99.0, 10.0)
    assert rollup(store.db, "telemetry_rollup_1m", sid, T0 + 59 * MINUTE) == (2, 5.0, -5.0, 10.0, 10.0, -5.0)
    assert rollup(store.db, "telemetry_rollup_1h", sid, T0) == (62, 694.0, -5.0, 99.0, 10.0, -5.0)
    assert rollup(store.db, "telemetry_rollup_1m", sid, T0 + 70 * MINUTE) == (2, 13.0, 3.0, 10.0, 3.0, 10.0)
    assert rollup(store.db, "telemetry_rollup_1h", sid, T0 + HOUR) is None

    # The rest of the hour closes, with the late point in it.
    close_until(store, T0 + 2 * HOUR)
    assert rollup(store.db, "telemetry_rollup_1h", sid, T0 + HOUR) == (61, 603.0, 3.0, 10.0, 10.0, 10.0)
    # A rewrite of a late point changes nothing.
    assert store.write(batch("t1", [("d", "m", T0 + 7 * MINUTE + 1_000, 0.0)])) == 0
    assert rollup(store.db, "telemetry_rollup_1h", sid, T0) == (62, 694.0, -5.0, 99.0, 10.0, -5.0)


def test_without_rollups_windows_still_close(migrated_db: Database, clock: Clock) -> None:
    store = TimeSeriesStore(migrated_db, TelemetrySettings(rollups=False), clock=clock)
    store.write(batch("t1", [("d", "m", T0 + i * 1000, 1.0) for i in range(300)]))
    close_until(store, T0 + 3 * MINUTE)
    assert store.state() == (T0 + 3 * MINUTE, None)
    assert count_rows(migrated_db, "telemetry_rollup_1m") == 0
    assert count_rows(migrated_db, "telemetry_point") == 180
    sid = series_id(store, "t1", "d", "m")
    assert [b.aggregates.count for b in store.buckets(sid, T0, T0 + HOUR, MINUTE)] == [60] * 5

    # Turned on later, rollups start where windows are closed from then on.
    store.settings = TelemetrySettings(rollups=True)
    close_until(store, T0 + 5 * MINUTE)
    assert store.state() == (T0 + 5 * MINUTE, T0 + 3 * MINUTE)
    assert count_rows(migrated_db, "telemetry_rollup_1m") == 2
    assert [b.aggregates.count for b in store.buckets(sid, T0, T0 + HOUR, MINUTE)] == [60] * 5


# --- retention ----------------------------------------------------------------------------------


def test_retention_deletes_only_old_points_of_the_right_tenant(store: TimeSeriesStore, clock: Clock) -> None:
    with store.db.session() as session:
        session.add(Retention(tenant_id="short", days=2))
    clock.now = T0
    for tenant in ("short", "long"):
        store.write(batch(tenant, [("d", "m", T0 + day * DAY + HOUR, float(day)) for day in range(11)]))
    close_until(store, T0 + 9 * DAY)  # some points closed, the last two days recent

    report = store.apply_retention(now=T0 + 10 * DAY + 5 * HOUR)
    assert report.cutoffs == {"short": T0 + 8 * DAY, "long": T0 + 10 * DAY - 400 * DAY}
    short, long_ = series_id(store, "short", "d", "m"), series_id(store, "long", "d", "m")
    assert [p.value for p in all_points(store, short)] == [8.0, 9.0, 10.0]
    assert [p.value for p in all_points(store, long_)] == [float(d) for d in range(11)]
    # 1-minute rollups go with the points; 1-hour ones are kept ten times as long.
    assert rollup(store.db, "telemetry_rollup_1m", short, T0 + 7 * DAY + HOUR) is None
    assert rollup(store.db, "telemetry_rollup_1h", short, T0 + 7 * DAY + HOUR) is not None
    assert rollup(store.db, "telemetry_rollup_1m", long_, T0 + 7 * DAY + HOUR) is not None

    # Points already past the tenant's retention are not stored at all.
    clock.now = T0 + 10 * DAY
    store.forget_retention()
    assert store.write(batch("short", [("d", "m", T0 + 7 * DAY, 1.0), ("d", "m", T0 + 9 * DAY, 1.0)])) == 1
    assert store.retention_days("short") == 2
    assert store.retention_days("long") == 400


# --- through the runtime, as other contexts call it ---------------------------------------------


def test_store_points_and_latest_points_through_the_runtime(runtime: Runtime) -> None:
    now = time.time_ns() // 1_000_000  # the runtime's store keeps the real clock (and retention)
    first = batch("t1", [("press-1", "temp", now - 5000, 20.5), ("press-1", "speed", now - 4000, 3.0)])
    assert store_points(runtime, first) == 2
    store = runtime.services[STORE_SERVICE]
    assert store_points(runtime, batch("t1", [("press-1", "temp", now - 1000, 21.5)], quality=1)) == 1
    assert runtime.services[STORE_SERVICE] is store
    assert latest_points(runtime, "t1", "press-1") == {"temp": (now - 1000, 21.5, 1), "speed": (now - 4000, 3.0, 0)}
    assert latest_points(runtime, "t1", "press-2") == {}
    assert latest_points(runtime, "t2", "press-1") == {}


def test_reads_run_beside_writes(store: TimeSeriesStore) -> None:
    # Readers in other threads while batches are written: every read sees whole batches only.
    store.write(batch("t1", [("d", "m", T0, 0.0)]))
    sid = series_id(store, "t1", "d", "m")
    seen: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.append(len(store.points(sid, T0, T0 + DAY, 100_000)))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    for n in range(20):
        store.write(batch("t1", [("d", "m", T0 + (n * 10 + i + 1) * 1000, 1.0) for i in range(10)]))
        if n == 10:
            store.roll_up(now=T0 + MINUTE + LATENESS_MS)
    stop.set()
    for thread in threads:
        thread.join()
    assert seen
    assert all((count - 1) % 10 == 0 for count in seen), sorted(set(seen))
    assert len(store.points(sid, T0, T0 + DAY, 100_000)) == 201


async def test_maintenance_closes_windows_and_applies_retention(runtime: Runtime) -> None:
    now = time.time_ns() // 1_000_000
    store_points(runtime, batch("t1", [("d", "m", now - 3 * DAY, 1.0), ("d", "m", now - 5 * MINUTE, 2.0)]))
    with runtime.db.session() as session:
        session.add(Retention(tenant_id="t1", days=1))
    maintenance = Maintenance(runtime, roll_up_interval=0.01)
    task = asyncio.create_task(maintenance.run())
    store = runtime.services[STORE_SERVICE]
    for _ in range(500):  # the first round starts after one interval; wait for it, not for a time
        await asyncio.sleep(0.01)
        if store.state()[0] is not None:
            break
    maintenance.stop()
    await task
    closed_until, _ = store.state()
    assert closed_until is not None
    assert closed_until > now - 5 * MINUTE
    assert [p.value for p in all_points(store, series_id(store, "t1", "d", "m"))] == [2.0]
