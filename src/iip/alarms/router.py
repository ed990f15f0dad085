"""Alarms and alarm rules over HTTP: the alarm list, operator actions, history, metrics, the rule store.

Thin: parse, call `AlarmService`, shape. Alarms are named by id; rules by id or, within your
tenant, by key. The transitions a call makes are published on `ALARM_CHANGES` once the request's
transaction has committed (a background task runs after the response, hence after the commit).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime
from sqlalchemy.orm import Session

from iip.alarms.actions import COMMENTED_ACTIONS, CommentedAction
from iip.alarms.public import AlarmChange, AlarmState, Priority
from iip.alarms.repository import AlarmFilter
from iip.alarms.rules import RuleKind, RuleSpec
from iip.alarms.schemas import (
    NO_NUL,
    ActionBody,
    AlarmDetail,
    AlarmGroup,
    AlarmOut,
    AlarmPage,
    AlarmSort,
    BulkAcknowledge,
    BulkAcknowledged,
    CommentBody,
    HistoryPage,
    RuleEnabled,
    RuleImportReport,
    RuleOut,
    RuleVersionOut,
    ShelveBody,
)
from iip.alarms.service import (
    MAX_DOCUMENT_BYTES,
    AlarmService,
    alarm_view,
    history_view,
    parse_rules_document,
    publish_changes,
    rule_view,
    version_view,
)
from iip.api.deps import DbSession, audit_object, get_runtime, require
from iip.api.documents import DocumentFormat, Filter, TenantParam, declared_format, document_response
from iip.api.problems import problem_responses
from iip.kernel.auth import Principal
from iip.kernel.bus import BusError
from iip.kernel.errors import Invalid
from iip.kernel.runtime import Runtime

logger = logging.getLogger(__name__)

router = APIRouter(tags=["alarms"], responses=problem_responses(401, 403, 422))

Reader = Annotated[Principal, Depends(require("alarms.read"))]
Operator = Annotated[Principal, Depends(require("alarms.operate"))]
Writer = Annotated[Principal, Depends(require("alarms.write"))]

AlarmRef = Annotated[str, Path(max_length=32, description="the alarm's id")]
RuleRef = Annotated[str, Path(max_length=100, description="the rule's id, or its key in your tenant")]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
Limit = Annotated[int, Query(ge=1, le=1000)]
RULES_BODY: dict[str, Any] = {
    "description": "A list of alarm rules (or a mapping with a `rules` list), as YAML or JSON.",
    "required": True,
    "content": {
        "application/json": {
            "schema": {"type": "array", "items": {"type": "object"}},
            "example": [
                {
                    "key": "boiler.pressure.high",
                    "kind": "threshold",
                    "title": "Boiler pressure high",
                    "scope": {"profile": "boiler"},
                    "metric": "pressure",
                    "high": 1.6,
                    "deadband": 0.05,
                    "priority": "high",
                }
            ],
        },
        "application/yaml": {"schema": {"type": "string"}},
    },
}
EXPORT_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The tenant's rules, as `import` takes them back.",
        "content": {
            "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
            "application/yaml": {},
        },
    }
}


def _service(request: Request, session: Session, actor: Principal) -> AlarmService:
    return AlarmService(session, actor, settings=get_runtime(request).settings.alarms)


def _publish_later(request: Request, background: BackgroundTasks, service: AlarmService) -> None:
    if service.changes:
        background.add_task(_publish, get_runtime(request), list(service.changes))


async def _publish(runtime: Runtime, changes: Sequence[AlarmChange]) -> None:
    try:
        await publish_changes(runtime.bus, changes)
    except (BusError, OSError) as err:
        # Committed already: the change stands; listeners catch up from the alarm list.
        logger.warning("could not publish %d alarm change(s): %s", len(changes), err)


def _utc(value: dt.datetime, name: str) -> dt.datetime:
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise Invalid(f"{name} is out of range") from None


def _maybe_utc(value: dt.datetime | None, name: str) -> dt.datetime | None:
    return None if value is None else _utc(value, name)


# --- alarms


def _filter(
    state: Annotated[list[AlarmState] | None, Query(description="only these states (repeat)")] = None,
    priority: Annotated[list[Priority] | None, Query(description="only these priorities (repeat)")] = None,
    site: Filter = None,
    position: Filter = None,
    device: Filter = None,
    rule: Annotated[str | None, Query(max_length=100, pattern=NO_NUL, description="a rule key")] = None,
    q: Annotated[str | None, Query(max_length=200, pattern=NO_NUL, description="part of message, device, rule")] = None,
    shelved: bool | None = None,
    suppressed: bool | None = None,
    out_of_service: bool | None = None,
) -> AlarmFilter:
    return AlarmFilter(
        states=tuple(state or ()),
        priorities=tuple(priority or ()),
        site=site,
        position=position,
        device=device,
        rule_key=rule,
        text=q,
        shelved=shelved,
        suppressed=suppressed,
        out_of_service=out_of_service,
    )


AlarmFilterDep = Annotated[AlarmFilter, Depends(_filter)]


@router.get("/api/alarms", response_model=AlarmPage)
def list_alarms(
    request: Request,
    actor: Reader,
    session: DbSession,
    where: AlarmFilterDep,
    sort: AlarmSort = AlarmSort.PRIORITY,
    offset: Offset = 0,
    limit: Limit = 100,
    tenant_id: TenantParam = None,
) -> AlarmPage:
    """Alarms of your tenant, filtered (`state` and `priority` may repeat), sorted and paged.

    `q` matches part of the message, device or rule key; `total` counts every match.
    """
    rows, total = _service(request, session, actor).list_alarms(
        where, sort=sort, offset=offset, limit=limit, tenant_id=tenant_id
    )
    return AlarmPage(items=[alarm_view(row) for row in rows], total=total, offset=offset, limit=limit)


@router.get("/api/alarms/groups", response_model=list[AlarmGroup])
def group_alarms(
    request: Request,
    response: Response,
    actor: Reader,
    session: DbSession,
    where: AlarmFilterDep,
    offset: Offset = 0,
    limit: Limit = 100,
    tenant_id: TenantParam = None,
) -> list[AlarmGroup]:
    """The alarms matching the filter, counted per rule (busiest first), a page of rules at a time.

    `X-Total-Count` says how many rules have matching alarms.
    """
    service = _service(request, session, actor)
    response.headers["X-Total-Count"] = str(service.count_groups(where, tenant_id=tenant_id))
    return service.group_alarms(where, tenant_id=tenant_id, offset=offset, limit=limit)


@router.get("/api/alarms/history", response_model=HistoryPage)
def tenant_history(
    request: Request,
    actor: Reader,
    session: DbSession,
    start: AwareDatetime | None = None,
    end: AwareDatetime | None = None,
    offset: Offset = 0,
    limit: Limit = 100,
    tenant_id: TenantParam = None,
) -> HistoryPage:
    """Every transition of your tenant's alarms in [start, end), newest first."""
    rows, total = _service(request, session, actor).tenant_history(
        start=_maybe_utc(start, "start"), end=_maybe_utc(end, "end"), offset=offset, limit=limit, tenant_id=tenant_id
    )
    return HistoryPage(items=[history_view(row) for row in rows], total=total, offset=offset, limit=limit)


@router.get("/api/alarms/metrics", responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}})
def alarm_metrics(
    request: Request,
    actor: Reader,
    session: DbSession,
    start: AwareDatetime,
    end: AwareDatetime,
    tenant_id: TenantParam = None,
) -> JSONResponse:
    """ISA-18.2 / EEMUA 191 alarm management metrics over [start, end): rates per operator position,
    floods, most frequent, chattering and stale alarms, priority distribution, against the targets."""
    report = _service(request, session, actor).metrics(_utc(start, "start"), _utc(end, "end"), tenant_id=tenant_id)
    return JSONResponse(report.to_dict())


@router.post("/api/alarms/acknowledge", response_model=BulkAcknowledged, responses=problem_responses(404))
def acknowledge_many(
    body: BulkAcknowledge, request: Request, background: BackgroundTasks, actor: Operator, session: DbSession
) -> BulkAcknowledged:
    """Acknowledge several alarms at once: those already acknowledged are skipped; an unknown id
    refuses the whole call (404)."""
    service = _service(request, session, actor)
    acknowledged, skipped = service.acknowledge_many(body.ids, body.comment)
    audit_object(request, "alarm", ",".join(acknowledged)[:200])
    _publish_later(request, background, service)
    return BulkAcknowledged(acknowledged=acknowledged, skipped=skipped)


@router.get("/api/alarms/{alarm_id}", response_model=AlarmDetail, responses=problem_responses(404))
def get_alarm(alarm_id: AlarmRef, request: Request, actor: Reader, session: DbSession) -> AlarmDetail:
    """One alarm with its comments."""
    service = _service(request, session, actor)
    return service.describe_alarm(service.get_alarm(alarm_id))


@router.get("/api/alarms/{alarm_id}/history", response_model=HistoryPage, responses=problem_responses(404))
def alarm_history(
    alarm_id: AlarmRef, request: Request, actor: Reader, session: DbSession, offset: Offset = 0, limit: Limit = 100
) -> HistoryPage:
    """Every transition of one alarm, in sequence."""
    rows, total = _service(request, session, actor).alarm_history(alarm_id, offset=offset, limit=limit)
    return HistoryPage(items=[history_view(row) for row in rows], total=total, offset=offset, limit=limit)


def _acted(request: Request, background: BackgroundTasks, service: AlarmService, alarm_id: str) -> None:
    audit_object(request, "alarm", alarm_id)
    _publish_later(request, background, service)


ACTION_ANSWERS = problem_responses(404, 409)


def _commented_action_route(action: CommentedAction) -> None:
    def act(
        alarm_id: AlarmRef,
        request: Request,
        background: BackgroundTasks,
        session: DbSession,
        body: ActionBody | None = None,
        actor: Principal = Depends(require(action.permission)),
    ) -> AlarmOut:
        service = _service(request, session, actor)
        row = action.run(service, alarm_id, (body or ActionBody()).comment)
        _acted(request, background, service, row.id)
        return alarm_view(row)

    router.add_api_route(
        f"/api/alarms/{{alarm_id}}/{action.segment}",
        act,
        methods=["POST"],
        name=action.name,
        description=action.summary,
        response_model=AlarmOut,
        responses=ACTION_ANSWERS,
    )


for _action in COMMENTED_ACTIONS:
    _commented_action_route(_action)


@router.post("/api/alarms/{alarm_id}/shelve", response_model=AlarmOut, responses=ACTION_ANSWERS)
def shelve(
    alarm_id: AlarmRef,
    body: ShelveBody,
    request: Request,
    background: BackgroundTasks,
    actor: Operator,
    session: DbSession,
) -> AlarmOut:
    """Shelve an alarm for some minutes, with a reason (at most `IIP_ALARMS__MAX_SHELVE_HOURS`)."""
    service = _service(request, session, actor)
    row = service.shelve(alarm_id, dt.timedelta(minutes=body.minutes), body.reason)
    _acted(request, background, service, row.id)
    return alarm_view(row)


@router.post("/api/alarms/{alarm_id}/comments", response_model=AlarmDetail, responses=ACTION_ANSWERS)
def comment(
    alarm_id: AlarmRef,
    body: CommentBody,
    request: Request,
    background: BackgroundTasks,
    actor: Operator,
    session: DbSession,
) -> AlarmDetail:
    """Add a comment (1-2000 characters) to an alarm's history."""
    service = _service(request, session, actor)
    row = service.comment(alarm_id, body.text)
    _acted(request, background, service, row.id)
    return service.describe_alarm(row)


# --- rules


@router.get("/api/alarm-rules", response_model=list[RuleOut])
def list_rules(
    request: Request,
    actor: Reader,
    session: DbSession,
    enabled: bool | None = None,
    kind: RuleKind | None = None,
    pack: Filter = None,
    q: Filter = None,
    tenant_id: TenantParam = None,
) -> list[RuleOut]:
    """Your tenant's alarm rules at their current version (`q`: part of the key or title)."""
    rows = _service(request, session, actor).list_rules(
        enabled=enabled, kind=kind.value if kind else None, pack=pack, text=q, tenant_id=tenant_id
    )
    return [rule_view(row) for row in rows]


@router.post(
    "/api/alarm-rules",
    response_model=RuleOut,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(404, 409),
)
def create_rule(
    body: RuleSpec, request: Request, actor: Writer, session: DbSession, tenant_id: TenantParam = None
) -> RuleOut:
    """Create a rule (version 1; a key deleted before continues its numbering)."""
    row = _service(request, session, actor).create_rule(body, tenant_id=tenant_id)
    audit_object(request, "alarm_rule", row.id)
    return rule_view(row)


async def _rules_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    too_large = f"the body is larger than {MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB"
    if declared.isdigit() and int(declared) > MAX_DOCUMENT_BYTES:
        raise HTTPException(413, too_large)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_DOCUMENT_BYTES:
            raise HTTPException(413, too_large)
    return bytes(body)


@router.post(
    "/api/alarm-rules/import",
    response_model=RuleImportReport,
    responses=problem_responses(404, 413),
    openapi_extra={"requestBody": RULES_BODY},
)
def import_rules(
    request: Request,
    body: Annotated[bytes, Depends(_rules_body)],
    actor: Writer,
    session: DbSession,
    tenant_id: TenantParam = None,
) -> RuleImportReport:
    """Create or update every rule of a document: all of them, or (422, every error named) none.

    Rules are matched by key; a rule the same as the stored one is left alone.
    """
    document_format = declared_format(request)
    audit_object(request, "alarm_rules", tenant_id or actor.tenant_id)
    items = parse_rules_document(body, document_format)
    return _service(request, session, actor).import_rules(items, tenant_id=tenant_id)


@router.get("/api/alarm-rules/export", responses=EXPORT_ANSWER, response_class=Response)
def export_rules(
    request: Request,
    actor: Reader,
    session: DbSession,
    document_format: DocumentFormat = "json",
    tenant_id: TenantParam = None,
) -> Response:
    """Your tenant's rules as a document `import` takes back."""
    rules = _service(request, session, actor).export_rules(tenant_id=tenant_id)
    return document_response(rules, document_format)


@router.get("/api/alarm-rules/{rule}", response_model=RuleOut, responses=problem_responses(404))
def get_rule(rule: RuleRef, request: Request, actor: Reader, session: DbSession) -> RuleOut:
    return rule_view(_service(request, session, actor).get_rule(rule))


@router.put("/api/alarm-rules/{rule}", response_model=RuleOut, responses=problem_responses(404))
def update_rule(
    rule: RuleRef, body: RuleSpec, request: Request, background: BackgroundTasks, actor: Writer, session: DbSession
) -> RuleOut:
    """Store a new version of the rule (its key cannot change); the same spec again stores nothing."""
    audit_object(request, "alarm_rule", rule)
    service = _service(request, session, actor)
    row = service.update_rule(rule, body)
    audit_object(request, "alarm_rule", row.id)
    _publish_later(request, background, service)
    return rule_view(row)


@router.put("/api/alarm-rules/{rule}/enabled", response_model=RuleOut, responses=problem_responses(404))
def set_rule_enabled(
    rule: RuleRef,
    body: RuleEnabled,
    request: Request,
    background: BackgroundTasks,
    actor: Writer,
    session: DbSession,
) -> RuleOut:
    """Enable or disable a rule (a new version); disabling clears the condition of its alarms."""
    audit_object(request, "alarm_rule", rule)
    service = _service(request, session, actor)
    row = service.set_enabled(rule, body.enabled)
    audit_object(request, "alarm_rule", row.id)
    _publish_later(request, background, service)
    return rule_view(row)


@router.delete(
    "/api/alarm-rules/{rule}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(404),
)
def delete_rule(
    rule: RuleRef, request: Request, background: BackgroundTasks, actor: Writer, session: DbSession
) -> None:
    """Delete a rule: its stored versions are kept, the conditions of its alarms clear."""
    audit_object(request, "alarm_rule", rule)
    service = _service(request, session, actor)
    row = service.delete_rule(rule)
    audit_object(request, "alarm_rule", row.id)
    _publish_later(request, background, service)


@router.get("/api/alarm-rules/{rule}/versions", response_model=list[RuleVersionOut], responses=problem_responses(404))
def rule_versions(rule: RuleRef, request: Request, actor: Reader, session: DbSession) -> list[RuleVersionOut]:
    """Every stored version of a rule, oldest first."""
    return [version_view(row) for row in _service(request, session, actor).rule_versions(rule)]
