"""Use cases of the analytics context: the model registry, training, evaluation, scoring, deployment.

Every call is scoped to the acting principal's tenant (platform operators reach every tenant by
id); another tenant's model is indistinguishable from a missing one. Reading, evaluating and scoring
need `analytics.read`; training, deploying and retiring `analytics.write`, and each of those is
appended to the audit log.

A model is named per tenant and has versions 1, 2, ...; a version's status is `trained` until it is
deployed, `deployed` while it scores at least one device's live stream, and `retired` once its last
deployment ends (or it is retired unused). Deploying a version to a device ends the deployment of
any other version of the same model there. A retired version may be deployed again (a rollback).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from iip.analytics.fitting import (
    CLASSIFIER,
    DEFAULT_HOLDOUT,
    RUL,
    FittedModel,
    classification_report,
    fit_model,
    labelled_runs,
    load_model,
    model_kinds,
)
from iip.analytics.fitting import Model as Fitted
from iip.analytics.models import Deployment, Model, ModelVersion
from iip.analytics.monitoring import Monitor, MonitorScores, ScoringDataError, TrainingDataError
from iip.analytics.monitoring.classify import FaultClassifier
from iip.analytics.rul import RulCurve, RulEstimate, RulModel, RulTracker, histories_from_table
from iip.analytics.schemas import DeploymentOut, ModelDetail, ModelOut, VersionBrief, VersionOut
from iip.analytics.training import (
    DataTable,
    ReadPoints,
    Source,
    read_file,
    read_telemetry,
    read_unit_runs,
    telemetry_sources,
)
from iip.kernel import audit
from iip.kernel.auth import Principal, TenantScoped, new_id
from iip.kernel.db import utcnow
from iip.kernel.errors import Conflict, Invalid, NotFound
from iip.kernel.runtime import Runtime

TRAINED, DEPLOYED, RETIRED = "trained", "deployed", "retired"
TOP_VARIABLES = 5
Clock = Callable[[], dt.datetime]


def time_ms(at: dt.datetime) -> int:
    try:
        return int(at.astimezone(dt.UTC).timestamp() * 1000)
    except (OverflowError, ValueError, OSError):
        raise Invalid(f"time {at} is out of range", code="time_invalid") from None


def utc_from_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def interval_ms(seconds: float) -> int:
    ms = round(seconds * 1000)
    if ms < 1:
        raise Invalid("the sample interval must be at least 1 ms", code="interval_invalid")
    return ms


def finite_or_none(values: npt.NDArray[np.float64]) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in values.tolist()]


def top_variables(shares: Mapping[str, float], count: int = TOP_VARIABLES) -> list[str]:
    return [name for name, _ in sorted(shares.items(), key=lambda item: -item[1])[:count]]


def telemetry_reader(runtime: Runtime, tenant_id: str) -> ReadPoints:
    """Stored points through `iip.telemetry.public`, as (ts_ms, value, quality)."""
    from iip.telemetry.public import points_between

    def read(device: str, metric: str, start_ms: int, end_ms: int, limit: int) -> list[tuple[int, float, int]]:
        found = points_between(runtime, tenant_id, device, metric, start_ms, end_ms, limit=limit)
        return [(p.ts_ms, p.value, p.quality) for p in found]

    return read


@dataclass(frozen=True)
class Evaluation:
    """A version's scores on a table, with the labels' rates when the table has labels."""

    version: ModelVersion
    table: DataTable
    scores: MonitorScores
    normal_rows: int | None = None
    fault_rows: int | None = None
    false_alarm_rate: float | None = None
    detection_rate: float | None = None

    @property
    def alarm_rate(self) -> float | None:
        valid = self.scores.valid
        return float(self.scores.alarm[valid].mean()) if valid.any() else None


@dataclass(frozen=True)
class Classification:
    """A classifier's results on labelled rows: `report` (accuracy, per-class recall and precision, the
    confusion matrix) and the class predicted at each row (None: not classified)."""

    version: ModelVersion
    table: DataTable
    report: dict[str, Any]
    predicted: list[str | None]


@dataclass(frozen=True)
class RulReport:
    """RUL estimates per unit (at its latest cycle), and the RMSE against the truth when given."""

    version: ModelVersion
    units: list[tuple[str, RulEstimate]]
    rmse: float | None


@dataclass(frozen=True)
class Contributions:
    version: ModelVersion
    row: int
    at_ms: int | None
    statistics: dict[str, float | None]
    limits: dict[str, float]
    shares: dict[str, dict[str, float]]

    @property
    def top(self) -> dict[str, list[str]]:
        return {name: top_variables(values) for name, values in self.shares.items()}


class AnalyticsService(TenantScoped):
    def __init__(
        self, session: Session, actor: Principal, *, runtime: Runtime | None = None, clock: Clock = utcnow
    ) -> None:
        self.session = session
        self.actor = actor
        self.runtime = runtime
        self.clock = clock

    # --- scoping

    def _visible(self, row: Model | None) -> bool:
        return row is not None and self._may_see(row.tenant_id)

    # --- reading the registry

    def list_models(self, *, tenant_id: str | None = None, text: str | None = None) -> list[Model]:
        self.actor.require("analytics.read")
        query = select(Model).order_by(Model.name, Model.tenant_id)
        scope = self._scope(tenant_id)
        if scope is not None:
            query = query.where(Model.tenant_id == scope)
        if text:
            query = query.where(func.lower(Model.name).contains(text.lower(), autoescape=True))
        return list(self.session.scalars(query))

    def get_model(self, ref: str) -> Model:
        """A model by id, or by name in the actor's tenant."""
        self.actor.require("analytics.read")
        row = self.session.get(Model, ref) if len(ref) <= 32 else None
        if not self._visible(row):
            row = None
            if self.actor.tenant_id:
                query = select(Model).where(Model.tenant_id == self.actor.tenant_id, Model.name == ref)
                row = self.session.scalar(query)
        if row is None:
            raise NotFound(f"model '{ref[:100]}' not found", code="model_not_found")
        return row

    def versions(self, model: Model) -> list[ModelVersion]:
        query = select(ModelVersion).where(ModelVersion.model_id == model.id).order_by(ModelVersion.version)
        return list(self.session.scalars(query))

    def get_version(self, ref: str, version: int | str | None = None) -> ModelVersion:
        """A version of a model: its number, its id, or the newest for None or "latest"."""
        model = self.get_model(ref)
        if version is None or version == "latest":
            number = model.latest_version
        elif isinstance(version, int) or version.isdigit():
            number = int(version)
        else:
            found = self.session.get(ModelVersion, version) if len(version) <= 32 else None
            if found is None or found.model_id != model.id:
                raise NotFound(f"model '{model.name}' has no version '{version[:40]}'", code="version_not_found")
            return found
        row = self.session.scalar(
            select(ModelVersion).where(ModelVersion.model_id == model.id, ModelVersion.version == number)
        )
        if row is None:
            raise NotFound(f"model '{model.name}' has no version {number}", code="version_not_found")
        return row

    def version_by_reference(self, reference: str) -> ModelVersion:
        """`NAME` (its newest version) or `NAME@VERSION`."""
        name, at, number = reference.rpartition("@")
        if not at:
            return self.get_version(reference)
        if not number.isdigit():
            raise Invalid(f"'{reference[:120]}': give the version as NAME@NUMBER", code="reference_invalid")
        return self.get_version(name, int(number))

    def model_of(self, version: ModelVersion) -> Model:
        model = self.session.get(Model, version.model_id)
        if model is None:  # the foreign key keeps this from happening
            raise NotFound("model not found", code="model_not_found")
        return model

    def load(self, version: ModelVersion) -> Fitted:
        return load_model(version.state)

    def monitor(self, version: ModelVersion) -> Monitor:
        """The version's process monitor; a RUL model is refused (it estimates life, it raises no alarms)."""
        model = self.load(version)
        if not isinstance(model, Monitor):
            raise Invalid(
                f"version {version.version} is a {version.kind} model, not a process monitor", code="not_a_monitor"
            )
        return model

    def classifier(self, version: ModelVersion) -> FaultClassifier:
        model = self.load(version)
        if not isinstance(model, FaultClassifier):
            raise Invalid(
                f"version {version.version} is a {version.kind} model, not a fault classifier", code="not_a_classifier"
            )
        return model

    def rul_model(self, version: ModelVersion) -> RulModel:
        model = self.load(version)
        if not isinstance(model, RulModel):
            raise Invalid(
                f"version {version.version} is a {version.kind} model, not a rul model", code="not_a_rul_model"
            )
        return model

    def describe_model(self, model: Model) -> ModelDetail:
        briefs = [
            VersionBrief(
                version=v.version,
                kind=v.kind,
                status=v.status,
                trained_by=v.trained_by,
                trained_at=v.trained_at,
                metrics=v.metrics,
                data_source=v.data_source,
            )
            for v in self.versions(model)
        ]
        return ModelDetail(**ModelOut.model_validate(model).model_dump(), versions=briefs)

    def describe_version(self, version: ModelVersion) -> VersionOut:
        model = self.model_of(version)
        active = [d for d in self.deployments_of(version) if d.active]
        return version_view(model, version, [deployment_view(d, model.name, version.version) for d in active])

    # --- training

    def train_from_telemetry(
        self,
        name: str,
        kind: str,
        *,
        devices: Sequence[str],
        metrics: Sequence[str],
        start: dt.datetime,
        end: dt.datetime,
        interval_s: float,
        parameters: Mapping[str, Any] | None = None,
        false_alarm_rate: float = 0.01,
        holdout: float = DEFAULT_HOLDOUT,
        description: str = "",
        tenant_id: str | None = None,
    ) -> ModelVersion:
        """A new version trained on stored telemetry of the devices' metrics in [start, end)."""
        self.actor.require("analytics.write")
        tenant = self.tenant_for(tenant_id)
        self._check_kind(kind)
        if kind == CLASSIFIER:
            raise Invalid("a classifier trains on a file of labelled rows (a label column)", code="kind_needs_file")
        if self.runtime is None:
            raise Invalid("reading telemetry needs the platform runtime", code="telemetry_unavailable")
        if kind == RUL:
            # Each device is one unit: its stored run, up to its last point, is a run to failure.
            table = read_unit_runs(
                telemetry_reader(self.runtime, tenant),
                metrics,
                devices,
                start_ms=time_ms(start),
                end_ms=time_ms(end),
                interval_ms=interval_ms(interval_s),
            )
            sources = [Source(v, "", v) for v in table.variables]
            return self._train(tenant, name, kind, table, sources, parameters or {}, false_alarm_rate, 0, description)
        sources = telemetry_sources(devices, metrics)
        table = read_telemetry(
            telemetry_reader(self.runtime, tenant),
            sources,
            device=devices[0],
            start_ms=time_ms(start),
            end_ms=time_ms(end),
            interval_ms=interval_ms(interval_s),
            purpose="training",
        )
        if len(devices) == 1:
            # The device is recorded; the variables read whichever device the version is deployed to.
            table.source["devices"] = [devices[0]]
        return self._train(tenant, name, kind, table, sources, parameters or {}, false_alarm_rate, holdout, description)

    def train_from_file(
        self,
        name: str,
        kind: str,
        content: bytes,
        filename: str,
        *,
        variables: Sequence[str] | None = None,
        time_column: str | None = None,
        unit_column: str | None = None,
        label_column: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        false_alarm_rate: float = 0.01,
        holdout: float = DEFAULT_HOLDOUT,
        description: str = "",
        tenant_id: str | None = None,
    ) -> ModelVersion:
        """A new version trained on a CSV or Parquet file; its variables read the metrics of the same names.

        A rul model needs `unit_column`: the rows of each unit are its cycles in order, up to its failure.
        A classifier needs `label_column`: each row's class ("normal", "fault 3" ...).
        """
        self.actor.require("analytics.write")
        tenant = self.tenant_for(tenant_id)
        self._check_kind(kind)
        if kind == RUL and unit_column is None:
            raise Invalid("a rul model needs the unit column of its run-to-failure histories", code="unit_required")
        if kind == CLASSIFIER and label_column is None:
            raise Invalid("a classifier needs the label column naming each row's class", code="label_required")
        if kind != CLASSIFIER and label_column is not None:
            raise Invalid(f"a {kind} model takes no label column", code="label_unexpected")
        table = read_file(
            content,
            filename,
            purpose="training",
            variables=variables,
            time_column=time_column,
            unit_column=unit_column,
            label_column=label_column,
        )
        if label_column is not None:
            table.source["label_column"] = label_column
        sources = [Source(v, "", v) for v in table.variables]
        return self._train(tenant, name, kind, table, sources, parameters or {}, false_alarm_rate, holdout, description)

    def _check_kind(self, kind: str) -> None:
        if kind not in model_kinds():
            raise Invalid(f"unknown model kind '{kind}'; known: {', '.join(model_kinds())}", code="kind_unknown")

    def _train(
        self,
        tenant: str,
        name: str,
        kind: str,
        table: DataTable,
        sources: Sequence[Source],
        parameters: Mapping[str, Any],
        false_alarm_rate: float,
        holdout: float,
        description: str,
    ) -> ModelVersion:
        fitted = fit_model(kind, table, parameters, false_alarm_rate=false_alarm_rate, holdout=holdout)
        for source in sources:
            if len(source.metric) > 128:
                raise Invalid(f"metric name '{source.metric[:40]}...' is longer than 128 characters")
        settings = dict(parameters)
        if kind == CLASSIFIER:
            settings.update(holdout=holdout)
        elif kind != RUL:
            settings.update(false_alarm_rate=false_alarm_rate, holdout=holdout)
        return self._store(tenant, name, kind, table, sources, settings, fitted, description)

    def _store(
        self,
        tenant: str,
        name: str,
        kind: str,
        table: DataTable,
        sources: Sequence[Source],
        parameters: dict[str, Any],
        fitted: FittedModel,
        description: str,
    ) -> ModelVersion:
        now = self.clock()
        model = self.session.scalar(
            select(Model).where(Model.tenant_id == tenant, Model.name == name).with_for_update()
        )
        if model is None:
            model = Model(
                id=new_id(), tenant_id=tenant, name=name, kind=kind, latest_version=0, created_by=self.actor.label
            )
            model.created_at = now
            self.session.add(model)
        model.latest_version += 1
        model.kind = kind
        model.updated_at = now
        if description:
            model.description = description
        version = ModelVersion(
            id=new_id(),
            model_id=model.id,
            tenant_id=tenant,
            version=model.latest_version,
            kind=kind,
            status=TRAINED,
            variables=list(fitted.variables),
            sources=[s.as_dict() for s in sources],
            parameters=parameters,
            summary=fitted.summary,
            limits=fitted.limits,
            metrics=fitted.metrics,
            data_source=table.source,
            state=fitted.state,
            state_sha256=hashlib.sha256(fitted.state).hexdigest(),
            trained_by=self.actor.label,
            trained_at=now,
        )
        self.session.add(version)
        try:
            self.session.flush()
        except IntegrityError as err:
            raise Conflict(f"model '{name}' was changed at the same time; try again", code="model_busy") from err
        self._audit("train", model, version, f"{kind} on {table.rows} rows")
        return version

    # --- evaluation and scoring

    def evaluate_file(
        self,
        version: ModelVersion,
        content: bytes,
        filename: str,
        *,
        label_column: str | None = None,
        time_column: str | None = None,
    ) -> Evaluation:
        """Scores of a file's rows; a variable without a column, or an empty cell, is flagged, never filled."""
        self.actor.require("analytics.read")
        table = read_file(
            content,
            filename,
            purpose="scoring",
            variables=version.variables,
            time_column=time_column,
            label_column=label_column,
        )
        return self.evaluate(version, table)

    def classify_file(
        self,
        version: ModelVersion,
        content: bytes,
        filename: str,
        *,
        label_column: str | None,
        time_column: str | None = None,
    ) -> Classification:
        """A classifier on a labelled file: how often it names each row's class, and what it confuses.

        Every variable needs its column and every row a label the classifier knows; each run of rows of
        one label is classified on its own (its first `lags` rows have no class), as at training.
        """
        self.actor.require("analytics.read")
        classifier = self.classifier(version)
        if not label_column:
            raise Invalid("a classifier is evaluated on labelled rows: name the label column", code="label_required")
        table = read_file(
            content,
            filename,
            purpose="scoring",
            variables=version.variables,
            time_column=time_column,
            label_column=label_column,
        )
        if table.absent:
            named = ", ".join(f"'{v}'" for v in table.absent[:20])
            raise ScoringDataError(
                f"mismatched columns: {named} not in '{filename}'; the classifier reads "
                f"{', '.join(version.variables[:60])}",
                variables=list(table.absent[:20]),
            )
        try:
            runs = labelled_runs(table)
        except TrainingDataError as err:  # a row without a label
            raise ScoringDataError(err.message) from None
        unknown = sorted({label for label, _, _ in runs} - set(classifier.classes))
        if unknown:
            raise ScoringDataError(
                f"unknown labels in '{label_column}': {', '.join(repr(u) for u in unknown[:20])}; "
                f"the classifier knows {', '.join(repr(c) for c in classifier.classes)}",
                labels=unknown[:20],
            )
        report, predicted = classification_report(
            classifier, [(label, table.data[start:end]) for label, start, end in runs]
        )
        return Classification(version, table, report, predicted)

    def evaluate_telemetry(
        self,
        version: ModelVersion,
        *,
        device: str | None,
        start: dt.datetime,
        end: dt.datetime,
        interval_s: float | None = None,
    ) -> Evaluation:
        """Scores of stored telemetry on the version's grid: the T²/SPE series of a range, with limits."""
        self.actor.require("analytics.read")
        table = self._telemetry_table(version, device, time_ms(start), time_ms(end), interval_s)
        return self.evaluate(version, table)

    def evaluate(self, version: ModelVersion, table: DataTable, *, persistence: int | None = None) -> Evaluation:
        monitor = self.monitor(version)
        scores = monitor.score(table.data, persistence=persistence)
        faults = table.fault_mask()
        if faults is None:
            return Evaluation(version, table, scores)
        valid = scores.valid
        normal, fault = valid & ~faults, valid & faults
        return Evaluation(
            version,
            table,
            scores,
            normal_rows=int((~faults).sum()),
            fault_rows=int(faults.sum()),
            false_alarm_rate=float(scores.alarm[normal].mean()) if normal.any() else None,
            detection_rate=float(scores.alarm[fault].mean()) if fault.any() else None,
        )

    def score(
        self, version: ModelVersion, samples: Sequence[Mapping[str, float | None]], *, persistence: int | None = None
    ) -> tuple[MonitorScores, list[list[str]]]:
        """Scores of consecutive samples; per row, the variables it lacked (that row is not scored)."""
        self.actor.require("analytics.read")
        data = self.samples_table(version, samples)
        scores = self.monitor(version).score(data, persistence=persistence)
        absent = ~np.isfinite(data)
        names = version.variables
        missing = [[names[j] for j in np.flatnonzero(row)] for row in absent]
        return scores, missing

    def samples_table(
        self, version: ModelVersion, samples: Sequence[Mapping[str, float | None]]
    ) -> npt.NDArray[np.float64]:
        index = {name: j for j, name in enumerate(version.variables)}
        unknown = sorted({key for sample in samples for key in sample if key not in index})
        if unknown:
            raise ScoringDataError(
                f"unknown variables: {', '.join(unknown[:20])}; the model reads {', '.join(version.variables[:50])}",
                variables=unknown[:20],
            )
        data = np.full((len(samples), len(index)), np.nan)
        for i, sample in enumerate(samples):
            for key, value in sample.items():
                if value is not None and math.isfinite(value):
                    data[i, index[key]] = value
        return data

    def contributions(
        self, version: ModelVersion, data: npt.NDArray[np.float64], row: int | None = None, at_ms: int | None = None
    ) -> Contributions:
        """Each variable's share of each statistic at one row (with the history a lagged model needs)."""
        self.actor.require("analytics.read")
        monitor = self.monitor(version)
        chosen = data.shape[0] - 1 if row is None else row
        if not 0 <= chosen < data.shape[0]:
            raise ScoringDataError(f"row {chosen} is not among the {data.shape[0]} samples")
        first = chosen - monitor.history
        if first < 0:
            raise ScoringDataError(
                f"a {version.kind} model needs the {monitor.history} samples before the one explained"
            )
        window = data[first : chosen + 1]
        shares = monitor.contributions(window)
        scores = monitor.score(window, persistence=1)
        statistics = {name: finite_or_none(values[-1:])[0] for name, values in scores.statistics.items()}
        return Contributions(version, chosen, at_ms, statistics, dict(monitor.limits), shares)

    def contributions_at(
        self, version: ModelVersion, *, device: str | None, at: dt.datetime, interval_s: float | None = None
    ) -> Contributions:
        """Contributions at the grid step starting `at` of a device's stored telemetry."""
        self.actor.require("analytics.read")
        step = self._interval(version, interval_s)
        history = self.monitor(version).history
        at_ms = time_ms(at)
        table = self._telemetry_table(version, device, at_ms - history * step, at_ms + step, step / 1000)
        return self.contributions(version, table.data, None, at_ms)

    def _interval(self, version: ModelVersion, interval_s: float | None) -> int:
        if interval_s is not None:
            return interval_ms(interval_s)
        trained = version.data_source.get("interval_ms")
        if isinstance(trained, int) and trained > 0:
            return trained
        raise Invalid(
            f"give the sample interval: version {version.version} was not trained on telemetry",
            code="interval_required",
        )

    def _telemetry_table(
        self, version: ModelVersion, device: str | None, start_ms: int, end_ms: int, interval_s: float | None
    ) -> DataTable:
        if self.runtime is None:
            raise Invalid("reading telemetry needs the platform runtime", code="telemetry_unavailable")
        step = self._interval(version, interval_s)
        sources = [Source(s["variable"], s["device"], s["metric"]) for s in version.sources]
        if device is None and any(not s.device for s in sources):
            raise Invalid("name the device whose telemetry is read", code="device_required")
        return read_telemetry(
            telemetry_reader(self.runtime, version.tenant_id),
            sources,
            device=device or "",
            start_ms=start_ms,
            end_ms=end_ms,
            interval_ms=step,
            purpose="scoring",
        )

    # --- remaining useful life

    def rul_file(
        self,
        version: ModelVersion,
        content: bytes,
        filename: str,
        *,
        unit_column: str,
        truth_column: str | None = None,
    ) -> RulReport:
        """RUL at the latest cycle of each unit of a file (rows of a unit in cycle order).

        With `truth_column` (the true RUL at each row), the RMSE over the units' latest cycles too.
        A unit lacking a variable gets no estimate and names what it lacked.
        """
        self.actor.require("analytics.read")
        model = self.rul_model(version)
        table = read_file(
            content,
            filename,
            purpose="scoring",
            variables=version.variables,
            unit_column=unit_column,
            label_column=truth_column,
        )
        units = list(dict.fromkeys(table.units or []))
        histories = histories_from_table(table.data, np.asarray(table.units))
        estimates = model.predict_many(histories)
        rmse = None
        if table.labels is not None:
            last = {unit: i for i, unit in enumerate(table.units or [])}
            try:
                truth = np.array([float(table.labels[last[unit]]) for unit in units])
            except ValueError:
                raise ScoringDataError(f"the truth column '{truth_column}' must hold numbers") from None
            points = np.array([e.point for e in estimates])
            scored = np.isfinite(points) & np.isfinite(truth)
            if scored.any():
                rmse = float(np.sqrt(np.mean((np.minimum(truth[scored], model.cap) - points[scored]) ** 2)))
        return RulReport(version, list(zip(units, estimates, strict=True)), rmse)

    def rul_telemetry(
        self,
        version: ModelVersion,
        *,
        devices: Sequence[str],
        start: dt.datetime,
        end: dt.datetime,
        interval_s: float,
    ) -> RulReport:
        """RUL of each device (a unit) now, from its stored telemetry of [start, end) on a grid: one cycle per step."""
        self.actor.require("analytics.read")
        model = self.rul_model(version)
        histories = [
            self._telemetry_table(version, device, time_ms(start), time_ms(end), interval_s).data for device in devices
        ]
        return RulReport(version, list(zip(devices, model.predict_many(histories), strict=True)), None)

    # --- deployment

    def deploy(
        self,
        version: ModelVersion,
        device: str,
        *,
        rul_threshold: float | None = None,
        interval_s: float | None = None,
        since: dt.datetime | None = None,
        classifier: ModelVersion | None = None,
        staleness_s: float | None = None,
    ) -> Deployment:
        """Score `device`'s live stream with this version (replacing another version of the model there).

        A monitor may name a fault `classifier` (a version of a classifier model reading some of its
        variables): an alarm then names the most likely fault class. A rul model estimates the
        device's remaining life once per cycle of `interval_s` (default: the interval it was trained
        at) counted from `since` (when the unit was new or restored; default now), and raises
        `model.rul_low` while the lower end of its interval is below `rul_threshold` cycles.
        `staleness_s` is how long a variable's last value may be held (default: twice its period).
        """
        self.actor.require("analytics.write")
        settings = self._deployment_settings(version, rul_threshold, interval_s, since, classifier, staleness_s)
        model = self.model_of(version)
        now = self.clock()
        current = self.session.scalars(
            select(Deployment).where(
                Deployment.model_id == model.id, Deployment.device == device, Deployment.active.is_(True)
            )
        ).all()
        for old in current:
            if old.version_id == version.id:
                raise Conflict(
                    f"version {version.version} of '{model.name}' is already deployed to '{device}'",
                    code="already_deployed",
                )
        touched = {old.version_id for old in current}
        for old in current:
            self._end(old, now)
        row = Deployment(
            id=new_id(),
            tenant_id=version.tenant_id,
            model_id=model.id,
            version_id=version.id,
            device=device,
            active=True,
            deployed_by=self.actor.label,
            deployed_at=now,
            updated_at=now,
            settings=settings,
        )
        self.session.add(row)
        version.status = DEPLOYED
        version.retired_at, version.retired_by = None, ""
        self.session.flush()
        for version_id in touched:
            self._settle(version_id, now)
        self._audit("deploy", model, version, f"to {device}")
        return row

    def _deployment_settings(
        self,
        version: ModelVersion,
        rul_threshold: float | None,
        interval_s: float | None,
        since: dt.datetime | None,
        classifier: ModelVersion | None,
        staleness_s: float | None,
    ) -> dict[str, Any]:
        settings: dict[str, Any] = {}
        if staleness_s is not None:
            if not 0 <= staleness_s <= 86_400:
                raise Invalid("staleness_s must be between 0 and 86400 seconds", code="setting_invalid")
            settings["staleness_s"] = float(staleness_s)
        if version.kind == RUL:
            if classifier is not None:
                raise Invalid("a fault classifier goes with a process monitor, not a rul model", code="setting_invalid")
            if rul_threshold is not None:
                if not (math.isfinite(rul_threshold) and rul_threshold >= 0):
                    raise Invalid("rul_threshold must be a number of cycles, 0 or more", code="setting_invalid")
                settings["rul_threshold"] = float(rul_threshold)
            settings["interval_ms"] = self._interval(version, interval_s)
            settings["since_ms"] = time_ms(since or self.clock())
            self.rul_model(version)  # a state that loads
            return settings
        if version.kind == CLASSIFIER:
            raise Invalid(
                "a classifier is not deployed on its own: name it when deploying a monitor", code="not_deployable"
            )
        if rul_threshold is not None or interval_s is not None or since is not None:
            raise Invalid("rul_threshold, interval_s and since are settings of rul models", code="setting_invalid")
        self.monitor(version)  # only a monitor (or a rul model) scores a live stream
        if classifier is not None:
            if classifier.tenant_id != version.tenant_id:
                raise NotFound("classifier not found", code="model_not_found")
            loaded = self.classifier(classifier)
            foreign = [v for v in loaded.variables if v not in version.variables]
            if foreign:
                raise Invalid(
                    f"the classifier reads variables the monitor does not: {', '.join(foreign[:20])}",
                    code="classifier_mismatch",
                )
            settings["classifier_version_id"] = classifier.id
            settings["classifier"] = f"{self.model_of(classifier).name}@{classifier.version}"
        return settings

    def retire(self, version: ModelVersion, device: str | None = None) -> list[Deployment]:
        """End the version's deployments (on `device` only, if given); retired once none is left."""
        self.actor.require("analytics.write")
        model = self.model_of(version)
        now = self.clock()
        active = [d for d in self.deployments_of(version) if d.active]
        ended = [d for d in active if device is None or d.device == device]
        if device is not None and not ended:
            raise NotFound(
                f"version {version.version} of '{model.name}' is not deployed to '{device}'",
                code="deployment_not_found",
            )
        if device is None and not active and version.status == RETIRED:
            raise Conflict(f"version {version.version} of '{model.name}' is already retired", code="already_retired")
        for deployment in ended:
            self._end(deployment, now)
        self.session.flush()
        self._settle(version.id, now)
        where = f"from {device}" if device else f"from {len(ended)} device(s)"
        self._audit("retire", model, version, where)
        return ended

    def _end(self, deployment: Deployment, now: dt.datetime) -> None:
        deployment.active = False
        deployment.retired_at = now
        deployment.retired_by = self.actor.label
        deployment.updated_at = now

    def _settle(self, version_id: str, now: dt.datetime) -> None:
        """Deployed while any deployment is active; retired once the last one ended (or retired unused)."""
        version = self.session.get(ModelVersion, version_id)
        if version is None:
            return
        active = self.session.scalar(
            select(func.count(Deployment.id)).where(Deployment.version_id == version_id, Deployment.active.is_(True))
        )
        if active:
            version.status = DEPLOYED
        elif version.status != RETIRED:
            version.status = RETIRED
            version.retired_at = now
            version.retired_by = self.actor.label

    def deployments_of(self, version: ModelVersion) -> list[Deployment]:
        query = select(Deployment).where(Deployment.version_id == version.id).order_by(Deployment.deployed_at)
        return list(self.session.scalars(query))

    def list_deployments(
        self, *, device: str | None = None, active: bool | None = True, tenant_id: str | None = None
    ) -> list[DeploymentOut]:
        self.actor.require("analytics.read")
        query = (
            select(Deployment, Model.name, ModelVersion.version)
            .join(Model, Model.id == Deployment.model_id)
            .join(ModelVersion, ModelVersion.id == Deployment.version_id)
            .order_by(Deployment.deployed_at.desc())
        )
        scope = self._scope(tenant_id)
        if scope is not None:
            query = query.where(Deployment.tenant_id == scope)
        if device is not None:
            query = query.where(Deployment.device == device)
        if active is not None:
            query = query.where(Deployment.active.is_(active))
        return [deployment_view(row, name, number) for row, name, number in self.session.execute(query)]

    # --- audit

    def _audit(self, action: str, model: Model, version: ModelVersion, detail: str) -> None:
        audit.append(
            self.session,
            self.actor,
            audit.AuditRecord(
                action=f"analytics.model.{action}",
                object_type="analytics_model_version",
                object_id=version.id,
                detail=f"{model.name} version {version.version}: {detail}"[:1000],
                source="analytics",
            ),
            tenant_id=version.tenant_id,
        )


def deployment_view(row: Deployment, name: str, version: int) -> DeploymentOut:
    return DeploymentOut(
        id=row.id,
        tenant_id=row.tenant_id,
        model=name,
        version=version,
        device=row.device,
        active=row.active,
        deployed_by=row.deployed_by,
        deployed_at=row.deployed_at,
        retired_by=row.retired_by,
        retired_at=row.retired_at,
        settings=dict(row.settings or {}),
    )


def version_view(model: Model, version: ModelVersion, deployments: Iterable[DeploymentOut] = ()) -> VersionOut:
    return VersionOut(
        id=version.id,
        model_id=model.id,
        tenant_id=version.tenant_id,
        name=model.name,
        description=model.description,
        version=version.version,
        kind=version.kind,
        status=version.status,
        variables=version.variables,
        sources=version.sources,
        parameters=version.parameters,
        summary=version.summary,
        limits=version.limits,
        metrics=version.metrics,
        data_source=version.data_source,
        state_sha256=version.state_sha256,
        state_bytes=len(version.state),
        trained_by=version.trained_by,
        trained_at=version.trained_at,
        retired_by=version.retired_by,
        retired_at=version.retired_at,
        deployments=list(deployments),
    )


@dataclass(frozen=True)
class DeployedVersion:
    """What a live scorer needs of one active deployment."""

    deployment_id: str
    tenant_id: str
    device: str
    name: str
    version: int
    sources: list[dict[str, str]]
    state: bytes
    state_sha256: str
    kind: str = ""
    settings: Mapping[str, Any] = field(default_factory=dict)
    classifier_state: bytes | None = None  # the fault classifier named at deployment


def deployed_versions(session: Session) -> list[DeployedVersion]:
    """Every active deployment of every tenant, with its version's state (and its classifier's)."""
    query = (
        select(Deployment, Model.name, ModelVersion)
        .join(Model, Model.id == Deployment.model_id)
        .join(ModelVersion, ModelVersion.id == Deployment.version_id)
        .where(Deployment.active.is_(True))
        .order_by(Deployment.deployed_at)
    )
    out = []
    for row, name, v in session.execute(query):
        settings = dict(row.settings or {})
        classifier_state = None
        classifier_id = settings.get("classifier_version_id")
        if isinstance(classifier_id, str):
            found = session.get(ModelVersion, classifier_id)
            classifier_state = found.state if found is not None else None
        out.append(
            DeployedVersion(
                row.id,
                row.tenant_id,
                row.device,
                name,
                v.version,
                v.sources,
                v.state,
                v.state_sha256,
                v.kind,
                settings,
                classifier_state,
            )
        )
    return out


@dataclass(frozen=True)
class RulHistory:
    """A RUL deployment's stored cycles, replayed: the unit's tracker after its complete ones, where the live
    stream resumes, and the estimates of the stored cycles never estimated (the process stopped first)."""

    tracker: RulTracker
    resume_ms: int
    backlog_ms: npt.NDArray[np.int64]
    backlog: RulCurve | None


REPLAY_CYCLES = 10_000  # stored cycles read at a time when a RUL scorer starts


def rul_history(runtime: Runtime, deployed: DeployedVersion, now_ms: int) -> RulHistory:
    """The unit's stored cycles since `since_ms`, fed to a tracker: a restart keeps the unit's age and
    estimates what it missed.

    The cycles are read in pieces of `REPLAY_CYCLES` and only the tracker's bounded state is kept. The
    stream resumes after the last stored cycle with any point.
    """
    from iip.analytics.public import score_metric

    model = RulModel.from_bytes(deployed.state)
    tracker = RulTracker(model)
    interval = int(deployed.settings["interval_ms"])
    since = int(deployed.settings["since_ms"])
    nothing = np.empty(0, dtype=np.int64)
    if now_ms <= since:
        return RulHistory(tracker, since, nothing, None)
    steps = min(-(-(now_ms - since) // interval), 1_000_000)
    pieces = [
        (since + first * interval, since + min(first + REPLAY_CYCLES, steps) * interval)
        for first in range(0, steps, REPLAY_CYCLES)
    ]
    sources = [Source(s["variable"], s["device"], s["metric"]) for s in deployed.sources]
    read = telemetry_reader(runtime, deployed.tenant_id)
    rul_metric = score_metric(deployed.name, "rul")
    # The newest estimate already written: the cycles after it are estimated now.
    estimated = -1
    for start, end in pieces:
        written = [ts for ts, _, _ in read(deployed.device, rul_metric, start, end, REPLAY_CYCLES * 10)]
        estimated = max([estimated, *written])
    resume = since
    backlog_ms: list[npt.NDArray[np.int64]] = []
    curves: list[RulCurve] = []
    for start, end in pieces:
        table = read_telemetry(
            read, sources, device=deployed.device, start_ms=start, end_ms=end, interval_ms=interval, purpose="scoring"
        )
        reported = np.flatnonzero(np.isfinite(table.data).any(axis=1))
        if reported.size:
            resume = start + (int(reported[-1]) + 1) * interval
        complete = np.isfinite(table.data).all(axis=1)
        rows = table.data[complete]
        times = start + np.flatnonzero(complete).astype(np.int64) * interval
        later = times > estimated
        tracker.advance(rows[~later], estimate=False)
        curve = tracker.advance(rows[later])
        if curve is not None:
            backlog_ms.append(times[later])
            curves.append(curve)
    # Cycles after the last one with a point are not final yet: the live stream fills them.
    backlog = None
    if curves:
        backlog = RulCurve(
            np.concatenate([c.point for c in curves]),
            np.concatenate([c.lower for c in curves]),
            np.concatenate([c.upper for c in curves]),
            model.coverage,
            (),
            np.concatenate([c.valid for c in curves]),
        )
    return RulHistory(tracker, resume, np.concatenate(backlog_ms) if backlog_ms else nothing, backlog)


def deployments_fingerprint(session: Session) -> tuple[object, ...]:
    """Changes whenever a deployment is made or ended: the live scorers reload then."""
    count, newest = session.execute(select(func.count(Deployment.id), func.max(Deployment.updated_at))).one()
    return (count, newest)
