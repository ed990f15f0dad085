"""Traceability profiles over HTTP: `/api/traceability/profiles`, a profile, and checks and reports of a document.

Thin: parse, call `profiles.service`, shape. Checks and reports store nothing; the document (JSON or
XML, as capture takes it) is read, checked against the profile and answered, master data it lacks read
from the tenant's stored master data (a platform operator's: the tenant named by `tenant_id`, else none).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse, Response

from iip.api.deps import DbSession, require
from iip.api.documents import TenantParam
from iip.api.problems import problem_responses
from iip.kernel.auth import Principal, tenant_to_read
from iip.kernel.errors import Invalid
from iip.traceability.capture_router import DOCUMENT_BODY
from iip.traceability.document_body import CaptureBody, DeclaredSyntax
from iip.traceability.profiles import reports, service
from iip.traceability.profiles.model import KEY, Profile, list_profiles, load_profile
from iip.traceability.profiles.schemas import CheckOut, ProfileSummaryOut, ReportOut, TableOut

router = APIRouter(prefix="/api/traceability/profiles", tags=["traceability"])

Reader = Annotated[Principal, Depends(require("traceability.read"))]
ProfileName = Annotated[str, Path(max_length=64, pattern=KEY, description="a profile's name", examples=["udi"])]
XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@router.get("", response_model=list[ProfileSummaryOut], responses=problem_responses(401, 403))
def get_profiles(principal: Reader) -> list[ProfileSummaryOut]:
    """The traceability profiles: FSMA 204 food, 一品一码 food records, medical device UDI."""
    return [ProfileSummaryOut.of(profile) for profile in list_profiles()]


@router.get("/{name}", response_model=Profile, responses=problem_responses(401, 403, 404, 422))
def get_profile(name: ProfileName, principal: Reader) -> JSONResponse:
    """A profile as data: its CTEs with their EPCIS shapes and KDEs (where each is found), rules, report tables."""
    profile = load_profile(name)
    return JSONResponse(profile.model_dump(mode="json", by_alias=True))


@router.post(
    "/{name}/check",
    response_model=CheckOut,
    responses=problem_responses(401, 403, 404, 413, 415, 422),
    openapi_extra={"requestBody": DOCUMENT_BODY},
)
def check_document(
    name: ProfileName,
    body: CaptureBody,
    syntax: DeclaredSyntax,
    principal: Reader,
    session: DbSession,
    tenant_id: TenantParam = None,
) -> CheckOut:
    """Check an EPCIS document (JSON or XML) against a profile: each event's CTE and the KDEs it lacks, and
    the rules across the document's events. Master data the document lacks comes from the tenant's stored
    master data. Nothing is stored; `valid` is whether no error was found."""
    tenant = tenant_to_read(principal, tenant_id)
    return CheckOut.of(service.check_document(name, body, session=session, tenant_id=tenant))


@router.post(
    "/{name}/report",
    response_model=ReportOut,
    responses={
        200: {"content": {"text/csv": {}, XLSX_MEDIA_TYPE: {}}},
        **problem_responses(401, 403, 404, 413, 415, 422),
    },
    openapi_extra={"requestBody": DOCUMENT_BODY},
)
def report_document(
    name: ProfileName,
    body: CaptureBody,
    syntax: DeclaredSyntax,
    principal: Reader,
    session: DbSession,
    tenant_id: TenantParam = None,
    table: Annotated[str | None, Query(max_length=64, pattern=KEY, description="one of the profile's tables")] = None,
    export_format: Annotated[Literal["json", "csv", "xlsx"], Query(alias="format")] = "json",
) -> Any:
    """The profile's report tables for an EPCIS document: the FSMA 204 sortable spreadsheet, the 一品一码
    records. CSV holds one table (name it when the profile has several); XLSX a sheet per table."""
    if export_format == "csv" and table is None:
        profile = load_profile(name)
        if len(profile.tables) != 1:
            keys = ", ".join(t.key for t in profile.tables)
            raise Invalid(f"CSV holds one table: name one of {keys} with `table`", code="table_required")
        table = profile.tables[0].key
    tables = service.report_document(name, body, table, session=session, tenant_id=tenant_to_read(principal, tenant_id))
    if export_format == "json":
        return ReportOut(profile=name, tables=[TableOut.of(t) for t in tables])
    if export_format == "csv":
        content, media_type, suffix = reports.csv_bytes(tables[0]), "text/csv; charset=utf-8", "csv"
    else:
        content, media_type, suffix = reports.xlsx_bytes(tables), XLSX_MEDIA_TYPE, "xlsx"
    filename = f"{name}-{table}.{suffix}" if table else f"{name}.{suffix}"
    return Response(
        content, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )
