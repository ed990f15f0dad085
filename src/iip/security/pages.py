"""Console pages of the security context: the overview (situational awareness), assets, alerts
(acknowledge and close in place), captures (upload), baselines, honeypot indicators, advisories
and their matches, bulletins (the operator publishing, each tenant's inbox with acknowledgement and
remediation) and incidents.

Thin like the API router: read the query or the form, call the use cases (`Services`: security,
bulletins, incidents) or `ingest`, render.
The service scopes every read to the principal's tenant, so another tenant's object is a 404 page.
A refused action shows the page again with the reason.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from iip.api.deps import DbSession, audit_object, get_runtime
from iip.console.forms import clean_filter, not_done, refusal_status
from iip.console.web import N_, ConsoleIdentity, console_permission, csrf_protect, redirect, render
from iip.kernel.auth import AccessService
from iip.kernel.errors import DomainError
from iip.kernel.module import Page
from iip.security import ingest
from iip.security.bulletins import BulletinService
from iip.security.incidents import IncidentService
from iip.security.records import Severity
from iip.security.router import publish_events, send_deliveries
from iip.security.service import AlertFilter, AssetFilter, SecurityService, severity_of

logger = logging.getLogger(__name__)

pages_router = APIRouter(include_in_schema=False)

BASE = "/security"
OVERVIEW, ASSETS, ALERTS, CAPTURES = BASE, BASE + "/assets", BASE + "/alerts", BASE + "/captures"
BASELINES, HONEYPOT, ADVISORIES = BASE + "/baselines", BASE + "/honeypot", BASE + "/advisories"
BULLETINS, INBOX, INCIDENTS = BASE + "/bulletins", BASE + "/inbox", BASE + "/incidents"
CONTACT, INTEL = BASE + "/contact", BASE + "/intel"

PAGES = (
    Page(OVERVIEW, N_("Security overview"), "security.read", "shield"),
    Page(ASSETS, N_("Assets"), "security.read", "box"),
    Page(ALERTS, N_("Security alerts"), "security.read", "alert"),
    Page(CAPTURES, N_("Captures"), "security.read", "activity"),
    Page(BASELINES, N_("Baselines"), "security.read", "heart"),
    Page(HONEYPOT, N_("Honeypot"), "security.read", "search"),
    Page(INTEL, N_("Threat intelligence"), "security.read", "dot"),
    Page(ADVISORIES, N_("Advisories"), "security.read", "stamp"),
    Page(INBOX, N_("Bulletins"), "security.read", "globe"),
    Page(INCIDENTS, N_("Incidents"), "security.read", "audit"),
)

Reader = Annotated[ConsoleIdentity, Depends(console_permission("security.read"))]
Writer = Annotated[ConsoleIdentity, Depends(console_permission("security.write"))]
CSRF = [Depends(csrf_protect)]
FormText = Annotated[str, Form()]
MAX_CSV_BYTES = 8 * 1024 * 1024

SEVERITY_LABELS = {
    "low": N_("Low"),
    "medium": N_("Medium"),
    "high": N_("High"),
    "critical": N_("Critical"),
}
STATUS_LABELS = {
    "open": N_("Open"),
    "acknowledged": N_("Acknowledged"),
    "closed": N_("Closed"),
    "contained": N_("Contained"),
    "resolved": N_("Resolved"),
}
REMEDIATION_LABELS = {
    "not_started": N_("Not started"),
    "in_progress": N_("In progress"),
    "done": N_("Done"),
    "not_applicable": N_("Not applicable"),
}
SOURCE_LABELS = {"observed": N_("Observed"), "declared": N_("Declared"), "imported": N_("Imported")}
MATCH_LABELS = {"affected": N_("Affected"), "possibly_affected": N_("Possibly affected")}
RESOLUTION_LABELS = {"": N_("Unresolved"), "patched": N_("Patched"), "accepted": N_("Accepted")}
BREAKDOWN_LABELS = {
    "alerts": N_("Open alerts"),
    "vulnerabilities": N_("Vulnerable assets"),
    "honeypot": N_("Honeypot activity"),
    "bulletins": N_("Overdue bulletins"),
}


@dataclass(frozen=True, slots=True)
class Services:
    """The use cases one console request may call, sharing its session and principal."""

    security: SecurityService
    bulletins: BulletinService
    incidents: IncidentService


def _services(request: Request, session: Session, identity: ConsoleIdentity) -> Services:
    settings = get_runtime(request).settings
    return Services(
        SecurityService(session, identity.principal, settings=settings),
        BulletinService(session, identity.principal, settings=settings),
        IncidentService(session, identity.principal, settings=settings),
    )


def _service(request: Request, session: Session, identity: ConsoleIdentity) -> SecurityService:
    return _services(request, session, identity).security


def when(value: dt.datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def shared(identity: ConsoleIdentity) -> dict[str, Any]:
    return {
        "when": when,
        "severity_labels": SEVERITY_LABELS,
        "status_labels": STATUS_LABELS,
        "remediation_labels": REMEDIATION_LABELS,
        "source_labels": SOURCE_LABELS,
        "match_labels": MATCH_LABELS,
        "resolution_labels": RESOLUTION_LABELS,
        "breakdown_labels": BREAKDOWN_LABELS,
        "severities": [s.value for s in Severity],
        "band": lambda cvss: severity_of(cvss).value,
        "can_write": identity.can("security.write"),
        "is_platform": identity.principal.is_platform,
    }


def page(
    request: Request, identity: ConsoleIdentity, name: str, title: str, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """The page `security/<name>.html` with its title, its own values and what every security page shows."""
    values = {"page_title": title, **context, **shared(identity)}
    return render(request, f"security/{name}.html", values, status_code=status_code)


def refused(request: Request, identity: ConsoleIdentity, err: DomainError, back: str) -> HTMLResponse:
    status = refusal_status(err)
    return page(request, identity, "refused", N_("Not done"), problem=not_done(err), back_url=back, status_code=status)


@dataclass(frozen=True, slots=True)
class Act:
    """The change one console form asks for: done, or refused with the reason."""

    request: Request
    session: Session
    identity: ConsoleIdentity

    def __call__(
        self,
        action: Callable[[Services], object],
        *,
        back: str,
        notice: str,
        background: BackgroundTasks | None = None,
    ) -> Response:
        """Do one change; back to `back` with a notice, or the reason it was refused."""
        services = _services(self.request, self.session, self.identity)
        try:
            action(services)
        except DomainError as err:
            self.session.rollback()
            return refused(self.request, self.identity, err, back)
        if background is not None:
            runtime = get_runtime(self.request)
            if services.security.events:
                background.add_task(publish_events, runtime, list(services.security.events))
            if services.bulletins.deliveries:
                background.add_task(send_deliveries, runtime, list(services.bulletins.deliveries))
        return redirect(back, notice=notice)


def _act(request: Request, identity: Writer, session: DbSession) -> Act:
    return Act(request, session, identity)


Acting = Annotated[Act, Depends(_act)]  # a writer's change


# --- overview ---------------------------------------------------------------------------------


@pages_router.get(OVERVIEW, response_class=HTMLResponse)
def overview_page(request: Request, identity: Reader, session: DbSession) -> HTMLResponse:
    service = _service(request, session, identity)
    awareness = service.awareness()
    tenants = service.awareness_by_tenant() if identity.principal.is_platform else []
    return page(request, identity, "overview", N_("Security overview"), a=awareness, tenants=tenants)


# --- assets -----------------------------------------------------------------------------------


@pages_router.get(ASSETS, response_class=HTMLResponse)
def assets_page(request: Request, identity: Reader, session: DbSession, q: str = "", site: str = "") -> HTMLResponse:
    text, site = clean_filter(q, 100), clean_filter(site, 100)
    where = AssetFilter(text=text or None, site=site or None)
    rows = _service(request, session, identity).list_assets(where=where)
    return page(request, identity, "assets", N_("Assets"), rows=rows, filters={"q": text, "site": site})


@pages_router.post(ASSETS + "/import", dependencies=CSRF)
async def import_assets_form(act: Acting, file: Annotated[UploadFile, File()], site: FormText = "") -> Response:
    content = await file.read(MAX_CSV_BYTES + 1)
    return act(
        lambda s: s.security.import_assets_csv(content[:MAX_CSV_BYTES], site=site.strip()[:100]),
        back=ASSETS,
        notice=N_("Assets imported."),
    )


# --- alerts -----------------------------------------------------------------------------------


@pages_router.get(ALERTS, response_class=HTMLResponse)
def alerts_page(
    request: Request, identity: Reader, session: DbSession, status: str = "", severity: str = ""
) -> HTMLResponse:
    status = status if status in ("open", "acknowledged", "closed") else ""
    severity = severity if severity in SEVERITY_LABELS else ""
    where = AlertFilter(status=status or None, severity=severity or None, limit=500)
    rows = _service(request, session, identity).list_alerts(where=where)
    filters = {"status": status, "severity": severity}
    return page(request, identity, "alerts", N_("Security alerts"), rows=rows, filters=filters)


@pages_router.post(ALERTS + "/{alert_id}/acknowledge", dependencies=CSRF)
def acknowledge_alert_form(request: Request, alert_id: str, act: Acting) -> Response:
    audit_object(request, "security_alert", alert_id[:32])
    return act(lambda s: s.security.acknowledge_alert(alert_id), back=ALERTS, notice=N_("Alert acknowledged."))


@pages_router.post(ALERTS + "/{alert_id}/close", dependencies=CSRF)
def close_alert_form(request: Request, alert_id: str, act: Acting) -> Response:
    audit_object(request, "security_alert", alert_id[:32])
    return act(lambda s: s.security.close_alert(alert_id), back=ALERTS, notice=N_("Alert closed."))


@pages_router.post(ALERTS + "/{alert_id}/incident", dependencies=CSRF)
def incident_from_alert_form(request: Request, alert_id: str, identity: Writer, session: DbSession) -> Response:
    service = _services(request, session, identity).incidents
    try:
        incident = service.open_incident("", alert_ids=[alert_id[:32]])
    except DomainError as err:
        session.rollback()
        return refused(request, identity, err, ALERTS)
    return redirect(f"{INCIDENTS}/{incident.id}", notice=N_("Incident opened."))


# --- captures and baselines -------------------------------------------------------------------


@pages_router.get(CAPTURES, response_class=HTMLResponse)
def captures_page(request: Request, identity: Reader, session: DbSession) -> HTMLResponse:
    rows = _service(request, session, identity).list_captures()
    return page(request, identity, "captures", N_("Captures"), rows=rows)


async def _upload_form(
    act: Act, file: UploadFile, site: str, background: BackgroundTasks, *, learn: bool, check: bool, back: str
) -> Response:
    content = await file.read(ingest.MAX_CAPTURE_BYTES + 1)
    name = (file.filename or "capture.pcap")[:200]
    notice = N_("Baseline learned.") if learn else N_("Capture uploaded.")
    return act(
        lambda s: ingest.upload(s.security, content, name, site=site.strip()[:100], learn=learn, check=check),
        back=back,
        notice=notice,
        background=background,
    )


@pages_router.post(CAPTURES, dependencies=CSRF)
async def upload_capture_form(
    act: Acting,
    background: BackgroundTasks,
    file: Annotated[UploadFile, File()],
    site: FormText = "",
    check: FormText = "",
) -> Response:
    return await _upload_form(act, file, site, background, learn=False, check=bool(check), back=CAPTURES)


@pages_router.get(BASELINES, response_class=HTMLResponse)
def baselines_page(request: Request, identity: Reader, session: DbSession) -> HTMLResponse:
    rows = _service(request, session, identity).list_baselines()
    return page(request, identity, "baselines", N_("Baselines"), rows=rows)


@pages_router.post(BASELINES, dependencies=CSRF)
async def learn_baseline_form(
    act: Acting, background: BackgroundTasks, file: Annotated[UploadFile, File()], site: FormText = ""
) -> Response:
    return await _upload_form(act, file, site, background, learn=True, check=False, back=BASELINES)


@pages_router.post(BASELINES + "/{baseline_id}/activate", dependencies=CSRF)
def activate_baseline_form(baseline_id: str, act: Acting) -> Response:
    return act(lambda s: s.security.activate_baseline(baseline_id), back=BASELINES, notice=N_("Baseline activated."))


# --- honeypot ---------------------------------------------------------------------------------


@pages_router.get(HONEYPOT, response_class=HTMLResponse)
def honeypot_page(request: Request, identity: Reader, session: DbSession) -> HTMLResponse:
    service = _service(request, session, identity)
    day = service.clock() - dt.timedelta(hours=24)
    return page(request, identity, "honeypot", N_("Honeypot"), rows=service.list_indicators(), day=day)


@pages_router.get(INTEL, response_class=HTMLResponse)
def intel_page(request: Request, identity: Reader, session: DbSession) -> HTMLResponse:
    service = _service(request, session, identity)
    rows = service.shared_indicators()
    day = service.clock() - dt.timedelta(hours=24)
    sharing = service.shares_intelligence()
    return page(request, identity, "intel", N_("Threat intelligence"), rows=rows, day=day, sharing=sharing)


# --- advisories and matches -------------------------------------------------------------------


@pages_router.get(ADVISORIES, response_class=HTMLResponse)
def advisories_page(request: Request, identity: Reader, session: DbSession, q: str = "") -> HTMLResponse:
    service = _service(request, session, identity)
    text = clean_filter(q, 100)
    return page(
        request,
        identity,
        "advisories",
        N_("Advisories"),
        advisories=service.list_advisories(text=text or None),
        matches=service.list_matches(),
        filters={"q": text},
    )


@pages_router.post(ADVISORIES + "/matches/{match_id}/resolve", dependencies=CSRF)
def resolve_match_form(match_id: str, act: Acting, resolution: FormText = "") -> Response:
    return act(
        lambda s: s.security.resolve_match(match_id, resolution.strip()), back=ADVISORIES, notice=N_("Match updated.")
    )


# --- bulletins --------------------------------------------------------------------------------


@pages_router.get(INBOX, response_class=HTMLResponse)
def inbox_page(request: Request, identity: Reader, session: DbSession) -> HTMLResponse:
    service = _services(request, session, identity).bulletins
    platform = identity.principal.is_platform
    published = service.list_bulletins() if platform else []
    tenants = AccessService(session).list_tenants(identity.principal) if platform else []
    overdue = {
        b.id: sum(service.overdue(r, b) for r in recipients) for b, recipients in published
    }  # per bulletin, for the operator
    items = service.inbox() if identity.principal.tenant_id else []
    return page(
        request, identity, "inbox", N_("Bulletins"), items=items, published=published, overdue=overdue, tenants=tenants
    )


@pages_router.get(INBOX + "/{bulletin_id}", response_class=HTMLResponse)
def bulletin_page(request: Request, bulletin_id: str, identity: Reader, session: DbSession) -> HTMLResponse:
    view = _services(request, session, identity).bulletins.inbox_item(bulletin_id)
    return page(request, identity, "bulletin", N_("Bulletin"), v=view, b=view.bulletin, r=view.recipient)


@pages_router.post(INBOX + "/{bulletin_id}/acknowledge", dependencies=CSRF)
def acknowledge_bulletin_form(bulletin_id: str, act: Acting) -> Response:
    back = f"{INBOX}/{bulletin_id[:32]}"
    return act(lambda s: s.bulletins.acknowledge_bulletin(bulletin_id), back=back, notice=N_("Bulletin acknowledged."))


@pages_router.post(INBOX + "/{bulletin_id}/remediation", dependencies=CSRF)
def remediation_form(bulletin_id: str, act: Acting, status: FormText = "", note: FormText = "") -> Response:
    return act(
        lambda s: s.bulletins.set_remediation(bulletin_id, status, note[:1000]),
        back=f"{INBOX}/{bulletin_id[:32]}",
        notice=N_("Remediation status saved."),
    )


@pages_router.get(BULLETINS + "/{bulletin_id}", response_class=HTMLResponse)
def published_bulletin_page(request: Request, bulletin_id: str, identity: Reader, session: DbSession) -> HTMLResponse:
    bulletin, recipients = _services(request, session, identity).bulletins.get_bulletin(bulletin_id)
    return page(request, identity, "published", N_("Bulletin"), b=bulletin, recipients=recipients)


@pages_router.post(BULLETINS, dependencies=CSRF)
def publish_bulletin_form(
    act: Acting,
    background: BackgroundTasks,
    title: FormText = "",
    severity: FormText = "",
    kind: FormText = "warning",
    body_zh: FormText = "",
    body_en: FormText = "",
    advisory: FormText = "",
    cves: FormText = "",
    deadline: FormText = "",
    targeting: FormText = "matched",
    tenant_ids: Annotated[list[str] | None, Form()] = None,
) -> Response:
    due = _deadline(deadline)
    # "matched": the tenants with assets matched to the advisory or CVEs; "chosen": those ticked.
    chosen = [t.strip()[:32] for t in tenant_ids or [] if t.strip()][:1000] if targeting == "chosen" else None
    return act(
        lambda s: s.bulletins.publish_bulletin(
            kind=kind,
            title=title[:300],
            severity=severity,
            body_zh=body_zh[:20_000],
            body_en=body_en[:20_000],
            advisory_ref=advisory.strip()[:200] or None,
            cves=[c for c in cves.replace(",", " ").split() if c][:200],
            deadline=due,
            tenant_ids=chosen,
        ),
        back=INBOX,
        notice=N_("Bulletin published."),
        background=background,
    )


@pages_router.get(CONTACT, response_class=HTMLResponse)
def contact_page(request: Request, identity: Reader, session: DbSession) -> HTMLResponse:
    """Where the tenant receives bulletins besides its inbox: a signed webhook and e-mail addresses."""
    contact = _services(request, session, identity).bulletins.get_contact()
    return page(request, identity, "contact", N_("Bulletin delivery"), contact=contact)


@pages_router.post(CONTACT, dependencies=CSRF)
def contact_form(
    act: Acting,
    webhook_url: FormText = "",
    webhook_secret: FormText = "",
    emails: FormText = "",
    remove_secret: FormText = "",
) -> Response:
    addresses = [e for e in emails.replace(",", " ").replace(";", " ").split() if e][:20]
    # An empty secret keeps the one stored (it is never shown again); "remove" forgets it.
    secret = "" if remove_secret else webhook_secret[:200] or None
    return act(
        lambda s: s.bulletins.set_contact(
            webhook_url=webhook_url.strip()[:1000], webhook_secret=secret, emails=addresses
        ),
        back=CONTACT,
        notice=N_("Bulletin delivery saved."),
    )


def _deadline(text: str) -> dt.datetime | None:
    """A `datetime-local` field (taken as UTC) or ISO 8601; empty or unreadable: no deadline."""
    try:
        at = dt.datetime.fromisoformat(text.strip()[:40])
    except ValueError:
        return None
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at


# --- incidents --------------------------------------------------------------------------------


@pages_router.get(INCIDENTS, response_class=HTMLResponse)
def incidents_page(request: Request, identity: Reader, session: DbSession) -> HTMLResponse:
    rows = _services(request, session, identity).incidents.list_incidents()
    return page(request, identity, "incidents", N_("Incidents"), rows=rows)


@pages_router.get(INCIDENTS + "/{incident_id}", response_class=HTMLResponse)
def incident_page(request: Request, incident_id: str, identity: Reader, session: DbSession) -> HTMLResponse:
    service = _services(request, session, identity).incidents
    row = service.get_incident(incident_id)
    return page(request, identity, "incident", N_("Incident"), i=row, timeline=service.timeline(row))


@pages_router.post(INCIDENTS + "/{incident_id}/entries", dependencies=CSRF)
def incident_entry_form(incident_id: str, act: Acting, kind: FormText = "note", text: FormText = "") -> Response:
    return act(
        lambda s: s.incidents.add_incident_entry(incident_id, kind, text[:2000]),
        back=f"{INCIDENTS}/{incident_id[:32]}",
        notice=N_("Entry added."),
    )


@pages_router.post(INCIDENTS + "/{incident_id}/state", dependencies=CSRF)
def incident_state_form(incident_id: str, act: Acting, state: FormText = "", note: FormText = "") -> Response:
    return act(
        lambda s: s.incidents.set_incident_state(incident_id, state, note[:1000]),
        back=f"{INCIDENTS}/{incident_id[:32]}",
        notice=N_("Incident updated."),
    )
