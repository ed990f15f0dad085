"""GS1-Conformant resolver at the root of the host, the tenant's GS1 links, and QR labels.

The resolver routes (`/01/{gtin}`, `/00/{sscc}`, ...) and `/.well-known/gs1resolver` are public;
`/api/gs1/links` needs `identifiers.read` / `identifiers.write`, `/api/labels` `identifiers.read`.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse, RedirectResponse

from iip.api.deps import DbSession, audit_object, get_runtime, require
from iip.api.problems import problem, problem_responses
from iip.identifiers import codes
from iip.identifiers.gs1 import codec
from iip.identifiers.gs1.schemas import Gs1LinkCreate, Gs1LinkOut, ResolverDescription, ResolverLinkType
from iip.identifiers.gs1.service import (
    DEFAULT_REQUESTS,
    GS1_VOC,
    LINKSET_REQUESTS,
    ExtraLinks,
    Gs1LinkService,
    language_preferences,
    linkset_document,
)
from iip.identifiers.public import ExtraLink, extra_links
from iip.kernel.auth import Principal
from iip.kernel.errors import Invalid

router = APIRouter(tags=["gs1"])

ReadAccess = Annotated[Principal, Depends(require("identifiers.read"))]
WriteAccess = Annotated[Principal, Depends(require("identifiers.write"))]

LINKSET_JSON = "application/linkset+json"
LINKSET_CONTEXT = "https://ref.gs1.org/standards/resolver/linkset-context"
LINKSET_MEDIA_TYPES = frozenset({LINKSET_JSON, "application/json"})


def _service(session: DbSession) -> Gs1LinkService:
    return Gs1LinkService(session)


Service = Annotated[Gs1LinkService, Depends(_service)]


def resolver_root(request: Request) -> str:
    return str(request.base_url).rstrip("/")


# --- links ------------------------------------------------------------------------------------


@router.get("/api/gs1/links", response_model=list[Gs1LinkOut], responses=problem_responses(401, 403, 422))
def list_links(
    actor: ReadAccess,
    service: Service,
    gs1_key: Annotated[str | None, Query(max_length=300, description="e.g. `01/09506000134352`")] = None,
    qualifiers: Annotated[str | None, Query(max_length=300)] = None,
    link_type: Annotated[str | None, Query(max_length=100)] = None,
    handle: Annotated[str | None, Query(max_length=600, description="Links of an IIP identifier")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> list[Gs1LinkOut]:
    """Your tenant's GS1 links (all tenants' for platform operators), filtered."""
    rows = service.list_links(
        actor,
        gs1_key=gs1_key,
        qualifiers=qualifiers,
        link_type=link_type,
        handle=handle,
        limit=limit,
        offset=offset,
    )
    return [Gs1LinkOut.model_validate(r) for r in rows]


@router.post(
    "/api/gs1/links",
    response_model=Gs1LinkOut,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(401, 403, 409, 422),
)
def create_link(body: Gs1LinkCreate, actor: WriteAccess, service: Service, request: Request) -> Gs1LinkOut:
    """Link a GS1 key (and optional qualifiers) to a target. The first link of a key is its default."""
    link = service.create(actor, **body.model_dump())
    audit_object(request, "gs1_link", str(link.id))
    return Gs1LinkOut.model_validate(link)


@router.get("/api/gs1/links/{link_id}", response_model=Gs1LinkOut, responses=problem_responses(401, 403, 404))
def get_link(link_id: str, actor: ReadAccess, service: Service) -> Gs1LinkOut:
    return Gs1LinkOut.model_validate(service.get(link_id, actor))


@router.delete("/api/gs1/links/{link_id}", response_model=Gs1LinkOut, responses=problem_responses(401, 403, 404))
def delete_link(link_id: str, actor: WriteAccess, service: Service, request: Request) -> Gs1LinkOut:
    audit_object(request, "gs1_link", link_id)
    return Gs1LinkOut.model_validate(service.delete(link_id, actor))


# --- labels -----------------------------------------------------------------------------------


@router.get(
    "/api/labels",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}, "image/svg+xml": {}}, "description": "the QR label"},
        **problem_responses(401, 403, 422),
    },
)
def label(
    actor: ReadAccess,
    request: Request,
    target: Annotated[
        str, Query(min_length=1, max_length=1000, description="Identifier, Digital Link or element string")
    ],
    format: Annotated[codes.LabelFormat, Query(description="png or svg")] = codes.LabelFormat.PNG,
    scale: Annotated[int, Query(ge=1, le=20)] = 4,
    caption: Annotated[bool, Query(description="Print the content under the symbol (SVG only)")] = False,
) -> Response:
    """A QR label; GS1 targets are encoded as Digital Links on this resolver."""
    image = codes.label(target, label_format=format, scale=scale, caption=caption, root=resolver_root(request))
    return Response(image.data, media_type=image.media_type)


# --- resolver ---------------------------------------------------------------------------------


@router.get("/.well-known/gs1resolver", response_model=ResolverDescription)
def resolver_description(request: Request) -> ResolverDescription:
    """The resolver description file of the GS1-Conformant resolver standard."""
    return ResolverDescription(
        name="IIP GS1-Conformant resolver",
        resolverRoot=resolver_root(request),
        supportedPrimaryKeys=[key.ai for key in codec.PRIMARY_KEYS],
        supportedLinkType=[ResolverLinkType(namespace=GS1_VOC, prefix="gs1:")],
        linkTypeDefaultCanBeLinkset=False,
    )


def _wants_linkset(request: Request, link_type: str | None) -> bool:
    if link_type in LINKSET_REQUESTS:
        return True
    if link_type and link_type not in DEFAULT_REQUESTS:
        return False  # an explicit link type asks for that link, whatever the Accept header says
    accepted = {part.split(";")[0].strip().lower() for part in request.headers.get("accept", "").split(",")}
    return bool(accepted & LINKSET_MEDIA_TYPES)


def _extra_links(request: Request, session: DbSession, digital_link: codec.DigitalLink, root: str) -> ExtraLinks:
    """Other contexts' links for the key (see `identifiers.public`), their paths made absolute on this host."""
    runtime = get_runtime(request)

    def gather(tenant_id: str) -> list[ExtraLink]:
        found = extra_links(runtime, session, digital_link.uri(attributes=False), tenant_id)
        return [replace(e, href=root + e.href) if e.href.startswith("/") else e for e in found]

    return gather


def resolve(request: Request, session: DbSession, link_type: str | None) -> Response:
    """Answer a Digital Link: 307 to the chosen link, or the linkset; 400 if malformed, 404 if unknown."""
    # The raw path keeps %2F inside values, so a '/' in a serial stays in its segment.
    raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode()
    query = request.url.query
    try:
        digital_link = codec.parse_digital_link(raw_path.decode("utf-8", "replace") + (f"?{query}" if query else ""))
    except Invalid as err:
        return problem(400, err.instance_code, "Malformed GS1 Digital Link", err.message, instance=request.url.path)
    root = resolver_root(request)
    wants_linkset = _wants_linkset(request, link_type)
    resolution = Gs1LinkService(session).resolve(
        digital_link,
        link_type=link_type,
        languages=language_preferences(request.headers.get("accept-language")),
        extra_links=_extra_links(request, session, digital_link, root),
        linkset=wants_linkset,
    )
    anchor = digital_link.uri(root, attributes=False)
    headers = {
        "Vary": "Accept, Accept-Language",
        "Link": ", ".join(
            (
                f'<{anchor}?linkType=linkset>; rel="linkset"; type="{LINKSET_JSON}"',
                f'<{digital_link.uri(attributes=False)}>; rel="owl:sameAs"',
            )
        ),
    }
    if wants_linkset:
        headers["Link"] += (
            f', <{LINKSET_CONTEXT}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
        )
        return JSONResponse(linkset_document(anchor, resolution), media_type=LINKSET_JSON, headers=headers)
    # Data attributes and other parameters travel on to the target; linkType was for us.
    passed_on = codec.query_without(query, "linkType")
    href = resolution.target.href
    if passed_on:
        href += ("&" if "?" in href else "?") + passed_on
    return RedirectResponse(href, status_code=status.HTTP_307_TEMPORARY_REDIRECT, headers=headers)


LinkTypeQuery = Annotated[
    str | None,
    Query(
        alias="linkType",
        max_length=200,
        description="A link type such as `gs1:pip`, or `linkset` / `all` for every link as an RFC 9264 linkset",
    ),
]
RESOLVER_RESPONSES: dict[int | str, dict[str, Any]] = {
    307: {"description": "redirect to the chosen link"},
    200: {"content": {LINKSET_JSON: {}}, "description": "the linkset (linkType=linkset or Accept: linkset)"},
    **problem_responses(400, 404, 422),
}


def _resolver_endpoint(key: codec.PrimaryKey, *, with_qualifiers: bool) -> Callable[..., Response]:
    def endpoint(request: Request, session: DbSession, link_type: LinkTypeQuery = None, **_path: str) -> Response:
        return resolve(request, session, link_type)

    # FastAPI reads parameters from the signature; name the path parameters after the key.
    parameters = [
        inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
        inspect.Parameter("session", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=DbSession),
        inspect.Parameter(
            key.name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[str, Path(max_length=100, description=f"the {key.title}")],
        ),
    ]
    if with_qualifiers:
        parameters.append(
            inspect.Parameter(
                "qualifiers",
                inspect.Parameter.KEYWORD_ONLY,
                annotation=Annotated[
                    str,
                    Path(
                        max_length=300,
                        description=f"key qualifiers: {', '.join(key.qualifiers) or 'none'}, in this order",
                    ),
                ],
            )
        )
    parameters.append(
        inspect.Parameter("link_type", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=LinkTypeQuery)
    )
    endpoint.__signature__ = inspect.Signature(parameters, return_annotation=Response)  # type: ignore[attr-defined]
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", key.name).lower()  # operation ids are snake_case: payTo -> pay_to
    endpoint.__name__ = f"resolve_{snake}{'_qualified' if with_qualifiers else ''}"
    return endpoint


def _add_resolver_routes(key: codec.PrimaryKey) -> None:
    summary = f"Resolve a {key.title}"
    # The qualifier route exists for keys without qualifiers too, so a stray segment is a 400 saying why.
    for path, with_qualifiers, title in (
        (f"/{key.ai}/{{{key.name}}}", False, summary),
        (f"/{key.ai}/{{{key.name}}}/{{qualifiers:path}}", True, f"{summary} with key qualifiers"),
    ):
        endpoint = _resolver_endpoint(key, with_qualifiers=with_qualifiers)
        options: dict[str, Any] = {"response_class": Response, "responses": RESOLVER_RESPONSES, "summary": title}
        router.add_api_route(path, endpoint, methods=["GET"], **options)
        # HEAD answers as GET does; kept out of the schema, where it would repeat the GET operation.
        router.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False, **options)


for _key in codec.PRIMARY_KEYS:
    _add_resolver_routes(_key)
