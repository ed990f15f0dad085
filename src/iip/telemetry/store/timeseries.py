"""The time-series store: idempotent batch writes, closed windows, rollups, queries, retention.

Layout (ADR 0006): a batch appends to `telemetry_point_recent`, keyed time-first, so it touches a
few pages at the end of the index whatever the number of series. Once a minute is over (plus
`LATENESS_MS`), `roll_up` aggregates it into 1-minute rollups, moves its points into
`telemetry_point`, keyed series-first for range reads, and completes the 1-hour rollups of the
hours that ended. `telemetry_store_state.closed_until_ms` is that boundary: points before it are
closed, at or after it recent. A point that arrives for a closed window (late) is written straight
to `telemetry_point`, and the rollups of its minute and hour are recomputed in the same
transaction, so rollups are always exact.

Idempotency: (series, ts) is the key of both tables and a rewrite keeps the FIRST value stored
(`ON CONFLICT DO NOTHING`): redelivered batches change nothing, and a stored point never changes.

The store is thread-safe: every call takes its own pooled connection and transaction; caches are
guarded by locks. It is synchronous; asyncio code calls it through `asyncio.to_thread`.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from iip.kernel.db import Database
from iip.kernel.errors import Invalid
from iip.kernel.runtime import Runtime
from iip.kernel.settings import TelemetrySettings
from iip.telemetry.public import PointBatch
from iip.telemetry.store.aggregates import (
    DAY,
    HOUR,
    MAX_TS,
    MINUTE,
    Partial,
    PartialRow,
    Source,
    ceil_to,
    floor_to,
    merge_partials,
    plan_segments,
)
from iip.telemetry.store.backends import Backend, Row, Tx, backend_for

LATENESS_MS = 10_000  # a minute closes this long after it ends, for points still on their way
# One roll-up transaction closes at most an hour, and stops early past STEP_ROWS points: big steps
# write each series' pages once for many points; bounded ones keep writers waiting briefly.
STEP_MS = HOUR
STEP_ROWS = 200_000
TIDY_AFTER_ROWS = 50_000  # a roll-up that moved this many rows vacuums the recent table (PostgreSQL)
HOURLY_RETENTION_FACTOR = 10  # 1-hour rollups outlive raw points (and 1-minute rollups) this many times
RETENTION_CACHE_S = 60.0
SERIES_CACHE_LIMIT = 1_000_000
MAX_DEVICE_LENGTH = 200
MAX_METRIC_LENGTH = 128
MAX_TENANT_LENGTH = 32
QUALITY_RANGE = (0, 255)

ROLLUP_COLUMNS = "series_id, bucket, count, total, minimum, maximum, first_ts, first_value, last_ts, last_value"
ROLLUP_UPSERT = (
    "ON CONFLICT (series_id, bucket) DO UPDATE SET count = excluded.count, total = excluded.total, "
    "minimum = excluded.minimum, maximum = excluded.maximum, first_ts = excluded.first_ts, "
    "first_value = excluded.first_value, last_ts = excluded.last_ts, last_value = excluded.last_value"
)
# `WHERE true` keeps SQLite from reading ON CONFLICT as a join constraint of the SELECT.
MINUTES_FROM_RECENT = f"""
INSERT INTO telemetry_rollup_1m ({ROLLUP_COLUMNS})
SELECT g.series_id, g.bucket, g.n, g.total, g.lo, g.hi,
       g.fts, (SELECT r.value FROM telemetry_point_recent AS r WHERE r.ts = g.fts AND r.series_id = g.series_id),
       g.lts, (SELECT r.value FROM telemetry_point_recent AS r WHERE r.ts = g.lts AND r.series_id = g.series_id)
FROM (SELECT series_id, (ts / {MINUTE}) * {MINUTE} AS bucket, count(*) AS n, sum(value) AS total,
             min(value) AS lo, max(value) AS hi, min(ts) AS fts, max(ts) AS lts
      FROM telemetry_point_recent WHERE ts >= ? AND ts < ? GROUP BY 1, 2) AS g
WHERE true {ROLLUP_UPSERT}
"""  # noqa: S608 - constants
MINUTE_FROM_CLOSED = f"""
INSERT INTO telemetry_rollup_1m ({ROLLUP_COLUMNS})
SELECT g.series_id, g.bucket, g.n, g.total, g.lo, g.hi,
       g.fts, (SELECT p.value FROM telemetry_point AS p WHERE p.series_id = g.series_id AND p.ts = g.fts),
       g.lts, (SELECT p.value FROM telemetry_point AS p WHERE p.series_id = g.series_id AND p.ts = g.lts)
FROM (SELECT series_id, (ts / {MINUTE}) * {MINUTE} AS bucket, count(*) AS n, sum(value) AS total,
             min(value) AS lo, max(value) AS hi, min(ts) AS fts, max(ts) AS lts
      FROM telemetry_point WHERE series_id = ? AND ts >= ? AND ts < ? GROUP BY 1, 2) AS g
WHERE true {ROLLUP_UPSERT}
"""  # noqa: S608 - constants
_HOUR_SELECT = f"""
SELECT g.series_id, g.bucket, g.n, g.total, g.lo, g.hi,
       g.fts, (SELECT m.first_value FROM telemetry_rollup_1m AS m WHERE m.series_id = g.series_id AND m.bucket = g.fb),
       g.lts, (SELECT m.last_value FROM telemetry_rollup_1m AS m WHERE m.series_id = g.series_id AND m.bucket = g.lb)
FROM (SELECT m.series_id, (m.bucket / {HOUR}) * {HOUR} AS bucket, sum(m.count) AS n, sum(m.total) AS total,
             min(m.minimum) AS lo, max(m.maximum) AS hi, min(m.first_ts) AS fts, max(m.last_ts) AS lts,
             min(m.bucket) AS fb, max(m.bucket) AS lb
"""  # noqa: S608 - constants
# Hours that just ended, for every series: one index range per series rather than a table scan
# (CROSS JOIN fixes SQLite's join order; PostgreSQL plans it freely).
HOURS_FROM_MINUTES = f"""
INSERT INTO telemetry_rollup_1h ({ROLLUP_COLUMNS}) {_HOUR_SELECT}
      FROM telemetry_series AS s CROSS JOIN telemetry_rollup_1m AS m
      WHERE m.series_id = s.id AND m.bucket >= ? AND m.bucket < ? GROUP BY 1, 2) AS g
WHERE true {ROLLUP_UPSERT}
"""
HOUR_FROM_MINUTES = f"""
INSERT INTO telemetry_rollup_1h ({ROLLUP_COLUMNS}) {_HOUR_SELECT}
      FROM telemetry_rollup_1m AS m WHERE m.series_id = ? AND m.bucket >= ? AND m.bucket < ? GROUP BY 1, 2) AS g
WHERE true {ROLLUP_UPSERT}
"""
LATEST_UPSERT = (
    "ON CONFLICT (series_id) DO UPDATE SET ts = excluded.ts, value = excluded.value, quality = excluded.quality "
    "WHERE excluded.ts > telemetry_latest.ts"
)
# The newest point of each series among those about to close.
LATEST_FROM_RECENT = f"""
INSERT INTO telemetry_latest (series_id, ts, value, quality)
SELECT r.series_id, r.ts, r.value, r.quality FROM telemetry_point_recent AS r
JOIN (SELECT series_id, max(ts) AS ts FROM telemetry_point_recent WHERE ts < ? GROUP BY series_id) AS m
  ON r.ts = m.ts AND r.series_id = m.series_id
WHERE true {LATEST_UPSERT}
"""  # noqa: S608 - constants
LATEST_POINT = f"INSERT INTO telemetry_latest (series_id, ts, value, quality) VALUES (?, ?, ?, ?) {LATEST_UPSERT}"  # noqa: S608
# The newest recent point of the series `series_id {ids}`.
RECENT_NEWEST = (
    "SELECT r.series_id, r.ts, r.value, r.quality FROM telemetry_point_recent AS r JOIN "
    "(SELECT series_id, max(ts) AS ts FROM telemetry_point_recent WHERE series_id {ids} GROUP BY series_id) AS m "
    "ON r.ts = m.ts AND r.series_id = m.series_id"
)
# Per series of a tenant: its newest recent point, else its newest closed one; in byte order of names.
LATEST_OF = """
SELECT s.id, s.device, s.metric,
       CASE WHEN r.ts IS NULL THEN l.ts ELSE r.ts END,
       CASE WHEN r.ts IS NULL THEN l.value ELSE r.value END,
       CASE WHEN r.ts IS NULL THEN l.quality ELSE r.quality END
FROM telemetry_series AS s
LEFT JOIN telemetry_latest AS l ON l.series_id = s.id
LEFT JOIN (SELECT p.series_id, p.ts, p.value, p.quality FROM telemetry_point_recent AS p
           JOIN (SELECT series_id, max(ts) AS ts FROM telemetry_point_recent
                 WHERE series_id IN (SELECT o.id FROM telemetry_series AS o WHERE {owned}) GROUP BY series_id) AS m
             ON p.ts = m.ts AND p.series_id = m.series_id) AS r
  ON r.series_id = s.id
WHERE {where} AND (l.ts IS NOT NULL OR r.ts IS NOT NULL)
ORDER BY s.device {order}, s.metric {order}
"""
CLOSED, RECENT = "telemetry_point", "telemetry_point_recent"
# Per raw table: aggregates per bucket of one series, and its points in a range.
RAW_PARTIALS = {
    table: f"""
SELECT g.b, g.n, g.total, g.lo, g.hi,
       g.fts, (SELECT p.value FROM {table} AS p WHERE p.series_id = ? AND p.ts = g.fts),
       g.lts, (SELECT p.value FROM {table} AS p WHERE p.series_id = ? AND p.ts = g.lts)
FROM (SELECT (ts / ?) * ? AS b, count(*) AS n, sum(value) AS total, min(value) AS lo, max(value) AS hi,
             min(ts) AS fts, max(ts) AS lts
      FROM {table} WHERE series_id = ? AND ts >= ? AND ts < ? GROUP BY 1) AS g
"""  # noqa: S608 - constants
    for table in (CLOSED, RECENT)
}
RAW_POINTS = {
    (table, order): f"SELECT ts, value, quality FROM {table} WHERE series_id = ? AND ts >= ? AND ts < ? "  # noqa: S608
    f"ORDER BY ts {order} LIMIT ?"
    for table in (CLOSED, RECENT)
    for order in ("ASC", "DESC")
}
ROLLUP_ROWS = {
    source: "SELECT bucket, count, total, minimum, maximum, first_ts, first_value, last_ts, last_value "  # noqa: S608
    f"FROM telemetry_rollup_{source.value} WHERE series_id = ? AND bucket >= ? AND bucket < ?"
    for source in (Source.MINUTE, Source.HOUR)
}
OWNED = "(SELECT id FROM telemetry_series WHERE tenant_id = ?)"
RETENTION_DELETES = (
    f"DELETE FROM telemetry_point WHERE series_id IN {OWNED} AND ts < ?",  # noqa: S608 - constants
    f"DELETE FROM telemetry_point_recent WHERE series_id IN {OWNED} AND ts < ?",  # noqa: S608 - constants
    f"DELETE FROM telemetry_rollup_1m WHERE series_id IN {OWNED} AND bucket < ?",  # noqa: S608 - constants
    f"DELETE FROM telemetry_rollup_1h WHERE series_id IN {OWNED} AND bucket < ?",  # noqa: S608 - constants
    f"DELETE FROM telemetry_latest WHERE series_id IN {OWNED} AND ts < ?",  # noqa: S608 - constants
)


STORE_SERVICE = "telemetry.store"  # key in `Runtime.services`
_store_creation = threading.Lock()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def store_of(runtime: Runtime) -> TimeSeriesStore:
    """The process's store, created on first use and kept in `runtime.services`."""
    store = runtime.services.get(STORE_SERVICE)
    if store is None:
        with _store_creation:
            store = runtime.services.get(STORE_SERVICE)
            if store is None:
                store = runtime.services[STORE_SERVICE] = TimeSeriesStore(runtime.db, runtime.settings.telemetry)
    if not isinstance(store, TimeSeriesStore):
        raise TypeError(f"runtime.services[{STORE_SERVICE!r}] is not a TimeSeriesStore")
    return store


class SeriesRef(NamedTuple):
    id: int
    tenant_id: str
    device: str
    metric: str


def by_name(ref: SeriesRef) -> tuple[str, str]:
    return ref.device, ref.metric


class StoredPoint(NamedTuple):
    ts: int
    value: float
    quality: int


# (series id, device, metric, ts, value, quality): plain tuples, which CPython's collector stops
# tracking; tens of thousands of objects per answer would otherwise trigger full collections.
LatestValue = tuple[int, str, str, int, float, int]


@dataclass(frozen=True, slots=True)
class Bucket:
    start: int
    aggregates: Partial


@dataclass(frozen=True, slots=True)
class RollUpReport:
    closed_until: int | None
    moved: int


@dataclass(frozen=True, slots=True)
class RetentionReport:
    cutoffs: dict[str, int]  # tenant -> raw points before this instant were deleted
    deleted: dict[str, int]  # tenant -> raw points deleted (not counting dropped partitions)
    dropped_days: int  # PostgreSQL partitions dropped whole


class _NeedExclusive(Exception):
    """The batch holds late points: start again with the exclusive lock."""


class TimeSeriesStore:
    """Points by series id, in batches; see the module docstring for the layout."""

    def __init__(
        self,
        db: Database,
        settings: TelemetrySettings | None = None,
        *,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.db = db
        self.settings = settings or TelemetrySettings()
        self.clock = clock
        self.backend: Backend = backend_for(db)
        self._series: dict[str, dict[tuple[str, str], int]] = {}  # tenant -> (device, metric) -> id
        self._series_cached = 0
        self._series_lock = threading.Lock()
        self._retention: dict[str, tuple[float, int]] = {}
        self._retention_lock = threading.Lock()

    # --- writes --------------------------------------------------------------------------------

    def write(self, batch: PointBatch) -> int:
        """Store a batch; returns how many points were new. Points older than the tenant's retention are dropped."""
        if not len(batch):
            return 0
        self._check(batch)
        cutoff = self.retention_cutoff(batch.tenant_id, self.clock())
        exclusive = False
        while True:
            try:
                with self.backend.write_guard, self.backend.writing(exclusive=exclusive) as tx:
                    stored, created = self._write(tx, batch, cutoff, exclusive=exclusive)
            except _NeedExclusive:
                exclusive = True
                continue
            self._remember(batch.tenant_id, created)
            return stored

    def _write(
        self, tx: Tx, batch: PointBatch, cutoff: int, *, exclusive: bool
    ) -> tuple[int, dict[tuple[str, str], int]]:
        closed_until, rollups_from = self._state(tx)
        ids, created = self._series_ids(tx, batch.tenant_id, batch.series)
        ts, values, quality = batch.ts_ms, batch.value, batch.quality
        series = map(ids.__getitem__, batch.series_index)
        floor = max(cutoff, closed_until if closed_until is not None else cutoff)
        if min(ts) >= floor:  # the usual batch: every point new and open
            return self.backend.insert_recent(tx, zip(ts, series, values, quality, strict=True)), created
        recent: list[Row] = []
        late: list[Row] = []
        for row in zip(ts, series, values, quality, strict=True):
            if row[0] < cutoff:
                continue
            (late if closed_until is not None and row[0] < closed_until else recent).append(row)
        if late and not exclusive and self.backend.name == "postgresql":
            raise _NeedExclusive
        stored = self.backend.insert_recent(tx, recent) if recent else 0
        if late and closed_until is not None:
            stored += self._write_late(tx, late, closed_until, rollups_from)
        return stored, created

    def _write_late(self, tx: Tx, rows: list[Row], closed_until: int, rollups_from: int | None) -> int:
        """Points of closed windows: into the series-first table, and their rollups recomputed."""
        self.backend.ensure_days({ts // DAY for ts, *_ in rows})
        stored = tx.executemany(
            "INSERT INTO telemetry_point (series_id, ts, value, quality) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [(sid, ts, value, quality) for ts, sid, value, quality in rows],
        )
        newest: dict[int, Row] = {}
        for row in rows:  # the first of equal timestamps, as the insert kept
            held = newest.get(row[1])
            if held is None or row[0] > held[0]:
                newest[row[1]] = row
        tx.executemany(LATEST_POINT, [(sid, ts, value, quality) for ts, sid, value, quality in newest.values()])
        if rollups_from is not None and stored:
            minutes = sorted({(sid, floor_to(ts, MINUTE)) for ts, sid, *_ in rows if ts >= rollups_from})
            tx.executemany(MINUTE_FROM_CLOSED, [(sid, m, m + MINUTE) for sid, m in minutes])
            # Only hours that were complete already; open hours are completed when they end.
            first_hour = ceil_to(rollups_from, HOUR)
            hours = sorted({(sid, floor_to(m, HOUR)) for sid, m in minutes})
            tx.executemany(
                HOUR_FROM_MINUTES,
                [(sid, h, h + HOUR) for sid, h in hours if h >= first_hour and h + HOUR <= closed_until],
            )
        return stored

    def _check(self, batch: PointBatch) -> None:
        tenant = batch.tenant_id
        if not tenant or len(tenant) > MAX_TENANT_LENGTH:
            raise Invalid(f"tenant id must be 1-{MAX_TENANT_LENGTH} characters")
        ts = batch.ts_ms
        if min(ts) < 0 or max(ts) > MAX_TS:
            raise Invalid("timestamps must be epoch milliseconds between 1970 and 9999")
        if not math.isfinite(sum(batch.value)):  # one pass in C; NaN and infinities survive the sum
            for i, value in enumerate(batch.value):
                if not math.isfinite(value):
                    device, metric = batch.series[batch.series_index[i]]
                    raise Invalid(f"point {i} ({device}/{metric}): value {value} is not a finite number")
        if batch.quality and (min(batch.quality) < QUALITY_RANGE[0] or max(batch.quality) > QUALITY_RANGE[1]):
            raise Invalid(f"quality codes must be {QUALITY_RANGE[0]}-{QUALITY_RANGE[1]}")

    # --- series --------------------------------------------------------------------------------

    def _series_ids(
        self, tx: Tx, tenant: str, pairs: Sequence[tuple[str, str]]
    ) -> tuple[list[int], dict[tuple[str, str], int]]:
        """Ids of the batch's series, aligned with `pairs`, and those not cached before."""
        with self._series_lock:
            known = self._series.get(tenant)
            found = list(map(known.get, pairs)) if known is not None else [None] * len(pairs)
        if None not in found:
            return found, {}  # type: ignore[return-value]  # no None left
        missing = [pair for pair, sid in zip(pairs, found, strict=True) if sid is None]
        for device, metric in missing:
            # PostgreSQL text cannot hold NUL; refusing it everywhere keeps the backends alike.
            if not device or len(device) > MAX_DEVICE_LENGTH or "\x00" in device:
                raise Invalid(f"device keys must be 1-{MAX_DEVICE_LENGTH} characters without NUL")
            if not metric or len(metric) > MAX_METRIC_LENGTH or "\x00" in metric:
                raise Invalid(f"metric names must be 1-{MAX_METRIC_LENGTH} characters without NUL")
        # In key order, so writers creating the same new series lock them in one order (no deadlock).
        tx.executemany(
            "INSERT INTO telemetry_series (tenant_id, device, metric) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            [(tenant, device, metric) for device, metric in sorted(missing)],
        )
        devices = sorted({device for device, _ in missing})
        subquery, param = self._string_set(devices)
        rows = tx.all(
            f"SELECT id, device, metric FROM telemetry_series WHERE tenant_id = ? AND device IN {subquery}",  # noqa: S608
            (tenant, param),
        )
        known = {(device, metric): sid for sid, device, metric in rows}
        created = {pair: known[pair] for pair in missing}
        ids = [sid if sid is not None else created[pair] for pair, sid in zip(pairs, found, strict=True)]
        return ids, created

    def _string_set(self, values: Sequence[str]) -> tuple[str, Any]:
        if self.backend.name == "postgresql":
            return "(SELECT unnest(?::text[]))", list(values)
        return "(SELECT value FROM json_each(?))", json.dumps(list(values))

    def _remember(self, tenant: str, created: dict[tuple[str, str], int]) -> None:
        if not created:
            return
        with self._series_lock:
            self._series_cached += len(created)
            if self._series_cached > SERIES_CACHE_LIMIT:
                self._series.clear()
                self._series_cached = len(created)
            self._series.setdefault(tenant, {}).update(created)

    def series(self, tenant_id: str, device: str | None = None, metric: str | None = None) -> list[SeriesRef]:
        """Series of a tenant (of one device, of one metric), ordered by device and metric."""
        sql = "SELECT id, tenant_id, device, metric FROM telemetry_series WHERE tenant_id = ?"
        params: list[Any] = [tenant_id]
        if device is not None:
            sql += " AND device = ?"
            params.append(device)
        if metric is not None:
            sql += " AND metric = ?"
            params.append(metric)
        with self.backend.reading() as tx:
            rows = tx.all(sql, params)
        return sorted((SeriesRef(*row) for row in rows), key=by_name)  # here: PostgreSQL sorts text slowly

    def series_of_devices(self, tenant_id: str, devices: Sequence[str]) -> list[SeriesRef]:
        subquery, param = self._string_set(sorted(set(devices)))
        with self.backend.reading() as tx:
            rows = tx.all(
                "SELECT id, tenant_id, device, metric FROM telemetry_series "  # noqa: S608 - subquery is ours
                f"WHERE tenant_id = ? AND device IN {subquery}",
                (tenant_id, param),
            )
        return sorted((SeriesRef(*row) for row in rows), key=by_name)

    def tenants_with_device(self, device: str) -> list[str]:
        with self.backend.reading() as tx:
            rows = tx.all("SELECT DISTINCT tenant_id FROM telemetry_series WHERE device = ? ORDER BY 1", (device,))
        return [str(tenant) for (tenant,) in rows]

    # --- state ---------------------------------------------------------------------------------

    @staticmethod
    def _state(tx: Tx) -> tuple[int | None, int | None]:
        row = tx.one("SELECT closed_until_ms, rollups_from_ms FROM telemetry_store_state WHERE id = 1")
        if row is None:
            return None, None
        return row[0], row[1]

    def state(self) -> tuple[int | None, int | None]:
        """(closed_until_ms, rollups_from_ms)."""
        with self.backend.reading() as tx:
            return self._state(tx)

    # --- closing windows -----------------------------------------------------------------------

    def roll_up(self, now: int | None = None) -> RollUpReport:
        """Close the minutes that ended `LATENESS_MS` ago: roll them up and move their points."""
        target = floor_to((self.clock() if now is None else now) - LATENESS_MS, MINUTE)
        rollups = self.settings.rollups
        moved = 0
        while True:
            with self.backend.reading() as tx:
                closed_until, _ = self._state(tx)
                oldest = tx.one("SELECT min(ts) FROM telemetry_point_recent")
                start = self._next_start(closed_until, oldest[0] if oldest else None, target)
                if start is None:
                    break
                step_end = min(target, floor_to(start, MINUTE) + STEP_MS)
                nth = tx.one(
                    "SELECT ts FROM telemetry_point_recent WHERE ts >= ? ORDER BY ts LIMIT 1 OFFSET ?",
                    (start, STEP_ROWS),
                )
                if nth is not None:
                    step_end = min(step_end, max(floor_to(nth[0], MINUTE), floor_to(start, MINUTE) + MINUTE))
            self.backend.ensure_days({start // DAY, (step_end - 1) // DAY})
            with self.backend.write_guard, self.backend.writing(exclusive=True) as tx:
                closed_until, rollups_from = self._state(tx)
                if closed_until is not None and closed_until >= step_end:
                    continue  # another process got there first
                lower = closed_until if closed_until is not None else floor_to(start, MINUTE)
                if rollups:
                    if rollups_from is None:  # rollups start (again) here
                        rollups_from = lower
                    tx.execute(MINUTES_FROM_RECENT, (lower, step_end))
                    # Hours that ended in this step and whose every minute has been rolled up.
                    first_hour = max(floor_to(lower, HOUR), ceil_to(rollups_from, HOUR))
                    if first_hour < floor_to(step_end, HOUR):
                        tx.execute(HOURS_FROM_MINUTES, (first_hour, floor_to(step_end, HOUR)))
                else:
                    rollups_from = None
                tx.execute(LATEST_FROM_RECENT, (step_end,))
                moved += self.backend.move_closed(tx, step_end)
                tx.execute(
                    "UPDATE telemetry_store_state SET closed_until_ms = ?, rollups_from_ms = ? WHERE id = 1",
                    (step_end, rollups_from),
                )
        if moved >= TIDY_AFTER_ROWS:
            self.backend.after_move()  # outside any transaction of ours: VACUUM waits for their pins
        return RollUpReport(closed_until, moved)

    @staticmethod
    def _next_start(closed_until: int | None, oldest_recent: int | None, target: int) -> int | None:
        """Where the next step starts; None when everything before `target` is closed."""
        if closed_until is not None and closed_until >= target:
            return None
        if oldest_recent is None or oldest_recent >= target:
            # Nothing to move: close the (empty) rest in one step.
            return max(closed_until, target - MINUTE) if closed_until is not None else target - MINUTE
        if closed_until is None:
            return oldest_recent
        return max(closed_until, floor_to(oldest_recent, MINUTE))

    # --- queries -------------------------------------------------------------------------------

    def points(
        self, series_id: int, start: int, end: int, limit: int, *, descending: bool = False
    ) -> list[StoredPoint]:
        """Raw points of a series in [start, end), oldest first (or newest first), at most `limit`."""
        with self.backend.reading() as tx:
            return self._points(tx, series_id, start, end, limit, descending=descending)

    def _points(
        self, tx: Tx, series_id: int, start: int, end: int, limit: int, *, descending: bool = False
    ) -> list[StoredPoint]:
        closed_until, _ = self._state(tx)
        order = "DESC" if descending else "ASC"
        parts = split_at(start, end, closed_until)
        if descending:
            parts.reverse()
        found: list[StoredPoint] = []
        for table, lo, hi in parts:
            if len(found) < limit:
                rows = tx.all(RAW_POINTS[table, order], (series_id, lo, hi, limit - len(found)))
                found += [StoredPoint(*row) for row in rows]
        return found

    def iter_points(self, series_id: int, start: int, end: int, *, page: int = 20_000) -> Iterator[list[StoredPoint]]:
        """All points of a series in [start, end), a page at a time, each page read in its own transaction."""
        while start < end:
            rows = self.points(series_id, start, end, page)
            if not rows:
                return
            yield rows
            if len(rows) < page:
                return
            start = rows[-1].ts + 1

    def buckets(self, series_id: int, start: int, end: int, width: int) -> list[Bucket]:
        """Aggregates of a series per `width` bucket (epoch-aligned) in [start, end); empty buckets are left out."""
        if width <= 0:
            raise Invalid("bucket width must be positive")
        with self.backend.reading() as tx:
            closed_until, rollups_from = self._state(tx)
            rows: list[PartialRow] = []
            for segment in plan_segments(start, end, width, closed_until, rollups_from):
                if segment.source is Source.RAW:
                    rows += self._raw_partials(tx, series_id, segment.start, segment.end, width, closed_until)
                else:
                    rows += tx.all(ROLLUP_ROWS[segment.source], (series_id, segment.start, segment.end))
        merged = merge_partials(rows, width)
        return [Bucket(key, merged[key]) for key in sorted(merged)]

    def _raw_partials(
        self, tx: Tx, series_id: int, start: int, end: int, width: int, closed_until: int | None
    ) -> list[PartialRow]:
        rows: list[PartialRow] = []
        for table, lo, hi in split_at(start, end, closed_until):
            params = (series_id, series_id, width, width, series_id, lo, hi)
            rows += tx.all(RAW_PARTIALS[table], params)
        return rows

    def latest(self, series_ids: Sequence[int]) -> dict[int, StoredPoint]:
        """The newest point of each series that has one."""
        if not series_ids:
            return {}
        subquery, param = self.backend.id_set(series_ids)
        with self.backend.reading() as tx:
            return self._latest(tx, f"IN {subquery}", (param,))

    def latest_of(self, tenant_id: str, devices: Sequence[str] | None = None) -> list[LatestValue]:
        """The newest point of every series of the tenant (or of these devices) that has one, by device and metric."""
        where, params = "s.tenant_id = ?", [tenant_id]
        if devices is not None:
            subquery, param = self._string_set(sorted(set(devices)))
            where += f" AND s.device IN {subquery}"
            params.append(param)
        order = self.backend.byte_order
        sql = LATEST_OF.format(where=where, owned=where.replace("s.", "o."), order=order)
        with self.backend.reading() as tx:
            rows: list[LatestValue] = tx.all(sql, params + params)
        return rows

    @staticmethod
    def _latest(tx: Tx, ids: str, params: Sequence[Any]) -> dict[int, StoredPoint]:
        """Newest points of the series `series_id <ids>`: closed ones kept as windows close, newer recent ones."""
        found = {
            sid: StoredPoint(ts, value, quality)
            for sid, ts, value, quality in tx.all(
                f"SELECT series_id, ts, value, quality FROM telemetry_latest WHERE series_id {ids}",  # noqa: S608
                params,
            )
        }
        for sid, ts, value, quality in tx.all(RECENT_NEWEST.format(ids=ids), params):
            found[sid] = StoredPoint(ts, value, quality)  # recent points are newer than every closed one
        return found

    # --- retention -----------------------------------------------------------------------------

    def retention_days(self, tenant_id: str) -> int:
        """The tenant's retention of raw points in days (its own, or the platform's default)."""
        with self._retention_lock:
            cached = self._retention.get(tenant_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        with self.backend.reading() as tx:
            row = tx.one("SELECT days FROM telemetry_retention WHERE tenant_id = ?", (tenant_id,))
        days = int(row[0]) if row else self.settings.retention_days
        with self._retention_lock:
            self._retention[tenant_id] = (time.monotonic() + RETENTION_CACHE_S, days)
        return days

    def forget_retention(self, tenant_id: str | None = None) -> None:
        """Drop cached retention (after it changed)."""
        with self._retention_lock:
            if tenant_id is None:
                self._retention.clear()
            else:
                self._retention.pop(tenant_id, None)

    def retention_cutoff(self, tenant_id: str, now: int) -> int:
        """Raw points before this instant are past the tenant's retention (whole UTC days)."""
        return floor_to(now, DAY) - self.retention_days(tenant_id) * DAY

    def apply_retention(self, now: int | None = None) -> RetentionReport:
        """Delete raw points and 1-minute rollups past each tenant's retention, 1-hour rollups past 10 times it."""
        at = self.clock() if now is None else now
        self.forget_retention()
        with self.backend.reading() as tx:
            tenants = [str(t) for (t,) in tx.all("SELECT DISTINCT tenant_id FROM telemetry_series")]
            overrides: dict[str, int] = dict(tx.all("SELECT tenant_id, days FROM telemetry_retention"))
        days = {tenant: int(overrides.get(tenant, self.settings.retention_days)) for tenant in tenants}
        cutoffs = {tenant: floor_to(at, DAY) - d * DAY for tenant, d in days.items()}
        dropped = 0
        if cutoffs:
            # Days every tenant has let go of can go whole (PostgreSQL partitions).
            dropped = self.backend.drop_days_before(min(cutoffs.values()) // DAY)
        deleted: dict[str, int] = {}
        for tenant, cutoff in cutoffs.items():
            hourly_cutoff = floor_to(at, DAY) - days[tenant] * HOURLY_RETENTION_FACTOR * DAY
            closed, recent, minutes, hours, latest = RETENTION_DELETES
            with self.backend.write_guard, self.backend.writing() as tx:
                count = tx.execute(closed, (tenant, cutoff)) + tx.execute(recent, (tenant, cutoff))
                tx.execute(minutes, (tenant, cutoff))
                tx.execute(hours, (tenant, hourly_cutoff))
                tx.execute(latest, (tenant, cutoff))
            deleted[tenant] = count
        return RetentionReport(cutoffs, deleted, dropped)

    def ensure_partitions(self, now: int | None = None) -> None:
        """Create today's and tomorrow's partitions ahead of need (PostgreSQL)."""
        day = (self.clock() if now is None else now) // DAY
        self.backend.ensure_days({day, day + 1})


def split_at(start: int, end: int, closed_until: int | None) -> list[tuple[str, int, int]]:
    """The parts of [start, end) in the closed table and in the recent one."""
    parts: list[tuple[str, int, int]] = []
    if closed_until is not None and start < min(end, closed_until):
        parts.append((CLOSED, start, min(end, closed_until)))
    lower = start if closed_until is None else max(start, closed_until)
    if lower < end:
        parts.append((RECENT, lower, end))
    return parts
