"""`iip alarms list|ack|shelve` and `iip rules import|list|test`.

The operator at the console acts for the tenant named, as an administrator of it. Transitions are
published on the bus after the command's transaction commits when the bus is shared (NATS); an
in-process bus has no listeners in a CLI process.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Column, Table
from sqlalchemy.orm import Session

from iip.alarms.public import AlarmChange, AlarmState, Priority
from iip.alarms.repository import AlarmFilter
from iip.alarms.rules import parse_rule
from iip.alarms.schemas import AlarmSort
from iip.alarms.service import AlarmService, alarm_view, parse_rules_document, publish_changes
from iip.cli.context import cli_principal, err_console, fail, out_console, record, state, unit_of_work
from iip.kernel.auth import AccessService, Principal, Role
from iip.kernel.bus import BusError, MemoryBus, create_bus
from iip.kernel.errors import Invalid
from iip.kernel.runtime import Runtime
from iip.kernel.settings import Settings

alarms_app = typer.Typer(help="Alarms: list, acknowledge, shelve.", no_args_is_help=True)
rules_app = typer.Typer(help="Alarm rules: import, list, try one on stored data.", no_args_is_help=True)

Tenant = Annotated[str, typer.Option("--tenant", help="Tenant name.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
STANDING = tuple(state for state in AlarmState if state is not AlarmState.NORMAL)
DAY_MS = 86_400_000


def _service(ctx: typer.Context, session: Session, tenant: str) -> AlarmService:
    found = AccessService(session).tenant_by_name(tenant)
    who = cli_principal().removeprefix("cli:")
    actor = Principal("cli", who, who, found.id, Role.ADMIN)
    return AlarmService(session, actor, settings=state(ctx).settings.alarms)


def _publish(settings: Settings, changes: Sequence[AlarmChange]) -> None:
    if not changes or settings.bus == "memory":
        return

    async def send() -> None:
        bus = create_bus(settings.bus)
        await bus.start()
        try:
            await publish_changes(bus, changes)
        finally:
            await bus.close()

    try:
        asyncio.run(send())
    except (BusError, OSError) as err:
        # Committed already: the change stands; listeners catch up from the alarm list.
        err_console.print(f"warning: the changes were not published: {escape(str(err))}", highlight=False)


def _line(text: str) -> None:
    out_console.print(escape(text), highlight=False, soft_wrap=True)


# --- alarms


@alarms_app.command("list")
def list_command(
    ctx: typer.Context,
    tenant: Tenant,
    states: Annotated[
        list[AlarmState] | None, typer.Option("--state", help="Only alarms in this state (repeatable).")
    ] = None,
    priorities: Annotated[
        list[Priority] | None, typer.Option("--priority", help="Only this priority (repeatable).")
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="Only alarms of this device.")] = None,
    rule: Annotated[str | None, typer.Option("--rule", help="Only alarms of this rule key.")] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Normal alarms too (by default only standing ones).")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="Most alarms shown.")] = 100,
    as_json: AsJson = False,
) -> None:
    """List the tenant's alarms, most urgent first: by default those not back to normal."""
    chosen = tuple(states or ()) or (() if everything else STANDING)
    where = AlarmFilter(states=chosen, priorities=tuple(priorities or ()), device=device, rule_key=rule)
    with unit_of_work(ctx) as session:
        rows, total = _service(ctx, session, tenant).list_alarms(where, sort=AlarmSort.PRIORITY, limit=limit)
        views = [alarm_view(row) for row in rows]
    if as_json:
        typer.echo(json.dumps([v.model_dump(mode="json") for v in views], ensure_ascii=False, indent=2))
        return
    # An id is copied whole into `ack`, and a state read at a glance: neither is wrapped.
    table = Table(Column("id", no_wrap=True), "priority", Column("state", no_wrap=True), "rule", "device", "message")
    for view in views:
        flags = [name for name, on in (("shelved", view.shelved), ("suppressed", view.suppressed)) if on]
        if view.out_of_service:
            flags.append("out of service")
        table.add_row(
            view.id,
            view.priority.value,
            "\n".join([view.state.value, *flags]),
            escape(view.rule_key),
            escape(view.device),
            escape(view.message),
        )
    out_console.print(table)
    if total > len(views):
        err_console.print(f"{len(views)} of {total} alarms shown (--limit)", highlight=False)


@alarms_app.command("ack")
def ack_command(
    ctx: typer.Context,
    alarm_ids: Annotated[list[str], typer.Argument(help="Ids of the alarms to acknowledge.")],
    tenant: Tenant,
    comment: Annotated[str, typer.Option("--comment", help="A comment recorded with the acknowledgement.")] = "",
) -> None:
    """Acknowledge alarms (those already acknowledged are skipped; an unknown id changes nothing)."""
    with unit_of_work(ctx, "alarms.acknowledge") as session:
        service = _service(ctx, session, tenant)
        acknowledged, skipped = service.acknowledge_many(alarm_ids, comment)
        record(
            session,
            "alarms.acknowledge",
            object_type="alarm",
            object_id=",".join(acknowledged)[:200],
            tenant_id=service.actor.tenant_id,
            detail=f"{len(acknowledged)} acknowledged, {len(skipped)} skipped",
        )
        changes = list(service.changes)
    _publish(state(ctx).settings, changes)
    for alarm_id in acknowledged:
        _line(f"acknowledged {alarm_id}")
    for alarm_id in skipped:
        _line(f"skipped {alarm_id}: nothing to acknowledge")


@alarms_app.command("shelve")
def shelve_command(
    ctx: typer.Context,
    alarm_id: Annotated[str, typer.Argument(help="Id of the alarm to shelve.")],
    tenant: Tenant,
    minutes: Annotated[float, typer.Option("--minutes", min=0.001, help="For how long.")],
    reason: Annotated[str, typer.Option("--reason", help="Why it is shelved.")],
) -> None:
    """Shelve an alarm for some minutes: it keeps tracking its condition, unannounced."""
    with unit_of_work(ctx, "alarms.shelve") as session:
        service = _service(ctx, session, tenant)
        try:
            duration = dt.timedelta(minutes=minutes)
        except OverflowError:
            raise Invalid("--minutes is too large") from None
        row = service.shelve(alarm_id, duration, reason)
        until = row.shelved_until
        record(
            session,
            "alarms.shelve",
            object_type="alarm",
            object_id=row.id,
            tenant_id=row.tenant_id,
            detail=f"until {until.isoformat() if until else '?'}: {reason}"[:500],
        )
        changes = list(service.changes)
    _publish(state(ctx).settings, changes)
    _line(f"shelved {row.id} until {until.isoformat(timespec='seconds') if until else '?'}")


# --- rules


@rules_app.command("import")
def import_command(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(help="A YAML or JSON list of rules; '-' reads stdin.")],
    tenant: Tenant,
    document_format: Annotated[str, typer.Option("--format", help="yaml or json; by default from the file name.")] = "",
) -> None:
    """Create or update the rules of a document: all of them, or none."""
    if document_format and document_format not in ("yaml", "json"):
        raise fail(f"unknown format '{document_format}': expected yaml or json")
    path = None if file == "-" else Path(file)
    kind = document_format or (
        None
        if path is None
        else "json"
        if path.suffix.lower() == ".json"
        else "yaml"
        if path.suffix.lower() in {".yaml", ".yml"}
        else None
    )
    if path is None:
        data = sys.stdin.buffer.read()
    else:
        try:
            data = path.read_bytes()
        except OSError as err:
            raise fail(f"cannot read {file}: {err.strerror}") from None
    with unit_of_work(ctx, "rules.import") as session:
        service = _service(ctx, session, tenant)
        try:
            report = service.import_rules(parse_rules_document(data, kind))
        except Invalid as err:
            errors = err.details.get("errors") or []
            if len(errors) > 1:  # the last line (the summary) names the first
                for line in errors:
                    err_console.print(escape(str(line)), highlight=False, soft_wrap=True)
            raise
        summary = f"{len(report.created)} created, {len(report.updated)} updated, {len(report.unchanged)} unchanged"
        record(
            session,
            "rules.import",
            object_type="alarm_rules",
            object_id=service.actor.tenant_id,
            tenant_id=service.actor.tenant_id,
            detail=summary,
        )
        changes = list(service.changes)
    _publish(state(ctx).settings, changes)
    for key in report.created:
        _line(f"created rule {key}")
    for key in report.updated:
        _line(f"updated rule {key}")
    _line(f"imported {file if path else 'stdin'}: {summary}")


@rules_app.command("list")
def rules_list_command(ctx: typer.Context, tenant: Tenant, as_json: AsJson = False) -> None:
    """List the tenant's rules at their current version."""
    with unit_of_work(ctx) as session:
        rows = _service(ctx, session, tenant).list_rules()
        items = [
            {
                "key": row.key,
                "version": row.version,
                "kind": row.kind,
                "priority": row.priority,
                "enabled": row.enabled,
                "title": row.title,
            }
            for row in rows
        ]
    if as_json:
        typer.echo(json.dumps(items, ensure_ascii=False, indent=2))
        return
    table = Table(Column("key", no_wrap=True), "version", "kind", "priority", "enabled", "title")
    for item in items:
        table.add_row(
            escape(str(item["key"])),
            str(item["version"]),
            str(item["kind"]),
            str(item["priority"]),
            "yes" if item["enabled"] else "no",
            escape(str(item["title"])),
        )
    out_console.print(table)


def _duration(ms: int) -> str:
    seconds = ms // 1000
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


@rules_app.command("test")
def replay_command(
    ctx: typer.Context,
    rule: Annotated[str, typer.Argument(help="The rule's key (or id).")],
    tenant: Tenant,
    device: Annotated[str, typer.Option("--device", help="The device whose stored points are replayed.")],
    hours: Annotated[float, typer.Option("--hours", min=0.01, max=24 * 31, help="How far back to replay.")] = 24,
    end: Annotated[
        str | None, typer.Option("--end", help="End of the replay, ISO 8601 with a zone; default: now.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Replay a device's stored points (the last day, or --hours) through one rule: how often it would have fired."""
    from iip.alarms.evaluation import preview
    from iip.telemetry.public import Point, points_between

    end_ms = _end_ms(end)
    start_ms = end_ms - int(hours * 3_600_000)
    with unit_of_work(ctx) as session:
        service = _service(ctx, session, tenant)
        row = service.get_rule(rule)
        spec, tenant_id = parse_rule(row.spec), row.tenant_id
    st = state(ctx)
    runtime = Runtime(settings=st.settings, db=st.db, bus=MemoryBus())
    points = points_between(runtime, tenant_id, device, None, start_ms, end_ms)

    def other(other_device: str, metric: str) -> Iterable[Point]:
        return points_between(runtime, tenant_id, other_device, metric, start_ms, end_ms)

    result = preview(spec, device, points, other, until_ms=end_ms)
    span_ms = end_ms - start_ms
    answer = {
        "rule": spec.key,
        "device": device,
        "start": _iso(start_ms),
        "end": _iso(end_ms),
        "points": len(points),
        "activations": result.activations,
        "active_ms": result.active_ms,
        "active_percent": round(100 * result.active_ms / span_ms, 3) if span_ms else 0.0,
    }
    if as_json:
        typer.echo(json.dumps(answer, ensure_ascii=False, indent=2))
        return
    _line(
        f"rule {spec.key} on {device}, {answer['start']} to {answer['end']} ({len(points)} points): "
        f"would have fired {result.activations} time(s), active for {_duration(result.active_ms)} "
        f"({answer['active_percent']}% of the time)"
    )


def _end_ms(text: str | None) -> int:
    if text is None:
        return int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    try:
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        raise fail(f"--end: '{text}' is not an ISO 8601 time") from None
    if at.tzinfo is None:
        raise fail("--end: give the time with a zone, e.g. 2026-01-05T08:00:00+08:00")
    return int(at.timestamp() * 1000)


def _iso(at_ms: int) -> str:
    return dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC).isoformat(timespec="seconds")
