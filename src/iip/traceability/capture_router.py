"""The capture side of the EPCIS 2.0 REST binding: `/epcis/capture` (documents), `POST /epcis/events` (one event).

Status codes and headers follow GS1's openapi.yaml: 202 and the job's Location for a document, 201
and the event's Location for one event, 413 with `GS1-EPCIS-Capture-Limit` and
`GS1-EPCIS-Capture-File-Size-Limit`, 415 for a body in neither JSON nor XML, 400 (problem+json
listing every problem's location) for a document refused whole.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from iip.api.deps import CurrentPrincipal, DbSession, audit_object, require
from iip.api.documents import NO_NUL, TenantParam
from iip.api.problems import problem_responses
from iip.kernel.auth import Principal
from iip.traceability.capture import CaptureService, CaptureTooLarge
from iip.traceability.document_body import LIMITS, CaptureBody, DeclaredSyntax, too_large_response
from iip.traceability.schemas import CaptureJobOut

router = APIRouter(prefix="/epcis", tags=["traceability"])

Reader = Annotated[Principal, Depends(require("traceability.read"))]
Writer = Annotated[Principal, Depends(require("traceability.write"))]

VERSIONS = {"GS1-EPCIS-Version": "2.0.0", "GS1-CBV-Version": "2.0.0"}
DISCOVERY = {
    "Allow": "OPTIONS, POST, GET",
    "GS1-EPCIS-Min": "2.0.0",
    "GS1-EPCIS-Max": "2.0.0",
    "GS1-CBV-Min": "2.0.0",
    "GS1-CBV-Max": "2.0.0",
    "GS1-Capture-Error-Behaviour": "all",  # both rollback and proceed
    **VERSIONS,
    **LIMITS,
}
DOCUMENT_BODY: dict[str, Any] = {
    "description": "An EPCISDocument or EPCISQueryDocument (or one event), JSON/JSON-LD or XML.",
    "required": True,
    "content": {
        "application/json": {"schema": {"type": "object"}},
        "application/ld+json": {"schema": {"type": "object"}},
        "application/xml": {"schema": {"type": "string"}},
    },
}
EVENT_BODY: dict[str, Any] = {
    "description": "One EPCIS event (with its @context), JSON/JSON-LD or XML.",
    "required": True,
    "content": {
        "application/json": {"schema": {"type": "object"}},
        "application/xml": {"schema": {"type": "string"}},
    },
}


ErrorBehaviour = Annotated[
    str | None,
    Header(
        alias="GS1-Capture-Error-Behaviour",
        max_length=20,
        description="rollback (default): any invalid event and nothing is stored; proceed: valid events are stored",
    ),
]
ErrorBehaviourAlias = Annotated[
    str | None, Header(alias="GS1-EPCIS-Capture-Error-Behaviour", max_length=20, include_in_schema=False)
]


@router.options("/capture", status_code=204, response_class=Response, responses=problem_responses(401))
def discover_capture(actor: CurrentPrincipal) -> Response:
    """What capture takes: EPCIS and CBV versions, the limits per call, both error behaviours."""
    return Response(status_code=204, headers=DISCOVERY)


@router.post(
    "/capture",
    status_code=202,
    response_model=CaptureJobOut,
    responses=problem_responses(400, 401, 403, 404, 413, 415, 422),
    openapi_extra={"requestBody": DOCUMENT_BODY},
)
def capture(
    request: Request,
    body: CaptureBody,
    syntax: DeclaredSyntax,
    actor: Writer,
    session: DbSession,
    behaviour: ErrorBehaviour = None,
    behaviour_alias: ErrorBehaviourAlias = None,
    tenant_id: TenantParam = None,
) -> JSONResponse:
    """Capture an EPCIS document: validated (schema and rules), hashed, stored; the job is finished on return.

    202 with the job in `Location` (and the body). Invalid events fail the job (`rollback`, nothing
    stored) or are listed in its errors while the others are stored (`proceed`). A document that is
    unreadable or breaks the schema outside its events is refused: 400, every problem located.
    """
    mode = (behaviour or behaviour_alias or "rollback").strip().lower()
    try:
        job = CaptureService(session).capture(actor, body, syntax=syntax, mode=mode, tenant_id=tenant_id)
    except CaptureTooLarge as err:
        raise too_large_response(err.message) from None
    audit_object(request, "capture_job", job.id)
    headers = {"Location": f"/epcis/capture/{job.id}", **VERSIONS}
    content = CaptureJobOut.of(job).model_dump(mode="json", by_alias=True)
    return JSONResponse(content, status_code=202, headers=headers)


@router.get("/capture", response_model=list[CaptureJobOut], responses=problem_responses(401, 403, 422))
def list_capture_jobs(
    request: Request,
    actor: Reader,
    session: DbSession,
    per_page: Annotated[int, Query(alias="perPage", ge=1, le=1000)] = 30,
    next_page_token: Annotated[str | None, Query(alias="nextPageToken", max_length=200, pattern=NO_NUL)] = None,
    tenant_id: TenantParam = None,
) -> JSONResponse:
    """Capture jobs, newest first; a `Link: <...>; rel="next"` header while there are more."""
    page = CaptureService(session).jobs(actor, per_page=per_page, page_token=next_page_token, tenant_id=tenant_id)
    content = [CaptureJobOut.of(job).model_dump(mode="json", by_alias=True) for job in page.jobs]
    headers = dict(VERSIONS)
    if page.next_token:
        headers["Link"] = f'<{request.url.include_query_params(nextPageToken=page.next_token)}>; rel="next"'
    return JSONResponse(content, headers=headers)


@router.get("/capture/{capture_id}", response_model=CaptureJobOut, responses=problem_responses(401, 403, 404))
def get_capture_job(capture_id: Annotated[str, Path(max_length=64)], actor: Reader, session: DbSession) -> JSONResponse:
    """One capture job: whether it succeeded, its counts and the location of every problem."""
    job = CaptureService(session).job(actor, capture_id)
    return JSONResponse(CaptureJobOut.of(job).model_dump(mode="json", by_alias=True), headers=VERSIONS)


@router.post(
    "/events",
    status_code=201,
    responses={
        201: {"content": {"application/json": {"schema": {"type": "object"}}}, "description": "the event stored"},
        **problem_responses(400, 401, 403, 404, 409, 413, 415, 422),
    },
    openapi_extra={"requestBody": EVENT_BODY},
)
def capture_one_event(
    request: Request,
    body: CaptureBody,
    syntax: DeclaredSyntax,
    actor: Writer,
    session: DbSession,
    tenant_id: TenantParam = None,
) -> JSONResponse:
    """Capture one event, synchronously: 201 and its Location; 409 if it is captured already."""
    try:
        row = CaptureService(session).capture_event(actor, body, syntax=syntax, tenant_id=tenant_id)
    except CaptureTooLarge as err:
        raise too_large_response(err.message) from None
    audit_object(request, "event", row.event_id)
    headers = {"Location": f"/epcis/events/{quote(row.event_id, safe='')}", **VERSIONS}
    return JSONResponse({**row.body, "eventID": row.event_id}, status_code=201, headers=headers)
