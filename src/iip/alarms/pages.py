"""Console pages of the alarms context: the live alarm list, one alarm, the journal, the rules with
their editor and preview, the alarm management report.

Thin like the API router: read the query or the form, call `AlarmService`, render or redirect. The
service scopes every read and action to the acting principal's tenant, so another tenant's alarm
or rule is a 404 page. The transitions an action makes are published on `ALARM_CHANGES` once the
request's transaction has committed (a background task runs after the response), as the API does.
The list and the alarm page follow `/api/alarms/feed` (`feed.py`) with `alarms.js`, since the
console's CSP forbids inline scripts; the action forms work without it too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote, urlsplit

import yaml
from fastapi import APIRouter, BackgroundTasks, Depends, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from iip.alarms.actions import COMMENTED_ACTIONS, CommentedAction
from iip.alarms.evaluation import preview
from iip.alarms.feed import FEED_PATH
from iip.alarms.lifecycle import ACTIVE_STATES as ACTIVE_ALARM_STATES
from iip.alarms.lifecycle import MAX_COMMENT, UNACKNOWLEDGED_STATES
from iip.alarms.metrics import MetricsReport, window_counts
from iip.alarms.models import Alarm, Rule
from iip.alarms.public import AlarmChange, AlarmState, Priority
from iip.alarms.repository import AlarmFilter
from iip.alarms.rules import RuleKind, RuleSpec, parse_rule
from iip.alarms.schemas import AlarmOut, AlarmSort, HistoryOut
from iip.alarms.service import (
    MAX_DOCUMENT_BYTES,
    AlarmService,
    alarm_view,
    check_expressions,
    history_view,
    publish_changes,
    survives_storing,
    validation_messages,
)
from iip.api.deps import DbSession, audit_object, get_runtime
from iip.console.forms import FormState, clean_filter, format_number, page_number, url_with
from iip.console.web import (
    N_,
    ConsoleIdentity,
    Message,
    console_permission,
    csrf_protect,
    get_console,
    message,
    redirect,
    render,
    request_language,
    safe_next,
    static_url,
)
from iip.devices.public import device_placements
from iip.kernel.bus import BusError
from iip.kernel.documents import read_document
from iip.kernel.errors import Conflict, DomainError, Invalid, NotFound
from iip.kernel.module import Page
from iip.kernel.runtime import Runtime
from iip.telemetry.public import Point, points_between

logger = logging.getLogger(__name__)

pages_router = APIRouter(include_in_schema=False)

ALARMS_PATH = "/alarms"
BULK_ACKNOWLEDGE_PATH = "/alarms/acknowledge"
HISTORY_PATH = "/alarms/history"
RULES_PATH = "/alarms/rules"
NEW_RULE_PATH = "/alarms/rules/new"
REPORT_PATH = "/alarms/report"
TEMPLATE_DIR = str(Path(__file__).parent / "templates")

PAGES = (
    Page(ALARMS_PATH, N_("Current alarms"), "alarms.read", "alert"),
    Page(HISTORY_PATH, N_("Alarm history"), "alarms.read", "audit"),
    Page(RULES_PATH, N_("Alarm rules"), "alarms.read", "shield"),
    Page(REPORT_PATH, N_("Alarm report"), "alarms.read", "dashboard"),
)

ALARM_PAGE_SIZE = 50
HISTORY_PAGE_SIZE = 100
ALARM_HISTORY_PAGE_SIZE = 100
GROUP_PAGE_SIZE = 50  # rules or devices a page of groups shows
GROUP_DEVICES = 10  # devices (or rules) named per group
MAX_RULE_DOCUMENT = 100_000  # characters of one rule's document
PREVIEW_HOURS = 24
PREVIEW_DEVICES = 20  # devices a profile-wide rule is replayed on
MAX_REPORT_DAYS = 92
RATE_WINDOW = dt.timedelta(minutes=10)

STATES: dict[str, str] = {
    AlarmState.UNACK_ACTIVE: N_("Active, unacknowledged"),
    AlarmState.UNACK_RTN: N_("Cleared, unacknowledged"),
    AlarmState.ACK_ACTIVE: N_("Active, acknowledged"),
    AlarmState.LATCHED: N_("Latched"),
    AlarmState.NORMAL: N_("Normal"),
}
STATE_ORDER = tuple(AlarmState(state) for state in STATES)  # the "state" sort: unacknowledged first
CURRENT_STATES = tuple(state for state in STATE_ORDER if state is not AlarmState.NORMAL)
ALL_STATES = "all"
STATE_FILTERS: dict[str, str] = {"": N_("Current (not normal)"), **STATES, ALL_STATES: N_("All, normal included")}
PRIORITIES: dict[str, str] = {
    Priority.CRITICAL: N_("Critical"),
    Priority.HIGH: N_("High"),
    Priority.MEDIUM: N_("Medium"),
    Priority.LOW: N_("Low"),
}
STATE_SORT = "state"
SORTS: dict[str, str] = {
    AlarmSort.PRIORITY: N_("Priority"),
    AlarmSort.NEWEST: N_("Newest change first"),
    AlarmSort.OLDEST: N_("Oldest change first"),
    STATE_SORT: N_("State"),
    AlarmSort.DEVICE: N_("Device"),
    AlarmSort.RULE: N_("Rule"),
}
LIST_VIEW, GROUPS_VIEW = "list", "groups"
GROUPINGS: dict[str, str] = {"rule": N_("Rule"), "device": N_("Device"), "priority": N_("Priority")}
ACTIONS: dict[str, str] = {
    "activate": N_("Activated"),
    "clear": N_("Cleared"),
    "suppress": N_("Suppressed"),
    "unsuppress": N_("Suppression ended"),
    "acknowledge": N_("Acknowledged"),
    "reset": N_("Reset"),
    "shelve": N_("Shelved"),
    "unshelve": N_("Unshelved"),
    "out_of_service": N_("Out of service"),
    "return_to_service": N_("Returned to service"),
    "comment": N_("Comment"),
}
SHELVE_MINUTES: dict[str, str] = {
    "15": N_("15 minutes"),
    "60": N_("1 hour"),
    "240": N_("4 hours"),
    "480": N_("8 hours"),
    "1440": N_("24 hours"),
}
KINDS: dict[str, str] = {
    RuleKind.THRESHOLD: N_("Threshold"),
    RuleKind.DEVIATION: N_("Deviation"),
    RuleKind.RATE_OF_CHANGE: N_("Rate of change"),
    RuleKind.NO_DATA: N_("No data"),
    RuleKind.DIGITAL_STATE: N_("Digital state"),
    RuleKind.EXPRESSION: N_("Expression"),
    RuleKind.ROLLING_AVERAGE: N_("Rolling average"),
    RuleKind.EVENT: N_("Event"),
}
RULE_CHANGES: dict[str, str] = {
    "create": N_("Created"),
    "update": N_("Edited"),
    "enable": N_("Enabled"),
    "disable": N_("Disabled"),
    "import": N_("Imported"),
    "delete": N_("Deleted"),
}
DOCUMENT_FORMATS: dict[str, str] = {"": N_("Detect"), "yaml": "YAML", "json": "JSON"}
YES_NO: dict[str, str] = {"true": N_("Enabled"), "false": N_("Disabled")}
REPORT_RANGES: dict[str, tuple[dt.timedelta, str]] = {
    "24h": (dt.timedelta(hours=24), N_("Last 24 hours")),
    "7d": (dt.timedelta(days=7), N_("Last 7 days")),
    "30d": (dt.timedelta(days=30), N_("Last 30 days")),
}
MEASURES: dict[str, str] = {
    "alarms_per_day": N_("Alarms per day"),
    "alarms_per_hour": N_("Alarms per hour"),
    "alarms_per_10_minutes": N_("Alarms per 10 minutes"),
    "percent_windows_in_flood": N_("10-minute periods in flood"),
    "percent_time_in_flood": N_("Time in flood"),
    "top_alarms_percent": N_("Share of the 10 most frequent alarms"),
    "chattering_alarms": N_("Chattering alarms"),
    "stale_alarms": N_("Stale alarms"),
    "critical_percent": N_("Critical alarms"),
    "medium_high_percent": N_("Medium and high alarms"),
}
PERCENT_MEASURES = frozenset(m for m in MEASURES if "percent" in m)
VERDICTS: dict[str, str] = {
    "acceptable": N_("Acceptable"),
    "manageable": N_("Manageable"),
    "over": N_("Over target"),
}
PRIORITY_GROUPS: dict[str, str] = {"low": N_("Low"), "medium_high": N_("Medium and high"), "critical": N_("Critical")}
NEW_RULE_EXAMPLE = """\
key: boiler.pressure.high
kind: threshold
title: Boiler pressure high
scope: {profile: boiler}
metric: pressure
high: 1.6
deadband: 0.05
on_delay_s: 10
priority: high
message: "{device}: pressure {value} MPa above {limit} MPa"
rationalisation:
  cause: Feed water control failed, or the steam demand dropped suddenly
  consequence: The safety valve lifts at 1.8 MPa
  corrective_action: Reduce the firing rate and check the feed water valve
  response_time_s: 300
"""

Reader = Annotated[ConsoleIdentity, Depends(console_permission("alarms.read"))]
Operator = Annotated[ConsoleIdentity, Depends(console_permission("alarms.operate"))]
Writer = Annotated[ConsoleIdentity, Depends(console_permission("alarms.write"))]
CSRF = [Depends(csrf_protect)]
FormText = Annotated[str, Form()]
NextPath = Annotated[str, Form(alias="next")]


# --- what the pages share ---------------------------------------------------------------------


def alarm_url(alarm_id: str) -> str:
    return f"{ALARMS_PATH}/{quote(alarm_id, safe='')}"


def rule_url(rule: Rule, identity: ConsoleIdentity) -> str:
    # A key names a rule within the viewer's tenant; platform operators reach the others by id.
    ref = rule.key if rule.tenant_id == identity.principal.tenant_id else rule.id
    return f"{RULES_PATH}/{quote(ref, safe='')}"


def format_time(value: dt.datetime | None) -> str:
    """To the second: the order of alarm transitions matters within a minute."""
    if value is None:
        return "—"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_duration(ms: int) -> str:
    seconds = ms // 1000
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def translate(request: Request, item: Message) -> str:
    """A message in the user's language, for answers that are not pages."""
    text = get_console(request).gettext(request_language(request), item.msgid)
    return text % dict(item.params) if item.params else text


def wants_json(request: Request) -> bool:
    """The page script posts its forms asking for JSON; a browser without it gets pages."""
    return "application/json" in request.headers.get("accept", "")


def _service(request: Request, session: Session, identity: ConsoleIdentity) -> AlarmService:
    return AlarmService(session, identity.principal, settings=get_runtime(request).settings.alarms)


def _publish_later(request: Request, background: BackgroundTasks, service: AlarmService) -> None:
    if service.changes:
        background.add_task(_publish, get_runtime(request), list(service.changes))


async def _publish(runtime: Runtime, changes: Sequence[AlarmChange]) -> None:
    try:
        await publish_changes(runtime.bus, changes)
    except (BusError, OSError) as err:
        # Committed already: the change stands; the live pages catch up on their next refresh.
        logger.warning("could not publish %d alarm change(s): %s", len(changes), err)


def _page_labels() -> dict[str, str]:
    """Words the page script shows, as message ids (the template translates them)."""
    return {
        "live": N_("Live"),
        "connecting": N_("Connecting"),
        "polling": N_("Refreshing every few seconds"),
        "failed": N_("The action failed. Reload the page and try again."),
    }


# --- the alarm list ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListQuery:
    """The list's filters, sort, view and page, as read (leniently) from a query string."""

    state: str = ""
    priority: str = ""
    q: str = ""
    site: str = ""
    position: str = ""
    device: str = ""
    rule: str = ""
    sort: str = AlarmSort.PRIORITY.value
    view: str = LIST_VIEW
    group: str = "rule"
    page: int = 1

    @classmethod
    def read(cls, query: Mapping[str, str]) -> ListQuery:
        return cls(
            state=query.get("state", "") if query.get("state", "") in STATE_FILTERS else "",
            priority=query.get("priority", "") if query.get("priority", "") in PRIORITIES else "",
            q=clean_filter(query.get("q", "")),
            site=clean_filter(query.get("site", "")),
            position=clean_filter(query.get("position", ""), 100),
            device=clean_filter(query.get("device", "")),
            rule=clean_filter(query.get("rule", ""), 100),
            sort=query.get("sort", "") if query.get("sort", "") in SORTS else AlarmSort.PRIORITY.value,
            view=GROUPS_VIEW if query.get("view") == GROUPS_VIEW else LIST_VIEW,
            group=query.get("group", "") if query.get("group", "") in GROUPINGS else "rule",
            page=page_number(query.get("page", "")),
        )

    @property
    def filters(self) -> dict[str, str]:
        return {
            "state": self.state,
            "priority": self.priority,
            "q": self.q,
            "site": self.site,
            "position": self.position,
            "device": self.device,
            "rule": self.rule,
        }

    @property
    def filtered(self) -> bool:
        return any(self.filters.values())

    def params(self, **changes: str | int) -> dict[str, str | int]:
        """The query string of this view (defaults left out), with `changes`."""
        values: dict[str, str | int] = {
            **self.filters,
            "sort": "" if self.sort == AlarmSort.PRIORITY.value else self.sort,
            "view": "" if self.view == LIST_VIEW else self.view,
            "group": "" if self.view == LIST_VIEW or self.group == "rule" else self.group,
            "page": self.page if self.page > 1 else "",
        }
        values.update(changes)
        return values

    def where(self) -> AlarmFilter:
        if self.state == ALL_STATES:
            states: tuple[AlarmState, ...] = ()
        elif self.state:
            states = (AlarmState(self.state),)
        else:
            states = CURRENT_STATES
        return AlarmFilter(
            states=states,
            priorities=(Priority(self.priority),) if self.priority else (),
            site=self.site or None,
            position=self.position or None,
            device=self.device or None,
            rule_key=self.rule or None,
            text=self.q or None,
        )


@dataclass(frozen=True, slots=True)
class AlarmRow:
    alarm: AlarmOut
    url: str
    value: str


@dataclass(frozen=True, slots=True)
class GroupRow:
    """The alarms of one rule, device or priority that match the filters."""

    name: str
    label: str  # a message id for priorities, else the name itself
    url: str
    priority: Priority
    alarms: int
    active: int
    unacknowledged: int
    members: list[str]  # the first devices (per rule) or rules (per device)


def state_sorted(service: AlarmService, where: AlarmFilter, *, offset: int, limit: int) -> tuple[list[Alarm], int]:
    """Alarms in `STATE_ORDER` (most urgent first within a state): one page over the states in turn."""
    wanted = [state for state in STATE_ORDER if not where.states or state in where.states]
    rows: list[Alarm] = []
    total = 0
    skip = offset
    for state in wanted:
        room = limit - len(rows)
        found, count = service.list_alarms(
            dataclasses.replace(where, states=(state,)), sort=AlarmSort.PRIORITY, offset=skip, limit=max(room, 1)
        )
        total += count
        if room > 0:
            rows += found[:room]
        skip = max(0, skip - count)
    return rows, total


def _count(service: AlarmService, where: AlarmFilter, states: Iterable[AlarmState]) -> int:
    chosen = tuple(s for s in (where.states or STATE_ORDER) if s in set(states))
    if not chosen:
        return 0
    return service.list_alarms(dataclasses.replace(where, states=chosen), limit=1)[1]


def alarm_groups(service: AlarmService, query: ListQuery) -> tuple[list[GroupRow], int]:
    """One page of the matching alarms counted per rule or per device (in the database), or per
    priority; and how many groups there are in all."""
    where = query.where()
    if query.group == "priority":
        priority_rows = []
        for priority in Priority:
            if where.priorities and priority not in where.priorities:
                continue
            scoped = dataclasses.replace(where, priorities=(priority,))
            total = service.list_alarms(scoped, limit=1)[1]
            if total:
                priority_rows.append(
                    GroupRow(
                        priority.value,
                        PRIORITIES[priority],
                        url_with(ALARMS_PATH, query.params(priority=priority.value, view="", group="", page="")),
                        priority,
                        total,
                        _count(service, scoped, ACTIVE_ALARM_STATES),
                        _count(service, scoped, UNACKNOWLEDGED_STATES),
                        [],
                    )
                )
        return priority_rows, len(priority_rows)
    offset = (query.page - 1) * GROUP_PAGE_SIZE
    # (key, filter it links to, priority, alarms, active, unacknowledged, its first members)
    found: list[tuple[str, str, Priority, int, int, int, list[str]]]
    if query.group == "device":
        total = service.count_groups(where, by="device")
        found = [
            (g.device, "device", g.priority, g.alarms, g.active, g.unacknowledged, g.rules)
            for g in service.group_alarms_by_device(where, offset=offset, limit=GROUP_PAGE_SIZE)
        ]
    else:
        total = service.count_groups(where, by="rule")
        found = [
            (g.rule_key, "rule", g.priority, g.alarms, g.active, g.unacknowledged, g.devices)
            for g in service.group_alarms(where, offset=offset, limit=GROUP_PAGE_SIZE)
        ]
    return [
        GroupRow(
            key,
            key,
            url_with(ALARMS_PATH, query.params(**{link: key}, view="", group="", page="")),
            priority,
            alarms,
            active,
            unacknowledged,
            members[:GROUP_DEVICES],
        )
        for key, link, priority, alarms, active, unacknowledged, members in found
    ], total


def list_context(request: Request, session: Session, identity: ConsoleIdentity, query: ListQuery) -> dict[str, Any]:
    service = _service(request, session, identity)
    context: dict[str, Any] = {
        "page_title": N_("Current alarms"),
        "query": query,
        "filters": query.filters,
        "filtered": query.filtered,
        "states": STATE_FILTERS,
        "state_labels": STATES,
        "priorities": PRIORITIES,
        "sorts": SORTS,
        "groupings": GROUPINGS,
        "shelve_minutes": SHELVE_MINUTES,
        "show_tenant": identity.principal.is_platform,
        "can_operate": identity.can("alarms.operate"),
        "list_url": url_with(ALARMS_PATH, query.params(view="", group="", page="")),
        "groups_url": url_with(ALARMS_PATH, query.params(view=GROUPS_VIEW, page="")),
        "clear_url": url_with(ALARMS_PATH, {"view": "" if query.view == LIST_VIEW else GROUPS_VIEW}),
        "feed_url": FEED_PATH,
        "labels": _page_labels(),
        "script_url": static_url("alarms/alarms.js"),
        "style_url": static_url("alarms/alarms.css"),
        "when": format_time,
        "error": None,
    }
    if query.view == GROUPS_VIEW:
        groups, count = alarm_groups(service, query)
        pages = max(1, -(-count // GROUP_PAGE_SIZE))
        context.update(
            groups=groups,
            total=service.list_alarms(query.where(), limit=1)[1],
            page=query.page,
            pages=pages,
            previous_url=url_with(ALARMS_PATH, query.params(page=query.page - 1)) if query.page > 1 else "",
            next_url=url_with(ALARMS_PATH, query.params(page=query.page + 1)) if query.page < pages else "",
        )
        return context
    offset = (query.page - 1) * ALARM_PAGE_SIZE
    if query.sort == STATE_SORT:
        found, total = state_sorted(service, query.where(), offset=offset, limit=ALARM_PAGE_SIZE)
    else:
        found, total = service.list_alarms(
            query.where(), sort=AlarmSort(query.sort), offset=offset, limit=ALARM_PAGE_SIZE
        )
    pages = max(1, -(-total // ALARM_PAGE_SIZE))
    rows = [AlarmRow(view, alarm_url(view.id), format_number(view.value)) for view in map(alarm_view, found)]
    context.update(
        rows=rows,
        total=total,
        page=query.page,
        pages=pages,
        previous_url=url_with(ALARMS_PATH, query.params(page=query.page - 1)) if query.page > 1 else "",
        next_url=url_with(ALARMS_PATH, query.params(page=query.page + 1)) if query.page < pages else "",
    )
    return context


@pages_router.get(ALARMS_PATH, response_class=HTMLResponse)
def alarm_list(request: Request, identity: Reader, session: DbSession) -> HTMLResponse:
    query = ListQuery.read(request.query_params)
    return render(request, "alarms/list.html", list_context(request, session, identity, query))


def _query_of(next_path: str) -> ListQuery:
    """The list view a form was sent from (its `next`), to show it again with an error."""
    return ListQuery.read(dict(parse_qsl(urlsplit(next_path).query)))


@pages_router.post(BULK_ACKNOWLEDGE_PATH, dependencies=CSRF)
def acknowledge_selected(
    request: Request,
    background: BackgroundTasks,
    *,
    identity: Operator,
    session: DbSession,
    ids: Annotated[list[str] | None, Form()] = None,
    comment: FormText = "",
    next_path: NextPath = "",
) -> Response:
    """Acknowledge the alarms ticked on the list; those acknowledged meanwhile are skipped."""
    chosen = list(dict.fromkeys(i for i in ids or () if i))[:1000]
    problem: Message | None = None
    status = 422
    if not chosen:
        problem = message(N_("Select at least one alarm."))
    elif len(comment) > MAX_COMMENT or "\x00" in comment:
        problem = message(N_("A comment is at most %(count)s characters."), count=MAX_COMMENT)
    else:
        service = _service(request, session, identity)
        audit_object(request, "alarm", ",".join(chosen)[:200])
        try:
            acknowledged, skipped = service.acknowledge_many(chosen, comment)
        except NotFound:
            problem, status = message(N_("Some of the selected alarms no longer exist. Nothing was acknowledged.")), 404
        else:
            _publish_later(request, background, service)
            if wants_json(request):
                return JSONResponse({"acknowledged": acknowledged, "skipped": skipped})
            return redirect(safe_next(next_path, ALARMS_PATH), notice=N_("The selected alarms were acknowledged."))
    if wants_json(request):
        return JSONResponse({"error": translate(request, problem)}, status_code=status)
    back = safe_next(next_path, ALARMS_PATH)
    context = list_context(request, session, identity, _query_of(back))
    # The list as it was, with what went wrong: its forms come back to it, not to this POST's address.
    context.update(error=problem, here=back)
    return render(request, "alarms/list.html", context, status_code=status)


# --- the journal ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HistoryRow:
    entry: HistoryOut
    url: str
    value: str


def parse_time(text: str, form: FormState, name: str) -> dt.datetime | None:
    """A `datetime-local` field's value (or ISO 8601), taken as UTC unless it names a zone."""
    text = text.strip()
    if not text:
        return None
    try:
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        form.error(name, N_("Enter a date and time, e.g. 2026-01-05 08:00."))
        return None
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)


def time_field(at: dt.datetime | None) -> str:
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M") if at is not None else ""


@pages_router.get(HISTORY_PATH, response_class=HTMLResponse)
def history_page(
    request: Request,
    *,
    identity: Reader,
    session: DbSession,
    start: str = "",
    end: str = "",
    device: str = "",
    rule: str = "",
    page: str = "",
) -> HTMLResponse:
    form = FormState(
        {"start": start[:40], "end": end[:40], "device": clean_filter(device), "rule": clean_filter(rule, 100)}
    )
    since = parse_time(start[:40], form, "start")
    until = parse_time(end[:40], form, "end")
    if since is not None and until is not None and until <= since:
        form.error("end", N_("The end must be after the start."))
    number = page_number(page)
    entries: list[HistoryOut] = []
    total = 0
    if form.ok:
        rows, total = _service(request, session, identity).tenant_history(
            start=since,
            end=until,
            offset=(number - 1) * HISTORY_PAGE_SIZE,
            limit=HISTORY_PAGE_SIZE,
            device=form.values["device"] or None,
            rule_key=form.values["rule"] or None,
        )
        entries = [history_view(row) for row in rows]
    pages = max(1, -(-total // HISTORY_PAGE_SIZE))
    kept = dict(form.values)
    context: dict[str, Any] = {
        "page_title": N_("Alarm history"),
        "style_url": static_url("alarms/alarms.css"),
        "rows": [HistoryRow(e, alarm_url(e.alarm_id), format_number(e.value)) for e in entries],
        "total": total,
        "filtered": any(form.values.values()),
        "page": number,
        "pages": pages,
        "previous_url": url_with(HISTORY_PATH, {**kept, "page": number - 1}) if number > 1 else "",
        "next_url": url_with(HISTORY_PATH, {**kept, "page": number + 1}) if number < pages else "",
        "state_labels": STATES,
        "priorities": PRIORITIES,
        "actions": ACTIONS,
        "show_tenant": identity.principal.is_platform,
        "when": format_time,
        "form": form.values,
        "errors": form.errors,
    }
    return render(request, "alarms/history.html", context, status_code=200 if form.ok else 422)


# --- rules ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleRow:
    rule: Rule
    url: str
    scope: str


def scope_text(spec: Mapping[str, Any]) -> str:
    scope = spec.get("scope")
    if isinstance(scope, Mapping):
        if scope.get("device"):
            return f"device {scope['device']}"
        if scope.get("profile"):
            return f"profile {scope['profile']}"
    return "—"


@pages_router.get(RULES_PATH, response_class=HTMLResponse)
def rules_page(
    request: Request,
    *,
    identity: Reader,
    session: DbSession,
    q: str = "",
    kind: str = "",
    enabled: str = "",
) -> HTMLResponse:
    filters = {
        "q": clean_filter(q),
        "kind": kind if kind in KINDS else "",
        "enabled": enabled if enabled in YES_NO else "",
    }
    rows = _service(request, session, identity).list_rules(
        enabled=None if not filters["enabled"] else filters["enabled"] == "true",
        kind=filters["kind"] or None,
        text=filters["q"] or None,
    )
    context: dict[str, Any] = {
        "page_title": N_("Alarm rules"),
        "style_url": static_url("alarms/alarms.css"),
        "rows": [RuleRow(r, rule_url(r, identity), scope_text(r.spec)) for r in rows],
        "filters": filters,
        "filtered": any(filters.values()),
        "kinds": KINDS,
        "enabled_states": YES_NO,
        "priorities": PRIORITIES,
        "can_write": identity.can("alarms.write"),
        "show_tenant": identity.principal.is_platform,
        "here": url_with(RULES_PATH, filters),
        "when": format_time,
    }
    return render(request, "alarms/rules.html", context)


def decode_document(text: str, document_format: str) -> Any:
    """The YAML or JSON text of a rule, decoded; raises `Invalid` saying where it is broken."""
    return read_document(text, document_format or None, max_bytes=MAX_DOCUMENT_BYTES)


def read_rule(text: str, document_format: str) -> tuple[RuleSpec | None, list[str]]:
    """One rule from its document, checked as the API checks an imported rule: the spec, its
    expressions and that it can be stored; or the errors, each naming its place."""
    try:
        data = decode_document(text, document_format)
    except Invalid as err:
        return None, [err.message]
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, dict):
        return None, ["the document is one rule: a mapping of its fields (key, kind, title, scope ...)"]
    try:
        spec = parse_rule(data)
    except ValidationError as err:
        return None, validation_messages(err)
    errors = check_expressions(spec)
    if not survives_storing(spec):
        errors.append("a rule's numbers must be finite")
    return (None, errors) if errors else (spec, [])


def render_spec(spec: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(spec), allow_unicode=True, sort_keys=False, default_flow_style=False)


@dataclass(frozen=True, slots=True)
class DevicePreview:
    device: str
    points: int
    activations: int
    active: str  # h:mm:ss
    percent: float


@dataclass(frozen=True, slots=True)
class RulePreview:
    """What the rule would have done over the stored data of the last `hours`."""

    start: dt.datetime
    end: dt.datetime
    hours: int
    devices: list[DevicePreview]
    more_devices: int  # in scope but not replayed
    activations: int
    note: str = ""  # a message id when there was nothing to replay


def preview_rule(runtime: Runtime, service: AlarmService, spec: RuleSpec, tenant_id: str) -> RulePreview:
    """Replay the last day of each device's stored points in the rule's scope through the rule
    (`evaluation.preview`), as `iip rules test` does for one device."""
    service.actor.require("alarms.read")
    end = dt.datetime.now(dt.UTC).replace(microsecond=0)
    start = end - dt.timedelta(hours=PREVIEW_HOURS)
    end_ms, start_ms = int(end.timestamp() * 1000), int(start.timestamp() * 1000)
    empty = RulePreview(start, end, PREVIEW_HOURS, [], 0, 0)
    if spec.kind is RuleKind.EVENT:
        note = N_("Event rules fire on events, which are not stored: they cannot be previewed.")
        return dataclasses.replace(empty, note=note)
    if spec.scope.device is not None:
        devices = [spec.scope.device]
    else:
        placements = device_placements(runtime, tenant_id)
        devices = [p.key for p in placements if p.profile == spec.scope.profile and p.enabled]
    if not devices:
        return dataclasses.replace(empty, note=N_("No device is in the rule's scope."))

    def other(device: str, metric: str) -> list[Point]:
        return points_between(runtime, tenant_id, device, metric, start_ms, end_ms)

    results = []
    for device in devices[:PREVIEW_DEVICES]:
        points = points_between(runtime, tenant_id, device, None, start_ms, end_ms)
        result = preview(spec, device, points, other, until_ms=end_ms)
        span = end_ms - start_ms
        results.append(
            DevicePreview(
                device,
                len(points),
                result.activations,
                format_duration(result.active_ms),
                round(100 * result.active_ms / span, 2) if span else 0.0,
            )
        )
    return RulePreview(
        start,
        end,
        PREVIEW_HOURS,
        results,
        max(0, len(devices) - PREVIEW_DEVICES),
        sum(r.activations for r in results),
    )


def _rule_page(
    request: Request,
    session: Session,
    identity: ConsoleIdentity,
    rule: Rule | None,
    *,
    document: str,
    document_format: str = "",
    errors: Sequence[str] = (),
    form_error: Message | None = None,
    result: RulePreview | None = None,
    status: int = 200,
) -> HTMLResponse:
    service = _service(request, session, identity)
    versions = []
    if rule is not None:
        versions = [(v, render_spec(v.spec)) for v in reversed(service.rule_versions(rule.id))]
    action_url = rule_url(rule, identity) if rule is not None else NEW_RULE_PATH
    context: dict[str, Any] = {
        "page_title": N_("Alarm rule") if rule is not None else N_("New alarm rule"),
        "style_url": static_url("alarms/alarms.css"),
        "rule": rule,
        "scope": scope_text(rule.spec) if rule is not None else "",
        "action_url": action_url,
        "enabled_url": f"{action_url}/enabled",
        "document": document,
        "document_format": document_format,
        "formats": DOCUMENT_FORMATS,
        "document_errors": list(errors),
        "form_error": form_error,
        "result": result,
        "versions": versions,
        "kinds": KINDS,
        "priorities": PRIORITIES,
        "changes": RULE_CHANGES,
        "can_write": identity.can("alarms.write"),
        "show_tenant": identity.principal.is_platform,
        "when": format_time,
    }
    return render(request, "alarms/rule.html", context, status_code=status)


@pages_router.get(NEW_RULE_PATH, response_class=HTMLResponse)
def new_rule_page(request: Request, identity: Writer, session: DbSession) -> HTMLResponse:
    return _rule_page(request, session, identity, None, document=NEW_RULE_EXAMPLE)


def _edit_rule(
    request: Request,
    background: BackgroundTasks,
    session: Session,
    identity: ConsoleIdentity,
    rule: Rule | None,
    *,
    action: str,
    document: str,
    document_format: str,
) -> Response:
    """Preview or save the document of a new rule (`rule` None) or of a stored one."""
    document_format = document_format if document_format in DOCUMENT_FORMATS else ""

    def again(
        *, problem: Message | None = None, errors: Sequence[str] = (), result: RulePreview | None = None, status: int
    ) -> HTMLResponse:
        """The page again, with the document as sent and what became of it."""
        return _rule_page(
            request,
            session,
            identity,
            rule,
            document=document,
            document_format=document_format,
            errors=errors,
            form_error=problem,
            result=result,
            status=status,
        )

    if not document.strip():
        return again(problem=message(N_("Paste the rule's document.")), status=422)
    if len(document) > MAX_RULE_DOCUMENT:
        too_long = message(N_("The document is longer than %(count)s characters."), count=MAX_RULE_DOCUMENT)
        return again(problem=too_long, status=422)
    spec, errors = read_rule(document, document_format)
    if spec is None:
        return again(problem=message(N_("The rule has errors: nothing was saved.")), errors=errors, status=422)
    service = _service(request, session, identity)
    if action == "preview":
        tenant_id = rule.tenant_id if rule is not None else service.tenant_for(None)
        # The replay reads in sessions of its own: this one must not hold SQLite's write lock meanwhile.
        session.commit()
        return again(result=preview_rule(get_runtime(request), service, spec, tenant_id), status=200)
    try:
        with session.begin_nested():  # a refusal leaves nothing half written
            if rule is None:
                saved = service.create_rule(spec)
                notice = N_("The rule was created.")
            else:
                before = rule.version
                saved = service.update_rule(rule.id, spec)
                notice = (
                    N_("The rule was saved as a new version.") if saved.version != before else N_("Nothing changed.")
                )
    except DomainError as err:
        details = err.details.get("errors")
        listed = [str(e) for e in details] if isinstance(details, list) and details else [err.message]
        problem = message(N_("The rule has errors: nothing was saved."))
        return again(problem=problem, errors=listed, status=409 if isinstance(err, Conflict) else 422)
    audit_object(request, "alarm_rule", saved.id)
    _publish_later(request, background, service)
    return redirect(rule_url(saved, identity), notice=notice)


@pages_router.post(NEW_RULE_PATH, dependencies=CSRF)
def create_rule(
    request: Request,
    background: BackgroundTasks,
    *,
    identity: Writer,
    session: DbSession,
    action: FormText = "save",
    document: FormText = "",
    document_format: Annotated[str, Form(alias="format")] = "",
) -> Response:
    return _edit_rule(
        request,
        background,
        session,
        identity,
        None,
        action=action,
        document=document,
        document_format=document_format,
    )


@pages_router.post(RULES_PATH + "/{rule}/enabled", dependencies=CSRF)
def set_rule_enabled(
    request: Request,
    background: BackgroundTasks,
    rule: str,
    *,
    identity: Writer,
    session: DbSession,
    enabled: FormText = "",
    next_path: NextPath = "",
) -> Response:
    """Enable or disable a rule (a new version); disabling clears the conditions of its alarms."""
    service = _service(request, session, identity)
    audit_object(request, "alarm_rule", rule[:100])
    row = service.get_rule(rule)  # another tenant's rule is 404
    if enabled not in YES_NO:
        raise Invalid("enabled is true or false")
    row = service.set_enabled(row.id, enabled == "true")
    audit_object(request, "alarm_rule", row.id)
    _publish_later(request, background, service)
    notice = N_("The rule was enabled.") if row.enabled else N_("The rule was disabled.")
    return redirect(safe_next(next_path, rule_url(row, identity)), notice=notice)


@pages_router.get(RULES_PATH + "/{rule}", response_class=HTMLResponse)
def rule_page(request: Request, rule: str, identity: Reader, session: DbSession) -> HTMLResponse:
    row = _service(request, session, identity).get_rule(rule)  # another tenant's rule is 404
    return _rule_page(request, session, identity, row, document=render_spec(row.spec))


@pages_router.post(RULES_PATH + "/{rule}", dependencies=CSRF)
def save_rule(
    request: Request,
    background: BackgroundTasks,
    rule: str,
    *,
    identity: Writer,
    session: DbSession,
    action: FormText = "save",
    document: FormText = "",
    document_format: Annotated[str, Form(alias="format")] = "",
) -> Response:
    row = _service(request, session, identity).get_rule(rule)  # another tenant's rule is 404
    audit_object(request, "alarm_rule", row.id)
    return _edit_rule(
        request,
        background,
        session,
        identity,
        row,
        action=action,
        document=document,
        document_format=document_format,
    )


# --- the alarm management report --------------------------------------------------------------


def report_window(
    start: str, end: str, period: str, form: FormState, now: dt.datetime
) -> tuple[dt.datetime, dt.datetime]:
    """The report's [start, end): a chosen period up to now, or the times given (UTC)."""
    if period in REPORT_RANGES or not (start or end):
        span = REPORT_RANGES.get(period, REPORT_RANGES["24h"])[0]
        return now - span, now
    since = parse_time(start, form, "start")
    until = parse_time(end, form, "end") or now
    if since is None:
        if form.ok:
            form.error("start", N_("Enter a date and time, e.g. 2026-01-05 08:00."))
        return now - REPORT_RANGES["24h"][0], now
    if until <= since:
        form.error("end", N_("The end must be after the start."))
    elif until - since > dt.timedelta(days=MAX_REPORT_DAYS):
        form.error("end", N_("A report covers at most %(count)s days."), count=MAX_REPORT_DAYS)
    return since, until


def rate_chart(report: MetricsReport, counts: Mapping[str, list[int]]) -> dict[str, Any]:
    """What `alarms.js` draws: annunciated alarms per position and 10-minute window."""
    start_ms = int(report.start.timestamp() * 1000)
    window_ms = int(RATE_WINDOW.total_seconds() * 1000)
    return {
        "start_ms": start_ms,
        "window_ms": window_ms,
        "threshold": report.flood_threshold,
        "series": [{"position": position, "counts": values} for position, values in sorted(counts.items())],
    }


@pages_router.get(REPORT_PATH, response_class=HTMLResponse)
def report_page(
    request: Request,
    *,
    identity: Reader,
    session: DbSession,
    start: str = "",
    end: str = "",
    period: str = "",
) -> HTMLResponse:
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    chosen = period if period in REPORT_RANGES else ("" if (start or end) else "24h")
    form = FormState({"start": start[:40], "end": end[:40], "period": chosen})
    since, until = report_window(start[:40], end[:40], form.values["period"], form, now)
    context: dict[str, Any] = {
        "page_title": N_("Alarm report"),
        "ranges": {key: label for key, (_span, label) in REPORT_RANGES.items()},
        "form": {
            **form.values,
            "start": form.values["start"] or time_field(since),
            "end": form.values["end"] or time_field(until),
        },
        "errors": form.errors,
        "report": None,
        "start": since,
        "end": until,
        "measures": MEASURES,
        "percent_measures": PERCENT_MEASURES,
        "verdicts": VERDICTS,
        "priorities": PRIORITIES,
        "priority_groups": PRIORITY_GROUPS,
        "state_labels": STATES,
        "when": format_time,
        "script_url": static_url("alarms/alarms.js"),
        "style_url": static_url("alarms/alarms.css"),
    }
    if form.ok:
        service = _service(request, session, identity)
        report = service.metrics(since, until)
        counts = window_counts(service.history_records(since, until), start=since, end=until, window=RATE_WINDOW)
        context.update(report=report, chart=rate_chart(report, counts), alarm_url=alarm_url)
    return render(request, "alarms/report.html", context, status_code=200 if form.ok else 422)


# --- one alarm --------------------------------------------------------------------------------

# Registered last: `/alarms/{alarm_id}` would otherwise answer for the fixed paths above.


@dataclass(frozen=True, slots=True)
class Rationale:
    title: str
    cause: str
    consequence: str
    corrective_action: str
    response_time_s: int | None
    url: str


def rationale_of(service: AlarmService, identity: ConsoleIdentity, alarm: Alarm) -> Rationale | None:
    """The rule's rationalisation at the version that raised the alarm (its current one if that is gone)."""
    rows = [r for r in service.list_rules(text=alarm.rule_key, tenant_id=alarm.tenant_id) if r.key == alarm.rule_key]
    rule = next((r for r in rows if r.tenant_id == alarm.tenant_id), None)
    if rule is None:
        return None  # deleted: its versions are kept, but no longer listed
    spec_data = rule.spec
    with contextlib.suppress(NotFound):
        spec_data = service.rule_version(rule.id, alarm.rule_version).spec
    try:
        spec = parse_rule(spec_data)
    except ValidationError:
        return None
    reasons = spec.rationalisation
    return Rationale(
        spec.title,
        reasons.cause,
        reasons.consequence,
        reasons.corrective_action,
        reasons.response_time_s,
        rule_url(rule, identity),
    )


def _alarm_page(
    request: Request,
    session: Session,
    identity: ConsoleIdentity,
    alarm_id: str,
    *,
    form: FormState | None = None,
    outcome: Message | None = None,
    status: int = 200,
) -> HTMLResponse:
    service = _service(request, session, identity)
    row = service.get_alarm(alarm_id)  # another tenant's alarm is 404
    alarm = alarm_view(row)
    number = page_number(request.query_params.get("page", ""))
    entries, total = service.alarm_history(
        row.id, offset=(number - 1) * ALARM_HISTORY_PAGE_SIZE, limit=ALARM_HISTORY_PAGE_SIZE
    )
    pages = max(1, -(-total // ALARM_HISTORY_PAGE_SIZE))
    url = alarm_url(row.id)
    state = form or FormState({"minutes": "60", "reason": "", "text": ""})
    context: dict[str, Any] = {
        "page_title": N_("Alarm"),
        "alarm": alarm,
        "value": format_number(alarm.value),
        "rationale": rationale_of(service, identity, row),
        "history": [HistoryRow(e, url, format_number(e.value)) for e in map(history_view, entries)],
        "history_total": total,
        "page": number,
        "pages": pages,
        "previous_url": url_with(url, {"page": number - 1}) if number > 1 else "",
        "next_url": url_with(url, {"page": number + 1}) if number < pages else "",
        "url": url,
        "here": url,  # also after a refused action, whose address takes only POSTs
        "state_labels": STATES,
        "priorities": PRIORITIES,
        "actions": ACTIONS,
        "shelve_minutes": SHELVE_MINUTES,
        "can_operate": identity.can("alarms.operate"),
        "can_write": identity.can("alarms.write"),
        "show_tenant": identity.principal.is_platform,
        "feed_url": FEED_PATH,
        "labels": _page_labels(),
        "script_url": static_url("alarms/alarms.js"),
        "style_url": static_url("alarms/alarms.css"),
        "when": format_time,
        "outcome": outcome,
        "form": state.values,
        "errors": state.errors,
    }
    return render(request, "alarms/alarm.html", context, status_code=status if state.ok else 422)


@pages_router.get(ALARMS_PATH + "/{alarm_id}", response_class=HTMLResponse)
def alarm_page(request: Request, alarm_id: str, identity: Reader, session: DbSession) -> HTMLResponse:
    return _alarm_page(request, session, identity, alarm_id)


def read_comment(text: str, form: FormState, name: str = "comment", *, required: bool = False) -> str:
    if required and not text.strip():
        form.error(name, N_("Write a comment."))
    elif len(text) > MAX_COMMENT or "\x00" in text:
        form.error(name, N_("A comment is at most %(count)s characters."), count=MAX_COMMENT)
    return text


def read_minutes(text: str, form: FormState) -> float:
    try:
        minutes = float(text.strip())
    except ValueError:
        minutes = math.nan
    if not (math.isfinite(minutes) and 0 < minutes <= 366 * 24 * 60):
        form.error("minutes", N_("Choose how long to shelve the alarm."))
        return 0.0
    return minutes


def _act(
    request: Request,
    background: BackgroundTasks,
    session: Session,
    identity: ConsoleIdentity,
    alarm_id: str,
    act: Callable[[AlarmService], Alarm],
    *,
    form: FormState,
    notice: str,
    next_path: str,
) -> Response:
    """Run one operator action and answer: back where the form was (or JSON for the page script);
    refused, the alarm's page with the reason."""
    audit_object(request, "alarm", alarm_id[:32])
    outcome: Message | None = None
    status = 422
    if form.ok:
        service = _service(request, session, identity)
        try:
            row = act(service)
        except (Conflict, Invalid) as err:
            outcome = message(N_("Not done: %(reason)s"), reason=err.message)
            status = 409 if isinstance(err, Conflict) else 422
        else:
            _publish_later(request, background, service)
            if wants_json(request):
                return JSONResponse({"alarm": alarm_view(row).model_dump(mode="json")})
            return redirect(safe_next(next_path, alarm_url(row.id)), notice=notice)
    if wants_json(request):
        problem = outcome or next(iter(form.errors.values()))
        return JSONResponse({"error": translate(request, problem)}, status_code=status)
    return _alarm_page(request, session, identity, alarm_id, form=form, outcome=outcome, status=status)


NOTICES = {
    "acknowledge": N_("The alarm was acknowledged."),
    "unshelve": N_("The alarm was unshelved."),
    "reset": N_("The alarm was reset."),
    "remove_from_service": N_("The alarm was taken out of service."),
    "return_to_service": N_("The alarm was returned to service."),
}


def _commented_action_page(action: CommentedAction) -> None:
    def act(
        request: Request,
        background: BackgroundTasks,
        alarm_id: str,
        session: DbSession,
        comment: FormText = "",
        next_path: NextPath = "",
        identity: ConsoleIdentity = Depends(console_permission(action.permission)),
    ) -> Response:
        form = FormState()
        text = read_comment(comment, form)
        return _act(
            request,
            background,
            session,
            identity,
            alarm_id,
            lambda service: action.run(service, alarm_id, text),
            form=form,
            notice=NOTICES[action.name],
            next_path=next_path,
        )

    pages_router.add_api_route(
        f"{ALARMS_PATH}/{{alarm_id}}/{action.segment}",
        act,
        methods=["POST"],
        name=action.name,
        dependencies=CSRF,
    )


for _action in COMMENTED_ACTIONS:
    _commented_action_page(_action)


@pages_router.post(ALARMS_PATH + "/{alarm_id}/shelve", dependencies=CSRF)
def shelve(
    request: Request,
    background: BackgroundTasks,
    alarm_id: str,
    *,
    identity: Operator,
    session: DbSession,
    minutes: FormText = "",
    reason: FormText = "",
    next_path: NextPath = "",
) -> Response:
    form = FormState({"minutes": minutes, "reason": reason, "text": ""})
    duration = read_minutes(minutes, form)
    if not reason.strip():
        form.error("reason", N_("Give the reason for shelving the alarm."))
    read_comment(reason, form, "reason")
    return _act(
        request,
        background,
        session,
        identity,
        alarm_id,
        lambda service: service.shelve(alarm_id, dt.timedelta(minutes=duration), reason.strip()),
        form=form,
        notice=N_("The alarm was shelved."),
        next_path=next_path,
    )


@pages_router.post(ALARMS_PATH + "/{alarm_id}/comments", dependencies=CSRF)
def add_comment(
    request: Request,
    background: BackgroundTasks,
    alarm_id: str,
    *,
    identity: Operator,
    session: DbSession,
    text: FormText = "",
    next_path: NextPath = "",
) -> Response:
    form = FormState({"minutes": "60", "reason": "", "text": text})
    read_comment(text, form, "text", required=True)
    return _act(
        request,
        background,
        session,
        identity,
        alarm_id,
        lambda service: service.comment(alarm_id, text.strip()),
        form=form,
        notice=N_("The comment was added."),
        next_path=next_path,
    )


__all__ = [
    "ALARMS_PATH",
    "HISTORY_PATH",
    "NEW_RULE_PATH",
    "PAGES",
    "REPORT_PATH",
    "RULES_PATH",
    "TEMPLATE_DIR",
    "pages_router",
]
