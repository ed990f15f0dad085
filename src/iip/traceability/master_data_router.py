"""`/api/traceability/masterdata`: the EPCIS master data a tenant captured, by vocabulary type or one element.

The EPCIS 2.0 REST binding captures master data in a document's header (`epcisHeader`) but has no
resource to read it back (`/bizLocations/{bizLocation}` lists sub-resources, at least `events`), so
this small read API is IIP's own. Errors are the platform's problem+json.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse

from iip.api.deps import DbSession, require
from iip.api.documents import NO_NUL, TenantParam
from iip.api.problems import problem_responses
from iip.kernel.auth import Principal
from iip.traceability.master_data import MasterDataService
from iip.traceability.schemas import MasterDataElementOut

router = APIRouter(prefix="/api/traceability/masterdata", tags=["traceability"])

Reader = Annotated[Principal, Depends(require("traceability.read"))]
VocabularyType = Annotated[
    str | None,
    Query(
        alias="type",
        max_length=300,
        pattern=NO_NUL,
        description="a vocabulary type URI, or a bare EPCIS vtype name such as BusinessLocation",
        examples=["BusinessLocation"],
    ),
]


@router.get("", response_model=list[MasterDataElementOut], responses=problem_responses(401, 403, 422))
def list_master_data(
    request: Request,
    principal: Reader,
    session: DbSession,
    vocabulary_type: VocabularyType = None,
    per_page: Annotated[int, Query(alias="perPage", ge=1, le=1000)] = 30,
    next_page_token: Annotated[str | None, Query(alias="nextPageToken", max_length=200, pattern=NO_NUL)] = None,
    tenant_id: TenantParam = None,
) -> JSONResponse:
    """The tenant's vocabulary elements, oldest first; a `Link: <...>; rel="next"` while there are more."""
    page = MasterDataService(session, principal).elements(
        vocabulary_type, per_page=per_page, page_token=next_page_token, tenant_id=tenant_id
    )
    content = [MasterDataElementOut.of(row).model_dump(mode="json", by_alias=True) for row in page.elements]
    headers = {}
    if page.next_token:
        headers["Link"] = f'<{request.url.include_query_params(nextPageToken=page.next_token)}>; rel="next"'
    return JSONResponse(content, headers=headers)


@router.get(
    "/{element_id:path}", response_model=MasterDataElementOut, responses=problem_responses(401, 403, 404, 409, 422)
)
def get_master_data(
    element_id: Annotated[str, Path(max_length=500, pattern=NO_NUL, description="an EPC URN, Digital Link or URI")],
    principal: Reader,
    session: DbSession,
    vocabulary_type: VocabularyType = None,
    tenant_id: TenantParam = None,
) -> JSONResponse:
    """One element by its id (in any form that names it: a URN finds what a Digital Link captured).
    409 `ambiguous_element` when several vocabularies hold it and `type` names none."""
    row = MasterDataService(session, principal).element(element_id, vocabulary_type, tenant_id=tenant_id)
    return JSONResponse(MasterDataElementOut.of(row).model_dump(mode="json", by_alias=True))
