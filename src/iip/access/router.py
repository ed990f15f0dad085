"""Tenants, users, API keys and the audit log over HTTP. Thin: parse, call the service, shape."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status

from iip.access.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    AuditEntryOut,
    AuditPage,
    AuditVerification,
    MeOut,
    TenantCreate,
    TenantOut,
    TenantUpdate,
    UserCreate,
    UserOut,
    UserUpdate,
)
from iip.access.service import AuditQueryService
from iip.api.deps import CurrentPrincipal, DbSession, audit_object, get_settings, require
from iip.api.problems import problem_responses
from iip.kernel import audit
from iip.kernel.auth import AccessService, Principal

router = APIRouter(prefix="/api", tags=["access"], responses=problem_responses(401, 403, 422))

ReadAccess = Annotated[Principal, Depends(require("access.read"))]
AdminAccess = Annotated[Principal, Depends(require("access.admin"))]
PlatformWrite = Annotated[Principal, Depends(require("platform.write"))]
AuditRead = Annotated[Principal, Depends(require("audit.read"))]


def _service(request: Request, session: DbSession) -> AccessService:
    return AccessService(session, min_password_length=get_settings(request).auth.min_password_length)


Service = Annotated[AccessService, Depends(_service)]


@router.get("/me", response_model=MeOut)
def whoami(principal: CurrentPrincipal) -> MeOut:
    """The principal behind this request."""
    return MeOut(
        kind=principal.kind, id=principal.id, name=principal.name, tenant_id=principal.tenant_id, role=principal.role
    )


# tenants


@router.get("/tenants", response_model=list[TenantOut])
def list_tenants(actor: ReadAccess, service: Service) -> list[TenantOut]:
    """Tenants you can see: your own, or all for platform operators."""
    return [TenantOut.model_validate(t) for t in service.list_tenants(actor)]


@router.post(
    "/tenants", response_model=TenantOut, status_code=status.HTTP_201_CREATED, responses=problem_responses(409)
)
def create_tenant(body: TenantCreate, actor: PlatformWrite, service: Service, request: Request) -> TenantOut:
    """Create a tenant (an enterprise). Platform operators only."""
    tenant = service.create_tenant(body.name, body.display_name)
    audit_object(request, "tenant", tenant.id)
    return TenantOut.model_validate(tenant)


@router.get("/tenants/{tenant_id}", response_model=TenantOut, responses=problem_responses(404))
def get_tenant(tenant_id: str, actor: ReadAccess, service: Service) -> TenantOut:
    return TenantOut.model_validate(service.get_tenant(tenant_id, actor))


@router.patch("/tenants/{tenant_id}", response_model=TenantOut, responses=problem_responses(404))
def update_tenant(
    tenant_id: str, body: TenantUpdate, actor: AdminAccess, service: Service, request: Request
) -> TenantOut:
    """Rename a tenant (its admins) or (de)activate it (platform operators)."""
    audit_object(request, "tenant", tenant_id)
    tenant = service.get_tenant(tenant_id, actor)
    if body.display_name is not None:
        tenant.display_name = body.display_name
    if body.active is not None:
        actor.require("platform.write")
        tenant.active = body.active
    return TenantOut.model_validate(tenant)


# users


@router.get("/users", response_model=list[UserOut])
def list_users(actor: AdminAccess, service: Service) -> list[UserOut]:
    return [UserOut.model_validate(u) for u in service.list_users(actor)]


@router.post(
    "/users", response_model=UserOut, status_code=status.HTTP_201_CREATED, responses=problem_responses(404, 409)
)
def create_user(body: UserCreate, actor: AdminAccess, service: Service, request: Request) -> UserOut:
    tenant_id = body.tenant_id if (body.tenant_id and actor.is_platform) else actor.tenant_id
    user = service.create_user(tenant_id, body.username, body.password, body.role, body.display_name, actor=actor)
    audit_object(request, "user", user.id)
    return UserOut.model_validate(user)


@router.get("/users/{user_id}", response_model=UserOut, responses=problem_responses(404))
def get_user(user_id: str, actor: AdminAccess, service: Service) -> UserOut:
    return UserOut.model_validate(service.get_user(user_id, actor))


@router.patch("/users/{user_id}", response_model=UserOut, responses=problem_responses(404))
def update_user(user_id: str, body: UserUpdate, actor: AdminAccess, service: Service, request: Request) -> UserOut:
    audit_object(request, "user", user_id)
    user = service.update_user(
        user_id, actor, role=body.role, active=body.active, display_name=body.display_name, password=body.password
    )
    return UserOut.model_validate(user)


@router.post("/users/{user_id}/unlock", response_model=UserOut, responses=problem_responses(404))
def unlock_user(user_id: str, actor: AdminAccess, service: Service, request: Request) -> UserOut:
    """Clear a lockout after repeated failed logins."""
    audit_object(request, "user", user_id)
    return UserOut.model_validate(service.unlock_user(user_id, actor))


# API keys


@router.get("/api-keys", response_model=list[ApiKeyOut])
def list_api_keys(actor: AdminAccess, service: Service) -> list[ApiKeyOut]:
    return [ApiKeyOut.model_validate(k) for k in service.list_api_keys(actor)]


@router.post(
    "/api-keys", response_model=ApiKeyCreated, status_code=status.HTTP_201_CREATED, responses=problem_responses(404)
)
def create_api_key(body: ApiKeyCreate, actor: AdminAccess, service: Service, request: Request) -> ApiKeyCreated:
    """Create an API key. The response carries the secret once; only its hash is kept."""
    tenant_id = body.tenant_id if (body.tenant_id and actor.is_platform) else actor.tenant_id
    key, secret = service.create_api_key(tenant_id, body.name, body.role, expires_at=body.expires_at, actor=actor)
    audit_object(request, "api_key", key.id)
    return ApiKeyCreated(**ApiKeyOut.model_validate(key).model_dump(), key=secret)


@router.get("/api-keys/{key_id}", response_model=ApiKeyOut, responses=problem_responses(404))
def get_api_key(key_id: str, actor: AdminAccess, service: Service) -> ApiKeyOut:
    return ApiKeyOut.model_validate(service.get_api_key(key_id, actor))


@router.delete("/api-keys/{key_id}", response_model=ApiKeyOut, responses=problem_responses(404))
def revoke_api_key(key_id: str, actor: AdminAccess, service: Service, request: Request) -> ApiKeyOut:
    """Revoke a key at once; it stays listed with its revocation time."""
    audit_object(request, "api_key", key_id)
    key = service.revoke_api_key(key_id, actor)
    audit_object(request, "api_key", key.id)  # the path may name the key by its prefix
    return ApiKeyOut.model_validate(key)


# audit


@router.get("/audit", response_model=AuditPage)
def list_audit(
    actor: AuditRead,
    session: DbSession,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_seq: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    action: Annotated[str | None, Query(max_length=200)] = None,
    principal: Annotated[str | None, Query(max_length=200)] = None,
    outcome: Annotated[str | None, Query(max_length=20)] = None,
) -> AuditPage:
    """Audit entries, newest first; your tenant's, or all for platform operators."""
    rows, next_seq = AuditQueryService(session).page(
        actor, limit=limit, before_seq=before_seq, action=action, principal=principal, outcome=outcome
    )
    return AuditPage(items=[AuditEntryOut.model_validate(r) for r in rows], next_before_seq=next_seq)


@router.get("/audit/verify", response_model=AuditVerification)
def verify_audit(actor: AuditRead, session: DbSession) -> AuditVerification:
    """Recompute the hash chain and name the first entry that was changed, removed or reordered."""
    result = audit.verify(session)
    return AuditVerification(ok=result.ok, checked=result.checked, problem=result.problem, seq=result.seq)
