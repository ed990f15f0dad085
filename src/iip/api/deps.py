"""Dependencies routers share: the runtime, a unit of work, the acting principal, permissions."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from iip.kernel.auth import AccessService, Principal
from iip.kernel.errors import Forbidden, Unauthenticated
from iip.kernel.runtime import Runtime
from iip.kernel.settings import Settings

SESSION_COOKIE = "iip_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_settings(request: Request) -> Settings:
    return get_runtime(request).settings


def db_session(request: Request) -> Iterator[Session]:
    """One transaction per request: committed when the handler returns, rolled back if it raises."""
    with get_runtime(request).db.session() as session:
        yield session


DbSession = Annotated[Session, Depends(db_session, scope="function")]


def authenticate(request: Request, session: Session) -> Principal:
    """The principal behind a request: a Bearer API key, or a console session cookie (+ CSRF on writes)."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    service = AccessService(session)
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise Unauthenticated("use 'Authorization: Bearer <API key>'")
        principal = service.authenticate_api_key(credentials.strip())
    else:
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            raise Unauthenticated("authentication required: send an API key as 'Authorization: Bearer <key>'")
        principal, record, _user = service.resolve_session(token)
        if request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            if not sent or not hmac.compare_digest(sent, record.csrf_token):
                raise Forbidden("missing or wrong CSRF token", code="csrf")
    request.state.principal = principal
    return principal


def current_principal(request: Request, session: DbSession) -> Principal:
    return authenticate(request, session)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require(permission: str) -> Callable[..., Principal]:
    """A dependency that authenticates and checks one permission."""

    def dependency(principal: CurrentPrincipal) -> Principal:
        principal.require(permission)
        return principal

    dependency.__name__ = f"require_{permission.replace('.', '_')}"
    return dependency


def client_address(request: Request) -> str:
    """The caller's address; X-Forwarded-For only from configured proxies."""
    peer = request.client.host if request.client else ""
    trusted = get_settings(request).api.trusted_proxies
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded and peer in trusted:
        return forwarded.split(",")[0].strip()
    return peer


def audit_object(request: Request, object_type: str, object_id: str) -> None:
    """Tell the audit middleware which object a state-changing call acted on."""
    request.state.audit_object = (object_type, object_id)
