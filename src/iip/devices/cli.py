"""`iip devices import|export|list|show`, `iip devices token rotate|revoke`."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from sqlalchemy.orm import Session

from iip.cli.context import err_console, fail, out_console, record, unit_of_work
from iip.devices.profiles import Protocol
from iip.devices.schemas import SectionReport
from iip.devices.service import DeviceRegistry, device_view, parse_document
from iip.kernel.auth import AccessService, Principal, Role
from iip.kernel.documents import render_document
from iip.kernel.errors import Invalid

devices_app = typer.Typer(help="Device registry: profiles, devices, gateways.", no_args_is_help=True)
token_app = typer.Typer(help="Device access tokens.", no_args_is_help=True)
devices_app.add_typer(token_app, name="token")

Tenant = Annotated[str, typer.Option("--tenant", help="Tenant name.")]
DeviceKey = Annotated[str, typer.Argument(help="Device key (or id).")]
FORMATS = ("yaml", "json")


def _registry(session: Session, tenant: str) -> DeviceRegistry:
    found = AccessService(session).tenant_by_name(tenant)
    # The operator at the console acts for the tenant named, as an administrator of it.
    return DeviceRegistry(session, Principal("cli", "cli", "cli", found.id, Role.ADMIN))


def _format_of(path: Path | None, chosen: str) -> str | None:
    if chosen:
        if chosen not in FORMATS:
            raise fail(f"unknown format '{chosen}': expected yaml or json")
        return chosen
    if path is None:
        return None
    suffix = path.suffix.lower()
    return "json" if suffix == ".json" else "yaml" if suffix in {".yaml", ".yml"} else None


def _print_section(kind: str, section: SectionReport) -> None:
    for name in section.created:
        out_console.print(f"created {kind} {escape(name)}", highlight=False, soft_wrap=True)
    for name in section.updated:
        out_console.print(f"updated {kind} {escape(name)}", highlight=False, soft_wrap=True)


@devices_app.command("import")
def import_command(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(help="A YAML or JSON registry document; '-' reads stdin.")],
    tenant: Tenant,
    document_format: Annotated[str, typer.Option("--format", help="yaml or json; by default from the file name.")] = "",
) -> None:
    """Create or update the profiles, gateways and devices of a document: all of them, or none."""
    path = None if file == "-" else Path(file)
    kind = _format_of(path, document_format)
    if path is None:
        data = sys.stdin.buffer.read()
    else:
        try:
            data = path.read_bytes()
        except OSError as err:
            raise fail(f"cannot read {file}: {err.strerror}") from None
    with unit_of_work(ctx, "devices.import") as session:
        registry = _registry(session, tenant)
        try:
            report = registry.import_document(parse_document(data, kind))
        except Invalid as err:
            errors = err.details.get("errors") or []
            if len(errors) > 1:  # the last line (the summary) names the first
                for line in errors:
                    err_console.print(escape(str(line)), highlight=False, soft_wrap=True)
            raise
        counts = {
            "created": sum(len(s.created) for s in (report.profiles, report.gateways, report.devices)),
            "updated": sum(len(s.updated) for s in (report.profiles, report.gateways, report.devices)),
            "unchanged": sum(len(s.unchanged) for s in (report.profiles, report.gateways, report.devices)),
        }
        summary = ", ".join(f"{n} {what}" for what, n in counts.items())
        record(
            session,
            "devices.import",
            object_type="device_registry",
            object_id=registry.actor.tenant_id,
            tenant_id=registry.actor.tenant_id,
            detail=summary,
        )
    _print_section("profile", report.profiles)
    _print_section("gateway", report.gateways)
    _print_section("device", report.devices)
    out_console.print(f"imported {escape(file if path else 'stdin')}: {summary}", highlight=False, soft_wrap=True)


@devices_app.command("export")
def export_command(
    ctx: typer.Context,
    tenant: Tenant,
    file: Annotated[str | None, typer.Argument(help="Where to write; stdout when left out.")] = None,
    document_format: Annotated[
        str, typer.Option("--format", help="yaml or json; by default from the file name, else yaml.")
    ] = "",
) -> None:
    """Write the tenant's registry document (profiles, gateways, devices; never tokens)."""
    path = Path(file) if file else None
    kind = _format_of(path, document_format) or "yaml"
    with unit_of_work(ctx) as session:
        document = _registry(session, tenant).export_document()
    text = render_document(document, kind)
    if path is None:
        typer.echo(text, nl=False)
        return
    # Written whole under a temporary name, then renamed: a reader never sees half a document.
    try:
        fd, staged = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        Path(staged).replace(path)
    except OSError as err:
        raise fail(f"cannot write {file}: {err.strerror}") from None
    counts = {name: len(document[name]) for name in ("profiles", "gateways", "devices")}
    exported = ", ".join(f"{n} {what}" for what, n in counts.items())
    err_console.print(f"exported {exported} to {escape(str(path))}", highlight=False, soft_wrap=True)


@devices_app.command("list")
def list_command(
    ctx: typer.Context,
    tenant: Tenant,
    site: Annotated[str | None, typer.Option("--site", help="Only devices of this site.")] = None,
    profile: Annotated[str | None, typer.Option("--profile", help="Only devices of this profile.")] = None,
    protocol: Annotated[Protocol | None, typer.Option("--protocol", help="Only devices of this protocol.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the tenant's devices."""
    with unit_of_work(ctx) as session:
        rows = _registry(session, tenant).list_devices(site=site, profile=profile, protocol=protocol)
        views = [device_view(row) for row in rows]
    if as_json:
        typer.echo(json.dumps([v.model_dump(mode="json") for v in views], ensure_ascii=False, indent=2))
        return
    table = Table("key", "name", "site", "profile", "protocol", "gateway", "enabled", "token", "rejected")
    for column in table.columns:  # keys are what people copy: never broken across lines
        column.no_wrap = column.header != "name"
    for v in views:
        table.add_row(
            escape(v.key),
            escape(v.display_name),
            escape(v.site),
            escape(v.profile),
            v.protocol.value,
            escape(v.gateway or ""),
            "yes" if v.enabled else "no",
            v.token_prefix or "",
            str(v.rejected_count),
        )
    out_console.print(table)


@devices_app.command("show")
def show_command(
    ctx: typer.Context, key: Annotated[str, typer.Argument(help="Device key (or id).")], tenant: Tenant
) -> None:
    """Show one device: profile, connection, gateway, Sparkplug ids, token, rejected messages."""
    with unit_of_work(ctx) as session:
        view = device_view(_registry(session, tenant).get_device(key))
    table = Table("field", "value", show_header=False)
    sparkplug = view.sparkplug
    rows = {
        "key": view.key,
        "id": view.id,
        "name": view.display_name,
        "site": view.site,
        "profile": f"{view.profile} ({view.protocol.value})",
        "connection": json.dumps(view.connection, ensure_ascii=False),
        "gateway": view.gateway or "",
        "sparkplug": "/".join(p for p in (sparkplug.group_id, sparkplug.edge_node_id, sparkplug.device_id) if p)
        if sparkplug
        else "",
        "enabled": "yes" if view.enabled else "no",
        "token": f"{view.token_prefix} (since {view.token_created_at:%Y-%m-%d %H:%M})"
        if view.token_prefix and view.token_created_at
        else "none",
        "rejected messages": str(view.rejected_count),
        "updated": view.updated_at.isoformat(timespec="seconds"),
    }
    for name, value in rows.items():
        table.add_row(name, escape(value))
    out_console.print(table)


@token_app.command("rotate")
def token_rotate(
    ctx: typer.Context, key: Annotated[str, typer.Argument(help="Device key (or id).")], tenant: Tenant
) -> None:
    """Issue a new access token and print only it on stdout (it is not shown again)."""
    with unit_of_work(ctx, "devices.token.rotate") as session:
        registry = _registry(session, tenant)
        device, token = registry.rotate_device_token(key)
        record(session, "devices.token.rotate", object_type="device", object_id=device.id, tenant_id=device.tenant_id)
    err_console.print(
        f"new token {device.token_prefix} for {escape(device.key)}; store it now, it is not shown again",
        highlight=False,
        soft_wrap=True,
    )
    typer.echo(token)


@token_app.command("revoke")
def token_revoke(
    ctx: typer.Context, key: Annotated[str, typer.Argument(help="Device key (or id).")], tenant: Tenant
) -> None:
    """Revoke the device's access token."""
    with unit_of_work(ctx, "devices.token.revoke") as session:
        device = _registry(session, tenant).revoke_device_token(key)
        record(session, "devices.token.revoke", object_type="device", object_id=device.id, tenant_id=device.tenant_id)
    out_console.print(f"token of {escape(device.key)} revoked", highlight=False, soft_wrap=True)
