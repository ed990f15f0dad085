"""Console pages of the EPCIS repository: capture by upload or paste, event search, a product's trace, recall.

- `/traceability/capture`: upload an EPCIS document (JSON/JSON-LD or XML), or paste one, in
  rollback or proceed mode through `CaptureService`, as `POST /epcis/capture` does (the body read by
  `document_body`, as the API reads it); a refused document lists every problem with its location.
  The capture jobs, newest first, a page at a time.
- `/traceability/events`: the standard query's most used parameters as a form (the fields carry
  the parameters' own names, so a search's address is the API's query string), run by
  `QueryService` a page at a time with its page tokens; one event with its fields and raw JSON-LD.
- `/traceability/trace?epc=...`: the address identifiers link to. The value goes to the query
  layer as given (URN, Digital Link, or an IIP Handle once the query layer resolves those) and
  what it resolves to is traced: the events naming it and its aggregation parents and children
  (a page at a time), the genealogy backward and forward as an inline SVG (`graph.py`), and its
  last known location and owner.
- `/traceability/recall`: a lot (GTIN and lot, or an LGTIN / EPC class) or a serial; every
  affected product with its last known location and owner (`recall.recall`), paged, with counts,
  and the FSMA 204 spreadsheet as CSV or XLSX (`recall.export`).

Thin: read the query or the form, call the services, render. Domain errors of a search or trace
show beside its form; the services scope everything to the principal's tenant.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from iip.api.deps import DbSession, audit_object
from iip.api.problems import status_for
from iip.console.forms import FormState, clean_filter, format_number, page_number, url_with
from iip.console.web import N_, ConsoleIdentity, console_permission, csrf_protect, redirect, render
from iip.kernel.errors import DomainError, Invalid
from iip.kernel.module import Page
from iip.traceability import document_body, genealogy, master_data, recall
from iip.traceability.capture import (
    CAPTURE_FILE_SIZE_LIMIT,
    MODES,
    CaptureService,
    CaptureTooLarge,
    DocumentRejected,
)
from iip.traceability.capture_validation import Syntax
from iip.traceability.epcis.documents import EVENT_TYPES
from iip.traceability.epcis.identifiers import DL_BASE
from iip.traceability.epcis.master_data import Description
from iip.traceability.genealogy import Genealogy, Whereabouts
from iip.traceability.indexing import checked_identifier
from iip.traceability.models import CaptureJob, Event
from iip.traceability.query import CLASS_ROLES, INSTANCE_ROLES, EpcMatch, EventQuery, QueryPage, parse_query
from iip.traceability.query_service import QueryService
from iip.traceability.workbench import views
from iip.traceability.workbench.graph import layout
from iip.traceability.workbench.views import EVENT_PATH, TRACE_PATH, event_url, trace_url

pages_router = APIRouter(include_in_schema=False)

CAPTURE_PATH = "/traceability/capture"
EVENTS_PATH = "/traceability/events"
RECALL_PATH = "/traceability/recall"
RECALL_EXPORT_PATH = "/traceability/recall/export"
TEMPLATES = "traceability/workbench"
JOB_PAGE_SIZE = 20
PER_PAGE_CHOICES = (10, 25, 50, 100)
DEFAULT_PER_PAGE = 25
TIMELINE_PAGE_SIZE = 50
TRACE_NODE_LIMIT = 500  # nodes walked per direction on the trace page; recalls walk them all
MAX_RELATIVES = 100  # aggregation parents and children whose events join a product's timeline
RECALL_PAGE_SIZE = 50
RECALL_TOP = 10  # owners and locations listed in a recall's counts
SHOWN_IDENTIFIERS = 3  # per event in a list

PAGES = (
    Page(CAPTURE_PATH, N_("EPCIS capture"), "traceability.read", "plus"),
    Page(EVENTS_PATH, N_("Event search"), "traceability.read", "search"),
    Page(TRACE_PATH, N_("Product trace"), "traceability.read", "activity"),
    Page(RECALL_PATH, N_("Recall workbench"), "traceability.read", "alert"),
)

Reader = Annotated[ConsoleIdentity, Depends(console_permission("traceability.read"))]
Writer = Annotated[ConsoleIdentity, Depends(console_permission("traceability.write"))]
CSRF = [Depends(csrf_protect)]
FormText = Annotated[str, Form()]

MODE_LABELS: dict[str, str] = {
    "rollback": N_("All or nothing: one invalid event and nothing is stored"),
    "proceed": N_("Store the valid events and report the others"),
}
IDENTIFIER_TYPE_LABELS: dict[str, str] = {
    "lot": N_("Batch/lot"),
    "product class": N_("Product class"),
    "serial": N_("Serialised item"),
    "logistic unit (SSCC)": N_("Logistic unit (SSCC)"),
    "returnable asset (GRAI)": N_("Returnable asset (GRAI)"),
    "instance": N_("Item"),
}
RELATION_LABELS: dict[str, str] = {
    "input_of": N_("Went into (transformation)"),
    "contained_in": N_("Packed in (aggregation)"),
}
CTE_LABELS: dict[str, str] = {
    "Shipping": N_("Shipping"),
    "Receiving": N_("Receiving"),
    "Initial Packing": N_("Initial packing"),
    "Packing": N_("Packing"),
    "Transformation": N_("Transformation"),
}


def _shared(identity: ConsoleIdentity) -> dict[str, Any]:
    """What every workbench template uses to name and link things."""
    return {
        "trace_url": trace_url,
        "event_url": event_url,
        "event_types": views.EVENT_TYPE_LABELS,
        "action_labels": views.ACTION_LABELS,
        "cbv": views.cbv,
        "place": views.place,
        "party": views.party,
        "short_label": views.short_label,
        "local_time": views.local_event_time,
        "relation_labels": RELATION_LABELS,
        "number": format_number,
        "show_tenant": identity.principal.is_platform,
    }


def _error_message(form: FormState, name: str, err: DomainError, msgid: str) -> None:
    form.error(name, msgid, reason=err.message)


# --- capture


def job_url(job: CaptureJob) -> str:
    return f"{CAPTURE_PATH}/{job.id}"


def job_state(job: CaptureJob) -> Literal["running", "success", "partial", "failed"]:
    if job.running:
        return "running"
    if job.success:
        return "success"
    return "partial" if job.captured_count else "failed"


def _jobs_context(session: Session, identity: ConsoleIdentity, token: str) -> dict[str, Any]:
    service = CaptureService(session)
    try:
        page = service.jobs(identity.principal, per_page=JOB_PAGE_SIZE, page_token=token or None)
    except Invalid:  # a token altered by hand: the newest jobs
        token = ""
        page = service.jobs(identity.principal, per_page=JOB_PAGE_SIZE)
    return {
        "jobs": [{"job": job, "state": job_state(job), "url": job_url(job)} for job in page.jobs],
        "next_jobs_url": url_with(CAPTURE_PATH, {"jobs": page.next_token}) if page.next_token else "",
        "newest_jobs_url": CAPTURE_PATH if token else "",
    }


def _capture_context(session: Session, identity: ConsoleIdentity, token: str = "") -> dict[str, Any]:
    return {
        "page_title": N_("EPCIS capture"),
        "can_capture": identity.can("traceability.write"),
        "mode_labels": MODE_LABELS,
        "size_limit_mb": CAPTURE_FILE_SIZE_LIMIT // (1024 * 1024),
        "refused": [],
        **_jobs_context(session, identity, token),
        **_shared(identity),
    }


@pages_router.get(CAPTURE_PATH, response_class=HTMLResponse)
def capture_page(request: Request, identity: Reader, session: DbSession, jobs: str = "") -> HTMLResponse:
    context = _capture_context(session, identity, clean_filter(jobs, 200))
    form = {"mode": "rollback", "text": ""}
    return render(request, f"{TEMPLATES}/capture.html", {**context, "form": form, "errors": {}})


# Why a body is no document to read (`document_body.BodyRefused`), for an upload and for pasted text.
UPLOAD_REFUSALS: dict[str, str] = {
    "empty": N_("The file is empty."),
    "too_large": N_("The file is larger than %(size)s MB: split it into several documents."),
    "media_type": N_("Not an EPCIS document: upload JSON, JSON-LD or XML."),
}
PASTE_REFUSALS: dict[str, str] = {
    "empty": N_("The pasted text is empty."),
    "too_large": N_("The pasted text is larger than %(size)s MB: split it into several documents."),
    "not_text": N_("The pasted text holds characters that are not Unicode."),
}


def _submitted(document: UploadFile | None, text: str, form: FormState) -> tuple[bytes, Syntax | None]:
    """The document the form carries, uploaded or pasted (one, not both), and the syntax its file type declares."""
    uploaded = document is not None and bool(document.filename)
    if uploaded and text.strip():
        form.error("document", N_("Upload a file or paste a document, not both."))
        return b"", None
    if not uploaded and not text.strip():
        form.error("document", N_("Choose an EPCIS document to upload, or paste one (JSON, JSON-LD or XML)."))
        return b"", None
    size = CAPTURE_FILE_SIZE_LIMIT // (1024 * 1024)
    if document is not None and uploaded:
        try:
            syntax = document_body.media_type_syntax(document.content_type)
            return document_body.read_file(document.file), syntax
        except document_body.BodyRefused as refused:
            form.error("document", UPLOAD_REFUSALS[refused.reason], size=size)
            return b"", None
    try:
        return document_body.pasted(text), None
    except document_body.BodyRefused as refused:
        form.error("text", PASTE_REFUSALS[refused.reason], size=size)
        return b"", None


@pages_router.post(CAPTURE_PATH, dependencies=CSRF)
def upload_document(
    request: Request,
    *,
    identity: Writer,
    session: DbSession,
    document: Annotated[UploadFile | None, File()] = None,
    text: FormText = "",
    mode: FormText = "rollback",
) -> Response:
    """Capture an uploaded or pasted document; its job's page, or the form again with every problem located."""
    form = FormState({"mode": mode if mode in MODES else "rollback", "text": text})
    data, syntax = _submitted(document, text, form)
    field = "text" if text.strip() else "document"
    refused: list[dict[str, Any]] = []
    if form.ok:
        try:
            job = CaptureService(session).capture(identity.principal, data, syntax=syntax, mode=form.values["mode"])
        except DocumentRejected as err:
            form.error(field, N_("The document was refused and nothing was stored: %(reason)s"), reason=err.message)
            refused = list(err.details.get("errors") or [])
        except CaptureTooLarge as err:
            _error_message(form, field, err, N_("Too large to capture at once: %(reason)s"))
        except DomainError as err:
            _error_message(form, field, err, N_("Not captured: %(reason)s"))
        else:
            audit_object(request, "capture_job", job.id)
            notice = N_("The document was captured.") if job.success else None
            return redirect(job_url(job), notice=notice)
    context = {**_capture_context(session, identity), "refused": refused}
    return render(
        request, f"{TEMPLATES}/capture.html", {**context, "form": form.values, "errors": form.errors}, status_code=422
    )


def _record_window(job: CaptureJob) -> dict[str, str]:
    """Search parameters for the events a job recorded: its record times lie between its start and end."""
    start = job.created_at.astimezone(dt.UTC).replace(microsecond=0)
    end = (job.finished_at or job.created_at).astimezone(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=1)
    return {"GE_recordTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "LT_recordTime": end.strftime("%Y-%m-%dT%H:%M:%S")}


@pages_router.get(CAPTURE_PATH + "/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str, identity: Reader, session: DbSession) -> HTMLResponse:
    job = CaptureService(session).job(identity.principal, job_id[:64])
    return render(
        request,
        f"{TEMPLATES}/job.html",
        {
            "page_title": N_("Capture job"),
            "job": job,
            "state": job_state(job),
            "mode_labels": MODE_LABELS,
            "events_url": url_with(EVENTS_PATH, _record_window(job)) if job.captured_count else "",
            **_shared(identity),
        },
    )


# --- event search

# The form's fields are the standard query's parameters.
TEXT_PARAMETERS = (
    "EQ_bizStep",
    "EQ_disposition",
    "EQ_readPoint",
    "EQ_bizLocation",
    "MATCH_epc",
    "MATCH_anyEPC",
    "MATCH_parentID",
)
TIME_PARAMETERS = ("GE_eventTime", "LT_eventTime", "GE_recordTime", "LT_recordTime")
SEARCH_PARAMETERS = ("eventType", *TIME_PARAMETERS, *TEXT_PARAMETERS, "orderDirection")
_TIME_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?")


@dataclass(frozen=True)
class EventRow:
    event: Event
    identifiers: list[views.Named]
    more: int


def event_rows(events: Sequence[Event]) -> list[EventRow]:
    rows = []
    for event in events:
        named = views.named_identifiers(event.body)
        rows.append(EventRow(event, named[:SHOWN_IDENTIFIERS], max(0, len(named) - SHOWN_IDENTIFIERS)))
    return rows


def _search_form(params: Mapping[str, str]) -> dict[str, str]:
    values = {name: clean_filter(params.get(name, ""), 500) for name in SEARCH_PARAMETERS}
    if values["eventType"] not in EVENT_TYPES:
        values["eventType"] = ""
    if values["orderDirection"] not in ("ASC", "DESC"):
        values["orderDirection"] = "DESC"
    return values


def _standard_query(values: Mapping[str, str], form: FormState) -> EventQuery | None:
    """The standard query the form asks for; None (and the field at fault marked) when it is refused."""
    for name in TIME_PARAMETERS:
        if values[name] and not _TIME_TEXT.fullmatch(values[name]):
            form.error(name, N_("Enter a time such as 2024-03-02T09:00 (UTC)."))
    if not form.ok:
        return None
    given = {name: value for name, value in values.items() if value}
    try:
        return parse_query({**given, "orderBy": "eventTime"})
    except Invalid as err:
        parameter = str(err.details.get("parameter", ""))
        form.error(
            parameter if parameter in values else "query", N_("Not a valid search: %(reason)s"), reason=err.message
        )
        return None


@pages_router.get(EVENTS_PATH, response_class=HTMLResponse)
def events_page(
    request: Request,
    identity: Reader,
    session: DbSession,
    per_page: Annotated[str, Query(alias="perPage")] = "",
    token: Annotated[str, Query(alias="nextPageToken")] = "",
    page: str = "",
) -> HTMLResponse:
    values = _search_form(request.query_params)
    size = int(per_page) if per_page.isdigit() and int(per_page) in PER_PAGE_CHOICES else DEFAULT_PER_PAGE
    form = FormState(values)
    query = _standard_query(values, form)
    number = page_number(page)
    result: QueryPage | None = None
    restarted = False
    if query is not None:
        service = QueryService(session, identity.principal)
        token = clean_filter(token, 2000)
        try:
            result = service.events(query, token or None, size, None)
        except Invalid as err:
            if err.instance_code != "page_token":
                raise
            result, number, restarted = service.events(query, None, size, None), 1, True
    kept = {**{k: v for k, v in values.items() if v}, "perPage": size if size != DEFAULT_PER_PAGE else ""}
    next_url = ""
    if result is not None and result.next_page_token:
        next_url = url_with(EVENTS_PATH, {**kept, "nextPageToken": result.next_page_token, "page": number + 1})
    status = 200 if form.ok else 422
    return render(
        request,
        f"{TEMPLATES}/events.html",
        {
            "page_title": N_("Event search"),
            "form": values,
            "errors": form.errors,
            "per_page": size,
            "per_page_choices": PER_PAGE_CHOICES,
            "rows": event_rows(result.events) if result is not None else [],
            "searched": result is not None,
            "page": number,
            "next_url": next_url,
            "first_url": url_with(EVENTS_PATH, kept) if number > 1 else "",
            "restarted": restarted,
            "biz_steps": sorted(views.BIZ_STEP_LABELS),
            "dispositions": sorted(views.DISPOSITION_LABELS),
            **_shared(identity),
        },
        status_code=status,
    )


@dataclass(frozen=True)
class EventView:
    event: Event
    identifiers: list[views.Named]
    links: list[views.Link]
    raw: str
    job_url: str


@pages_router.get(EVENT_PATH, response_class=HTMLResponse)
def event_page(
    request: Request, identity: Reader, session: DbSession, event_id: Annotated[str, Query(alias="id")] = ""
) -> Response:
    wanted = clean_filter(event_id, 500)
    if not wanted:
        return redirect(EVENTS_PATH)
    events = QueryService(session, identity.principal).event(wanted, None)
    shown = [
        EventView(
            event,
            views.named_identifiers(event.body),
            views.links_of(event.body),
            views.raw_json_ld(event),
            f"{CAPTURE_PATH}/{event.capture_job_id}" if event.capture_job_id else "",
        )
        for event in events
    ]
    names: dict[str, Description] = {}
    for event in events:  # each event in its own tenant's words (a platform operator may see several)
        places = [event.read_point, event.biz_location, *(link.value for link in views.links_of(event.body))]
        names.update(master_data.descriptions(session, event.tenant_id, places))
    context = {"page_title": N_("EPCIS event"), "shown": shown, "names": names, **_shared(identity)}
    return render(request, f"{TEMPLATES}/event.html", context)


# --- a product's trace


@dataclass(frozen=True)
class Relative:
    """An identifier aggregated with the product: a container it is in, or an item it contains."""

    identifier: str
    relation: Literal["container", "content"]
    since: dt.datetime  # from when it held the product, or was held in it
    hops: int


def aggregation_relatives(root: str, backward: Genealogy, forward: Genealogy) -> dict[str, Relative]:
    """Containers (however deep) the product is in, and the items (not lots) it contains."""
    found: dict[str, Relative] = {}
    instance = {n.id for n in backward.nodes if n.kind == "instance"}
    sides: tuple[tuple[Genealogy, Literal["container", "content"]], ...] = (
        (forward, "container"),
        (backward, "content"),
    )
    for walked, relation in sides:
        step: dict[str, list[tuple[str, dt.datetime]]] = {}
        for edge in walked.edges:
            if edge.relation != "contained_in":
                continue
            near, far = (edge.source, edge.target) if relation == "container" else (edge.target, edge.source)
            if relation == "content" and far not in instance:
                continue
            step.setdefault(near, []).append((far, edge.event_time))
        frontier: list[tuple[str, dt.datetime | None, int]] = [(root, None, 0)]
        while frontier and len(found) < MAX_RELATIVES:
            reached: list[tuple[str, dt.datetime | None, int]] = []
            for node, since, hops in frontier:
                for far, when in step.get(node, ()):
                    if far == root or far in found or len(found) >= MAX_RELATIVES:
                        continue
                    start = when if since is None else max(since, when)
                    found[far] = Relative(far, relation, start, hops + 1)
                    reached.append((far, start, hops + 1))
            frontier = reached
    return found


@dataclass(frozen=True)
class TimelineEntry:
    event: Event
    own: bool  # names the product itself
    via: list[Relative]
    identifiers: list[views.Named]
    more: int


def timeline(events: Sequence[Event], root: str, relatives: Mapping[str, Relative]) -> list[TimelineEntry]:
    """The events of a page: a relative's only from the time it was aggregated with the product."""
    entries = []
    for event in events:
        names = set(views.canonical_identifiers(event.body))
        via = [relatives[n] for n in sorted(names) if n in relatives]
        own = root in names
        if not own and not any(r.since <= event.event_time for r in via):
            continue
        named = views.named_identifiers(event.body)
        entries.append(
            TimelineEntry(event, own, via, named[:SHOWN_IDENTIFIERS], max(0, len(named) - SHOWN_IDENTIFIERS))
        )
    return entries


@dataclass(frozen=True)
class Trace:
    root: str
    backward: Genealogy
    forward: Genealogy
    relatives: dict[str, Relative]
    events: QueryPage
    restarted: bool

    @property
    def whereabouts(self) -> Whereabouts | None:
        return self.forward.whereabouts.get(self.root)


def _trace(session: Session, identity: ConsoleIdentity, value: str, token: str) -> Trace:
    principal = identity.principal
    service = QueryService(session, principal)
    # The query layer says what the value names (and that some event names it).
    narrowed = service.epc_query(value, EventQuery(), None)
    root = narrowed.epc_matches[-1].exact[0]
    tenant = genealogy.tenant_for(session, principal, root) if principal.is_platform else None
    backward = genealogy.trace(session, principal, root, "backward", tenant=tenant, max_nodes=TRACE_NODE_LIMIT)
    forward = genealogy.trace(session, principal, root, "forward", tenant=tenant, max_nodes=TRACE_NODE_LIMIT)
    relatives = aggregation_relatives(root, backward, forward)
    match = EpcMatch((*INSTANCE_ROLES, *CLASS_ROLES), (root, *relatives))
    query = EventQuery(epc_matches=(match,), order_by="eventTime", descending=False)
    restarted = False
    try:
        events = service.events(query, token or None, TIMELINE_PAGE_SIZE, tenant)
    except Invalid as err:
        if err.instance_code != "page_token":
            raise
        events, restarted = service.events(query, None, TIMELINE_PAGE_SIZE, tenant), True
    return Trace(root, backward, forward, relatives, events, restarted)


def _node_rows(result: Genealogy) -> list[dict[str, Any]]:
    rows = []
    for node in result.nodes:
        if node.depth == 0:
            continue
        quantity, uom = result.quantities.get(node.id, (None, None))
        rows.append(
            {
                "node": node,
                "quantity": quantity,
                "uom": uom,
                "via": result.via.get(node.id, ""),
                "where": result.whereabouts.get(node.id),
            }
        )
    return rows


def _trace_names(session: Session, result: Trace) -> dict[str, Description]:
    """Names and addresses of the places and owners a trace page shows, from the traced tenant's master data."""
    located = [*result.forward.whereabouts.values(), *result.backward.whereabouts.values()]
    places = [value for where in located for value in (where.location, where.owner)]
    places += [event.biz_location or event.read_point for event in result.events.events]
    return master_data.descriptions(session, result.forward.tenant_id, places)


@pages_router.get(TRACE_PATH, response_class=HTMLResponse)
def trace_page(
    request: Request, identity: Reader, session: DbSession, epc: str = "", after: str = "", page: str = ""
) -> HTMLResponse:
    value = clean_filter(epc, 500)
    context: dict[str, Any] = {"page_title": N_("Product trace"), "epc": value, "error": None, **_shared(identity)}
    if not value:
        return render(request, f"{TEMPLATES}/trace.html", {**context, "trace": None})
    try:
        result = _trace(session, identity, value, clean_filter(after, 2000))
    except DomainError as err:
        form = FormState()
        form.error("epc", N_("No trace: %(reason)s"), reason=err.message)
        context.update(trace=None, error=form.errors["epc"])
        return render(request, f"{TEMPLATES}/trace.html", context, status_code=status_for(err))
    number = 1 if result.restarted else page_number(page)
    next_token = result.events.next_page_token
    context.update(
        trace=result,
        whereabouts=result.whereabouts,
        graph=layout(result.root, result.backward, result.forward),
        timeline=timeline(result.events.events, result.root, result.relatives),
        inputs=_node_rows(result.backward),
        outputs=_node_rows(result.forward),
        page=number,
        next_url=url_with(TRACE_PATH, {"epc": value, "after": next_token, "page": number + 1}) if next_token else "",
        first_url=url_with(TRACE_PATH, {"epc": value}) if number > 1 else "",
        recall_url=url_with(RECALL_PATH, {"identifier": result.root}),
        node_limit=TRACE_NODE_LIMIT,
        root_label=views.short_label(result.root, 60),
        names=_trace_names(session, result),
    )
    return render(request, f"{TEMPLATES}/trace.html", context)


# --- recall

GTIN_TEXT = re.compile(r"\d{8}|\d{12,14}")


def recall_subject(identifier: str, gtin: str, lot: str, form: FormState) -> tuple[str, str] | None:
    """("lot" or "serial", identifier) the form names; None with the field at fault marked."""
    if gtin or lot:
        if not GTIN_TEXT.fullmatch(gtin):
            form.error("gtin", N_("Enter the GTIN: 8, 12, 13 or 14 digits."))
        if not lot:
            form.error("lot", N_("Enter the lot as printed on the product."))
        if not form.ok:
            return None
        return "lot", f"{DL_BASE}/01/{gtin}/10/{quote(lot, safe='')}"
    if not identifier:
        return None
    try:
        kind = genealogy.identifier_kind(checked_identifier(identifier))
    except DomainError as err:
        _error_message(form, "identifier", err, N_("Not a valid identifier: %(reason)s"))
        return None
    return ("lot" if kind == "class" else "serial"), identifier


def _run_recall(session: Session, identity: ConsoleIdentity, kind: str, value: str) -> recall.Recall:
    if kind == "lot":
        return recall.recall(session, identity.principal, lot=value)
    return recall.recall(session, identity.principal, serial=value)


def _top(counter: Counter[str]) -> list[tuple[str, int]]:
    return sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:RECALL_TOP]


def recall_counts(rows: Sequence[recall.RecallRow]) -> dict[str, Any]:
    return {
        "affected": len(rows),
        "by_type": sorted(Counter(r.identifier_type for r in rows).items()),
        "lots": len({r.traceability_lot_code for r in rows if r.traceability_lot_code}),
        "owners": _top(Counter(r.owner for r in rows)),
        "owner_count": len({r.owner for r in rows if r.owner}),
        "locations": _top(Counter(r.location_identifier for r in rows)),
        "location_count": len({r.location_identifier for r in rows if r.location_identifier}),
    }


def _recall_form(identifier: str, gtin: str, lot: str) -> dict[str, str]:
    return {"identifier": clean_filter(identifier, 500), "gtin": clean_filter(gtin, 14), "lot": clean_filter(lot, 20)}


@pages_router.get(RECALL_PATH, response_class=HTMLResponse)
def recall_page(
    request: Request,
    identity: Reader,
    session: DbSession,
    identifier: str = "",
    gtin: str = "",
    lot: str = "",
    page: str = "",
) -> HTMLResponse:
    values = _recall_form(identifier, gtin, lot)
    form = FormState(values)
    context: dict[str, Any] = {"page_title": N_("Recall workbench"), "result": None, **_shared(identity)}
    subject = recall_subject(values["identifier"], values["gtin"], values["lot"], form)
    status = 200 if form.ok else 422
    if subject is not None:
        try:
            result = _run_recall(session, identity, *subject)
        except DomainError as err:
            _error_message(form, "identifier", err, N_("No recall: %(reason)s"))
            status = status_for(err)
        else:
            given = {k: v for k, v in values.items() if v}
            pages = max(1, -(-len(result.rows) // RECALL_PAGE_SIZE))
            number = min(page_number(page), pages)
            start = (number - 1) * RECALL_PAGE_SIZE
            context.update(
                result=result,
                kind=subject[0],
                counts=recall_counts(result.rows),
                rows=result.rows[start : start + RECALL_PAGE_SIZE],
                page=number,
                pages=pages,
                previous_url=url_with(RECALL_PATH, {**given, "page": number - 1}) if number > 1 else "",
                next_url=url_with(RECALL_PATH, {**given, "page": number + 1}) if number < pages else "",
                csv_url=url_with(RECALL_EXPORT_PATH, {**given, "format": "csv"}),
                xlsx_url=url_with(RECALL_EXPORT_PATH, {**given, "format": "xlsx"}),
                identifier_types=IDENTIFIER_TYPE_LABELS,
                names=result.names,
                cte_labels=CTE_LABELS,
                disposition_labels=views.DISPOSITION_LABELS,
                biz_step_labels=views.BIZ_STEP_LABELS,
            )
    context.update(form=values, errors=form.errors)
    return render(request, f"{TEMPLATES}/recall.html", context, status_code=status)


def export_name(subject: str, export_format: str) -> str:
    """`recall-<lot or serial>-<UTC date>.<format>`, in characters every file system takes."""
    keys = dict(views.dl_pairs(subject))
    label = keys.get("10") or keys.get("21") or keys.get("00") or subject.rsplit("/", 1)[-1]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._")[:60] or "subject"
    return f"recall-{safe}-{dt.datetime.now(dt.UTC):%Y%m%d}.{export_format}"


@pages_router.get(RECALL_EXPORT_PATH)
def recall_export(
    identity: Reader,
    session: DbSession,
    identifier: str = "",
    gtin: str = "",
    lot: str = "",
    export_format: Annotated[Literal["csv", "xlsx"], Query(alias="format")] = "csv",
) -> Response:
    """The FSMA 204 sortable spreadsheet of a recall, as the API's `format=csv|xlsx` answers it."""
    values = _recall_form(identifier, gtin, lot)
    form = FormState(values)
    subject = recall_subject(values["identifier"], values["gtin"], values["lot"], form)
    if subject is None:
        raise Invalid("name a valid lot (a GTIN and lot, or an LGTIN) or serial", code="recall_subject")
    result = _run_recall(session, identity, *subject)
    media_type = "text/csv; charset=utf-8" if export_format == "csv" else recall.XLSX_MEDIA_TYPE
    return Response(
        recall.export(result.rows, export_format),
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{export_name(result.root, export_format)}"'},
    )
