"""The console's own pages: login, logout, language switch and the home dashboard."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from iip.api.deps import SESSION_COOKIE, DbSession, client_address, get_runtime
from iip.console.dashboard import audit_activity, module_health, tenant_counts
from iip.console.i18n import LANGUAGES, N_, Message, message
from iip.console.web import (
    ConsoleIdentity,
    ConsolePrincipal,
    OptionalConsolePrincipal,
    anonymous_csrf_ok,
    clear_session_cookie,
    csrf_protect,
    form_token,
    redirect,
    render,
    safe_next,
    save_language,
    set_language_cookie,
    set_session_cookie,
    tokens_match,
)
from iip.kernel import audit
from iip.kernel.auth import AccessService, Tenant, User, user_principal
from iip.kernel.db import utcnow
from iip.kernel.errors import Forbidden, Unauthenticated

router = APIRouter(include_in_schema=False)

FormText = Annotated[str, Form()]


def _login_page(
    request: Request, *, username: str = "", next_path: str = "/", error: Message | None = None, status_code: int = 200
) -> HTMLResponse:
    return render(
        request,
        "console/login.html",
        {"username": username, "next": next_path, "error": error},
        status_code=status_code,
    )


@router.get("/login", response_class=HTMLResponse)
def login_form(
    request: Request, identity: OptionalConsolePrincipal, next_path: Annotated[str, Query(alias="next")] = "/"
) -> Response:
    target = safe_next(next_path)
    if identity is not None:
        return redirect(target)
    return _login_page(request, next_path=target)


def _record_login(request: Request, session: Session, user: User | None, action: str, detail: str) -> None:
    who = f"user:{user.username}" if user is not None else "anonymous"
    audit.append(
        session,
        who,
        audit.AuditRecord(
            action=action,
            outcome="failure",
            object_type="user",
            object_id=user.id if user else "",
            detail=detail,
            source=client_address(request),
        ),
        tenant_id=user.tenant_id if user is not None else None,
    )


@router.post("/login", response_class=HTMLResponse)
def login_submit(
    request: Request,
    *,
    session: DbSession,
    username: FormText = "",
    password: FormText = "",
    csrf_token: FormText = "",
    next_path: Annotated[str, Form(alias="next")] = "/",
) -> Response:
    target = safe_next(next_path)
    username = username.strip()[:100]
    if not anonymous_csrf_ok(request, csrf_token):
        # Stale or forged form: show a fresh one (the middleware records the refusal).
        return _login_page(
            request,
            username=username,
            next_path=target,
            status_code=403,
            error=message(N_("The form has expired. Please sign in again.")),
        )
    if not username or not password:
        return _login_page(
            request,
            username=username,
            next_path=target,
            status_code=422,
            error=message(N_("Enter your username and password.")),
        )
    settings = get_runtime(request).settings
    request.state.audit_done = True  # this route writes its own audit entries
    user = session.scalar(select(User).where(User.username == username.lower()))
    was_locked = user is not None and user.locked_until is not None and user.locked_until > utcnow()
    service = AccessService(session)
    try:
        user = service.login(
            username, password, threshold=settings.auth.lockout_threshold, lockout_minutes=settings.auth.lockout_minutes
        )
    except Unauthenticated as err:
        locked = err.instance_code == "locked"
        if user is None:
            reason = "unknown user"
        elif was_locked:
            reason = "account locked"
        else:
            reason = "wrong password" if user.active else "inactive account"
        _record_login(request, session, user, "console.login", reason)
        if locked and not was_locked:
            _record_login(
                request,
                session,
                user,
                "console.lockout",
                f"locked for {settings.auth.lockout_minutes} min after {settings.auth.lockout_threshold} failures",
            )
        error = (
            message(
                N_("Too many failed attempts: the account is locked for %(minutes)s minutes."),
                minutes=settings.auth.lockout_minutes,
            )
            if locked
            else message(N_("Wrong username or password."))
        )
        return _login_page(request, username=username, next_path=target, error=error, status_code=401)
    tenant = session.get(Tenant, user.tenant_id)
    if tenant is None or not tenant.active:
        _record_login(request, session, user, "console.login", "inactive tenant")
        error = message(N_("Wrong username or password."))
        return _login_page(request, username=username, next_path=target, error=error, status_code=401)
    old_token = request.cookies.get(SESSION_COOKIE)
    if old_token:
        service.close_session(old_token)
    token, _record = service.open_session(user, settings.api.session_hours)
    audit.append(
        session,
        user_principal(user),
        audit.AuditRecord(
            action="console.login", object_type="user", object_id=user.id, source=client_address(request)
        ),
    )
    response = redirect(target)
    set_session_cookie(request, response, token)
    return response


@router.post("/logout")
def logout(
    request: Request, session: DbSession, identity: Annotated[ConsoleIdentity, Depends(csrf_protect)]
) -> Response:
    token = request.cookies.get(SESSION_COOKIE, "")
    AccessService(session).close_session(token)
    audit.append(
        session,
        identity.principal,
        audit.AuditRecord(
            action="console.logout",
            object_type="user",
            object_id=identity.principal.id,
            source=client_address(request),
        ),
    )
    request.state.audit_done = True
    response = redirect("/login")
    clear_session_cookie(request, response)
    return response


@router.post("/lang")
async def switch_language(request: Request, identity: OptionalConsolePrincipal, session: DbSession) -> Response:
    form = await request.form()
    language = form.get("language")
    next_value = form.get("next")
    target = safe_next(next_value if isinstance(next_value, str) else None)
    sent = await form_token(request)
    allowed = tokens_match(sent, identity.csrf_token) if identity else anonymous_csrf_ok(request, sent)
    if not allowed:
        raise Forbidden("missing or wrong CSRF token", code="csrf")
    response = redirect(target)
    if isinstance(language, str) and language in LANGUAGES:
        if identity is not None:
            await run_in_threadpool(save_language, session, identity, language)
        set_language_cookie(request, response, language)
    return response


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, identity: ConsolePrincipal, session: DbSession) -> HTMLResponse:
    runtime = get_runtime(request)
    tenant_id = identity.principal.tenant_id
    # End the read-only transaction first: on SQLite it holds the write lock, and health checks
    # open connections of their own, which would wait for it.
    await run_in_threadpool(session.commit)
    health = await module_health(runtime)
    counts = await run_in_threadpool(tenant_counts, session, tenant_id)
    activity = await run_in_threadpool(audit_activity, session, tenant_id) if identity.can("audit.read") else None
    return render(
        request,
        "console/home.html",
        {
            "health": health,
            "healthy": sum(1 for h in health if h.state == "ok"),
            "counts": counts,
            "activity": activity,
        },
    )
