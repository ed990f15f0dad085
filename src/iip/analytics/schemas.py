"""Request and response models of the analytics API (never ORM objects over the wire)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

NO_NUL = r"^[^\x00]*$"
# Model names end up in metric names (`analytics.<name>.t2`): letters, digits, `_ . -`, no slash.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"
ModelName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
DeviceKey = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00/]*[^\x00/\s][^\x00/]*$")]
MetricName = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00]*\S[^\x00]*$")]
Kind = Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9_]*$")]
Description = Annotated[str, StringConstraints(max_length=500, pattern=NO_NUL)]
ParameterValue = bool | int | float | str | None
Parameters = Annotated[
    dict[Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=NO_NUL)], ParameterValue],
    Field(max_length=20, description='settings of the kind, e.g. {"components": 5} or {"lags": 2}'),
]
Sample = Annotated[
    dict[Annotated[str, StringConstraints(max_length=300, pattern=NO_NUL)], float | None],
    Field(max_length=1000, description="variable -> value; a variable left out or null is missing (flagged)"),
]
MAX_SAMPLES = 10_000


# --- training


class TelemetryRange(BaseModel):
    """Stored telemetry on a time grid: every metric of every device, one sample per `interval_s`."""

    devices: list[DeviceKey] = Field(
        min_length=1, max_length=200, description="rul: each device is one unit, its run ending at its last point"
    )
    metrics: list[MetricName] = Field(min_length=1, max_length=500)
    start: AwareDatetime
    end: AwareDatetime
    interval_s: float = Field(gt=0, le=86_400, description="the sample interval of the grid")


class TrainBody(BaseModel):
    """Train a new version of `name` (created if new) on stored telemetry."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "name": "reactor-pca",
                "kind": "pca",
                "source": {
                    "devices": ["r-101"],
                    "metrics": ["temperature", "pressure", "flow"],
                    "start": "2026-01-05T00:00:00Z",
                    "end": "2026-01-06T00:00:00Z",
                    "interval_s": 60,
                },
                "parameters": {"variance": 0.9},
                "false_alarm_rate": 0.01,
            }
        }
    )

    name: ModelName
    kind: Kind = Field(description="pca, dpca, ica, dynamic_mahalanobis, rul (one unit per device)")
    description: Description = ""
    source: TelemetryRange
    parameters: Parameters = Field(default_factory=dict)
    false_alarm_rate: float = Field(default=0.01, gt=0, lt=0.5, description="the rate the control limits are set for")
    holdout: float = Field(
        default=0.2, ge=0, le=0.5, description="share of the newest samples kept out of fitting, to measure the model"
    )


# --- registry


class DeploymentOut(BaseModel):
    id: str
    tenant_id: str
    model: str
    version: int
    device: str
    active: bool
    deployed_by: str
    deployed_at: dt.datetime
    retired_by: str
    retired_at: dt.datetime | None
    settings: dict[str, Any] = Field(
        default_factory=dict, description="rul_threshold, interval_ms, since_ms (rul); classifier; staleness_s"
    )


class VersionOut(BaseModel):
    """One trained version: what it is, how it was trained, how good it is, where it runs."""

    id: str
    model_id: str
    tenant_id: str
    name: str
    description: str = Field(description="the model's")
    version: int
    kind: str
    status: str = Field(description="trained, deployed or retired")
    variables: list[str]
    sources: list[dict[str, str]] = Field(
        description="per variable, the device (empty: the one deployed to) and metric"
    )
    parameters: dict[str, Any]
    summary: dict[str, Any] = Field(description="what the fitted model reports: components, explained variance ...")
    limits: dict[str, float]
    metrics: dict[str, Any] = Field(description="measured on held-out normal rows: false-alarm rate ...")
    data_source: dict[str, Any]
    state_sha256: str
    state_bytes: int
    trained_by: str
    trained_at: dt.datetime
    retired_by: str
    retired_at: dt.datetime | None
    deployments: list[DeploymentOut] = Field(default_factory=list, description="active deployments")


class VersionBrief(BaseModel):
    version: int
    kind: str
    status: str
    trained_by: str
    trained_at: dt.datetime
    metrics: dict[str, Any]
    data_source: dict[str, Any]


class ModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    tenant_id: str
    name: str
    kind: str
    description: str
    latest_version: int
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime


class ModelDetail(ModelOut):
    versions: list[VersionBrief]


# --- evaluation and scoring


class EvaluateBody(BaseModel):
    """Evaluate a version on stored telemetry of [start, end)."""

    device: DeviceKey | None = Field(default=None, description="the device read for variables of no fixed device")
    start: AwareDatetime
    end: AwareDatetime
    interval_s: float | None = Field(
        default=None, gt=0, le=86_400, description="default: the interval the version was trained at"
    )


class LabelledRates(BaseModel):
    normal_rows: int
    fault_rows: int
    false_alarm_rate: float | None = Field(description="share of scored normal rows in alarm")
    detection_rate: float | None = Field(description="share of scored fault rows in alarm")


class EvaluationOut(BaseModel):
    """Per-row statistics with the limits and alarm flags; rates against the labels when given."""

    name: str
    version: int
    variables: list[str]
    rows: int
    times: list[dt.datetime] | None = None
    statistics: dict[str, list[float | None]] = Field(description="per statistic, per row (null: not scored)")
    limits: dict[str, float]
    alarm: list[bool]
    valid: list[bool] = Field(description="rows that were scored")
    missing: list[str] = Field(description="variables absent in some row; those rows are not scored")
    alarm_rate: float | None = Field(description="share of scored rows in alarm")
    labelled: LabelledRates | None = None


class ConfusionOut(BaseModel):
    classes: list[str]
    matrix: list[list[int]] = Field(description="rows: the true class, columns: the predicted one")


class ClassificationOut(BaseModel):
    """A fault classifier on labelled rows: how often it names each row's class, and what it confuses."""

    name: str
    version: int
    rows: int
    classified_rows: int = Field(description="rows given a class (not the first `lags` of a run, nor incomplete)")
    accuracy: float | None
    per_class_recall: dict[str, float | None] = Field(description="per true class, the share classified as it")
    per_class_precision: dict[str, float | None] = Field(description="per predicted class, the share that is it")
    confusion: ConfusionOut


class ScoreBody(BaseModel):
    """Consecutive samples to score as one block."""

    samples: list[Sample] = Field(min_length=1, max_length=MAX_SAMPLES)
    persistence: int | None = Field(default=None, ge=1, le=1000, description="default: the version's own")


class ScoreOut(BaseModel):
    name: str
    version: int
    statistics: dict[str, list[float | None]]
    limits: dict[str, float]
    alarm: list[bool]
    valid: list[bool]
    missing: list[list[str]] = Field(description="per row, the variables it lacked")


class ContributionsBody(BaseModel):
    """Either a block of samples (and the row to explain), or a moment of a device's stored telemetry."""

    samples: list[Sample] | None = Field(default=None, min_length=1, max_length=MAX_SAMPLES)
    row: int | None = Field(default=None, ge=0, description="the sample to explain (default: the last)")
    device: DeviceKey | None = None
    at: AwareDatetime | None = Field(default=None, description="the start of the grid step to explain")
    interval_s: float | None = Field(default=None, gt=0, le=86_400)


class ContributionsOut(BaseModel):
    name: str
    version: int
    at: dt.datetime | None = None
    row: int | None = None
    statistics: dict[str, float | None] = Field(description="the statistics of the sample")
    limits: dict[str, float]
    contributions: dict[str, dict[str, float]] = Field(description="per statistic, each variable's share")
    top: dict[str, list[str]] = Field(description="per statistic, the variables contributing most, first")


class DeployBody(BaseModel):
    device: DeviceKey = Field(description="the device whose live stream the version scores")
    classifier: Annotated[str, StringConstraints(min_length=1, max_length=120, pattern=NO_NUL)] | None = Field(
        default=None, description="monitors: a fault classifier, NAME or NAME@VERSION, naming the likely fault class"
    )
    rul_threshold: float | None = Field(
        default=None, ge=0, le=1e6, description="rul: alarm while the lower end of the estimate is below (cycles)"
    )
    interval_s: float | None = Field(
        default=None, gt=0, le=86_400, description="rul: one cycle per interval (default: the trained one)"
    )
    since: AwareDatetime | None = Field(
        default=None, description="rul: when the unit was new or restored (default: now)"
    )
    staleness_s: float | None = Field(
        default=None,
        ge=0,
        le=86_400,
        description="how long a variable's last value is held (default: twice its period)",
    )


class RetireBody(BaseModel):
    device: DeviceKey | None = Field(default=None, description="only this device's deployment (default: all)")


# --- remaining useful life


class RulBody(BaseModel):
    """RUL of devices now: each device is a unit, its stored telemetry of [start, end) its history."""

    model: Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=NO_NUL)] = Field(
        description="the model's id, or its name"
    )
    version: Annotated[str, StringConstraints(max_length=20, pattern=NO_NUL)] | None = Field(
        default=None, description="a number; default: the newest"
    )
    devices: list[DeviceKey] = Field(min_length=1, max_length=500)
    start: AwareDatetime
    end: AwareDatetime
    interval_s: float = Field(gt=0, le=86_400, description="one cycle per step of this length")


class RulUnitOut(BaseModel):
    unit: str
    cycles: int
    point: float | None = Field(description="cycles left; null when a variable is missing")
    lower: float | None
    upper: float | None = Field(description="equal to the model's cap: the cap or more")
    coverage: float
    missing: list[str]


class RulOut(BaseModel):
    name: str
    version: int
    cap: float
    units: list[RulUnitOut]
    rmse: float | None = Field(default=None, description="against the truth column, over the units' latest cycles")
