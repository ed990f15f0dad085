"""Identifier catalogue API: attribute templates, a handle's attributes, search, bulk registration.

Answers problem+json like the rest of IIP (the Handle-protocol shape is only for `/api/handles`).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from iip.api.deps import DbSession, audit_object, require
from iip.api.problems import problem_responses
from iip.identifiers import catalog
from iip.identifiers.codec import parse_handle
from iip.identifiers.models import Handle
from iip.kernel.auth import Principal
from iip.kernel.errors import Invalid

router = APIRouter(tags=["catalog"])

Reader = Annotated[Principal, Depends(require("identifiers.read"))]
Writer = Annotated[Principal, Depends(require("identifiers.write"))]
MAX_BATCH_BODY_BYTES = 32 * 1024 * 1024
ATTRIBUTES_PATH = "/api/identifiers/{prefix}/{suffix:path}/attributes"


async def request_body(request: Request) -> bytes:
    return await request.body()


RequestBody = Annotated[bytes, Depends(request_body)]


class TemplateOut(BaseModel):
    name: str = Field(examples=["product"])
    title: str
    description: str
    schema_: dict[str, Any] = Field(alias="schema", description="the JSON Schema attributes are checked against")


class AttributesIn(BaseModel):
    template: str | None = Field(default=None, max_length=50, examples=["product"])
    attributes: dict[str, Any] = Field(
        default_factory=dict, examples=[{"name": "精密轴承", "model": "6204-2RS", "manufacturer": "Acme"}]
    )


class AttributesOut(BaseModel):
    handle: str
    template: str | None
    attributes: dict[str, Any]
    updated_at: dt.datetime


class SearchItem(BaseModel):
    handle: str
    url: str | None
    template: str | None
    attributes: dict[str, Any]
    updated_at: dt.datetime


class SearchOut(BaseModel):
    total: int = Field(description="matches counted; when `total_exact` is false, more than this match")
    total_exact: bool
    page: int
    page_size: int
    items: list[SearchItem]


class BatchOut(BaseModel):
    registered: int


def _template_out(found: catalog.Template) -> TemplateOut:
    return TemplateOut.model_validate(
        {"name": found.name, "title": found.title, "description": found.description, "schema": found.schema}
    )


def _attributes_out(row: Handle) -> AttributesOut:
    return AttributesOut(handle=row.handle, template=row.template, attributes=row.attributes, updated_at=row.updated_at)


@router.get("/api/identifier-templates", response_model=list[TemplateOut], response_model_by_alias=True)
def list_templates() -> list[TemplateOut]:
    """The attribute templates a handle can be registered with."""
    return [_template_out(t) for t in catalog.templates().values()]


@router.get(
    "/api/identifier-templates/{name}",
    response_model=TemplateOut,
    response_model_by_alias=True,
    responses=problem_responses(404),
)
def get_template(name: str) -> TemplateOut:
    return _template_out(catalog.template(name))


@router.get("/api/identifiers/search", response_model=SearchOut, responses=problem_responses(401, 403, 422))
def search_identifiers(
    request: Request,
    principal: Reader,
    session: DbSession,
    q: Annotated[str, Query(max_length=200, description="words of the handle, URL or attribute values")] = "",
    prefix: Annotated[str | None, Query(max_length=255)] = None,
    template: Annotated[str | None, Query(max_length=50)] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> SearchOut:
    """Your tenant's handles matching all criteria; `attr.<name>=<value>` filters on an attribute."""
    wanted = {k[5:]: v for k, v in request.query_params.items() if k.startswith("attr.")}
    query = catalog.SearchQuery(q, prefix, template, wanted, page, page_size)
    found = catalog.search(session, query, principal)
    items = [
        SearchItem(
            handle=row.handle,
            url=catalog.url_of(row),
            template=row.template,
            attributes=row.attributes,
            updated_at=row.updated_at,
        )
        for row in found.items
    ]
    return SearchOut(
        total=found.total, total_exact=found.total_exact, page=found.page, page_size=found.page_size, items=items
    )


BATCH_BODY: dict[str, Any] = {
    "description": "A JSON array of rows, or JSON lines (one row per line).",
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "array",
                "maxItems": catalog.MAX_BATCH_ROWS,
                "items": {
                    "type": "object",
                    "required": ["handle", "url"],
                    "properties": {
                        "handle": {"type": "string"},
                        "url": {"type": "string"},
                        "values": {"type": "object", "additionalProperties": {"type": "string"}},
                        "template": {"type": "string", "enum": list(catalog.TEMPLATE_NAMES)},
                        "attributes": {"type": "object"},
                    },
                },
            },
            "example": [
                {
                    "handle": "88.118.8/P-0001",
                    "url": "https://example.com/p/0001",
                    "values": {"SERIAL": "SN-0001"},
                    "template": "part",
                    "attributes": {"part_number": "P-0001", "material": "GCr15"},
                }
            ],
        },
        "application/x-ndjson": {"schema": {"type": "string"}},
    },
}


@router.post(
    "/api/identifiers/batch",
    response_model=BatchOut,
    responses=problem_responses(401, 403, 413, 422),
    openapi_extra={"requestBody": BATCH_BODY},
)
def register_batch(request: Request, body: RequestBody, principal: Writer, session: DbSession) -> BatchOut:
    """Register many new handles at once: all rows, or none (422 lists every bad row by line)."""
    if len(body) > MAX_BATCH_BODY_BYTES:
        raise Invalid(f"the body is larger than {MAX_BATCH_BODY_BYTES // (1024 * 1024)} MiB", code="too_large")
    rows = catalog.parse_json_rows(body)
    if len(rows) > catalog.MAX_BATCH_ROWS:
        raise Invalid(f"at most {catalog.MAX_BATCH_ROWS} rows per batch; got {len(rows)}", code="batch_too_large")
    audit_object(request, "handle", f"batch of {len(rows)}")
    registered = catalog.register_batch(session, rows, principal)
    return BatchOut(registered=registered)


@router.get(ATTRIBUTES_PATH, response_model=AttributesOut, responses=problem_responses(401, 403, 404))
def get_attributes(prefix: str, suffix: str, principal: Reader, session: DbSession) -> AttributesOut:
    """A handle's template and attributes."""
    row = catalog.get_attributes(session, parse_handle(f"{prefix}/{suffix}"), principal)
    return _attributes_out(row)


@router.put(ATTRIBUTES_PATH, response_model=AttributesOut, responses=problem_responses(401, 403, 404, 422))
def put_attributes(
    prefix: str, suffix: str, body: AttributesIn, request: Request, principal: Writer, session: DbSession
) -> AttributesOut:
    """Set a handle's template and attributes; 422 names the JSON pointer of the first error."""
    name = parse_handle(f"{prefix}/{suffix}")
    audit_object(request, "handle", name.handle)
    row = catalog.set_attributes(session, name, body.template, body.attributes, principal)
    return _attributes_out(row)
