"""`iip trace masterdata [--type T] [ID]`: the EPCIS master data one tenant captured.

Without an id, the elements (of one vocabulary type, or all) as a table; with one, that element's
attributes. `--json` prints them in the EPCIS JSON binding's shape, as the API answers them. The
operator at the console reads as an administrator of the tenant named.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Column, Table

from iip.cli.context import err_console, out_console, unit_of_work
from iip.traceability.epcis.master_data import attribute_name
from iip.traceability.genealogy_cli import Tenant, tenant_admin
from iip.traceability.master_data import MasterDataService
from iip.traceability.schemas import MasterDataElementOut

LIMIT = 1000


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def master_data_command(
    ctx: typer.Context,
    tenant: Tenant,
    element_id: Annotated[str | None, typer.Argument(help="An element id: EPC URN, Digital Link or URI.")] = None,
    vocabulary_type: Annotated[
        str | None, typer.Option("--type", help="A vocabulary type URI, or a vtype name such as BusinessLocation.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the EPCIS JSON binding's elements.")] = False,
) -> None:
    """The tenant's master data: every element (of one --type), or the one ID names."""
    with unit_of_work(ctx) as session:
        service = MasterDataService(session, tenant_admin(session, tenant))
        if element_id is not None:
            found = [MasterDataElementOut.of(service.element(element_id, vocabulary_type))]
            more = False
        else:
            page = service.elements(vocabulary_type, per_page=LIMIT)
            found, more = [MasterDataElementOut.of(row) for row in page.elements], page.next_token is not None
    if as_json:
        shown = [element.model_dump(mode="json", by_alias=True) for element in found]
        typer.echo(json.dumps(shown[0] if element_id is not None else shown, ensure_ascii=False, indent=2))
    elif element_id is not None:
        _print_element(found[0])
    else:
        table = Table("type", Column("id", no_wrap=True), "attributes (local names)", "children")
        for element in found:
            names = ", ".join(dict.fromkeys(attribute_name(a.id) for a in element.attributes))
            table.add_row(escape(element.type), escape(element.id), escape(names), str(len(element.children or [])))
        out_console.print(table)
    if more:
        err_console.print(f"the first {LIMIT} elements shown", highlight=False)


def _print_element(element: MasterDataElementOut) -> None:
    out_console.print(f"{escape(element.type)}  {escape(element.id)}", highlight=False)
    table = Table("attribute", "value", box=None)
    for attribute in element.attributes:
        table.add_row(escape(attribute.id), escape(_value(attribute.attribute)))
    out_console.print(table)
    for child in element.children or []:
        out_console.print(f"child  {escape(child)}", highlight=False)
