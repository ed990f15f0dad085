"""Capture's inserts: prepared rows (`capture_workers`) into the event and lookup tables, in plain SQL.

SQLAlchemy's per-row work would cost more than the database's, so rows go to the driver as they are:

- SQLite: events in multi-row `INSERT ... ON CONFLICT DO NOTHING RETURNING`, lookup rows by
  `executemany`;
- PostgreSQL: events by binary COPY into a temporary staging table, then one `INSERT ... SELECT ...
  ON CONFLICT DO NOTHING RETURNING` in their order; lookup rows by binary COPY straight into their
  tables. psycopg writes COPY rows in C, where parameters as arrays were escaped value by value in Python.

Both run in the caller's transaction (and savepoint). An event whose hash the tenant holds already,
a concurrent capture's too, is skipped by the database, not the caller.

On SQLite a job's inserts touch index pages all over ten B-trees (random hashes and identifiers):
with the default 2 MiB page cache, pages are evicted and read back within the transaction. A
capture widens its connection's cache (`capture_page_cache`) while it writes, and gives the
connection back with its own size.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import lru_cache
from itertools import chain
from typing import Any, cast

from sqlalchemy import JSON, Column, Table, TypeDecorator
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from iip.traceability.capture_workers import EPC_COLUMNS, EVENT_COLUMNS, LINK_COLUMNS, SENSOR_COLUMNS, Row
from iip.traceability.models import Event, EventEpc, EventLink, SensorReport

_EVENT = cast("Table", Event.__table__)
_EVENT_EPC = cast("Table", EventEpc.__table__)
_EVENT_LINK = cast("Table", EventLink.__table__)
_SENSOR_REPORT = cast("Table", SensorReport.__table__)
_EVENTS_PER_INSERT = 500  # rows per multi-row INSERT on SQLite: 15 parameters each, within its 32,766
# SQLite page cache while a capture writes, KiB: a job of 5,000 events on a 50,000-event repository
# took 67 µs of SQLite's CPU per event with the default cache, 59 with 16 MiB, 54 with 32, 50 with 64, 55 with 256.
CAPTURE_PAGE_CACHE_KIB = 65_536
WIDE_CACHE_MIN_EVENTS = 1_000  # fewer fit the default cache: the three PRAGMAs would cost more than they save
_ON_CONFLICT = "ON CONFLICT (tenant_id, event_hash) DO NOTHING RETURNING id, event_hash"
# The lookup tables with their columns, in the order `capture_workers` builds their rows.
LOOKUPS = ((_EVENT_EPC, EPC_COLUMNS), (_EVENT_LINK, LINK_COLUMNS), (_SENSOR_REPORT, SENSOR_COLUMNS))


def _pg_type(column: Column[Any]) -> str:
    """The PostgreSQL type a column's values are sent as in binary COPY (JSON goes as text and is cast)."""
    kind = column.type
    if isinstance(kind, TypeDecorator):
        kind = kind.impl_instance
    for python_type, name in ((bool, "bool"), (int, "int8"), (float, "float8"), (dt.datetime, "timestamptz")):
        try:
            if kind.python_type is python_type:
                return name
        except NotImplementedError:  # JSON has no single Python type
            break
    return "text"


@lru_cache(maxsize=8)
def _pg_types(table: Table, columns: tuple[str, ...]) -> list[str]:
    return [_pg_type(table.c[name]) for name in columns]


_STAGING = "traceability_capture_staging"
# One per connection (IF NOT EXISTS also survives a rolled-back first use); emptied as it is read and at commit.
_STAGING_TABLE = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGING} (position bigserial, "
    + ", ".join(f"{name} {_pg_type(_EVENT.c[name])}" for name in EVENT_COLUMNS)
    + ") ON COMMIT DELETE ROWS"
)


class RepositoryRefused(Exception):
    """The database refused a write; `reason` is the driver's error class name."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@contextmanager
def capture_page_cache(session: Session, events: int) -> Iterator[None]:
    """On SQLite, for a job of `events` events (`WIDE_CACHE_MIN_EVENTS` or more), the session's
    connection with a page cache of `CAPTURE_PAGE_CACHE_KIB` inside, its own size after.

    The cache size is the connection's (not the transaction's): it is set back however the block
    ends, so a pooled connection keeps its memory bound for its later work.
    """
    connection = session.connection()
    if connection.dialect.name != "sqlite" or events < WIDE_CACHE_MIN_EVENTS:
        yield
        return
    own = int(connection.exec_driver_sql("PRAGMA cache_size").scalar_one())
    connection.exec_driver_sql(f"PRAGMA cache_size = -{CAPTURE_PAGE_CACHE_KIB}")
    try:
        yield
    finally:
        with suppress(DBAPIError):  # a broken connection: the pool discards it with its cache
            connection.exec_driver_sql(f"PRAGMA cache_size = {own}")


def insert_events(session: Session, rows: Sequence[Row]) -> dict[str, int]:
    """Insert event rows (`EVENT_COLUMNS`) skipping any whose hash the tenant holds: hash → id of each written."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        return dict(_pg_insert_events(_driver_connection(session), rows))
    ids: dict[str, int] = {}
    for at in range(0, len(rows), _EVENTS_PER_INSERT):
        batch = rows[at : at + _EVENTS_PER_INSERT]
        parameters = tuple(chain.from_iterable(batch))
        ids.update((row[1], row[0]) for row in connection.exec_driver_sql(_sqlite_event_insert(len(batch)), parameters))
    return ids


def insert_lookups(session: Session, lookups: Sequence[list[Row]]) -> None:
    """Insert lookup rows, one list per table of `LOOKUPS`, each row with its event's id last."""
    connection = session.connection()
    postgres = connection.dialect.name == "postgresql"
    for (table, columns), rows in zip(LOOKUPS, lookups, strict=True):
        if not rows:
            continue
        if postgres:
            _pg_copy(_driver_connection(session), table, columns, rows)
        else:
            connection.exec_driver_sql(_sqlite_insert(table.name, columns), rows)


@lru_cache(maxsize=32)
def _sqlite_event_insert(rows: int) -> str:
    """A multi-row INSERT of event rows that skips one whose hash the tenant holds (a concurrent
    capture's too) and returns the id and hash of each row written."""
    row = f"({', '.join('?' * len(EVENT_COLUMNS))})"
    values = ", ".join([row] * rows)
    return f"INSERT INTO {_EVENT.name} ({', '.join(EVENT_COLUMNS)}) VALUES {values} {_ON_CONFLICT}"  # noqa: S608 - names from the models


@lru_cache(maxsize=8)
def _sqlite_insert(table: str, columns: tuple[str, ...]) -> str:
    marks = ", ".join("?" * len(columns))
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608 - names from the models


def _driver_connection(session: Session) -> Any:
    """psycopg's connection under the session's, in its transaction."""
    return session.connection().connection.driver_connection


def _pg_copy(connection: Any, table: Table, columns: tuple[str, ...], rows: Sequence[Row]) -> None:
    import psycopg  # PostgreSQL's driver is an optional dependency

    try:
        with (
            connection.cursor() as cursor,
            cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.set_types(_pg_types(table, columns))
            for row in rows:
                copy.write_row(row)
    except psycopg.Error as err:
        raise RepositoryRefused(type(err).__name__) from err


def _pg_insert_events(connection: Any, rows: Sequence[Row]) -> list[tuple[str, int]]:
    import psycopg

    names = ", ".join(EVENT_COLUMNS)
    values = ", ".join(f"{name}::json" if isinstance(_EVENT.c[name].type, JSON) else name for name in EVENT_COLUMNS)
    try:
        with connection.cursor() as cursor:
            cursor.execute(_STAGING_TABLE)
            with cursor.copy(f"COPY {_STAGING} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(_pg_types(_EVENT, EVENT_COLUMNS))
                for row in rows:
                    copy.write_row(row)
            # Ids follow the staged order, which is the document's.
            cursor.execute(
                f"WITH staged AS (DELETE FROM {_STAGING} RETURNING *) "  # noqa: S608 - names from the models
                f"INSERT INTO {_EVENT.name} ({names}) SELECT {values} FROM staged ORDER BY position {_ON_CONFLICT}"
            )
            return [(event_hash, row_id) for row_id, event_hash in cursor.fetchall()]
    except psycopg.Error as err:
        raise RepositoryRefused(type(err).__name__) from err
