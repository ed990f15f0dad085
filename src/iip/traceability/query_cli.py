"""`iip trace events`: one tenant's EPCIS events by the standard query, newest first.

The operator at the console reads every event of the tenant named.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Column, Table

from iip.cli.context import err_console, out_console, unit_of_work
from iip.kernel.auth import AccessService
from iip.traceability.epcis.documents import CBV_WEB
from iip.traceability.models import Event

Tenant = Annotated[str, typer.Option("--tenant", help="Tenant name.")]
EPC_LISTS = ("parentID", "epcList", "childEPCs", "inputEPCList", "outputEPCList")
SHOWN_EPCS = 3


def _identifiers(event: Event) -> str:
    """The event's first identifiers, and how many more there are."""
    found: list[str] = []
    for key in EPC_LISTS:
        value = event.body.get(key)
        found.extend(v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str))
    for key in ("quantityList", "childQuantityList", "inputQuantityList", "outputQuantityList"):
        found.extend(str(q["epcClass"]) for q in event.body.get(key) or [] if isinstance(q, dict) and q.get("epcClass"))
    more = f"\n(+{len(found) - SHOWN_EPCS} more)" if len(found) > SHOWN_EPCS else ""
    return "\n".join(found[:SHOWN_EPCS]) + more


def _term(value: str | None) -> str:
    """A CBV web URI by its bare term (`https://ref.gs1.org/cbv/BizStep-shipping` → shipping)."""
    if not value:
        return ""
    return value.removeprefix(CBV_WEB).partition("-")[2] if value.startswith(CBV_WEB) else value


def events_command(
    ctx: typer.Context,
    tenant: Tenant,
    event_type: Annotated[
        list[str] | None, typer.Option("--type", help="Only this event type, e.g. ObjectEvent (repeatable).")
    ] = None,
    epc: Annotated[
        list[str] | None,
        typer.Option(
            "--epc",
            help="Only events naming this EPC in any role: URN, Digital Link, or urn:epc:idpat:sgtin:C.I.* for "
            "every serial of a GTIN (repeatable).",
        ),
    ] = None,
    biz_step: Annotated[
        list[str] | None, typer.Option("--biz-step", help="Only this business step, e.g. shipping (repeatable).")
    ] = None,
    location: Annotated[
        list[str] | None,
        typer.Option(
            "--location",
            help="Only events at this business location or one under it in the tenant's master data: URN or "
            "Digital Link (repeatable).",
        ),
    ] = None,
    read_point: Annotated[
        list[str] | None,
        typer.Option(
            "--read-point",
            help="Only events read at this read point or one under it in the tenant's master data (repeatable).",
        ),
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Events at or after this time (ISO 8601; UTC without offset).")
    ] = None,
    until: Annotated[str | None, typer.Option("--until", help="Events before this time (ISO 8601).")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="Most events shown.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print an EPCIS query document (JSON-LD).")] = False,
) -> None:
    """The tenant's events matching the filters, newest first (by event time)."""
    from iip.traceability.epcis.writer import json_document
    from iip.traceability.query import parse_query, run_query

    params: dict[str, list[str]] = {"orderBy": ["eventTime"], "orderDirection": ["DESC"]}
    given = {
        "eventType": event_type,
        "MATCH_anyEPC": epc,
        "EQ_bizStep": biz_step,
        "WD_bizLocation": location,
        "WD_readPoint": read_point,
    }
    params.update({name: values for name, values in given.items() if values})
    if since is not None:
        params["GE_eventTime"] = [since]
    if until is not None:
        params["LT_eventTime"] = [until]
    with unit_of_work(ctx) as session:
        found = AccessService(session).tenant_by_name(tenant)
        page = run_query(session, found.id, parse_query(params), None, limit)
        events = page.events
        items = [({**e.body, "eventID": e.body.get("eventID") or e.event_id}, e.context) for e in events]
    if as_json:
        typer.echo(json.dumps(json_document(items, query_name="SimpleEventQuery"), ensure_ascii=False, indent=2))
    else:
        # An event id is copied whole into other commands: it is not wrapped.
        table = Table(
            "event time (UTC)",
            "type",
            "action",
            "business step",
            "identifiers",
            "where",
            Column("event id", no_wrap=True),
        )
        for event in events:
            table.add_row(
                event.event_time.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
                event.event_type,
                event.action or "",
                escape(_term(event.biz_step)),
                escape(_identifiers(event)),
                escape(event.biz_location or event.read_point or ""),
                escape(event.event_id),
            )
        out_console.print(table)
    if page.next_page_token is not None:
        err_console.print(f"the first {len(events)} events shown (--limit)", highlight=False)
