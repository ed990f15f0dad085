"""The security API under `/api/security`: assets, alerts, captures and baselines, advisories and
matches, honeypot indicators, incidents, bulletins (the operator's and each tenant's inbox) and
situational awareness.

Thin: parse, call `SecurityService`, `BulletinService` or `IncidentService` (or `ingest` for
uploads), shape. Files come as multipart
uploads. New alerts are published as alarm events, and bulletins are sent by webhook and e-mail,
once the request's transaction has committed (background tasks run after the response).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, HTTPException, Path, Query, Request, UploadFile
from fastapi import status as http
from sqlalchemy.orm import Session

from iip.alarms.public import AlarmEvent
from iip.api.deps import DbSession, audit_object, get_runtime, require
from iip.api.documents import NO_NUL, Filter, TenantParam
from iip.api.problems import problem_responses
from iip.kernel.auth import Principal
from iip.kernel.runtime import Runtime
from iip.security import delivery, ingest
from iip.security.bulletins import BulletinService, RecipientView
from iip.security.incidents import IncidentService
from iip.security.publishing import publish_alert_events
from iip.security.schemas import (
    AdvisoryOut,
    AlertOut,
    AssetBody,
    AssetCreate,
    AssetOut,
    AwarenessOut,
    BaselineDetail,
    BaselineOut,
    BulletinCreate,
    BulletinDetail,
    BulletinOut,
    CaptureOut,
    CheckOut,
    ContactBody,
    ContactOut,
    DeliveryOut,
    EntryBody,
    EntryOut,
    ImportOut,
    InboxItem,
    IncidentCreate,
    IncidentDetail,
    IncidentOut,
    IndicatorOut,
    MatchOut,
    NoteBody,
    RecipientOut,
    RemediationBody,
    ResolveBody,
    SharedIndicatorOut,
    StateBody,
    TenantAwarenessOut,
)
from iip.security.service import (
    AlertFilter,
    AssetFields,
    AssetFilter,
    Awareness,
    MatchView,
    SecurityService,
    SharedIndicator,
    severity_of,
)

logger = logging.getLogger(__name__)

router = APIRouter(tags=["security"], responses=problem_responses(401, 403, 422))

Reader = Annotated[Principal, Depends(require("security.read"))]
Writer = Annotated[Principal, Depends(require("security.write"))]
Ref = Annotated[str, Path(max_length=200, pattern=NO_NUL)]
SiteParam = Annotated[str, Query(max_length=100, pattern=NO_NUL)]
API = "/api/security"
FOUND = problem_responses(404)
MAX_CSV_BYTES = 8 * 1024 * 1024
MAX_ADVISORY_BYTES = 16 * 1024 * 1024


def _service(request: Request, session: Session, actor: Principal) -> SecurityService:
    return SecurityService(session, actor, settings=get_runtime(request).settings)


def _bulletins(request: Request, session: Session, actor: Principal) -> BulletinService:
    return BulletinService(session, actor, settings=get_runtime(request).settings)


def _incidents(request: Request, session: Session, actor: Principal) -> IncidentService:
    return IncidentService(session, actor, settings=get_runtime(request).settings)


async def _read(file: UploadFile, limit: int) -> bytes:
    content = await file.read(limit + 1)
    if len(content) > limit:
        raise HTTPException(413, f"the file is larger than {limit // (1024 * 1024)} MiB")
    return content


def after_commit(
    request: Request,
    background: BackgroundTasks,
    *,
    events: Sequence[AlarmEvent] = (),
    deliveries: Sequence[str] = (),
) -> None:
    """Publish the new alerts' events and send the bulletins' deliveries once the transaction committed."""
    runtime = get_runtime(request)
    if events:
        background.add_task(publish_events, runtime, list(events))
    if deliveries:
        background.add_task(send_deliveries, runtime, list(deliveries))


async def publish_events(runtime: Runtime, events: Sequence[AlarmEvent]) -> None:
    await publish_alert_events(runtime.bus, events)


async def send_deliveries(runtime: Runtime, delivery_ids: Sequence[str]) -> None:
    try:
        await delivery.deliver(runtime, delivery_ids)
    except Exception:  # committed already: the deliveries stay pending; the retrier sends them later
        logger.exception("bulletin deliveries not sent")


# --- views


def match_view(view: MatchView) -> MatchOut:
    m = view.match
    return MatchOut(
        id=m.id,
        tenant_id=m.tenant_id,
        asset_id=m.asset_id,
        asset_address=view.asset.address,
        asset_name=view.asset.name,
        advisory_id=m.advisory_id,
        tracking_id=view.advisory.tracking_id,
        title=view.advisory.title,
        cves=m.cves,
        max_cvss=m.max_cvss,
        band=severity_of(m.max_cvss).value,
        remediation=m.remediation,
        status=m.status,
        reason=m.reason,
        resolution=m.resolution,
        resolved_by=m.resolved_by,
        resolved_at=m.resolved_at,
    )


def recipient_view(view: RecipientView) -> RecipientOut:
    r = view.recipient
    return RecipientOut(
        tenant_id=r.tenant_id,
        matched_assets=r.matched_assets,
        opened_by=r.opened_by,
        opened_at=r.opened_at,
        acknowledged_by=r.acknowledged_by,
        acknowledged_at=r.acknowledged_at,
        remediation=r.remediation,
        remediation_note=r.remediation_note,
        remediation_by=r.remediation_by,
        remediation_at=r.remediation_at,
        overdue=view.overdue,
        deliveries=[DeliveryOut.model_validate(d) for d in view.deliveries],
    )


def inbox_view(view: RecipientView) -> InboxItem:
    return InboxItem(**BulletinOut.model_validate(view.bulletin).model_dump(), receipt=recipient_view(view))


def awareness_view(view: Awareness) -> AwarenessOut:
    return AwarenessOut(
        tenant_id=view.tenant_id,
        open_alerts=view.open_alerts,
        vulnerable_assets=view.vulnerable_assets,
        honeypot_24h=view.honeypot_24h,
        honeypot_7d=view.honeypot_7d,
        sightings_24h=view.sightings_24h,
        bulletins_open=view.bulletins_open,
        bulletins_overdue=view.bulletins_overdue,
        risk=view.risk,
        breakdown=view.breakdown,
    )


def fields_of(body: AssetBody) -> AssetFields:
    return AssetFields(**body.model_dump(exclude={"address", "site"}))


# --- assets


@router.get(API + "/assets", response_model=list[AssetOut])
def list_assets(
    request: Request,
    actor: Reader,
    session: DbSession,
    q: Filter = None,
    site: Filter = None,
    source: Filter = None,
    role: Filter = None,
    protocol: Filter = None,
    criticality: Filter = None,
    tenant_id: TenantParam = None,
) -> list[AssetOut]:
    """The inventory: observed, declared and imported assets (`q`: part of address, name, vendor, model, owner)."""
    where = AssetFilter(site=site, text=q, source=source, role=role, protocol=protocol, criticality=criticality)
    rows = _service(request, session, actor).list_assets(tenant_id=tenant_id, where=where)
    return [AssetOut.model_validate(r) for r in rows]


@router.post(API + "/assets", response_model=AssetOut, status_code=http.HTTP_201_CREATED)
def create_asset(
    body: AssetCreate, request: Request, actor: Writer, session: DbSession, tenant_id: TenantParam = None
) -> AssetOut:
    """Declare an asset (one already observed at that address gets what you declare)."""
    row = _service(request, session, actor).create_asset(
        body.address, fields_of(body), site=body.site, tenant_id=tenant_id
    )
    audit_object(request, "security_asset", row.id)
    return AssetOut.model_validate(row)


@router.post(API + "/assets/import", response_model=ImportOut, status_code=http.HTTP_201_CREATED)
async def import_assets(
    request: Request,
    actor: Writer,
    session: DbSession,
    file: Annotated[
        UploadFile, File(description="CSV: address, name, vendor, model, firmware, role, criticality, owner")
    ],
    site: Annotated[str, Form(max_length=100, pattern=NO_NUL)] = "",
    tenant_id: TenantParam = None,
) -> ImportOut:
    """Declared assets from a CSV file: every row or none; an error names the row."""
    content = await _read(file, MAX_CSV_BYTES)
    rows = _service(request, session, actor).import_assets_csv(content, site=site, tenant_id=tenant_id)
    return ImportOut(imported=len(rows), assets=[AssetOut.model_validate(r) for r in rows])


@router.get(API + "/assets/{asset_id}", response_model=AssetOut, responses=FOUND)
def get_asset(asset_id: Ref, request: Request, actor: Reader, session: DbSession) -> AssetOut:
    return AssetOut.model_validate(_service(request, session, actor).get_asset(asset_id))


@router.patch(API + "/assets/{asset_id}", response_model=AssetOut, responses=FOUND)
def update_asset(asset_id: Ref, body: AssetBody, request: Request, actor: Writer, session: DbSession) -> AssetOut:
    """Change what is declared of an asset; fields left out stay as they are."""
    audit_object(request, "security_asset", asset_id)
    return AssetOut.model_validate(_service(request, session, actor).update_asset(asset_id, fields_of(body)))


# --- alerts


@router.get(API + "/alerts", response_model=list[AlertOut])
def list_alerts(
    request: Request,
    actor: Reader,
    session: DbSession,
    status: Annotated[str | None, Query(pattern=r"^(open|acknowledged|closed)$")] = None,
    severity: Annotated[str | None, Query(pattern=r"^(low|medium|high|critical)$")] = None,
    kind: Filter = None,
    address: Filter = None,
    site: Filter = None,
    capture_id: Filter = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    tenant_id: TenantParam = None,
) -> list[AlertOut]:
    """Alerts, newest first."""
    where = AlertFilter(
        status=status, severity=severity, kind=kind, address=address, site=site, capture_id=capture_id, limit=limit
    )
    rows = _service(request, session, actor).list_alerts(tenant_id=tenant_id, where=where)
    return [AlertOut.model_validate(r) for r in rows]


@router.get(API + "/alerts/{alert_id}", response_model=AlertOut, responses=FOUND)
def get_alert(alert_id: Ref, request: Request, actor: Reader, session: DbSession) -> AlertOut:
    """An alert with its evidence (frames, raw bytes as hex)."""
    return AlertOut.model_validate(_service(request, session, actor).get_alert(alert_id))


@router.post(API + "/alerts/{alert_id}/acknowledge", response_model=AlertOut, responses=FOUND)
def acknowledge_alert(
    alert_id: Ref, request: Request, actor: Writer, session: DbSession, body: NoteBody | None = None
) -> AlertOut:
    audit_object(request, "security_alert", alert_id)
    row = _service(request, session, actor).acknowledge_alert(alert_id, body.note if body else "")
    return AlertOut.model_validate(row)


@router.post(API + "/alerts/{alert_id}/close", response_model=AlertOut, responses=FOUND)
def close_alert(
    alert_id: Ref, request: Request, actor: Writer, session: DbSession, body: NoteBody | None = None
) -> AlertOut:
    audit_object(request, "security_alert", alert_id)
    return AlertOut.model_validate(_service(request, session, actor).close_alert(alert_id, body.note if body else ""))


# --- captures and baselines


@router.post(API + "/captures", response_model=CheckOut, status_code=http.HTTP_201_CREATED)
async def upload_capture(
    request: Request,
    actor: Writer,
    session: DbSession,
    background: BackgroundTasks,
    file: Annotated[UploadFile, File(description="a pcap or pcapng file")],
    site: Annotated[str, Form(max_length=100, pattern=NO_NUL)] = "",
    check: Annotated[bool, Form(description="check it against the site's active baseline")] = False,
    tenant_id: TenantParam = None,
) -> CheckOut:
    """Decode a capture, store its summary, update the inventory; with `check`, store the alerts it raises."""
    content = await _read(file, ingest.MAX_CAPTURE_BYTES)
    service = _service(request, session, actor)
    result = ingest.upload(
        service, content, file.filename or "capture.pcap", site=site, tenant_id=tenant_id, check=check
    )
    after_commit(request, background, events=service.events)
    audit_object(request, "security_capture", result.capture.id)
    return CheckOut(
        capture=CaptureOut.model_validate(result.capture),
        baseline=None,
        alerts=[AlertOut.model_validate(a) for a in result.alerts],
    )


@router.get(API + "/captures", response_model=list[CaptureOut])
def list_captures(
    request: Request, actor: Reader, session: DbSession, tenant_id: TenantParam = None
) -> list[CaptureOut]:
    return [CaptureOut.model_validate(r) for r in _service(request, session, actor).list_captures(tenant_id=tenant_id)]


@router.get(API + "/captures/{capture_id}", response_model=CaptureOut, responses=FOUND)
def get_capture(capture_id: Ref, request: Request, actor: Reader, session: DbSession) -> CaptureOut:
    return CaptureOut.model_validate(_service(request, session, actor).get_capture(capture_id))


@router.post(API + "/baselines", response_model=BaselineOut, status_code=http.HTTP_201_CREATED)
async def learn_baseline(
    request: Request,
    actor: Writer,
    session: DbSession,
    file: Annotated[UploadFile, File(description="a pcap or pcapng file of normal traffic")],
    site: Annotated[str, Form(max_length=100, pattern=NO_NUL)] = "",
    rate_window_s: Annotated[float, Form(gt=0, le=3600)] = 10.0,
    tenant_id: TenantParam = None,
) -> BaselineOut:
    """Learn a new baseline version for the site from a capture; it becomes the active one."""
    content = await _read(file, ingest.MAX_CAPTURE_BYTES)
    service = _service(request, session, actor)
    result = ingest.upload(
        service, content, file.filename or "capture.pcap", site=site, tenant_id=tenant_id, learn=True,
        rate_window_s=rate_window_s,
    )  # fmt: skip
    assert result.baseline is not None  # noqa: S101 - learn=True always answers one
    audit_object(request, "security_baseline", result.baseline.id)
    return BaselineOut.model_validate(result.baseline)


@router.get(API + "/baselines", response_model=list[BaselineOut])
def list_baselines(
    request: Request, actor: Reader, session: DbSession, site: Filter = None, tenant_id: TenantParam = None
) -> list[BaselineOut]:
    rows = _service(request, session, actor).list_baselines(tenant_id=tenant_id, site=site)
    return [BaselineOut.model_validate(r) for r in rows]


@router.get(API + "/baselines/{baseline_id}", response_model=BaselineDetail, responses=FOUND)
def get_baseline(baseline_id: Ref, request: Request, actor: Reader, session: DbSession) -> BaselineDetail:
    """A baseline with its learned content (flows, ICS pairs, functions, ranges, rates)."""
    return BaselineDetail.model_validate(_service(request, session, actor).get_baseline(baseline_id))


@router.post(API + "/baselines/{baseline_id}/activate", response_model=BaselineOut, responses=FOUND)
def activate_baseline(baseline_id: Ref, request: Request, actor: Writer, session: DbSession) -> BaselineOut:
    """Make this version the site's active baseline (a rollback)."""
    audit_object(request, "security_baseline", baseline_id)
    return BaselineOut.model_validate(_service(request, session, actor).activate_baseline(baseline_id))


# --- advisories and matches


@router.post(API + "/advisories", response_model=list[AdvisoryOut], status_code=http.HTTP_201_CREATED)
async def import_advisories(
    request: Request,
    actor: Writer,
    session: DbSession,
    files: Annotated[list[UploadFile], File(description="CSAF 2.0 JSON documents")],
) -> list[AdvisoryOut]:
    """Import CSAF advisories (platform operators); one that exists already (same tracking id) is refreshed."""
    documents = [(f.filename or "advisory.json", await _read(f, MAX_ADVISORY_BYTES)) for f in files]
    rows = ingest.import_advisories(_service(request, session, actor), documents)
    return [AdvisoryOut.model_validate(r) for r in rows]


@router.get(API + "/advisories", response_model=list[AdvisoryOut])
def list_advisories(
    request: Request,
    actor: Reader,
    session: DbSession,
    q: Filter = None,
    cve: Annotated[str | None, Query(max_length=20, pattern=r"^CVE-\d{4}-\d{4,7}$")] = None,
) -> list[AdvisoryOut]:
    rows = _service(request, session, actor).list_advisories(text=q, cve=cve)
    return [AdvisoryOut.model_validate(r) for r in rows]


@router.get(API + "/advisories/{advisory}", response_model=AdvisoryOut, responses=FOUND)
def get_advisory(advisory: Ref, request: Request, actor: Reader, session: DbSession) -> AdvisoryOut:
    """By id or tracking id."""
    return AdvisoryOut.model_validate(_service(request, session, actor).get_advisory(advisory))


@router.post(API + "/matches/run", response_model=list[MatchOut])
def match_advisories(
    request: Request, actor: Writer, session: DbSession, tenant_id: TenantParam = None
) -> list[MatchOut]:
    """Match the tenant's assets against every stored advisory now."""
    service = _service(request, session, actor)
    ingest.match_tenant(service, tenant_id=tenant_id)
    return [match_view(v) for v in service.list_matches(tenant_id=service.tenant_for(tenant_id))]


@router.get(API + "/matches", response_model=list[MatchOut])
def list_matches(
    request: Request,
    actor: Reader,
    session: DbSession,
    advisory_id: Filter = None,
    asset_id: Filter = None,
    unresolved: bool | None = None,
    tenant_id: TenantParam = None,
) -> list[MatchOut]:
    """Assets affected (or possibly affected) by advisories, worst CVSS first."""
    rows = _service(request, session, actor).list_matches(
        tenant_id=tenant_id, advisory_id=advisory_id, asset_id=asset_id, unresolved=unresolved
    )
    return [match_view(v) for v in rows]


@router.post(API + "/matches/{match_id}/resolve", response_model=MatchOut, responses=FOUND)
def resolve_match(match_id: Ref, body: ResolveBody, request: Request, actor: Writer, session: DbSession) -> MatchOut:
    """Mark a match patched or accepted (or reopen it with an empty resolution)."""
    service = _service(request, session, actor)
    row = service.resolve_match(match_id, body.resolution)
    audit_object(request, "security_advisory_match", row.id)
    return match_view(next(v for v in service.list_matches(tenant_id=row.tenant_id) if v.match.id == row.id))


# --- honeypot


@router.get(API + "/indicators", response_model=list[IndicatorOut])
def list_indicators(
    request: Request,
    actor: Reader,
    session: DbSession,
    days: Annotated[float | None, Query(gt=0, le=3650, description="seen within the last days")] = None,
    tenant_id: TenantParam = None,
) -> list[IndicatorOut]:
    """Addresses that touched the decoy, most recent first."""
    service = _service(request, session, actor)
    since = service.clock() - dt.timedelta(days=days) if days else None
    return [IndicatorOut.model_validate(r) for r in service.list_indicators(tenant_id=tenant_id, since=since)]


@router.get(API + "/intel", response_model=list[SharedIndicatorOut])
def list_shared_indicators(
    request: Request,
    actor: Reader,
    session: DbSession,
    days: Annotated[float | None, Query(gt=0, le=3650, description="seen within the last days")] = None,
    address: Annotated[str, Query(max_length=64, pattern=NO_NUL, description="one address")] = "",
) -> list[SharedIndicatorOut]:
    """The platform's threat intelligence: addresses any decoy saw, most recent first. Whose decoy saw
    them (`sources`) is shown to platform operators only."""
    service = _service(request, session, actor)
    since = service.clock() - dt.timedelta(days=days) if days else None
    return [
        shared_view(entry, with_sources=actor.is_platform)
        for entry in service.shared_indicators(since=since, address=address)
    ]


def shared_view(entry: SharedIndicator, *, with_sources: bool) -> SharedIndicatorOut:
    view = SharedIndicatorOut.model_validate(entry)
    if not with_sources:
        view.sources = None
    return view


# --- incidents


def incident_detail(service: IncidentService, incident_id: str) -> IncidentDetail:
    row = service.get_incident(incident_id)
    timeline = [EntryOut.model_validate(e) for e in service.timeline(row)]
    return IncidentDetail(**IncidentOut.model_validate(row).model_dump(), timeline=timeline)


@router.post(API + "/incidents", response_model=IncidentDetail, status_code=http.HTTP_201_CREATED)
def open_incident(
    body: IncidentCreate, request: Request, actor: Writer, session: DbSession, tenant_id: TenantParam = None
) -> IncidentDetail:
    """Open an incident from alerts (their assets linked) or from a bulletin your tenant received."""
    service = _incidents(request, session, actor)
    row = service.open_incident(
        body.title, alert_ids=body.alert_ids, bulletin_id=body.bulletin_id, severity=body.severity, tenant_id=tenant_id
    )
    audit_object(request, "security_incident", row.id)
    return incident_detail(service, row.id)


@router.get(API + "/incidents", response_model=list[IncidentOut])
def list_incidents(
    request: Request,
    actor: Reader,
    session: DbSession,
    state: Annotated[str | None, Query(pattern=r"^(open|contained|resolved)$")] = None,
    tenant_id: TenantParam = None,
) -> list[IncidentOut]:
    rows = _incidents(request, session, actor).list_incidents(tenant_id=tenant_id, state=state)
    return [IncidentOut.model_validate(r) for r in rows]


@router.get(API + "/incidents/{incident_id}", response_model=IncidentDetail, responses=FOUND)
def get_incident(incident_id: Ref, request: Request, actor: Reader, session: DbSession) -> IncidentDetail:
    return incident_detail(_incidents(request, session, actor), incident_id)


@router.post(API + "/incidents/{incident_id}/entries", response_model=IncidentDetail, responses=FOUND)
def add_incident_entry(
    incident_id: Ref, body: EntryBody, request: Request, actor: Writer, session: DbSession
) -> IncidentDetail:
    """A note or an action taken, on the incident's timeline."""
    service = _incidents(request, session, actor)
    service.add_incident_entry(incident_id, body.kind, body.text)
    audit_object(request, "security_incident", incident_id)
    return incident_detail(service, incident_id)


@router.post(API + "/incidents/{incident_id}/state", response_model=IncidentDetail, responses=FOUND)
def set_incident_state(
    incident_id: Ref, body: StateBody, request: Request, actor: Writer, session: DbSession
) -> IncidentDetail:
    service = _incidents(request, session, actor)
    service.set_incident_state(incident_id, body.state, body.note)
    audit_object(request, "security_incident", incident_id)
    return incident_detail(service, incident_id)


# --- bulletins: the operator


def bulletin_detail(service: BulletinService, bulletin_id: str) -> BulletinDetail:
    bulletin, views = service.get_bulletin(bulletin_id)
    return BulletinDetail(
        **BulletinOut.model_validate(bulletin).model_dump(), recipients=[recipient_view(v) for v in views]
    )


@router.post(API + "/bulletins", response_model=BulletinDetail, status_code=http.HTTP_201_CREATED)
def publish_bulletin(
    body: BulletinCreate, request: Request, actor: Writer, session: DbSession, background: BackgroundTasks
) -> BulletinDetail:
    """Publish an early-warning bulletin (platform operators) to the affected tenants or the ones named."""
    service = _bulletins(request, session, actor)
    row = service.publish_bulletin(
        kind=body.kind,
        title=body.title,
        severity=body.severity,
        body_zh=body.body_zh,
        body_en=body.body_en,
        advisory_ref=body.advisory,
        cves=body.cves,
        deadline=body.deadline,
        tenant_ids=body.tenant_ids,
    )
    after_commit(request, background, deliveries=service.deliveries)
    audit_object(request, "security_bulletin", row.id)
    return bulletin_detail(service, row.id)


@router.get(API + "/bulletins", response_model=list[BulletinDetail])
def list_bulletins(request: Request, actor: Reader, session: DbSession) -> list[BulletinDetail]:
    """Every bulletin with, per tenant, receipt, acknowledgement and remediation (platform operators)."""
    service = _bulletins(request, session, actor)
    return [bulletin_detail(service, b.id) for b, _ in service.list_bulletins()]


@router.get(API + "/bulletins/{bulletin_id}", response_model=BulletinDetail, responses=FOUND)
def get_bulletin(bulletin_id: Ref, request: Request, actor: Reader, session: DbSession) -> BulletinDetail:
    return bulletin_detail(_bulletins(request, session, actor), bulletin_id)


@router.post(API + "/bulletins/{bulletin_id}/redeliver", response_model=BulletinDetail, responses=FOUND)
def redeliver_bulletin(
    bulletin_id: Ref, request: Request, actor: Writer, session: DbSession, background: BackgroundTasks
) -> BulletinDetail:
    """Send the failed webhook and e-mail deliveries again."""
    service = _bulletins(request, session, actor)
    service.redeliver(bulletin_id)
    after_commit(request, background, deliveries=service.deliveries)
    return bulletin_detail(service, bulletin_id)


# --- bulletins: the tenant's inbox


@router.get(API + "/inbox", response_model=list[InboxItem])
def list_inbox(request: Request, actor: Reader, session: DbSession, tenant_id: TenantParam = None) -> list[InboxItem]:
    """Bulletins your tenant received, newest first, with where you are on each."""
    return [inbox_view(v) for v in _bulletins(request, session, actor).inbox(tenant_id=tenant_id)]


@router.get(API + "/inbox/{bulletin_id}", response_model=InboxItem, responses=FOUND)
def read_inbox_item(
    bulletin_id: Ref, request: Request, actor: Reader, session: DbSession, tenant_id: TenantParam = None
) -> InboxItem:
    """A bulletin your tenant received; the first reading records the receipt."""
    return inbox_view(_bulletins(request, session, actor).inbox_item(bulletin_id, tenant_id=tenant_id))


@router.post(API + "/inbox/{bulletin_id}/acknowledge", response_model=InboxItem, responses=FOUND)
def acknowledge_bulletin(
    bulletin_id: Ref, request: Request, actor: Writer, session: DbSession, tenant_id: TenantParam = None
) -> InboxItem:
    audit_object(request, "security_bulletin", bulletin_id)
    return inbox_view(_bulletins(request, session, actor).acknowledge_bulletin(bulletin_id, tenant_id=tenant_id))


@router.post(API + "/inbox/{bulletin_id}/remediation", response_model=InboxItem, responses=FOUND)
def set_remediation(
    bulletin_id: Ref,
    body: RemediationBody,
    request: Request,
    actor: Writer,
    session: DbSession,
    tenant_id: TenantParam = None,
) -> InboxItem:
    """Where your tenant is on the remediation: not started, in progress, done, not applicable."""
    audit_object(request, "security_bulletin", bulletin_id)
    service = _bulletins(request, session, actor)
    return inbox_view(service.set_remediation(bulletin_id, body.status, body.note, tenant_id=tenant_id))


@router.get(API + "/contact", response_model=ContactOut)
def get_contact(request: Request, actor: Reader, session: DbSession, tenant_id: TenantParam = None) -> ContactOut:
    """Where your tenant receives bulletins besides the inbox."""
    row = _bulletins(request, session, actor).get_contact(tenant_id=tenant_id)
    return ContactOut(
        tenant_id=row.tenant_id, webhook_url=row.webhook_url, has_secret=bool(row.webhook_secret), emails=row.emails
    )


@router.put(API + "/contact", response_model=ContactOut)
def set_contact(
    body: ContactBody, request: Request, actor: Writer, session: DbSession, tenant_id: TenantParam = None
) -> ContactOut:
    """Your tenant's webhook (HMAC-signed with the secret) and e-mail addresses for bulletins."""
    row = _bulletins(request, session, actor).set_contact(
        webhook_url=body.webhook_url, webhook_secret=body.webhook_secret, emails=body.emails, tenant_id=tenant_id
    )
    return ContactOut(
        tenant_id=row.tenant_id, webhook_url=row.webhook_url, has_secret=bool(row.webhook_secret), emails=row.emails
    )


# --- situational awareness


@router.get(API + "/awareness", response_model=AwarenessOut)
def get_awareness(request: Request, actor: Reader, session: DbSession, tenant_id: TenantParam = None) -> AwarenessOut:
    """Open alerts, unpatched vulnerable assets, honeypot activity, overdue bulletins and the risk score
    (0-100): your tenant's, or for platform operators without `tenant_id`, the whole platform's."""
    return awareness_view(_service(request, session, actor).awareness(tenant_id=tenant_id))


@router.get(API + "/awareness/tenants", response_model=list[TenantAwarenessOut])
def list_tenant_awareness(request: Request, actor: Reader, session: DbSession) -> list[TenantAwarenessOut]:
    """Every tenant's situation, riskiest first (platform operators)."""
    rows = _service(request, session, actor).awareness_by_tenant()
    return [TenantAwarenessOut(**awareness_view(v).model_dump(), tenant_name=t.name) for t, v in rows]
