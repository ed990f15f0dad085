"""`iip id prefix create|list`, `iip id register|resolve|parse|label`."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.table import Table

from iip.cli.context import fail, out_console, record, unit_of_work
from iip.identifiers.catalog_cli import import_command, optimize_search_command, search_command
from iip.identifiers.codec import (
    ADMIN_INDEX,
    HandleValue,
    admin_value,
    parse_admin_permissions,
    parse_handle,
    parse_value_reference,
    string_value,
)
from iip.identifiers.filing_cli import filing_app
from iip.identifiers.gs1.cli import label_command, parse_command
from iip.identifiers.hierarchy_cli import delegate_command, resolve_recursively, undelegate_command
from iip.identifiers.service import HandleService
from iip.identifiers.signing_cli import node_key_command, use_node_key, verify_command
from iip.kernel.auth import AccessService, Principal, Role

id_app = typer.Typer(help="Identifiers: Handle/IDIS prefixes and handles.", no_args_is_help=True)
prefix_app = typer.Typer(help="Prefixes homed on this node, or delegated from it.", no_args_is_help=True)
id_app.add_typer(prefix_app, name="prefix")
prefix_app.command("delegate")(delegate_command)
prefix_app.command("undelegate")(undelegate_command)
id_app.command("parse")(parse_command)
id_app.command("label")(label_command)
id_app.callback()(use_node_key)
id_app.add_typer(filing_app, name="filing")
id_app.command("verify")(verify_command)
id_app.command("node-key")(node_key_command)
id_app.command("import")(import_command)
id_app.command("search")(search_command)
id_app.command("optimize-search")(optimize_search_command)

# Handles registered here are administered by the prefix's admin group, as HANDLE.NET's tools do.
OWNER_PERMISSIONS = "011111110011"


def _read_secret() -> str:
    if sys.stdin.isatty():
        return str(typer.prompt("Prefix secret", hide_input=True, confirmation_prompt=True))
    return sys.stdin.readline().rstrip("\n")


@prefix_app.command("create")
def prefix_create(
    ctx: typer.Context,
    prefix: Annotated[str, typer.Argument(help="e.g. 88.118.8")],
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant name.")],
) -> None:
    """Home a prefix and create its admin identity 300:0.NA/<prefix>; the secret is read from stdin."""
    secret = _read_secret()
    if not secret:
        raise fail("no secret given on stdin")
    with unit_of_work(ctx, "identifiers.prefix.create") as session:
        t = AccessService(session).tenant_by_name(tenant)
        created = HandleService(session).create_prefix(t.id, prefix, secret, actor="cli")
        record(session, "identifiers.prefix.create", object_type="prefix", object_id=created.prefix, tenant_id=t.id)
    out_console.print(f"prefix {created.prefix} homed for {t.name}; admin identity 300:0.NA/{prefix}")


@prefix_app.command("list")
def prefix_list(ctx: typer.Context) -> None:
    """List the prefixes homed here."""
    with unit_of_work(ctx) as session:
        prefixes = HandleService(session).repo.prefixes(None)
        names = {t.id: t.name for t in AccessService(session).list_tenants()}
    table = Table("prefix", "tenant", "status", "created", "homed at")
    for p in prefixes:
        table.add_row(
            p.prefix,
            names.get(p.tenant_id, p.tenant_id),
            p.status,
            p.created_at.isoformat(timespec="seconds"),
            p.node_url or "this node",
        )
    out_console.print(table)


def _extra_value(index: int, text: str) -> HandleValue:
    value_type, eq, value = text.partition("=")
    if not eq or not value_type:
        raise typer.BadParameter(f"'{text}': expected TYPE=VALUE")
    return string_value(index, value_type, value)


@id_app.command("register")
def register(
    ctx: typer.Context,
    handle: Annotated[str, typer.Argument(help="prefix/suffix, e.g. 88.118.8/JXDY2106023")],
    url: Annotated[str, typer.Option("--url", help="The URL value (index 1).")],
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant name (must own the prefix).")],
    values: Annotated[
        list[str] | None, typer.Option("--value", help="More values as TYPE=VALUE (indexes 2, 3...).")
    ] = None,
) -> None:
    """Register (or replace) a handle with a URL and more string values."""
    extra = [_extra_value(i, v) for i, v in enumerate(values or [], start=2)]
    with unit_of_work(ctx, "identifiers.handle.register") as session:
        name = parse_handle(handle)
        owner = parse_value_reference(f"200:0.NA/{name.prefix}")
        admin = admin_value(ADMIN_INDEX, owner, parse_admin_permissions(OWNER_PERMISSIONS))
        entries = [string_value(1, "URL", url), *extra, admin]
        t = AccessService(session).tenant_by_name(tenant)
        # The operator at the console acts for the tenant named, as an administrator of it.
        actor = Principal("cli", "cli", "cli", t.id, Role.ADMIN)
        result = HandleService(session).put(name, entries, actor)
        record(session, "identifiers.handle.register", object_type="handle", object_id=result.handle, tenant_id=t.id)
    out_console.print(f"{'registered' if result.created else 'replaced'} {result.handle}")


@id_app.command("resolve")
def resolve(
    ctx: typer.Context,
    handle: Annotated[str, typer.Argument(help="prefix/suffix")],
    value_type: Annotated[list[str] | None, typer.Option("--type", help="Only values of this type.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the Handle REST API JSON.")] = False,
    recursive: Annotated[
        bool, typer.Option("--recursive", help="From the root node down, following referrals, checking signatures.")
    ] = False,
) -> None:
    """Resolve a handle's public values (here, or with --recursive across the node hierarchy)."""
    if recursive:
        resolve_recursively(ctx, handle, value_type or [], as_json)
        return
    with unit_of_work(ctx) as session:
        result = HandleService(session).resolve(parse_handle(handle), None, types=value_type or [])
    if as_json:
        body = {"responseCode": 1, "handle": result.handle, "values": [v.to_wire() for v in result.values]}
        typer.echo(json.dumps(body, ensure_ascii=False, indent=2))
        return
    table = Table("index", "type", "value")
    for v in result.values:
        shown = str(v.data.value) if v.data.format == "string" else json.dumps(v.data.value, ensure_ascii=False)
        table.add_row(str(v.index), v.type, shown)
    out_console.print(table)
