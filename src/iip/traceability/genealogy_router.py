"""Genealogy and recall over HTTP: `/epcis/genealogy/{epc}` and `/api/traceability/recall`.

Thin: parse, call `genealogy.trace` or `recall.recall`, shape. Identifiers are EPC URNs or GS1
Digital Link URIs; the answer names them in their canonical Digital Link form.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from iip.api.deps import DbSession, require
from iip.api.documents import NO_NUL, TenantParam
from iip.api.problems import problem_responses
from iip.kernel.auth import Principal
from iip.traceability import genealogy, recall

router = APIRouter(tags=["traceability"], responses=problem_responses(401, 403, 404, 409, 422))

Reader = Annotated[Principal, Depends(require("traceability.read"))]
IdentifierText = Annotated[str, Query(min_length=1, max_length=500, pattern=NO_NUL)]


class WhereaboutsOut(BaseModel):
    lastEventID: str | None = None  # noqa: N815 - EPCIS spelling
    lastEventType: str | None = None  # noqa: N815
    lastEventTime: dt.datetime | None = None  # noqa: N815
    bizStep: str | None = None  # noqa: N815
    location: str | None = None
    owner: str | None = None
    disposition: str | None = None


class NodeOut(BaseModel):
    id: str
    kind: Literal["instance", "class"]
    depth: int
    quantity: float | None = None
    uom: str | None = None
    whereabouts: WhereaboutsOut | None = None


class EdgeOut(BaseModel):
    source: str
    target: str
    relation: Literal["input_of", "contained_in"]
    eventID: str  # noqa: N815
    eventType: str  # noqa: N815
    eventTime: dt.datetime  # noqa: N815
    quantity: float | None = None
    uom: str | None = None


class GenealogyOut(BaseModel):
    root: str
    direction: Literal["backward", "forward"]
    truncated: bool = Field(description="the walk stopped at maxDepth with identifiers left to follow")
    nodes: list[NodeOut]
    edges: list[EdgeOut]


class RecallRowOut(BaseModel):
    lot: str
    gtin: str
    identifier: str
    identifierType: str  # noqa: N815
    quantity: float | None
    uom: str
    criticalTrackingEvent: str  # noqa: N815
    eventDate: str  # noqa: N815
    location: str
    locationDescription: str  # noqa: N815 - the location's name and address from master data, else its GLN
    owner: str
    ownerName: str  # noqa: N815 - the owner's name and address from master data, when known
    disposition: str
    shipFrom: str  # noqa: N815
    shipTo: str  # noqa: N815
    referenceDocumentType: str  # noqa: N815
    referenceDocument: str  # noqa: N815
    reachedThrough: str  # noqa: N815
    hops: int


class RecallOut(BaseModel):
    root: str
    kind: Literal["instance", "class"]
    count: int
    truncated: bool
    affected: list[RecallRowOut]


def genealogy_view(result: genealogy.Genealogy) -> GenealogyOut:
    nodes = []
    for node in result.nodes:
        quantity, uom = result.quantities.get(node.id, (None, None))
        where = result.whereabouts.get(node.id)
        nodes.append(
            NodeOut(
                id=node.id,
                kind=node.kind,
                depth=node.depth,
                quantity=quantity,
                uom=uom,
                whereabouts=None
                if where is None
                else WhereaboutsOut(
                    lastEventID=where.last_event_id,
                    lastEventType=where.last_event_type,
                    lastEventTime=where.last_event_time,
                    bizStep=where.biz_step,
                    location=where.location,
                    owner=where.owner,
                    disposition=where.disposition,
                ),
            )
        )
    edges = [
        EdgeOut(
            source=e.source,
            target=e.target,
            relation=e.relation,
            eventID=e.event_id,
            eventType=e.event_type,
            eventTime=e.event_time,
            quantity=e.quantity,
            uom=e.uom,
        )
        for e in result.edges
    ]
    return GenealogyOut(
        root=result.root, direction=result.direction, truncated=result.truncated, nodes=nodes, edges=edges
    )


@router.get("/epcis/genealogy/{epc:path}", response_model=GenealogyOut)
def get_genealogy(
    principal: Reader,
    session: DbSession,
    epc: Annotated[str, Path(min_length=1, max_length=500, pattern=NO_NUL, description="EPC URN or Digital Link")],
    direction: Literal["backward", "forward"] = "backward",
    max_depth: Annotated[int, Query(alias="maxDepth", ge=1, le=100)] = genealogy.DEFAULT_MAX_DEPTH,
    tenant: TenantParam = None,
) -> GenealogyOut:
    """What went into an identifier (backward) or what came from it and where it went (forward)."""
    result = genealogy.trace(session, principal, epc, direction, max_depth=max_depth, tenant=tenant)
    return genealogy_view(result)


@router.get(
    "/api/traceability/recall",
    response_model=RecallOut,
    responses={200: {"content": {"text/csv": {}, recall.XLSX_MEDIA_TYPE: {}}}},
)
def get_recall(
    principal: Reader,
    session: DbSession,
    lot: IdentifierText | None = None,
    serial: IdentifierText | None = None,
    export_format: Annotated[Literal["json", "csv", "xlsx"], Query(alias="format")] = "json",
    tenant: TenantParam = None,
) -> RecallOut | Response:
    """Every product a lot or serial reached, its last known location and owner; CSV or XLSX for FSMA 204."""
    result = recall.recall(session, principal, lot=lot, serial=serial, tenant=tenant)
    if export_format != "json":
        name = f"recall.{export_format}"
        media_type = "text/csv; charset=utf-8" if export_format == "csv" else recall.XLSX_MEDIA_TYPE
        return Response(
            recall.export(result.rows, export_format),
            media_type=media_type,
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    rows = [
        RecallRowOut(
            lot=r.traceability_lot_code,
            gtin=r.product_gtin,
            identifier=r.affected_identifier,
            identifierType=r.identifier_type,
            quantity=r.quantity,
            uom=r.unit_of_measure,
            criticalTrackingEvent=r.critical_tracking_event,
            eventDate=r.event_date,
            location=r.location_identifier,
            locationDescription=r.location_description,
            owner=r.owner,
            ownerName=r.owner_name,
            disposition=r.disposition,
            shipFrom=r.ship_from_location,
            shipTo=r.ship_to_location,
            referenceDocumentType=r.reference_document_type,
            referenceDocument=r.reference_document_number,
            reachedThrough=r.reached_through,
            hops=r.hops,
        )
        for r in result.rows
    ]
    kind: Literal["instance", "class"] = "class" if result.kind == "class" else "instance"
    return RecallOut(root=result.root, kind=kind, count=len(rows), truncated=result.genealogy.truncated, affected=rows)
