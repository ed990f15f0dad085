"""Console pages of anti-counterfeit codes: the consumer's verification page, and the operators' batches and alerts.

The consumer page is public: `/v/01/<gtin>/.../21/<serial>?...` (what a code's URI opens when the
resolver base is this platform's `/v`) and `/verify?uri=...` (a form to type or paste a code). It
answers like `GET /api/traceability/verify` and records the scan, then offers to tell where the
product was bought (a country, or the phone's position through `verify.js`; the console's CSP
forbids inline scripts). A cookie holding the scan's token lets the same browser see its answer
again for an hour, after a reload or a language switch, without counting another scan (which
would make a single-use code `already_used`), and give the scan its place.

The operators' pages list batches, issue one, show one with its first code as a QR code, export
its codes as CSV (the API route, with the console session), recall or decommission it, and list
alerts. Thin: read the query or the form, call the service, render or redirect.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import segno
from fastapi import APIRouter, BackgroundTasks, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from iip.api.deps import DbSession, audit_object, client_address, get_runtime
from iip.console.forms import FormState, clean_filter, page_number, url_with
from iip.console.web import (
    N_,
    ConsoleIdentity,
    OptionalConsolePrincipal,
    anonymous_csrf_ok,
    console_permission,
    csrf_protect,
    redirect,
    render,
    request_language,
    safe_next,
    secure_cookies,
    tokens_match,
)
from iip.kernel.errors import DomainError, Forbidden
from iip.kernel.module import Page
from iip.traceability.authenticity import geo
from iip.traceability.authenticity.codes import expiry_date
from iip.traceability.authenticity.models import CodeBatch
from iip.traceability.authenticity.router import API, VERIFY_PREFIX, default_resolver, public_degrees, publish_later
from iip.traceability.authenticity.schemas import MAX_BATCH, AlertKind, CodeStatus, MarkKind
from iip.traceability.authenticity.service import (
    LOCATE_WINDOW,
    CodeService,
    IssueRequest,
    ScanContext,
    Verification,
    VerificationService,
)

pages_router = APIRouter(include_in_schema=False)

BATCHES_PATH = "/traceability/codes"
ALERTS_PATH = "/traceability/code-alerts"
VERIFY_PATH = "/verify"
LOCATION_PATH = "/verify/location"
SCAN_COOKIE = "iip_code_scan"
TEMPLATES = "traceability/authenticity"
BATCH_PAGE_SIZE = 25
ALERT_PAGE_SIZE = 50
BATCH_ALERTS = 20
MAX_MARKET_LINES = 50

PAGES = (
    Page(BATCHES_PATH, N_("Product codes"), "traceability.read", "stamp"),
    Page(ALERTS_PATH, N_("Code alerts"), "traceability.read", "alert"),
)

Reader = Annotated[ConsoleIdentity, Depends(console_permission("traceability.read"))]
Writer = Annotated[ConsoleIdentity, Depends(console_permission("traceability.write"))]
CSRF = [Depends(csrf_protect)]
FormText = Annotated[str, Form()]


@dataclass(frozen=True, slots=True)
class StatusText:
    title: str
    explanation: str
    tone: str  # success, warning, danger: the colour of the answer


STATUS_TEXT: dict[CodeStatus, StatusText] = {
    CodeStatus.GENUINE: StatusText(
        N_("Genuine product"), N_("This code was issued by the brand owner and its signature is intact."), "success"
    ),
    CodeStatus.UNKNOWN: StatusText(
        N_("Unknown code"),
        N_("No brand owner on this platform issued this code, or it was altered. The product may be counterfeit."),
        "danger",
    ),
    CodeStatus.RECALLED: StatusText(
        N_("Recalled product"),
        N_("The brand owner has recalled this product. Do not use it; contact the seller or the brand owner."),
        "danger",
    ),
    CodeStatus.DECOMMISSIONED: StatusText(
        N_("Code no longer valid"),
        N_("The brand owner has taken this code out of use: the item was decommissioned or destroyed."),
        "danger",
    ),
    CodeStatus.ALREADY_USED: StatusText(
        N_("Code already scanned"),
        N_("This single-use code has been scanned before. If it was not you, the product may be a copy."),
        "warning",
    ),
}
ALERT_KINDS: dict[str, str] = {
    AlertKind.REPEATED_SCAN: N_("Single-use code scanned again"),
    AlertKind.OUTSIDE_MARKET: N_("Scanned outside the intended market"),
    AlertKind.FAR_FROM_MARKET: N_("Scanned far from the intended market"),
    AlertKind.IMPOSSIBLE_TRAVEL: N_("Impossible travel between scans"),
}
MARK_KINDS: dict[str, str] = {MarkKind.RECALL: N_("Recall"), MarkKind.DECOMMISSION: N_("Decommission")}


# --- places


def place_name(code: str | None, language: str) -> str:
    """A country (or subdivision) code with the country's name in the page's language."""
    if not code:
        return ""
    from babel import Locale

    name = Locale.parse(language).territories.get(code[:2], code[:2])
    return name if len(code) == 2 else f"{name} ({code})"


def country_options(language: str) -> list[tuple[str, str]]:
    from babel import Locale

    names = Locale.parse(language).territories
    return sorted(((code, names.get(code, code)) for code in geo.known_countries()), key=lambda item: item[1])


def lenient_place(place: str, latitude: str, longitude: str) -> geo.Place:
    """What a scanner added to the URL or a form gave; anything malformed is left out, not refused."""
    code = None
    if place.strip():
        try:
            code = geo.place_code(place[:6])
        except geo.PlaceError:
            code = None
    point = None
    try:
        point = geo.check_point(float(latitude[:30]), float(longitude[:30]))
    except (ValueError, geo.PlaceError):
        point = None
    return geo.Place(code, point)


# --- the consumer's page


def _result_context(request: Request, result: Verification) -> dict[str, Any]:
    language = request_language(request)
    first = result.first_scan
    return {
        "page_title": STATUS_TEXT[result.status].title,
        "result": result,
        "status": result.status.value,
        "text": STATUS_TEXT[result.status],
        "link": result.link,
        "expiry": result.expiry,
        "first_scan_place": "" if first is None else place_name(first.place, language),
        "first_scan_point": None
        if first is None or first.latitude is None
        else (public_degrees(first.latitude), public_degrees(first.longitude)),
        "can_locate": result.scan_id is not None and result.batch is not None and not result.located,
        "countries": country_options(language),
    }


def _verification_page(
    request: Request, background: BackgroundTasks, session: Session, uri: str, place: geo.Place
) -> HTMLResponse:
    service = VerificationService(session, get_runtime(request).settings)
    token = request.cookies.get(SCAN_COOKIE, "")[:64]
    result = service.revisit(uri, token) if token else None
    new_token = ""
    if result is None:
        context = ScanContext(place, request.headers.get("user-agent", "")[:300], client_address(request))
        result = service.verify(uri, context)
        publish_later(request, background, service.events)
        if result.scan_id is not None and result.batch is not None:
            new_token = service.location_token(result.scan_id)
    values = _result_context(request, result)
    values["here"] = _here(request)
    response = render(request, f"{TEMPLATES}/verify.html", values)
    if new_token:
        response.set_cookie(
            SCAN_COOKIE,
            new_token,
            max_age=int(LOCATE_WINDOW.total_seconds()),
            path="/",
            httponly=True,
            samesite="lax",
            secure=secure_cookies(request),
        )
    return response


def _here(request: Request) -> str:
    # The raw path keeps a %2F inside a lot, which the decoded path would turn into a separator.
    raw: bytes = request.scope.get("raw_path") or request.url.path.encode()
    query = request.url.query
    return raw.decode("utf-8", "replace") + (f"?{query}" if query else "")


@pages_router.get(VERIFY_PREFIX + "/{code:path}", response_class=HTMLResponse)
def code_page(
    request: Request,
    background: BackgroundTasks,
    session: DbSession,
    code: str,
    place: str = "",
    lat: str = "",
    lon: str = "",
) -> HTMLResponse:
    """What a scanned code opens: its answer, in the visitor's language."""
    return _verification_page(request, background, session, _here(request)[:2000], lenient_place(place, lat, lon))


@pages_router.get(VERIFY_PATH, response_class=HTMLResponse)
def verify_page(
    request: Request,
    background: BackgroundTasks,
    session: DbSession,
    uri: str = "",
    place: str = "",
    lat: str = "",
    lon: str = "",
) -> HTMLResponse:
    """A form to type or paste a code; with `uri`, its answer."""
    if not uri.strip():
        return render(request, f"{TEMPLATES}/verify_form.html", {"page_title": N_("Check a product code"), "uri": ""})
    return _verification_page(request, background, session, uri[:2000], lenient_place(place, lat, lon))


@pages_router.post(LOCATION_PATH)
def give_location(
    request: Request,
    background: BackgroundTasks,
    *,
    session: DbSession,
    identity: OptionalConsolePrincipal,
    csrf_token: FormText = "",
    place: FormText = "",
    lat: FormText = "",
    lon: FormText = "",
    next_path: Annotated[str, Form(alias="next")] = VERIFY_PATH,
) -> Response:
    """Where the visitor says the product was bought or scanned, for the scan its cookie names."""
    allowed = tokens_match(csrf_token, identity.csrf_token) if identity else anonymous_csrf_ok(request, csrf_token)
    if not allowed:
        raise Forbidden("missing or wrong CSRF token", code="csrf")
    target = safe_next(next_path, VERIFY_PATH)
    token = request.cookies.get(SCAN_COOKIE, "")[:64]
    service = VerificationService(session, get_runtime(request).settings)
    located = service.locate(token, lenient_place(place, lat, lon)) if token else None
    if located is None:
        return redirect(target, notice=N_("The place could not be recorded: the check is over an hour old or has one."))
    publish_later(request, background, service.events)
    return redirect(target, notice=N_("Thank you. The place was recorded."))


# --- operators: batches


def _service(request: Request, session: Session, identity: ConsoleIdentity) -> CodeService:
    return CodeService(session, identity.principal, get_runtime(request).settings)


def batch_url(batch: CodeBatch) -> str:
    return f"{BATCHES_PATH}/{batch.id}"


def parse_markets(text: str, form: FormState) -> list[geo.Market]:
    """One market a line: `CN`, `CN-GD`, or a code and a point: `CN-GD 23.13 113.26`."""
    markets: list[geo.Market] = []
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > MAX_MARKET_LINES:
        form.error("markets", N_("At most %(count)s markets."), count=MAX_MARKET_LINES)
        return []
    for number, line in enumerate(lines, start=1):
        parts = [p for p in re.split(r"[\s,;]+", line) if p]
        try:
            if len(parts) == 1:
                markets.append(geo.Market.of(parts[0]))
            elif len(parts) == 3:
                markets.append(geo.Market.of(parts[0], float(parts[1]), float(parts[2])))
            else:
                raise geo.PlaceError("one code, or a code, a latitude and a longitude")
        except (ValueError, geo.PlaceError):
            form.error("markets", N_("Line %(line)s: write CN, CN-GD or CN-GD 23.13 113.26."), line=number)
            return []
    return markets


EMPTY_ISSUE = {"gtin": "", "count": "", "lot": "", "expiry": "", "markets": "", "single_use": "on", "note": ""}


def _batches_context(
    request: Request, session: Session, identity: ConsoleIdentity, gtin: str, lot: str, page: str
) -> dict[str, Any]:
    service = _service(request, session, identity)
    filters = {"gtin": clean_filter(gtin, 14), "lot": clean_filter(lot, 20)}
    number = page_number(page)
    gtin_filter = filters["gtin"] if filters["gtin"].isdigit() else None
    rows, total = service.list_batches(
        gtin=gtin_filter,
        lot=filters["lot"] or None,
        offset=(number - 1) * BATCH_PAGE_SIZE,
        limit=BATCH_PAGE_SIZE,
    )
    pages = max(1, -(-total // BATCH_PAGE_SIZE))
    return {
        "page_title": N_("Product codes"),
        "rows": [{"batch": row, "state": service.batch_state(row), "url": batch_url(row)} for row in rows],
        "total": total,
        "filters": filters,
        "page": number,
        "pages": pages,
        "previous_url": url_with(BATCHES_PATH, {**filters, "page": number - 1}) if number > 1 else "",
        "next_url": url_with(BATCHES_PATH, {**filters, "page": number + 1}) if number < pages else "",
        "can_issue": identity.can("traceability.write"),
        "max_batch": MAX_BATCH,
        "expiry_date": expiry_date,
        "show_tenant": identity.principal.is_platform,
    }


@pages_router.get(BATCHES_PATH, response_class=HTMLResponse)
def batches_page(
    request: Request, identity: Reader, session: DbSession, gtin: str = "", lot: str = "", page: str = ""
) -> HTMLResponse:
    context = _batches_context(request, session, identity, gtin, lot, page)
    return render(request, f"{TEMPLATES}/batches.html", {**context, "form": EMPTY_ISSUE, "errors": {}})


def _issue_request(form: FormState, markets: Sequence[geo.Market]) -> IssueRequest | None:
    values = form.values
    if not values["gtin"]:
        form.error("gtin", N_("Enter the GTIN."))
    count = int(values["count"]) if values["count"].isdigit() else 0
    if not 0 < count <= MAX_BATCH:
        form.error("count", N_("Enter a number from 1 to %(count)s."), count=MAX_BATCH)
    expiry = None
    if values["expiry"]:
        try:
            expiry = dt.date.fromisoformat(values["expiry"])
        except ValueError:
            form.error("expiry", N_("Enter a date such as 2027-12-31."))
    if not form.ok:
        return None
    return IssueRequest(
        gtin=values["gtin"],
        count=count,
        lot=values["lot"] or None,
        expiry=expiry,
        markets=markets,
        single_use=bool(values["single_use"]),
        note=values["note"],
    )


@pages_router.post(BATCHES_PATH, dependencies=CSRF)
def issue_batch(
    request: Request,
    *,
    identity: Writer,
    session: DbSession,
    gtin: FormText = "",
    count: FormText = "",
    lot: FormText = "",
    expiry: FormText = "",
    markets: FormText = "",
    single_use: FormText = "",
    note: FormText = "",
) -> Response:
    form = FormState(
        {
            "gtin": gtin.strip()[:14],
            "count": count.strip()[:7],
            "lot": lot.strip()[:20],
            "expiry": expiry.strip()[:10],
            "markets": markets[:5000],
            "single_use": "on" if single_use else "",
            "note": note.strip()[:200].replace("\x00", ""),
        }
    )
    chosen = parse_markets(form.values["markets"], form)
    spec = _issue_request(form, chosen)
    if spec is not None:
        try:
            batch = _service(request, session, identity).issue(spec, default_resolver=default_resolver(request))
        except DomainError as err:
            form.error("gtin", N_("Not issued: %(reason)s"), reason=err.message)
        else:
            audit_object(request, "code_batch", batch.id)
            return redirect(batch_url(batch), notice=N_("The codes were issued."))
    context = _batches_context(request, session, identity, "", "", "")
    return render(
        request, f"{TEMPLATES}/batches.html", {**context, "form": form.values, "errors": form.errors}, status_code=422
    )


def qr_svg(uri: str) -> str:
    """The code as an inline SVG QR code (error correction M), for a test print."""
    return str(segno.make(uri, error="m").svg_inline(scale=3, dark="#111827"))


@pages_router.get(BATCHES_PATH + "/{batch_id}", response_class=HTMLResponse)
def batch_page(request: Request, batch_id: str, identity: Reader, session: DbSession) -> HTMLResponse:
    service = _service(request, session, identity)
    batch = service.get_batch(batch_id[:32])
    state = service.batch_state(batch)
    alerts, alert_total = service.list_alerts(batch_id=batch.id, limit=BATCH_ALERTS, tenant_id=batch.tenant_id)
    marks = [m for m in service.list_marks(gtin=batch.gtin, tenant_id=batch.tenant_id) if m.batch_id == batch.id]
    language = request_language(request)
    return render(
        request,
        f"{TEMPLATES}/batch.html",
        {
            "page_title": N_("Code batch"),
            "batch": batch,
            "state": state,
            "expiry": None if batch.expiry is None else expiry_date(batch.expiry),
            "markets": [
                {"name": place_name(m["code"], language), "point": (m.get("latitude"), m.get("longitude"))}
                for m in batch.markets
            ],
            "scanned": batch.scanned,
            "qr": qr_svg(state.example_uri) if state.example_uri else "",
            "export_url": f"{API}/code-batches/{batch.id}/codes.csv",
            "alerts": alerts,
            "alert_total": alert_total,
            "alert_kinds": ALERT_KINDS,
            "marks": marks,
            "mark_kinds": MARK_KINDS,
            "can_write": identity.can("traceability.write"),
        },
    )


@pages_router.post(BATCHES_PATH + "/{batch_id}/marks", dependencies=CSRF)
def mark_batch(
    request: Request, batch_id: str, *, identity: Writer, session: DbSession, kind: FormText = "", reason: FormText = ""
) -> Response:
    chosen = kind if kind in MARK_KINDS else MarkKind.RECALL.value
    mark = _service(request, session, identity).mark_batch(
        batch_id[:32], MarkKind(chosen), reason.strip()[:2000].replace("\x00", "")
    )
    audit_object(request, "code_mark", mark.id)
    done = N_("The batch was recalled.") if chosen == MarkKind.RECALL else N_("The batch was decommissioned.")
    return redirect(f"{BATCHES_PATH}/{mark.batch_id}", notice=done)


# --- operators: alerts


@pages_router.get(ALERTS_PATH, response_class=HTMLResponse)
def alerts_page(request: Request, identity: Reader, session: DbSession, kind: str = "", page: str = "") -> HTMLResponse:
    chosen = AlertKind(kind) if kind in ALERT_KINDS else None
    number = page_number(page)
    rows, total = _service(request, session, identity).list_alerts(
        kind=chosen, offset=(number - 1) * ALERT_PAGE_SIZE, limit=ALERT_PAGE_SIZE
    )
    pages = max(1, -(-total // ALERT_PAGE_SIZE))
    query = {"kind": chosen.value if chosen else ""}
    return render(
        request,
        f"{TEMPLATES}/alerts.html",
        {
            "page_title": N_("Code alerts"),
            "rows": rows,
            "total": total,
            "kind": query["kind"],
            "alert_kinds": ALERT_KINDS,
            "page": number,
            "pages": pages,
            "previous_url": url_with(ALERTS_PATH, {**query, "page": number - 1}) if number > 1 else "",
            "next_url": url_with(ALERTS_PATH, {**query, "page": number + 1}) if number < pages else "",
            "batches_path": BATCHES_PATH,
        },
    )
