"""`iip analytics train|evaluate|score|list|deploy|retire`.

The operator at the console acts for the tenant named, as an administrator of it. A model is named
`NAME` (its newest version) or `NAME@VERSION`. Deployments made here reach the running platform's
live scorers within a few seconds (they watch the deployments table).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer
from rich.markup import escape
from rich.table import Column, Table
from sqlalchemy.orm import Session

from iip.cli.context import cli_principal, fail, out_console, state, unit_of_work

if TYPE_CHECKING:
    from iip.analytics.service import AnalyticsService, Classification, Evaluation, RulReport

analytics_app = typer.Typer(
    help="Analytics models: train, evaluate, score, list, deploy, retire.", no_args_is_help=True
)

Tenant = Annotated[str, typer.Option("--tenant", help="Tenant name.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
ModelArg = Annotated[str, typer.Argument(help="NAME (its newest version) or NAME@VERSION.")]
FileArg = Annotated[Path, typer.Argument(help="A CSV (header row) or Parquet file.")]
UnitColumn = Annotated[str | None, typer.Option("--unit-column", help="rul models: the column naming each row's unit.")]
MAX_FILE_BYTES = 64 * 1024 * 1024


def _service(ctx: typer.Context, session: Session, tenant: str, *, telemetry: bool = False) -> AnalyticsService:
    from iip.analytics.service import AnalyticsService
    from iip.kernel.auth import AccessService, Principal, Role

    found = AccessService(session).tenant_by_name(tenant)
    who = cli_principal().removeprefix("cli:")
    actor = Principal("cli", who, who, found.id, Role.ADMIN)
    runtime = None
    if telemetry:
        from iip.kernel.bus import MemoryBus
        from iip.kernel.runtime import Runtime

        st = state(ctx)
        runtime = Runtime(settings=st.settings, db=st.db, bus=MemoryBus())
    return AnalyticsService(session, actor, runtime=runtime)


def _reference(text: str) -> tuple[str, int | None]:
    name, at, number = text.rpartition("@")
    if not at:
        return text, None
    if not number.isdigit() or int(number) < 1:
        raise fail(f"'{text}': give the version as NAME@NUMBER, e.g. {name or 'pump'}@2")
    return name, int(number)


def _read(path: Path) -> bytes:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise fail(f"{path}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
        return path.read_bytes()
    except OSError as err:
        raise fail(f"cannot read {path}: {err.strerror}") from None


def _time(text: str | None, option: str) -> dt.datetime:
    if text is None:
        raise fail(f"{option}: give the time, ISO 8601 with a zone")
    try:
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        raise fail(f"{option}: '{text}' is not an ISO 8601 time") from None
    if at.tzinfo is None:
        raise fail(f"{option}: give the time with a zone, e.g. 2026-01-05T08:00:00+08:00")
    return at


def _parameters(items: list[str] | None) -> dict[str, Any]:
    """`k=v` pairs; a value that reads as JSON (a number, true) is taken as such, else as text."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise fail(f"--param '{item}': write it as NAME=VALUE, e.g. components=5")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _names(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [name.strip() for name in text.split(",") if name.strip()]


def _line(text: str) -> None:
    out_console.print(escape(text), highlight=False, soft_wrap=True)


def _rate(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else "-"


@analytics_app.command("list")
def list_command(ctx: typer.Context, tenant: Tenant, as_json: AsJson = False) -> None:
    """List the tenant's models with their newest version, its status and measured false-alarm rate."""
    with unit_of_work(ctx) as session:
        service = _service(ctx, session, tenant)
        items = []
        for model in service.list_models():
            latest = service.versions(model)[-1]
            items.append(
                {
                    "name": model.name,
                    "version": latest.version,
                    "kind": latest.kind,
                    "status": latest.status,
                    "variables": len(latest.variables),
                    "false_alarm_rate": latest.metrics.get("false_alarm_rate"),
                    "trained_at": latest.trained_at.isoformat(timespec="seconds"),
                    "trained_by": latest.trained_by,
                }
            )
    if as_json:
        typer.echo(json.dumps(items, ensure_ascii=False, indent=2))
        return
    table = Table(Column("name", no_wrap=True), "version", "kind", "status", "variables", "false alarms", "trained")
    for item in items:
        table.add_row(
            escape(str(item["name"])),
            str(item["version"]),
            str(item["kind"]),
            str(item["status"]),
            str(item["variables"]),
            _rate(item["false_alarm_rate"]),
            f"{item['trained_at']} {escape(str(item['trained_by']))}",
        )
    out_console.print(table)


@analytics_app.command("train")
def train_command(
    ctx: typer.Context,
    tenant: Tenant,
    name: Annotated[str, typer.Option("--name", help="The model's name (a new version if it exists).")],
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            help="pca, dpca, ica, dynamic_mahalanobis, rul (with --unit-column), classifier (with --label-column).",
        ),
    ] = "pca",
    csv_file: Annotated[Path | None, typer.Option("--csv", help="Train on this CSV file.")] = None,
    parquet_file: Annotated[Path | None, typer.Option("--parquet", help="Train on this Parquet file.")] = None,
    variables: Annotated[
        str | None, typer.Option("--variables", help="Comma-separated columns (default: all but time).")
    ] = None,
    time_column: Annotated[str | None, typer.Option("--time-column", help="The file's time column.")] = None,
    unit_column: UnitColumn = None,
    label_column: Annotated[
        str | None, typer.Option("--label-column", help="classifier: the column naming each row's class.")
    ] = None,
    devices: Annotated[
        list[str] | None,
        typer.Option("--device", help="Train on this device's stored telemetry (repeatable; rul: one unit each)."),
    ] = None,
    metrics: Annotated[str | None, typer.Option("--metrics", help="Comma-separated metric names.")] = None,
    start: Annotated[str | None, typer.Option("--from", help="Start of the range, ISO 8601 with a zone.")] = None,
    end: Annotated[str | None, typer.Option("--to", help="End of the range, ISO 8601 with a zone.")] = None,
    interval: Annotated[float, typer.Option("--interval", min=0.001, help="Sample interval, seconds.")] = 60.0,
    false_alarm_rate: Annotated[
        float, typer.Option("--false-alarm-rate", min=0.0001, max=0.4999, help="The rate the limits are set for.")
    ] = 0.01,
    holdout: Annotated[
        float, typer.Option("--holdout", min=0.0, max=0.5, help="Share of the newest samples kept to measure it.")
    ] = 0.2,
    params: Annotated[
        list[str] | None, typer.Option("--param", help="A setting of the kind, NAME=VALUE (repeatable).")
    ] = None,
    description: Annotated[str, typer.Option("--description", help="What the model watches.")] = "",
    as_json: AsJson = False,
) -> None:
    """Train a new version on a file (--csv, --parquet) or on stored telemetry (--device, --metrics, --from, --to)."""
    files = [f for f in (csv_file, parquet_file) if f is not None]
    if len(files) > 1 or (files and devices):
        raise fail("train on one source: --csv, --parquet, or --device with --metrics")
    if not files and not devices:
        raise fail("name the training data: --csv FILE, --parquet FILE, or --device D --metrics a,b --from --to")
    parameters = _parameters(params)
    with unit_of_work(ctx, "analytics.train") as session:
        service = _service(ctx, session, tenant, telemetry=bool(devices))
        if files:
            row = service.train_from_file(
                name,
                kind,
                _read(files[0]),
                files[0].name,
                variables=_names(variables),
                time_column=time_column,
                unit_column=unit_column,
                label_column=label_column,
                parameters=parameters,
                false_alarm_rate=false_alarm_rate,
                holdout=holdout,
                description=description,
            )
        else:
            chosen = _names(metrics)
            if not chosen:
                raise fail("--metrics: name the metrics to train on, comma-separated")
            row = service.train_from_telemetry(
                name,
                kind,
                devices=devices or [],
                metrics=chosen,
                start=_time(start, "--from"),
                end=_time(end, "--to"),
                interval_s=interval,
                parameters=parameters,
                false_alarm_rate=false_alarm_rate,
                holdout=holdout,
                description=description,
            )
        view = service.describe_version(row)
    if as_json:
        typer.echo(view.model_dump_json(indent=2))
        return
    metrics_of = view.metrics
    if view.kind == "classifier":
        recall = metrics_of.get("per_class_recall") or {}
        _line(
            f"trained {view.name}@{view.version} (classifier, {len(view.variables)} variables, "
            f"{metrics_of.get('training_rows')} rows, classes {', '.join(metrics_of.get('classes', []))}): "
            f"accuracy on {metrics_of.get('held_out_rows', 0)} held-out rows {_rate(metrics_of.get('accuracy'))}"
            + ("; recall " + ", ".join(f"{k} {_rate(v)}" for k, v in recall.items()) if recall else "")
        )
        return
    if view.kind == "rul":
        _line(
            f"trained {view.name}@{view.version} (rul, {len(view.variables)} variables, "
            f"{metrics_of.get('units')} units, {metrics_of.get('cycles')} cycles): held-out RMSE "
            f"{metrics_of.get('held_out_rmse', float('nan')):.2f} cycles, interval coverage "
            f"{_rate(metrics_of.get('held_out_coverage'))}"
        )
        return
    _line(
        f"trained {view.name}@{view.version} ({view.kind}, {len(view.variables)} variables, "
        f"{metrics_of.get('training_rows')} rows): limits "
        + ", ".join(f"{k} {v:.4g}" for k, v in view.limits.items())
        + f"; false-alarm rate on {metrics_of.get('held_out_rows', 0)} held-out rows "
        + _rate(metrics_of.get("false_alarm_rate"))
    )


def _rows(evaluation: Evaluation) -> tuple[list[str], list[list[Any]]]:
    """Per-row scores as a header and rows (a time column when the file has one)."""
    scores, table = evaluation.scores, evaluation.table
    names = list(scores.statistics)
    header = ["row", *(["time"] if table.times_ms is not None else []), *names, "alarm", "scored", "missing"]
    absent = [[table.variables[j] for j, gone in enumerate(row) if gone] for row in ~np.isfinite(table.data)]
    out: list[list[Any]] = []
    for i in range(table.rows):
        values: list[Any] = [i + 1]
        if table.times_ms is not None:
            values.append(
                dt.datetime.fromtimestamp(int(table.times_ms[i]) / 1000, dt.UTC).isoformat(timespec="milliseconds")
            )
        for name in names:
            value = float(scores.statistics[name][i])
            values.append(value if math.isfinite(value) else None)
        values += [bool(scores.alarm[i]), bool(scores.valid[i]), ";".join(absent[i])]
        out.append(values)
    return header, out


def _write_rows(header: list[str], rows: list[list[Any]], out: Path | None, output_format: str) -> None:
    if output_format == "json":
        text = json.dumps([dict(zip(header, row, strict=True)) for row in rows], ensure_ascii=False, indent=2)
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
        text = buffer.getvalue()
    if out is None:
        typer.echo(text, nl=not text.endswith("\n"))
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as err:
        raise fail(f"cannot write {out}: {err.strerror}") from None


def _format(out: Path | None, given: str | None) -> str:
    chosen = given or ("json" if out is not None and out.suffix.lower() == ".json" else "csv")
    if chosen not in ("csv", "json"):
        raise fail(f"--format: csv or json, not '{chosen}'")
    return chosen


def _evaluate(
    ctx: typer.Context,
    tenant: str,
    reference: str,
    file: Path,
    label_column: str | None,
    time_column: str | None,
    unit_column: str | None,
) -> tuple[Evaluation | RulReport | Classification, str]:
    name, number = _reference(reference)
    content = _read(file)
    with unit_of_work(ctx) as session:
        service = _service(ctx, session, tenant)
        version = service.get_version(name, number)
        label = f"{service.model_of(version).name}@{version.version}"
        if version.kind == "rul":
            if unit_column is None:
                raise fail(f"{label} is a rul model: name the --unit-column of the file")
            report = service.rul_file(version, content, file.name, unit_column=unit_column, truth_column=label_column)
            return report, label
        if version.kind == "classifier":
            found = service.classify_file(
                version, content, file.name, label_column=label_column, time_column=time_column
            )
            return found, label
        evaluation = service.evaluate_file(
            version, content, file.name, label_column=label_column, time_column=time_column
        )
        return evaluation, label


def _rul_rows(report: RulReport) -> tuple[list[str], list[list[Any]]]:
    header = ["unit", "cycles", "rul", "lower", "upper", "coverage", "missing"]
    rows: list[list[Any]] = []
    for unit, e in report.units:
        numbers = [value if math.isfinite(value) else None for value in (e.point, e.lower, e.upper)]
        rows.append([unit, e.cycles, *numbers, e.coverage, ";".join(e.missing)])
    return header, rows


@analytics_app.command("evaluate")
def evaluate_command(
    ctx: typer.Context,
    model: ModelArg,
    file: FileArg,
    tenant: Tenant,
    label_column: Annotated[
        str | None,
        typer.Option(
            "--label-column", help="0/normal marks a normal row, anything else a fault (rul: the true RUL per row)."
        ),
    ] = None,
    time_column: Annotated[str | None, typer.Option("--time-column", help="The file's time column.")] = None,
    unit_column: UnitColumn = None,
    out: Annotated[Path | None, typer.Option("--out", help="Also write the per-row scores (.csv or .json).")] = None,
    as_json: AsJson = False,
) -> None:
    """Evaluate a version on a file: alarm rate, and false-alarm and detection rates with --label-column.

    For a rul model: the RUL of each unit at its latest cycle, and the RMSE against --label-column.
    For a classifier (--label-column required): accuracy, each class's recall and precision, the
    confusion matrix.
    """
    from iip.analytics.service import Classification, RulReport

    result, label = _evaluate(ctx, tenant, model, file, label_column, time_column, unit_column)
    if isinstance(result, RulReport):
        _rul_summary(result, label, file, out, as_json)
        return
    if isinstance(result, Classification):
        _classification_summary(result, label, file, out, as_json)
        return
    evaluation = result
    scores = evaluation.scores
    summary: dict[str, Any] = {
        "model": label,
        "rows": evaluation.table.rows,
        "scored": int(scores.valid.sum()),
        "missing": sorted(set(scores.missing) | set(evaluation.table.absent)),
        "limits": scores.limits,
        "alarm_rate": evaluation.alarm_rate,
    }
    if evaluation.normal_rows is not None:
        summary.update(
            normal_rows=evaluation.normal_rows,
            fault_rows=evaluation.fault_rows,
            false_alarm_rate=evaluation.false_alarm_rate,
            detection_rate=evaluation.detection_rate,
        )
    if out is not None:
        _write_rows(*_rows(evaluation), out, _format(out, None))
    if as_json:
        typer.echo(json.dumps(summary, ensure_ascii=False, indent=2))
        return
    text = (
        f"{label} on {file.name}: {summary['scored']} of {summary['rows']} rows scored, "
        f"alarm rate {_rate(summary['alarm_rate'])}"
    )
    if evaluation.normal_rows is not None:
        text += (
            f"; false-alarm rate {_rate(evaluation.false_alarm_rate)} on {evaluation.normal_rows} normal rows, "
            f"detection rate {_rate(evaluation.detection_rate)} on {evaluation.fault_rows} fault rows"
        )
    if summary["missing"]:
        text += f"; missing: {', '.join(summary['missing'])}"
    _line(text)


def _classification_summary(found: Classification, label: str, file: Path, out: Path | None, as_json: bool) -> None:
    report = found.report
    if out is not None:
        labels = found.table.labels or []
        rows = [[i, labels[i], guess] for i, guess in enumerate(found.predicted)]
        _write_rows(["row", "label", "predicted"], rows, out, _format(out, None))
    if as_json:
        typer.echo(json.dumps({"model": label, **report}, ensure_ascii=False, indent=2))
        return
    classes = report["confusion"]["classes"]
    lines = [
        f"{label} on {file.name}: accuracy {_rate(report['accuracy'])} on {report['classified_rows']} of "
        f"{report['rows']} rows classified"
    ]
    for name in classes:
        lines.append(
            f"  {name}: recall {_rate(report['per_class_recall'][name])}, "
            f"precision {_rate(report['per_class_precision'][name])}"
        )
    width = max(len(c) for c in classes)
    lines.append("confusion (rows: true class, columns: predicted):")
    lines.append(" " * (width + 2) + " ".join(f"{c:>{max(len(c), 6)}}" for c in classes))
    for name, counts in zip(classes, report["confusion"]["matrix"], strict=True):
        cells = " ".join(f"{n:>{max(len(c), 6)}}" for c, n in zip(classes, counts, strict=True))
        lines.append(f"  {name:<{width}}{cells}")
    typer.echo("\n".join(lines))


def _rul_summary(report: RulReport, label: str, file: Path, out: Path | None, as_json: bool) -> None:
    if out is not None:
        _write_rows(*_rul_rows(report), out, _format(out, None))
    estimated = sum(1 for _, e in report.units if e.valid)
    if as_json:
        summary = {"model": label, "units": len(report.units), "estimated": estimated, "rmse": report.rmse}
        typer.echo(json.dumps(summary, ensure_ascii=False, indent=2))
        return
    text = f"{label} on {file.name}: RUL of {estimated} of {len(report.units)} units"
    if report.rmse is not None:
        text += f", RMSE {report.rmse:.2f} cycles"
    _line(text)


@analytics_app.command("score")
def score_command(
    ctx: typer.Context,
    model: ModelArg,
    file: FileArg,
    tenant: Tenant,
    out: Annotated[Path | None, typer.Option("--out", help="Write here instead of to stdout.")] = None,
    output_format: Annotated[
        str | None, typer.Option("--format", help="csv or json (default: from --out's suffix, else csv).")
    ] = None,
    time_column: Annotated[str | None, typer.Option("--time-column", help="The file's time column.")] = None,
    unit_column: UnitColumn = None,
) -> None:
    """Score a file's rows: per row, each statistic, the alarm flag and the variables it lacked.

    For a rul model: per unit, the RUL at its latest cycle and its interval.
    """
    from iip.analytics.service import Classification, RulReport

    chosen = _format(out, output_format)
    result, label = _evaluate(ctx, tenant, model, file, None, time_column, unit_column)
    if isinstance(result, RulReport):
        _write_rows(*_rul_rows(result), out, chosen)
        return
    if isinstance(result, Classification):  # refused without labels; evaluate names them
        raise fail(f"{label} is a classifier: evaluate it with --label-column")
    _write_rows(*_rows(result), out, chosen)


@analytics_app.command("deploy")
def deploy_command(
    ctx: typer.Context,
    model: ModelArg,
    tenant: Tenant,
    device: Annotated[str, typer.Option("--device", help="The device whose live stream it scores.")],
    classifier: Annotated[
        str | None, typer.Option("--classifier", help="Monitors: a fault classifier NAME[@VERSION] for its alarms.")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option("--threshold", min=0, help="rul: alarm while the lower RUL bound is below (cycles).")
    ] = None,
    interval: Annotated[
        float | None, typer.Option("--interval", min=0.001, help="rul: seconds per cycle (default: as trained).")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="rul: when the unit was new or restored, ISO 8601 (default: now).")
    ] = None,
    staleness: Annotated[
        float | None,
        typer.Option("--staleness", min=0, help="Seconds a variable's last value is held (default: 2 periods)."),
    ] = None,
) -> None:
    """Deploy a version to a device's live stream (ending another version of the model there)."""
    name, number = _reference(model)
    with unit_of_work(ctx, "analytics.deploy") as session:
        service = _service(ctx, session, tenant)
        version = service.get_version(name, number)
        service.deploy(
            version,
            device,
            rul_threshold=threshold,
            interval_s=interval,
            since=_time(since, "--since") if since is not None else None,
            classifier=service.get_version(*_reference(classifier)) if classifier else None,
            staleness_s=staleness,
        )
        label = f"{service.model_of(version).name}@{version.version}"
    _line(f"deployed {label} to {device}")


@analytics_app.command("retire")
def retire_command(
    ctx: typer.Context,
    model: ModelArg,
    tenant: Tenant,
    device: Annotated[
        str | None, typer.Option("--device", help="Only this device's deployment (default: all).")
    ] = None,
) -> None:
    """Stop scoring with a version (on one device, or everywhere)."""
    name, number = _reference(model)
    with unit_of_work(ctx, "analytics.retire") as session:
        service = _service(ctx, session, tenant)
        version = service.get_version(name, number)
        ended = service.retire(version, device)
        label = f"{service.model_of(version).name}@{version.version}"
        status = version.status
    _line(f"{label}: {len(ended)} deployment(s) ended; status {status}")
