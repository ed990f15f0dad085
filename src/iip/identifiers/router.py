"""HANDLE.NET v9-compatible JSON REST API: `/api/handles/{prefix}/{suffix}`, listing, prefixes.

Answers in the Handle API's own JSON (`responseCode`, `handle`, `values`, `message`) with the HTTP
statuses HANDLE.NET uses, since Handle clients such as pyhandle branch on both; the rest of IIP
answers problem+json. Callers authenticate with HTTP Basic as a handle identity
(`300%3A0.NA%2F88.118.8` : secret) or with an IIP API key; public values need no authentication.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from iip.api.deps import DbSession, audit_object, authenticate
from iip.identifiers.codec import (
    MAX_INDEX,
    AuthenticationNeeded,
    HandleProblem,
    InvalidValue,
    NotAuthorized,
    ResponseCode,
    parse_handle,
    parse_values,
)
from iip.identifiers.delegation import ServiceReferral
from iip.identifiers.schemas import HANDLE_VALUES_BODY, HandleListOut, HandleRecordOut, PrefixListOut
from iip.identifiers.service import Caller, HandleService
from iip.identifiers.signing import answer_signature
from iip.kernel.auth import Principal, Role
from iip.kernel.errors import DomainError, Forbidden, Unauthenticated

router = APIRouter(tags=["handles"])

MAX_BODY_BYTES = 8 * 1024 * 1024
HANDLE_PATH = "/api/handles/{prefix}/{suffix:path}"
HANDLE_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": HandleRecordOut, "description": description}
    for status, description in (
        (400, "invalid handle (102) or value (202), values not found (200)"),
        (401, "authentication needed (402)"),
        (403, "not authorized (400)"),
        (404, "handle not found (100), prefix not homed here (301)"),
        (307, "the prefix is delegated to another node (302): `Location` and `referral` name it"),
        (409, "handle (101) or value (201) already exists"),
    )
}


def handle_json(status: int, response_code: int, **fields: Any) -> JSONResponse:
    body: dict[str, Any] = {"responseCode": response_code}
    body.update({k: v for k, v in fields.items() if v is not None})
    headers = {"WWW-Authenticate": 'Basic realm="handle"'} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def problem_json(err: DomainError, handle: str | None) -> JSONResponse:
    if isinstance(err, HandleProblem):
        status, code = err.http_status, int(err.response_code)
    elif isinstance(err, Unauthenticated):
        status, code = 401, int(ResponseCode.AUTHENTICATION_NEEDED)
    elif isinstance(err, Forbidden):
        status, code = 403, int(ResponseCode.NOT_AUTHORIZED)
    else:
        status, code = 400, int(ResponseCode.ERROR)
    return handle_json(status, code, handle=handle, message=err.message)


@dataclass(frozen=True)
class Credentials:
    """Who is calling, or why their credentials were refused (answered in the Handle API's shape)."""

    caller: Caller
    refusal: DomainError | None = None

    def get(self) -> Caller:
        if self.refusal is not None:
            raise self.refusal
        return self.caller


def basic_identity(request: Request, session: Session, credentials: str) -> Credentials:
    """HTTP Basic as a handle identity: user `index:handle` (percent-encoded), password its secret."""
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return Credentials(None, AuthenticationNeeded("malformed Basic credentials"))
    username, _, secret = decoded.partition(":")
    if username.isdigit():  # `index:handle:secret` sent without percent-encoding the user name
        handle, _, secret = secret.partition(":")
        username = f"{username}:{handle}"
    try:
        identity = HandleService(session).authenticate(username, secret)
    except DomainError as err:
        return Credentials(None, err)
    # For the audit trail of writes; an identity's rights come from HS_ADMIN values, not this role.
    label = str(identity.reference)
    request.state.principal = Principal("handle", label, label, identity.tenant_id, Role.VIEWER)
    return Credentials(identity)


def handle_credentials(request: Request, session: DbSession) -> Credentials:
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "basic":
        return basic_identity(request, session, credentials)
    if not header and not request.cookies:
        return Credentials(None)
    try:
        return Credentials(authenticate(request, session))
    except Unauthenticated as err:
        # A stale console cookie alone resolves anonymously, as for any other visitor.
        return Credentials(None, AuthenticationNeeded(err.message) if header else None)
    except Forbidden as err:
        return Credentials(None, NotAuthorized(err.message))


CallerCredentials = Annotated[Credentials, Depends(handle_credentials)]


async def request_body(request: Request) -> bytes:
    return await request.body()


RequestBody = Annotated[bytes, Depends(request_body)]


def parse_indexes(raw: list[str], *, allow_various: bool = False) -> list[int] | None:
    """`index=` values; None for `various` (the indexes of the values sent)."""
    indexes: list[int] = []
    for item in raw:
        if allow_various and item.lower() == "various":
            return None
        if not item.isdigit() or not 0 < int(item) <= MAX_INDEX:
            raise InvalidValue(f"invalid index '{item[:20]}'")
        indexes.append(int(item))
    return indexes


def decode_body(body: bytes) -> Any:
    if len(body) > MAX_BODY_BYTES:
        raise InvalidValue(f"the request entity is larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidValue("the request entity is not JSON") from None


TypeQuery = Annotated[list[str], Query(alias="type", max_length=50, description="type (or `TYPE.` subtypes)")]
IndexQuery = Annotated[list[str], Query(alias="index", max_length=50, description="index (PUT: or `various`)")]
AuthQuery = Annotated[bool, Query(alias="auth", description="authoritative resolution (always, here)")]


@router.get(HANDLE_PATH, response_model=HandleRecordOut, responses=HANDLE_RESPONSES)
def resolve_handle(
    prefix: str,
    suffix: str,
    request: Request,
    credentials: CallerCredentials,
    session: DbSession,
    types: TypeQuery = [],  # noqa: B006 - FastAPI copies defaults
    index: IndexQuery = [],  # noqa: B006
    public_only: Annotated[bool | None, Query(alias="publicOnly")] = None,
    authoritative: AuthQuery = False,
    signed: Annotated[bool, Query(description="add the node's Ed25519 `signature` over the values answered")] = False,
) -> JSONResponse:
    """Resolve a handle: all values, or those of the given `type`s and `index`es.

    A handle under a prefix delegated to another node answers 307 (responseCode 302) with a `Location`
    on that node and the `referral`: the prefix handle's values (HS_SITE, HS_PUBKEY) and signature.
    """
    handle = f"{prefix}/{suffix}"
    try:
        name = parse_handle(handle)
        indexes = parse_indexes(index) or []
        result = HandleService(session).resolve(
            name, credentials.get(), types=types, indexes=indexes, public_only=public_only
        )
    except ServiceReferral as ref:
        return referral_json(ref, handle, request)
    except DomainError as err:
        return problem_json(err, handle)
    values = [v.to_wire() for v in result.values]
    signature = None
    if signed and not types and not indexes and result.row is not None:
        signature = answer_signature(session, result.row, values)
    if not values:
        return handle_json(200, ResponseCode.VALUES_NOT_FOUND, handle=result.handle, values=[], signature=signature)
    return handle_json(200, ResponseCode.SUCCESS, handle=result.handle, values=values, signature=signature)


def referral_json(ref: ServiceReferral, handle: str, request: Request) -> JSONResponse:
    """307 to the same resolution on the node homing the prefix; the body says why, Handle-style."""
    location = f"{ref.referral.node_url}/api/handles/{quote(handle, safe='/')}"
    if request.url.query:
        location += f"?{request.url.query}"
    response = handle_json(307, ref.response_code, handle=handle, message=ref.message, referral=ref.referral.to_wire())
    response.headers["Location"] = location
    return response


@router.put(
    HANDLE_PATH,
    response_model=HandleRecordOut,
    responses={201: {"model": HandleRecordOut, "description": "created"}, **HANDLE_RESPONSES},
    openapi_extra={"requestBody": HANDLE_VALUES_BODY},
)
def put_handle(
    prefix: str,
    suffix: str,
    request: Request,
    credentials: CallerCredentials,
    session: DbSession,
    body: RequestBody,
    index: IndexQuery = [],  # noqa: B006
    overwrite: Annotated[bool | None, Query()] = None,
    mint_new_suffix: Annotated[bool, Query(alias="mintNewSuffix")] = False,
) -> JSONResponse:
    """Create or replace a handle record; with `index`, add or replace only those values.

    `overwrite=false` refuses an existing handle (409, 101) or value (409, 201); unset means true.
    `mintNewSuffix=true` appends a new unique suffix to the handle given (which may end in `/`).
    """
    handle = f"{prefix}/{suffix}"
    audit_object(request, "handle", handle)
    try:
        name = parse_handle(handle, allow_empty_suffix=mint_new_suffix)
        caller = credentials.get()
        values = parse_values(decode_body(body))
        indexes = parse_indexes(index, allow_various=True) if index else None
        if index and indexes is None:
            indexes = [v.index for v in values]
        result = HandleService(session).put(
            name, values, caller, indexes=indexes, overwrite=overwrite is not False, mint=mint_new_suffix
        )
    except DomainError as err:
        session.rollback()
        return problem_json(err, handle)
    audit_object(request, "handle", result.handle)
    created = result.created and (overwrite is False or mint_new_suffix)
    return handle_json(201 if created else 200, ResponseCode.SUCCESS, handle=result.handle)


@router.delete(HANDLE_PATH, response_model=HandleRecordOut, responses=HANDLE_RESPONSES)
def delete_handle(
    prefix: str,
    suffix: str,
    request: Request,
    credentials: CallerCredentials,
    session: DbSession,
    index: IndexQuery = [],  # noqa: B006
) -> JSONResponse:
    """Delete a handle, or only the values at the given `index`es."""
    handle = f"{prefix}/{suffix}"
    audit_object(request, "handle", handle)
    try:
        name = parse_handle(handle)
        caller = credentials.get()
        indexes = parse_indexes(index)
        deleted = HandleService(session).delete(name, caller, indexes=indexes or None)
    except DomainError as err:
        session.rollback()
        return problem_json(err, handle)
    return handle_json(200, ResponseCode.SUCCESS, handle=deleted)


@router.get("/api/handles", response_model=HandleListOut, responses=HANDLE_RESPONSES)
def list_handles(
    credentials: CallerCredentials,
    session: DbSession,
    prefix: Annotated[str | None, Query(max_length=255)] = None,
    page: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    page_size: Annotated[int, Query(alias="pageSize", ge=1, le=10_000)] = 1000,
) -> JSONResponse:
    """The handles under a prefix, a page at a time (zero-based `page`)."""
    if not prefix:
        return handle_json(400, ResponseCode.INVALID_HANDLE, message="the prefix parameter is required")
    try:
        result = HandleService(session).list_handles(prefix, credentials.get(), page=page, page_size=page_size)
    except DomainError as err:
        return problem_json(err, None)
    return handle_json(
        200,
        ResponseCode.SUCCESS,
        prefix=result.prefix,
        totalCount=str(result.total),
        page=result.page,
        pageSize=result.page_size,
        handles=result.handles,
    )


@router.get("/api/prefixes", response_model=PrefixListOut, responses=HANDLE_RESPONSES)
def list_prefixes(credentials: CallerCredentials, session: DbSession) -> JSONResponse:
    """Prefixes homed here that you can see: your tenant's, or all for platform operators."""
    try:
        caller = credentials.get()
        prefixes = HandleService(session).list_prefixes(caller)
    except DomainError as err:
        return problem_json(err, None)
    return handle_json(200, ResponseCode.SUCCESS, prefixes=[p.prefix for p in prefixes])
