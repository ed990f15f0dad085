"""Telemetry queries over HTTP under `/api/telemetry`. Thin: parse, call the service, shape.

Times are ISO 8601 or epoch milliseconds; ranges are [start, end) and default to the last 24 hours.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from iip.api.deps import DbSession, audit_object, get_runtime, require
from iip.api.problems import problem_responses
from iip.kernel.auth import Principal
from iip.telemetry.schemas import (
    BucketOut,
    BucketsOut,
    LatestOut,
    PointOut,
    PointsOut,
    RetentionIn,
    RetentionOut,
    SeriesBucketsOut,
    SeriesOut,
    SeriesPointsOut,
)
from iip.telemetry.service import (
    MAX_DEVICES,
    MAX_POINTS,
    ExportFormat,
    RetentionSetting,
    TelemetryService,
    TimeRange,
    parse_bucket,
    parse_functions,
)
from iip.telemetry.store import Aggregate, LatestValue, store_of

router = APIRouter(prefix="/api/telemetry", tags=["telemetry"], responses=problem_responses(401, 403, 404, 409, 422))

Reader = Annotated[Principal, Depends(require("telemetry.read"))]
Writer = Annotated[Principal, Depends(require("telemetry.write"))]
TIME_HELP = "ISO 8601 (2026-01-01T08:00:00Z) or epoch milliseconds"
Start = Annotated[str | None, Query(max_length=40, description=f"{TIME_HELP}; default: a day before `end`")]
End = Annotated[str | None, Query(max_length=40, description=f"{TIME_HELP}, exclusive; default: now")]
Tenant = Annotated[str | None, Query(max_length=100, description="platform operators: tenant id or name")]
Metric = Annotated[str | None, Query(max_length=200, description="one metric; default: all of the device")]


def _service(request: Request, session: DbSession) -> TelemetryService:
    return TelemetryService(session, store_of(get_runtime(request)))


Service = Annotated[TelemetryService, Depends(_service)]


def _range(service: TelemetryService, start: str | None, end: str | None) -> TimeRange:
    return TimeRange.parse(start, end, service.store.clock())


def _latest(rows: list[LatestValue]) -> list[LatestOut]:
    return [
        LatestOut(device=device, metric=metric, ts_ms=ts, value=value, quality=quality)
        for _, device, metric, ts, value, quality in rows
    ]


def _retention(setting: RetentionSetting) -> RetentionOut:
    return RetentionOut(
        tenant_id=setting.tenant_id, days=setting.days, default_days=setting.default_days, own=setting.own
    )


@router.get("/devices/{device}/series", response_model=list[SeriesOut])
def list_series(device: str, principal: Reader, service: Service, tenant: Tenant = None) -> list[SeriesOut]:
    """The metrics a device has reported."""
    refs = service.device_series(principal, device, tenant=tenant)
    return [SeriesOut(device=ref.device, metric=ref.metric) for ref in refs]


@router.get("/devices/{device}/points", response_model=PointsOut)
def raw_points(
    device: str,
    principal: Reader,
    service: Service,
    metric: Metric = None,
    start: Start = None,
    end: End = None,
    limit: Annotated[int, Query(ge=1, le=MAX_POINTS, description="most points in all")] = 1000,
    tenant: Tenant = None,
) -> PointsOut:
    """Raw points in [start, end), oldest first, metric by metric."""
    refs = service.device_series(principal, device, tenant=tenant, metric=metric)
    span = _range(service, start, end)
    answer, truncated = service.points(refs, span, limit)
    return PointsOut(
        start_ms=span.start,
        end_ms=span.end,
        limit=limit,
        truncated=truncated,
        series=[
            SeriesPointsOut(
                device=item.series.device,
                metric=item.series.metric,
                points=[PointOut(ts_ms=p.ts, value=p.value, quality=p.quality) for p in item.points],
            )
            for item in answer
        ],
    )


@router.get("/devices/{device}/buckets", response_model=BucketsOut)
def buckets(
    device: str,
    principal: Reader,
    service: Service,
    metric: Metric = None,
    start: Start = None,
    end: End = None,
    bucket: Annotated[str, Query(max_length=20, description="1m, 5m, 1h, 1d, 30s or seconds")] = "1h",
    fn: Annotated[
        list[str] | None, Query(max_length=10, description="avg, min, max, sum, count, first, last (comma-separated)")
    ] = None,
    tenant: Tenant = None,
) -> BucketsOut:
    """Aggregates per bucket (aligned to the epoch, UTC); buckets without points are left out."""
    width = parse_bucket(bucket)
    functions = parse_functions(fn)
    refs = service.device_series(principal, device, tenant=tenant, metric=metric)
    span = _range(service, start, end)
    answer = service.buckets(refs, span, width)
    series = []
    for item in answer:
        shaped = []
        for b in item.buckets:
            values: dict[str, float | int] = {a.value: b.aggregates.value(a) for a in functions}
            if Aggregate.COUNT in functions:
                values["count"] = b.aggregates.count
            shaped.append(BucketOut(start_ms=b.start, **values))
        series.append(SeriesBucketsOut(device=item.series.device, metric=item.series.metric, buckets=shaped))
    return BucketsOut(
        start_ms=span.start, end_ms=span.end, bucket_ms=width, functions=[a.value for a in functions], series=series
    )


@router.get("/devices/{device}/latest", response_model=list[LatestOut])
def device_latest(device: str, principal: Reader, service: Service, tenant: Tenant = None) -> list[LatestOut]:
    """The newest value of each metric of a device."""
    return _latest(service.latest(service.device_series(principal, device, tenant=tenant)))


@router.get("/latest", response_model=list[LatestOut])
def latest(
    principal: Reader,
    service: Service,
    device: Annotated[
        list[str] | None, Query(max_length=MAX_DEVICES, description="devices (repeat); default: all")
    ] = None,
    tenant: Tenant = None,
) -> list[LatestOut]:
    """The newest value of every metric of the named devices, or of all the tenant's devices."""
    return _latest(service.latest_of_devices(principal, device or [], tenant))


@router.get(
    "/devices/{device}/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}, "application/vnd.apache.parquet": {}}}},
)
def export(
    device: str,
    principal: Reader,
    service: Service,
    metric: Metric = None,
    start: Start = None,
    end: End = None,
    export_format: Annotated[ExportFormat, Query(alias="format")] = ExportFormat.CSV,
    tenant: Tenant = None,
) -> StreamingResponse:
    """The device's (or one metric's) points in [start, end) as CSV or Parquet, streamed."""
    refs = service.device_series(principal, device, tenant=tenant, metric=metric)
    result = service.export(refs, _range(service, start, end), export_format)
    headers = {"Content-Disposition": f'attachment; filename="{result.filename}"'}
    return StreamingResponse(result.chunks, media_type=result.media_type, headers=headers)


@router.get("/retention", response_model=RetentionOut)
def get_retention(principal: Reader, service: Service, tenant: Tenant = None) -> RetentionOut:
    """How long the tenant's raw points are kept."""
    return _retention(service.retention(principal, tenant))


@router.put("/retention", response_model=RetentionOut)
def put_retention(
    body: RetentionIn, principal: Writer, service: Service, request: Request, tenant: Tenant = None
) -> RetentionOut:
    """Keep the tenant's raw points this many days (1-minute rollups too; 1-hour rollups ten times as long)."""
    setting = service.set_retention(principal, body.days, tenant)
    audit_object(request, "telemetry_retention", setting.tenant_id)
    return _retention(setting)


@router.delete("/retention", response_model=RetentionOut)
def delete_retention(principal: Writer, service: Service, request: Request, tenant: Tenant = None) -> RetentionOut:
    """Return the tenant to the platform's default retention."""
    setting = service.set_retention(principal, None, tenant)
    audit_object(request, "telemetry_retention", setting.tenant_id)
    return _retention(setting)
