"""Console pages of the identifiers context: search, a record, registration, labels and filings (备案).

Thin like the API routers: read the form, call the services, render or redirect. The services scope
every read and change to the acting principal's tenant (another tenant's identifier or filing is 404).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from iip.api.deps import DbSession, audit_object, get_runtime
from iip.console.forms import page_number, url_with
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
from iip.identifiers import catalog, codes
from iip.identifiers.codec import (
    ADMIN_INDEX,
    HS_SECKEY,
    HandleAlreadyExists,
    HandleName,
    HandleValue,
    admin_value,
    parse_admin_permissions,
    parse_handle,
    parse_value_reference,
    string_value,
)
from iip.identifiers.filing import MIN_SECRET_LENGTH, PENDING, CompanyDetails, FilingService
from iip.identifiers.gs1.service import Gs1LinkService
from iip.identifiers.models import Handle, HandleHistory, Prefix
from iip.identifiers.public import HANDLE_SCHEME, extra_links
from iip.identifiers.repository import HandleRepository
from iip.identifiers.service import HandleService
from iip.identifiers.signing import node_key_for, verify_row
from iip.kernel.auth import AccessService
from iip.kernel.errors import Conflict, DomainError, Invalid, Unavailable

pages_router = APIRouter(include_in_schema=False)

SEARCH_PATH = "/identifiers/search"
REGISTER_PATH = "/identifiers/register"
FILINGS_PATH = "/identifiers/filings"
RECORD_PATH = "/identifiers/records"
PAGE_SIZE = 25
MAX_EXTRA_VALUES = 20
EXTRA_VALUE_FIRST_INDEX = 2
TEMPLATE_TITLES: dict[str, str] = {
    "product": N_("Product"),
    "batch": N_("Batch"),
    "part": N_("Part"),
    "equipment": N_("Equipment"),
}
CHANGES: dict[str, str] = {"create": N_("Registered"), "update": N_("Updated"), "delete": N_("Deleted")}

Reader = Annotated[ConsoleIdentity, Depends(console_permission("identifiers.read"))]
Writer = Annotated[ConsoleIdentity, Depends(console_permission("identifiers.write"))]
CSRF = [Depends(csrf_protect)]
FormText = Annotated[str, Form()]

Errors = dict[str, Message]


def record_url(handle: str) -> str:
    return f"{RECORD_PATH}/{quote(handle, safe='/')}"


def label_url(handle: str, label_format: codes.LabelFormat) -> str:
    """The API's label endpoint, which console sessions may call for reads."""
    query: dict[str, str] = {"target": handle, "format": label_format.value, "scale": "8"}
    if label_format is codes.LabelFormat.SVG:
        query["caption"] = "true"
    return "/api/labels?" + urlencode(query)


# --- search -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SearchRow:
    handle: str
    url: str | None
    template: str | None
    attributes: dict[str, Any]
    link: str


LAST_SEARCH_PAGE = 100_000


def _search_url(filters: dict[str, str], page: int) -> str:
    return url_with(SEARCH_PATH, {**filters, "page": page if page > 1 else ""})


@pages_router.get(SEARCH_PATH, response_class=HTMLResponse)
def search_page(
    request: Request,
    *,
    identity: Reader,
    session: DbSession,
    q: str = "",
    prefix: str = "",
    template: str = "",
    attr_name: str = "",
    attr_value: str = "",
    page: str = "",
) -> HTMLResponse:
    q, prefix, attr_name, attr_value = q.strip()[:200], prefix.strip()[:255], attr_name.strip()[:64], attr_value[:200]
    template = template if template in catalog.TEMPLATE_NAMES else ""
    filters = {"q": q, "prefix": prefix, "template": template, "attr_name": attr_name, "attr_value": attr_value}
    errors: Errors = {}
    attributes = {attr_name: attr_value.strip()} if attr_name else {}
    number = page_number(page, last=LAST_SEARCH_PAGE)
    query = catalog.SearchQuery(q, prefix or None, template or None, attributes, number, PAGE_SIZE)
    try:
        found = catalog.search(session, query, identity.principal)
    except Invalid:
        errors["attr_name"] = message(N_("Use letters, digits and '_', starting with a letter or '_'."))
        found = catalog.SearchPage(0, 1, PAGE_SIZE, [])
    rows = [SearchRow(r.handle, catalog.url_of(r), r.template, r.attributes, record_url(r.handle)) for r in found.items]
    pages = max(1, -(-found.total // PAGE_SIZE))
    more = not found.total_exact  # the count stopped: more pages than `pages`
    context: dict[str, Any] = {
        "page_title": N_("Identifier search"),
        "rows": rows,
        "total": f"{found.total:,}" + ("+" if more else ""),
        "more_pages": more,
        "page": found.page,
        "pages": pages,
        "previous_url": _search_url(filters, found.page - 1) if found.page > 1 else "",
        "next_url": _search_url(filters, found.page + 1) if found.page < pages or more else "",
        "filters": filters,
        "errors": errors,
        "templates": TEMPLATE_TITLES,
        "searched": any(filters.values()),
        "can_register": identity.can("identifiers.write"),
    }
    return render(request, "identifiers/search.html", context)


# --- one record -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ValueRow:
    index: int
    type: str
    format: str
    shown: str
    ttl: int
    permissions: str
    timestamp: str


def shown_data(value: HandleValue) -> str:
    if value.type == HS_SECKEY:
        return "••••••"  # a hash of the prefix secret: of no use on screen
    data = value.data.value
    if value.data.format == "admin" and isinstance(data, dict):
        return f"{data.get('index')}:{data.get('handle')} ({data.get('permissions')})"
    if value.data.format == "vlist" and isinstance(data, list):
        return ", ".join(f"{m.get('index')}:{m.get('handle')}" for m in data if isinstance(m, dict))
    return data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Signature:
    state: str  # "valid", "unsigned", "invalid" or "no_key"
    key_id: str = ""
    reason: str = ""


def signature_of(session: Session, row: Handle) -> Signature:
    try:
        key = node_key_for(session)
    except Unavailable:
        key = None
    if key is None:
        return Signature("no_key")
    result = verify_row(key, row)
    if result.ok:
        return Signature("valid", result.key_id)
    return Signature("unsigned" if not row.signature else "invalid", result.key_id, result.reason)


@dataclass(frozen=True, slots=True)
class HistoryRow:
    entry: HandleHistory
    types: str


def _label_svg(handle: str) -> str | None:
    try:
        return codes.label(handle, label_format=codes.LabelFormat.SVG, scale=4, caption=True).data.decode()
    except DomainError:
        return None


@pages_router.get(RECORD_PATH + "/{prefix}/{suffix:path}", response_class=HTMLResponse)
def record_page(request: Request, prefix: str, suffix: str, identity: Reader, session: DbSession) -> HTMLResponse:
    actor = identity.principal
    name = parse_handle(f"{prefix}/{suffix}")
    row = catalog.get_attributes(session, name, actor)  # another tenant's handle is 404
    values = HandleService(session).resolve(name, actor).values
    history = [
        HistoryRow(h, ", ".join(sorted({str(v.get("type", "")) for v in h.values})))
        for h in reversed(HandleRepository(session).history(row.key))
    ]
    links = Gs1LinkService(session).list_links(actor, handle=row.handle)
    # What other contexts offer for the handle (its trace page), those this user may follow.
    offered = extra_links(get_runtime(request), session, HANDLE_SCHEME + row.handle, row.tenant_id)
    context: dict[str, Any] = {
        "page_title": N_("Identifier"),
        "row": row,
        "values": [
            ValueRow(v.index, v.type, v.data.format, shown_data(v), v.ttl, v.permissions, v.timestamp or "")
            for v in sorted(values, key=lambda v: v.index)
        ],
        "history": history,
        "changes": CHANGES,
        "signature": signature_of(session, row),
        "links": links,
        "extra_links": [e for e in offered if e.permission is None or identity.can(e.permission)],
        "template_title": TEMPLATE_TITLES.get(row.template or "", ""),
        "attributes": [
            (k, v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)) for k, v in row.attributes.items()
        ],
        "label_svg": _label_svg(row.handle),
        "label_png_url": label_url(row.handle, codes.LabelFormat.PNG),
        "label_svg_url": label_url(row.handle, codes.LabelFormat.SVG),
        "download_name": row.handle.replace("/", "_"),
    }
    return render(request, "identifiers/record.html", context)


# --- register ---------------------------------------------------------------------------------


EMPTY_REGISTRATION = {"prefix": "", "suffix": "", "mint": "", "url": "", "template": "", "attributes": "", "values": ""}


def _own_prefixes(session: Session, identity: ConsoleIdentity) -> list[Prefix]:
    """Prefixes the user's tenant may register under: homed here and approved."""
    prefixes = HandleService(session).list_prefixes(identity.principal)
    return [
        p for p in prefixes if not p.node_url and p.status == "approved" and p.tenant_id == identity.principal.tenant_id
    ]


def _template_fields(name: str) -> list[dict[str, Any]]:
    schema = catalog.template(name).schema
    required = set(schema.get("required", ()))
    return [
        {
            "name": field,
            "type": spec.get("type", ""),
            "required": field in required,
            "hint": spec.get("description", ""),
        }
        for field, spec in schema.get("properties", {}).items()
    ]


def _register_page(
    session: Session,
    request: Request,
    identity: ConsoleIdentity,
    *,
    form: dict[str, str] | None = None,
    errors: Errors | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    context: dict[str, Any] = {
        "page_title": N_("Register identifier"),
        "prefixes": [p.prefix for p in _own_prefixes(session, identity)],
        "templates": TEMPLATE_TITLES,
        "template_fields": {name: _template_fields(name) for name in catalog.TEMPLATE_NAMES},
        "form": form or EMPTY_REGISTRATION,
        "errors": errors or {},
    }
    return render(request, "identifiers/register.html", context, status_code=status_code)


@pages_router.get(REGISTER_PATH, response_class=HTMLResponse)
def register_page(request: Request, identity: Writer, session: DbSession, prefix: str = "") -> HTMLResponse:
    return _register_page(session, request, identity, form={**EMPTY_REGISTRATION, "prefix": prefix[:255]})


def parse_extra_values(text: str, errors: Errors) -> list[HandleValue]:
    """`TYPE=value` lines as string values from index 2, as `iip id register --value` takes them."""
    values: list[HandleValue] = []
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > MAX_EXTRA_VALUES:
        errors["values"] = message(N_("At most %(count)s extra values."), count=MAX_EXTRA_VALUES)
        return []
    for line, text_line in enumerate(lines, start=1):
        value_type, eq, data = text_line.partition("=")
        value_type = value_type.strip()
        if not eq or not catalog.VALUE_TYPE_RE.match(value_type) or value_type.upper() in {"URL", "HS_ADMIN"}:
            errors["values"] = message(N_("Line %(line)s: write TYPE=value, e.g. EMAIL=qa@example.com."), line=line)
            return []
        values.append(string_value(EXTRA_VALUE_FIRST_INDEX + line - 1, value_type, data.strip()))
    return values


def parse_attributes(text: str, template_name: str | None, errors: Errors) -> dict[str, Any]:
    attributes: Any = {}
    if text.strip():
        try:
            attributes = json.loads(text)
        except json.JSONDecodeError as err:
            errors["attributes"] = message(N_("Not valid JSON: %(reason)s"), reason=f"{err.msg} (line {err.lineno})")
            return {}
    problem = catalog.attribute_problem(template_name, attributes)
    if problem is not None:
        errors["attributes"] = message(N_("The attributes do not match the template: %(reason)s"), reason=problem[1])
        return {}
    return dict(attributes)


def _register(
    session: Session, identity: ConsoleIdentity, name: HandleName, record: list[HandleValue], *, mint: bool
) -> str:
    # overwrite=False: the form registers new identifiers, it never replaces one.
    return HandleService(session).put(name, record, identity.principal, overwrite=False, mint=mint).handle


@pages_router.post(REGISTER_PATH, dependencies=CSRF)
def register_identifier(
    request: Request,
    *,
    identity: Writer,
    session: DbSession,
    prefix: FormText = "",
    suffix: FormText = "",
    mint: FormText = "",
    url: FormText = "",
    template: FormText = "",
    attributes: FormText = "",
    values: FormText = "",
) -> Response:
    form = {
        "prefix": prefix.strip(),
        "suffix": suffix.strip(),
        "mint": "on" if mint else "",
        "url": url.strip(),
        "template": template if template in catalog.TEMPLATE_NAMES else "",
        "attributes": attributes,
        "values": values,
    }
    errors: Errors = {}
    if form["prefix"] not in {p.prefix for p in _own_prefixes(session, identity)}:
        errors["prefix"] = message(N_("Choose one of your tenant's prefixes."))
    if not form["suffix"] and not form["mint"]:
        errors["suffix"] = message(N_("Enter a suffix, or let the platform mint one."))
    if not form["url"]:
        errors["url"] = message(N_("Enter the URL the identifier resolves to."))
    elif len(form["url"]) > 2000:
        errors["url"] = message(N_("Use at most %(count)s characters."), count=2000)
    template_name = form["template"] or None
    checked = parse_attributes(attributes, template_name, errors)
    extra = parse_extra_values(values, errors)
    name: HandleName | None = None
    if "prefix" not in errors and "suffix" not in errors:
        try:
            name = parse_handle(f"{form['prefix']}/{form['suffix']}", allow_empty_suffix=bool(form["mint"]))
        except Invalid as err:
            errors["suffix"] = message(N_("Not a valid identifier: %(reason)s"), reason=err.message)
    if errors or name is None:
        return _register_page(session, request, identity, form=form, errors=errors, status_code=422)
    owner = parse_value_reference(f"200:0.NA/{name.prefix}")
    record = [
        string_value(1, "URL", form["url"]),
        *extra,
        admin_value(ADMIN_INDEX, owner, parse_admin_permissions(catalog.OWNER_PERMISSIONS)),
    ]
    try:
        with session.begin_nested():  # a refusal after a partial write leaves nothing behind
            handle = _register(session, identity, name, record, mint=bool(form["mint"]))
            if template_name is not None or checked:
                catalog.set_attributes(session, parse_handle(handle), template_name, checked, identity.principal)
    except HandleAlreadyExists:
        errors["suffix"] = message(N_("This identifier is already registered."))
        return _register_page(session, request, identity, form=form, errors=errors, status_code=422)
    except DomainError as err:
        errors["form"] = message(N_("The identifier could not be registered: %(reason)s"), reason=err.message)
        return _register_page(session, request, identity, form=form, errors=errors, status_code=422)
    audit_object(request, "handle", handle)
    return redirect(record_url(handle), notice=N_("Identifier registered."))


# --- filings (备案) ----------------------------------------------------------------------------


EMPTY_FILING = {
    "prefix": "",
    "parent": "",
    "name": "",
    "credit_code": "",
    "address": "",
    "contact_name": "",
    "contact_phone": "",
    "contact_email": "",
    "industry": "",
}
# Longest accepted input per field, as the API's request model allows.
FILING_LIMITS = {
    "prefix": 255,
    "parent": 255,
    "name": 200,
    "credit_code": 18,
    "address": 500,
    "contact_name": 100,
    "contact_phone": 40,
    "contact_email": 200,
    "industry": 200,
}
OPTIONAL_FILING_FIELDS = frozenset({"contact_email"})
# Where a refusal from the filing service belongs on the form, by its error code.
FILING_ERROR_FIELDS = {"invalid_credit_code": "credit_code", "parent_not_homed": "parent", "prefix_exists": "prefix"}


def _filings_page(
    session: Session,
    request: Request,
    identity: ConsoleIdentity,
    *,
    form: dict[str, str] | None = None,
    errors: Errors | None = None,
    action_error: Message | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    actor = identity.principal
    filings = sorted(FilingService(session).list(actor), key=lambda f: f.created_at, reverse=True)
    decides = identity.can("platform.write")
    tenants = {t.id: t.display_name or t.name for t in AccessService(session).list_tenants(actor)} if decides else {}
    context: dict[str, Any] = {
        "page_title": N_("Prefix filings"),
        "pending": [f for f in filings if f.status == PENDING] if decides else [],
        "filings": filings,
        "tenants": tenants,
        "decides": decides,
        "can_apply": identity.can("identifiers.write"),
        "form": form or EMPTY_FILING,
        "errors": errors or {},
        "action_error": action_error,
        "min_secret_length": MIN_SECRET_LENGTH,
    }
    return render(request, "identifiers/filings.html", context, status_code=status_code)


@pages_router.get(FILINGS_PATH, response_class=HTMLResponse)
def filings_page(request: Request, identity: Reader, session: DbSession) -> HTMLResponse:
    return _filings_page(session, request, identity)


@pages_router.post(FILINGS_PATH, dependencies=CSRF)
def apply_for_prefix(
    request: Request,
    *,
    identity: Writer,
    session: DbSession,
    prefix: FormText = "",
    parent: FormText = "",
    name: FormText = "",
    credit_code: FormText = "",
    address: FormText = "",
    contact_name: FormText = "",
    contact_phone: FormText = "",
    contact_email: FormText = "",
    industry: FormText = "",
    secret: FormText = "",
    secret_confirm: FormText = "",
) -> Response:
    form = {
        "prefix": prefix.strip(),
        "parent": parent.strip(),
        "name": name.strip(),
        "credit_code": credit_code.strip().upper(),
        "address": address.strip(),
        "contact_name": contact_name.strip(),
        "contact_phone": contact_phone.strip(),
        "contact_email": contact_email.strip(),
        "industry": industry.strip(),
    }
    errors: Errors = {}
    for field, limit in FILING_LIMITS.items():
        if not form[field] and field not in OPTIONAL_FILING_FIELDS:
            errors[field] = message(N_("Required."))
        elif len(form[field]) > limit:
            errors[field] = message(N_("Use at most %(count)s characters."), count=limit)
    if len(secret) < MIN_SECRET_LENGTH:
        errors["secret"] = message(N_("At least %(count)s characters."), count=MIN_SECRET_LENGTH)
    elif secret != secret_confirm:
        errors["secret_confirm"] = message(N_("The two entries differ."))
    if errors:
        return _filings_page(session, request, identity, form=form, errors=errors, status_code=422)
    company = CompanyDetails(
        name=form["name"],
        credit_code=form["credit_code"],
        address=form["address"],
        contact_name=form["contact_name"],
        contact_phone=form["contact_phone"],
        industry=form["industry"],
        contact_email=form["contact_email"],
    )
    try:
        with session.begin_nested():
            record = FilingService(session).apply(identity.principal, form["prefix"], form["parent"], company, secret)
    except (Invalid, Conflict) as err:
        field = FILING_ERROR_FIELDS.get(err.instance_code, "form")
        errors[field] = message(N_("The application was refused: %(reason)s"), reason=err.message)
        return _filings_page(session, request, identity, form=form, errors=errors, status_code=422)
    audit_object(request, "filing", record.id)
    return redirect(FILINGS_PATH, notice=N_("Application submitted. A platform operator will review it."))


@pages_router.post(FILINGS_PATH + "/{filing_id}/approve", dependencies=CSRF)
def approve_filing(request: Request, filing_id: str, identity: Reader, session: DbSession) -> Response:
    record = FilingService(session).approve(identity.principal, filing_id)  # 404, then operator-only
    audit_object(request, "filing", record.id)
    return redirect(FILINGS_PATH, notice=N_("Filing approved. The prefix is open for registration."))


@pages_router.post(FILINGS_PATH + "/{filing_id}/reject", dependencies=CSRF)
def reject_filing(
    request: Request, filing_id: str, *, identity: Reader, session: DbSession, reason: FormText = ""
) -> Response:
    service = FilingService(session)
    record = service.get(identity.principal, filing_id)  # another tenant's filing is 404 before anything else
    if not reason.strip():
        identity.principal.require("platform.write")
        problem = message(N_("Give a reason for rejecting %(prefix)s."), prefix=record.prefix)
        return _filings_page(session, request, identity, action_error=problem, status_code=422)
    service.reject(identity.principal, filing_id, reason[:2000])
    audit_object(request, "filing", record.id)
    return redirect(FILINGS_PATH, notice=N_("Filing rejected."))


__all__ = ["FILINGS_PATH", "REGISTER_PATH", "SEARCH_PATH", "pages_router"]
