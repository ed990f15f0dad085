"""The query side of the EPCIS 2.0 REST binding under `/epcis`: events by standard query, by id and
by top-level resource (event types, EPCs, business steps, business locations, read points,
dispositions), and named queries.

Query parameters are the standard query's (`query.parse_query`), read from the query string as
they come, since several have open names (`EQ_bizTransaction_po`, `GE_value_CEL`). Event results are
EPCIS query documents: JSON-LD, or XML when `Accept` prefers `application/xml`. A result longer
than `perPage` carries a `Link: <...>; rel="next"` header and `GS1-Next-Page-Token-Expires`.
Identifiers and URIs in paths are URL-encoded by the client (`/epcis/epcs/urn%3Aepc%3A...`);
encoded slashes are accepted too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from iip.api.deps import DbSession, audit_object, require
from iip.api.documents import NO_NUL, TenantParam
from iip.api.problems import problem_responses
from iip.kernel.auth import Principal
from iip.traceability.epcis.documents import EpcisFormatError
from iip.traceability.epcis.writer import EPCIS_CONTEXT_URL, json_document, xml_document
from iip.traceability.models import Event
from iip.traceability.query import (
    MATCH_ROLES,
    EventQuery,
    QueryPage,
    parse_query,
)
from iip.traceability.query_schemas import QueryDefinitionIn, QueryDefinitionOut
from iip.traceability.query_service import RESOURCES, Members, QueryService, query_params

router = APIRouter(prefix="/epcis", tags=["traceability"])

Reader = Annotated[Principal, Depends(require("traceability.read"))]
Writer = Annotated[Principal, Depends(require("traceability.write"))]

VERSIONS = {"GS1-EPCIS-Version": "2.0.0", "GS1-CBV-Version": "2.0.0"}
SIMPLE_EVENT_QUERY = "SimpleEventQuery"
DEFAULT_PER_PAGE = 30
MAX_PER_PAGE = 1000
PAGING = frozenset({"perPage", "nextPageToken", "tenant_id"})
XML_TYPES = frozenset({"application/xml", "text/xml"})
JSON_TYPES = frozenset({"application/json", "application/ld+json", "application/*", "*/*"})

PerPage = Annotated[
    int, Query(alias="perPage", ge=1, le=MAX_PER_PAGE, description=f"events per page (at most {MAX_PER_PAGE})")
]
PageToken = Annotated[
    str | None, Query(alias="nextPageToken", max_length=2000, pattern=NO_NUL, description="from the Link header")
]
PathValue = Annotated[str, Path(min_length=1, max_length=2000, pattern=NO_NUL)]

# The standard query's parameters of fixed name, for the API description; others (EQ_bizTransaction_po,
# GE_value_CEL, ...) are taken too. Lists are repeated or separated by '|' or ','.
FIXED_PARAMETERS = (
    "eventType",
    "GE_eventTime",
    "LT_eventTime",
    "GE_recordTime",
    "LT_recordTime",
    "EQ_action",
    "EQ_bizStep",
    "EQ_disposition",
    "EQ_persistentDisposition_set",
    "EQ_persistentDisposition_unset",
    "EQ_readPoint",
    "WD_readPoint",
    "EQ_bizLocation",
    "WD_bizLocation",
    "EQ_transformationID",
    *MATCH_ROLES,
    "EQ_quantity",
    "GT_quantity",
    "GE_quantity",
    "LT_quantity",
    "LE_quantity",
    "EQ_eventID",
    "EXISTS_errorDeclaration",
    "GE_errorDeclarationTime",
    "LT_errorDeclarationTime",
    "EQ_errorReason",
    "EQ_correctiveEventID",
    "orderBy",
    "orderDirection",
    "eventCountLimit",
    "maxEventCount",
    "EQ_type",
    "EQ_deviceID",
    "EQ_stringValue",
    "EQ_booleanValue",
    "EQ_uriValue",
    "GE_time",
    "LT_time",
)
QUERY_STRING: dict[str, Any] = {
    "parameters": [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string", "maxLength": 2000}}
        for name in FIXED_PARAMETERS
    ]
}
QUERY_DOCUMENT: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "An EPCISQueryDocument holding the events (JSON-LD, or XML when asked for)",
        "content": {"application/json": {"schema": {"type": "object"}}, "application/xml": {}},
    }
}
COLLECTION: dict[int | str, dict[str, Any]] = {
    200: {"description": "A Collection of the resource's members", "content": {"application/json": {}}}
}


# --- answers


def _wants_xml(request: Request) -> bool:
    """Whether `Accept` prefers XML to JSON (ties and no preference: JSON)."""
    best = {"json": -1.0, "xml": -1.0}
    for part in request.headers.get("accept", "").split(","):
        media, *options = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for option in options:
            key, _, value = option.partition("=")
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        kind = "xml" if media.lower() in XML_TYPES else "json" if media.lower() in JSON_TYPES else None
        if kind is not None:
            best[kind] = max(best[kind], quality)
    return best["xml"] > max(best["json"], 0.0)


def _utc_text(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _item(event: Event) -> tuple[dict[str, Any], dict[str, str]]:
    """An event as answered: as captured, with the id it is stored under and the time it was recorded."""
    body = {**event.body, "eventID": event.body.get("eventID") or event.event_id}
    body["recordTime"] = _utc_text(event.record_time)
    return body, event.context


def _document(request: Request, events: Sequence[Event], query_name: str, headers: dict[str, str]) -> Response:
    items = [_item(event) for event in events]
    if _wants_xml(request):
        try:
            content = xml_document(items, query_name=query_name)
        except EpcisFormatError as err:
            raise HTTPException(406, detail=f"an event cannot be written as XML ({err}); ask for JSON") from None
        return Response(content, media_type="application/xml", headers=headers)
    return JSONResponse(json_document(items, query_name=query_name), headers=headers)


def _next_link(request: Request, token: str) -> str:
    return f'<{request.url.include_query_params(nextPageToken=token)}>; rel="next"'


def _page_headers(request: Request, token: str | None, expires: dt.datetime | None) -> dict[str, str]:
    headers = dict(VERSIONS)
    if token is not None:
        headers["Link"] = _next_link(request, token)
        if expires is not None:
            headers["GS1-Next-Page-Token-Expires"] = _utc_text(expires)
    return headers


def _page(request: Request, page: QueryPage, query_name: str = SIMPLE_EVENT_QUERY) -> Response:
    return _document(
        request, page.events, query_name, _page_headers(request, page.next_page_token, page.next_page_expires)
    )


def _collection(request: Request, members: Members) -> JSONResponse:
    body = {"@context": EPCIS_CONTEXT_URL, "type": "Collection", "member": members.members}
    return JSONResponse(body, headers=_page_headers(request, members.next_page_token, None))


def _query(request: Request) -> EventQuery:
    return parse_query(query_params(request.query_params.multi_items(), PAGING))


# --- events


@router.get(
    "/events",
    responses={**QUERY_DOCUMENT, **problem_responses(401, 403, 404, 406, 422)},
    openapi_extra=QUERY_STRING,
)
def query_events(
    request: Request,
    actor: Reader,
    session: DbSession,
    per_page: PerPage = DEFAULT_PER_PAGE,
    next_page_token: PageToken = None,
    tenant_id: TenantParam = None,
) -> Response:
    """Events matching the standard query given in the query string, a page at a time.

    A bad or unknown parameter is refused (422, code `query_parameter`, naming it); more events than
    `maxEventCount` too (code `query_too_large`); a `nextPageToken` is taken only with the
    parameters it was issued for (code `page_token`).
    """
    page = QueryService(session, actor).events(_query(request), next_page_token, per_page, tenant_id)
    return _page(request, page)


@router.get(
    "/events/{event_id:path}",
    responses={**QUERY_DOCUMENT, **problem_responses(401, 403, 404, 406, 422)},
)
def get_event(
    request: Request,
    actor: Reader,
    session: DbSession,
    event_id: Annotated[str, Path(min_length=1, max_length=500, pattern=NO_NUL)],
    tenant_id: TenantParam = None,
) -> Response:
    """One event by its `eventID` (as captured, or the event hash ID it was given), in a query document."""
    events = QueryService(session, actor).event(event_id, tenant_id)
    return _document(request, events, SIMPLE_EVENT_QUERY, dict(VERSIONS))


@router.get(
    "/epcs/{epc:path}/events",
    responses={**QUERY_DOCUMENT, **problem_responses(401, 403, 404, 406, 422)},
    openapi_extra=QUERY_STRING,
)
def epc_events(
    request: Request,
    actor: Reader,
    session: DbSession,
    epc: PathValue,
    per_page: PerPage = DEFAULT_PER_PAGE,
    next_page_token: PageToken = None,
    tenant_id: TenantParam = None,
) -> Response:
    """Events naming an EPC or EPC class (URN or Digital Link), in any role, filtered further by the query string."""
    service = QueryService(session, actor)
    query = service.epc_query(epc, _query(request), tenant_id)
    return _page(request, service.events(query, next_page_token, per_page, tenant_id))


# --- top-level resources: eventTypes, bizSteps, bizLocations, readPoints, dispositions


def _members(
    request: Request,
    session: DbSession,
    actor: Principal,
    name: str,
    token: str | None,
    per_page: int,
    tenant: str | None,
) -> JSONResponse:
    members = QueryService(session, actor).members(RESOURCES[name], token, per_page, tenant)
    return _collection(request, members)


def _member_events(
    request: Request,
    session: DbSession,
    actor: Principal,
    name: str,
    value: str,
    token: str | None,
    per_page: int,
    tenant: str | None,
) -> Response:
    service = QueryService(session, actor)
    query = service.resource_query(RESOURCES[name], value, _query(request), tenant)
    if query is None:  # the query string's own parameters exclude this member
        return _page(request, QueryPage([], None))
    return _page(request, service.events(query, token, per_page, tenant))


MEMBERS = {**COLLECTION, **problem_responses(401, 403, 422)}
EVENTS = {**QUERY_DOCUMENT, **problem_responses(401, 403, 404, 406, 422)}


@dataclass(frozen=True)
class ResourceRoutes:
    """One top-level resource's two routes: its members, and the events of one member."""

    resource: str  # a key of RESOURCES, also the path
    parameter: str  # the member's path parameter
    list_name: str  # route names give the operation ids (`traceability.<name>`)
    events_name: str
    list_doc: str
    events_doc: str


RESOURCE_ROUTES = (
    ResourceRoutes(
        "eventTypes",
        "event_type",
        "list_event_types",
        "event_type_events",
        "The event types: the five of EPCIS and any extension type the tenant's events have.",
        "Events of one type, filtered further by the query string (404 for a type no event has).",
    ),
    ResourceRoutes(
        "bizSteps",
        "biz_step",
        "list_biz_steps",
        "biz_step_events",
        "The business steps: CBV's (by bare name) and the private ones the tenant's events use.",
        "Events of one business step (bare CBV name, URN, web URI or private URI), filtered further.",
    ),
    ResourceRoutes(
        "dispositions",
        "disposition",
        "list_dispositions",
        "disposition_events",
        "The dispositions: CBV's (by bare name) and the private ones the tenant's events use.",
        "Events of one disposition, filtered further by the query string.",
    ),
    ResourceRoutes(
        "bizLocations",
        "biz_location",
        "list_biz_locations",
        "biz_location_events",
        "The business locations the tenant's events name (canonical Digital Links), in order.",
        "Events at one business location (URN or Digital Link), filtered further by the query string.",
    ),
    ResourceRoutes(
        "readPoints",
        "read_point",
        "list_read_points",
        "read_point_events",
        "The read points the tenant's events name (canonical Digital Links), in order.",
        "Events read at one read point (URN or Digital Link), filtered further by the query string.",
    ),
)


def _add_resource_routes(routes: ResourceRoutes) -> None:
    name = routes.resource

    def list_members(
        request: Request,
        actor: Reader,
        session: DbSession,
        per_page: PerPage = DEFAULT_PER_PAGE,
        next_page_token: PageToken = None,
        tenant_id: TenantParam = None,
    ) -> JSONResponse:
        return _members(request, session, actor, name, next_page_token, per_page, tenant_id)

    def member_events(
        request: Request,
        actor: Reader,
        session: DbSession,
        value: PathValue,
        per_page: PerPage = DEFAULT_PER_PAGE,
        next_page_token: PageToken = None,
        tenant_id: TenantParam = None,
    ) -> Response:
        return _member_events(request, session, actor, name, value, next_page_token, per_page, tenant_id)

    # The path parameter keeps the resource's own name (`biz_step`, ...) in the OpenAPI document.
    member_events.__annotations__["value"] = Annotated[
        str, Path(alias=routes.parameter, min_length=1, max_length=2000, pattern=NO_NUL)
    ]

    router.add_api_route(
        f"/{name}", list_members, methods=["GET"], name=routes.list_name, description=routes.list_doc, responses=MEMBERS
    )
    router.add_api_route(
        f"/{name}/{{{routes.parameter}:path}}/events",
        member_events,
        methods=["GET"],
        name=routes.events_name,
        description=routes.events_doc,
        responses=EVENTS,
        openapi_extra=QUERY_STRING,
    )


for _routes in RESOURCE_ROUTES:
    _add_resource_routes(_routes)


# --- named queries


@router.post(
    "/queries",
    status_code=201,
    response_model=QueryDefinitionOut,
    responses=problem_responses(401, 403, 404, 409, 422),
)
def create_query(
    body: QueryDefinitionIn, request: Request, actor: Writer, session: DbSession, tenant_id: TenantParam = None
) -> JSONResponse:
    """Store a named query (its parameters are checked as a query would be); Location names it."""
    row = QueryService(session, actor).create_query(body.name, body.query, body.description, tenant_id=tenant_id)
    audit_object(request, "named_query", row.id)
    headers = {"Location": f"/epcis/queries/{quote(row.name, safe='')}", **VERSIONS}
    return JSONResponse(QueryDefinitionOut.of(row).model_dump(mode="json"), status_code=201, headers=headers)


@router.get("/queries", response_model=list[QueryDefinitionOut], responses=problem_responses(401, 403, 422))
def list_queries(
    request: Request,
    actor: Reader,
    session: DbSession,
    per_page: PerPage = DEFAULT_PER_PAGE,
    next_page_token: PageToken = None,
    tenant_id: TenantParam = None,
) -> JSONResponse:
    """The named queries, by name, a page at a time."""
    page = QueryService(session, actor).named_queries(next_page_token, per_page, tenant_id)
    body = [QueryDefinitionOut.of(row).model_dump(mode="json") for row in page.queries]
    return JSONResponse(body, headers=_page_headers(request, page.next_page_token, None))


QueryRef = Annotated[str, Path(min_length=1, max_length=200, pattern=NO_NUL, description="its name, or its id")]


@router.get("/queries/{query_name}", response_model=QueryDefinitionOut, responses=problem_responses(401, 403, 404, 422))
def get_query(actor: Reader, session: DbSession, query_name: QueryRef, tenant_id: TenantParam = None) -> JSONResponse:
    """A named query's definition."""
    row = QueryService(session, actor).named_query(query_name, tenant_id)
    return JSONResponse(QueryDefinitionOut.of(row).model_dump(mode="json"), headers=VERSIONS)


@router.delete("/queries/{query_name}", status_code=204, responses=problem_responses(401, 403, 404, 422))
def delete_query(
    request: Request, actor: Writer, session: DbSession, query_name: QueryRef, tenant_id: TenantParam = None
) -> Response:
    """Remove a named query, and with it its subscriptions."""
    row = QueryService(session, actor).delete_query(query_name, tenant_id)
    audit_object(request, "named_query", row.id)
    return Response(status_code=204)


@router.get("/queries/{query_name}/events", responses={**QUERY_DOCUMENT, **problem_responses(401, 403, 404, 406, 422)})
def named_query_events(
    request: Request,
    actor: Reader,
    session: DbSession,
    query_name: QueryRef,
    per_page: PerPage = DEFAULT_PER_PAGE,
    next_page_token: PageToken = None,
    tenant_id: TenantParam = None,
) -> Response:
    """A page of a named query's result, in a query document named after it."""
    row, page = QueryService(session, actor).run_named(query_name, next_page_token, per_page, tenant_id)
    return _page(request, page, row.name)
