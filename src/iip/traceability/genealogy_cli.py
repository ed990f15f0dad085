"""`iip trace genealogy EPC` and `iip trace recall LOT`: the genealogy and recall of one tenant's identifiers.

The operator at the console reads as an administrator of the tenant named.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from sqlalchemy.orm import Session

from iip.cli.context import cli_principal, fail, out_console, unit_of_work
from iip.kernel.auth import AccessService, Principal, Role
from iip.traceability import genealogy, recall

Tenant = Annotated[str, typer.Option("--tenant", help="Tenant name.")]


def tenant_admin(session: Session, tenant: str) -> Principal:
    """An administrator of the tenant named, acting as the operator at the console."""
    found = AccessService(session).tenant_by_name(tenant)
    who = cli_principal().removeprefix("cli:")
    return Principal("cli", who, who, found.id, Role.ADMIN)


def genealogy_command(
    ctx: typer.Context,
    epc: Annotated[str, typer.Argument(help="EPC URN or GS1 Digital Link (an instance or a lot).")],
    tenant: Tenant,
    forward: Annotated[bool, typer.Option("--forward", help="What came from it and where it went.")] = False,
    max_depth: Annotated[int, typer.Option("--max-depth", min=1, max=1000)] = genealogy.DEFAULT_MAX_DEPTH,
    as_json: Annotated[bool, typer.Option("--json", help="Print nodes and edges as JSON.")] = False,
) -> None:
    """What went into an identifier (backward, the default) or where what came from it went (--forward)."""
    from iip.traceability.genealogy_router import genealogy_view

    with unit_of_work(ctx) as session:
        principal = tenant_admin(session, tenant)
        result = genealogy.trace(session, principal, epc, "forward" if forward else "backward", max_depth=max_depth)
    if as_json:
        typer.echo(genealogy_view(result).model_dump_json(indent=2))
        return
    table = Table("depth", "kind", "identifier", *(("location", "owner") if forward else ()), box=None)
    for node in result.nodes:
        where = result.whereabouts.get(node.id)
        extra = (
            (genealogy.describe(where.location if where else None), genealogy.describe(where.owner if where else None))
            if forward
            else ()
        )
        table.add_row(str(node.depth), node.kind, escape(genealogy.describe(node.id)), *map(escape, extra))
    out_console.print(table)
    suffix = f" (stopped at depth {max_depth})" if result.truncated else ""
    typer.echo(f"{len(result.nodes)} identifiers, {len(result.edges)} links{suffix}")


def recall_command(
    ctx: typer.Context,
    lot: Annotated[
        str, typer.Argument(help="The lot (LGTIN URN or Digital Link with AI 10) or, with --serial, a serial.")
    ],
    tenant: Tenant,
    is_serial: Annotated[bool, typer.Option("--serial", help="LOT names one serialised item.")] = False,
    csv_file: Annotated[Path | None, typer.Option("--csv", help="Write the FSMA 204 spreadsheet as CSV.")] = None,
    xlsx_file: Annotated[Path | None, typer.Option("--xlsx", help="Write the FSMA 204 spreadsheet as XLSX.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the affected products as JSON.")] = False,
) -> None:
    """Every product a lot (or serial) reached, its last known location and owner."""
    if csv_file is not None and xlsx_file is not None:
        raise fail("give --csv or --xlsx, not both")
    with unit_of_work(ctx) as session:
        principal = tenant_admin(session, tenant)
        subject = {"serial": lot} if is_serial else {"lot": lot}
        result = recall.recall(session, principal, **subject)
    target, export_format = (csv_file, "csv") if csv_file is not None else (xlsx_file, "xlsx")
    if target is not None:
        try:
            target.write_bytes(recall.export(result.rows, "csv" if export_format == "csv" else "xlsx"))
        except OSError as err:
            raise fail(f"cannot write {target}: {err.strerror}") from None
        typer.echo(f"wrote {len(result.rows)} affected identifiers to {target}")
        return
    if as_json:
        typer.echo(json.dumps([dict(zip(recall.COLUMNS, recall.cells(r), strict=True)) for r in result.rows]))
        return
    table = Table("lot", "identifier", "type", "event", "location", "owner", box=None)
    for row in result.rows:
        table.add_row(
            escape(row.traceability_lot_code),
            escape(genealogy.describe(row.affected_identifier)),
            row.identifier_type,
            row.critical_tracking_event,
            escape(genealogy.describe(row.location_identifier)),
            escape(genealogy.describe(row.owner)),
        )
    out_console.print(table)
    typer.echo(f"{len(result.rows)} affected identifiers")
