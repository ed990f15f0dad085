"""The model registry over HTTP: models and versions, training, evaluation, scoring, deployment.

Thin: parse, call `AnalyticsService`, shape. Models are named by id or, within your tenant, by name;
versions by number. Files (CSV or Parquet) come as multipart uploads. After a deploy or retire the
live scorers of this process reload once the request's transaction has committed (a background task
runs after the response); other processes notice within a few seconds.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import (
    APIRouter,
    BackgroundTasks,
    Depends,
    File,
    Form,
    HTTPException,
    Path,
    Query,
    Request,
    UploadFile,
    status,
)
from sqlalchemy.orm import Session

from iip.analytics.fitting import CLASSIFIER
from iip.analytics.schemas import (
    NAME_PATTERN,
    ClassificationOut,
    ContributionsBody,
    ContributionsOut,
    DeployBody,
    DeploymentOut,
    EvaluateBody,
    EvaluationOut,
    LabelledRates,
    ModelDetail,
    ModelOut,
    RetireBody,
    RulBody,
    RulOut,
    RulUnitOut,
    ScoreBody,
    ScoreOut,
    TrainBody,
    VersionOut,
)
from iip.analytics.service import (
    AnalyticsService,
    Evaluation,
    RulReport,
    deployment_view,
    finite_or_none,
    utc_from_ms,
)
from iip.analytics.training import MAX_FILE_BYTES
from iip.api.deps import DbSession, audit_object, get_runtime, require
from iip.api.documents import Filter, TenantParam
from iip.api.problems import problem_responses
from iip.kernel.auth import Principal
from iip.kernel.errors import Invalid
from iip.kernel.runtime import Runtime

logger = logging.getLogger(__name__)

router = APIRouter(tags=["analytics"], responses=problem_responses(401, 403, 422))

Reader = Annotated[Principal, Depends(require("analytics.read"))]
Writer = Annotated[Principal, Depends(require("analytics.write"))]
ModelRef = Annotated[str, Path(max_length=100, pattern=r"^[^\x00]+$", description="the model's id, or its name")]
VersionRef = Annotated[
    str, Path(max_length=100, pattern=r"^[^\x00]+$", description="the version number, `latest`, or the version's id")
]
MODELS = "/api/analytics/models"
VERSION = MODELS + "/{model}/versions/{version}"
FOUND = problem_responses(404)
TEXT_FIELD = r"^[^\x00]*$"


@dataclass(frozen=True)
class Upload:
    content: bytes
    filename: str


async def _upload(file: Annotated[UploadFile, File(description="a CSV (header row) or Parquet file")]) -> Upload:
    content = await file.read(MAX_FILE_BYTES + 1)
    if len(content) > MAX_FILE_BYTES:
        raise HTTPException(413, f"the file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    return Upload(content, (file.filename or "upload.csv")[:200])


UploadDep = Annotated[Upload, Depends(_upload)]


def _service(request: Request, session: Session, actor: Principal) -> AnalyticsService:
    return AnalyticsService(session, actor, runtime=get_runtime(request))


def _reload_later(request: Request, background: BackgroundTasks) -> None:
    background.add_task(_reload, get_runtime(request))


async def _reload(runtime: Runtime) -> None:
    from iip.analytics.scoring import SCORING_SERVICE, ScoringRunner

    runner = runtime.services.get(SCORING_SERVICE)
    if isinstance(runner, ScoringRunner):
        try:
            await runner.reload()
        except Exception:  # committed already; the runner's own tick reloads within seconds
            logger.exception("live scorers not reloaded after a deployment change")


def _parameters(text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise Invalid(f"parameters must be a JSON object: {err.msg}", code="parameters_invalid") from None
    if not isinstance(value, dict):
        raise Invalid("parameters must be a JSON object", code="parameters_invalid")
    return value


def _names(text: str | None) -> list[str] | None:
    if text is None or not text.strip():
        return None
    return [name.strip() for name in text.split(",") if name.strip()]


def evaluation_view(evaluation: Evaluation, name: str) -> EvaluationOut:
    scores, table = evaluation.scores, evaluation.table
    labelled = None
    if evaluation.normal_rows is not None and evaluation.fault_rows is not None:
        labelled = LabelledRates(
            normal_rows=evaluation.normal_rows,
            fault_rows=evaluation.fault_rows,
            false_alarm_rate=evaluation.false_alarm_rate,
            detection_rate=evaluation.detection_rate,
        )
    times = None if table.times_ms is None else [utc_from_ms(int(ms)) for ms in table.times_ms]
    return EvaluationOut(
        name=name,
        version=evaluation.version.version,
        variables=list(table.variables),
        rows=table.rows,
        times=times,
        statistics={key: finite_or_none(values) for key, values in scores.statistics.items()},
        limits=scores.limits,
        alarm=scores.alarm.tolist(),
        valid=scores.valid.tolist(),
        missing=sorted(set(scores.missing) | set(table.absent)),
        alarm_rate=evaluation.alarm_rate,
        labelled=labelled,
    )


# --- registry


@router.get(MODELS, response_model=list[ModelOut])
def list_models(
    request: Request, actor: Reader, session: DbSession, q: Filter = None, tenant_id: TenantParam = None
) -> list[ModelOut]:
    """Your tenant's models (`q`: part of the name), with their newest version number."""
    rows = _service(request, session, actor).list_models(tenant_id=tenant_id, text=q)
    return [ModelOut.model_validate(row) for row in rows]


@router.get(MODELS + "/{model}", response_model=ModelDetail, responses=FOUND)
def get_model(model: ModelRef, request: Request, actor: Reader, session: DbSession) -> ModelDetail:
    """A model and its versions, each with its status, metrics and training data."""
    service = _service(request, session, actor)
    return service.describe_model(service.get_model(model))


@router.get(VERSION, response_model=VersionOut, responses=FOUND)
def get_model_version(
    model: ModelRef, version: VersionRef, request: Request, actor: Reader, session: DbSession
) -> VersionOut:
    """One version: kind, variables, parameters, limits, metrics, training data, status and deployments."""
    service = _service(request, session, actor)
    return service.describe_version(service.get_version(model, version))


@router.get("/api/analytics/deployments", response_model=list[DeploymentOut])
def list_deployments(
    request: Request,
    actor: Reader,
    session: DbSession,
    device: Filter = None,
    active: Annotated[bool | None, Query(description="default: only active ones")] = True,
    tenant_id: TenantParam = None,
) -> list[DeploymentOut]:
    """Deployments of your tenant's model versions, newest first."""
    return _service(request, session, actor).list_deployments(device=device, active=active, tenant_id=tenant_id)


# --- training


@router.post(MODELS, response_model=VersionOut, status_code=status.HTTP_201_CREATED, responses=FOUND)
def train_model(
    body: TrainBody, request: Request, actor: Writer, session: DbSession, tenant_id: TenantParam = None
) -> VersionOut:
    """Train a new version of a model on stored telemetry (the model is created on its first version).

    The metrics are aligned on a grid of `interval_s`; a grid step without a point is refused (422,
    naming the variable and time), as are constant variables and too few samples.
    """
    service = _service(request, session, actor)
    source = body.source
    row = service.train_from_telemetry(
        body.name,
        body.kind,
        devices=source.devices,
        metrics=source.metrics,
        start=source.start,
        end=source.end,
        interval_s=source.interval_s,
        parameters=body.parameters,
        false_alarm_rate=body.false_alarm_rate,
        holdout=body.holdout,
        description=body.description,
        tenant_id=tenant_id,
    )
    audit_object(request, "analytics_model_version", row.id)
    return service.describe_version(row)


@router.post(
    MODELS + "/file",
    response_model=VersionOut,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(404, 413),
)
def train_model_from_file(
    upload: UploadDep,
    request: Request,
    actor: Writer,
    session: DbSession,
    name: Annotated[str, Form(pattern=NAME_PATTERN)],
    kind: Annotated[str, Form(max_length=40, pattern=r"^[a-z][a-z0-9_]*$")],
    variables: Annotated[str | None, Form(max_length=20_000, pattern=TEXT_FIELD, description="comma-separated")] = None,
    time_column: Annotated[str | None, Form(max_length=200, pattern=TEXT_FIELD)] = None,
    unit_column: Annotated[
        str | None, Form(max_length=200, pattern=TEXT_FIELD, description="rul: the unit each row belongs to")
    ] = None,
    label_column: Annotated[
        str | None, Form(max_length=200, pattern=TEXT_FIELD, description="classifier: each row's class")
    ] = None,
    parameters: Annotated[str, Form(max_length=2000, pattern=TEXT_FIELD, description="a JSON object")] = "",
    false_alarm_rate: Annotated[float, Form(gt=0, lt=0.5)] = 0.01,
    holdout: Annotated[float, Form(ge=0, le=0.5)] = 0.2,
    description: Annotated[str, Form(max_length=500, pattern=TEXT_FIELD)] = "",
    tenant_id: TenantParam = None,
) -> VersionOut:
    """Train a new version on an uploaded CSV or Parquet file (columns named in its header row).

    Every column but the time (and unit) column is a variable unless `variables` names them. A
    missing or non-numeric cell is refused (422, naming its row and column), as are constant columns
    and too few rows. The version's variables read the metrics of the same names once deployed. A
    `rul` model learns from run-to-failure histories: `unit_column` names each row's unit, whose
    rows are its cycles in order up to its failure. A `classifier` learns fault classes from
    `label_column`; its metrics hold the confusion matrix and each class's recall on held-out rows.
    """
    service = _service(request, session, actor)
    row = service.train_from_file(
        name,
        kind,
        upload.content,
        upload.filename,
        variables=_names(variables),
        time_column=time_column or None,
        unit_column=unit_column or None,
        label_column=label_column or None,
        parameters=_parameters(parameters),
        false_alarm_rate=false_alarm_rate,
        holdout=holdout,
        description=description,
        tenant_id=tenant_id,
    )
    audit_object(request, "analytics_model_version", row.id)
    return service.describe_version(row)


# --- evaluation and scoring


@router.post(VERSION + "/evaluate", response_model=EvaluationOut, responses=FOUND)
def evaluate_model_version(
    model: ModelRef, version: VersionRef, body: EvaluateBody, request: Request, actor: Reader, session: DbSession
) -> EvaluationOut:
    """Score a device's stored telemetry of [start, end): T², SPE ... per grid step, the limits and alarms.

    A grid step lacking a variable is not scored and the variable is named in `missing`.
    """
    service = _service(request, session, actor)
    row = service.get_version(model, version)
    evaluation = service.evaluate_telemetry(
        row, device=body.device, start=body.start, end=body.end, interval_s=body.interval_s
    )
    return evaluation_view(evaluation, service.model_of(row).name)


@router.post(
    "/api/analytics/evaluations",
    response_model=EvaluationOut | ClassificationOut,
    responses=problem_responses(404, 413),
)
def evaluate_file(
    upload: UploadDep,
    request: Request,
    actor: Reader,
    session: DbSession,
    model: Annotated[str, Form(max_length=100, pattern=r"^[^\x00]+$", description="the model's id, or its name")],
    version: Annotated[str, Form(max_length=20, pattern=TEXT_FIELD, description="a number; default: the newest")] = "",
    label_column: Annotated[
        str | None,
        Form(
            max_length=200,
            pattern=TEXT_FIELD,
            description="monitors: 0/normal marks a normal row, else a fault; classifiers (required): each row's class",
        ),
    ] = None,
    time_column: Annotated[str | None, Form(max_length=200, pattern=TEXT_FIELD)] = None,
) -> EvaluationOut | ClassificationOut:
    """Score an uploaded CSV or Parquet file's rows with a version; with a label column, the
    false-alarm and detection rates too. A variable without a column, or an empty cell, is not
    filled in: the row is not scored and the variable is named in `missing`.

    A classifier version needs the label column: the answer is its accuracy, each class's recall and
    precision and the confusion matrix on the file's rows (a missing variable column or a label the
    classifier does not know is refused, 422, naming it)."""
    service = _service(request, session, actor)
    row = service.get_version(model, version or None)
    if row.kind == CLASSIFIER:
        found = service.classify_file(
            row, upload.content, upload.filename, label_column=label_column or None, time_column=time_column or None
        )
        return classification_view(found.report, service.model_of(row).name, row.version)
    evaluation = service.evaluate_file(
        row, upload.content, upload.filename, label_column=label_column or None, time_column=time_column or None
    )
    return evaluation_view(evaluation, service.model_of(row).name)


def classification_view(report: dict[str, Any], name: str, version: int) -> ClassificationOut:
    return ClassificationOut(name=name, version=version, **report)


@router.post(VERSION + "/score", response_model=ScoreOut, responses=FOUND)
def score_samples(
    model: ModelRef, version: VersionRef, body: ScoreBody, request: Request, actor: Reader, session: DbSession
) -> ScoreOut:
    """Score consecutive samples; a sample lacking a variable is not scored and names what it lacked."""
    service = _service(request, session, actor)
    row = service.get_version(model, version)
    scores, missing = service.score(row, body.samples, persistence=body.persistence)
    return ScoreOut(
        name=service.model_of(row).name,
        version=row.version,
        statistics={key: finite_or_none(values) for key, values in scores.statistics.items()},
        limits=scores.limits,
        alarm=scores.alarm.tolist(),
        valid=scores.valid.tolist(),
        missing=missing,
    )


@router.post(VERSION + "/contributions", response_model=ContributionsOut, responses=FOUND)
def explain_sample(
    model: ModelRef,
    version: VersionRef,
    body: ContributionsBody,
    request: Request,
    actor: Reader,
    session: DbSession,
) -> ContributionsOut:
    """Each variable's contribution to each statistic, for one posted sample or one moment of stored telemetry."""
    service = _service(request, session, actor)
    row = service.get_version(model, version)
    if body.samples is not None:
        found = service.contributions(row, service.samples_table(row, body.samples), body.row)
    elif body.at is not None:
        found = service.contributions_at(row, device=body.device, at=body.at, interval_s=body.interval_s)
    else:
        raise Invalid("give samples, or a device and a time", code="contributions_input_missing")
    at = None if found.at_ms is None else utc_from_ms(found.at_ms)
    return ContributionsOut(
        name=service.model_of(row).name,
        version=row.version,
        at=at,
        row=found.row if found.at_ms is None else None,
        statistics=found.statistics,
        limits=found.limits,
        contributions=found.shares,
        top=found.top,
    )


# --- remaining useful life


def rul_view(report: RulReport, name: str, cap: float) -> RulOut:
    def number(value: float) -> float | None:
        return value if math.isfinite(value) else None

    units = [
        RulUnitOut(
            unit=unit,
            cycles=e.cycles,
            point=number(e.point),
            lower=number(e.lower),
            upper=number(e.upper),
            coverage=e.coverage,
            missing=list(e.missing),
        )
        for unit, e in report.units
    ]
    return RulOut(name=name, version=report.version.version, cap=cap, units=units, rmse=report.rmse)


@router.post("/api/analytics/rul", response_model=RulOut, responses=FOUND)
def estimate_rul(body: RulBody, request: Request, actor: Reader, session: DbSession) -> RulOut:
    """Remaining useful life of devices now, with its interval: each device's stored telemetry of
    [start, end), one cycle per `interval_s`, is its history. A device lacking a variable gets none."""
    service = _service(request, session, actor)
    row = service.get_version(body.model, body.version)
    report = service.rul_telemetry(
        row, devices=body.devices, start=body.start, end=body.end, interval_s=body.interval_s
    )
    return rul_view(report, service.model_of(row).name, service.rul_model(row).cap)


@router.post("/api/analytics/rul/file", response_model=RulOut, responses=problem_responses(404, 413))
def estimate_rul_from_file(
    upload: UploadDep,
    request: Request,
    actor: Reader,
    session: DbSession,
    model: Annotated[str, Form(max_length=100, pattern=r"^[^\x00]+$", description="the model's id, or its name")],
    unit_column: Annotated[str, Form(max_length=200, pattern=r"^[^\x00]+$")],
    version: Annotated[str, Form(max_length=20, pattern=TEXT_FIELD, description="a number; default: the newest")] = "",
    truth_column: Annotated[
        str | None, Form(max_length=200, pattern=TEXT_FIELD, description="the true RUL at each row, for the RMSE")
    ] = None,
) -> RulOut:
    """Remaining useful life at the latest cycle of each unit of an uploaded file (a unit's rows in cycle order)."""
    service = _service(request, session, actor)
    row = service.get_version(model, version or None)
    report = service.rul_file(
        row, upload.content, upload.filename, unit_column=unit_column, truth_column=truth_column or None
    )
    return rul_view(report, service.model_of(row).name, service.rul_model(row).cap)


# --- deployment


@router.post(
    VERSION + "/deployments",
    response_model=DeploymentOut,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(404, 409),
)
def deploy_model_version(
    model: ModelRef,
    version: VersionRef,
    body: DeployBody,
    request: Request,
    background: BackgroundTasks,
    actor: Writer,
    session: DbSession,
) -> DeploymentOut:
    """Score a device's live stream with this version (ending another version of the model there).

    A monitor may take a fault `classifier`: its alarms then name the most likely fault class. A
    rul model writes its estimate each cycle and raises `model.rul_low` below `rul_threshold`.
    """
    service = _service(request, session, actor)
    row = service.get_version(model, version)
    classifier = service.version_by_reference(body.classifier) if body.classifier else None
    deployment = service.deploy(
        row,
        body.device,
        rul_threshold=body.rul_threshold,
        interval_s=body.interval_s,
        since=body.since,
        classifier=classifier,
        staleness_s=body.staleness_s,
    )
    audit_object(request, "analytics_deployment", deployment.id)
    _reload_later(request, background)
    return deployment_view(deployment, service.model_of(row).name, row.version)


@router.post(VERSION + "/retire", response_model=VersionOut, responses=problem_responses(404, 409))
def retire_model_version(
    model: ModelRef,
    version: VersionRef,
    request: Request,
    background: BackgroundTasks,
    actor: Writer,
    session: DbSession,
    body: RetireBody | None = None,
) -> VersionOut:
    """Stop scoring with this version (on one device, or everywhere); retired once no device is left."""
    service = _service(request, session, actor)
    row = service.get_version(model, version)
    service.retire(row, (body or RetireBody()).device)
    audit_object(request, "analytics_model_version", row.id)
    _reload_later(request, background)
    return service.describe_version(row)
