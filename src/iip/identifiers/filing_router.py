"""`/api/filings`: prefix filings (备案). Enterprises apply; platform operators approve or reject."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from iip.api.deps import CurrentPrincipal, DbSession, audit_object, require
from iip.api.problems import problem_responses
from iip.identifiers.filing import CompanyDetails, FilingService
from iip.identifiers.models import Prefix
from iip.kernel.auth import Principal

router = APIRouter(prefix="/api/filings", tags=["filings"])

Reader = Annotated[Principal, Depends(require("identifiers.read"))]
Applicant = Annotated[Principal, Depends(require("identifiers.write"))]


class CompanyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, examples=["江西某某电子科技有限公司"])
    credit_code: str = Field(
        min_length=18, max_length=18, description="统一社会信用代码 (GB 32100-2015)", examples=["91350100M000100Y43"]
    )
    address: str = Field(min_length=1, max_length=500)
    contact_name: str = Field(min_length=1, max_length=100)
    contact_phone: str = Field(min_length=3, max_length=40)
    contact_email: str = Field(default="", max_length=200)
    industry: str = Field(min_length=1, max_length=200, description="e.g. the GB/T 4754 industry category")


class FilingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prefix: str = Field(min_length=1, max_length=255, examples=["88.118.8.1001"])
    parent: str = Field(min_length=1, max_length=255, examples=["88.118.8"])
    company: CompanyIn
    secret: str = Field(
        min_length=8, max_length=200, description="the secret of the admin identity 300:0.NA/<prefix>; kept hashed"
    )


class RejectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000)


class FilingOut(BaseModel):
    id: str
    tenant_id: str
    prefix: str
    parent: str
    status: Literal["pending", "approved", "rejected"]
    company: dict[str, Any]
    applied_by: str
    applied_at: dt.datetime
    decided_by: str
    decided_at: dt.datetime | None
    reason: str
    admin_identity: str = Field(description="the Handle identity that administers the prefix once approved")

    @classmethod
    def of(cls, record: Prefix) -> FilingOut:
        return cls(
            id=record.id,
            tenant_id=record.tenant_id,
            prefix=record.prefix,
            parent=record.parent or "",
            status=record.status,
            company=record.details,
            applied_by=record.applied_by,
            applied_at=record.created_at,
            decided_by=record.decided_by,
            decided_at=record.decided_at,
            reason=record.reason,
            admin_identity=f"300:0.NA/{record.prefix}",
        )


@router.post("", status_code=201, responses=problem_responses(401, 403, 409, 422))
def apply_for_prefix(body: FilingIn, request: Request, session: DbSession, actor: Applicant) -> FilingOut:
    """Apply for a prefix under a parent prefix homed here; pending until a platform operator decides."""
    company = CompanyDetails(**body.company.model_dump())
    record = FilingService(session).apply(actor, body.prefix, body.parent, company, body.secret)
    audit_object(request, "filing", record.id)
    return FilingOut.of(record)


@router.get("", responses=problem_responses(401, 403))
def list_filings(
    session: DbSession,
    actor: Reader,
    status: Annotated[Literal["pending", "approved", "rejected"] | None, Query()] = None,
) -> list[FilingOut]:
    """Your tenant's filings; every tenant's for platform operators."""
    return [FilingOut.of(r) for r in FilingService(session).list(actor, status)]


@router.get("/{filing_id}", responses=problem_responses(401, 403, 404))
def get_filing(filing_id: str, session: DbSession, actor: CurrentPrincipal) -> FilingOut:
    """One filing, with its status and, once decided, who decided and why."""
    return FilingOut.of(FilingService(session).get(actor, filing_id))


@router.post("/{filing_id}/approve", responses=problem_responses(401, 403, 404, 409))
def approve_filing(filing_id: str, request: Request, session: DbSession, actor: CurrentPrincipal) -> FilingOut:
    """Approve a pending filing (platform operators): the admin identity is created, writes open."""
    audit_object(request, "filing", filing_id)
    return FilingOut.of(FilingService(session).approve(actor, filing_id))


@router.post("/{filing_id}/reject", responses=problem_responses(401, 403, 404, 409, 422))
def reject_filing(
    filing_id: str, body: RejectionIn, request: Request, session: DbSession, actor: CurrentPrincipal
) -> FilingOut:
    """Reject a pending filing with a reason the applicant sees (platform operators)."""
    audit_object(request, "filing", filing_id)
    return FilingOut.of(FilingService(session).reject(actor, filing_id, body.reason))
