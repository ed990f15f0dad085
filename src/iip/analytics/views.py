"""What the analytics console pages show, shaped for them: model rows with their key figures, a
version's history, a monitoring chart with its alarm episodes, contribution bars, SPC charts with
the points that break a rule, capability indices, and RUL per unit with its curve over the cycles.

No HTTP and no templates here: the pages read the query or the form, call `AnalyticsService`, and
pass these values to the templates. Labels are message ids, translated when a page renders them.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from iip.analytics import spc
from iip.analytics.fitting import CLASSIFIER, RUL
from iip.analytics.models import Deployment, Model, ModelVersion
from iip.analytics.rul import RulCurve, RulEstimate
from iip.analytics.service import (
    DEPLOYED,
    AnalyticsService,
    Contributions,
    Evaluation,
    RulReport,
    interval_ms,
    telemetry_reader,
    time_ms,
)
from iip.analytics.training import Source, read_telemetry
from iip.console.i18n import N_
from iip.kernel.errors import Invalid
from iip.telemetry.public import Quality

FloatArray = npt.NDArray[np.float64]

KIND_LABELS: dict[str, str] = {
    "pca": N_("PCA"),
    "dpca": N_("Dynamic PCA"),
    "ica": N_("ICA"),
    "dynamic_mahalanobis": N_("Dynamic Mahalanobis distance"),
    RUL: N_("Remaining useful life"),
    CLASSIFIER: N_("Fault classifier"),
}
STATUS_LABELS: dict[str, str] = {
    "trained": N_("Trained"),
    "deployed": N_("Deployed"),
    "retired": N_("Retired"),
}
# Symbols, the same in every language.
STATISTIC_LABELS: dict[str, str] = {"t2": "T²", "spe": "SPE (Q)", "i2": "I²", "ie2": "Ie²", "d2": "D²"}

MAX_CHART_ROWS = 20_000  # grid steps of one monitoring chart: more is unreadable and slow in a browser
MAX_EPISODES = 100
MAX_SPC_POINTS = 50_000
MAX_RUL_UNITS = 100
MAX_RUL_CYCLES = 20_000


def statistic_label(name: str) -> str:
    return STATISTIC_LABELS.get(name, name.upper())


def finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def series(values: Iterable[float]) -> list[float | None]:
    """Numbers for a chart, to 7 significant digits (half the bytes of a float's full repr, more than
    a chart shows); JSON has no NaN, so a missing value is null (a gap in the line)."""
    return [float(f"{v:.7g}") if math.isfinite(v) else None for v in values]


def utc(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def iso_time(at: dt.datetime) -> str:
    """A time as the pages put it in links: ISO 8601 in UTC, to the millisecond when it has them."""
    at = at.astimezone(dt.UTC)
    spec = "milliseconds" if at.microsecond else "seconds"
    return at.isoformat(timespec=spec).replace("+00:00", "Z")


# --- models and versions ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Figure:
    """A key figure of a version: a label (message id) and its value, ready to show."""

    key: str
    label: str
    value: str


def percent(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return f"{value * 100:.2f} %"


def number(value: Any, digits: int = 2) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return f"{value:.{digits}f}"


def key_figures(kind: str, metrics: Mapping[str, Any]) -> list[Figure]:
    """The figures that say how good a version is: measured on data it did not see in fitting."""
    wanted: list[tuple[str, str, str | None]]
    if kind == RUL:
        wanted = [
            ("held_out_rmse", N_("RMSE (held out, cycles)"), number(metrics.get("held_out_rmse"), 1)),
            ("held_out_coverage", N_("Interval coverage (held out)"), percent(metrics.get("held_out_coverage"))),
            ("units", N_("Training units"), number(metrics.get("units"), 0)),
        ]
    elif kind == CLASSIFIER:
        wanted = [
            ("accuracy", N_("Accuracy (held out)"), percent(metrics.get("accuracy"))),
            ("classes", N_("Classes"), ", ".join(map(str, metrics.get("classes") or [])) or None),
        ]
    else:
        wanted = [
            ("false_alarm_rate", N_("False-alarm rate (measured)"), percent(metrics.get("false_alarm_rate"))),
            (
                "false_alarm_rate_target",
                N_("False-alarm rate (target)"),
                percent(metrics.get("false_alarm_rate_target")),
            ),
            ("explained_variance", N_("Explained variance"), percent(metrics.get("explained_variance"))),
            ("components", N_("Components"), number(metrics.get("components"), 0)),
        ]
    return [Figure(key, label, value) for key, label, value in wanted if value is not None]


def other_metrics(kind: str, metrics: Mapping[str, Any]) -> dict[str, str]:
    """Every metric the key figures leave out, as text."""
    shown = {f.key for f in key_figures(kind, metrics)}
    return {name: plain(value) for name, value in sorted(metrics.items()) if name not in shown}


def plain(value: Any) -> str:
    """A parameter or metric value as one short line of text."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={plain(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(plain(v) for v in value)
    return str(value)


def versions_of(session: Session, model_ids: Sequence[str]) -> dict[str, list[ModelVersion]]:
    """The versions of these models, oldest first, without their stored state (which a list never needs)."""
    if not model_ids:
        return {}
    query = (
        select(ModelVersion)
        .options(defer(ModelVersion.state))
        .where(ModelVersion.model_id.in_(model_ids))
        .order_by(ModelVersion.model_id, ModelVersion.version)
    )
    found: dict[str, list[ModelVersion]] = {model_id: [] for model_id in model_ids}
    for row in session.scalars(query):
        found[row.model_id].append(row)
    return found


def active_deployments(session: Session, model_id: str) -> dict[str, list[Deployment]]:
    """The active deployments of a model's versions, by version id, oldest first."""
    query = (
        select(Deployment)
        .where(Deployment.model_id == model_id, Deployment.active.is_(True))
        .order_by(Deployment.deployed_at)
    )
    found: dict[str, list[Deployment]] = {}
    for row in session.scalars(query):
        found.setdefault(row.version_id, []).append(row)
    return found


@dataclass(frozen=True)
class ModelRow:
    model: Model
    latest: ModelVersion | None
    figures: list[Figure]
    deployed: list[int]  # numbers of the versions scoring a live stream


def model_rows(service: AnalyticsService, text: str | None = None) -> list[ModelRow]:
    """The models the principal may see, each with its newest version's status and key figures."""
    models = service.list_models(text=text or None)
    versions = versions_of(service.session, [m.id for m in models])
    rows = []
    for model in models:
        own = versions.get(model.id, [])
        latest = next((v for v in reversed(own) if v.version == model.latest_version), own[-1] if own else None)
        figures = key_figures(latest.kind, latest.metrics) if latest else []
        rows.append(ModelRow(model, latest, figures, [v.version for v in own if v.status == DEPLOYED]))
    return rows


@dataclass(frozen=True)
class VersionView:
    """One version as its model's page shows it."""

    version: ModelVersion
    figures: list[Figure]
    metrics: dict[str, str]
    parameters: dict[str, str]
    source: list[tuple[str, str]]  # (label message id, value)
    deployments: list[Deployment]
    monitor: bool  # a process monitor: deployable, charted; otherwise a RUL model or a classifier

    @property
    def number(self) -> int:
        return self.version.version


SOURCE_FIELDS: tuple[tuple[str, str], ...] = (
    ("type", N_("Source")),
    ("name", N_("File")),
    ("devices", N_("Devices")),
    ("metrics", N_("Metrics")),
    ("start", N_("From")),
    ("end", N_("Until")),
    ("interval_ms", N_("Sample interval")),
    ("rows", N_("Rows")),
    ("units", N_("Units")),
    ("unit_column", N_("Unit column")),
    ("time_column", N_("Time column")),
)
SOURCE_TYPES: dict[str, str] = {"telemetry": N_("Stored telemetry"), "file": N_("Uploaded file")}


def source_facts(data_source: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Where a version's training data came from, in the order a reader wants it."""
    facts = []
    for key, label in SOURCE_FIELDS:
        value = data_source.get(key)
        if value is None or value in ("", []):
            continue
        if key == "interval_ms" and isinstance(value, (int, float)):
            text = f"{value / 1000:g} s"
        elif key == "type":
            text = SOURCE_TYPES.get(str(value), str(value))
        else:
            text = plain(value)
        facts.append((label, text))
    return facts


def version_views(session: Session, model: Model) -> list[VersionView]:
    """A model's versions, newest first, with their figures, training data and active deployments."""
    deployments = active_deployments(session, model.id)
    views = [
        VersionView(
            version=v,
            figures=key_figures(v.kind, v.metrics),
            metrics=other_metrics(v.kind, v.metrics),
            parameters={k: plain(p) for k, p in sorted(v.parameters.items())},
            source=source_facts(v.data_source),
            deployments=deployments.get(v.id, []),
            monitor=v.kind not in (RUL, CLASSIFIER),
        )
        for v in versions_of(session, [model.id]).get(model.id, [])
    ]
    return views[::-1]


def trained_interval_s(version: ModelVersion) -> float | None:
    trained = version.data_source.get("interval_ms")
    return trained / 1000 if isinstance(trained, int) and trained > 0 else None


def trained_device(version: ModelVersion) -> str:
    """The device a one-device model was trained on, the natural first choice to chart."""
    devices = version.data_source.get("devices")
    return str(devices[0]) if isinstance(devices, list) and len(devices) == 1 else ""


def needs_device(version: ModelVersion) -> bool:
    """A variable of no fixed device reads the device named for it."""
    return any(not s.get("device") for s in version.sources)


# --- monitoring chart -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Episode:
    """Consecutive grid steps in alarm; `peak` is the step where a statistic is furthest over its limit."""

    first: int
    last: int
    peak: int
    start: dt.datetime
    end: dt.datetime
    peak_at: dt.datetime
    statistic: str  # the statistic furthest over its limit at the peak
    ratio: float  # that statistic over its limit

    @property
    def steps(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True)
class MonitoringView:
    rows: int
    scored: int
    alarms: int  # grid steps in alarm
    times_ms: list[int]
    statistics: dict[str, list[float | None]]
    limits: dict[str, float]
    alarm_rows: list[int]
    episodes: list[Episode]
    more_episodes: int
    missing: list[str]
    interval_ms: int

    def chart(self) -> dict[str, Any]:
        """What `analytics.js` draws: one panel per statistic with its limit; on each, the samples in
        alarm where that statistic is over its limit."""
        panels = []
        for name, values in self.statistics.items():
            limit = self.limits.get(name)
            over = [i for i in self.alarm_rows if limit is not None and (v := values[i]) is not None and v > limit]
            panels.append(
                {"name": name, "label": statistic_label(name), "values": values, "limit": limit, "alarms": over}
            )
        return {"times": self.times_ms, "panels": panels, "alarms": self.alarm_rows}


def monitoring_view(evaluation: Evaluation, step_ms: int) -> MonitoringView:
    scores, table = evaluation.scores, evaluation.table
    times = [int(t) for t in table.times_ms] if table.times_ms is not None else list(range(table.rows))
    alarm = np.asarray(scores.alarm, dtype=bool)
    ratios = np.full(table.rows, -np.inf)
    worst = [""] * table.rows
    for name, values in scores.statistics.items():
        limit = scores.limits.get(name)
        if not limit or limit <= 0:
            continue
        with np.errstate(invalid="ignore"):
            ratio = np.where(np.isfinite(values), values / limit, -np.inf)
        better = ratio > ratios
        ratios = np.where(better, ratio, ratios)
        for i in np.flatnonzero(better):
            worst[i] = name
    episodes = []
    for first, last in runs(alarm):
        peak = first + int(np.argmax(ratios[first : last + 1]))
        episodes.append(
            Episode(
                first=first,
                last=last,
                peak=peak,
                start=utc(times[first]),
                end=utc(times[last] + step_ms),
                peak_at=utc(times[peak]),
                statistic=worst[peak],
                ratio=float(ratios[peak]),
            )
        )
    return MonitoringView(
        rows=table.rows,
        scored=int(np.asarray(scores.valid).sum()),
        alarms=int(alarm.sum()),
        times_ms=times,
        statistics={name: series(values) for name, values in scores.statistics.items()},
        limits=dict(scores.limits),
        alarm_rows=[int(i) for i in np.flatnonzero(alarm)],
        episodes=episodes[:MAX_EPISODES],
        more_episodes=max(0, len(episodes) - MAX_EPISODES),
        missing=sorted(set(scores.missing) | set(table.absent)),
        interval_ms=step_ms,
    )


def runs(flags: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """(first, last) index of each run of true values."""
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    edges = np.diff(padded)
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def chart_steps(start: dt.datetime, end: dt.datetime, interval_s: float) -> int:
    """Grid steps of a range, as the service will cut it; for refusing a chart too long to draw."""
    step = interval_ms(interval_s)
    return -(-(time_ms(end) - time_ms(start)) // step)


# --- contributions ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bar:
    variable: str
    value: float
    share: float  # of the statistic's total contribution


@dataclass(frozen=True)
class ContributionPanel:
    statistic: str
    label: str
    value: float | None
    limit: float | None
    bars: list[Bar]  # largest first, at most the top N
    others: int  # variables left out of the top N

    @property
    def over(self) -> bool:
        return self.value is not None and self.limit is not None and self.value > self.limit


def contribution_panels(found: Contributions, top: int) -> list[ContributionPanel]:
    panels = []
    for name, shares in found.shares.items():
        ordered = sorted(shares.items(), key=lambda item: (-item[1], item[0]))
        total = sum(max(v, 0.0) for _, v in ordered if math.isfinite(v))
        bars = [Bar(variable, value, value / total if total > 0 else 0.0) for variable, value in ordered[:top]]
        panels.append(
            ContributionPanel(
                statistic=name,
                label=statistic_label(name),
                value=finite(found.statistics.get(name)),
                limit=found.limits.get(name),
                bars=bars,
                others=max(0, len(ordered) - top),
            )
        )
    return panels


# --- statistical process control --------------------------------------------------------------

CHART_TYPES: dict[str, str] = {
    "imr": N_("Individuals and moving range (I-MR)"),
    "xbar_r": N_("Subgroup means and ranges (X̄-R)"),
    "xbar_s": N_("Subgroup means and standard deviations (X̄-S)"),
    "ewma": N_("EWMA"),
    "cusum": N_("CUSUM"),
}
RULE_SETS: dict[str, str] = {"we": N_("Western Electric"), "nelson": N_("Nelson")}
BEYOND_LIMITS = "beyond_limits"
CUSUM_SIGNAL = "cusum_signal"
RULE_LABELS: dict[str, str] = {
    "we_1": N_("Western Electric 1: one point beyond 3 sigma"),
    "we_2": N_("Western Electric 2: two of three points beyond 2 sigma, same side"),
    "we_3": N_("Western Electric 3: four of five points beyond 1 sigma, same side"),
    "we_4": N_("Western Electric 4: eight points in a row on one side of the centre line"),
    "nelson_1": N_("Nelson 1: one point beyond 3 sigma"),
    "nelson_2": N_("Nelson 2: nine points in a row on one side of the centre line"),
    "nelson_3": N_("Nelson 3: six points in a row steadily increasing or decreasing"),
    "nelson_4": N_("Nelson 4: fourteen points in a row alternating up and down"),
    "nelson_5": N_("Nelson 5: two of three points beyond 2 sigma, same side"),
    "nelson_6": N_("Nelson 6: four of five points beyond 1 sigma, same side"),
    "nelson_7": N_("Nelson 7: fifteen points in a row within 1 sigma"),
    "nelson_8": N_("Nelson 8: eight points in a row beyond 1 sigma, either side"),
    BEYOND_LIMITS: N_("Beyond the control limits"),
    CUSUM_SIGNAL: N_("Cumulative sum beyond the decision interval"),
}
PANEL_TITLES: dict[str, str] = {
    "individual": N_("Individual values"),
    "moving_range": N_("Moving range"),
    "mean": N_("Subgroup mean"),
    "range": N_("Subgroup range"),
    "std": N_("Subgroup standard deviation"),
    "ewma": N_("EWMA"),
    "cusum": N_("Cumulative sums C⁺ and C⁻"),
}


@dataclass(frozen=True)
class SpcSettings:
    chart: str = "imr"
    subgroup: int = 5
    rules: str = "we"
    lam: float = 0.2
    width: float = 3.0
    k: float = 0.5
    h: float = 5.0
    lsl: float | None = None
    usl: float | None = None


@dataclass(frozen=True)
class SpcPanel:
    """One chart: the plotted statistic, its centre line and limits, and the points that signal."""

    key: str
    x: list[int]  # times (ms) or point numbers
    values: list[float | None]
    center: float | None
    lower: list[float | None] | None
    upper: list[float | None]
    signals: dict[int, list[str]]  # point -> rule keys
    extra: list[float | None] | None = None  # CUSUM: C⁻ beside C⁺

    @property
    def title(self) -> str:
        return PANEL_TITLES.get(self.key, self.key)


@dataclass(frozen=True, slots=True)
class Signal:
    panel: str
    index: int  # 0-based point of the panel
    x: int
    value: float | None
    rules: list[str]


@dataclass(frozen=True)
class SpcResult:
    settings: SpcSettings
    panels: list[SpcPanel]
    points: int
    left_over: int  # values after the last full subgroup, not charted
    timed: bool  # x holds times (ms) rather than point numbers
    capability: spc.Capability | None
    signals: list[Signal] = field(default_factory=list)
    sigma: float | None = None  # the process sigma the limits rest on

    def chart(self, translate: Callable[[str], str]) -> dict[str, Any]:
        """What `analytics.js` draws, its labels in the reader's language."""
        panels = []
        for panel in self.panels:
            markers = [
                {"i": i, "text": "; ".join(translate(RULE_LABELS.get(r, r)) for r in rules)}
                for i, rules in sorted(panel.signals.items())
            ]
            panels.append(
                {
                    "title": translate(panel.title),
                    "x": panel.x,
                    "values": panel.values,
                    "extra": panel.extra,
                    "center": panel.center,
                    "lower": panel.lower,
                    "upper": panel.upper,
                    "markers": markers,
                }
            )
        return {"timed": self.timed, "panels": panels}


def _flat(values: FloatArray) -> list[float | None]:
    return series(values.tolist())


def _signals(found: Mapping[str, npt.NDArray[np.intp]]) -> dict[int, list[str]]:
    points: dict[int, list[str]] = {}
    for key, indices in found.items():
        for i in indices.tolist():
            points.setdefault(int(i), []).append(key)
    return points


def _control_panel(chart: spc.ControlChart, x: list[int], rules: str | None) -> SpcPanel:
    """A Shewhart-type panel; the run rules apply to a location chart, a spread chart signals beyond its limits."""
    if rules is None:
        signals: dict[int, list[str]] = {int(i): [BEYOND_LIMITS] for i in chart.beyond_limits().tolist()}
    else:
        signals = _signals((chart.western_electric if rules == "we" else chart.nelson)())
    return SpcPanel(
        key=chart.statistic,
        x=x,
        values=_flat(chart.values),
        center=chart.center,
        lower=_flat(chart.lower),
        upper=_flat(chart.upper),
        signals=signals,
    )


def spc_analysis(values: Sequence[float], settings: SpcSettings, times_ms: Sequence[int] | None = None) -> SpcResult:
    """Chart the values as `settings` say; raises `spc.SpcDataError` (an `Invalid`) naming what is wrong."""
    data = np.asarray(values, dtype=np.float64)
    timed = times_ms is not None
    positions = [int(t) for t in times_ms] if times_ms is not None else list(range(1, data.shape[0] + 1))
    left_over = 0
    panels: list[SpcPanel]
    sigma: float | None
    capability_data: FloatArray = data
    if settings.chart in ("xbar_r", "xbar_s"):
        size = settings.subgroup
        spc.control_constants(size)  # refuses a size outside 2 to 50, naming it
        groups = data.shape[0] // size
        left_over = data.shape[0] - groups * size
        table = data[: groups * size].reshape(groups, size)
        pair = spc.xbar_r_chart(table) if settings.chart == "xbar_r" else spc.xbar_s_chart(table)
        x = positions[: groups * size : size]
        panels = [_control_panel(pair.location, x, settings.rules), _control_panel(pair.spread, x, None)]
        sigma = pair.process_sigma
        capability_data = table
    elif settings.chart == "imr":
        pair = spc.individuals_chart(data)
        panels = [
            _control_panel(pair.location, positions, settings.rules),
            _control_panel(pair.spread, positions, None),
        ]
        sigma = pair.process_sigma
    elif settings.chart == "ewma":
        chart = spc.ewma_chart(data, lam=settings.lam, width=settings.width)
        panels = [_control_panel(chart, positions, None)]
        sigma = chart.sigma / math.sqrt(settings.lam / (2.0 - settings.lam))
    elif settings.chart == "cusum":
        cusum = spc.cusum_chart(data, k=settings.k, h=settings.h)
        decision = [cusum.decision] * data.shape[0]
        panels = [
            SpcPanel(
                key="cusum",
                x=positions,
                values=_flat(cusum.upper),
                center=0.0,
                lower=None,
                upper=series(decision),
                signals={int(i): [CUSUM_SIGNAL] for i in cusum.signals().tolist()},
                extra=_flat(cusum.lower),
            )
        ]
        sigma = cusum.sigma
    else:
        raise spc.SpcDataError(f"unknown chart type '{settings.chart}'")
    capability = None
    if settings.lsl is not None or settings.usl is not None:
        capability = spc.capability(capability_data, lsl=settings.lsl, usl=settings.usl)
    signals = [
        Signal(panel.key, i, panel.x[i], panel.values[i], rules)
        for panel in panels
        for i, rules in sorted(panel.signals.items())
    ]
    return SpcResult(settings, panels, int(data.shape[0]), left_over, timed, capability, signals, sigma)


def telemetry_values(
    read: Callable[..., Sequence[Any]], *, device: str, metric: str, start_ms: int, end_ms: int
) -> tuple[list[int], list[float]]:
    """A metric's good stored points of [start, end), oldest first: (times in ms, values).

    `read` is `iip.telemetry.public.points_between` bound to the runtime and tenant. Points of bad
    quality are left out: they are not measurements of the process.
    """
    found = read(device, metric, start_ms, end_ms, limit=MAX_SPC_POINTS + 1)
    if len(found) > MAX_SPC_POINTS:
        raise Invalid(f"more than {MAX_SPC_POINTS} points in the range; choose a shorter one", code="range_too_long")
    good = sorted((p.ts_ms, p.value) for p in found if p.quality != Quality.BAD)
    return [t for t, _ in good], [v for _, v in good]


# --- remaining useful life --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UnitRow:
    unit: str
    estimate: RulEstimate
    cap: float

    @property
    def valid(self) -> bool:
        return self.estimate.valid

    @property
    def capped(self) -> bool:
        """The upper end is the cap: read as "the cap or more"."""
        return self.valid and self.estimate.upper >= self.cap


def units_by_urgency(report: RulReport, cap: float) -> list[UnitRow]:
    """Most urgent first: the lowest end of the interval (the earliest a unit may fail), then the estimate;
    units without an estimate (a variable missing) last, by name."""
    rows = [UnitRow(unit, estimate, cap) for unit, estimate in report.units]

    def urgency(row: UnitRow) -> tuple[int, float, float, str]:
        if not row.valid:
            return (1, 0.0, 0.0, row.unit)
        return (0, row.estimate.lower, row.estimate.point, row.unit)

    return sorted(rows, key=urgency)


def unit_history(
    service: AnalyticsService,
    version: ModelVersion,
    device: str,
    start: dt.datetime,
    end: dt.datetime,
    interval_s: float,
) -> FloatArray:
    """A device's stored telemetry of [start, end) on the grid: one cycle per step, as `rul_telemetry` reads it."""
    if service.runtime is None:
        raise Invalid("reading telemetry needs the platform runtime", code="telemetry_unavailable")
    sources = [Source(s["variable"], s["device"], s["metric"]) for s in version.sources]
    table = read_telemetry(
        telemetry_reader(service.runtime, version.tenant_id),
        sources,
        device=device,
        start_ms=time_ms(start),
        end_ms=time_ms(end),
        interval_ms=interval_ms(interval_s),
        purpose="scoring",
    )
    return table.data


def curve_chart(curve: RulCurve, cap: float) -> dict[str, Any]:
    """What `analytics.js` draws: the estimate at each cycle and its interval band."""
    return {
        "cycles": list(range(1, curve.point.shape[0] + 1)),
        "point": series(curve.point.tolist()),
        "lower": series(curve.lower.tolist()),
        "upper": series(curve.upper.tolist()),
        "cap": cap,
    }
