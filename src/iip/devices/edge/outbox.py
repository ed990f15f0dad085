"""The edge agent's store-and-forward queue: one SQLite file in WAL mode.

Every change is one transaction with `synchronous=FULL`, so a point whose append returned survives
a crash or a power cut, and a batch is deleted only in the transaction that records its
acknowledgement. Rows are read oldest first (by id). When the queue is full the oldest points are
dropped and counted: after a long outage the newest readings are the ones an operator needs.
Points older than `max_age_s` are dropped the same way. One agent owns the file (an exclusive lock
on `<file>.lock`); `read_counters` reads it from another process without taking the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

SCHEMA_VERSION = 1
COUNTERS = ("queued", "sent", "dropped", "rejected", "dead_lettered")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox_point (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    metric TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    value TEXT NOT NULL,          -- JSON, so numbers, booleans and text keep their type
    quality INTEGER NOT NULL,
    enqueued_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox_dead_letter (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    reason TEXT NOT NULL,
    points INTEGER NOT NULL,
    payload BLOB NOT NULL         -- the request body the platform refused
);
CREATE TABLE IF NOT EXISTS outbox_counter (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

# metric, ts_ms, value, quality[, detail]: the fields of a driver's reading that travel
Reading = Sequence[Any]


class OutboxError(Exception):
    """The outbox cannot be opened or used; the message is one readable line."""


@dataclass(frozen=True, slots=True)
class QueuedPoint:
    id: int
    device: str
    metric: str
    ts_ms: int
    value: Any  # float, int, bool or str
    quality: int


@dataclass(frozen=True, slots=True)
class OutboxBatch:
    """The oldest pending points, in the order they were appended."""

    points: tuple[QueuedPoint, ...]

    def __len__(self) -> int:
        return len(self.points)

    @property
    def ids(self) -> tuple[int, int]:
        return self.points[0].id, self.points[-1].id


@dataclass(frozen=True, slots=True)
class DeadLetterPart:
    """Points of a batch the platform refused as a whole (400/422), kept for an operator."""

    point_ids: frozenset[int]
    reason: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    at_ms: int
    reason: str
    points: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class OutboxCounters:
    """`queued` = `sent` + `dropped` + `rejected` + `dead_lettered` + `pending` (totals since creation)."""

    pending: int
    queued: int
    sent: int
    dropped: int
    rejected: int
    dead_lettered: int
    dead_letters: int  # rows in the dead-letter table
    oldest_pending_ms: int | None  # when the oldest pending point was queued


def _connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    uri = f"{path.resolve().as_uri()}?mode=ro" if read_only else f"{path.resolve().as_uri()}?mode=rwc"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=5.0)
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def _is_finite(value: Any) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


class Outbox:
    """Opened by the agent for its lifetime; thread-safe (the agent calls it from worker threads)."""

    def __init__(
        self, path: Path, *, max_points: int = 5_000_000, max_age_s: int = 0, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = path
        self.max_points = max_points
        self.max_age_s = max_age_s
        self._clock = clock
        self._mutex = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_file = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as err:
            raise OutboxError(f"cannot create the outbox {path}: {err.strerror}") from None
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_file)
            raise OutboxError(f"the outbox {path} is in use by another edge agent") from None
        try:
            self._conn = _connect(path)
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = FULL")
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise OutboxError(f"the outbox {path} was written by a newer edge agent (schema {version})")
            self._conn.executescript(_SCHEMA)
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._pending: int = self._conn.execute("SELECT COUNT(*) FROM outbox_point").fetchone()[0]
        except sqlite3.DatabaseError as err:
            self._release_lock()
            raise OutboxError(f"cannot open the outbox {path}: {err}") from None
        except OutboxError:
            self._release_lock()
            raise

    def _release_lock(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            os.close(self._lock_file)

    @property
    def pending(self) -> int:
        return self._pending

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._mutex:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @staticmethod
    def _count(conn: sqlite3.Connection, **increments: int) -> None:
        conn.executemany(
            "INSERT INTO outbox_counter (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            [(name, n) for name, n in increments.items() if n],
        )

    def append(self, device: str, readings: Iterable[Reading]) -> int:
        """Queue a device's readings in one transaction; returns how many were queued.

        Readings without a value (None) or with a non-finite number cannot travel as JSON and are
        counted as dropped. Past `max_points`
        the oldest pending points are dropped.
        """
        now_ms = int(self._clock() * 1000)
        rows = []
        skipped = 0
        for reading in readings:
            metric, ts_ms, value, quality = reading[0], reading[1], reading[2], reading[3]
            if value is None or not _is_finite(value):
                skipped += 1
                continue
            rows.append((device, metric, int(ts_ms), orjson.dumps(value).decode(), int(quality), now_ms))
        if not rows and not skipped:
            return 0
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO outbox_point (device, metric, ts_ms, value, quality, enqueued_ms) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            excess = self._pending + len(rows) - self.max_points
            overflow = 0
            if excess > 0:
                overflow = conn.execute(
                    "DELETE FROM outbox_point WHERE id IN (SELECT id FROM outbox_point ORDER BY id LIMIT ?)", (excess,)
                ).rowcount
            self._count(conn, queued=len(rows) + skipped, dropped=overflow + skipped)
        self._pending += len(rows) - overflow
        return len(rows)

    def read_batch(self, limit: int) -> OutboxBatch | None:
        """The oldest pending points (at most `limit`), or None when nothing is pending."""
        with self._mutex:
            rows = self._conn.execute(
                "SELECT id, device, metric, ts_ms, value, quality FROM outbox_point ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        if not rows:
            return None
        return OutboxBatch(tuple(QueuedPoint(i, d, m, ts, orjson.loads(v), q) for i, d, m, ts, v, q in rows))

    def settle(
        self,
        batch: OutboxBatch,
        *,
        rejected: Iterable[int] = (),
        dead_letters: Sequence[DeadLetterPart] = (),
    ) -> None:
        """The platform answered for `batch`: delete it, counting what it accepted, rejected per line,
        and refused as a whole (kept in the dead-letter table), in one transaction."""
        first, last = batch.ids
        rejected_ids = set(rejected)
        dead_ids = set().union(*(part.point_ids for part in dead_letters)) if dead_letters else set()
        now_ms = int(self._clock() * 1000)
        with self._transaction() as conn:
            # Points dropped for space meanwhile are already counted; count only what is still here.
            present = {
                row[0]
                for row in conn.execute("SELECT id FROM outbox_point WHERE id BETWEEN ? AND ?", (first, last))
                if row[0] in rejected_ids or row[0] in dead_ids
            }
            deleted = conn.execute("DELETE FROM outbox_point WHERE id BETWEEN ? AND ?", (first, last)).rowcount
            conn.executemany(
                "INSERT INTO outbox_dead_letter (at_ms, reason, points, payload) VALUES (?, ?, ?, ?)",
                [(now_ms, part.reason, len(part.point_ids & present), part.payload) for part in dead_letters],
            )
            n_rejected = len(rejected_ids & present)
            n_dead = len((dead_ids & present) - rejected_ids)
            self._count(conn, sent=deleted - n_rejected - n_dead, rejected=n_rejected, dead_lettered=n_dead)
        self._pending -= deleted

    def expire(self) -> int:
        """Drop points queued more than `max_age_s` ago; returns how many."""
        if not self.max_age_s:
            return 0
        cutoff = int((self._clock() - self.max_age_s) * 1000)
        with self._mutex:
            oldest = self._conn.execute("SELECT enqueued_ms FROM outbox_point ORDER BY id LIMIT 1").fetchone()
        if oldest is None or oldest[0] >= cutoff:
            return 0
        with self._transaction() as conn:
            dropped = conn.execute("DELETE FROM outbox_point WHERE enqueued_ms < ?", (cutoff,)).rowcount
            self._count(conn, dropped=dropped)
        self._pending -= dropped
        return dropped

    def counters(self) -> OutboxCounters:
        with self._mutex:
            return _counters(self._conn)

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        with self._mutex:
            return _dead_letters(self._conn, limit)

    def close(self) -> None:
        """Checkpoint the WAL into the main file and release the lock."""
        with self._mutex:
            with contextlib.suppress(sqlite3.DatabaseError):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
        self._release_lock()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _counters(conn: sqlite3.Connection) -> OutboxCounters:
    totals: Mapping[str, int] = dict(conn.execute("SELECT name, value FROM outbox_counter").fetchall())
    pending, oldest = conn.execute("SELECT COUNT(*), MIN(enqueued_ms) FROM outbox_point").fetchone()
    dead_rows = conn.execute("SELECT COUNT(*) FROM outbox_dead_letter").fetchone()[0]
    return OutboxCounters(
        pending=pending,
        queued=totals.get("queued", 0),
        sent=totals.get("sent", 0),
        dropped=totals.get("dropped", 0),
        rejected=totals.get("rejected", 0),
        dead_lettered=totals.get("dead_lettered", 0),
        dead_letters=dead_rows,
        oldest_pending_ms=oldest,
    )


def _dead_letters(conn: sqlite3.Connection, limit: int) -> list[DeadLetter]:
    rows = conn.execute(
        "SELECT id, at_ms, reason, points, payload FROM outbox_dead_letter ORDER BY id LIMIT ?", (limit,)
    ).fetchall()
    return [DeadLetter(i, at, reason, points, bytes(payload)) for i, at, reason, points, payload in rows]


def _read_only(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise OutboxError(f"no outbox at {path} (the edge agent has not run with this configuration yet)")
    try:
        conn = _connect(path, read_only=True)
        conn.execute("SELECT 1 FROM outbox_counter LIMIT 1")
    except sqlite3.DatabaseError as err:
        raise OutboxError(f"cannot read the outbox {path}: {err}") from None
    return conn


def read_counters(path: Path) -> OutboxCounters:
    """The counters of an outbox, read-only (works while an agent runs on it)."""
    conn = _read_only(path)
    try:
        return _counters(conn)
    finally:
        conn.close()


def read_dead_letters(path: Path, limit: int = 100) -> list[DeadLetter]:
    conn = _read_only(path)
    try:
        return _dead_letters(conn, limit)
    finally:
        conn.close()
