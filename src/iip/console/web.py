"""What console pages use: who is signed in, CSRF checks, rendering in the layout, redirects.

Contexts build their pages with this module only (`iip.console` imports no context)::

    from iip.console.web import N_, ConsoleIdentity, console_permission, csrf_protect, redirect, render

    Engineer = Annotated[ConsoleIdentity, Depends(console_permission("devices.write"))]

    @pages_router.get("/devices")
    def devices(request: Request, identity: Engineer) -> HTMLResponse:
        return render(request, "devices/list.html", {"page_title": N_("Devices"), "rows": [...]})

    @pages_router.post("/devices", dependencies=[Depends(csrf_protect)])
    def create_device(request: Request, identity: Engineer) -> Response:
        return redirect("/devices", notice=N_("Device created."))

Templates extend `console/layout.html`, fill `{% block content %}`, put `{{ csrf_field(csrf_token) }}`
(from `console/macros.html`) in every POST form and pass every UI string through `_()`.
"""

from __future__ import annotations

import datetime as dt
import hmac
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy.orm import Session

from iip import __version__
from iip.api.deps import SESSION_COOKIE, DbSession, get_runtime
from iip.console.i18n import (
    HTML_LANG,
    LANGUAGES,
    N_,
    Catalogues,
    Message,
    load_catalogues,
    message,
    module_locale_dir,
)
from iip.kernel.auth import AccessService, Principal, Role, Tenant, User
from iip.kernel.errors import Forbidden, Unauthenticated
from iip.kernel.module import Module
from iip.kernel.runtime import Runtime
from iip.kernel.settings import Mode, Settings

TEMPLATE_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"

LOGIN_CSRF_COOKIE = "iip_login_csrf"
LANGUAGE_COOKIE = "iip_lang"
NOTICE_COOKIE = "iip_notice"
CSRF_FIELD = "csrf_token"
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{32,128}$")
PLOTLY_JS_URL = "/static/vendor/plotly.min.js"

ROLE_LABELS: dict[Role, str] = {
    Role.PLATFORM_OPERATOR: N_("Platform operator"),
    Role.ADMIN: N_("Administrator"),
    Role.ENGINEER: N_("Engineer"),
    Role.OPERATOR: N_("Operator"),
    Role.VIEWER: N_("Viewer"),
    Role.AUDITOR: N_("Auditor"),
}


class LoginRequiredError(Exception):
    """Raised by console dependencies when no valid session is present; answered with a redirect."""


# --- identity ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsoleIdentity:
    """The signed-in user of a console request."""

    principal: Principal
    display_name: str
    tenant_name: str
    csrf_token: str
    language: str | None  # the user's saved choice, if any

    def can(self, permission: str) -> bool:
        return self.principal.can(permission)


def _identity(session: Session, token: str) -> ConsoleIdentity | None:
    try:
        principal, record, user = AccessService(session).resolve_session(token)
    except Unauthenticated:
        return None
    tenant = session.get(Tenant, principal.tenant_id)
    if tenant is None or not tenant.active:  # as for API keys: a deactivated tenant's sessions end
        return None
    return ConsoleIdentity(
        principal=principal,
        display_name=user.display_name or user.username,
        tenant_name=tenant.display_name or tenant.name,
        csrf_token=record.csrf_token,
        language=user.language if user.language in LANGUAGES else None,
    )


def identify(request: Request, session: Session) -> ConsoleIdentity | None:
    """The signed-in user behind the session cookie, or None; remembered on the request."""
    known: ConsoleIdentity | None = getattr(request.state, "console_identity", None)
    if known is not None:
        return known
    token = request.cookies.get(SESSION_COOKIE, "")
    if not token or len(token) > 256:
        return None
    identity = _identity(session, token)
    if identity is not None:
        request.state.console_identity = identity
        request.state.principal = identity.principal  # so the audit middleware names who acted
    return identity


def optional_console_principal(request: Request, session: DbSession) -> ConsoleIdentity | None:
    return identify(request, session)


def console_principal(request: Request, session: DbSession) -> ConsoleIdentity:
    """The signed-in user; without one, the request is redirected to the login page."""
    identity = identify(request, session)
    if identity is None:
        raise LoginRequiredError
    return identity


ConsolePrincipal = Annotated[ConsoleIdentity, Depends(console_principal)]
OptionalConsolePrincipal = Annotated[ConsoleIdentity | None, Depends(optional_console_principal)]


def console_permission(permission: str) -> Callable[..., ConsoleIdentity]:
    """A dependency: signed in and allowed `permission`, else the 403 page."""

    def dependency(identity: ConsolePrincipal) -> ConsoleIdentity:
        identity.principal.require(permission)
        return identity

    dependency.__name__ = f"console_permission_{permission.replace('.', '_')}"
    return dependency


# --- CSRF -------------------------------------------------------------------------------------


def tokens_match(sent: str, expected: str) -> bool:
    # Bytes, because compare_digest refuses non-ASCII str and a form may carry anything.
    return bool(sent) and bool(expected) and hmac.compare_digest(sent.encode(), expected.encode())


async def form_token(request: Request) -> str:
    form = await request.form()
    sent = form.get(CSRF_FIELD)
    return sent if isinstance(sent, str) else ""


async def csrf_protect(request: Request, identity: ConsolePrincipal) -> ConsoleIdentity:
    """A dependency for console POSTs: the form's hidden token must be the session's."""
    if not tokens_match(await form_token(request), identity.csrf_token):
        raise Forbidden("missing or wrong CSRF token", code="csrf")
    return identity


def anonymous_csrf_token(request: Request) -> str:
    """The double-submit token of forms shown before login: kept in a cookie, repeated in the form."""
    current: str | None = getattr(request.state, "login_csrf", None)
    if current:
        return current
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if TOKEN_RE.match(cookie):
        return cookie
    token = secrets.token_urlsafe(32)
    request.state.login_csrf = token  # render() sets the cookie
    return token


def anonymous_csrf_ok(request: Request, sent: str) -> bool:
    return tokens_match(sent, request.cookies.get(LOGIN_CSRF_COOKIE, ""))


# --- navigation -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NavItem:
    path: str
    title: str  # message id
    icon: str
    active: bool


@dataclass(frozen=True, slots=True)
class NavSection:
    title: str  # message id
    items: tuple[NavItem, ...]


def is_active(current_path: str, path: str) -> bool:
    return current_path == path or current_path.startswith(path.rstrip("/") + "/")


def navigation(modules: Sequence[Module], principal: Principal, current_path: str) -> list[NavSection]:
    """The pages of every registered module the principal's role allows, grouped by module."""
    sections = []
    # Only the deepest matching page is active: /devices/profiles is not also /devices.
    matches = [p.path for m in modules for p in m.pages if is_active(current_path, p.path)]
    active = max(matches, key=len, default=None)
    for module in modules:
        items = tuple(
            NavItem(page.path, page.title, page.icon, page.path == active)
            for page in module.pages
            if principal.can(page.permission)
        )
        if items:
            sections.append(NavSection(module.title, items))
    return sections


# --- templates --------------------------------------------------------------------------------


def format_datetime(value: dt.datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def role_label(role: str) -> str:
    try:
        return ROLE_LABELS[Role(role)]
    except ValueError:
        return role


class Console:
    """The console of one app: templates per language, catalogues and the registered modules."""

    def __init__(self, runtime: Runtime) -> None:
        self.settings: Settings = runtime.settings
        self.modules = runtime.modules
        template_dirs = [str(TEMPLATE_DIR)] + [m.template_dir for m in runtime.modules if m.template_dir]
        locale_dirs = [d for m in runtime.modules if (d := module_locale_dir(m.template_dir)) is not None]
        self.catalogues: Catalogues = load_catalogues(locale_dirs)
        loader = ChoiceLoader([FileSystemLoader(d) for d in template_dirs])
        # One environment per language: gettext is bound at install time, so requests never share state.
        self.environments = {lang: self._environment(loader, lang) for lang in LANGUAGES}

    def _environment(self, loader: ChoiceLoader, language: str) -> Environment:
        env = Environment(
            loader=loader,
            autoescape=select_autoescape(("html",), default_for_string=True),
            extensions=["jinja2.ext.i18n"],
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.install_gettext_translations(self.catalogues.translations[language], newstyle=True)  # type: ignore[attr-defined]
        env.filters["datetime"] = format_datetime
        env.globals["role_label"] = role_label
        env.globals["static"] = static_url
        env.globals["plotly_js"] = plotly_js_url()
        env.globals["version"] = __version__
        env.globals["languages"] = LANGUAGES
        env.globals["html_langs"] = HTML_LANG
        return env

    @property
    def default_language(self) -> str:
        configured = self.settings.default_language
        return configured if configured in LANGUAGES else next(iter(LANGUAGES))

    def environment(self, language: str) -> Environment:
        return self.environments.get(language) or self.environments[self.default_language]

    def gettext(self, language: str, msgid: str) -> str:
        return str(self.catalogues.translations[language].gettext(msgid))


def plotly_js_url() -> str:
    try:
        plotly_version = version("plotly")
    except PackageNotFoundError:
        plotly_version = "0"
    return f"{PLOTLY_JS_URL}?v={plotly_version}"


def static_url(path: str) -> str:
    # The version busts browser caches after an upgrade.
    return f"/static/{path}?v={__version__}"


def get_console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def request_language(request: Request) -> str:
    """The user's saved language, else the language cookie, else the configured default."""
    identity: ConsoleIdentity | None = getattr(request.state, "console_identity", None)
    if identity is not None and identity.language:
        return identity.language
    chosen = request.cookies.get(LANGUAGE_COOKIE, "")
    if chosen in LANGUAGES:
        return chosen
    return get_console(request).default_language


def secure_cookies(request: Request) -> bool:
    return get_runtime(request).settings.mode is Mode.PRODUCTION


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
) -> HTMLResponse:
    """Render a page in the current user's language with the layout's context."""
    console = get_console(request)
    language = request_language(request)
    identity: ConsoleIdentity | None = getattr(request.state, "console_identity", None)
    current_path = request.url.path
    notice_id = request.cookies.get(NOTICE_COOKIE, "")
    values: dict[str, Any] = {
        "request": request,
        "user": identity,
        "nav": navigation(console.modules, identity.principal, current_path) if identity else [],
        "language": language,
        "html_lang": HTML_LANG[language],
        "csrf_token": identity.csrf_token if identity else anonymous_csrf_token(request),
        "current_path": current_path,
        "here": local_url(request),
        # Only message ids the catalogue knows are shown, so the cookie cannot inject text.
        "notice": notice_id if console.catalogues.has(language, notice_id) else "",
        "page_title": "",
    }
    if context:
        values.update(context)
    body = console.environment(language).get_template(template).render(values)
    response = HTMLResponse(body, status_code=status_code)
    response.headers["Cache-Control"] = "no-store"  # pages carry tenant data and one-time secrets
    new_login_token: str | None = getattr(request.state, "login_csrf", None)
    if new_login_token and request.cookies.get(LOGIN_CSRF_COOKIE) != new_login_token:
        response.set_cookie(
            LOGIN_CSRF_COOKIE,
            new_login_token,
            max_age=12 * 3600,
            path="/",
            httponly=True,
            samesite="lax",
            secure=secure_cookies(request),
        )
    if notice_id:
        response.delete_cookie(NOTICE_COOKIE, path="/")
    return response


# --- redirects --------------------------------------------------------------------------------


def local_url(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def safe_next(value: str | None, default: str = "/") -> str:
    """A local path to go to after login or a switch; anything else becomes `default`."""
    if not value or len(value) > 2000 or "\\" in value or any(ord(c) < 32 for c in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not value.startswith("/") or value.startswith("//"):
        return default
    return value


def login_url(next_path: str | None = None) -> str:
    if not next_path or next_path == "/":
        return "/login"
    return "/login?next=" + quote(next_path, safe="/")


def redirect(url: str, *, notice: str | None = None) -> RedirectResponse:
    """303 See Other (the browser follows with a GET); `notice` is a message id shown once."""
    response = RedirectResponse(url, status_code=303)
    if notice:
        response.set_cookie(NOTICE_COOKIE, notice, max_age=60, path="/", httponly=True, samesite="lax")
    return response


# --- used by the console's own routes ---------------------------------------------------------


def set_session_cookie(request: Request, response: HTMLResponse | RedirectResponse, token: str) -> None:
    settings = get_runtime(request).settings
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=settings.api.session_hours * 3600,
        path="/",
        httponly=True,
        samesite="lax",
        secure=settings.mode is Mode.PRODUCTION,
    )


def clear_session_cookie(request: Request, response: HTMLResponse | RedirectResponse) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=secure_cookies(request))


def set_language_cookie(request: Request, response: HTMLResponse | RedirectResponse, language: str) -> None:
    response.set_cookie(
        LANGUAGE_COOKIE,
        language,
        max_age=365 * 24 * 3600,
        path="/",
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request),
    )


def save_language(session: Session, identity: ConsoleIdentity, language: str) -> None:
    user = session.get(User, identity.principal.id)
    if user is not None:
        user.language = language


__all__ = [
    "N_",
    "ROLE_LABELS",
    "Console",
    "ConsoleIdentity",
    "ConsolePrincipal",
    "LoginRequiredError",
    "Message",
    "OptionalConsolePrincipal",
    "console_permission",
    "console_principal",
    "csrf_protect",
    "message",
    "redirect",
    "render",
    "safe_next",
]
