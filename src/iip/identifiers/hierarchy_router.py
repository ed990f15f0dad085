"""The node's place in the hierarchy, delegations to child nodes, and recursive resolution.

`GET /api/resolve/{handle}` answers in the Handle API's JSON (with `node`, `keyId`, `fromCache`
and `referrals` added), as `/api/handles` does, since the same clients read both; delegations are
ordinary IIP resources and answer problem+json.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from iip.api.deps import DbSession, audit_object, get_runtime, get_settings, require
from iip.api.problems import problem_responses
from iip.identifiers.codec import DEFAULT_TTL, MAX_INDEX, HandleProblem, ResponseCode, parse_handle, select_values
from iip.identifiers.codec import load_values as load_wire_values
from iip.identifiers.delegation import DelegationService, parse_public_key
from iip.identifiers.models import Prefix
from iip.identifiers.resolver import RecursiveResolver
from iip.identifiers.router import IndexQuery, TypeQuery, handle_json, parse_indexes
from iip.identifiers.signing import ALGORITHM, load_node_key
from iip.identifiers.upstream import build_resolver, fetch_node_key
from iip.kernel.auth import Principal
from iip.kernel.errors import DomainError, Unavailable
from iip.kernel.settings import NodeRole, Settings

router = APIRouter(tags=["hierarchy"])

SettingsDep = Annotated[Settings, Depends(get_settings)]
Reader = Annotated[Principal, Depends(require("identifiers.read"))]
Operator = Annotated[Principal, Depends(require("platform.write"))]


class NodeOut(BaseModel):
    role: NodeRole
    base_url: str = Field(description="as other nodes reach this one; empty when not configured")
    root_url: str = Field(description="where this node's resolver starts; empty: at this node")
    algorithm: str = Field(examples=[ALGORITHM])
    key_id: str
    public_key: str = Field(description="the raw 32-byte Ed25519 key records here are signed with, base64")


@router.get("/api/node", responses=problem_responses(503))
def node_info(settings: SettingsDep) -> NodeOut:
    """This node: its role in the hierarchy, its URLs, and its signing key."""
    key = load_node_key(settings)
    ids = settings.identifiers
    public_key = base64.b64encode(key.public_bytes).decode()
    return NodeOut(
        role=ids.role,
        base_url=ids.base_url,
        root_url=ids.root_url,
        algorithm=ALGORITHM,
        key_id=key.key_id,
        public_key=public_key,
    )


# --- delegations


class DelegationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prefix: str = Field(min_length=1, max_length=255, examples=["88.118.8"])
    node_url: str = Field(min_length=8, max_length=500, examples=["https://idis.example.com"])
    public_key: str | None = Field(
        default=None,
        max_length=100,
        description="the child node's raw Ed25519 key, base64; fetched from its /api/node/key when left out",
    )
    ttl: int = Field(default=DEFAULT_TTL, ge=0, le=MAX_INDEX, description="TTL of the HS_SITE and HS_PUBKEY values")
    tenant_id: str | None = Field(default=None, max_length=32, description="the owning tenant; default yours")


class DelegationOut(BaseModel):
    prefix: str
    tenant_id: str
    node_url: str
    key_id: str
    public_key: str
    ttl: int
    created_at: dt.datetime
    updated_at: dt.datetime


def delegation_out(service: DelegationService, record: Prefix) -> DelegationOut:
    delegation = service.delegation(record)
    return DelegationOut(
        prefix=record.prefix,
        tenant_id=record.tenant_id,
        node_url=record.node_url,
        key_id=hashlib.sha256(delegation.public_key).hexdigest()[:16],
        public_key=base64.b64encode(delegation.public_key).decode(),
        ttl=delegation.ttl,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


@router.get("/api/delegations", responses=problem_responses(401, 403))
def list_delegations(actor: Reader, session: DbSession) -> list[DelegationOut]:
    """Prefixes delegated from this node to the nodes homing them (your tenant's; operators: all)."""
    service = DelegationService(session)
    return [delegation_out(service, record) for record in service.all(actor)]


@router.post("/api/delegations", status_code=201, responses=problem_responses(401, 403, 409, 422, 503))
def delegate(
    body: DelegationIn, actor: Operator, session: DbSession, settings: SettingsDep, request: Request
) -> DelegationOut:
    """Delegate a prefix to a child node, or update its delegation (a new URL, or the key after a rotation)."""
    audit_object(request, "prefix", body.prefix)
    ids = settings.identifiers
    node_url = body.node_url.rstrip("/")
    public_key = (
        parse_public_key(body.public_key) if body.public_key else fetch_node_key(node_url, timeout=ids.resolver_timeout)
    )
    service = DelegationService(session)
    record = service.delegate(
        body.tenant_id or actor.tenant_id, body.prefix, node_url, public_key, role=ids.role, actor=actor, ttl=body.ttl
    )
    return delegation_out(service, record)


@router.get("/api/delegations/{prefix}", responses=problem_responses(401, 403, 404))
def get_delegation(prefix: str, actor: Reader, session: DbSession) -> DelegationOut:
    service = DelegationService(session)
    return delegation_out(service, service.get(prefix, actor))


@router.delete("/api/delegations/{prefix}", status_code=204, responses=problem_responses(401, 403, 404))
def undelegate(prefix: str, actor: Reader, session: DbSession, request: Request) -> None:
    """Withdraw a delegation: the prefix handle goes, and the node no longer refers to the child."""
    audit_object(request, "prefix", prefix)
    DelegationService(session).undelegate(prefix, actor=actor)


# --- recursive resolution


def resolver_for(request: Request) -> RecursiveResolver:
    """One resolver (and cache) per app, made on first use."""
    state = request.app.state
    resolver: RecursiveResolver | None = getattr(state, "identifiers_resolver", None)
    if resolver is None:
        runtime = get_runtime(request)
        resolver = build_resolver(runtime.settings, runtime.db)
        state.identifiers_resolver = resolver
    return resolver


RESOLVE_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "invalid handle (102)"},
    404: {"description": "handle not found (100)"},
    502: {"description": "a node is unreachable, answered nonsense, or its signature failed (`code` says which)"},
}


@router.get("/api/resolve/{handle:path}", responses=RESOLVE_RESPONSES)
async def resolve_recursively(
    handle: str,
    request: Request,
    types: TypeQuery = [],  # noqa: B006 - FastAPI copies defaults
    index: IndexQuery = [],  # noqa: B006
) -> JSONResponse:
    """Resolve a handle from the root down, following referrals; signatures checked, answers cached."""
    try:
        name = parse_handle(handle)
        indexes = parse_indexes(index) or []
        result = await resolver_for(request).resolve(name)
    except DomainError as err:
        return resolution_problem(err, handle)
    values = [v.to_wire() for v in select_values(load_wire_values(result.values), types, indexes)]
    return handle_json(
        200,
        ResponseCode.SUCCESS if values else ResponseCode.VALUES_NOT_FOUND,
        handle=result.handle,
        values=values,
        node=result.node,
        keyId=result.key_id,
        fromCache=result.from_cache,
        referrals=[{"prefix": hop.prefix, "node": hop.node} for hop in result.referrals],
    )


def resolution_problem(err: DomainError, handle: str) -> JSONResponse:
    if isinstance(err, HandleProblem):
        status, code = err.http_status, int(err.response_code)
    elif isinstance(err, Unavailable):
        status, code = 503, int(ResponseCode.ERROR)
    else:
        status, code = 400, int(ResponseCode.ERROR)
    return handle_json(status, code, handle=handle, message=err.message, code=err.instance_code)
