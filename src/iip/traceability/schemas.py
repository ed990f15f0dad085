"""What the traceability API answers, in the EPCIS 2.0 REST binding's shapes."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from iip.traceability.models import CaptureJob, MasterDataElement

VALIDATION_EXCEPTION = "epcisException:ValidationException"


class CaptureErrorOut(BaseModel):
    """One problem of a capture job: an RFC 9457 problem, with where it is."""

    type: str = Field(default=VALIDATION_EXCEPTION, examples=[VALIDATION_EXCEPTION])
    title: str = "Invalid EPCIS event"
    status: int = 400
    detail: str = Field(examples=["action must be one of ADD, OBSERVE, DELETE, not 'WHATEVER'"])
    location: str = Field(
        description="JSON pointer into the document (an XPath-like path for XSD findings); empty for the whole",
        examples=["/epcisBody/eventList/3/action"],
    )


class CaptureJobOut(BaseModel):
    """A capture job as the EPCIS REST binding describes it (`CaptureJob`), with its counts."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    capture_id: str = Field(alias="captureID", examples=["0f7c2b8e4a5d4c3f9e1b2a3c4d5e6f70"])
    running: bool
    success: bool
    capture_error_behaviour: Literal["rollback", "proceed"] = Field(alias="captureErrorBehaviour")
    created_at: dt.datetime = Field(alias="createdAt")
    finished_at: dt.datetime | None = Field(alias="finishedAt")
    errors: list[CaptureErrorOut]
    event_count: int = Field(alias="eventCount", description="events in the document")
    captured_count: int = Field(alias="capturedCount", description="events stored")
    duplicate_count: int = Field(alias="duplicateCount", description="events dropped as already captured")
    created_by: str = Field(alias="createdBy")

    @classmethod
    def of(cls, job: CaptureJob) -> CaptureJobOut:
        return cls(
            capture_id=job.id,
            running=job.running,
            success=job.success,
            capture_error_behaviour="proceed" if job.mode == "proceed" else "rollback",
            created_at=job.created_at,
            finished_at=job.finished_at,
            errors=[_error(e) for e in job.errors],
            event_count=job.event_count,
            captured_count=job.captured_count,
            duplicate_count=job.duplicate_count,
            created_by=job.created_by,
        )


def _error(stored: dict[str, Any]) -> CaptureErrorOut:
    return CaptureErrorOut(detail=str(stored.get("message", "")), location=str(stored.get("location", "")))


class MasterDataAttributeOut(BaseModel):
    """One attribute as the EPCIS JSON binding writes it: its id and its value as captured."""

    id: str = Field(examples=["urn:epcglobal:cbv:mda#name"])
    attribute: Any = Field(default=None, examples=["Distribution centre Nord"])


class MasterDataElementOut(BaseModel):
    """A vocabulary element of the tenant's master data, in the JSON binding's shape, with where it came from."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    type: str = Field(description="the vocabulary type", examples=["urn:epcglobal:epcis:vtype:BusinessLocation"])
    id: str = Field(
        description="the element id as the newest capture wrote it", examples=["urn:epc:id:sgln:0037000.00729.0"]
    )
    attributes: list[MasterDataAttributeOut]
    children: list[str] | None = Field(default=None, description="child element ids, when a capture gave any")
    context: dict[str, str] = Field(
        default_factory=dict, alias="@context", description="prefixes the attribute values use → their namespaces"
    )
    capture_id: str | None = Field(default=None, alias="captureID", description="the newest capture that gave it")
    updated_at: dt.datetime = Field(alias="updatedAt")

    @classmethod
    def of(cls, row: MasterDataElement) -> MasterDataElementOut:
        return cls(
            type=row.vocabulary_type,
            id=row.element_id,
            attributes=[
                MasterDataAttributeOut(id=str(a.get("id")), attribute=a.get("attribute")) for a in row.attributes
            ],
            children=row.children,
            context=row.context or {},
            capture_id=row.capture_job_id,
            updated_at=row.updated_at,
        )
