"""`iip tenant`, `iip user`, `iip apikey`, `iip audit`."""

from __future__ import annotations

import datetime as dt
import sys
from typing import Annotated

import typer
from rich.table import Table

from iip.cli.context import err_console, fail, out_console, progress_bar, record, unit_of_work
from iip.kernel import audit
from iip.kernel.auth import AccessService, Role

tenant_app = typer.Typer(help="Tenants (enterprises).", no_args_is_help=True)
user_app = typer.Typer(help="Console users.", no_args_is_help=True)
apikey_app = typer.Typer(help="API keys.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)


@tenant_app.command("create")
def tenant_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Short name: a-z, 0-9, '_', '.', '-'.")],
    display_name: Annotated[str, typer.Option("--display-name", help="Name shown in the console.")] = "",
) -> None:
    """Create a tenant."""
    with unit_of_work(ctx, "tenant.create") as session:
        tenant = AccessService(session).create_tenant(name, display_name)
        record(session, "tenant.create", object_type="tenant", object_id=tenant.id, tenant_id=tenant.id)
    out_console.print(f"tenant {tenant.name} created (id {tenant.id})")


@tenant_app.command("list")
def tenant_list(ctx: typer.Context) -> None:
    """List tenants."""
    with unit_of_work(ctx) as session:
        tenants = AccessService(session).list_tenants()
    table = Table("name", "id", "display name", "active", "created")
    for t in tenants:
        created = t.created_at.isoformat(timespec="seconds")
        table.add_row(t.name, t.id, t.display_name, "yes" if t.active else "no", created)
    out_console.print(table)


def _role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise typer.BadParameter(f"unknown role '{value}'; choose from {', '.join(r.value for r in Role)}") from None


def _read_secret(prompt: str) -> str:
    if sys.stdin.isatty():
        return str(typer.prompt(prompt, hide_input=True, confirmation_prompt=True))
    return sys.stdin.readline().rstrip("\n")


@user_app.command("create")
def user_create(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="Login name.")],
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant name.")],
    role: Annotated[
        str, typer.Option("--role", help="admin, engineer, operator, viewer, auditor or platform_operator.")
    ] = "viewer",
    display_name: Annotated[str, typer.Option("--display-name")] = "",
) -> None:
    """Create a console user; the password is read from stdin (or prompted on a terminal)."""
    parsed_role = _role(role)
    password = _read_secret("Password")
    if not password:
        raise fail("no password given on stdin")
    with unit_of_work(ctx, "user.create") as session:
        service = AccessService(session, min_password_length=ctx.find_root().obj.settings.auth.min_password_length)
        t = service.tenant_by_name(tenant)
        user = service.create_user(t.id, username, password, parsed_role, display_name)
        record(session, "user.create", object_type="user", object_id=user.id, tenant_id=t.id)
    out_console.print(f"user {user.username} created in {t.name} as {user.role}")


@apikey_app.command("create")
def apikey_create(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant name.")],
    role: Annotated[str, typer.Option("--role", help="Role the key acts with.")],
    name: Annotated[str, typer.Option("--name", help="What the key is for.")] = "cli",
    expires_days: Annotated[int | None, typer.Option("--expires-days", min=1, help="Expire after N days.")] = None,
) -> None:
    """Create an API key and print only the key on stdout (it is not shown again)."""
    parsed_role = _role(role)
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=expires_days) if expires_days else None
    with unit_of_work(ctx, "apikey.create") as session:
        service = AccessService(session)
        t = service.tenant_by_name(tenant)
        key, secret = service.create_api_key(t.id, name, parsed_role, expires_at=expires)
        record(session, "apikey.create", object_type="api_key", object_id=key.id, tenant_id=t.id)
    err_console.print(f"API key {key.prefix} ({key.role}) created for {t.name}; store it now, it is not shown again")
    typer.echo(secret)


@apikey_app.command("revoke")
def apikey_revoke(ctx: typer.Context, key: Annotated[str, typer.Argument(help="Key id or its public prefix.")]) -> None:
    """Revoke an API key."""
    with unit_of_work(ctx, "apikey.revoke") as session:
        revoked = AccessService(session).revoke_api_key(key, None)
        record(session, "apikey.revoke", object_type="api_key", object_id=revoked.id, tenant_id=revoked.tenant_id)
    out_console.print(f"API key {revoked.prefix} revoked")


@apikey_app.command("list")
def apikey_list(ctx: typer.Context, tenant: Annotated[str, typer.Option("--tenant")]) -> None:
    """List a tenant's API keys (never the secrets)."""
    from sqlalchemy import select

    from iip.kernel.auth import ApiKey

    with unit_of_work(ctx) as session:
        t = AccessService(session).tenant_by_name(tenant)
        keys = list(session.scalars(select(ApiKey).where(ApiKey.tenant_id == t.id).order_by(ApiKey.created_at)))
    table = Table("prefix", "id", "name", "role", "expires", "revoked")
    for k in keys:
        table.add_row(k.prefix, k.id, k.name, k.role, str(k.expires_at or ""), str(k.revoked_at or ""))
    out_console.print(table)


@audit_app.command("verify")
def audit_verify(ctx: typer.Context) -> None:
    """Check the hash chain; exit 1 naming the first entry changed, removed or reordered."""
    with unit_of_work(ctx) as session, progress_bar() as progress:
        task = progress.add_task("verifying audit chain", total=audit.count(session))
        result = audit.verify(session, on_progress=lambda done: progress.update(task, completed=done))
        progress.update(task, completed=result.checked)
    if not result.ok:
        intact = f"{result.checked} entries intact before it"
        raise fail(f"audit log broken at entry {result.seq}: {result.problem} ({intact})")
    out_console.print(f"audit log intact: {result.checked} entries")
