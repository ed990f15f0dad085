"""Console pages of the analytics context: the model list, a model with its versions (deploy and
retire), a monitoring chart with its alarm episodes, the contributions at a chosen moment, SPC
charts of telemetry or of an uploaded column, and remaining useful life per unit.

Thin like the API router: read the query or the form, call `AnalyticsService`, shape with
`views`, render. The service scopes every read to the principal's tenant, so another tenant's
model is a 404 page. Charts are drawn by `static/analytics.js` with the plotly bundled in the
installed package (the console's CSP forbids inline scripts and CDNs); every chart's figures are
in a table on the page too.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from iip.analytics import views
from iip.analytics.fitting import CLASSIFIER, RUL
from iip.analytics.models import Deployment, Model, ModelVersion
from iip.analytics.service import AnalyticsService, time_ms
from iip.analytics.spc import MAX_SUBGROUP, MIN_SUBGROUP
from iip.analytics.training import read_file
from iip.api.deps import DbSession, audit_object, get_runtime
from iip.console.forms import FormState, clean_filter, not_done, refusal_status, render_form_page, url_with
from iip.console.web import (
    N_,
    ConsoleIdentity,
    Message,
    console_permission,
    csrf_protect,
    get_console,
    message,
    redirect,
    render,
    request_language,
    static_url,
)
from iip.kernel.errors import Conflict, Invalid, NotFound
from iip.kernel.module import Page
from iip.kernel.runtime import Runtime
from iip.telemetry.public import points_between

logger = logging.getLogger(__name__)

pages_router = APIRouter(include_in_schema=False)

MODELS_PATH = "/analytics/models"
SPC_PATH = "/analytics/spc"

PAGES = (
    Page(MODELS_PATH, N_("Models"), "analytics.read", "activity"),
    Page(SPC_PATH, N_("SPC charts"), "analytics.read", "dashboard"),
)

Reader = Annotated[ConsoleIdentity, Depends(console_permission("analytics.read"))]
Writer = Annotated[ConsoleIdentity, Depends(console_permission("analytics.write"))]
CSRF = [Depends(csrf_protect)]
FormText = Annotated[str, Form()]

DEVICE_LENGTH = 200
METRIC_LENGTH = 128
MIN_INTERVAL_S = 0.001  # the grid is in milliseconds
MAX_INTERVAL_S = 86_400
DEFAULT_TOP = 10
MAX_TOP = 50
MAX_UPLOAD_BYTES = 16 * 1024 * 1024
DEFAULT_WINDOW = dt.timedelta(hours=1)
NO_MONITOR_CHART = N_("This version estimates remaining useful life; it has no monitoring chart.")
NO_RUL = N_("This version is a process monitor; it estimates no remaining life.")


# --- what the pages share ---------------------------------------------------------------------


def _service(request: Request, session: Session, identity: ConsoleIdentity) -> AnalyticsService:
    return AnalyticsService(session, identity.principal, runtime=get_runtime(request))


def model_url(model: Model, identity: ConsoleIdentity) -> str:
    # A name names a model within the viewer's tenant; platform operators reach the others by id.
    ref = model.name if model.tenant_id == identity.principal.tenant_id else model.id
    return f"{MODELS_PATH}/{quote(ref, safe='')}"


def version_url(model: Model, number: int, identity: ConsoleIdentity, page: str = "") -> str:
    return f"{model_url(model, identity)}/versions/{number}" + (f"/{page}" if page else "")


def format_time(value: dt.datetime | None) -> str:
    """To the second: grid steps are often seconds apart."""
    if value is None:
        return "—"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_ms(ms: int) -> str:
    return format_time(views.utc(ms))


def format_value(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"


def translator(request: Request) -> Callable[[str], str]:
    """Message ids in the reader's language, for text that goes into a chart's data rather than a template."""
    console, language = get_console(request), request_language(request)
    return functools.partial(console.gettext, language)


def shared(identity: ConsoleIdentity) -> dict[str, Any]:
    return {
        "kind_labels": views.KIND_LABELS,
        "status_labels": views.STATUS_LABELS,
        "statistic_label": views.statistic_label,
        "when": format_time,
        "when_ms": format_ms,
        "value": format_value,
        "can_write": identity.can("analytics.write"),
        "style_url": static_url("analytics/analytics.css"),
        "script_url": static_url("analytics/analytics.js"),
    }


def time_field(at: dt.datetime | None) -> str:
    """A time as a `datetime-local` field shows it (UTC, no zone suffix)."""
    if at is None:
        return ""
    text = at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return text + f".{at.microsecond // 1000:03d}" if at.microsecond else text


def parse_time(text: str, form: FormState, name: str, *, required: bool = True) -> dt.datetime | None:
    """A `datetime-local` field's value (or ISO 8601), taken as UTC unless it names a zone."""
    text = text.strip()[:40]
    if not text:
        if required:
            form.error(name, N_("Enter a date and time, e.g. 2026-01-05 08:00."))
        return None
    try:
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        form.error(name, N_("Enter a date and time, e.g. 2026-01-05 08:00."))
        return None
    if not dt.datetime(1970, 1, 2) <= at.replace(tzinfo=None) <= dt.datetime(9999, 1, 1):
        form.error(name, N_("Enter a date and time, e.g. 2026-01-05 08:00."))
        return None
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)


def parse_range(start: str, end: str, form: FormState) -> tuple[dt.datetime | None, dt.datetime | None]:
    since = parse_time(start, form, "start")
    until = parse_time(end, form, "end")
    if since is not None and until is not None and until <= since:
        form.error("end", N_("The end must be after the start."))
    return since, until


def parse_number(
    text: str,
    form: FormState,
    name: str,
    *,
    low: float,
    high: float,
    low_open: bool = False,
    required: bool = True,
) -> float | None:
    """A number field within [low, high] (or (low, high] when `low_open`); the error names the bounds."""
    text = text.strip()[:40]
    if not text:
        if required:
            form.error(name, N_("Enter a number."))
        return None
    try:
        value = float(text)
    except ValueError:
        form.error(name, N_("Enter a number."))
        return None
    below = value <= low if low_open else value < low
    if not math.isfinite(value) or below or value > high:
        if low_open:
            form.error(name, N_("Enter a number above %(low)s and at most %(high)s."), low=f"{low:g}", high=f"{high:g}")
        else:
            form.error(name, N_("Enter a number from %(low)s to %(high)s."), low=f"{low:g}", high=f"{high:g}")
        return None
    return value


def device_key_ok(key: str) -> bool:
    """A key the telemetry store keeps: bounded, and no slash (it separates a device from a metric)."""
    return len(key) <= DEVICE_LENGTH and "/" not in key and "\x00" not in key and not key.isspace()


def parse_device(text: str, form: FormState, name: str = "device", *, required: bool = True) -> str | None:
    device = text.strip()
    if not device:
        if required:
            form.error(name, N_("Enter the device's key."))
        return None
    if not device_key_ok(device):
        form.error(name, N_("A device key has at most 200 characters and no slash."))
        return None
    return device


def interval_text(version: ModelVersion) -> str:
    seconds = views.trained_interval_s(version)
    return f"{seconds:g}" if seconds is not None else ""


def deployment_settings(deployment: Deployment) -> list[tuple[str, str]]:
    """A deployment's settings as the API names them, each with its value as the page shows it."""
    out: list[tuple[str, str]] = []
    for name, value in sorted((deployment.settings or {}).items()):
        if name == "classifier_version_id":
            continue  # `classifier` names it
        if name == "since_ms" and isinstance(value, int):
            out.append((name, format_ms(value)))
        elif isinstance(value, float):
            out.append((name, format_value(value)))
        else:
            out.append((name, str(value)))
    return out


def default_window() -> tuple[dt.datetime, dt.datetime]:
    end = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    return end - DEFAULT_WINDOW, end


# --- model list -------------------------------------------------------------------------------


@pages_router.get(MODELS_PATH, response_class=HTMLResponse)
def models_page(request: Request, identity: Reader, session: DbSession, q: str = "") -> HTMLResponse:
    text = clean_filter(q, 100)
    rows = views.model_rows(_service(request, session, identity), text)
    return render(
        request,
        "analytics/models.html",
        {
            "page_title": N_("Models"),
            "rows": rows,
            "filters": {"q": text},
            "model_url": lambda model: model_url(model, identity),
            "show_tenant": identity.principal.is_platform,
            **shared(identity),
        },
    )


# --- one model: versions, deploy, retire ------------------------------------------------------


def _model_page(
    request: Request,
    session: Session,
    identity: ConsoleIdentity,
    ref: str,
    *,
    form: FormState | None = None,
    form_version: int | None = None,
    problem: Message | None = None,
    status: int = 200,
) -> HTMLResponse:
    service = _service(request, session, identity)
    model = service.get_model(ref[:100])
    context = {
        "page_title": N_("Model"),
        "model": model,
        "versions": views.version_views(session, model),
        "version_url": lambda number, page="": version_url(model, number, identity, page),
        "back_url": MODELS_PATH,
        "form_version": form_version,
        "problem": problem,
        "deployment_settings": deployment_settings,
        "interval_of": interval_text,
        **shared(identity),
    }
    return render_form_page(request, "analytics/model.html", context, form, status_code=status)


@pages_router.get(MODELS_PATH + "/{model}", response_class=HTMLResponse)
def model_page(request: Request, model: str, identity: Reader, session: DbSession) -> HTMLResponse:
    return _model_page(request, session, identity, model)


async def _reload_scorers(runtime: Runtime) -> None:
    """Live scorers pick the change up now rather than at their next tick (after the commit)."""
    from iip.analytics.scoring import SCORING_SERVICE, ScoringRunner

    runner = runtime.services.get(SCORING_SERVICE)
    if isinstance(runner, ScoringRunner):
        try:
            await runner.reload()
        except Exception:  # committed already; the runner's own tick reloads within seconds
            logger.exception("live scorers not reloaded after a deployment change")


def _deployment_action(
    request: Request,
    session: Session,
    identity: ConsoleIdentity,
    background: BackgroundTasks,
    ref: str,
    number: str,
    form: FormState,
    act: Callable[[AnalyticsService, ModelVersion], str | None],
    notice: str,
) -> Response:
    """Deploy or retire; back to the model's page, or that page again with the reason it was refused."""
    service = _service(request, session, identity)
    version = service.get_version(ref[:100], number[:40])
    model = service.model_of(version)
    audit_object(request, "analytics_model_version", version.id)
    if form.ok:
        try:
            elsewhere = act(service, version)
        except (Conflict, Invalid, NotFound) as err:
            session.rollback()
            return _model_page(
                request,
                session,
                identity,
                ref,
                form=form,
                form_version=version.version,
                problem=not_done(err),
                status=refusal_status(err),
            )
        background.add_task(_reload_scorers, get_runtime(request))
        return redirect(elsewhere or f"{model_url(model, identity)}#version-{version.version}", notice=notice)
    return _model_page(request, session, identity, ref, form=form, form_version=version.version, status=422)


REFERENCE_LENGTH = 120  # NAME@VERSION, as the API takes it
DEPLOY_FIELDS = ("device", "classifier", "monitor", "threshold", "interval", "since", "staleness")


def parse_reference(text: str, form: FormState, name: str, *, required: bool) -> str | None:
    """A model version named NAME or NAME@VERSION (bounded as the API bounds it)."""
    reference = text.strip()
    if not reference:
        if required:
            form.error(name, N_("Enter a model version as NAME or NAME@VERSION."))
        return None
    if len(reference) > REFERENCE_LENGTH or "\x00" in reference:
        form.error(name, N_("Enter a model version as NAME or NAME@VERSION."))
        return None
    return reference


@pages_router.post(MODELS_PATH + "/{model}/versions/{version}/deploy", dependencies=CSRF)
def deploy_version(
    request: Request,
    model: str,
    version: str,
    background: BackgroundTasks,
    identity: Writer,
    session: DbSession,
    device: FormText = "",
    classifier: FormText = "",
    monitor: FormText = "",
    threshold: FormText = "",
    interval: FormText = "",
    since: FormText = "",
    staleness: FormText = "",
) -> Response:
    """Deploy a monitor (with a fault classifier if named) or a RUL model to a device; a classifier goes
    beside a monitor: the monitor is deployed naming it. The settings are checked as the API checks them."""
    posted = {"device": device, "classifier": classifier, "monitor": monitor, "threshold": threshold}
    posted.update(interval=interval, since=since, staleness=staleness)
    form = FormState({name: posted[name][: DEVICE_LENGTH + 1] for name in DEPLOY_FIELDS})
    key = parse_device(device, form)
    service = _service(request, session, identity)
    kind = service.get_version(model[:100], version[:40]).kind
    staleness_s = parse_number(staleness, form, "staleness", low=0, high=MAX_INTERVAL_S, required=False)
    threshold_cycles = interval_s = start = None
    classifier_ref = monitor_ref = None
    if kind == RUL:
        threshold_cycles = parse_number(threshold, form, "threshold", low=0, high=1e6, required=False)
        interval_s = parse_number(interval, form, "interval", low=0, high=MAX_INTERVAL_S, low_open=True, required=False)
        start = parse_time(since, form, "since", required=False)
    elif kind == CLASSIFIER:
        monitor_ref = parse_reference(monitor, form, "monitor", required=True)
    else:
        classifier_ref = parse_reference(classifier, form, "classifier", required=False)

    def act(service: AnalyticsService, row: ModelVersion) -> str | None:
        if row.kind == CLASSIFIER:
            # The classifier is named in the monitor's deployment: that is what gets deployed.
            target = service.version_by_reference(monitor_ref or "")
            deployment = service.deploy(target, key or "", classifier=row, staleness_s=staleness_s)
            audit_object(request, "analytics_deployment", deployment.id)
            return f"{model_url(service.model_of(target), identity)}#version-{target.version}"
        named = service.version_by_reference(classifier_ref) if classifier_ref else None
        deployment = service.deploy(
            row,
            key or "",
            rul_threshold=threshold_cycles,
            interval_s=interval_s,
            since=start,
            classifier=named,
            staleness_s=staleness_s,
        )
        audit_object(request, "analytics_deployment", deployment.id)
        return None

    notice = (
        N_("The monitor was deployed with this classifier.") if kind == CLASSIFIER else N_("The version was deployed.")
    )
    return _deployment_action(request, session, identity, background, model, version, form, act, notice)


@pages_router.post(MODELS_PATH + "/{model}/versions/{version}/retire", dependencies=CSRF)
def retire_version(
    request: Request,
    model: str,
    version: str,
    background: BackgroundTasks,
    identity: Writer,
    session: DbSession,
    device: FormText = "",
) -> Response:
    form = FormState({"retire_device": device[: DEVICE_LENGTH + 1]})
    key = parse_device(device, form, "retire_device", required=False)

    def act(service: AnalyticsService, row: ModelVersion) -> None:
        service.retire(row, key)

    notice = N_("The deployment was ended.") if key else N_("The version was retired.")
    return _deployment_action(request, session, identity, background, model, version, form, act, notice)


# --- monitoring chart and contributions -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VersionPage:
    """A page of one model version: the service, the version and what each of its pages shows."""

    service: AnalyticsService
    row: ModelVersion
    context: dict[str, Any]

    def form_only(self, request: Request, name: str, form: FormState, *, charted: bool) -> HTMLResponse:
        """`analytics/<name>.html` with its form and no result: nothing asked yet, or `charted` is false
        because this kind of version has no such chart (the page says so)."""
        if not charted:
            no_chart = NO_MONITOR_CHART if self.row.kind == RUL else NO_RUL
            self.context["problem"] = message(no_chart)
        return render_form_page(request, f"analytics/{name}.html", self.context, form)


def _version_page(request: Request, model: str, version: str, identity: Reader, session: DbSession) -> VersionPage:
    service = _service(request, session, identity)
    row = service.get_version(model[:100], version[:40])
    found = service.model_of(row)
    context = {
        "model": found,
        "model_version": row,
        "model_url": model_url(found, identity),
        "monitor_url": version_url(found, row.version, identity, "monitor"),
        "contributions_url": version_url(found, row.version, identity, "contributions"),
        "rul_url": version_url(found, row.version, identity, "rul"),
        "needs_device": views.needs_device(row),
        **shared(identity),
    }
    return VersionPage(service, row, context)


OfVersion = Annotated[VersionPage, Depends(_version_page)]


@pages_router.get(MODELS_PATH + "/{model}/versions/{version}/monitor", response_class=HTMLResponse)
def monitor_page(
    request: Request,
    page: OfVersion,
    device: str = "",
    start: str = "",
    end: str = "",
    interval: str = "",
) -> HTMLResponse:
    """A version's statistics over a device's stored telemetry, with their limits and alarm episodes."""
    service, row, context = page.service, page.row, page.context
    submitted = bool(start or end)
    since, until = default_window()
    form = FormState(
        {
            "device": device[: DEVICE_LENGTH + 1] or ("" if submitted else views.trained_device(row)),
            "start": start[:40] if submitted else time_field(since),
            "end": end[:40] if submitted else time_field(until),
            "interval": interval[:40] or ("" if submitted else interval_text(row)),
        }
    )
    context.update(page_title=N_("Monitoring chart"), view=None, problem=None, chart=None)
    if row.kind == RUL or not submitted:
        return page.form_only(request, "monitor", form, charted=row.kind != RUL)
    key = parse_device(form.values["device"], form, required=context["needs_device"])
    since_at, until_at = parse_range(form.values["start"], form.values["end"], form)
    step = parse_number(form.values["interval"], form, "interval", low=MIN_INTERVAL_S, high=MAX_INTERVAL_S)
    if form.ok and since_at and until_at and step:
        steps = views.chart_steps(since_at, until_at, step)
        if steps > views.MAX_CHART_ROWS:
            form.error(
                "interval",
                N_("%(count)s samples in the range: at most %(limit)s on one chart; choose a longer interval."),
                count=steps,
                limit=views.MAX_CHART_ROWS,
            )
    status = 200
    if form.ok and since_at and until_at and step:
        try:
            evaluation = service.evaluate_telemetry(row, device=key, start=since_at, end=until_at, interval_s=step)
        except Invalid as err:
            context["problem"], status = not_done(err), 422
        else:
            view = views.monitoring_view(evaluation, round(step * 1000))
            kept = {
                "device": key or "",
                "interval": f"{step:g}",
                "start": form.values["start"],
                "end": form.values["end"],
            }
            context.update(
                view=view,
                chart=view.chart(),
                explain_url=url_with(context["contributions_url"], kept),
                explain_at=lambda at: url_with(context["contributions_url"], {**kept, "at": views.iso_time(at)}),
            )
    else:
        status = 422
    return render_form_page(request, "analytics/monitor.html", context, form, status_code=status)


@pages_router.get(MODELS_PATH + "/{model}/versions/{version}/contributions", response_class=HTMLResponse)
def contributions_page(
    request: Request,
    page: OfVersion,
    device: str = "",
    at: str = "",
    interval: str = "",
    top: str = "",
    start: str = "",
    end: str = "",
) -> HTMLResponse:
    """Each variable's contribution to each statistic at one grid step of a device's stored telemetry."""
    service, row, context = page.service, page.row, page.context
    form = FormState(
        {
            "device": device[: DEVICE_LENGTH + 1] or views.trained_device(row),
            "at": at[:40],
            "interval": interval[:40] or interval_text(row),
            "top": top[:4] or str(DEFAULT_TOP),
        }
    )
    back = {"device": form.values["device"], "interval": form.values["interval"], "start": start[:40], "end": end[:40]}
    context.update(
        page_title=N_("Contributions"),
        panels=None,
        chart=None,
        problem=None,
        moment=None,
        back_url=url_with(context["monitor_url"], back) if start and end else context["monitor_url"],
        range={"start": start[:40], "end": end[:40]},
    )
    if row.kind == RUL or not at:
        return page.form_only(request, "contributions", form, charted=row.kind != RUL)
    key = parse_device(form.values["device"], form, required=context["needs_device"])
    moment = parse_time(form.values["at"], form, "at")
    if moment is not None:
        form.values["at"] = time_field(moment)
    step = parse_number(form.values["interval"], form, "interval", low=MIN_INTERVAL_S, high=MAX_INTERVAL_S)
    count = parse_number(form.values["top"], form, "top", low=1, high=MAX_TOP)
    status = 422
    if form.ok and moment is not None and step is not None and count is not None:
        try:
            found = service.contributions_at(row, device=key, at=moment, interval_s=step)
        except Invalid as err:
            context["problem"] = not_done(err)
        else:
            status = 200
            panels = views.contribution_panels(found, int(count))
            translate = translator(request)
            chart = [
                {
                    "title": views.statistic_label(p.statistic),
                    "variables": [b.variable for b in p.bars],
                    "values": [b.value for b in p.bars],
                    "shares": [b.share for b in p.bars],
                }
                for p in panels
            ]
            context.update(
                panels=panels,
                moment=moment,
                chart={"panels": chart, "value_label": translate(N_("Contribution"))},
            )
    return render_form_page(request, "analytics/contributions.html", context, form, status_code=status)


# --- remaining useful life --------------------------------------------------------------------


def parse_devices(text: str, form: FormState) -> list[str]:
    names = [n for n in re.split(r"[,\s]+", text.strip()) if n]
    if not names:
        form.error("devices", N_("Enter at least one device key."))
        return []
    if len(names) > views.MAX_RUL_UNITS:
        form.error("devices", N_("At most %(count)s devices at once."), count=views.MAX_RUL_UNITS)
        return []
    for name in names:
        if not device_key_ok(name):
            form.error("devices", N_("A device key has at most 200 characters and no slash."))
            return []
    return list(dict.fromkeys(names))


@pages_router.get(MODELS_PATH + "/{model}/versions/{version}/rul", response_class=HTMLResponse)
def rul_page(
    request: Request,
    page: OfVersion,
    devices: str = "",
    start: str = "",
    end: str = "",
    interval: str = "",
    unit: str = "",
) -> HTMLResponse:
    """Remaining useful life of each device now, most urgent first, and one unit's estimate over its cycles."""
    service, row, context = page.service, page.row, page.context
    submitted = bool(devices)
    since, until = default_window()
    form = FormState(
        {
            "devices": devices[:20_000],
            "start": start[:40] if submitted else start[:40] or time_field(since),
            "end": end[:40] if submitted else end[:40] or time_field(until),
            "interval": interval[:40] or interval_text(row),
        }
    )
    context.update(page_title=N_("Remaining useful life"), rows=None, problem=None, curve=None, chosen=None, cap=None)
    if row.kind != RUL or not submitted:
        return page.form_only(request, "rul", form, charted=row.kind == RUL)
    names = parse_devices(form.values["devices"], form)
    since_at, until_at = parse_range(form.values["start"], form.values["end"], form)
    step = parse_number(form.values["interval"], form, "interval", low=MIN_INTERVAL_S, high=MAX_INTERVAL_S)
    if form.ok and since_at and until_at and step:
        cycles = views.chart_steps(since_at, until_at, step)
        if cycles > views.MAX_RUL_CYCLES:
            form.error(
                "interval",
                N_("%(count)s cycles in the range: at most %(limit)s; choose a longer cycle or a shorter range."),
                count=cycles,
                limit=views.MAX_RUL_CYCLES,
            )
    if not (form.ok and since_at and until_at and step):
        return render_form_page(request, "analytics/rul.html", context, form, status_code=422)
    try:
        report = service.rul_telemetry(row, devices=names, start=since_at, end=until_at, interval_s=step)
        cap = service.rul_model(row).cap
        rows = views.units_by_urgency(report, cap)
        chosen = next((r for r in rows if r.unit == unit), None) or next((r for r in rows if r.valid), None)
        curve = None
        if chosen is not None:
            history = views.unit_history(service, row, chosen.unit, since_at, until_at, step)
            curve = views.curve_chart(service.rul_model(row).predict_cycles(history), cap)
    except Invalid as err:
        context["problem"] = not_done(err)
        return render_form_page(request, "analytics/rul.html", context, form, status_code=422)
    query = {k: form.values[k] for k in ("devices", "start", "end", "interval")}
    context.update(
        rows=rows,
        chosen=chosen,
        curve=curve,
        cap=cap,
        unit_url=lambda name: url_with(context["rul_url"], {**query, "unit": name}) + "#unit-chart",
    )
    return render_form_page(request, "analytics/rul.html", context, form)


# --- statistical process control --------------------------------------------------------------

SPC_FIELDS = ("source", "device", "metric", "start", "end", "column", "chart", "subgroup", "rules")
SPC_NUMBERS = ("lam", "width", "k", "h", "lsl", "usl")
SPC_DEFAULTS = {
    "source": "telemetry",
    "chart": "imr",
    "subgroup": "5",
    "rules": "we",
    "lam": "0.2",
    "width": "3",
    "k": "0.5",
    "h": "5",
}
SOURCES: dict[str, str] = {"telemetry": N_("Stored telemetry"), "file": N_("Uploaded file")}


def spc_settings(form: FormState) -> views.SpcSettings | None:
    values = form.values
    chart = values["chart"] if values["chart"] in views.CHART_TYPES else ""
    if not chart:
        form.error("chart", N_("Choose a chart type."))
    rules = values["rules"] if values["rules"] in views.RULE_SETS else ""
    if not rules:
        form.error("rules", N_("Choose the run rules."))
    subgroup = parse_number(values["subgroup"], form, "subgroup", low=MIN_SUBGROUP, high=MAX_SUBGROUP)
    if subgroup is not None and not subgroup.is_integer():
        form.error("subgroup", N_("Enter a whole number."))
    lam = parse_number(values["lam"], form, "lam", low=0, high=1, low_open=True)
    width = parse_number(values["width"], form, "width", low=0, high=10, low_open=True)
    k = parse_number(values["k"], form, "k", low=0, high=10)
    h = parse_number(values["h"], form, "h", low=0, high=50, low_open=True)
    lsl = parse_number(values["lsl"], form, "lsl", low=-1e15, high=1e15, required=False)
    usl = parse_number(values["usl"], form, "usl", low=-1e15, high=1e15, required=False)
    if lsl is not None and usl is not None and lsl >= usl:
        form.error("usl", N_("The upper specification limit must be above the lower one."))
    if not form.ok or subgroup is None or lam is None or width is None or k is None or h is None:
        return None
    return views.SpcSettings(chart, int(subgroup), rules, lam, width, k, h, lsl, usl)


def _spc_form(values: dict[str, str]) -> FormState:
    taken = {name: values.get(name, "")[:200].strip() for name in (*SPC_FIELDS, *SPC_NUMBERS)}
    for name, default in SPC_DEFAULTS.items():
        taken[name] = taken[name] or default
    if taken["source"] not in SOURCES:
        taken["source"] = "telemetry"
    return FormState(taken)


Series = tuple[list[int] | None, list[float]]  # times (ms) when known, and values


def spc_telemetry(request: Request, identity: ConsoleIdentity, form: FormState) -> Series:
    """The good stored points of the form's device and metric in its range."""
    device = parse_device(form.values["device"], form)
    metric = form.values["metric"]
    if not metric:
        form.error("metric", N_("Enter the metric's name."))
    elif len(metric) > METRIC_LENGTH or "\x00" in metric:
        form.error("metric", N_("A metric name has at most 128 characters."))
    since, until = parse_range(form.values["start"], form.values["end"], form)
    if not (form.ok and device and since and until):
        return None, []
    read = functools.partial(points_between, get_runtime(request), identity.principal.tenant_id)
    times, values = views.telemetry_values(
        read, device=device, metric=metric, start_ms=time_ms(since), end_ms=time_ms(until)
    )
    if not values:
        form.error("metric", N_("No stored points of this metric of this device in the range."))
    return times, values


def spc_file(upload: tuple[bytes, str] | None, form: FormState) -> Series:
    """One numeric column of an uploaded CSV or Parquet file, with its times when the file has a time column."""
    if upload is None:
        form.error("file", N_("Choose a CSV or Parquet file."))
    if not form.ok or upload is None:
        return None, []
    content, filename = upload
    column = form.values["column"]
    try:
        table = read_file(content, filename, purpose="training", variables=[column] if column else None)
    except Invalid as err:
        form.error("file", N_("The file cannot be read: %(reason)s"), reason=err.message)
        return None, []
    if len(table.variables) != 1:
        form.error(
            "column",
            N_("The file has several columns: name the one to chart (%(columns)s)."),
            columns=", ".join(table.variables[:20]),
        )
        return None, []
    if table.rows > views.MAX_SPC_POINTS:
        form.error("file", N_("At most %(count)s values at once."), count=views.MAX_SPC_POINTS)
        return None, []
    form.values["column"] = table.variables[0]
    times = [int(t) for t in table.times_ms] if table.times_ms is not None else None
    return times, table.data[:, 0].tolist()


def _spc_page(
    request: Request,
    identity: ConsoleIdentity,
    form: FormState,
    *,
    submitted: bool,
    upload: tuple[bytes, str] | None = None,
) -> HTMLResponse:
    context: dict[str, Any] = {
        "page_title": N_("SPC charts"),
        "chart_types": views.CHART_TYPES,
        "rule_sets": views.RULE_SETS,
        "rule_labels": views.RULE_LABELS,
        "panel_titles": views.PANEL_TITLES,
        "sources": SOURCES,
        "result": None,
        "chart": None,
        "problem": None,
        **shared(identity),
    }
    if not submitted:
        since, until = default_window()
        form.values["start"] = form.values["start"] or time_field(since)
        form.values["end"] = form.values["end"] or time_field(until)
        return render_form_page(request, "analytics/spc.html", context, form)
    settings = spc_settings(form)
    try:
        if form.values["source"] == "telemetry":
            times, values = spc_telemetry(request, identity, form)
        else:
            times, values = spc_file(upload, form)
    except Invalid as err:
        times, values, context["problem"] = None, [], not_done(err)
    status = 422
    if form.ok and settings is not None and values and context["problem"] is None:
        try:
            result = views.spc_analysis(values, settings, times)
        except Invalid as err:
            context["problem"] = message(N_("No chart: %(reason)s"), reason=err.message)
        else:
            status = 200
            context.update(result=result, chart=result.chart(translator(request)))
    return render_form_page(request, "analytics/spc.html", context, form, status_code=status)


@pages_router.get(SPC_PATH, response_class=HTMLResponse)
def spc_page(request: Request, identity: Reader) -> HTMLResponse:
    """SPC charts of a metric's stored telemetry (the form's values in the query)."""
    query = dict(request.query_params)
    form = _spc_form(query)
    form.values["source"] = "telemetry"
    return _spc_page(request, identity, form, submitted=bool(query.get("device") or query.get("metric")))


@pages_router.post(SPC_PATH, dependencies=CSRF, response_class=HTMLResponse)
def spc_upload(
    request: Request,
    identity: Reader,
    file: Annotated[UploadFile | None, File()] = None,
    source: FormText = "",
    device: FormText = "",
    metric: FormText = "",
    start: FormText = "",
    end: FormText = "",
    column: FormText = "",
    chart: FormText = "",
    subgroup: FormText = "",
    rules: FormText = "",
    lam: FormText = "",
    width: FormText = "",
    k: FormText = "",
    h: FormText = "",
    lsl: FormText = "",
    usl: FormText = "",
) -> HTMLResponse:
    """SPC charts of an uploaded column, or of stored telemetry: the form as submitted."""
    fields = {"source": source, "device": device, "metric": metric, "start": start, "end": end, "column": column}
    fields.update(chart=chart, subgroup=subgroup, rules=rules, lam=lam, width=width, k=k, h=h, lsl=lsl, usl=usl)
    form = _spc_form(fields)
    upload = None
    if form.values["source"] == "file" and file is not None and file.filename:
        content = file.file.read(MAX_UPLOAD_BYTES + 1)
        if len(content) > MAX_UPLOAD_BYTES:
            form.error("file", N_("The file is larger than %(size)s MB."), size=MAX_UPLOAD_BYTES // (1024 * 1024))
        elif not content.strip():
            form.error("file", N_("The file is empty."))
        else:
            upload = (content, file.filename[:200])
    return _spc_page(request, identity, form, submitted=True, upload=upload)
