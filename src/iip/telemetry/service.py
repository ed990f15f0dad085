"""Telemetry queries: tenant scoping, parameters, and the store's answers shaped for the API and CLI.

Tenant scoping: a principal sees its own tenant. A platform operator may name a tenant (id or
name); without one, a device is looked up in every tenant (a key held by several is ambiguous).
Another tenant's device is indistinguishable from a missing one.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.orm import Session

from iip.kernel.auth import AccessService, Principal
from iip.kernel.errors import Conflict, Forbidden, Invalid, NotFound
from iip.telemetry.repository import RetentionRepository
from iip.telemetry.store import DAY, Aggregate, Bucket, LatestValue, SeriesRef, StoredPoint, TimeSeriesStore
from iip.telemetry.store.aggregates import MAX_TS, SECOND

DEFAULT_SPAN_MS = DAY
MAX_BUCKETS = 100_000
MAX_POINTS = 100_000
MAX_DEVICES = 1_000
MAX_KEY_LENGTH = 200
BUCKET = re.compile(r"^(\d{1,9})([smhd]?)$")
UNIT_MS = {"": SECOND, "s": SECOND, "m": 60 * SECOND, "h": 3_600 * SECOND, "d": DAY}
EPOCH_MS = re.compile(r"^-?\d{1,40}$")


class ExportFormat(StrEnum):
    CSV = "csv"
    PARQUET = "parquet"


MEDIA_TYPES = {ExportFormat.CSV: "text/csv; charset=utf-8", ExportFormat.PARQUET: "application/vnd.apache.parquet"}
CSV_COLUMNS = ("device", "metric", "ts_ms", "time", "value", "quality")


# --- parameters ---------------------------------------------------------------------------------


def parse_instant(text: str, name: str) -> int:
    """An instant as epoch milliseconds or ISO 8601 (a time without zone is UTC)."""
    text = text.strip()
    if EPOCH_MS.match(text):
        value = int(text)
    else:
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            raise Invalid(f"{name}: expected ISO 8601 (2026-01-01T08:00:00Z) or epoch milliseconds") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        value = int(moment.timestamp() * 1000)
    if not 0 <= value <= MAX_TS:
        raise Invalid(f"{name}: must be between 1970 and 9999")
    return value


def parse_bucket(text: str) -> int:
    """A bucket width: `1m`, `5m`, `1h`, `1d`, `30s`, or seconds; in milliseconds."""
    match = BUCKET.match(text.strip().lower())
    if not match:
        raise Invalid("bucket: expected a width such as 1m, 5m, 1h, 1d, 30s or a number of seconds")
    width = int(match.group(1)) * UNIT_MS[match.group(2)]
    if not SECOND <= width <= 366 * DAY:
        raise Invalid("bucket: must be from 1 second to 366 days")
    return width


def parse_functions(values: Sequence[str] | None) -> list[Aggregate]:
    """`fn=avg,max` or repeated `fn=`; the default is avg."""
    names = [part.strip().lower() for value in values or () for part in value.split(",") if part.strip()]
    if not names:
        return [Aggregate.AVG]
    known = {a.value for a in Aggregate}
    unknown = sorted({n for n in names if n not in known})
    if unknown:
        raise Invalid(f"fn: unknown {', '.join(unknown)}; use {', '.join(a.value for a in Aggregate)}")
    return list(dict.fromkeys(Aggregate(n) for n in names))


@dataclass(frozen=True, slots=True)
class TimeRange:
    start: int
    end: int  # exclusive

    @classmethod
    def parse(cls, start: str | None, end: str | None, now: int) -> TimeRange:
        """[start, end): `end` defaults to now (inclusive), `start` to a day before `end`."""
        end_ms = parse_instant(end, "end") if end else now + 1
        start_ms = parse_instant(start, "start") if start else max(0, end_ms - DEFAULT_SPAN_MS)
        if end_ms <= start_ms:
            raise Invalid("end must be after start")
        return cls(start_ms, end_ms)


def check_key(value: str, what: str) -> str:
    if not value or len(value) > MAX_KEY_LENGTH or "\x00" in value:
        raise Invalid(f"{what} must be 1-{MAX_KEY_LENGTH} characters without NUL")
    return value


# --- answers ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeriesPoints:
    series: SeriesRef
    points: list[StoredPoint]


@dataclass(frozen=True, slots=True)
class SeriesBuckets:
    series: SeriesRef
    buckets: list[Bucket]


@dataclass(frozen=True, slots=True)
class Export:
    filename: str
    media_type: str
    chunks: Iterator[bytes]


@dataclass(frozen=True, slots=True)
class RetentionSetting:
    tenant_id: str
    days: int
    default_days: int
    own: bool


class TelemetryService:
    """Use cases over the store. `session` is the caller's unit of work (tenants, retention)."""

    def __init__(self, session: Session, store: TimeSeriesStore) -> None:
        self.session = session
        self.store = store

    # tenants and devices

    def tenant_of(self, principal: Principal, tenant: str | None) -> str:
        """The tenant a call acts in: the principal's, or the one a platform operator names."""
        if not tenant:
            return principal.tenant_id
        check_key(tenant, "tenant")
        access = AccessService(self.session)
        if not principal.is_platform:
            if tenant == principal.tenant_id or tenant == access.get_tenant(principal.tenant_id).name:
                return principal.tenant_id
            raise Forbidden("only platform operators can choose the tenant", code="tenant_not_yours")
        try:
            return access.get_tenant(tenant).id
        except NotFound:
            return access.tenant_by_name(tenant).id

    def device_series(
        self, principal: Principal, device: str, *, tenant: str | None = None, metric: str | None = None
    ) -> list[SeriesRef]:
        """The device's series (or its one series `metric`); NotFound when it has none."""
        check_key(device, "device")
        if tenant or not principal.is_platform:
            tenant_id = self.tenant_of(principal, tenant)
        else:
            tenants = self.store.tenants_with_device(device)
            if len(tenants) > 1:
                raise Conflict(
                    f"device '{device}' exists in {len(tenants)} tenants; name one with `tenant`",
                    code="ambiguous_device",
                )
            tenant_id = tenants[0] if tenants else principal.tenant_id
        refs = self.store.series(tenant_id, device)
        if not refs:
            raise NotFound(f"device '{device}' has no telemetry")
        if metric is None:
            return refs
        check_key(metric, "metric")
        chosen = [ref for ref in refs if ref.metric == metric]
        if not chosen:
            raise NotFound(f"device '{device}' has no metric '{metric}'")
        return chosen

    # queries

    def points(self, refs: Sequence[SeriesRef], span: TimeRange, limit: int) -> tuple[list[SeriesPoints], bool]:
        """Raw points in the range, series by series, at most `limit` in all; and whether it stopped short."""
        if not 1 <= limit <= MAX_POINTS:
            raise Invalid(f"limit must be 1-{MAX_POINTS}")
        answer: list[SeriesPoints] = []
        left = limit
        truncated = False
        for ref in refs:
            if left == 0:
                truncated = True
                break
            rows = self.store.points(ref.id, span.start, span.end, left + 1)
            if len(rows) > left:
                truncated, rows = True, rows[:left]
            left -= len(rows)
            answer.append(SeriesPoints(ref, rows))
        return answer, truncated

    def buckets(self, refs: Sequence[SeriesRef], span: TimeRange, width: int) -> list[SeriesBuckets]:
        if (span.end - span.start) / width > MAX_BUCKETS:
            raise Invalid(f"the range holds more than {MAX_BUCKETS} buckets of that width; widen the bucket")
        return [SeriesBuckets(ref, self.store.buckets(ref.id, span.start, span.end, width)) for ref in refs]

    def latest(self, refs: Sequence[SeriesRef]) -> list[LatestValue]:
        found = self.store.latest([ref.id for ref in refs])
        return [(ref.id, ref.device, ref.metric, *found[ref.id]) for ref in refs if ref.id in found]

    def latest_of_devices(
        self, principal: Principal, devices: Sequence[str], tenant: str | None = None
    ) -> list[LatestValue]:
        """Latest values of the named devices of the tenant, or of all its devices."""
        if len(devices) > MAX_DEVICES:
            raise Invalid(f"at most {MAX_DEVICES} devices at once")
        tenant_id = self.tenant_of(principal, tenant)
        for device in devices:
            check_key(device, "device")
        return self.store.latest_of(tenant_id, devices or None)

    def export(self, refs: Sequence[SeriesRef], span: TimeRange, fmt: ExportFormat) -> Export:
        """The points of the series in the range as CSV or Parquet, produced while being sent."""
        device = refs[0].device if refs else "telemetry"
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", device if len(refs) != 1 else f"{device}-{refs[0].metric}")
        chunks = (
            csv_chunks(self.store, refs, span) if fmt is ExportFormat.CSV else parquet_chunks(self.store, refs, span)
        )
        return Export(f"{stem}.{fmt.value}", MEDIA_TYPES[fmt], chunks)

    # retention

    def retention(self, principal: Principal, tenant: str | None = None) -> RetentionSetting:
        tenant_id = self.tenant_of(principal, tenant)
        own = RetentionRepository(self.session).get(tenant_id)
        default = self.store.settings.retention_days
        return RetentionSetting(tenant_id, own.days if own else default, default, own is not None)

    def set_retention(self, principal: Principal, days: int | None, tenant: str | None = None) -> RetentionSetting:
        """Give the tenant its own retention, or (None) return it to the platform's default."""
        tenant_id = self.tenant_of(principal, tenant)
        repo = RetentionRepository(self.session)
        if days is None:
            repo.clear(tenant_id)
        else:
            if not 1 <= days <= 36_500:
                raise Invalid("retention must be 1-36500 days")
            repo.set(tenant_id, days)
        self.store.forget_retention(tenant_id)
        return self.retention(principal, tenant_id if principal.is_platform else None)


# --- export formats -----------------------------------------------------------------------------


def iso_time(ts: int) -> str:
    moment = dt.datetime.fromtimestamp(ts / 1000, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def csv_chunks(store: TimeSeriesStore, refs: Sequence[SeriesRef], span: TimeRange) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for ref in refs:
        for page in store.iter_points(ref.id, span.start, span.end):
            writer.writerows((ref.device, ref.metric, p.ts, iso_time(p.ts), repr(p.value), p.quality) for p in page)
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()


class _Chunks(io.RawIOBase):
    """A write-only file whose bytes are taken as they come (pyarrow writes a row group at a time)."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        chunk = bytes(data)  # type: ignore[call-overload]  # any buffer pyarrow hands over
        self._parts.append(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def parquet_chunks(store: TimeSeriesStore, refs: Sequence[SeriesRef], span: TimeRange) -> Iterator[bytes]:
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    schema = pa.schema(
        [
            ("device", pa.string()),
            ("metric", pa.string()),
            ("time", pa.timestamp("ms", tz="UTC")),
            ("value", pa.float64()),
            ("quality", pa.int16()),
        ]
    )
    sink = _Chunks()
    with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
        for ref in refs:
            for page in store.iter_points(ref.id, span.start, span.end, page=50_000):
                columns = {
                    "device": pa.array([ref.device] * len(page), pa.string()),
                    "metric": pa.array([ref.metric] * len(page), pa.string()),
                    "time": pa.array([p.ts for p in page], pa.timestamp("ms", tz="UTC")),
                    "value": pa.array([p.value for p in page], pa.float64()),
                    "quality": pa.array([p.quality for p in page], pa.int16()),
                }
                writer.write_table(pa.table(columns, schema=schema))
                yield sink.take()
    yield sink.take()
