"""ORM models of the time-series store and the twin (tables prefixed `telemetry_`).

The store's tables are declared here for the migrations and the schema check; the store itself
(`iip.telemetry.store`) reads and writes them with hand-written SQL on the driver's connection,
because ingest runs at a million points a second and the ORM would cost more than the database.
See docs/adr/0006-telemetry-store-layout.md for the layout.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Double, Integer, SmallInteger, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from iip.kernel.db import Base, utcnow

# --- time-series store ---------------------------------------------------------------------------


class Series(Base):
    """A series: one metric of one device of one tenant, named by a compact integer id."""

    __tablename__ = "telemetry_series"
    __table_args__ = (UniqueConstraint("tenant_id", "device", "metric"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(32))
    device: Mapped[str] = mapped_column(String(200), index=True)  # index: a platform operator's device lookup
    metric: Mapped[str] = mapped_column(String(128))


class Point(Base):
    """Points of closed windows, series-first (one range read per series).

    On PostgreSQL the table is range-partitioned by `ts`, one partition per UTC day, created on demand
    in the `telemetry_partitions` schema.
    """

    __tablename__ = "telemetry_point"
    __table_args__ = ({"sqlite_with_rowid": False, "postgresql_partition_by": "RANGE (ts)"},)

    series_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    ts: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)  # epoch ms, UTC
    value: Mapped[float] = mapped_column(Double)
    quality: Mapped[int] = mapped_column(SmallInteger)


class RecentPoint(Base):
    """Points of open windows, time-first: a batch appends at the end of the index.

    Rows move to `telemetry_point` once their minute is closed (`StoreState.closed_until_ms`).
    """

    __tablename__ = "telemetry_point_recent"
    __table_args__ = ({"sqlite_with_rowid": False},)

    ts: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    series_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    value: Mapped[float] = mapped_column(Double)
    quality: Mapped[int] = mapped_column(SmallInteger)


class _RollupColumns:
    """Aggregates of one series over one bucket, mergeable into wider buckets."""

    series_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)  # start, epoch ms
    count: Mapped[int] = mapped_column(Integer)
    total: Mapped[float] = mapped_column(Double)
    minimum: Mapped[float] = mapped_column(Double)
    maximum: Mapped[float] = mapped_column(Double)
    first_ts: Mapped[int] = mapped_column(BigInteger)
    first_value: Mapped[float] = mapped_column(Double)
    last_ts: Mapped[int] = mapped_column(BigInteger)
    last_value: Mapped[float] = mapped_column(Double)


class RollupMinute(_RollupColumns, Base):
    __tablename__ = "telemetry_rollup_1m"
    __table_args__ = ({"sqlite_with_rowid": False},)


class RollupHour(_RollupColumns, Base):
    __tablename__ = "telemetry_rollup_1h"
    __table_args__ = ({"sqlite_with_rowid": False},)


class LatestPoint(Base):
    """The newest closed point of each series, kept as windows close: latest values without a search."""

    __tablename__ = "telemetry_latest"

    series_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    ts: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[float] = mapped_column(Double)
    quality: Mapped[int] = mapped_column(SmallInteger)


class StoreState(Base):
    """The store's one row: up to where windows are closed (moved and rolled up)."""

    __tablename__ = "telemetry_store_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)  # always 1
    # Points before this instant are in `telemetry_point` (and their rollups are complete); points at
    # or after it are in `telemetry_point_recent`. NULL until the first roll-up.
    closed_until_ms: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # Rollups are complete from here on (NULL: not kept, e.g. while `IIP_TELEMETRY__ROLLUPS` is off).
    rollups_from_ms: Mapped[int | None] = mapped_column(BigInteger, default=None)


class Retention(Base):
    """A tenant's own retention of raw points, overriding `settings.telemetry.retention_days`."""

    __tablename__ = "telemetry_retention"

    tenant_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    days: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


# --- twin

from typing import Any  # noqa: E402 - the twin's tables follow the store's

from sqlalchemy import JSON, ForeignKey  # noqa: E402


class TwinConnection(Base):
    """A device's connection state as its twin last persisted it (last_seen is written at most once a minute)."""

    __tablename__ = "telemetry_twin_connection"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"), primary_key=True)
    device: Mapped[str] = mapped_column(String(200), primary_key=True)
    online: Mapped[bool] = mapped_column(default=False)
    last_seen: Mapped[dt.datetime | None] = mapped_column(default=None)
    since: Mapped[dt.datetime | None] = mapped_column(default=None)  # when `online` last changed
    reason: Mapped[str] = mapped_column(String(200), default="")


class TwinAttribute(Base):
    """A reported (by the device) or desired (by a person or an application) attribute of a twin."""

    __tablename__ = "telemetry_twin_attribute"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("kernel_tenant.id", ondelete="CASCADE"), primary_key=True)
    device: Mapped[str] = mapped_column(String(200), primary_key=True)
    side: Mapped[str] = mapped_column(String(8), primary_key=True)  # reported, desired
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    updated_by: Mapped[str] = mapped_column(String(200), default="")  # principal id, or the ingest source
    updated_at: Mapped[dt.datetime] = mapped_column()
