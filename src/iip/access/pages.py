"""Console pages of the access context: users, API keys and the audit log.

Thin like the API router: read the form, check it, call the service, render or redirect. The
services scope every read and change to the acting principal's tenant (another tenant's id is 404).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from iip.access.service import AuditQueryService
from iip.api.deps import DbSession, audit_object, get_settings
from iip.console.web import (
    N_,
    ConsoleIdentity,
    Message,
    console_permission,
    csrf_protect,
    message,
    redirect,
    render,
)
from iip.kernel import audit
from iip.kernel.auth import NAME_RE, AccessService, ApiKey, Role, User
from iip.kernel.db import utcnow
from iip.kernel.errors import Conflict, Forbidden, Invalid

pages_router = APIRouter(include_in_schema=False)

USERS_PATH = "/access/users"
API_KEYS_PATH = "/access/api-keys"
AUDIT_PATH = "/access/audit"
AUDIT_PAGE_SIZE = 50
OUTCOMES: dict[str, str] = {"success": N_("Success"), "failure": N_("Failure"), "denied": N_("Denied")}

AdminPage = Annotated[ConsoleIdentity, Depends(console_permission("access.admin"))]
AuditReader = Annotated[ConsoleIdentity, Depends(console_permission("audit.read"))]
CSRF = [Depends(csrf_protect)]
FormText = Annotated[str, Form()]

Errors = dict[str, Message]


def _service(request: Request, session: Session) -> AccessService:
    return AccessService(session, min_password_length=get_settings(request).auth.min_password_length)


def grantable_roles(identity: ConsoleIdentity) -> list[Role]:
    """Roles this user may hand out: platform operators alone grant the platform role."""
    return [r for r in Role if r is not Role.PLATFORM_OPERATOR or identity.principal.is_platform]


def parse_role(value: str, identity: ConsoleIdentity) -> Role | None:
    try:
        role = Role(value)
    except ValueError:
        return None
    return role if role in grantable_roles(identity) else None


# --- users ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserRow:
    user: User
    locked: bool
    is_self: bool
    tenant: str


def _users_page(
    request: Request,
    identity: ConsoleIdentity,
    service: AccessService,
    *,
    form: dict[str, str] | None = None,
    errors: Errors | None = None,
    action_error: Message | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    actor = identity.principal
    now = utcnow()
    tenants = {t.id: t.display_name or t.name for t in service.list_tenants(actor)} if actor.is_platform else {}
    rows = [
        UserRow(
            user=u,
            locked=u.locked_until is not None and u.locked_until > now,
            is_self=u.id == actor.id,
            tenant=tenants.get(u.tenant_id, ""),
        )
        for u in service.list_users(actor)
    ]
    context: dict[str, Any] = {
        "page_title": N_("Users"),
        "rows": rows,
        "roles": grantable_roles(identity),
        "show_tenant": actor.is_platform,
        "form": form or {"username": "", "display_name": "", "role": Role.VIEWER.value},
        "errors": errors or {},
        "action_error": action_error,
        "min_password_length": service.min_password_length,
    }
    return render(request, "access/users.html", context, status_code=status_code)


@pages_router.get(USERS_PATH, response_class=HTMLResponse)
def users_page(request: Request, identity: AdminPage, session: DbSession) -> HTMLResponse:
    return _users_page(request, identity, _service(request, session))


@pages_router.post(USERS_PATH, dependencies=CSRF)
def create_user(
    request: Request,
    *,
    identity: AdminPage,
    session: DbSession,
    username: FormText = "",
    display_name: FormText = "",
    password: FormText = "",
    role: FormText = "",
) -> Response:
    service = _service(request, session)
    name = username.strip().lower()
    display_name = display_name.strip()
    errors: Errors = {}
    if not NAME_RE.match(name):
        errors["username"] = message(
            N_("Use 2 to 100 characters: a-z, 0-9, '_', '.' or '-', starting with a letter or digit.")
        )
    if len(password) < service.min_password_length:
        errors["password"] = message(
            N_("The password must have at least %(count)s characters."), count=service.min_password_length
        )
    if len(display_name) > 200:
        errors["display_name"] = message(N_("Use at most 200 characters."))
    chosen_role = parse_role(role, identity)
    if chosen_role is None:
        errors["role"] = message(N_("Choose one of the listed roles."))
    if not errors and chosen_role is not None:
        try:
            user = service.create_user(
                identity.principal.tenant_id, name, password, chosen_role, display_name, actor=identity.principal
            )
        except Conflict:
            errors["username"] = message(N_("This username is already taken."))
        except (Invalid, Forbidden) as err:
            errors["form"] = message(N_("The user could not be created: %(reason)s"), reason=err.message)
        else:
            audit_object(request, "user", user.id)
            return redirect(USERS_PATH, notice=N_("User created."))
    form = {"username": username.strip(), "display_name": display_name, "role": role}
    return _users_page(request, identity, service, form=form, errors=errors, status_code=422)


@pages_router.post(USERS_PATH + "/{user_id}/role", dependencies=CSRF)
def change_role(
    request: Request, user_id: str, *, identity: AdminPage, session: DbSession, role: FormText = ""
) -> Response:
    service = _service(request, session)
    service.get_user(user_id, identity.principal)  # another tenant's user is 404 before anything else
    chosen_role = parse_role(role, identity)
    problem = None
    if user_id == identity.principal.id:
        problem = message(N_("You cannot change your own role."))
    elif chosen_role is None:
        problem = message(N_("You cannot grant this role."))
    if problem is not None or chosen_role is None:
        return _users_page(request, identity, service, action_error=problem, status_code=422)
    service.update_user(user_id, identity.principal, role=chosen_role)
    audit_object(request, "user", user_id)
    return redirect(USERS_PATH, notice=N_("Role changed."))


def _set_active(request: Request, user_id: str, identity: ConsoleIdentity, session: Session, active: bool) -> Response:
    service = _service(request, session)
    service.get_user(user_id, identity.principal)
    if not active and user_id == identity.principal.id:
        problem = message(N_("You cannot deactivate your own account."))
        return _users_page(request, identity, service, action_error=problem, status_code=422)
    service.update_user(user_id, identity.principal, active=active)
    audit_object(request, "user", user_id)
    return redirect(USERS_PATH, notice=N_("User activated.") if active else N_("User deactivated."))


@pages_router.post(USERS_PATH + "/{user_id}/deactivate", dependencies=CSRF)
def deactivate_user(request: Request, user_id: str, identity: AdminPage, session: DbSession) -> Response:
    return _set_active(request, user_id, identity, session, active=False)


@pages_router.post(USERS_PATH + "/{user_id}/activate", dependencies=CSRF)
def activate_user(request: Request, user_id: str, identity: AdminPage, session: DbSession) -> Response:
    return _set_active(request, user_id, identity, session, active=True)


@pages_router.post(USERS_PATH + "/{user_id}/unlock", dependencies=CSRF)
def unlock_user(request: Request, user_id: str, identity: AdminPage, session: DbSession) -> Response:
    _service(request, session).unlock_user(user_id, identity.principal)
    audit_object(request, "user", user_id)
    return redirect(USERS_PATH, notice=N_("User unlocked."))


# --- API keys ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyRow:
    key: ApiKey
    state: str  # "active", "revoked" or "expired"


def key_state(key: ApiKey, now: dt.datetime) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


def _api_keys_page(
    request: Request,
    identity: ConsoleIdentity,
    service: AccessService,
    *,
    form: dict[str, str] | None = None,
    errors: Errors | None = None,
    created: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    now = utcnow()
    keys = sorted(service.list_api_keys(identity.principal), key=lambda k: k.created_at, reverse=True)
    context: dict[str, Any] = {
        "page_title": N_("API keys"),
        "rows": [KeyRow(k, key_state(k, now)) for k in keys],
        "roles": grantable_roles(identity),
        "form": form or {"name": "", "role": Role.VIEWER.value, "expires": ""},
        "errors": errors or {},
        "created": created,
        "today": now.date().isoformat(),
    }
    return render(request, "access/api_keys.html", context, status_code=status_code)


@pages_router.get(API_KEYS_PATH, response_class=HTMLResponse)
def api_keys_page(request: Request, identity: AdminPage, session: DbSession) -> HTMLResponse:
    return _api_keys_page(request, identity, _service(request, session))


def parse_expiry(value: str) -> dt.datetime:
    """A date from the form; the key works until the end of that day (UTC)."""
    day = dt.date.fromisoformat(value)
    return dt.datetime.combine(day, dt.time(23, 59, 59), tzinfo=dt.UTC)


@pages_router.post(API_KEYS_PATH, dependencies=CSRF)
def create_api_key(
    request: Request,
    *,
    identity: AdminPage,
    session: DbSession,
    name: FormText = "",
    role: FormText = "",
    expires: FormText = "",
) -> Response:
    service = _service(request, session)
    name = name.strip()
    errors: Errors = {}
    if not name:
        errors["name"] = message(N_("Enter a name."))
    elif len(name) > 100:
        errors["name"] = message(N_("Use at most 100 characters."))
    chosen_role = parse_role(role, identity)
    if chosen_role is None:
        errors["role"] = message(N_("Choose one of the listed roles."))
    expires_at = None
    if expires.strip():
        try:
            expires_at = parse_expiry(expires.strip())
        except ValueError:
            errors["expires"] = message(N_("Enter a date as YYYY-MM-DD."))
        if expires_at is not None and expires_at <= utcnow():
            errors["expires"] = message(N_("The expiry date must be in the future."))
    form = {"name": name, "role": role, "expires": expires.strip()}
    if errors or chosen_role is None:
        return _api_keys_page(request, identity, service, form=form, errors=errors, status_code=422)
    try:
        key, secret = service.create_api_key(
            identity.principal.tenant_id, name, chosen_role, expires_at=expires_at, actor=identity.principal
        )
    except (Invalid, Forbidden) as err:
        errors["form"] = message(N_("The key could not be created: %(reason)s"), reason=err.message)
        return _api_keys_page(request, identity, service, form=form, errors=errors, status_code=422)
    audit_object(request, "api_key", key.id)
    # The secret is shown on this response only; it is never stored or shown again.
    return _api_keys_page(request, identity, service, created={"name": key.name, "secret": secret})


@pages_router.post(API_KEYS_PATH + "/{key_id}/revoke", dependencies=CSRF)
def revoke_api_key(request: Request, key_id: str, identity: AdminPage, session: DbSession) -> Response:
    key = _service(request, session).revoke_api_key(key_id, identity.principal)
    audit_object(request, "api_key", key.id)
    return redirect(API_KEYS_PATH, notice=N_("API key revoked."))


# --- audit log --------------------------------------------------------------------------------


def _audit_page(
    request: Request,
    identity: ConsoleIdentity,
    session: Session,
    *,
    action: str = "",
    principal: str = "",
    outcome: str = "",
    before: str = "",
    verification: audit.VerifyResult | None = None,
) -> HTMLResponse:
    action, principal = action.strip()[:200], principal.strip()[:200]
    outcome = outcome if outcome in OUTCOMES else ""
    before_seq = int(before) if before.isdigit() and 0 < int(before) < 2**62 else None
    rows, next_seq = AuditQueryService(session).page(
        identity.principal,
        limit=AUDIT_PAGE_SIZE,
        before_seq=before_seq,
        action=action or None,
        principal=principal or None,
        outcome=outcome or None,
    )
    filters = {"action": action, "principal": principal, "outcome": outcome}
    context: dict[str, Any] = {
        "page_title": N_("Audit log"),
        "rows": rows,
        "filters": filters,
        "outcomes": OUTCOMES,
        "next_seq": next_seq,
        "paged": before_seq is not None,
        "verification": verification,
    }
    return render(request, "access/audit.html", context)


@pages_router.get(AUDIT_PATH, response_class=HTMLResponse)
def audit_page(
    request: Request,
    *,
    identity: AuditReader,
    session: DbSession,
    action: str = "",
    principal: str = "",
    outcome: str = "",
    before: str = "",
) -> HTMLResponse:
    return _audit_page(request, identity, session, action=action, principal=principal, outcome=outcome, before=before)


@pages_router.post(AUDIT_PATH + "/verify", dependencies=CSRF)
def verify_audit_chain(request: Request, identity: AuditReader, session: DbSession) -> HTMLResponse:
    """Recompute the whole hash chain and show the result above the newest entries."""
    return _audit_page(request, identity, session, verification=audit.verify(session))
