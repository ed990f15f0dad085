"""Query subscriptions of the EPCIS 2.0 REST binding: `/epcis/queries/{queryName}/subscriptions`.

Thin: parse, call `SubscriptionService`, shape. A query is named by its name or its id, as in the
query routes. Creating and deleting need `traceability.write`, reading `traceability.read`.
Deliveries are `subscription_delivery`'s; the WebSocket form is `subscription_socket`'s.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from iip.api.deps import DbSession, audit_object, get_runtime, require
from iip.api.documents import NO_NUL, TenantParam
from iip.api.problems import problem_responses
from iip.kernel.auth import Principal
from iip.kernel.sealing import Sealer
from iip.traceability.subscription_schemas import SubscriptionCreatedOut, SubscriptionIn, SubscriptionOut
from iip.traceability.subscription_socket import router as socket_router
from iip.traceability.subscriptions import SubscriptionService, subscription_sealer

router = APIRouter(prefix="/epcis", tags=["traceability"])
router.include_router(socket_router)  # the same subscriptions, streamed over a WebSocket

Reader = Annotated[Principal, Depends(require("traceability.read"))]
Writer = Annotated[Principal, Depends(require("traceability.write"))]

VERSIONS = {"GS1-EPCIS-Version": "2.0.0"}
DEFAULT_PER_PAGE = 30
MAX_PER_PAGE = 1000

QueryRef = Annotated[str, Path(min_length=1, max_length=200, pattern=NO_NUL, description="its name, or its id")]
SubscriptionRef = Annotated[str, Path(min_length=1, max_length=32, pattern=NO_NUL, description="the subscriptionID")]
PerPage = Annotated[int, Query(alias="perPage", ge=1, le=MAX_PER_PAGE)]
PageToken = Annotated[
    str | None, Query(alias="nextPageToken", max_length=2000, pattern=NO_NUL, description="from the Link header")
]


def secret_sealer(request: Request) -> Sealer:
    return subscription_sealer(get_runtime(request).settings)


SecretSealer = Annotated[Sealer, Depends(secret_sealer)]


def _location(query_name: str, subscription_id: str) -> str:
    return f"/epcis/queries/{quote(query_name, safe='')}/subscriptions/{subscription_id}"


@router.post(
    "/queries/{query_name}/subscriptions",
    status_code=201,
    response_model=SubscriptionCreatedOut,
    responses=problem_responses(400, 401, 403, 404, 422),
)
def subscribe(
    body: SubscriptionIn,
    request: Request,
    actor: Writer,
    session: DbSession,
    sealer: SecretSealer,
    query_name: QueryRef,
    tenant_id: TenantParam = None,
) -> JSONResponse:
    """Subscribe to a named query: its matching events are POSTed to `dest`, signed (header GS1-Signature).

    Give `stream: true` (as events are captured) or `scheduleSeconds`. Without `signatureToken` a
    signing key is made and answered once, in this answer. A subscription that cannot work as asked
    is refused with 400 (`epcisException:SubscriptionControlsException`).
    """
    created = SubscriptionService(session, actor).create(query_name, body.request(), sealer, tenant_id=tenant_id)
    row = created.subscription
    audit_object(request, "epcis_subscription", row.id)
    out = SubscriptionCreatedOut(
        **SubscriptionOut.of(row, created.query).model_dump(), signatureToken=created.signature_token
    )
    headers = {"Location": _location(created.query.name, row.id), **VERSIONS}
    return JSONResponse(out.answer(), status_code=201, headers=headers)


@router.get(
    "/queries/{query_name}/subscriptions",
    response_model=list[SubscriptionOut],
    responses=problem_responses(401, 403, 404, 422),
)
def list_subscriptions(
    request: Request,
    actor: Reader,
    session: DbSession,
    query_name: QueryRef,
    per_page: PerPage = DEFAULT_PER_PAGE,
    next_page_token: PageToken = None,
    tenant_id: TenantParam = None,
) -> JSONResponse:
    """The query's subscriptions, oldest first, a page at a time (a Link header names the next page)."""
    query, page = SubscriptionService(session, actor).list(query_name, next_page_token, per_page, tenant_id=tenant_id)
    headers = dict(VERSIONS)
    if page.next_page_token is not None:
        headers["Link"] = f'<{request.url.include_query_params(nextPageToken=page.next_page_token)}>; rel="next"'
    return JSONResponse([SubscriptionOut.of(row, query).answer() for row in page.subscriptions], headers=headers)


@router.get(
    "/queries/{query_name}/subscriptions/{subscription_id}",
    response_model=SubscriptionOut,
    responses=problem_responses(401, 403, 404, 422),
)
def get_subscription(
    actor: Reader,
    session: DbSession,
    query_name: QueryRef,
    subscription_id: SubscriptionRef,
    tenant_id: TenantParam = None,
) -> JSONResponse:
    """One subscription, with how its deliveries go (failed tries, last error, next try)."""
    query, row = SubscriptionService(session, actor).get(query_name, subscription_id, tenant_id=tenant_id)
    return JSONResponse(SubscriptionOut.of(row, query).answer(), headers=VERSIONS)


@router.delete(
    "/queries/{query_name}/subscriptions/{subscription_id}",
    status_code=204,
    responses=problem_responses(401, 403, 404, 422),
)
def unsubscribe(
    request: Request,
    actor: Writer,
    session: DbSession,
    query_name: QueryRef,
    subscription_id: SubscriptionRef,
    tenant_id: TenantParam = None,
) -> Response:
    """Unsubscribe: nothing more is delivered."""
    row = SubscriptionService(session, actor).delete(query_name, subscription_id, tenant_id=tenant_id)
    audit_object(request, "epcis_subscription", row.id)
    return Response(status_code=204)
