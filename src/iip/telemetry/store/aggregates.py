"""Bucket arithmetic: which parts of a range rollups answer, and merging partial aggregates.

Pure functions, no I/O. Buckets are aligned to the Unix epoch (UTC), so a 1-minute rollup lies in
exactly one bucket of any width that is a whole number of minutes, and a 1-hour rollup likewise.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

SECOND = 1_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
MAX_TS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def floor_to(ts: int, width: int) -> int:
    return ts - ts % width


def ceil_to(ts: int, width: int) -> int:
    return -(-ts // width) * width


class Aggregate(StrEnum):
    AVG = "avg"
    MIN = "min"
    MAX = "max"
    SUM = "sum"
    COUNT = "count"
    FIRST = "first"
    LAST = "last"


class Source(StrEnum):
    RAW = "raw"
    MINUTE = "1m"
    HOUR = "1h"


@dataclass(frozen=True, slots=True)
class Segment:
    """A part [start, end) of a queried range and where its aggregates come from."""

    source: Source
    start: int
    end: int


def plan_segments(
    start: int, end: int, width: int, closed_until: int | None, rollups_from: int | None
) -> list[Segment]:
    """Cover [start, end) with rollups where they are complete and whole, raw points elsewhere.

    1-minute rollups are complete for minutes in [rollups_from, closed_until); 1-hour rollups for
    hours wholly inside that range. A bucket width that is not a whole number of minutes (or hours)
    cannot use them.
    """
    if end <= start:
        return []
    if closed_until is None or rollups_from is None or width % MINUTE:
        return [Segment(Source.RAW, start, end)]
    first_minute = ceil_to(max(start, rollups_from), MINUTE)
    end_minute = floor_to(min(end, closed_until), MINUTE)
    if first_minute >= end_minute:
        return [Segment(Source.RAW, start, end)]
    parts: list[Segment] = [Segment(Source.RAW, start, first_minute)]
    first_hour, end_hour = ceil_to(first_minute, HOUR), floor_to(end_minute, HOUR)
    if width % HOUR == 0 and first_hour < end_hour:
        parts += [
            Segment(Source.MINUTE, first_minute, first_hour),
            Segment(Source.HOUR, first_hour, end_hour),
            Segment(Source.MINUTE, end_hour, end_minute),
        ]
    else:
        parts.append(Segment(Source.MINUTE, first_minute, end_minute))
    parts.append(Segment(Source.RAW, end_minute, end))
    return [p for p in parts if p.start < p.end]


@dataclass(slots=True)
class Partial:
    """Aggregates of some points of one bucket; partials of one bucket merge into its aggregates."""

    count: int
    total: float
    minimum: float
    maximum: float
    first_ts: int
    first_value: float
    last_ts: int
    last_value: float

    def merge(self, other: Partial) -> None:
        self.count += other.count
        self.total += other.total
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)
        if other.first_ts < self.first_ts:
            self.first_ts, self.first_value = other.first_ts, other.first_value
        if other.last_ts > self.last_ts:
            self.last_ts, self.last_value = other.last_ts, other.last_value

    def value(self, aggregate: Aggregate) -> float:  # noqa: PLR0911 - one return per aggregate
        match aggregate:
            case Aggregate.AVG:
                return self.total / self.count
            case Aggregate.MIN:
                return self.minimum
            case Aggregate.MAX:
                return self.maximum
            case Aggregate.SUM:
                return self.total
            case Aggregate.COUNT:
                return float(self.count)
            case Aggregate.FIRST:
                return self.first_value
            case Aggregate.LAST:
                return self.last_value


# (bucket start, count, total, minimum, maximum, first_ts, first_value, last_ts, last_value)
PartialRow = tuple[int, int, float, float, float, int, float, int, float]


def merge_partials(rows: Iterable[PartialRow], width: int) -> dict[int, Partial]:
    """Partial aggregates keyed by the start of their `width` bucket, merged per bucket."""
    merged: dict[int, Partial] = {}
    for bucket, count, total, minimum, maximum, first_ts, first_value, last_ts, last_value in rows:
        key = floor_to(bucket, width)
        part = Partial(int(count), float(total), minimum, maximum, first_ts, first_value, last_ts, last_value)
        existing = merged.get(key)
        if existing is None:
            merged[key] = part
        else:
            existing.merge(part)
    return merged
