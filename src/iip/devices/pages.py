"""Console pages of the devices context: the device list, a device with its twin and live charts,
profiles and their import, the command form, the dead letters.

Thin like the API routers: read the form, call `DeviceRegistry` (and the command service), render
or redirect. The registry scopes every read and change to the acting principal's tenant, so another
tenant's device or profile is a 404 page. Live values reach the browser from the twin's JSON API
(`/api/devices/{device}/twin`, its server-sent events) and the telemetry queries; `devices.js`
draws them, since the console's CSP forbids inline scripts.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from iip.api.deps import DbSession, audit_object, get_runtime
from iip.console.forms import FormState, clean_filter, format_number, page_number, render_form_page, url_with
from iip.console.web import (
    N_,
    ConsoleIdentity,
    Message,
    console_permission,
    csrf_protect,
    message,
    redirect,
    render,
    static_url,
)
from iip.devices.commands import POLLED, CommandService, CommandStatus, CommandTimedOut, command_history
from iip.devices.commands import SERVICE_KEY as COMMANDS_SERVICE
from iip.devices.models import Device
from iip.devices.profiles import DataType, DeviceProfile, MetricSpec, Protocol
from iip.devices.registry_directory import registry_services
from iip.devices.schemas import DeadLetterOut, ImportReport
from iip.devices.service import MAX_DOCUMENT_BYTES, DeviceRegistry, parse_document, stored_profile
from iip.kernel.documents import render_document
from iip.kernel.errors import Conflict, DomainError, Invalid, Unavailable
from iip.kernel.module import Page
from iip.telemetry.public import Quality, latest_points

pages_router = APIRouter(include_in_schema=False)

DEVICES_PATH = "/devices"
PROFILES_PATH = "/devices/profiles"
PROFILE_IMPORT_PATH = "/devices/profiles/import"
DEAD_LETTERS_PATH = "/devices/dead-letters"
TEMPLATE_DIR = str(Path(__file__).parent / "templates")

PAGES = (
    Page(DEVICES_PATH, N_("Devices"), "devices.read", "activity"),
    Page(PROFILES_PATH, N_("Device profiles"), "devices.read", "box"),
    Page(DEAD_LETTERS_PATH, N_("Dead letters"), "devices.read", "alert"),
)

DEVICE_PAGE_SIZE = 50
DEAD_LETTER_PAGE_SIZE = 50
HISTORY_MS = 3_600_000  # the charts show the last hour
SOURCES = ("mqtt", "sparkplug", "http", "modbus", "opcua", "edge")
ONLINE, OFFLINE, NEVER_SEEN = "online", "offline", "never"
STATES: dict[str, str] = {ONLINE: N_("Online"), OFFLINE: N_("Offline"), NEVER_SEEN: N_("Never seen")}
QUALITIES: dict[int, str] = {Quality.GOOD: N_("Good"), Quality.UNCERTAIN: N_("Uncertain"), Quality.BAD: N_("Bad")}
DOCUMENT_FORMATS: dict[str, str] = {"": N_("Detect"), "yaml": "YAML", "json": "JSON"}
SECTION_TITLES: dict[str, str] = {"profiles": N_("Profiles"), "gateways": N_("Gateways"), "devices": N_("Devices")}
BOOL_WORDS = {"true": True, "1": True, "on": True, "false": False, "0": False, "off": False}
COMMAND_PROTOCOLS = POLLED | {Protocol.SPARKPLUG}
# Codes of the command service's check that a value does not fit its metric (nothing is sent then).
VALUE_REFUSALS = frozenset({"invalid_value", "value_out_of_range", "command_rejected"})
RECENT_COMMANDS = 10
COMMAND_STATES: dict[str, str] = {
    CommandStatus.PENDING: N_("Pending"),
    CommandStatus.SENT: N_("Sent"),
    CommandStatus.ACKNOWLEDGED: N_("Acknowledged"),
    CommandStatus.FAILED: N_("Failed"),
    CommandStatus.TIMED_OUT: N_("Timed out"),
}

Reader = Annotated[ConsoleIdentity, Depends(console_permission("devices.read"))]
Writer = Annotated[ConsoleIdentity, Depends(console_permission("devices.write"))]
CSRF = [Depends(csrf_protect)]
FormText = Annotated[str, Form()]


# --- helpers the pages share ------------------------------------------------------------------


def device_url(device: Device, identity: ConsoleIdentity) -> str:
    # A key names a device within the viewer's tenant; platform operators reach the others by id.
    ref = device.key if device.tenant_id == identity.principal.tenant_id else device.id
    return f"{DEVICES_PATH}/{quote(ref, safe='')}"


def profile_url(name: str) -> str:
    return f"{PROFILES_PATH}/{quote(name, safe='')}"


def format_ms(ts_ms: int | None) -> str:
    if ts_ms is None:
        return "—"
    return dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _registry(request: Request, session: Session, identity: ConsoleIdentity) -> DeviceRegistry:
    directory = registry_services(get_runtime(request)).directory
    return DeviceRegistry(session, identity.principal, on_change=directory.invalidate)


def _profile_of(device: Device) -> DeviceProfile | None:
    try:
        return stored_profile(device.profile)
    except ValidationError:  # stored under older rules: the page still shows the device
        return None


# --- connection state -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connection:
    state: str  # ONLINE, OFFLINE or NEVER_SEEN
    last_seen_ms: int | None

    @property
    def label(self) -> str:
        return STATES[self.state]

    @property
    def last_seen(self) -> str:
        return format_ms(self.last_seen_ms)


def connection_of(latest: Mapping[str, tuple[int, float, int]], offline_after_ms: int, now_ms: int) -> Connection:
    """Online while the newest point is younger than the devices' `offline_after_s`, as ingest judges silence."""
    if not latest:
        return Connection(NEVER_SEEN, None)
    last_seen = max(ts for ts, _value, _quality in latest.values())
    return Connection(ONLINE if now_ms - last_seen <= offline_after_ms else OFFLINE, last_seen)


def _latest(request: Request, device: Device) -> dict[str, tuple[int, float, int]]:
    return latest_points(get_runtime(request), device.tenant_id, device.key)


def _now_ms() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


def _offline_after_ms(request: Request) -> int:
    return get_runtime(request).settings.devices.offline_after_s * 1000


# --- the device list --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceRow:
    device: Device
    url: str
    connection: Connection
    dead_letters_url: str


@pages_router.get(DEVICES_PATH, response_class=HTMLResponse)
def device_list(
    request: Request,
    *,
    identity: Reader,
    session: DbSession,
    q: str = "",
    site: str = "",
    profile: str = "",
    state: str = "",
    page: str = "",
) -> HTMLResponse:
    registry = _registry(request, session, identity)
    filters = {
        "q": clean_filter(q),
        "site": clean_filter(site),
        "profile": clean_filter(profile, 128),
        "state": state if state in STATES else "",
    }
    everything = registry.list_devices()
    matching = registry.list_devices(
        site=filters["site"] or None, profile=filters["profile"] or None, text=filters["q"] or None
    )
    now, offline_after = _now_ms(), _offline_after_ms(request)

    def row(device: Device) -> DeviceRow:
        connection = connection_of(_latest(request, device), offline_after, now)
        letters = url_with(DEAD_LETTERS_PATH, {"device": device.key}) if device.rejected_count else ""
        return DeviceRow(device, device_url(device, identity), connection, letters)

    number = page_number(page)
    if filters["state"]:
        # The state is known only per device, so this filter looks at every match before paging.
        rows = [r for r in map(row, matching) if r.connection.state == filters["state"]]
        total = len(rows)
        shown = rows[(number - 1) * DEVICE_PAGE_SIZE : number * DEVICE_PAGE_SIZE]
    else:
        total = len(matching)
        shown = [row(d) for d in matching[(number - 1) * DEVICE_PAGE_SIZE : number * DEVICE_PAGE_SIZE]]
    pages = max(1, -(-total // DEVICE_PAGE_SIZE))
    context: dict[str, Any] = {
        "page_title": N_("Devices"),
        "rows": shown,
        "total": total,
        "filters": filters,
        "filtered": any(filters.values()),
        "sites": sorted({d.site for d in everything if d.site}),
        "profiles": sorted({d.profile.name for d in everything}),
        "states": STATES,
        "page": number,
        "pages": pages,
        "previous_url": url_with(DEVICES_PATH, {**filters, "page": number - 1}) if number > 1 else "",
        "next_url": url_with(DEVICES_PATH, {**filters, "page": number + 1}) if number < pages else "",
        "show_tenant": identity.principal.is_platform,
        "can_import": identity.can("devices.write"),
    }
    return render(request, "devices/list.html", context)


# --- one device -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetricRow:
    name: str
    unit: str
    data_type: str
    description: str
    writable: bool
    numeric: bool
    value: str
    quality: int | None
    ts: str


def metric_rows(profile: DeviceProfile | None, latest: Mapping[str, tuple[int, float, int]]) -> list[MetricRow]:
    """The profile's metrics in its order, then anything else the device reported (numbers, unitless)."""
    specs = {m.name: m for m in profile.metrics} if profile else {}
    rows = []
    for name in [*specs, *sorted(n for n in latest if n not in specs)]:
        spec, point = specs.get(name), latest.get(name)
        data_type = spec.data_type if spec else DataType.FLOAT64
        rows.append(
            MetricRow(
                name=name,
                unit=spec.unit if spec else "",
                data_type=data_type.value,
                description=spec.description if spec else "",
                writable=spec.writable if spec else False,
                numeric=data_type is not DataType.STRING,
                value=format_number(point[1]) if point else "—",
                quality=point[2] if point else None,
                ts=format_ms(point[0]) if point else "—",
            )
        )
    return rows


def _device_page(
    request: Request,
    session: Session,
    identity: ConsoleIdentity,
    ref: str,
    *,
    form: FormState | None = None,
    outcome: Message | None = None,
    outcome_kind: str = "",
) -> HTMLResponse:
    device = _registry(request, session, identity).get_device(ref)  # another tenant's device is 404
    profile = _profile_of(device)
    latest = _latest(request, device)
    metrics = metric_rows(profile, latest)
    writable = [m for m in metrics if m.writable]
    commandable = profile is not None and profile.protocol in COMMAND_PROTOCOLS
    api_base = f"/api/devices/{quote(device.key, safe='')}"
    context: dict[str, Any] = {
        "page_title": N_("Device"),
        "device": device,
        "profile_url": profile_url(device.profile.name),
        "connection": connection_of(latest, _offline_after_ms(request), _now_ms()),
        "metrics": metrics,
        "charts": [m for m in metrics if m.numeric],
        "qualities": QUALITIES,
        "writable": writable,
        "can_command": identity.can("devices.write") and commandable and bool(writable),
        "command_url": f"{device_url(device, identity)}/commands",
        "commands": command_history(session, identity.principal, device.id, limit=RECENT_COMMANDS),
        "command_states": COMMAND_STATES,
        "dead_letters_url": url_with(DEAD_LETTERS_PATH, {"device": device.key}),
        "twin_url": f"{api_base}/twin",
        "events_url": f"{api_base}/twin/events",
        "history_window_ms": HISTORY_MS,
        # Nothing stored, nothing to ask the telemetry API for (it would answer 404).
        "has_history": bool(latest),
        "script_url": static_url("devices/devices.js"),
        "outcome": outcome,
        "outcome_kind": outcome_kind,
        "alert_kind": "warning" if outcome_kind in {"timed_out", "unavailable"} else "error",
    }
    state = form or FormState({"metric": writable[0].name if writable else "", "value": ""})
    return render_form_page(request, "devices/device.html", context, state)


# --- the command form -------------------------------------------------------------------------


def parse_number(text: str) -> int | float | None:
    """A whole number as int (so large integers stay exact), else a finite float, else None."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def command_value(spec: MetricSpec, text: str, form: FormState) -> bool | int | float | str | None:
    """The form's text as a JSON value of the metric's kind, or None with the reason on the form.

    Only the reading of text is done here; whether the value fits the metric (whole number,
    range) is the command service's check, shown on the same field.
    """
    if spec.data_type is DataType.STRING:
        return text
    text = text.strip()
    value: bool | int | float | None
    if spec.data_type is DataType.BOOL:
        value = BOOL_WORDS.get(text.lower())
        if value is None:
            form.error("value", N_("Enter true or false."))
    else:
        value = parse_number(text)
        if value is None:
            form.error("value", N_("Enter a number."))
    return value


def _command_service(request: Request) -> CommandService | None:
    service = get_runtime(request).services.get(COMMANDS_SERVICE)
    return service if isinstance(service, CommandService) else None


@dataclass(frozen=True, slots=True)
class CommandRequest:
    device_id: str
    metric: str
    value: bool | int | float | str


def _read_command_form(
    request: Request, session: Session, identity: ConsoleIdentity, ref: str, metric: str, value: str
) -> tuple[CommandRequest | None, FormState]:
    device = _registry(request, session, identity).get_device(ref)  # another tenant's device is 404
    form = FormState({"metric": metric, "value": value})
    profile = _profile_of(device)
    spec = profile.metric(metric) if profile is not None else None
    if spec is None or not spec.writable:
        form.error("metric", N_("Choose one of the writable metrics."))
        return None, form
    parsed = command_value(spec, value, form)
    if parsed is None:
        return None, form
    return CommandRequest(device.id, spec.name, parsed), form


@pages_router.post(DEVICES_PATH + "/{device}/commands", dependencies=CSRF)
async def send_command(
    request: Request,
    device: str,
    *,
    identity: Writer,
    session: DbSession,
    metric: FormText = "",
    value: FormText = "",
) -> Response:
    """Send a command and show how it ended: acknowledged (back to the page), refused, timed out."""
    command, form = await run_in_threadpool(_read_command_form, request, session, identity, device, metric, value)
    if command is None:
        return await run_in_threadpool(_device_page, request, session, identity, device, form=form)
    audit_object(request, "device", command.device_id)
    # The device may take seconds to answer: the request's transaction must not hold the database meanwhile.
    await run_in_threadpool(session.commit)
    service = _command_service(request)
    outcome: Message
    if service is None:
        outcome, kind, status = message(N_("Commands are not running in this process.")), "unavailable", 503
    else:
        try:
            await service.send(
                identity.principal,
                command.device_id,
                command.metric,
                command.value,
                on_created=lambda command_id: audit_object(request, "device_command", command_id),
            )
        except CommandTimedOut as err:
            outcome = message(N_("The device did not confirm the command in time: %(reason)s"), reason=err.message)
            kind, status = "timed_out", 504
        except Unavailable as err:
            outcome = message(N_("The device cannot be reached: %(reason)s"), reason=err.message)
            kind, status = "unavailable", 503
        except (Invalid, Conflict) as err:
            if "command_id" not in err.details and err.instance_code in VALUE_REFUSALS:
                # Refused by the check before sending: the value does not fit the metric.
                form.error("value", N_("Not accepted: %(reason)s"), reason=err.message)
                return await run_in_threadpool(_device_page, request, session, identity, device, form=form)
            outcome = message(N_("The command was refused: %(reason)s"), reason=err.message)
            kind, status = "refused", 422
        else:
            return redirect(f"{DEVICES_PATH}/{quote(device, safe='')}", notice=N_("The device confirmed the command."))
    page = await run_in_threadpool(
        _device_page, request, session, identity, device, form=form, outcome=outcome, outcome_kind=kind
    )
    page.status_code = status
    return page


# --- profiles ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProfileRow:
    name: str
    url: str
    protocol: str
    version: int
    metrics: int
    devices: int
    updated_at: dt.datetime
    tenant_id: str


EMPTY_IMPORT = {"document": "", "format": ""}


def _profiles_page(
    request: Request,
    session: Session,
    identity: ConsoleIdentity,
    *,
    form: FormState | None = None,
    report: ImportReport | None = None,
    import_errors: Sequence[str] = (),
    more_errors: int = 0,
) -> HTMLResponse:
    profiles = _registry(request, session, identity).list_profiles()
    rows = [
        ProfileRow(
            p.name,
            profile_url(p.name) if p.tenant_id == identity.principal.tenant_id else profile_url(p.id),
            p.protocol.value,
            p.version,
            len(p.definition.metrics),
            p.devices,
            p.updated_at,
            p.tenant_id,
        )
        for p in profiles
    ]
    context: dict[str, Any] = {
        "page_title": N_("Device profiles"),
        "rows": rows,
        "show_tenant": identity.principal.is_platform,
        "can_import": identity.can("devices.write"),
        "formats": DOCUMENT_FORMATS,
        "report": report,
        "sections": SECTION_TITLES,
        "import_errors": list(import_errors),
        "more_errors": more_errors,
        "max_mib": MAX_DOCUMENT_BYTES // (1024 * 1024),
    }
    return render_form_page(request, "devices/profiles.html", context, form or FormState(dict(EMPTY_IMPORT)))


@pages_router.get(PROFILES_PATH, response_class=HTMLResponse)
def profiles_page(request: Request, identity: Reader, session: DbSession) -> HTMLResponse:
    return _profiles_page(request, session, identity)


def read_upload(upload: UploadFile | None, form: FormState) -> bytes | None:
    """The uploaded file, or None when none was chosen (or it is too large: then the form says so)."""
    if upload is None or not upload.filename:
        return None
    data = upload.file.read(MAX_DOCUMENT_BYTES + 1)
    if len(data) > MAX_DOCUMENT_BYTES:
        form.error("upload", N_("The file is larger than %(count)s MiB."), count=MAX_DOCUMENT_BYTES // (1024 * 1024))
        return None
    return data


@pages_router.post(PROFILE_IMPORT_PATH, dependencies=CSRF)
def import_registry_document(
    request: Request,
    *,
    identity: Writer,
    session: DbSession,
    document: FormText = "",
    document_format: Annotated[str, Form(alias="format")] = "",
    upload: Annotated[UploadFile | None, File()] = None,
) -> Response:
    form = FormState({"document": document, "format": document_format if document_format in DOCUMENT_FORMATS else ""})
    uploaded = read_upload(upload, form)
    if uploaded is None and not document.strip() and form.ok:
        form.error("document", N_("Paste a document or choose a file."))
    if not form.ok:
        return _profiles_page(request, session, identity, form=form)
    registry = _registry(request, session, identity)
    audit_object(request, "device_registry", identity.principal.tenant_id)
    try:
        parsed = parse_document(uploaded if uploaded is not None else document, form.values["format"] or None)
        with session.begin_nested():  # all or nothing, even if a write fails half way
            report = registry.import_document(parsed)
    except DomainError as err:
        details = err.details.get("errors") if isinstance(err, Invalid) else None
        listed = [str(e) for e in details] if isinstance(details, list) and details else [err.message]
        more = err.details.get("more_errors") or 0
        form.error("form", N_("Nothing was imported: the document has errors."))
        return _profiles_page(
            request, session, identity, form=form, import_errors=listed, more_errors=int(more) if more else 0
        )
    return _profiles_page(request, session, identity, report=report)


@pages_router.get(PROFILES_PATH + "/{profile}", response_class=HTMLResponse)
def profile_page(request: Request, profile: str, identity: Reader, session: DbSession) -> HTMLResponse:
    registry = _registry(request, session, identity)
    row = registry.get_profile(profile)  # another tenant's profile is 404
    described = registry.describe_profile(row)
    definition = described.definition.model_dump(mode="json", exclude_defaults=True)
    context: dict[str, Any] = {
        "page_title": N_("Device profile"),
        "profile": described,
        "yaml": render_document(definition, "yaml"),
        "devices_url": url_with(DEVICES_PATH, {"profile": described.name}),
    }
    return render(request, "devices/profile.html", context)


# --- dead letters -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LetterRow:
    letter: DeadLetterOut
    device_url: str


@pages_router.get(DEAD_LETTERS_PATH, response_class=HTMLResponse)
def dead_letters_page(
    request: Request,
    *,
    identity: Reader,
    session: DbSession,
    device: str = "",
    source: str = "",
    before: str = "",
) -> HTMLResponse:
    filters = {"device": clean_filter(device, 128), "source": source if source in SOURCES else ""}
    before_id = int(before) if before.isdigit() and 0 < int(before) < 2**62 else None
    letters = _registry(request, session, identity).dead_letters(
        device=filters["device"] or None,
        source=filters["source"] or None,
        before_id=before_id,
        limit=DEAD_LETTER_PAGE_SIZE + 1,
    )
    more = len(letters) > DEAD_LETTER_PAGE_SIZE
    letters = letters[:DEAD_LETTER_PAGE_SIZE]
    own = identity.principal.tenant_id
    rows = [
        LetterRow(
            letter,
            f"{DEVICES_PATH}/{quote(letter.device, safe='')}" if letter.device and letter.tenant_id == own else "",
        )
        for letter in letters
    ]
    context: dict[str, Any] = {
        "page_title": N_("Dead letters"),
        "rows": rows,
        "filters": filters,
        "filtered": any(filters.values()),
        "sources": SOURCES,
        "next_url": url_with(DEAD_LETTERS_PATH, {**filters, "before": letters[-1].id}) if more else "",
        "paged": before_id is not None,
        "first_url": url_with(DEAD_LETTERS_PATH, filters),
        "show_tenant": identity.principal.is_platform,
    }
    return render(request, "devices/dead_letters.html", context)


# --- the page script --------------------------------------------------------------------------


# Registered last: `/devices/{device}` would otherwise answer for the fixed paths above.


@pages_router.get(DEVICES_PATH + "/{device}", response_class=HTMLResponse)
def device_page(request: Request, device: str, identity: Reader, session: DbSession) -> HTMLResponse:
    return _device_page(request, session, identity, device)


__all__ = [
    "DEAD_LETTERS_PATH",
    "DEVICES_PATH",
    "PAGES",
    "PROFILES_PATH",
    "PROFILE_IMPORT_PATH",
    "TEMPLATE_DIR",
    "pages_router",
]
