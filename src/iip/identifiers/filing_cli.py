"""`iip id filing list|approve|reject`: the platform operator's side of prefix filing (备案)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from iip.cli.context import cli_principal, out_console, unit_of_work
from iip.identifiers.filing import STATUSES, FilingService
from iip.kernel.auth import AccessService, Principal, Role

filing_app = typer.Typer(help="Prefix filings (备案): list, approve, reject.", no_args_is_help=True)


def _operator() -> Principal:
    """The person at the node's console, acting as its platform operator."""
    name = cli_principal().removeprefix("cli:")
    return Principal("cli", name, name, "", Role.PLATFORM_OPERATOR)


@filing_app.command("list")
def filing_list(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option("--status", help="Only filings in this status.")] = None,
) -> None:
    """List every tenant's filings."""
    if status is not None and status not in STATUSES:
        raise typer.BadParameter(f"expected one of {', '.join(STATUSES)}", param_hint="--status")
    with unit_of_work(ctx) as session:
        filings = FilingService(session).list(_operator(), status)
        names = {t.id: t.name for t in AccessService(session).list_tenants()}
    table = Table()
    table.add_column("prefix", no_wrap=True)  # what approve and reject take, so never cut short
    for heading in ("tenant", "company", "credit code", "status", "reason"):
        table.add_column(heading)
    for f in filings:
        table.add_row(
            f.prefix,
            names.get(f.tenant_id, f.tenant_id),
            str(f.details.get("name", "")),
            str(f.details.get("credit_code", "")),
            f.status,
            f.reason,
        )
    out_console.print(table)


FilingArgument = Annotated[str, typer.Argument(help="The filing's id, or the prefix applied for.")]


@filing_app.command("approve")
def filing_approve(ctx: typer.Context, filing: FilingArgument) -> None:
    """Approve a pending filing: its admin identity 300:0.NA/<prefix> is created and writes open."""
    with unit_of_work(ctx, "identifiers.filing.approve") as session:
        record = FilingService(session).approve(_operator(), filing)
    out_console.print(f"approved {record.prefix}; admin identity 300:0.NA/{record.prefix}")


@filing_app.command("reject")
def filing_reject(
    ctx: typer.Context,
    filing: FilingArgument,
    reason: Annotated[str, typer.Option("--reason", help="Why; the applicant sees it.")],
) -> None:
    """Reject a pending filing with a reason."""
    with unit_of_work(ctx, "identifiers.filing.reject") as session:
        record = FilingService(session).reject(_operator(), filing, reason)
    out_console.print(f"rejected {record.prefix}: {record.reason}")
