"""Anti-counterfeit codes over HTTP under `/api/traceability`.

Public: `GET /verify` (a consumer's scan: answered, recorded, alerts raised) and `GET /keys` (the
published keys, for offline checks). Operators: batches (`traceability.write` to issue and export,
`traceability.read` to list), recall and decommission marks, alerts, the policy and key rotation
(`traceability.admin`). Thin: parse, call the service, shape. Alerts a scan raised are published on
the alarms context's `ALARM_EVENTS` once the request's transaction has committed (a background task
runs after the response, hence after the commit).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator, Sequence
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Path, Query, Request, status
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from iip.alarms.public import AlarmEvent
from iip.api.deps import DbSession, audit_object, client_address, get_runtime, require
from iip.api.documents import NO_NUL, TenantParam
from iip.api.problems import problem_responses
from iip.kernel.auth import Principal
from iip.kernel.bus import BusError
from iip.kernel.errors import Invalid
from iip.kernel.runtime import Runtime
from iip.traceability.authenticity import geo
from iip.traceability.authenticity.codes import expiry_date, from_b64url, jwk, uri_writer
from iip.traceability.authenticity.keys import published_keys
from iip.traceability.authenticity.models import CodeAlert, CodeBatch, CodeMark
from iip.traceability.authenticity.schemas import (
    AlertKind,
    AlertOut,
    AlertPage,
    BatchCreate,
    BatchOut,
    BatchPage,
    MarkCreate,
    MarketOut,
    MarkKind,
    MarkOut,
    PolicyIn,
    PolicyOut,
    PublicKey,
    PublicKeySet,
    RotatedKey,
    ScanPlace,
    VerifyOut,
)
from iip.traceability.authenticity.service import (
    CodeService,
    IssueRequest,
    Policy,
    ScanContext,
    Verification,
    VerificationService,
    code_chunk,
    publish_alarm_events,
)

logger = logging.getLogger(__name__)

router = APIRouter(tags=["traceability"])

API = "/api/traceability"
VERIFY_PREFIX = "/v"  # the consumer page; codes start with <public base URL>/v/01/...
Reader = Annotated[Principal, Depends(require("traceability.read"))]
Writer = Annotated[Principal, Depends(require("traceability.write"))]
Admin = Annotated[Principal, Depends(require("traceability.admin"))]
BatchRef = Annotated[str, Path(max_length=32, pattern=NO_NUL, description="the batch's id")]
MarkRef = Annotated[str, Path(max_length=32, pattern=NO_NUL, description="the mark's id")]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
Limit = Annotated[int, Query(ge=1, le=1000)]
GtinFilter = Annotated[str | None, Query(max_length=14, pattern=r"^\d*$")]
OPERATOR_ANSWERS = problem_responses(401, 403, 404, 422)


def _service(request: Request, session: Session, actor: Principal) -> CodeService:
    return CodeService(session, actor, get_runtime(request).settings)


def default_resolver(request: Request) -> str:
    """This platform's consumer page: its configured public URL, else the URL the request came to."""
    base = get_runtime(request).settings.identifiers.base_url or str(request.base_url).rstrip("/")
    return base + VERIFY_PREFIX


def publish_later(request: Request, background: BackgroundTasks, events: Sequence[AlarmEvent]) -> None:
    if events:
        background.add_task(_publish, get_runtime(request), list(events))


async def _publish(runtime: Runtime, events: Sequence[AlarmEvent]) -> None:
    try:
        await publish_alarm_events(runtime.bus, events)
    except (BusError, OSError) as err:
        # Committed already: the alerts stand and are listed; the alarms context misses these.
        logger.warning("could not publish %d code alert(s): %s", len(events), err)


# --- views


def batch_view(service: CodeService, row: CodeBatch) -> BatchOut:
    state = service.batch_state(row)
    return BatchOut(
        id=row.id,
        tenant_id=row.tenant_id,
        gtin=row.gtin,
        lot=row.lot,
        expiry=None if row.expiry is None else expiry_date(row.expiry),
        markets=[MarketOut(**m) for m in row.markets],
        single_use=row.single_use,
        count=row.count,
        key_id=row.key_id,
        resolver=row.resolver,
        note=row.note,
        created_by=row.created_by,
        created_at=row.created_at,
        recalled=state.recalled,
        decommissioned=state.decommissioned,
        scanned=row.scanned,
        example_uri=state.example_uri,
    )


def mark_view(row: CodeMark) -> MarkOut:
    return MarkOut(
        id=row.id,
        tenant_id=row.tenant_id,
        kind=MarkKind(row.kind),
        gtin=row.gtin,
        lot=row.lot,
        batch_id=row.batch_id,
        serial=row.serial,
        reason=row.reason,
        created_by=row.created_by,
        created_at=row.created_at,
        withdrawn_by=row.withdrawn_by,
        withdrawn_at=row.withdrawn_at,
        active=row.withdrawn_at is None,
    )


def alert_view(row: CodeAlert) -> AlertOut:
    return AlertOut(
        id=row.id,
        tenant_id=row.tenant_id,
        kind=AlertKind(row.kind),
        batch_id=row.batch_id,
        gtin=row.gtin,
        serial=row.serial,
        message=row.message,
        details=row.details,
        created_at=row.created_at,
    )


def verification_view(result: Verification) -> VerifyOut:
    link, first = result.link, result.first_scan
    return VerifyOut(
        status=result.status,
        genuine=result.genuine,
        reason=result.reason,
        gtin=None if link is None else link.gtin,
        serial=None if link is None else link.serial,
        lot=None if link is None else link.lot,
        expiry=result.expiry,
        scan_count=result.scan_count,
        first_scan_at=None if first is None else first.scanned_at,
        first_scan_place=None
        if first is None
        else ScanPlace(
            place=first.place, latitude=public_degrees(first.latitude), longitude=public_degrees(first.longitude)
        ),
    )


def public_degrees(value: float | None) -> float | None:
    """A position shown to whoever holds the code, rounded to about a kilometre: where, not whose door."""
    return None if value is None else round(value, 2)


def scan_place(place: str | None, latitude: float | None, longitude: float | None) -> geo.Place:
    """The place a client gave; Invalid if malformed."""
    try:
        return geo.Place(
            None if place is None else geo.place_code(place),
            geo.check_point(latitude, longitude),
        )
    except geo.PlaceError as err:
        raise Invalid(str(err), code="invalid_place") from None


def scan_context(request: Request, place: geo.Place) -> ScanContext:
    return ScanContext(place, request.headers.get("user-agent", "")[:300], client_address(request))


# --- public


@router.get(f"{API}/verify", response_model=VerifyOut, responses=problem_responses(422))
def verify(
    request: Request,
    session: DbSession,
    background: BackgroundTasks,
    uri: Annotated[str, Query(min_length=1, max_length=2000, pattern=NO_NUL, description="the scanned code")],
    place: Annotated[
        str | None, Query(max_length=6, pattern=NO_NUL, description="ISO 3166 country or subdivision of the scan")
    ] = None,
    lat: Annotated[float | None, Query(ge=-90, le=90, description="latitude of the scan")] = None,
    lon: Annotated[float | None, Query(ge=-180, le=180, description="longitude of the scan")] = None,
) -> VerifyOut:
    """Verify a scanned code (no login): `genuine`, `unknown`, `recalled`, `decommissioned` or `already_used`.

    The scan is recorded with the place given, the user agent and a keyed hash of the address;
    what it raises (a single-use code scanned again, a scan outside or far from the intended
    market, an impossible journey) becomes an alert of the code's owner.
    """
    service = VerificationService(session, get_runtime(request).settings)
    result = service.verify(uri, scan_context(request, scan_place(place, lat, lon)))
    publish_later(request, background, service.events)
    return verification_view(result)


@router.get(f"{API}/keys", response_model=PublicKeySet)
def public_keys(session: DbSession) -> PublicKeySet:
    """Every code signing key, as a JSON Web Key Set (Ed25519, RFC 8037), for checking codes offline.

    A code names its key in its `k` parameter; retired keys stay here, so their codes still verify.
    """
    keys = []
    for row in published_keys(session):
        web_key = jwk(from_b64url(row.public_key))
        keys.append(PublicKey(x=web_key["x"], kid=web_key["kid"], active=row.active))
    return PublicKeySet(keys=keys)


# --- batches


@router.post(
    f"{API}/code-batches",
    response_model=BatchOut,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(401, 403, 409, 422),
)
def issue_codes(body: BatchCreate, request: Request, actor: Writer, session: DbSession) -> BatchOut:
    """Issue `count` signed codes (up to 100,000) for a GTIN, with lot, expiry and intended markets."""
    service = _service(request, session, actor)
    try:
        markets = [geo.Market.of(m.code, m.latitude, m.longitude) for m in body.markets]
    except geo.PlaceError as err:
        raise Invalid(str(err), code="invalid_place") from None
    spec = IssueRequest(
        gtin=body.gtin,
        count=body.count,
        lot=body.lot,
        expiry=body.expiry,
        markets=markets,
        single_use=body.single_use,
        resolver=body.resolver,
        note=body.note,
    )
    row = service.issue(spec, default_resolver=default_resolver(request), tenant_id=body.tenant_id)
    audit_object(request, "code_batch", row.id)
    return batch_view(service, row)


@router.get(f"{API}/code-batches", response_model=BatchPage, responses=problem_responses(401, 403, 422))
def list_batches(
    request: Request,
    actor: Reader,
    session: DbSession,
    gtin: GtinFilter = None,
    lot: Annotated[str | None, Query(max_length=20, pattern=NO_NUL)] = None,
    offset: Offset = 0,
    limit: Limit = 50,
    tenant_id: TenantParam = None,
) -> BatchPage:
    """Code batches of your tenant, newest first."""
    service = _service(request, session, actor)
    rows, total = service.list_batches(gtin=gtin, lot=lot, offset=offset, limit=limit, tenant_id=tenant_id)
    return BatchPage(items=[batch_view(service, row) for row in rows], total=total, offset=offset, limit=limit)


@router.get(f"{API}/code-batches/{{batch_id}}", response_model=BatchOut, responses=OPERATOR_ANSWERS)
def get_batch(batch_id: BatchRef, request: Request, actor: Reader, session: DbSession) -> BatchOut:
    service = _service(request, session, actor)
    return batch_view(service, service.get_batch(batch_id))


@router.get(
    f"{API}/code-batches/{{batch_id}}/codes.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "uri, gtin, serial, lot, expiry"}, **OPERATOR_ANSWERS},
)
def export_codes(batch_id: BatchRef, request: Request, actor: Writer, session: DbSession) -> StreamingResponse:
    """Every code of a batch as CSV (`uri,gtin,serial,lot,expiry`), for printing labels."""
    batch = _service(request, session, actor).export_batch(batch_id)
    runtime = get_runtime(request)
    headers = {"Content-Disposition": f'attachment; filename="codes-{batch.id}.csv"'}
    return StreamingResponse(csv_lines(runtime, batch.id), media_type="text/csv; charset=utf-8", headers=headers)


def csv_lines(runtime: Runtime, batch_id: str) -> Iterator[bytes]:
    """The CSV in chunks. Each chunk is read in a short transaction of its own: the request's has
    closed by the time the body streams, and on SQLite a transaction held for a slow download would
    hold the write lock."""
    with runtime.db.session() as session:
        batch = session.get(CodeBatch, batch_id)
        if batch is None:
            return
        write = uri_writer(batch.resolver, batch.gtin, batch.lot, batch.expiry, batch.key_id)
        fixed = (batch.gtin, batch.lot or "", "" if batch.expiry is None else str(expiry_date(batch.expiry)))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("uri", "gtin", "serial", "lot", "expiry"))
    after = 0
    while True:
        with runtime.db.session() as session:
            rows = code_chunk(session, batch_id, after)
        if not rows:
            break
        for _, serial, signature in rows:
            writer.writerow((write(serial, signature), fixed[0], serial, fixed[1], fixed[2]))
        after = rows[-1][0]
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue().encode()


# --- marks


@router.post(
    f"{API}/code-marks",
    response_model=MarkOut,
    status_code=status.HTTP_201_CREATED,
    responses=OPERATOR_ANSWERS,
)
def create_mark(body: MarkCreate, request: Request, actor: Writer, session: DbSession) -> MarkOut:
    """Recall or decommission codes: of a GTIN, narrowed by `lot`, `batch_id` or `serial`."""
    row = _service(request, session, actor).create_mark(
        body.kind,
        body.gtin,
        lot=body.lot,
        batch_id=body.batch_id,
        serial=body.serial,
        reason=body.reason,
        tenant_id=body.tenant_id,
    )
    audit_object(request, "code_mark", row.id)
    return mark_view(row)


@router.get(f"{API}/code-marks", response_model=list[MarkOut], responses=problem_responses(401, 403, 422))
def list_marks(
    request: Request,
    actor: Reader,
    session: DbSession,
    active: bool | None = None,
    gtin: GtinFilter = None,
    tenant_id: TenantParam = None,
) -> list[MarkOut]:
    """Recall and decommission marks of your tenant, newest first (`active=true`: not withdrawn)."""
    rows = _service(request, session, actor).list_marks(active=active, gtin=gtin, tenant_id=tenant_id)
    return [mark_view(row) for row in rows]


@router.get(f"{API}/code-marks/{{mark_id}}", response_model=MarkOut, responses=OPERATOR_ANSWERS)
def get_mark(mark_id: MarkRef, request: Request, actor: Reader, session: DbSession) -> MarkOut:
    return mark_view(_service(request, session, actor).get_mark(mark_id))


@router.delete(f"{API}/code-marks/{{mark_id}}", response_model=MarkOut, responses=OPERATOR_ANSWERS)
def withdraw_mark(mark_id: MarkRef, request: Request, actor: Writer, session: DbSession) -> MarkOut:
    """Withdraw a mark: its codes answer as before (kept, with who withdrew it and when)."""
    row = _service(request, session, actor).withdraw_mark(mark_id)
    audit_object(request, "code_mark", row.id)
    return mark_view(row)


# --- alerts


@router.get(f"{API}/alerts", response_model=AlertPage, responses=problem_responses(401, 403, 422))
def list_alerts(
    request: Request,
    actor: Reader,
    session: DbSession,
    kind: AlertKind | None = None,
    batch_id: Annotated[str | None, Query(max_length=32, pattern=NO_NUL)] = None,
    gtin: GtinFilter = None,
    offset: Offset = 0,
    limit: Limit = 100,
    tenant_id: TenantParam = None,
) -> AlertPage:
    """Code alerts of your tenant, newest first: repeated single-use scans, scans outside or far
    from the intended market, impossible journeys."""
    rows, total = _service(request, session, actor).list_alerts(
        kind=kind, batch_id=batch_id, gtin=gtin, offset=offset, limit=limit, tenant_id=tenant_id
    )
    return AlertPage(items=[alert_view(row) for row in rows], total=total, offset=offset, limit=limit)


# --- policy and keys


def policy_view(policy: Policy) -> PolicyOut:
    return PolicyOut(
        resolver=policy.resolver,
        far_km=policy.far_km,
        max_speed_kmh=policy.max_speed_kmh,
        travel_tolerance_km=policy.travel_tolerance_km,
    )


@router.get(f"{API}/code-policy", response_model=PolicyOut, responses=problem_responses(401, 403, 422))
def get_policy(request: Request, actor: Reader, session: DbSession, tenant_id: TenantParam = None) -> PolicyOut:
    """Your tenant's alert thresholds and default resolver base (defaults until set)."""
    return policy_view(_service(request, session, actor).policy(tenant_id))


@router.put(f"{API}/code-policy", response_model=PolicyOut, responses=problem_responses(401, 403, 422))
def set_policy(body: PolicyIn, request: Request, actor: Admin, session: DbSession) -> PolicyOut:
    policy = Policy(body.resolver, body.far_km, body.max_speed_kmh, body.travel_tolerance_km)
    return policy_view(_service(request, session, actor).set_policy(policy, body.tenant_id))


@router.post(f"{API}/keys/rotate", response_model=RotatedKey, responses=problem_responses(401, 403, 422))
def rotate_key(request: Request, actor: Admin, session: DbSession, tenant_id: TenantParam = None) -> RotatedKey:
    """Retire your tenant's signing key (it stays published; its codes keep verifying) and make a new one."""
    old, new = _service(request, session, actor).rotate_key(tenant_id)
    audit_object(request, "code_key", new)
    return RotatedKey(retired_key_id=old, key_id=new)
