"""`iip telemetry query|export|retention|maintain`.

The operator at the console reads every tenant, as a platform operator does: `--tenant` (name or
id) is needed only for a device key that several tenants use.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from iip.cli.context import cli_principal, fail, out_console, record, state, unit_of_work
from iip.kernel.auth import Principal, Role
from iip.telemetry.service import (
    ExportFormat,
    TelemetryService,
    TimeRange,
    iso_time,
    parse_bucket,
    parse_functions,
)
from iip.telemetry.store import Aggregate, TimeSeriesStore

telemetry_app = typer.Typer(help="Time-series telemetry: query and export.", no_args_is_help=True)

DeviceOption = Annotated[str, typer.Option("--device", help="Device key.")]
TenantOption = Annotated[str | None, typer.Option("--tenant", help="Tenant name or id (for a shared device key).")]
StartOption = Annotated[str | None, typer.Option("--start", help="ISO 8601 or epoch ms; default: a day before --end.")]
EndOption = Annotated[str | None, typer.Option("--end", help="ISO 8601 or epoch ms, exclusive; default: now.")]


def _store(ctx: typer.Context) -> TimeSeriesStore:
    st = state(ctx)
    return TimeSeriesStore(st.db, st.settings.telemetry)


def _operator() -> Principal:
    name = cli_principal()
    return Principal("cli", name, name, "", Role.PLATFORM_OPERATOR)


@telemetry_app.command("query")
def query(
    ctx: typer.Context,
    device: DeviceOption,
    metric: Annotated[str | None, typer.Option("--metric", help="Metric; default: every metric.")] = None,
    start: StartOption = None,
    end: EndOption = None,
    bucket: Annotated[
        str | None, typer.Option("--bucket", help="Aggregate per bucket: 1m, 5m, 1h, 1d, 30s or seconds.")
    ] = None,
    fn: Annotated[
        list[str] | None, typer.Option("--fn", help="With --bucket: avg, min, max, sum, count, first, last.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100_000, help="Most raw points shown.")] = 1000,
    tenant: TenantOption = None,
) -> None:
    """Show a device's points, or their aggregates per bucket, as a table."""
    store = _store(ctx)
    with unit_of_work(ctx) as session:
        service = TelemetryService(session, store)
        refs = service.device_series(_operator(), device, tenant=tenant, metric=metric)
        span = TimeRange.parse(start, end, store.clock())
        if bucket is None:
            if fn:
                raise fail("--fn needs --bucket")
            answer, truncated = service.points(refs, span, limit)
            table = Table("metric", "time", "value", "quality")
            for item in answer:
                for p in item.points:
                    table.add_row(item.series.metric, iso_time(p.ts), repr(p.value), str(p.quality))
        else:
            width, functions = parse_bucket(bucket), parse_functions(fn)
            table = Table("metric", "bucket", *(f.value for f in functions))
            for series in service.buckets(refs, span, width):
                for b in series.buckets:
                    values = [
                        str(b.aggregates.count) if f is Aggregate.COUNT else repr(b.aggregates.value(f))
                        for f in functions
                    ]
                    table.add_row(series.series.metric, iso_time(b.start), *values)
            truncated = False
    out_console.print(table)
    if truncated:
        out_console.print(f"showing the first {limit} points; narrow the range or raise --limit", soft_wrap=True)


@telemetry_app.command("export")
def export(
    ctx: typer.Context,
    device: DeviceOption,
    output: Annotated[Path, typer.Option("--output", help="File to write (replaced whole, or left untouched).")],
    export_format: Annotated[ExportFormat, typer.Option("--format", help="csv or parquet.")] = ExportFormat.CSV,
    metric: Annotated[str | None, typer.Option("--metric", help="Metric; default: every metric.")] = None,
    start: StartOption = None,
    end: EndOption = None,
    tenant: TenantOption = None,
) -> None:
    """Write a device's (or one metric's) points in a range to a CSV or Parquet file."""
    store = _store(ctx)
    directory = output.resolve().parent
    if not directory.is_dir():
        raise fail(f"cannot write {output}: no directory {directory}")
    with unit_of_work(ctx) as session:
        service = TelemetryService(session, store)
        refs = service.device_series(_operator(), device, tenant=tenant, metric=metric)
        result = service.export(refs, TimeRange.parse(start, end, store.clock()), export_format)
        # Written beside the target and renamed into place: a failure leaves no partial file.
        fd, staged = tempfile.mkstemp(dir=directory, prefix=f".{output.name}.")
        try:
            size = 0
            with os.fdopen(fd, "wb") as file:
                for chunk in result.chunks:
                    file.write(chunk)
                    size += len(chunk)
            os.replace(staged, output)
        except BaseException:
            Path(staged).unlink(missing_ok=True)
            raise
    out_console.print(f"wrote {output} ({export_format.value}, {size} bytes, {len(refs)} series)", soft_wrap=True)


@telemetry_app.command("retention")
def retention(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant name or id.")],
    days: Annotated[
        int | None, typer.Option("--days", min=1, max=36_500, help="Keep raw points this many days.")
    ] = None,
    default: Annotated[bool, typer.Option("--default", help="Return to the platform's default.")] = False,
) -> None:
    """Show a tenant's retention of raw points, or set it (--days) or reset it (--default)."""
    if days is not None and default:
        raise fail("give --days or --default, not both")
    store = _store(ctx)
    action = "telemetry.retention.set"
    with unit_of_work(ctx, action if days is not None or default else None) as session:
        service = TelemetryService(session, store)
        if days is None and not default:
            setting = service.retention(_operator(), tenant)
        else:
            setting = service.set_retention(_operator(), days, tenant)
            record(
                session,
                action,
                object_type="telemetry_retention",
                object_id=setting.tenant_id,
                tenant_id=setting.tenant_id,
                detail=f"{setting.days} days",
            )
    source = "own" if setting.own else "platform default"
    out_console.print(f"tenant {setting.tenant_id}: raw points kept {setting.days} days ({source})", soft_wrap=True)


@telemetry_app.command("maintain")
def maintain(ctx: typer.Context) -> None:
    """Close finished windows (rollups) and apply retention now, as the running platform does periodically."""
    store = _store(ctx)
    with unit_of_work(ctx):  # one-line errors for the store's database errors too
        rolled = store.roll_up()
        report = store.apply_retention()
    closed = iso_time(rolled.closed_until) if rolled.closed_until is not None else "nothing yet"
    out_console.print(f"windows closed until {closed}; {rolled.moved} points moved", soft_wrap=True)
    out_console.print(
        f"retention: {sum(report.deleted.values())} points deleted in {len(report.deleted)} tenants, "
        f"{report.dropped_days} daily partitions dropped",
        soft_wrap=True,
    )
